"""bench-train: our training loop against a minimal plain-PyTorch loop, side by side in one process.

    checkbox-dist bench-train --config quickstart                               # CPU, synthetic data
    checkbox-dist bench-train --config checkbox_state_v2 data.root="" data.synth_n=4000 \
        model.name=resnet50 data.image_size=224 data.batch_size=256 train.mixed_precision=bf16 \
        train.channels_last=true [train.compile=true] [--find-batch-size]
    checkbox-dist bench-train --config quickstart --processes 2                  # + data-parallel scaling

Three rates, alternated (plain, ours, plain, ours, ...) and reported as medians of `--repeats`:
  plain step   `model(x)` + cross-entropy + backward + optimizer step on one random batch already on the
               device: same model, batch, precision, memory format, optimizer. The ceiling.
  ours, step   our real loop (checkbox_dist.train.run) between its log intervals: index fetch from the
               device-resident uint8 images, augmentation, normalisation, Accelerate's wrappers.
  ours, epoch  the same run's whole epochs (images / epoch wall time, evaluation excluded).
Ratios are what we track (targets: step >= 0.97 x plain, epoch >= 0.95 x step); absolute img/s depend on
the machine. `--find-batch-size` doubles then bisects the plain step's batch until it no longer fits.
`--processes N` adds the data-parallel figure: our loop as N processes under `accelerate launch` against one
process with the same threads each, alternated; efficiency = N-process img/s / (N x 1-process img/s).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from checkbox_dist import train
from checkbox_dist.core import resources
from checkbox_dist.core.batching import derive
from checkbox_dist.core.config_loader import load_config
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import PreprocessSpec
from checkbox_dist.model.build import build_model
from checkbox_dist.model.optim import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step_rate(cfg, device: torch.device, batch: int, steps: int, warmup: int) -> float:
    """img/s of the textbook loop on one random batch resident on the device."""
    channels = 4 if cfg.data.alpha_channel else 3
    model = build_model(cfg.model, 3, channels).to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    optimizer = build_optimizer(cfg.optim, model, cfg.optim.lr)
    step_fn = torch.compile(model) if cfg.train.compile else model
    x = torch.randn(batch, channels, *PreprocessSpec.from_data_config(cfg.data).height_width, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, 3, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.mixed_precision)
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(step_fn(x), y)
        (scaler.scale(loss) if scaler else loss).backward()
        scaler.step(optimizer) if scaler else optimizer.step()
        if scaler:
            scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def bench_overrides(output_dir: str, epochs: int) -> list[str]:
    """Our loop as bench-train runs it: evaluation, checkpoints and trackers out of the timed epochs."""
    return [f"train.output_dir={output_dir}", f"train.epochs={epochs}", "train.max_steps=0", "train.progress=false",
            "train.early_stopping_patience=0", "eval.every_epochs=1000000",  # the last epoch still evaluates once
            "eval.calibrate=false", "checkpoint.keep_last=0", "checkpoint.every_epochs=1000000", "tracking.backends=[]",
            "pretrain.synth_n=0"]  # the timed loop is the fine-tune's; stage one is a run of its own


def rates_from_metrics(metrics_file: Path, images_per_step: int) -> tuple[float, float]:
    """(step img/s, epoch img/s) from a run's metrics.jsonl, the first epoch (warm-up) left out."""
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    steps = [r["interval_img_per_s"] for r in rows if r["kind"] == "step" and r["epoch"] > 1]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    # epoch_seconds covers the batches only (measured before evaluation starts).
    per_epoch = [(b["step"] - a["step"]) * images_per_step / b["epoch_seconds"] for a, b in zip(epochs, epochs[1:])]
    if not steps or not per_epoch:
        raise UserError("bench-train needs >= 3 epochs with several log intervals each: raise --epochs, "
                        "data.synth_n, or lower train.log_every_steps")
    return statistics.median(steps), statistics.median(per_epoch)


