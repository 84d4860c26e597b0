"""Accumulation windows, epoch ends and eval row counts decided by the loop's own count, not by a loader
thread: the stand-in for torch_xla's MpDeviceLoader (checkbox_dist/core/prefetch.py, CHECKBOX_DIST_PREFETCH=24)
reads the train and val loaders 24 batches ahead from a thread, as MpDeviceLoader does on several TPU cores,
in front of real 2-process gloo worlds. The single-device XLA run (real MpDeviceLoader, one all-reduce per
optimizer step): tests/train/test_xla.py.

    .venv/bin/pytest tests/train/test_sync_windows.py -q

Every run writes RUN/debug/rank<N>.json (CHECKBOX_DIST_RANK_TRACE=1): the micro-batches that closed a window,
the calls of optimizer.step per epoch, the val indices each rank evaluated (with Accelerate's padding).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from reliability_harness import REPO, cli, read_metrics, run_world

pytestmark = pytest.mark.system  # real multi-process worlds (gloo)

ACCUM = 4
# data.synth_n -> micro-batches per process and epoch at 2 processes x 2 images (the split keeps 80% for train),
# and a val split that 2 processes x eval batch 7 do not divide (9, 30, 39 images).
SYNTH_N = {10: 50, 30: 150, 40: 200}


def train_args(run_dir: Path, cache: Path, micro_per_epoch: int, *extra: str) -> list[str]:
    return ["train", "--config", str(REPO / "configs" / "quickstart.yaml"), "model.name=test_resnet",
            "data.image_size=32", "data.num_workers=0", "train.progress=false", "tracking.backends=[]",
            f"data.synth_n={SYNTH_N[micro_per_epoch]}", "data.synth_seed=5", "data.batch_size=2",
            "data.eval_batch_size=7", f"train.grad_accum_steps={ACCUM}", "train.epochs=2", "train.log_every_steps=1",
            "schedule.name=constant", "eval.confusion_every_epochs=1000", f"train.output_dir={run_dir}",
            f"data.cache_dir={cache}", *extra]


ENV = {"CHECKBOX_DIST_RANK_TRACE": "1", "CHECKBOX_DIST_PREFETCH": "24"}


def expected_windows(micro_per_epoch: int, start: int = 0) -> list[int]:
    """Micro-batches that close a window: every ACCUM-th of the epoch, and the epoch's last."""
    return [m for m in range(start, micro_per_epoch) if (m + 1) % ACCUM == 0 or m + 1 == micro_per_epoch]


def traces(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "debug").glob("rank*.json"))]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sync_cache")


@pytest.mark.parametrize("micro_per_epoch", [10, 30, 40])
def test_windows_close_on_the_loops_count_with_a_prefetching_loader(micro_per_epoch: int, tmp_path: Path,
                                                                     cache: Path):
    """2 gloo processes behind the 24-deep prefetching thread: each epoch steps ceil(M / 4) times, the last
    window closes on the epoch's last micro-batch, and eval counts every val image once."""
    run_dir = tmp_path / "run"
    results = run_world(2, train_args(run_dir, cache, micro_per_epoch), env=ENV)
    assert all(r.rc == 0 for r in results), results[0].err[-3000:] + results[1].err[-3000:]
    assert f"{math.ceil(micro_per_epoch / ACCUM)} optimizer steps/epoch" in results[0].out, results[0].out[:600]
    for trace in traces(run_dir):
        assert trace["world_size"] == 2
        assert trace["windows"] == {"1": expected_windows(micro_per_epoch), "2": expected_windows(micro_per_epoch)}
        steps = math.ceil(micro_per_epoch / ACCUM)
        assert trace["optimizer_steps"] == {"1": steps, "2": steps}  # optimizer.step on window ends only
    assert_eval_counts_each_val_image_once(run_dir)


def assert_eval_counts_each_val_image_once(run_dir: Path) -> None:
    ranks = traces(run_dir)
    passes = len(ranks[0]["val"])
    assert passes >= 2
    for p in range(passes):
        evaluated = [i for trace in ranks for i in trace["val"][p]]
        n_val = len(set(evaluated))
        assert set(evaluated) == set(range(n_val)) and len(evaluated) > n_val  # Accelerate padded the last batch
    epochs = [row for row in read_metrics(run_dir) if row["kind"] == "epoch"]
    assert [sum(map(sum, row["val_confusion"])) for row in epochs] == [n_val] * len(epochs)


def test_a_run_resumed_mid_epoch_keeps_the_epochs_windows(tmp_path: Path, cache: Path):
    """Preempted at micro-batch 6 of epoch 1 (saved at the window end, micro-batch 7), resumed: the resumed part
    of epoch 1 closes its short window on micro-batch 9 and epoch 2 has the windows of a fresh epoch."""
    run_dir = tmp_path / "run"
    stopped = run_world(2, train_args(run_dir, cache, 10), env={**ENV, "CHECKBOX_DIST_FAULT": "step:6:usr1"})
    assert [r.rc for r in stopped] == [75, 75], stopped[0].err[-3000:]
    meta = json.loads((run_dir / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["global_step"] == 2
    resumed = run_world(2, train_args(run_dir, cache, 10, "train.resume=auto"), env=ENV)
    assert all(r.rc == 0 for r in resumed), resumed[0].err[-3000:]
    assert "epoch 1, batch 8 of 10" in resumed[0].out
    for trace in traces(run_dir):  # the resumed run's trace
        assert trace["windows"] == {"1": [9], "2": expected_windows(10)}
        assert trace["optimizer_steps"] == {"1": 1, "2": 3}
    last = torch.load(run_dir / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    assert last["loop"]["global_step"] == 6


def test_one_process_steps_the_optimizer_once_per_window(tmp_path: Path, cache: Path):
    """Plain CPU, no prefetching: optimizer.step runs exactly steps_per_epoch times per epoch (3 for 10
    micro-batches with accumulation 4), never per micro-batch."""
    run_dir = tmp_path / "run"
    result = cli(train_args(run_dir, cache, 10, "data.batch_size=4"), env={"CHECKBOX_DIST_RANK_TRACE": "1"})
    assert result.rc == 0, result.err[-3000:]
    (trace,) = traces(run_dir)
    assert trace["windows"] == {"1": [3, 7, 9], "2": [3, 7, 9]}
    assert trace["optimizer_steps"] == {"1": 3, "2": 3}
