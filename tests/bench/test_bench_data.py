"""bench-data: on a tiny generated set it runs the real `train` command per data path and writes the JSON, the
markdown table and the plot, every figure from a run. Timings are not asserted (docs/PERFORMANCE.md quotes them)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from checkbox_dist.bench.data import parse_run, run_measured, table
from checkbox_dist.core.errors import UserError
from conftest import REPO, run_cli

pytestmark = pytest.mark.system


def test_bench_data_on_a_tiny_set_writes_json_table_and_plot(tmp_path: Path):
    out = tmp_path / "out"
    proc = run_cli("bench-data", "--config", str(REPO / "configs" / "quickstart.yaml"), "data.batch_size=8",
                   "--sizes", "60", "--steps", "4", "--processes", "1", "--workers", "1", "--out", str(out),
                   "--work", str(tmp_path / "work"), timeout=600)
    report = json.loads((out / "bench_data.json").read_text())
    (row,) = report["rows"]
    assert row["images"] == 60 and row["label"] == "generated 60"
    assert set(row["runs"]) == {"on/cold/1p", "on/warm/1p", "off/warm/1p"}
    for run in row["runs"].values():
        assert run["startup_s"] >= 0 and run["peak_rss_mb"] > 50 and run["img_s"] > 0
    assert row["runs"]["on/cold/1p"]["startup_s"] > 0  # the decode of 60 files takes more than 5 ms
    assert row["plain_on_img_s"] > 0 and row["plain_off_img_s"] > 0 and row["decode_ms"] > 0
    md = (out / "bench_data.md").read_text()
    assert md == table(report["rows"]) and md.count("| generated 60 |") == 3 and md in proc.stdout
    assert (out / "bench_data.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "work" / "synth-n60-s7" / "SYNTH.json").is_file()  # the generated crops are kept
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["synth-n60-s7"]  # the runs' caches are not


def test_bench_data_formats_converts_the_crops_once_and_adds_a_row_per_format(tmp_path: Path):
    """--formats tar: the generated crops become shards of --per-shard samples beside them, measured as a `tar` row;
    --append keeps an earlier row of the same size in another format (rows are keyed by size and format)."""
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    earlier = {"root": "r", "label": "generated 60", "images": 60, "plain_on_img_s": 1.0, "plain_off_img_s": 1.0,
               "decode_ms": 1.0, "runs": {"off/warm/1p": {"startup_s": 1.0, "peak_rss_mb": 1.0, "img_s": 1.0,
                                                          "wall_s": 1.0}}}  # a class folder row (no format key)
    (out / "bench_data.json").write_text(json.dumps({"meta": {}, "rows": [earlier]}))
    args = ["bench-data", "--config", str(REPO / "configs" / "quickstart.yaml"), "data.batch_size=8", "--sizes",
            "60", "--formats", "tar", "--per-shard", "25", "--steps", "4", "--processes", "1", "--modes", "off",
            "--workers", "1", "--out", str(out), "--work", str(work), "--append"]
    proc = run_cli(*args, timeout=600)
    rows = json.loads((out / "bench_data.json").read_text())["rows"]
    assert [(r["label"], r.get("format")) for r in rows] == [("generated 60", None), ("generated 60", "tar")]
    assert rows[1]["root"] == str(work / "synth-n60-s7-tar") and set(rows[1]["runs"]) == {"off/warm/1p"}
    assert rows[1]["runs"]["off/warm/1p"]["img_s"] > 0 and rows[1]["decode_ms"] > 0
    assert sorted(p.name for p in (work / "synth-n60-s7-tar").iterdir()) == ["train-0000.tar", "train-0001.tar",
                                                                              "train-0002.tar"]
    assert f"wrote {work / 'synth-n60-s7-tar'} (tar, " in proc.stdout
    md = (out / "bench_data.md").read_text()
    assert "| generated 60 | folder | 60 | off/warm/1p |" in md and "| generated 60 | tar | 60 | off/warm/1p |" in md
    assert sorted(p.name for p in work.iterdir()) == ["synth-n60-s7", "synth-n60-s7-tar"]


def test_bench_data_rejects_an_unknown_format_in_one_line(tmp_path: Path):
    proc = run_cli("bench-data", "--sizes", "60", "--formats", "tar,zip", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: bench-data: --formats takes some of folder,csv,jsonl,parquet,hf,tar, "
                                   "got 'tar,zip'")


def test_a_runs_peak_rss_is_its_own_not_the_bench_processs(tmp_path: Path):
    """Linux carries the peak RSS of the process that starts a run into the run's ru_maxrss: a `python -c pass`
    started by a process that touched 600 MB must still report tens of MB, and a run that does touch 300 MB its
    300 MB."""
    ballast = b"x" * (600 * 2**20)  # this process's peak RSS is now over 600 MB
    del ballast
    small = run_measured([sys.executable, "-c", "pass"], dict(os.environ), tmp_path / "a.txt")
    big = run_measured([sys.executable, "-c", "b = b'x' * (300 * 2**20); print('ok')"], dict(os.environ),
                       tmp_path / "b.txt")
    assert small[0] == 0 and small[1] < 150 * 2**20, small
    assert big[0] == 0 and 300 * 2**20 < big[1] < 450 * 2**20 and (tmp_path / "b.txt").read_text() == "ok\n", big
    assert run_measured([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path / "c.txt")[0] == 3


def test_parse_run_reads_the_data_line_and_leaves_out_the_first_interval():
    log = "run: x\ndata: /d | classes a | decoded once, held on the device (why) | ready in 3.25 s\nmodel: m\n"
    rows = [{"kind": "step", "interval_img_per_s": 1.0}, {"kind": "step", "interval_img_per_s": 10.0},
            {"kind": "epoch"}, {"kind": "step", "interval_img_per_s": 30.0}]
    assert parse_run(log, rows) == (3.25, 20.0)
    with pytest.raises(UserError, match="raise --steps"):
        parse_run(log, rows[:1])


def test_bench_data_without_sizes_or_roots_is_one_line(tmp_path: Path):
    proc = run_cli("bench-data", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: bench-data: give --sizes (generated crops) or --roots (data roots to measure)"
