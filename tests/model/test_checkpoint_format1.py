"""A checkpoint written by the code before the package was split into layers (tests/fixtures/
checkpoint_format1: test_resnet at 32 px, SGD, 2 epochs on 60 synthetic images) still loads, predicts the
probabilities it predicted then, and resumes to the same epoch-3 numbers (golden.json, from that code)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from checkbox_dist.infer.predictor import Predictor
from checkbox_dist.model import checkpoint
from checkbox_dist.synth import render_index
from conftest import REPO, read_metrics, run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_format1"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text())


def test_old_checkpoint_loads_and_predicts_the_same(tmp_path):
    model, payload = checkpoint.load_model(FIXTURE / "best")
    assert payload["classes"] == ["checked", "other", "unchecked"] and payload["model_name"] == "test_resnet"
    assert not model.training
    files = []
    for i in range(len(GOLDEN["probs"])):
        image, label = render_index(GOLDEN["synth_seed"], i)
        files.append(tmp_path / f"{i}_{label}.png")
        image.save(files[-1])
    results = Predictor([FIXTURE / "best"], device="cpu").predict_files(files)
    for got, want in zip(results, GOLDEN["probs"]):
        assert got["confidence"] == pytest.approx(want, abs=2e-6)


def test_old_checkpoint_resumes_to_the_same_numbers(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "last", run / "checkpoints" / "last")
    proc = run_cli("train", "--config", str(FIXTURE / "config.yaml"), f"train.output_dir={run}",
                   "train.resume=auto", "train.epochs=3", f"data.cache_dir={tmp_path / 'cache'}", cwd=REPO)
    assert "resumed from" in proc.stdout and "epoch 3, batch 0" in proc.stdout
    epochs = [r for r in read_metrics(run) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [3]
    want = GOLDEN["resumed_epoch3"]
    for key in ("train_loss", "val_loss", "train_top1", "val_top1"):
        assert epochs[0][key] == pytest.approx(want[key], abs=1e-5), key
    assert epochs[0]["step"] == want["step"]
