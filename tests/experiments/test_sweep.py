"""`checkbox-dist sweep`: a 2-trial local grid run through the real CLI (2 folds each, test_resnet, 32 px,
1 epoch; ~30-40 s on 2 cores), the Slurm trials file, the W&B sweep config, and value quoting."""

from __future__ import annotations

import csv
import json
import shlex

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, TINY, run_cli
from checkbox_dist.cli import main as cli_main
from checkbox_dist.core.config_loader import load_config
from checkbox_dist.experiments.sweep import format_value

CONFIG = str(REPO / "configs" / "quickstart.yaml")


def test_local_grid_sweep_runs_two_cv_trials_and_gathers_them_sorted(synth_root, cache_dir, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("train.label_smoothing: [0.0, 0.2]\n")
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "--space", str(space), "--mode", "grid", "--config", CONFIG, "--folds", "2",
                   "--out", str(out), *TINY, "train.epochs=1", f"data.root={synth_root}",
                   f"data.cache_dir={cache_dir}", "data.batch_size=16", timeout=600)
    assert (out / "trials.txt").read_text().splitlines() == ["train.label_smoothing=0.0", "train.label_smoothing=0.2"]
    for i, smoothing in enumerate([0.0, 0.2]):
        summary = json.loads((out / f"trial_{i}" / "cv_summary.json").read_text())
        assert summary["folds"] == 2 and summary["n_images"] == 60
        cfg = yaml.safe_load((out / f"trial_{i}" / "fold_0" / "config.yaml").read_text())
        assert cfg["train"]["label_smoothing"] == smoothing
    with (out / "sweep_results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["done", "done"]
    scores = [(float(r["top1_mean"]), float(r["macro_f1_mean"])) for r in rows]
    assert scores == sorted(scores, reverse=True)
    for r in rows:  # each row's numbers are its trial's summary
        summary = json.loads((out / f"trial_{r['trial']}" / "cv_summary.json").read_text())
        assert float(r["top1_mean"]) == pytest.approx(summary["top1"]["mean"])
    assert "rank" in proc.stdout and "train.label_smoothing=0.2" in proc.stdout

def test_gather_prints_the_table_best_first_and_lists_unfinished_trials(tmp_path, capsys):
    out = tmp_path / "sw"
    (out / "trial_0").mkdir(parents=True)
    (out / "trial_1").mkdir()
    (out / "trials.txt").write_text("optim.lr=0.001\noptim.lr=0.002\noptim.lr=0.003\n")
    for i, (top1, f1) in enumerate([(0.80, 0.7), (0.90, 0.6)]):
        (out / f"trial_{i}" / "cv_summary.json").write_text(json.dumps(
            {"top1": {"mean": top1, "std": 0.01}, "macro_f1": {"mean": f1, "std": 0.02}, "folds": 5}))
    assert cli_main(["sweep", "--gather", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["1", "1"] and "optim.lr=0.002" in lines[1]
    assert lines[2].split()[:2] == ["2", "0"] and "0.8000 ± 0.0100" in lines[2]
    assert "not done" in lines[3] and "optim.lr=0.003" in lines[3]


def test_slurm_mode_writes_one_override_line_per_trial_and_the_sbatch_command(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {low: 1.0e-4, high: 3.0e-3, log: true}\n"
                     "train.epochs: {low: 10, high: 30, int: true}\n"
                     "data.resize: [letterbox, stretch]\n"
                     "data.background: ['#ffffff', '#000000']\n"
                     "train.mixed_precision: ['no', bf16]\n"
                     "data.augment.scale: [[0.9, 1.1], [0.8, 1.2]]\n")
    out = tmp_path / "sw"
    assert cli_main(["sweep", "--space", str(space), "--config", CONFIG, "--folds", "5", "--trials", "6",
                     "--runner", "slurm", "--out", str(out), "train.progress=false"]) == 0
    printed = capsys.readouterr().out
    assert f"sbatch --array=0-5 slurm/sweep.sh {out / 'trials.txt'} {out}" in printed
    lines = (out / "trials.txt").read_text().splitlines()
    assert len(lines) == 6
    settings_ = json.loads((out / "sweep.json").read_text())
    assert settings_["folds"] == 5 and settings_["base_overrides"] == ["train.progress=false"]
    for line, trial in zip(lines, settings_["trials"]):
        words = line.split(" ")
        assert [w.split("=", 1)[0] for w in words] == list(trial)
        assert shlex.split(line) != [] and all("=" in w for w in words)
        cfg = load_config(CONFIG, words)  # what a Slurm task will run, read back exactly
        assert 1e-4 <= cfg.optim.lr <= 3e-3 and 10 <= cfg.train.epochs <= 30
        assert cfg.data.background == trial["data.background"]
        assert cfg.train.mixed_precision == trial["train.mixed_precision"]
        assert cfg.data.augment.scale == trial["data.augment.scale"]
    assert len({line for line in lines}) > 1
    # what a Slurm array task runs: line I of trials.txt, settings from sweep.json
    assert cli_main(["sweep", "--run-trial", "6", "--out", str(out)]) == 2
    assert "has trials 0..5" in capsys.readouterr().err


def test_wandb_sweep_config_runs_cv_with_the_chosen_overrides(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {low: 1.0e-4, high: 3.0e-3, log: true}\ntrain.label_smoothing: [0.0, 0.1]\n")
    target = tmp_path / "wandb.yaml"
    assert cli_main(["sweep", "--space", str(space), "--config", CONFIG, "--folds", "5", "--wandb", str(target)]) == 0
    sweep = yaml.safe_load(target.read_text())
    assert sweep["metric"] == {"name": "cv/top1_mean", "goal": "maximize"}
    assert sweep["parameters"]["optim.lr"] == {"distribution": "log_uniform_values", "min": 1e-4, "max": 3e-3}
    assert sweep["parameters"]["train.label_smoothing"] == {"values": [0.0, 0.1]}
    assert sweep["command"][:4] == ["checkbox-dist", "cv", "--folds", "5"] and sweep["command"][-1] == "${args_no_hyphens}"
    shipped = yaml.safe_load((REPO / "configs" / "sweeps" / "wandb_sweep.yaml").read_text())
    assert shipped["command"][:2] == ["checkbox-dist", "cv"] and shipped["metric"]["name"] == "cv/top1_mean"


def test_bad_space_and_grid_with_ranges_are_one_line_errors(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {low: 1.0e-4, high: 3.0e-3}\n")
    assert cli_main(["sweep", "--space", str(space), "--mode", "grid", "--out", str(tmp_path / "o")]) == 2
    assert "needs a list of values" in capsys.readouterr().err
    space.write_text("optim.no_such_key: [1, 2]\n")
    assert cli_main(["sweep", "--space", str(space), "--runner", "slurm", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_key" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "trials.txt").exists()  # nothing half-written


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.integers(-10**6, 10**6),
                 st.booleans(), st.sampled_from(["no", "yes", "on", "#000000", "letterbox", "null", "1e-3", "3"]),
                 st.lists(st.floats(min_value=0, max_value=10), max_size=3)))
def test_format_value_round_trips_through_the_override_parser(value):
    text = format_value(value)
    assert " " not in text
    read = yaml.safe_load(text)
    if isinstance(value, float):
        assert isinstance(read, float) and read == pytest.approx(value, rel=1e-5, abs=1e-9)
    elif isinstance(value, list):
        assert read == pytest.approx(value, rel=1e-5, abs=1e-9)
    else:
        assert read == value and type(read) is type(value)


CHILD = """
import pathlib, signal, sys, time
def stop(*_):
    pathlib.Path(sys.argv[1]).write_text("saved")
    sys.exit(75)
signal.signal(signal.SIGUSR1, stop)
print("ready", flush=True)
time.sleep(60)
"""

PARENT = """
import sys
from checkbox_dist.experiments import sweep
sweep._trial_command = lambda settings, i, words: [sys.executable, "-c", sys.argv[2], sys.argv[3]]
sys.exit(sweep.run_trial({"out": sys.argv[1]}, 0, ["optim.lr=0.001"]))
"""


def test_a_trial_passes_preemption_signals_to_its_cv_process(tmp_path):
    """slurm/sweep.sh sends USR1 to `sweep --run-trial`; the cv child must get it (and save), exit code 75."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "child_saved"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), CHILD, str(marker)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    log = tmp_path / "trial_0" / "cv_log.txt"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "ready" in log.read_text()):
        assert parent.poll() is None and time.monotonic() < deadline, parent.stdout.read() if parent.stdout else ""
        time.sleep(0.2)
    parent.send_signal(signal.SIGUSR1)
    assert parent.wait(timeout=60) == 75
    assert marker.read_text() == "saved"
    assert "stopped (exit 75)" in parent.stdout.read()
