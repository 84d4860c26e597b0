"""Launch invariance (docs/LAUNCH.md, "Same recipe, any launch shape"): one config with a global batch trains the
same model on 1 process x 4 accumulation steps, 2 x 2 and 4 x 1.

    .venv/bin/pytest tests/train/test_launch_invariance.py -q

Every run (tests/invariance_runs.py: BASE): `test_resnet` at 32 px on 160 synthetic training images, global batch
32, micro-batch 8, 7 optimizer steps (the 5 of epoch 1, then 2 of epoch 2, reshuffled), the quickstart config's
augmentation on. Two recipes cover the paths: SGD with momentum 0.9 in bf16 autocast with channels_last,
mixup/CutMix, class-balanced sampling and dropout; AdamW in fp32 with drop-path, EMA, the cosine schedule's warmup
and channels_last (invariance_runs.ADAMW: its exact-sum runs are the session fixture `adamw_runs`, whose
2-process run is also tests/train/test_elastic_resume.py's uninterrupted reference). Multi-process runs are real
gloo worlds of CPU processes, started as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT,
ACCELERATE_USE_CPU=true; tests/reliability_harness.py: start_world), one thread each.

EXACT: with `train.exact_gradient_sum=true` (train/reduction.py) every shape steps with the same float64-summed
gradient, so the weights after every optimizer step are bit-identical (CHECKBOX_DIST_RANK_TRACE=weights keeps
them per step; a failure names the first step and parameter where two shapes part).

TOLERANCE, the default float32 sums: the shapes add the same micro-batch gradients in another order, so they
agree only to rounding. Parameters (raw and EMA) of the SGD recipe agree within 1e-5 absolute (docs/LAUNCH.md,
"Tolerance, measured"); a real change of recipe, BatchNorm over 16 images instead of 8 with the same
global batch, moves them 1e-3 or more (the control below). The AdamW recipe is not held to it: a last-bit
difference can tip a near tie of a later forward, which AdamW turns into steps of about lr (docs/LAUNCH.md,
"Tolerance, measured").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from invariance_runs import ADAMW, BASE, EXACT, STEPS, TRACE
from invariance_runs import train as train_world
from reliability_harness import read_metrics, run_world

pytestmark = pytest.mark.system  # real multi-process gloo worlds

TOL = 1e-5
SHAPES = (1, 2, 4)  # processes; global batch 32 / micro-batch 8 -> accumulation 4, 2, 1
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
SGD = ["optim.name=sgd", "optim.momentum=0.9", "optim.lr=0.01", "train.mixed_precision=bf16",
       "train.channels_last=true", "train.mixup_alpha=0.4", "train.cutmix_alpha=1.0", "data.balanced_sampling=true",
       "model.drop_rate=0.2"]
RECIPES = {"sgd-momentum-bf16": SGD, "adamw-fp32-ema": ADAMW}  # as written, with float32 sums; the tests add EXACT


def train(world: int, out: Path, cache: Path, *extra: str) -> Path:
    train_world(world, out, cache, *extra, env=TRACE)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, adamw_runs) -> dict:
    tmp, cache = tmp_path_factory.mktemp("invariance"), adamw_runs.cache
    sgd = {("sgd-momentum-bf16", world): train(world, tmp / f"sgd-{world}", cache, *SGD, EXACT) for world in SHAPES}
    return sgd | {("adamw-fp32-ema", world): adamw_runs[world] for world in SHAPES} | {"tmp": tmp, "cache": cache}


@pytest.fixture(scope="module")
def float32_runs(runs) -> dict:
    """The SGD recipe with the default float32 gradient sums (DDP's communication hook), 1 x 4 and 4 x 1."""
    return {world: train(world, runs["tmp"] / f"float32-{world}", runs["cache"], *SGD) for world in (1, 4)}


def params(state: dict) -> dict:
    return {k: v.float() for k, v in state.items() if not k.endswith(BUFFERS)}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def first_divergence(a: Path, b: Path, tol: float) -> str | None:
    """The first optimizer step and parameter where the per-step weights of two runs differ by more than `tol`
    (RUN/debug/steps/<step>.pt, CHECKBOX_DIST_RANK_TRACE=weights), or None."""
    steps = sorted(int(p.stem) for p in (a / "debug" / "steps").glob("*.pt"))
    assert steps == sorted(int(p.stem) for p in (b / "debug" / "steps").glob("*.pt")) == list(range(1, STEPS + 1))
    for step in steps:
        x, y = (params(torch.load(run / "debug" / "steps" / f"{step}.pt", weights_only=True)) for run in (a, b))
        worst = max((((x[k] - y[k]).abs().max().item()), k) for k in x)
        if worst[0] > tol:
            return f"step {step}: {worst[1]} differs by {worst[0]:.3g}"
    return None


def checkpoint(run: Path) -> tuple[dict, dict]:
    """(model.pt weights: the EMA ones when EMA is on, train_state.pt) of `last`."""
    last = run / "checkpoints" / "last"
    return (torch.load(last / "model.pt", weights_only=True)["model"],
            torch.load(last / "train_state.pt", weights_only=True))


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_shape_derives_its_accumulation_from_the_global_batch(runs, recipe):
    for world in SHAPES:
        log = (runs[recipe, world] / "log.txt").read_text()
        assert f"world size {world} (process 0)" in log
        assert (f"batch: 32 global (train.global_batch_size) = 8/process x {world} processes x {4 // world} "
                f"accumulation (derived)") in log
        assert f"5 optimizer steps/epoch, {STEPS} planned" in log


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_shape_trains_the_same_images_in_each_optimizer_step(runs, recipe):
    """One global order per epoch, dealt to the processes micro-batch by micro-batch (balanced sampling draws
    with replacement: compared as multisets)."""
    steps = {}
    for world in SHAPES:
        accum = 4 // world
        ranks = [json.loads(p.read_text()) for p in sorted((runs[recipe, world] / "debug").glob("rank*.json"))]
        assert len(ranks) == world
        for epoch, n_steps in (("1", 5), ("2", STEPS - 5)):
            per_step = []
            for k in range(n_steps):
                images = [i for rank in ranks for i in rank["train"][epoch][8 * accum * k:8 * accum * (k + 1)]]
                assert len(images) == 32
                per_step.append(sorted(images))
            steps.setdefault(epoch, []).append(per_step)
    for epoch, by_shape in steps.items():
        assert by_shape[0] == by_shape[1] == by_shape[2], epoch


@pytest.mark.parametrize("recipe", RECIPES)
def test_exact_sums_give_every_shape_the_same_weights_at_every_step(runs, recipe):
    weights, state = checkpoint(runs[recipe, 1])
    for world in SHAPES[1:]:
        assert first_divergence(runs[recipe, 1], runs[recipe, world], 0.0) is None, world
        other_weights, other_state = checkpoint(runs[recipe, world])
        assert max_diff(params(state["raw_model"]), params(other_state["raw_model"])) == 0.0, world
        assert max_diff(params(weights), params(other_weights)) == 0.0, world  # EMA weights when on
        for a, b in zip(state["optimizer"]["state"].values(), other_state["optimizer"]["state"].values()):
            assert all(torch.equal(a[k], b[k]) for k in a), world
        assert other_state["loop"]["global_step"] == state["loop"]["global_step"] == STEPS
        assert other_state["scheduler"]["last_epoch"] == state["scheduler"]["last_epoch"] == STEPS
        ours = [r for r in read_metrics(runs[recipe, world]) if r["kind"] == "epoch"]
        theirs = [r for r in read_metrics(runs[recipe, 1]) if r["kind"] == "epoch"]
        assert [r["step"] for r in ours] == [r["step"] for r in theirs] == [5, STEPS]
        for a, b in zip(ours, theirs):
            assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["train_top1"] == b["train_top1"]


def test_float32_sums_agree_within_the_tolerance(float32_runs):
    """The default path (DDP sums float32 buckets): 1 x 4 and 4 x 1 part only by rounding of the order."""
    assert first_divergence(float32_runs[1], float32_runs[4], TOL) is None
    _, state = checkpoint(float32_runs[1])
    _, other = checkpoint(float32_runs[4])
    assert 0 < max_diff(params(state["raw_model"]), params(other["raw_model"])) < TOL  # summed in another order


def test_batchnorm_running_buffers_are_averaged_over_the_processes(runs):
    """What differs, as docs/LAUNCH.md says: BatchNorm normalises each micro-batch with its own statistics in every
    shape (so the weights agree); each process updates the running buffers with its own micro-batches, and after
    every optimizer step they are averaged over the processes, so every process holds the same model and EMA,
    buffers included, at every save (tests/train/test_ema_processes.py) and at the end. They count each process's
    forwards, 7 steps x accumulation, so they differ between shapes."""
    for world in SHAPES:
        run = runs["adamw-fp32-ema", world]
        _, state = checkpoint(run)
        assert state["raw_model"]["bn1.num_batches_tracked"].item() == STEPS * (4 // world)
        ranks = [json.loads(p.read_text()) for p in sorted((run / "debug").glob("rank*.json"))]
        assert len(ranks) == world and len({r["weights_sha256"] for r in ranks}) == 1, world
        assert len({r["saves"][-1]["weights_sha256"] for r in ranks}) == 1, world  # the EMA, as saved in `last`


def test_the_tolerance_separates_rounding_from_a_change_of_recipe(runs, float32_runs):
    """Control: the same global batch with micro-batch 16 (BatchNorm over 16 images) is a different model."""
    control = train(1, runs["tmp"] / "control", runs["cache"], *SGD, "data.batch_size=16")
    _, state = checkpoint(float32_runs[1])
    _, other = checkpoint(control)
    assert max_diff(params(state["raw_model"]), params(other["raw_model"])) > 100 * TOL


def test_a_world_size_that_cannot_divide_the_global_batch_is_one_line(runs):
    out = runs["tmp"] / "three"
    results = run_world(3, [*BASE, f"train.output_dir={out}", f"data.cache_dir={runs['cache']}"])
    assert [r.rc for r in results] == [2, 2, 2]
    errors = [line for r in results for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, [r.err[-2000:] for r in results]  # every process stops; process 0 says why
    assert errors[0].startswith("error: train.global_batch_size=32 cannot be split over 3 processes")
    assert not any("Traceback" in r.err for r in results)
    assert not (out / "checkpoints").exists()
