"""Two-stage training (pretrain.synth_n > 0): synthetic pretraining once, cached, then the fine-tune from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY, load_weights, run_cli, tiny_train_args

# GroupNorm model and plain SGD: with optim.lr=0 the fine-tune cannot move a weight (no BatchNorm running
# statistics, no weight decay step), so its `last` must equal the stage-one model it started from.
FROZEN_FINE_TUNE = ["model.name=test_efficientnet_gn", "optim.name=sgd", "optim.lr=0.0", "optim.weight_decay=0.0",
                    "train.epochs=1", "eval.calibrate=false", "pretrain.lr=0.05", "pretrain.epochs=2",
                    "pretrain.batch_size=8", "pretrain.synth_n=48", "pretrain.val_fraction=0.25"]


def stage_dirs(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "pretrain").glob("test_efficientnet_gn-*") if p.is_dir())


def test_fine_tune_starts_from_the_cached_pretraining(tmp_path: Path, synth_root: Path):
    cache = tmp_path / "cache"
    first = run_cli(*tiny_train_args(tmp_path / "a", cache, *FROZEN_FINE_TUNE, data_root=synth_root)).stdout
    assert first.count("pretrain: stage one, 2 epochs on 48 synthetic images") == 1, first[-2000:]
    (stage,) = stage_dirs(cache)
    assert (stage / "summary.json").is_file() and (stage / "config.yaml").is_file()
    stage_cfg = yaml.safe_load((stage / "config.yaml").read_text())
    assert stage_cfg["data"]["root"] == "" and stage_cfg["data"]["synth_n"] == 48
    assert stage_cfg["optim"]["lr"] == 0.05 and stage_cfg["train"]["epochs"] == 2
    assert stage_cfg["pretrain"]["synth_n"] == 0  # stage one has no stage one
    # The fine-tune run records where it started, and at lr 0 it is exactly the stage-one model.
    run_cfg = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert run_cfg["train"]["init_from"] == str(stage / "checkpoints" / "last")
    assert run_cfg["pretrain"]["synth_n"] == 48
    pretrained, tuned = load_weights(stage / "checkpoints" / "last"), load_weights(tmp_path / "a" / "checkpoints" / "last")
    assert pretrained.keys() == tuned.keys() and all(torch.equal(pretrained[k], tuned[k]) for k in pretrained)
    # Control: the same fine-tune without stage one stays at the random initialisation, far from it.
    scratch = tmp_path / "scratch"
    run_cli(*tiny_train_args(scratch, cache, *FROZEN_FINE_TUNE, "pretrain.synth_n=0", data_root=synth_root))
    fresh = load_weights(scratch / "checkpoints" / "last")
    assert max((fresh[k] - pretrained[k]).abs().max().item() for k in fresh if fresh[k].is_floating_point()) > 1e-3

    # A second run with the same pretraining reuses it (nothing rewritten); a different recipe gets its own.
    stamp = (stage / "summary.json").stat().st_mtime_ns
    again = run_cli(*tiny_train_args(tmp_path / "b", cache, *FROZEN_FINE_TUNE, "train.log_every_steps=3",
                                     data_root=synth_root)).stdout
    assert f"pretrain: reusing {stage}" in again and "stage one" not in again
    assert (stage / "summary.json").stat().st_mtime_ns == stamp
    run_cli(*tiny_train_args(tmp_path / "c", cache, *FROZEN_FINE_TUNE, "pretrain.epochs=1", data_root=synth_root))
    assert len(stage_dirs(cache)) == 2


def test_kind_labelled_stage_one_gives_its_body_to_a_three_class_fine_tune(tmp_path: Path, synth_root: Path):
    """pretrain.labels=kind: stage one learns what was drawn (checked-radio, other-slider, ...), not balanced
    by kind; the fine-tune keeps its body and gets a new 3-class head."""
    cache = tmp_path / "cache"
    out = run_cli(*tiny_train_args(tmp_path / "a", cache, *FROZEN_FINE_TUNE, "pretrain.labels=kind",
                                   "data.balanced_sampling=true", data_root=synth_root)).stdout
    assert "pretrain: stage one, 2 epochs on 48 synthetic images labelled by kind" in out, out[-2000:]
    (stage,) = stage_dirs(cache)
    stage_cfg = yaml.safe_load((stage / "config.yaml").read_text())
    assert stage_cfg["data"]["synth_labels"] == "kind" and stage_cfg["data"]["balanced_sampling"] is False
    images = cache / "synth-n48-s0-kind"
    kinds = sorted(p.name for p in images.iterdir() if p.is_dir())
    assert len(kinds) > 6 and all(k.split("-")[0] in ("checked", "other", "unchecked") for k in kinds), kinds
    assert {k.split("-")[1] for k in kinds} >= {"checkbox", "radio", "toggle"}, kinds
    pretrained, tuned = load_weights(stage / "checkpoints" / "last"), load_weights(tmp_path / "a" / "checkpoints" / "last")
    head = [k for k in pretrained if pretrained[k].shape != tuned[k].shape]
    assert head and all(pretrained[k].shape[0] == len(kinds) and tuned[k].shape[0] == 3 for k in head), head
    assert all(torch.equal(pretrained[k], tuned[k]) for k in pretrained if k not in head)  # lr 0: the same body
    # The same images, labelled by class, are another cache folder and another stage one.
    run_cli(*tiny_train_args(tmp_path / "b", cache, *FROZEN_FINE_TUNE, data_root=synth_root))
    assert len(stage_dirs(cache)) == 2 and (cache / "synth-n48-s0" / "checked").is_dir()


def _wait(condition, what: str, children: list, timeout: float = 300) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        exited = [c.process.exitcode for c in children if c.process.exitcode is not None]
        assert not exited and time.monotonic() < deadline, (what, exited, [_log(c)[-2000:] for c in children])
        time.sleep(0.1)


def _log(child) -> str:
    """What a running harness child has printed so far (stdout, then stderr; both unbuffered)."""
    return "".join(p.read_text(errors="replace") if p.exists() else "" for p in (child.out_file, child.err_file))


def test_parallel_runs_share_one_pretraining(tmp_path: Path, synth_root: Path):
    """Two processes on one stage one (two CV folds, two sweep trials): x trains it and is frozen (SIGSTOP, faults
    `step:2:stop`) in its second step, holding the lock; y, started then, must say it waits, and once x goes on,
    reuse what x trained. The waiting is made to happen, not left to timing. Both are real `checkbox-dist train`
    processes of their own (tests/reliability_harness.py: forked, not a second interpreter start-up each)."""
    import signal

    from reliability_harness import is_stopped, start

    cache = tmp_path / "cache"
    argv = {name: tiny_train_args(tmp_path / name, cache, *FROZEN_FINE_TUNE, data_root=synth_root)
            for name in ("x", "y")}
    children = []
    try:
        x = start(argv["x"], env={"CHECKBOX_DIST_FAULT": "step:2:stop"}, log_dir=tmp_path / "logs")
        children.append(x)
        _wait(lambda: is_stopped(x.pid), "x stopped inside stage one", [x])
        assert "pretrain: stage one" in _log(x)
        y = start(argv["y"], log_dir=tmp_path / "logs")
        children.append(y)
        _wait(lambda: "another process is building" in _log(y), "y waiting on the lock", children)
        x.signal(signal.SIGCONT)
        results = [child.wait(timeout=300) for child in children]  # kills (SIGKILL) one that does not end
    finally:
        for child in children:
            if child.process.exitcode is None:
                child.signal(signal.SIGKILL)
    outputs = [r.out + r.err for r in results]
    assert [r.rc for r in results] == [0, 0], outputs
    assert outputs[0].count("pretrain: stage one") == 1 and "pretrain: reusing" not in outputs[0], outputs[0]
    assert outputs[1].count("another process is building") == 1 and outputs[1].count("pretrain: reusing") == 1
    assert "pretrain: stage one" not in outputs[1], outputs[1]
    (stage,) = stage_dirs(cache)
    for name in ("x", "y"):
        assert yaml.safe_load((tmp_path / name / "config.yaml").read_text())["train"]["init_from"] == \
            str(stage / "checkpoints" / "last")


@pytest.mark.parametrize("overrides, message", [
    (["pretrain.synth_n=3"], "pretrain.synth_n: the synthetic dataset needs at least 6 images"),
    (["pretrain.resize=crop"], "pretrain.resize: 'crop' is not one of , letterbox, stretch"),
    (["pretrain.val_fraction=1.5"], "pretrain.val_fraction: must be between 0 and 1"),
    (["pretrain.synth_n=60", "train.init_from=TMP"], "are both set: fine-tune from one of them"),
], ids=["synth_n 3", "resize crop", "val_fraction 1.5", "with init_from"])
def test_pretrain_config_errors_are_one_line(tmp_path: Path, overrides: list[str], message: str):
    overrides = [o.replace("TMP", str(tmp_path)) for o in overrides]
    proc = run_cli("train", "--config", "quickstart", *TINY, f"train.output_dir={tmp_path / 'run'}",
                   f"data.cache_dir={tmp_path}", *overrides, check=False)
    assert proc.returncode == 2 and message in proc.stderr, (overrides, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "pretrain").exists()  # nothing half-built


def test_stopped_stage_one_resumes_on_the_next_run(tmp_path: Path, synth_root: Path):
    """Preempted in stage one (RUN/STOP, as slurm/train.sh asks): exit 75 with stage one's `last` saved; the
    requeued run continues stage one from there instead of starting it again, then fine-tunes."""
    from checkbox_dist.train import pretrain
    from checkbox_dist.core.config_loader import load_config

    cache = tmp_path / "cache"
    args = tiny_train_args(tmp_path / "run", cache, *FROZEN_FINE_TUNE, "train.log_every_steps=1", data_root=synth_root)
    stage = Path(pretrain.stage_config(load_config(args[2], args[3:])).train.output_dir)
    stage.mkdir(parents=True)
    (stage / "STOP").touch()
    stopped = run_cli(*args, check=False)
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert "stop request: saved" in stopped.stdout and (stage / "checkpoints" / "last").is_dir()
    assert not (stage / "summary.json").exists() and not (tmp_path / "run" / "config.yaml").exists()
    resumed = run_cli(*args).stdout
    assert f"resumed from {stage / 'checkpoints' / 'last'}: epoch 1, batch 1" in resumed, resumed[-3000:]
    assert (stage / "summary.json").is_file() and (tmp_path / "run" / "checkpoints" / "last").is_dir()


def test_mixed_synthetic_images_join_the_training_split_only(tmp_path: Path, synth_root: Path):
    """pretrain.mix_n: synthetic images in the fine-tune's training split (rehearsal), never in val, and
    not part of stage one's identity: a run that only adds mix_n finds the same stage-one folder."""
    from checkbox_dist.core.config_loader import load_config
    from checkbox_dist.train.pretrain import stage_config

    # Stage one's folder (the hash of what changes its weights) is the same with and without mixing.
    base = [f"data.cache_dir={tmp_path}", "pretrain.synth_n=48", "data.root=/somewhere"]
    plain, mixing = (stage_config(load_config(None, [*base, *extra])) for extra in ([], ["pretrain.mix_n=500"]))
    assert plain.train.output_dir == mixing.train.output_dir and mixing.pretrain.mix_n == 0
    cache = tmp_path / "cache"
    mixed = run_cli(*tiny_train_args(tmp_path / "b", cache, "train.epochs=1", "pretrain.mix_n=30",
                                     data_root=synth_root)).stdout
    assert "pretrain.mix_n: + 30 synthetic images (seed 1) in the training split" in mixed
    assert "train 78 (26/26/26) | val 12 (4/4/4)" in mixed  # 60 real -> 48 train + 12 val; +30 in train only
    assert sorted(p.name for p in (cache / "synth-n30-s1" / "checked").glob("*.png"))[:1] == ["checked_000000.png"]
    # the folder's classes must be the generator's
    other = tmp_path / "two_classes"
    for c in ("cat", "dog"):
        (other / c).mkdir(parents=True)
        for f in sorted((synth_root / "checked").glob("*.png"))[:6]:
            (other / c / f.name).write_bytes(f.read_bytes())
    proc = run_cli(*tiny_train_args(tmp_path / "c", cache, "pretrain.mix_n=30", data_root=other), check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "pretrain.mix_n: synthetic images have the classes checked, other, unchecked" in proc.stderr
