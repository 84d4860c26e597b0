"""Elastic resume (docs/LAUNCH.md, "Same recipe, any launch shape"): a run checkpointed by 2 processes continues
on 1 or 4 and ends where the uninterrupted run ends; an fp16 run killed with SIGKILL resumes its GradScaler.

    .venv/bin/pytest tests/train/test_elastic_resume.py -q

The recipe and the uninterrupted run are launch invariance's (tests/invariance_runs.py: BASE, ADAMW, the
session fixture `adamw_runs`): `test_resnet` at 32 px, 160 training images, global batch 32 of micro-batches of 8,
7 optimizer steps (5 in epoch 1, 2 in epoch 2), the quickstart config's augmentation on, AdamW in fp32 with
drop-path, EMA, the cosine schedule's warmup, channels_last and exact gradient sums. The reference is its 2-process
run; the stopped run trains the same recipe, process 0 gets SIGUSR1 during step 3, both save `last` at its end and
exit 75, and the run continues on 1 process (accumulation 4) and on 4 (accumulation 1) from image 96 of epoch 1.
The fp16 runs train SGD with momentum 0.9 through torch's CPU float16 autocast and GradScaler; both processes are
killed (SIGKILL) in step 5, after `checkpoint.every_steps=2` saved step 4, and resume from there.
Multi-process runs are real gloo worlds, started as torchrun starts them (tests/reliability_harness.py).
With exact sums a resumed run is bit-identical to the uninterrupted one, on 1 or 4 processes as on 2; the fp16
run resumed on 1 process (float32 sums) is held to launch invariance's tolerance, 1e-5.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from invariance_runs import ADAMW, EXACT, train
from reliability_harness import read_metrics, tensors_equal

pytestmark = pytest.mark.system  # real multi-process gloo worlds, SIGUSR1 and SIGKILL

TOL = 1e-5
ELASTIC = [*ADAMW, EXACT]  # launch invariance's AdamW recipe, as its reference (adamw_runs[2]) trains it
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
FP16 = ["optim.name=sgd", "optim.momentum=0.9", "optim.lr=0.01", "train.mixed_precision=fp16",
        "checkpoint.every_steps=2"]


def resumed_copy(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory, adamw_runs) -> dict:
    tmp = tmp_path_factory.mktemp("elastic")
    cache = adamw_runs.cache
    runs = {"tmp": tmp, "cache": cache, "reference": adamw_runs[2], "stopped": tmp / "stopped"}
    # SIGUSR1 to process 0 in its 5th micro-batch (optimizer step 3): every process saves at the end of step 3.
    train(2, runs["stopped"], cache, *ELASTIC, env={"CHECKBOX_DIST_FAULT": "step:5:usr1@0"}, expect=75)
    runs["saved"] = torch.load(runs["stopped"] / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    for world in (1, 4):
        runs[world] = resumed_copy(runs["stopped"], tmp / f"resumed-on-{world}")
        runs[f"out{world}"] = train(world, runs[world], cache, *ELASTIC, "train.resume=auto")[0].out
    return runs


def last(run: Path) -> tuple[dict, dict]:
    folder = run / "checkpoints" / "last"
    return (torch.load(folder / "model.pt", weights_only=True)["model"],
            torch.load(folder / "train_state.pt", weights_only=True))


def params_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if not k.endswith(BUFFERS))


def test_the_checkpoint_keeps_the_epoch_position_in_images(runs):
    loop = runs["saved"]["loop"]
    assert (loop["epoch"], loop["global_step"], loop["micro_step"], loop["epoch_samples"]) == (1, 3, 6, 96)
    assert runs["saved"]["world_size"] == 2 and runs["saved"]["micro_batch"] == 8
    # The epoch's running loss/correct/seen, summed over both processes: 96 images so far.
    assert runs["saved"]["epoch_sums"][2] == 96


@pytest.mark.parametrize("world, accum, batch, of", [(1, 4, 12, 20), (4, 1, 3, 5)])
def test_resume_on_another_world_size_rederives_the_accumulation(runs, world, accum, batch, of):
    out = runs[f"out{world}"]
    assert f"resume: world size 2 -> {world}: accumulation {accum}, micro-batch 8, global batch 32" in out
    assert f"epoch 1, batch {batch} of {of} (image 96 of the epoch), optimizer step 3" in out
    assert f"world size {world} (process 0)" in out


@pytest.mark.parametrize("world", [1, 4])
def test_elastic_resume_ends_where_the_uninterrupted_run_ends(runs, world):
    ema, state = last(runs[world])
    ref_ema, ref_state = last(runs["reference"])
    assert params_diff(state["raw_model"], ref_state["raw_model"]) == 0.0  # exact sums: bit-identical
    assert params_diff(ema, ref_ema) == 0.0  # model.pt holds the EMA weights, restored across the resume
    assert state["loop"]["global_step"] == ref_state["loop"]["global_step"] == 7
    assert state["scheduler"]["last_epoch"] == ref_state["scheduler"]["last_epoch"] == 7
    # The schedule's value at and after the resume, step by step; the interrupted epoch's train loss and top-1
    # over all of its images, though 96 of them were trained by 2 processes and the rest by `world`.
    steps = {r["step"]: r for r in read_metrics(runs[world]) if r["kind"] == "step"}
    ref_steps = {r["step"]: r for r in read_metrics(runs["reference"]) if r["kind"] == "step"}
    assert sorted(steps) == list(range(1, 8))
    for step in range(4, 8):
        assert steps[step]["lr"] == pytest.approx(ref_steps[step]["lr"], rel=1e-12), step
    epochs = {r["epoch"]: r for r in read_metrics(runs[world]) if r["kind"] == "epoch"}
    ref_epochs = {r["epoch"]: r for r in read_metrics(runs["reference"]) if r["kind"] == "epoch"}
    for epoch in (1, 2):
        assert epochs[epoch]["train_loss"] == pytest.approx(ref_epochs[epoch]["train_loss"], rel=1e-5)
        assert epochs[epoch]["train_top1"] == ref_epochs[epoch]["train_top1"]


def test_a_position_the_new_world_cannot_continue_from_is_one_line(runs):
    """96 images into the epoch cannot be continued in micro-batches of 64."""
    run = resumed_copy(runs["stopped"], runs["tmp"] / "unfit")
    results = train(1, run, runs["cache"], *ELASTIC, "train.resume=auto", "train.global_batch_size=64",
                    "data.batch_size=64", expect=2)
    errors = [line for line in results[0].err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "saved 96 images into epoch 1, which 1 processes x micro-batch 64" in errors[0]
    assert "not a multiple of 64" in errors[0] and "Traceback" not in results[0].err


def test_fp16_grad_scaler_is_saved_and_restored_across_a_kill(runs):
    tmp, cache = runs["tmp"], runs["cache"]
    reference, killed = tmp / "fp16-reference", tmp / "fp16-killed"
    train(2, reference, cache, *FP16)
    results = train(2, killed, cache, *FP16, env={"CHECKBOX_DIST_FAULT": "step:9:kill"}, expect=None)
    assert results[0].rc == -9, results[0].err[-3000:]  # SIGKILL in step 5 (micro-batch 9 of each process)
    saved = torch.load(killed / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    assert saved["loop"]["global_step"] == 4
    assert saved["scaler"]["_growth_tracker"] == 4 and saved["scaler"]["scale"] > 0  # 4 steps without overflow
    on_one = resumed_copy(killed, tmp / "fp16-on-1")
    train(2, killed, cache, *FP16, "train.resume=auto")
    train(1, on_one, cache, *FP16, "train.resume=auto")
    _, state = last(killed)
    _, ref_state = last(reference)
    for key in ("raw_model", "optimizer", "scaler", "loop"):  # same world size: bit for bit
        tensors_equal(state[key], ref_state[key], key)
    assert ref_state["scaler"]["_growth_tracker"] == 7  # not restarted at 0: the scaler state came back
    _, elastic = last(on_one)
    assert elastic["scaler"] == ref_state["scaler"]  # the same loss scale: no step overflowed on either shape
    assert params_diff(elastic["raw_model"], ref_state["raw_model"]) < TOL