def our_loop_rates(config: str, overrides: list[str], epochs: int) -> tuple[float, float, float]:
    """Run the real loop in this process for `epochs` epochs; (step img/s, epoch img/s, peak GiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [*overrides, *bench_overrides(str(Path(tmp) / "run"), epochs)])
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        train.run(cfg, config)
        step, epoch = rates_from_metrics(Path(tmp) / "run" / "metrics.jsonl", derive(cfg, 1).global_batch)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return step, epoch, peak


def launched_loop_rates(config: str, overrides: list[str], epochs: int, processes: int,
                        threads: int) -> tuple[float, float]:
    """Our loop under the real launcher (`accelerate launch`, N processes, `threads` each): global img/s.

    CPU: the packaged cpu_2proc launch config with ACCELERATE_USE_CPU=true (gloo); GPU: multi_gpu (NCCL).
    One process runs without the launcher, with the same threads, as the baseline of the scaling figure.
    """
    cfg = load_config(config, overrides)
    on_gpu = torch.cuda.is_available()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)
    if processes == 1:
        launcher = [sys.executable, "-m", "checkbox_dist", "train"]
    else:
        launch_file = resources.launch_file("multi_gpu" if on_gpu else "cpu_2proc")  # shipped with the package
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_file),
                    "--num_processes", str(processes), "-m", "checkbox_dist", "train"]
        if not on_gpu:
            env["ACCELERATE_USE_CPU"] = "true"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        proc = subprocess.run([*launcher, "--config", config, *overrides, *bench_overrides(str(run_dir), epochs)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
            raise UserError(f"bench-train: the {processes}-process run failed (exit {proc.returncode}): {last[0]}")
        return rates_from_metrics(run_dir / "metrics.jsonl", derive(cfg, processes).global_batch)


def find_batch_size(cfg, device: torch.device, start: int = 8, limit: int = 8192) -> int:
    """Largest batch whose plain training step fits in accelerator memory (doubling, then bisection)."""
    def fits(batch: int) -> bool:
        try:
            plain_step_rate(cfg, device, batch, steps=1, warmup=1)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    low, high = 0, start
    while high <= limit and fits(high):
        low, high = high, high * 2
    while high - low > max(1, low // 16):  # within ~6 %
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def run(args) -> int:
    if args.processes < 1 or args.threads < 0:
        raise UserError(f"bench-train: --processes must be >= 1 and --threads >= 0 "
                        f"(got {args.processes} and {args.threads})")
    cfg = load_config(args.config, args.overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":  # the same flags our loop sets, so the plain loop is not handicapped
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    size = PreprocessSpec.from_data_config(cfg.data).size_text
    desc = (f"{cfg.model.name} {size} batch {derive(cfg, 1).micro} {cfg.train.mixed_precision} "
            f"channels_last={cfg.train.channels_last} compile={cfg.train.compile} on "
            f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}")
    print(f"bench-train: {desc}; {args.repeats} alternations")
    plain, step, epoch, peaks = [], [], [], []
    for repeat in range(args.repeats):
        plain.append(plain_step_rate(cfg, device, derive(cfg, 1).micro, args.steps, args.warmup))
        ours = our_loop_rates(args.config, args.overrides, args.epochs)
        step.append(ours[0])
        epoch.append(ours[1])
        peaks.append(ours[2])
        print(f"  repeat {repeat + 1}: plain {plain[-1]:.1f} img/s | ours step {step[-1]:.1f} | ours epoch {epoch[-1]:.1f}")
    p, s, e = statistics.median(plain), statistics.median(step), statistics.median(epoch)
    print(f"{'':<14}{'img/s (median)':>15}{'ratio':>10}")
    print(f"{'plain step':<14}{p:>15.1f}{1.0:>10.3f}")
    print(f"{'ours, step':<14}{s:>15.1f}{s / p:>10.3f}   (target >= 0.97 x plain)")
    print(f"{'ours, epoch':<14}{e:>15.1f}{e / s:>10.3f}   (x ours step; target >= 0.95)")
    if device.type == "cuda":
        print(f"peak accelerator memory: {max(peaks):.2f} GiB")
    if args.find_batch_size:
        print(f"largest batch that fits (plain step): {find_batch_size(cfg, device)}")
    if args.processes > 1:
        scaling(args)
    return 0


def scaling(args) -> None:
    """1 process vs N under the launcher, alternated, medians: efficiency = N-process img/s / (N x 1-process)."""
    n = args.processes
    threads = args.threads or max(1, (os.cpu_count() or 1) // n)
    one, many = [], []
    for repeat in range(args.repeats):
        one.append(launched_loop_rates(args.config, args.overrides, args.epochs, 1, threads)[0])
        many.append(launched_loop_rates(args.config, args.overrides, args.epochs, n, threads)[0])
        print(f"  repeat {repeat + 1}: 1 process {one[-1]:.1f} img/s | {n} processes {many[-1]:.1f} img/s (global)")
    a, b = statistics.median(one), statistics.median(many)
    print(f"scaling, {threads} thread(s) per process: 1 process {a:.1f} img/s | {n} processes {b:.1f} img/s | "
          f"speed-up {b / a:.2f}x | efficiency {b / (n * a):.3f}")
