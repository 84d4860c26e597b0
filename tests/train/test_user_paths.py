"""Training paths users take that no other test runs, each through the real CLI in its own process
(tests/reliability_harness.py): file streaming with DataLoader workers stopped and resumed, `train.resume=PATH`,
resuming onto other classes, the step and plateau schedules through a resume, `eval.every_epochs > 1`,
`optim.scale_lr`, and `optim.clip_grad_norm` with accumulation and with 2 processes (with the NaN-skip policy:
tests/train/test_reliability_faults.py, test_a_skipped_window_with_clipping_changes_nothing_and_the_next_one_trains).

Stops are real: a STOP request raised by SIGUSR1 at a chosen micro-batch (CHECKBOX_DIST_FAULT=step:N:usr1,
core/faults.py), the run saves `last` and exits 75; every resume asserts the point it printed, so a run that
silently started over cannot pass. 60 synthetic images -> 48 train / 12 val; batch 8 -> 6 steps per epoch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_train_args
from reliability_harness import assert_same_run, cli, final_rows, one_line_error, run_world, tensors_equal

pytestmark = pytest.mark.system  # real CLI processes (and a 2-process gloo world)

FAST = ["data.batch_size=8", "train.log_every_steps=1", "eval.confusion_every_epochs=1000",
        "model.drop_rate=0.2"]  # dropout on: the resumed RNG matters
NO_AUGMENT = ["data.augment.translate=0.0", "data.augment.scale=[1.0, 1.0]", "data.augment.brightness=0.0",
              "data.augment.contrast=0.0", "data.augment.invert=0.0"]


def train(run_dir: Path, cache_dir: Path, *extra: str, env: dict | None = None, rc: int = 0):
    result = cli(tiny_train_args(run_dir, cache_dir, *FAST, *extra), env=env)
    assert result.rc == rc, f"exit {result.rc}, expected {rc}\n{result.out[-2000:]}\n{result.err[-3000:]}"
    return result


def stopped_then_resumed(run_dir: Path, cache_dir: Path, at_step: int, *extra: str):
    """STOP (SIGUSR1) at micro-batch `at_step` -> exit 75 with `last` saved; then train.resume=auto to the end.
    Returns the resumed run's output, after asserting it resumed where the stop saved."""
    first = train(run_dir, cache_dir, *extra, env={"CHECKBOX_DIST_FAULT": f"step:{at_step}:usr1"}, rc=75)
    assert "SIGUSR1: saved" in first.out, first.out[-2000:]
    saved = torch.load(run_dir / "checkpoints" / "last" / "train_state.pt", weights_only=True)["loop"]
    assert saved["global_step"] == at_step  # saved at the step it was asked to stop at (log_every_steps=1)
    second = train(run_dir, cache_dir, *extra, "train.resume=auto")
    epoch, batch = (at_step // 6) + 1, at_step % 6
    assert (f"resumed from {run_dir / 'checkpoints' / 'last'}: epoch {epoch}, batch {batch} of 6" in second.out
            and f"optimizer step {at_step}" in second.out), second.out[-2000:]
    return second


def test_file_streaming_with_2_workers_stops_and_resumes_bit_exact(tmp_path: Path, cache_dir: Path):
    """data.device_cache=off: images decoded per step by 2 DataLoader worker processes, not held in memory."""
    extra = ["train.epochs=2", "data.device_cache=off", "data.num_workers=2"]
    straight = tmp_path / "straight"
    out = train(straight, cache_dir, *extra).out
    assert "decoded per step by DataLoader workers" in out  # the streaming path, not the in-memory one
    stopped_then_resumed(tmp_path / "stopped", cache_dir, 8, *extra)  # epoch 2, batch 2
    assert_same_run(tmp_path / "stopped", straight)


def test_resume_from_a_path_continues_that_checkpoint_in_a_new_folder(tmp_path: Path, cache_dir: Path):
    """train.resume=RUN/checkpoints/epoch_0001 with another train.output_dir: epoch 2 trained from there ends where
    the original run's epoch 2 did."""
    original = tmp_path / "original"
    train(original, cache_dir, "train.epochs=2")
    source = original / "checkpoints" / "epoch_0001"
    branch = tmp_path / "branch"
    out = train(branch, cache_dir, "train.epochs=2", f"train.resume={source}").out
    assert f"resumed from {source}: epoch 2, batch 0 of 6" in out and "optimizer step 6" in out, out[-2000:]
    for name in ("last", "best"):
        ours, theirs = (torch.load(d / "checkpoints" / name / "model.pt", weights_only=True)
                        for d in (branch, original))
        tensors_equal(ours["model"], theirs["model"], f"{name} weights")
    assert final_rows(branch, "epoch", "epoch")[2] == final_rows(original, "epoch", "epoch")[2]
    assert sorted(final_rows(branch, "epoch", "epoch")) == [2]  # the new folder holds what it trained


@pytest.mark.parametrize("change", ["renamed", "dropped"])
def test_resuming_onto_data_with_other_classes_is_one_line(tmp_path: Path, cache_dir: Path, synth_root: Path,
                                                           change: str):
    original = tmp_path / "original"
    train(original, cache_dir, "train.epochs=1", f"data.root={synth_root}")
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    if change == "renamed":  # 3 classes still, one of another name: the head's shape would load
        (root / "other").rename(root / "indeterminate")
        now = "['checked', 'indeterminate', 'unchecked']"
    else:
        shutil.rmtree(root / "other")
        now = "['checked', 'unchecked']"
    for resume, run_dir in (("auto", original), (str(original / "checkpoints" / "last"), tmp_path / "new")):
        result = cli(tiny_train_args(run_dir, cache_dir, *FAST, "train.epochs=2", f"data.root={root}",
                                     f"train.resume={resume}"))
        line = one_line_error(result)
        assert f"trained on classes ['checked', 'other', 'unchecked'], data has {now}" in line, line
    assert not (tmp_path / "new").exists()  # the refused fresh folder is not left behind


@pytest.mark.parametrize("schedule", [
    ["schedule.name=step", "schedule.step_epochs=1", "schedule.gamma=0.5"],
    ["schedule.name=plateau", "schedule.plateau_patience=0", "schedule.plateau_factor=0.5", "optim.lr=0.003"],
], ids=["step", "plateau"])
def test_step_and_plateau_schedules_through_a_resume(tmp_path: Path, cache_dir: Path, schedule: list[str]):
    """Stopped in epoch 3 (after two epochs moved the schedule), resumed: the same lr at every step and the same
    run, bit for bit, as one never stopped; and the schedule really changed the lr."""
    extra = ["train.epochs=4", "schedule.warmup_epochs=0", *schedule]
    straight = tmp_path / "straight"
    train(straight, cache_dir, *extra)
    stopped_then_resumed(tmp_path / "stopped", cache_dir, 14, *extra)  # epoch 3, batch 2
    assert_same_run(tmp_path / "stopped", straight)
    lrs = [row["lr"] for row in final_rows(straight, "step", "step").values()]
    epoch_lrs = [row["lr"] for row in final_rows(straight, "epoch", "epoch").values()]
    if "schedule.name=step" in schedule:  # halved at each epoch boundary
        # a step row's lr is the one the next step uses: after s steps, 0.002 x 0.5^(s // 6)
        assert lrs == pytest.approx([0.002 * 0.5 ** (step // 6) for step in range(1, 25)], rel=1e-12), lrs
    else:  # cut by half after each evaluation without a new best val loss; set only at epoch ends
        losses = [row["val_loss"] for row in final_rows(straight, "epoch", "epoch").values()]
        expected, best, lr = [], float("inf"), 0.003
        for loss in losses:  # an epoch row holds the lr its epoch trained with: before its own evaluation
            expected.append(lr)
            if loss < best * (1 - 1e-4):  # ReduceLROnPlateau's default threshold (rel 1e-4)
                best = loss
            else:
                lr *= 0.5
        assert epoch_lrs == pytest.approx(expected, rel=1e-12) and len(set(expected)) > 1, (losses, epoch_lrs)


def test_evaluation_every_2_epochs(tmp_path: Path, cache_dir: Path):
    """eval.every_epochs=2 over 5 epochs: val metrics on epochs 2, 4 and the last (5) only; `best` is the best of
    those by the rule; every checkpoint says the epoch its weights are from."""
    run_dir = tmp_path / "run"
    out = train(run_dir, cache_dir, "train.epochs=5", "eval.every_epochs=2", "eval.best_rule=val_loss",
                "checkpoint.keep_last=5").out
    rows = final_rows(run_dir, "epoch", "epoch")
    assert sorted(rows) == [1, 2, 3, 4, 5]
    evaluated = [e for e, row in rows.items() if "val_loss" in row]
    assert evaluated == [2, 4, 5], evaluated
    assert out.count("| val loss") == 3
    best_epoch = min(evaluated, key=lambda e: rows[e]["val_loss"])
    assert [e for e in evaluated if rows[e]["is_best"]][-1] == best_epoch
    best = torch.load(run_dir / "checkpoints" / "best" / "model.pt", weights_only=True)
    assert best["epoch"] == best_epoch and best["metrics"]["val_loss"] == rows[best_epoch]["val_loss"]
    for epoch in (1, 2, 3, 4, 5):
        saved = torch.load(run_dir / "checkpoints" / f"epoch_{epoch:04d}" / "model.pt", weights_only=True)
        assert saved["epoch"] == epoch, (epoch, saved["epoch"])
    last = torch.load(run_dir / "checkpoints" / "last" / "model.pt", weights_only=True)
    assert last["epoch"] == 5 and last["metrics"]["val_loss"] == rows[5]["val_loss"]


@pytest.mark.parametrize("shape,lr", [(["train.grad_accum_steps=1"], 0.0025), (["train.grad_accum_steps=4"], 0.01)],
                         ids=["global8", "global32"])
def test_scale_lr_reports_and_uses_the_scaled_lr(tmp_path: Path, cache_dir: Path, shape: list[str], lr: float):
    """optim.scale_lr: lr x global batch / optim.base_batch_size (32): 0.01 at a global batch of 8 -> 0.0025."""
    run_dir = tmp_path / "run"
    out = train(run_dir, cache_dir, "train.epochs=1", "optim.lr=0.01", "optim.scale_lr=true",
                "schedule.name=constant", "schedule.warmup_epochs=0", *shape).out
    scaled = f"lr {lr:g} (adamw, scaled from 0.01, constant schedule)" if lr != 0.01 else \
        "lr 0.01 (adamw, constant schedule)"
    assert scaled in out, out[:2000]
    lrs = [row["lr"] for row in final_rows(run_dir, "step", "step").values()]
    assert lrs and lrs == pytest.approx([lr] * len(lrs), rel=1e-12), lrs


# ---- optim.clip_grad_norm -----------------------------------------------------------------------------------

# Every launch shape takes the same 32 images per step (train.global_batch_size=32: 1 step per epoch of 48).
CLIP = ["model.name=test_efficientnet_gn", "optim.lr=0.5", "schedule.name=constant", "schedule.warmup_epochs=0",
        "train.label_smoothing=0.0", "train.epochs=2", "train.global_batch_size=32", "eval.calibrate=false",
        "model.drop_rate=0.0", *NO_AUGMENT]
SGD = ["optim.name=sgd", "optim.momentum=0.0"]


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last" / "model.pt", weights_only=True)["model"]


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_clip_grad_norm_clips_the_whole_window_with_accumulation_and_with_2_processes(tmp_path: Path,
                                                                                      cache_dir: Path):
    """The norm of the step's whole gradient is clipped, once: 1 process x batch 32, 1 x 8 with accumulation 4,
    and 2 gloo processes x 16 take the same two clipped steps (a GroupNorm model, no BatchNorm statistics).
    Controls: the clip is active (without it the weights differ), and clipping each micro-batch would differ."""
    runs = {}
    for name, extra in {"one": ["data.batch_size=32"], "accum": ["data.batch_size=8"],
                        "unclipped": ["data.batch_size=32", "optim.clip_grad_norm=0"]}.items():
        runs[name] = tmp_path / name
        args = tiny_train_args(runs[name], cache_dir, *FAST, "optim.clip_grad_norm=0.05", *CLIP, *SGD, *extra)
        result = cli(args)
        assert result.rc == 0, result.err[-3000:]
    runs["world2"] = tmp_path / "world2"
    results = run_world(2, tiny_train_args(runs["world2"], cache_dir, *FAST, "optim.clip_grad_norm=0.05", *CLIP,
                                           *SGD, "data.batch_size=16"), timeout=300)
    assert [r.rc for r in results] == [0, 0], results[0].err[-3000:] + results[1].err[-3000:]
    assert "world size 2" in results[0].out and "32 global (train.global_batch_size) = 16/process x 2" in \
        results[0].out, results[0].out[-2000:]
    one = _weights(runs["one"])
    assert _max_diff(one, _weights(runs["accum"])) < 2e-6
    assert _max_diff(one, _weights(runs["world2"])) < 2e-6
    assert _max_diff(one, _weights(runs["unclipped"])) > 1e-3
