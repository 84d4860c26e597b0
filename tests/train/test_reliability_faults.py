"""Faults injected for real, and nothing lost: kill -9 anywhere, preemption signals, damaged checkpoints,
a full or read-only disk, NaN losses, W&B out of reach. Figures: docs/RELIABILITY.md.

    .venv/bin/pytest tests/train/test_reliability_faults.py -q

Every training run is the real CLI in its own process (tests/reliability_harness.py forks it from a
preloaded server to skip ~7 s of imports per run). Kill points inside a step, an evaluation or a checkpoint
write come from the test-only hook CHECKBOX_DIST_FAULT (checkbox_dist/core/faults.py); the "random" ones are a
SIGKILL sent from outside after a seeded random number of optimizer steps. After each kill, `train.resume=auto`
must finish the run with weights, optimizer state and metrics bit-identical to an uninterrupted run (CPU).
Two-process runs: tests/train/test_reliability_dist.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from reliability_harness import (REPO, assert_same_run, cli, final_rows, one_line_error, read_metrics, start,
                                 tensors_equal, wait_for)

# 90 synthetic images -> 72 train / 18 val; batch 16 -> 4 optimizer steps per epoch, 3 epochs = 12 steps;
# `last` also every 3 steps (mid-epoch resume); val batches of 8 -> 3 per evaluation; dropout on, so the
# global RNG matters. Saves per run: 14 (last x8 incl. mid-epoch, best x4 incl. the calibrated one, epoch x3), with
# a selecting best rule (val_top1: `best` is its own save, so the kill points below land in the writes they name).
BASE = ["--config", str(REPO / "configs" / "quickstart.yaml"), "model.name=test_resnet", "data.image_size=32",
        "data.num_workers=0", "train.progress=false", "tracking.backends=[]", "data.synth_n=90", "data.synth_seed=3",
        "data.batch_size=16", "data.eval_batch_size=8", "train.epochs=3", "train.log_every_steps=1",
        "checkpoint.every_steps=3", "model.drop_rate=0.2", "train.resume=auto",
        "eval.best_rule=val_top1", "eval.confusion_every_epochs=1000"]  # no confusion-matrix PNGs: they were 40% of a run's CPU time


def train_args(run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", *BASE, f"train.output_dir={run_dir}", f"data.cache_dir={cache}", *extra]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> Path:
    """One uninterrupted run, shared by every comparison in this module."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = cli(train_args(run_dir, cache))
    assert result.rc == 0, result.err[-3000:]
    return run_dir


def test_reference_run_is_complete(reference: Path):
    names = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert names == ["best", "epoch_0002", "epoch_0003", "last"], names
    assert len(final_rows(reference, "epoch", "epoch")) == 3 and len(final_rows(reference, "step", "step")) == 12


# SITE:COUNT of checkbox_dist/core/faults.py -> where the resumed run must say it continues from: (checkpoint,
# epoch, batch of the epoch, optimizer step), or None where the kill comes before the first checkpoint (step:3:
# nothing saved yet, so the run must start over and say nothing about resuming). step:10 resumes mid-epoch from the
# step-9 save; eval:2/eval:8 die inside the epoch-1/epoch-3 evaluation; the save.* points die inside a checkpoint
# write: after model.pt, after train_state.pt, and between moving the old folder aside and renaming the new one in
# (save.swap:final: the calibrated `best`, last of all).
KILL_POINTS = {
    "step:3": None,
    "step:6": ("last", 2, 0, 4),
    "step:10": ("last", 3, 1, 9),
    "eval:2": ("last", 1, 3, 3),
    "eval:8": ("last", 3, 4, 12),
    "save.model:3": ("last", 1, 3, 3),
    "save.state:9": ("last", 3, 1, 9),
    "save.swap:4": ("last", 3, 0, 8),
    "save.swap:final": ("last", 4, 0, 12),
}
RESUMED = re.compile(r"^resumed from (\S+): epoch (\d+), batch (\d+) of 4 \(image (\d+) of the epoch\), "
                     r"optimizer step (\d+)$", re.M)


