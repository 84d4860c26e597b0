"""The training loop through the real CLI: outputs, gradient accumulation, resume, W&B offline, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import REPO, load_weights, read_metrics, run_cli, tiny_train_args
from reliability_harness import assert_same_run

NO_AUGMENT = ["data.augment.translate=0.0", "data.augment.scale=[1.0, 1.0]", "data.augment.brightness=0.0",
              "data.augment.contrast=0.0", "data.augment.invert=0.0"]


def test_quickstart_end_to_end(tmp_path: Path, cache_dir: Path):
    """`checkbox-dist quickstart` on a tiny model: trains, prints metrics and paths, classifies an image."""
    out = tmp_path / "qs"
    proc = run_cli("quickstart", "model.name=test_resnet", "data.image_size=32", "data.synth_n=60",
                   "data.synth_seed=3", "train.epochs=2", "train.progress=false", f"train.output_dir={out}",
                   f"data.cache_dir={cache_dir}", fresh=True)  # the real entry point, in a new interpreter
    text = proc.stdout
    assert "world size 1" in text and "global" in text and "optimizer steps/epoch" in text
    assert "done: best epoch" in text and f"best checkpoint: {out}/checkpoints/best" in text
    predict_line = next(l for l in text.splitlines() if l.startswith("predict "))
    assert all(c in predict_line for c in ("checked", "other", "unchecked"))
    assert predict_line.startswith(f"predict {out}/sample_") and (out / predict_line.split()[1].rsplit("/", 1)[1]).is_file()
    # The closing lines: what the model is, real paths to its pictures, the next commands (no repository path).
    assert "a demo trained on generated widgets" in text
    assert f"plots: {out}/plots/metrics_plot.png and {out}/plots/confusion_matrix_best.png" in text
    assert (out / "plots" / "confusion_matrix_best.png").is_file() and "<N>" not in text
    assert f"checkbox-dist predict --checkpoint {out}/checkpoints/best YOUR_IMAGE.png" in text
    assert "configs --path multi_gpu" in text and "launch/" not in text.split("next:", 1)[1]
    # Run folder: resolved config, metrics, plots, checkpoints that load with weights_only=True.
    assert (out / "config.yaml").is_file() and (out / "log.txt").read_text().count("epoch 2:") == 1
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for row in epochs:
        assert 0 <= row["val_top1"] <= 1 and row["val_loss"] > 0 and sum(map(sum, row["val_confusion"])) == 12
    assert (out / "plots" / "metrics_plot.png").stat().st_size > 10_000
    assert (out / "plots" / "confusion_matrix_epoch_2.png").is_file()
    payload = torch.load(out / "checkpoints" / "best" / "model.pt", weights_only=True)
    assert payload["classes"] == ["checked", "other", "unchecked"] and payload["model_name"] == "test_resnet"
    assert payload["preprocess"]["image_size"] == 32 and payload["temperature"] > 0
    meta = json.loads((out / "checkpoints" / "best" / "meta.json").read_text())
    assert set(meta["files"]) == {"model.pt"} and meta["versions"]["torch"]
    assert (out / "checkpoints" / "last" / "train_state.pt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_checkpoint"] == str(out / "checkpoints" / "best")
    # the temperature is fitted to minimise the val NLL: calibrated loss never above the raw one
    assert summary["temperature"] != 1.0 and summary["val_loss_calibrated"] <= summary["val_loss"] + 1e-6
    assert f"loss {summary['val_loss']:.4f} -> {summary['val_loss_calibrated']:.4f}, ECE" in text


def test_grad_accumulation_matches_one_big_batch(tmp_path: Path, cache_dir: Path):
    """4 x 8 with accumulation == one batch of 32 (a GroupNorm model: BatchNorm statistics would differ)."""
    common = ["model.name=test_efficientnet_gn", "optim.name=sgd", "optim.momentum=0.0", "optim.lr=0.1",
              "schedule.name=constant", "schedule.warmup_epochs=0", "train.label_smoothing=0.0",
              "train.max_steps=1", "train.epochs=1", "eval.calibrate=false", *NO_AUGMENT]
    big, small = tmp_path / "big", tmp_path / "small"
    run_cli(*tiny_train_args(big, cache_dir, *common, "data.batch_size=32", "train.grad_accum_steps=1"))
    run_cli(*tiny_train_args(small, cache_dir, *common, "data.batch_size=8", "train.grad_accum_steps=4"))
    one = tmp_path / "one"  # control: one micro-batch of 8 without accumulation is a different update
    run_cli(*tiny_train_args(one, cache_dir, *common, "data.batch_size=8", "train.grad_accum_steps=1"))
    a, b = load_weights(big / "checkpoints" / "last"), load_weights(small / "checkpoints" / "last")
    c = load_weights(one / "checkpoints" / "last")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-6
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 1e-4


def test_compiled_training_equals_eager(tmp_path: Path, cache_dir: Path):
    """train.compile=true (model forward and augmentation through torch.compile): the same updates as eager, and
    a checkpoint that loads strictly into a plain model (no `_orig_mod.` key prefix)."""
    from checkbox_dist.model.checkpoint import load_model

    common = ["optim.name=sgd", "optim.lr=0.1", "schedule.name=constant", "schedule.warmup_epochs=0",
              "train.epochs=1", "eval.calibrate=false", "data.batch_size=8"]
    runs = {name: tmp_path / name for name in ("eager", "compiled", "one_step")}
    run_cli(*tiny_train_args(runs["eager"], cache_dir, *common, "train.max_steps=2"))
    run_cli(*tiny_train_args(runs["compiled"], cache_dir, *common, "train.max_steps=2", "train.compile=true"))
    run_cli(*tiny_train_args(runs["one_step"], cache_dir, *common, "train.max_steps=1"))
    eager, compiled, one = (load_weights(runs[n] / "checkpoints" / "last") for n in ("eager", "compiled", "one_step"))
    assert set(compiled) == set(eager) and not any(k.startswith("_orig_mod.") for k in compiled)
    assert max((eager[k].float() - compiled[k].float()).abs().max().item() for k in eager) < 1e-4
    assert max((eager[k].float() - one[k].float()).abs().max().item() for k in eager) > 1e-3  # step 2 moved them
    load_model(runs["compiled"] / "checkpoints" / "last")  # strict


def test_short_last_window_averages_over_its_real_length(tmp_path: Path, cache_dir: Path, synth_root: Path):
    """48 training images, batch 8, accumulation 4: windows of 4 and 2 micro-batches. Compare with a plain
    PyTorch reference that averages the gradient over the 32 and then the 16 samples of each window."""
    from accelerate.utils import set_seed

    from checkbox_dist.core.config import ModelConfig
    from checkbox_dist.data.cache import decode_all
    from checkbox_dist.data.datasets import EpochSampler
    from checkbox_dist.data.split import build_split
    from checkbox_dist.data.images import PreprocessSpec, normalize
    from checkbox_dist.model.build import build_model

    out = tmp_path / "accum"
    run_cli(*tiny_train_args(out, cache_dir, "model.name=test_efficientnet_gn", "optim.name=sgd",
                             "optim.momentum=0.0", "optim.lr=0.1", "optim.weight_decay=0.0", "schedule.name=constant",
                             "schedule.warmup_epochs=0", "train.label_smoothing=0.0", "train.epochs=1",
                             "data.batch_size=8", "train.grad_accum_steps=4", "eval.calibrate=false",
                             *NO_AUGMENT, data_root=synth_root))
    split = build_split(synth_root, val_fraction=0.2, seed=42)
    images, labels, _ = decode_all(split.train, PreprocessSpec(image_size=32), "error", [])
    assert len(labels) == 48
    sampler = EpochSampler(labels, seed=42, shuffle=True)
    sampler.set_epoch(1)
    order = list(sampler)
    set_seed(42)
    model = build_model(ModelConfig(name="test_efficientnet_gn"), 3)
    model.train()
    for window in (order[:32], order[32:48]):
        model.zero_grad()
        x = normalize(images[window], PreprocessSpec(image_size=32))
        F.cross_entropy(model(x), labels[window]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    trained = load_weights(out / "checkpoints" / "last")
    assert max((trained[k] - v).abs().max().item() for k, v in model.state_dict().items()) < 2e-5


def test_resume_mid_epoch_equals_uninterrupted(tmp_path: Path, cache_dir: Path):
    """A STOP request after the first optimizer step saves `last` (exit 75); resume=auto finishes the run
    with bit-identical weights and the same final metrics as a run that was never stopped. Mixup/CutMix are on:
    each batch's mixing is drawn from (seed, epoch, step, rank) alone, so the resumed batches mix alike."""
    extra = ["train.epochs=2", "data.batch_size=8", "train.log_every_steps=1", "model.drop_rate=0.2",
             "train.mixup_alpha=0.4", "train.cutmix_alpha=1.0"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_cli(*tiny_train_args(straight, cache_dir, *extra))
    stopped.mkdir()
    (stopped / "STOP").touch()
    first = run_cli(*tiny_train_args(stopped, cache_dir, *extra), check=False)
    assert first.returncode == 75, first.stderr
    assert "stop request: saved" in first.stdout and not (stopped / "STOP").exists()
    state = torch.load(stopped / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    assert state["loop"]["epoch"] == 1 and state["loop"]["micro_step"] == 1  # inside epoch 1
    refused = run_cli(*tiny_train_args(stopped, cache_dir, *extra), check=False)
    assert refused.returncode == 2 and "train.resume=auto" in refused.stderr
    second = run_cli(*tiny_train_args(stopped, cache_dir, *extra, "train.resume=auto"))
    assert "resumed from" in second.stdout
    a, b = load_weights(straight / "checkpoints" / "last"), load_weights(stopped / "checkpoints" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    final = lambda run: [r for r in read_metrics(run) if r["kind"] == "epoch"][-1]  # noqa: E731
    for key in ("val_loss", "val_top1", "train_loss"):
        assert final(straight)[key] == final(stopped)[key]


def test_wandb_offline_run_holds_the_metrics(tmp_path: Path, cache_dir: Path):
    out = tmp_path / "wb"
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": None, "WANDB_MODE": None}  # no credentials anywhere
    proc = run_cli(*tiny_train_args(out, cache_dir, "train.epochs=1", "tracking.backends=[wandb,tensorboard]"),
                   env=env)
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "W&B" in line and "offline" in line]
    assert len(said) == 1 and said[0].startswith("W&B: offline (no WANDB_API_KEY or ~/.netrc)"), said
    from wandb_records import history

    runs = list((out / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    logged = history(runs[0])
    epoch_row = [r for r in read_metrics(out) if r["kind"] == "epoch"][-1]
    val = next(r for r in logged if "val/top1" in r)
    assert val["val/top1"] == pytest.approx(epoch_row["val_top1"]) and val["val/loss"] == pytest.approx(epoch_row["val_loss"])
    assert val["train/epoch_loss"] == pytest.approx(epoch_row["train_loss"])
    steps = [r for r in read_metrics(out) if r["kind"] == "step"]
    assert steps and len([r for r in logged if "train/loss" in r]) == len(steps)  # every logged step, once
    assert any("confusion_matrix/_type" in r for r in logged)
    assert list((out / "tracking").rglob("events.out.tfevents*"))  # TensorBoard too


def test_pretrained_from_a_local_file(tmp_path: Path, cache_dir: Path):
    """model.pretrained=PATH: timm's loader, ImageNet-style 1000-class head dropped, the rest strict."""
    import timm

    weights = tmp_path / "test_resnet_in1k.pth"
    source = timm.create_model("test_resnet")  # 1000 classes, like hub weights
    torch.save(source.state_dict(), weights)
    out = tmp_path / "pre"
    run_cli(*tiny_train_args(out, cache_dir, "train.epochs=1", f"model.pretrained={weights}", "optim.lr=0.0"))
    trained = load_weights(out / "checkpoints" / "last")
    assert torch.equal(trained["conv1.0.weight"], source.state_dict()["conv1.0.weight"])  # lr 0: unchanged
    assert trained["fc.weight"].shape[0] == 3
    missing = run_cli(*tiny_train_args(tmp_path / "p2", cache_dir, f"model.pretrained={tmp_path}/nope.pth"),
                      check=False)
    assert missing.returncode == 2 and "weights file not found" in missing.stderr


def test_global_pool_max_takes_the_strongest_position(tmp_path: Path, cache_dir: Path):
    """model.global_pool=max: the head sees the per-channel max of the feature map, not its mean."""
    from checkbox_dist.model.checkpoint import load_model
    from checkbox_dist.core.config import ModelConfig
    from checkbox_dist.core.errors import UserError
    from checkbox_dist.model.build import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet", global_pool="max"), 3).eval()
    x = torch.randn(2, 3, 32, 80)  # a wide input: a 1x3 feature map
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[-2:] == (1, 3)
        assert torch.allclose(model(x), model.fc(features.amax(dim=(2, 3))), atol=1e-6)
        assert not torch.allclose(model(x), model.fc(features.mean(dim=(2, 3))), atol=1e-3)
    with pytest.raises(UserError, match="model.global_pool: 'token' does not work with test_resnet"):
        build_model(ModelConfig(name="test_resnet", global_pool="token"), 3)
    # A checkpoint comes back with its pooling (it has no weights of its own, so strict loading cannot tell).
    run_cli(*tiny_train_args(tmp_path / "max", cache_dir, "train.epochs=1", "model.global_pool=max"))
    loaded, _ = load_model(tmp_path / "max" / "checkpoints" / "last")
    with torch.no_grad():
        assert torch.allclose(loaded(x), loaded.fc(loaded.forward_features(x).amax(dim=(2, 3))), atol=1e-6)
    proc = run_cli(*tiny_train_args(tmp_path / "run", cache_dir, "model.global_pool=token"), check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: model.global_pool"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run" / "checkpoints").exists()


def _make_bad_dataset(root: Path, case: str) -> Path:
    for cls in ("checked", "other", "unchecked"):
        for i in range(4):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 12), (i * 40, 0, 0)).save(root / cls / f"{i}.png")
    if case == "empty_class":
        (root / "extra").mkdir()
    elif case == "zero_byte":
        (root / "checked" / "zero.png").write_bytes(b"")
    elif case == "corrupt":
        (root / "other" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    elif case == "not_image":
        (root / "unchecked" / "notes.png").write_text("hello")
    return root


@pytest.mark.parametrize("case, expected", [
    ("missing", "data.root: folder not found"),
    ("empty_class", "class folder 'extra' has no images"),
    ("zero_byte", "zero.png: empty file"),
    ("corrupt", "corrupt.png"),
    ("not_image", "notes.png: not an image"),
])
def test_bad_data_is_one_line_and_nothing_half_written(tmp_path: Path, case: str, expected: str):
    root = tmp_path / "data" if case == "missing" else _make_bad_dataset(tmp_path / "data", case)
    out = tmp_path / "run"
    proc = run_cli(*tiny_train_args(out, tmp_path / "cache", "train.epochs=1", data_root=root), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists()


def test_bad_images_can_be_skipped_and_are_listed(tmp_path: Path):
    root = _make_bad_dataset(tmp_path / "data", "corrupt")
    (root / "checked" / "zero.png").write_bytes(b"")
    out = tmp_path / "run"
    proc = run_cli(*tiny_train_args(out, tmp_path / "cache", "train.epochs=1", "data.batch_size=4",
                                    "data.on_bad_image=skip", data_root=root))
    assert "left out 2 file(s)" in proc.stdout
    assert proc.stdout.count("corrupt.png") == 1 and proc.stdout.count("zero.png") == 1
    assert (out / "checkpoints" / "best" / "model.pt").is_file()


def test_real_data_smoke(tmp_path: Path, real_data: Path, cache_dir: Path):
    """One short epoch on ../shared/checkbox_state_v2/train: 411 real RGBA crops decode and train."""
    out = tmp_path / "real"
    proc = run_cli(*tiny_train_args(out, cache_dir, "train.epochs=1", "train.max_steps=2", data_root=real_data))
    assert "train 329 (142/88/99) | val 82 (35/22/25)" in proc.stdout
    row = [r for r in read_metrics(out) if r["kind"] == "epoch"][0]
    assert sum(map(sum, row["val_confusion"])) == 82


def test_eval_cli_reports_on_a_folder(tmp_path: Path, cache_dir: Path, synth_root: Path):
    out = tmp_path / "ev"
    run_cli(*tiny_train_args(out, cache_dir, "train.epochs=1"))
    proc = run_cli("eval", "--checkpoint", str(out), "--data", str(synth_root), "--out", str(tmp_path / "report"))
    assert "precision" in proc.stdout and "confusion" in proc.stdout and "ECE:" in proc.stdout
    report = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert report["n"] == 60 and sum(map(sum, report["confusion"])) == 60
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()
    bad = run_cli("eval", "--checkpoint", str(tmp_path / "nothing"), "--data", str(synth_root), check=False)
    assert bad.returncode == 2 and "checkpoint not found" in bad.stderr


def test_python_m_and_root_train_py_are_the_same_entry(tmp_path: Path, cache_dir: Path):
    import subprocess
    import sys

    args = tiny_train_args(tmp_path / "m", cache_dir, "train.epochs=1", "train.max_steps=1")[1:]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    outs = []
    for entry in (["-m", "checkbox_dist.train"], [str(REPO / "train.py")]):
        out = tmp_path / entry[-1].replace("/", "_")
        cmd = [sys.executable, *entry, *[a if not a.startswith("train.output_dir=") else f"train.output_dir={out}"
                                        for a in args]]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(out)
    # The same run: weights, optimizer state, metrics rows and summary bit-identical (same threads, same seed).
    assert_same_run(outs[1], outs[0])


def test_resume_auto_without_an_output_folder_names_the_run_to_continue(tmp_path: Path, cache_dir: Path):
    """`train.resume=auto` with no train.output_dir used to start a new run silently (the default folder is new
    each time): it is one line naming the newest run of that config, and nothing is created."""
    work = tmp_path / "work"
    (work / "runs" / "quickstart-20261201-100000" / "checkpoints").mkdir(parents=True)
    (work / "runs" / "quickstart-20261202-100000" / "checkpoints").mkdir(parents=True)
    (work / "runs" / "other-20261203-100000").mkdir(parents=True)
    args = [a for a in tiny_train_args(tmp_path / "unused", cache_dir, "train.resume=auto")
            if not a.startswith("train.output_dir=")]
    proc = run_cli(*args, cwd=work, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == ("error: train.resume=auto continues the run named by train.output_dir; the "
                                   "newest run of this config is runs/quickstart-20261202-100000: pass "
                                   "train.output_dir=runs/quickstart-20261202-100000")
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["other-20261203-100000", "quickstart-20261201-100000",
                                                                 "quickstart-20261202-100000"]
    (work / "runs").rename(work / "old")
    proc = run_cli(*args, cwd=work, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: train.resume=auto continues the run named by train.output_dir; there is no run of this config "
        "under runs/: pass train.output_dir=FOLDER")
    assert not (work / "runs").exists()


def test_an_explicit_launcher_precision_wins_and_the_run_says_so(tmp_path: Path, cache_dir: Path):
    """Accelerate's convention: `accelerate launch --mixed_precision bf16` (ACCELERATE_MIXED_PRECISION, also from a
    launch config file) beats the training config's train.mixed_precision; the launcher's default `no` does not."""
    args = tiny_train_args(tmp_path / "bf16", cache_dir, "train.epochs=1")  # TINY: train.mixed_precision=no
    out = run_cli(*args, env={"ACCELERATE_MIXED_PRECISION": "bf16"}).stdout
    assert "| precision bf16" in out.splitlines()[1], out[:1000]
    assert out.splitlines()[0] == ("note: precision bf16 from the launcher (accelerate launch --mixed_precision or "
                                   "its config file), not the config's train.mixed_precision=no")
    assert "mixed_precision: bf16" in (tmp_path / "bf16" / "config.yaml").read_text()
    out = run_cli(*tiny_train_args(tmp_path / "no", cache_dir, "train.epochs=1", "train.mixed_precision=bf16"),
                  env={"ACCELERATE_MIXED_PRECISION": "no"}).stdout
    assert "| precision bf16" in out and "note: precision" not in out
