"""bench-data: on a tiny generated set it runs the real `train` command per data path and writes the JSON, the
markdown table and the plot, every figure from a run. Timings are not asserted (docs/PERFORMANCE.md quotes them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checkbox_dist.bench.data import parse_run, table
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