def resume_point(out: str, run_dir: Path) -> tuple[str, int, int, int] | None:
    """(checkpoint name, epoch, batch, optimizer step) of the one `resumed from` line, None when there is none."""
    found = RESUMED.findall(out)
    assert len(found) <= 1, found
    if not found:
        return None
    path, epoch, batch, image, step = found[0]
    assert Path(path).parent == run_dir / "checkpoints", path
    assert int(image) == int(batch) * 16  # batch 16, one process
    return Path(path).name, int(epoch), int(batch), int(step)


def final_swap(reference: Path) -> int:
    """Which save.swap is the last: every save of `last` but the first (7 per run: 4 every-3-steps, 3
    epoch ends) and of `best` but the first (one per new-best epoch, plus the calibrated re-save)."""
    new_bests = sum(1 for row in final_rows(reference, "epoch", "epoch").values() if row["is_best"])
    return (7 - 1) + (new_bests + 1 - 1)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_inside_a_step_an_eval_or_a_checkpoint_write_then_resume_is_bit_exact(
        point: str, tmp_path: Path, cache: Path, reference: Path):
    run_dir = tmp_path / "run"
    fault = point.replace("final", str(final_swap(reference)))
    killed = cli(train_args(run_dir, cache), env={"CHECKBOX_DIST_FAULT": fault})
    assert killed.rc == -signal.SIGKILL, (killed.rc, killed.err[-2000:])
    resumed = cli(train_args(run_dir, cache))
    assert resumed.rc == 0, resumed.err[-3000:]
    assert resume_point(resumed.out, run_dir) == KILL_POINTS[point], resumed.out[-3000:]
    assert_same_run(run_dir, reference)


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_from_outside_after_a_random_step_then_resume_is_bit_exact(
        seed: int, tmp_path: Path, cache: Path, reference: Path):
    """The kill comes at a seeded random optimizer step once a checkpoint exists (`last` is first written at step
    3), so the resumed run must continue from a checkpoint, never start over."""
    after_step = random.Random(seed).randint(3, 11)
    run_dir = tmp_path / "run"
    child = start(train_args(run_dir, cache))
    steps = lambda: [r["step"] for r in read_metrics(run_dir) if r["kind"] == "step"] if (  # noqa: E731
        run_dir / "metrics.jsonl").exists() else []
    saved = run_dir / "checkpoints" / "last" / "meta.json"
    wait_for(lambda: saved.is_file() and any(s >= after_step for s in steps()),
             300, f"optimizer step {after_step} and a checkpoint", child)
    child.signal(signal.SIGKILL)
    assert child.wait(60).rc == -signal.SIGKILL
    killed_at = max(steps())
    resumed = cli(train_args(run_dir, cache))
    assert resumed.rc == 0, resumed.err[-3000:]
    point = resume_point(resumed.out, run_dir)
    assert point is not None and point[0] == "last" and 3 <= point[3] <= killed_at, (point, killed_at,
                                                                                       resumed.out[-2000:])
    step = point[3]  # saved mid-epoch (epoch, batch) or at an epoch's end (the next epoch, batch 0)
    assert point[1:3] in (((step - 1) // 4 + 1, (step - 1) % 4 + 1), (step // 4 + 1, 0)), point
    assert_same_run(run_dir, reference)


# ---- preemption: SIGTERM / SIGUSR1 ---------------------------------------------------------------------------

def _steps_done(run_dir: Path) -> int:
    if not (run_dir / "metrics.jsonl").exists():
        return 0
    return max([r["step"] for r in read_metrics(run_dir) if r["kind"] == "step"], default=0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT], ids=["SIGTERM", "SIGUSR1", "SIGINT"])
def test_preemption_signal_saves_last_exits_75_and_resume_is_bit_exact(
        sig: signal.Signals, tmp_path: Path, cache: Path, reference: Path):
    """Sent from outside once step 5 is logged; from micro-batch 5 on each step sleeps 0.25 s (faults `slow`),
    so the signal lands mid-run however loaded the machine is. Ctrl-C (SIGINT) saves the same way but exits
    130; every one prints the exact command that resumes the run."""
    run_dir = tmp_path / "run"
    child = start(train_args(run_dir, cache), env={"CHECKBOX_DIST_FAULT": "step:5:slow"})
    wait_for(lambda: _steps_done(run_dir) >= 5, 300, "optimizer step 5", child)
    child.signal(sig)
    stopped = child.wait(120)  # a hang guard: the bound is one log interval (1 step here) plus one save
    assert stopped.rc == (130 if sig == signal.SIGINT else 75), (stopped.rc, stopped.err[-2000:])
    assert f"{sig.name}: saved {run_dir / 'checkpoints' / 'last'}" in stopped.out
    assert (f"resume: checkbox-dist train --config {run_dir / 'config.yaml'} train.output_dir={run_dir} "
            f"train.resume=auto") in stopped.out
    assert "Traceback" not in stopped.err
    loop = torch.load(run_dir / "checkpoints" / "last" / "train_state.pt", weights_only=True)["loop"]
    assert loop["global_step"] >= 5 and loop["global_step"] < 12
    resumed = cli(train_args(run_dir, cache))
    assert resumed.rc == 0, resumed.err[-2000:]
    assert resume_point(resumed.out, run_dir) == ("last", loop["epoch"], loop["micro_step"], loop["global_step"])
    assert_same_run(run_dir, reference)


def test_signal_while_decoding_is_kept_and_stops_at_the_first_log_interval(tmp_path: Path, reference: Path):
    """The handlers go in before the data is read: a SIGTERM while images are decoded (site `decode`, the 5th
    of 90) is not lost and does not kill the process with 143; the run trains to its first log interval
    (step 1 here), saves `last`, exits 75, and the resumed run equals the uninterrupted one.
    Its own cache folder, so the decode really happens (the module's cache holds the decoded split)."""
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    stopped = cli(train_args(run_dir, cache), env={"CHECKBOX_DIST_FAULT": "decode:5:term"})
    assert stopped.rc == 75, (stopped.rc, stopped.err[-2000:])
    assert f"SIGTERM: saved {run_dir / 'checkpoints' / 'last'}" in stopped.out
    state = torch.load(run_dir / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    assert state["loop"]["global_step"] == 1
    resumed = cli(train_args(run_dir, cache))
    assert resumed.rc == 0, resumed.err[-2000:]
    assert resume_point(resumed.out, run_dir) == ("last", 1, 1, 1), resumed.out[-2000:]
    assert_same_run(run_dir, reference)


# ---- damaged checkpoints ---------------------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "model.pt truncated": (lambda f: _truncate(f / "model.pt"), "model.pt does not match its checksum"),
    "train_state.pt truncated": (lambda f: _truncate(f / "train_state.pt"), "train_state.pt does not match"),
    "one byte flipped in model.pt": (lambda f: _flip_byte(f / "model.pt"), "model.pt does not match"),
    "model.pt zero bytes": (lambda f: (f / "model.pt").write_bytes(b""), "model.pt does not match"),
    "model.pt missing": (lambda f: (f / "model.pt").unlink(), "model.pt is missing"),
    "meta.json missing (write never finished)": (lambda f: (f / "meta.json").unlink(), "no meta.json"),
    "meta.json truncated": (lambda f: _truncate(f / "meta.json"), "meta.json is not valid JSON"),
    "meta.json from another format": (
        lambda f: (f / "meta.json").write_text(json.dumps(dict(json.loads((f / "meta.json").read_text()), format=99))),
        "checkpoint format 99"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_and_resume_falls_back(damage: str, tmp_path: Path, reference: Path):
    from checkbox_dist.model import checkpoint

    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints", checkpoints)
    do, reason = DAMAGE[damage]
    do(checkpoints / "last")
    said: list[str] = []
    assert checkpoint.find_resumable(checkpoints, say=said.append) == checkpoints / "epoch_0003"
    assert len(said) == 1 and said[0].startswith(f"resume: skipping {checkpoints / 'last'}: ") and reason in said[0]
    with pytest.raises(checkpoint.CheckpointError, match=reason):
        checkpoint.load(checkpoints / "last", with_state=True)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load_model(checkpoints / "last")


def test_resume_skips_damaged_newest_checkpoints_and_still_matches(tmp_path: Path, cache: Path, reference: Path):
    """`last` truncated, `epoch_0003` bit-flipped: resume says so (one line each), continues from
    `epoch_0002`, re-does epoch 3 and ends bit-identical to the uninterrupted run."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    _truncate(run_dir / "checkpoints" / "last" / "train_state.pt")
    _flip_byte(run_dir / "checkpoints" / "epoch_0003" / "model.pt")
    resumed = cli(train_args(run_dir, cache))
    assert resumed.rc == 0, resumed.err[-3000:]
    skipped = [line for line in resumed.out.splitlines() if line.startswith("resume: skipping")]
    assert [s.split(":")[1].strip() for s in skipped] == [
        f"skipping {run_dir / 'checkpoints' / 'last'}", f"skipping {run_dir / 'checkpoints' / 'epoch_0003'}"]
    assert f"resumed from {run_dir / 'checkpoints' / 'epoch_0002'}" in resumed.out
    assert_same_run(run_dir, reference)


def test_eval_and_predict_on_a_damaged_checkpoint_are_one_line_exit_2(tmp_path: Path, reference: Path, cache: Path):
    """`checkbox-dist eval` (the console script itself, no preloaded server) and `predict` on a truncated
    best/model.pt."""
    import subprocess
    import sys

    best = tmp_path / "best"
    shutil.copytree(reference / "checkpoints" / "best", best)
    _truncate(best / "model.pt")
    data = cache / "synth-n90-s3"
    proc = subprocess.run([str(Path(sys.executable).parent / "checkbox-dist"), "eval", "--checkpoint", str(best),
                           "--data", str(data), "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    expected = f"error: {best}: model.pt does not match its checksum (truncated or corrupted)"
    assert proc.stderr.strip().splitlines() == [expected]
    image = next((data / "checked").glob("*.png"))
    assert one_line_error(cli(["predict", "--checkpoint", str(best), str(image)])) == expected


# ---- a full or read-only disk while saving ----------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 MiB tmpfs of its own (needs root with mount rights: CAP_SYS_ADMIN); None where that is refused."""
    import subprocess

    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        yield None
        return
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(mount_point: Path, leave_bytes: int) -> Path:
    filler = mount_point / "filler"
    free = os.statvfs(mount_point).f_bavail * os.statvfs(mount_point).f_frsize
    with filler.open("wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * max(0, free - leave_bytes))  # tmpfs allocates on write, not on truncate
    return filler


def _committed(checkpoints: Path) -> dict[str, str]:
    """{folder: meta.json text} of every checkpoint folder; also asserts each is complete and verified."""
    from checkbox_dist.model import checkpoint

    found = {}
    for folder in sorted(checkpoints.iterdir()):
        assert not folder.name.startswith("."), f"left behind: {folder.name}"
        assert checkpoint.problem(folder) == "", folder
        found[folder.name] = (folder / "meta.json").read_text()
    return found


def test_disk_full_or_read_only_while_saving_keeps_the_previous_checkpoint(
        small_disk, tmp_path: Path, cache: Path, reference: Path):
    """Killed in epoch 2 (so `last` = end of epoch 1). Resumed on a full disk, then on a read-only one: each
    fails with one line, no half-written folder, previous checkpoints byte-identical. With space back, resume
    finishes bit-identical to the uninterrupted run. Without mount rights: a 1 MB file-size limit
    (RLIMIT_FSIZE, `ulimit -f`) stands in for the full disk and the test ends as skipped (the read-only step did
    not run)."""
    import subprocess

    run_dir = (small_disk or tmp_path) / "run"
    killed = cli(train_args(run_dir, cache), env={"CHECKBOX_DIST_FAULT": "step:6"})
    assert killed.rc == -signal.SIGKILL
    before = _committed(run_dir / "checkpoints")
    assert json.loads(before["last"])["global_step"] == 4

    if small_disk is not None:
        filler = _fill(small_disk, leave_bytes=512 * 1024)  # room for logs and metrics, not a checkpoint
        full = cli(train_args(run_dir, cache))
        filler.unlink()
    else:
        full = cli(train_args(run_dir, cache), max_file_bytes=1 << 20)  # model.pt alone is ~1.5 MB
    line = one_line_error(full)
    assert line.startswith(f"error: could not write checkpoint {run_dir / 'checkpoints' / 'last'}: "), line
    assert ("No space left" if small_disk is not None else "File too large") in line, line
    assert line.endswith("the previous checkpoint is untouched"), line
    assert _committed(run_dir / "checkpoints") == before

    if small_disk is not None:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        read_only = cli(train_args(run_dir, cache))
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        line = one_line_error(read_only)
        assert "Read-only file system" in line, line
        assert _committed(run_dir / "checkpoints") == before

    resumed = cli(train_args(run_dir, cache))
    assert resumed.rc == 0, resumed.err[-3000:]
    assert resume_point(resumed.out, run_dir) == ("last", 2, 0, 4), resumed.out[-2000:]
    assert_same_run(run_dir, reference)
    if small_disk is None:  # everything above passed; say what did not run instead of passing quietly
        pytest.skip("read-only disk not tested: mounting a tmpfs was refused (needs CAP_SYS_ADMIN); "
                    "the full disk was a 1 MB `ulimit -f` instead")


# ---- NaN / inf loss ---------------------------------------------------------------------------------------------

def _all_finite(folder: Path) -> bool:
    weights = torch.load(folder / "model.pt", weights_only=True)["model"]
    return all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        kind: str, tmp_path: Path, cache: Path, reference: Path):
    """The loss of micro-batch 5 (optimizer step 5, epoch 2) is multiplied by NaN/inf, so the gradients and
    then the weights go non-finite as in a real overflow. Checked every 4 steps, `last` saved every 3: the
    step-6 save must not write NaN weights. Resumed without the fault, the run ends as the reference."""
    run_dir = tmp_path / "run"
    extra = "train.log_every_steps=4"
    stopped = cli(train_args(run_dir, cache, extra), env={"CHECKBOX_DIST_FAULT": f"step:5:{kind}"})
    line = one_line_error(stopped)
    assert "non-finite loss" in line and "optimizer step 5 " in line and "(epoch 2)" in line, line
    assert _all_finite(run_dir / "checkpoints" / "last") and _all_finite(run_dir / "checkpoints" / "best")
    assert json.loads((run_dir / "checkpoints" / "last" / "meta.json").read_text())["global_step"] == 4
    resumed = cli(train_args(run_dir, cache, extra))
    assert resumed.rc == 0, resumed.err[-3000:]
    assert_same_run(run_dir, reference, step_rows=False)


def test_non_finite_loss_with_nan_policy_skip_drops_that_update_only(tmp_path: Path, cache: Path):
    run_dir = tmp_path / "run"
    done = cli(train_args(run_dir, cache, "train.nan_policy=skip"), env={"CHECKBOX_DIST_FAULT": "step:5:nan"})
    assert done.rc == 0, done.err[-3000:]
    said = [line for line in done.out.splitlines() if "non-finite loss" in line]
    assert len(said) == 1 and "optimizer step 5" in said[0] and "skipped" in said[0], said
    assert _all_finite(run_dir / "checkpoints" / "last") and _all_finite(run_dir / "checkpoints" / "best")
    state = torch.load(run_dir / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {11.0}  # 12 optimizer steps, one of them skipped: no update, not even momentum


def _parameters(state_dict: dict) -> dict:
    """The trained parameters: BatchNorm's running statistics follow every forward pass, a skipped window's too."""
    return {k: v for k, v in state_dict.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.mark.parametrize("precision", ["fp16", "bf16", "no"])
def test_a_skipped_window_with_clipping_changes_nothing_and_the_next_one_trains(
        precision: str, tmp_path: Path, cache: Path):
    """nan_policy=skip with optim.clip_grad_norm, accumulation 2 (2 optimizer steps per epoch): micro-batch 5
    poisons optimizer step 3. Stopped right after it (train.max_steps=3), weights, optimizer and fp16 loss-scaler
    state equal a clean run stopped before it (max_steps=2): the window changed nothing. Run on (max_steps=4),
    the next window trains (under fp16 a skipped window used to leave the gradients unscaled without a step:
    "unscale_() has already been called on this optimizer since the last update()")."""
    extra = [f"train.mixed_precision={precision}", "optim.clip_grad_norm=1.0", "train.grad_accum_steps=2",
             "train.nan_policy=skip", "schedule.name=constant", "schedule.warmup_epochs=0"]
    runs = {}
    for name, steps, fault in (("clean", 2, None), ("skipped", 3, "step:5:nan"), ("after", 4, "step:5:nan")):
        runs[name] = tmp_path / name
        done = cli(train_args(runs[name], cache, *extra, f"train.max_steps={steps}"),
                   env={"CHECKBOX_DIST_FAULT": fault} if fault else None)
        assert done.rc == 0, done.err[-3000:]
        assert ("update skipped" in done.out) == bool(fault), done.out[-2000:]

    def last(name: str) -> tuple[dict, dict]:
        folder = runs[name] / "checkpoints" / "last"
        return (torch.load(folder / "model.pt", weights_only=True)["model"],
                torch.load(folder / "train_state.pt", weights_only=True))

    (clean, clean_state), (skipped, skipped_state), (after, after_state) = last("clean"), last("skipped"), last("after")
    assert skipped_state["loop"]["global_step"] == 3 and clean_state["loop"]["global_step"] == 2
    tensors_equal(_parameters(skipped), _parameters(clean), "weights")
    tensors_equal(_parameters(skipped_state["raw_model"]), _parameters(clean_state["raw_model"]), "raw_model")
    for key in ("optimizer", "scaler"):
        tensors_equal(skipped_state[key], clean_state[key], key)
    if precision == "fp16":
        assert skipped_state["scaler"]["scale"] == clean_state["scaler"]["scale"] > 0
    assert {float(s["step"]) for s in after_state["optimizer"]["state"].values()} == {3.0}  # 4 steps, 1 skipped
    assert _all_finite(runs["after"] / "checkpoints" / "last")
    assert any(not torch.equal(after[k], skipped[k]) for k in after if after[k].is_floating_point())


# ---- W&B out of reach ----------------------------------------------------------------------------------------------

# W&B without credentials: tests/train/test_train.py::test_wandb_offline_run_holds_the_metrics (same assertions)
@pytest.mark.parametrize("case", ["server unreachable"])
def test_wandb_falls_back_to_offline_says_it_once_and_keeps_the_metrics(case: str, tmp_path: Path, cache: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "WANDB_MODE": None, "WANDB_API_KEY": None, "WANDB_BASE_URL": None}
    if case == "server unreachable":  # port 9 (discard) on loopback: refused at once
        env.update(WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="0" * 40)
    run_dir = tmp_path / "run"
    done = cli(train_args(run_dir, cache, "train.epochs=1", "tracking.backends=[wandb]"), env=env)
    assert done.rc == 0, done.err[-3000:]
    said = [line for line in (done.out + done.err).splitlines() if "W&B" in line and "offline" in line]
    assert len(said) == 1 and said[0].startswith("W&B: offline ("), said
    assert ("127.0.0.1:9 unreachable" if case == "server unreachable" else "no WANDB_API_KEY") in said[0]
    from wandb_records import history  # tests/wandb_records.py: reads the offline run file

    runs = list((run_dir / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    logged = history(runs[0])
    epoch = final_rows(run_dir, "epoch", "epoch")[1]
    row = next(r for r in logged if "val/top1" in r)
    assert row["val/top1"] == pytest.approx(epoch["val_top1"]) and row["val/loss"] == pytest.approx(epoch["val_loss"])
    assert row["train/epoch_loss"] == pytest.approx(epoch["train_loss"])
    assert len([r for r in logged if "train/loss" in r]) == 4  # one per optimizer step (log_every_steps=1)


def test_wandb_probe_uses_the_port_of_wandb_base_url(monkeypatch):
    """A self-hosted server on another port than 443 is reachable: the probe must try that port."""
    import socket

    from checkbox_dist.train.output import wandb_mode

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
        monkeypatch.delenv("WANDB_MODE", raising=False)
        assert wandb_mode("auto") == ("online", "")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    mode, why = wandb_mode("auto")
    assert mode == "offline" and why.startswith("127.0.0.1:9 unreachable")
