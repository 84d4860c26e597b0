"""A refit (data.val_fraction=0) through the real CLI: every image trains, the final weights are kept, nothing
is fitted on training images, the CV estimate of eval.cv_dir is quoted, and a stopped refit resumes exactly.

The CV folder is a real `cv --out` summary and OOF file of the ResNet18 proxy (tests/fixtures/cv_resnet18_proxy/), copied: the
refit only reads it. ~30 s on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import REPO, load_weights, read_metrics, run_cli, tiny_train_args

MEASURED = REPO / "tests" / "fixtures" / "cv_resnet18_proxy"
REFIT = ["data.val_fraction=0", "train.epochs=2", "data.batch_size=8", "train.log_every_steps=1"]


@pytest.fixture(scope="module")
def cv_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cv")
    shutil.copy(MEASURED / "cv_summary.json", folder / "cv_summary.json")
    shutil.copy(MEASURED / "oof_predictions.csv", folder / "oof_predictions.csv")
    return folder


def test_refit_trains_every_image_keeps_the_final_weights_and_quotes_the_cv_estimate(tmp_path, cache_dir, cv_dir):
    out = tmp_path / "refit"
    proc = run_cli(*tiny_train_args(out, cache_dir, *REFIT, f"eval.cv_dir={cv_dir}"))
    assert "train 60 (20/20/20) | no val (refit" in proc.stdout
    assert "no held-out figure" in proc.stdout and "3-fold CV estimate of this recipe (411 images" in proc.stdout
    cv = json.loads((cv_dir / "cv_summary.json").read_text())
    assert f"top-1 {cv['top1']['mean']:.4f} ± {cv['top1']['std']:.4f}" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["refit"] and summary["held_out"] is None and summary["val_top1"] is None
    assert summary["cv_estimate"]["top1"] == cv["top1"] and summary["best_epoch"] == 2
    assert not any("val_loss" in row for row in read_metrics(out))  # never evaluated: nothing held out
    best, last = load_weights(out / "checkpoints" / "best"), load_weights(out / "checkpoints" / "last")
    assert all(torch.equal(best[k], last[k]) for k in best)  # the final weights, not a selected epoch
    payload = torch.load(out / "checkpoints" / "best" / "model.pt", weights_only=True)
    # The folds' temperatures were 0.96 / 1.13 / 0.97: the OOF fit on their logits lands among them.
    assert 0.9 < payload["temperature"] < 1.2 and payload["temperature"] == summary["temperature"]
    assert "out-of-fold predictions" in payload["metrics"]["refit"]["calibration"]
    card = run_cli("export", "--checkpoint", str(out), "--format", "timm", "--out", str(tmp_path / "timm"))
    text = (tmp_path / "timm" / "README.md").read_text()
    assert card.returncode == 0 and "no held-out figure" in text and f"{cv['top1']['mean']:.4f}" in text


def test_a_stopped_refit_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, cache_dir):
    """No eval.cv_dir: uncalibrated (T = 1), said so. STOP after the first step -> exit 75 -> resume=auto
    finishes with bit-identical weights, and `best` is the final epoch's."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    proc = run_cli(*tiny_train_args(straight, cache_dir, *REFIT))
    assert "uncalibrated" in proc.stdout and "no CV estimate quoted" in proc.stdout
    stopped.mkdir()
    (stopped / "STOP").touch()
    assert run_cli(*tiny_train_args(stopped, cache_dir, *REFIT), check=False).returncode == 75
    resumed = run_cli(*tiny_train_args(stopped, cache_dir, *REFIT, "train.resume=auto"))
    assert "resumed from" in resumed.stdout and "done: refit, final epoch 2 kept" in resumed.stdout
    for name in ("last", "best"):
        a, b = load_weights(straight / "checkpoints" / name), load_weights(stopped / "checkpoints" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.load(stopped / "checkpoints" / "best" / "model.pt", weights_only=True)["temperature"] == 1.0


def test_a_refit_refuses_a_schedule_that_needs_a_val_loss(tmp_path, cache_dir):
    proc = run_cli(*tiny_train_args(tmp_path / "r", cache_dir, "data.val_fraction=0", "schedule.name=plateau"),
                   check=False)
    assert proc.returncode == 2 and "plateau" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_refit_naming_a_missing_cv_run_fails_before_training_and_leaves_no_folder(tmp_path, cache_dir):
    out = tmp_path / "r"
    proc = run_cli(*tiny_train_args(out, cache_dir, *REFIT, f"eval.cv_dir={tmp_path / 'no_cv'}"), check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "eval.cv_dir=" in proc.stderr and "no cv_summary.json" in proc.stderr
    assert "epoch 1" not in proc.stdout and not out.exists()
