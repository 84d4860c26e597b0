"""Setting up one training run: everything `fit` needs, built in a fixed order, as one `Session`.

Order: Accelerator -> launch check -> run folder -> what to resume -> run output -> seed -> data ->
model -> optimizer -> accelerator.prepare -> plan (steps per epoch) -> schedule -> compile, EMA, loss.
The order is part of the contract: the seed is set before the data and the model are built, so every
process starts from identical weights and a resumed run rebuilds exactly what it saved.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, ProjectConfiguration, set_seed
from timm.utils import ModelEmaV3

from checkbox_dist.core import runs
from checkbox_dist.core.config import Config
from checkbox_dist.core.distributed import RankTrace, check_launch
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.build import Data, build_data
from checkbox_dist.data.images import parse_color
from checkbox_dist.model import checkpoint
from checkbox_dist.model.build import build_model
from checkbox_dist.model.optim import build_optimizer, build_scheduler, effective_lr
from checkbox_dist.train.output import RunOutput


@dataclass
class Plan:
    """The derived numbers of a run, printed once at its start."""

    world: int
    rank: int
    accum: int  # micro-batches per optimizer step
    global_batch: int
    lr: float
    micro_per_epoch: int  # per process, after sharding
    steps_per_epoch: int
    total_steps: int


@dataclass
class Session:
    cfg: Config
    accelerator: Accelerator
    run_dir: Path
    out: RunOutput
    data: Data
    model: torch.nn.Module  # prepared (DDP-wrapped where distributed)
    forward: torch.nn.Module  # the training forward: the model, compiled with train.compile
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_loader: object
    val_loader: object
    ema: ModelEmaV3 | None
    criterion: torch.nn.Module
    background: tuple
    plan: Plan
    trace: RankTrace | None
    resume_from: Path | None

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def weights_module(self) -> torch.nn.Module:
        """What checkpoints and evaluation use: the EMA weights when on, else the unwrapped model."""
        return self.ema.module if self.ema is not None else self.accelerator.unwrap_model(self.model)


def build_accelerator(cfg: Config) -> Accelerator:
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=cfg.train.grad_accum_steps,
        log_with=cfg.tracking.backends or None, step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(even_batches=True, non_blocking=torch.cuda.is_available()),
        project_config=ProjectConfiguration(logging_dir="."),  # the real folder is set once run_dir is known
        # A hung peer (stopped, partitioned) blocks every collective for Accelerate's default 30 min (gloo);
        # a dead one is seen at once (connection reset). Either way cli.py turns it into one line.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.collective_timeout_s))]
        if cfg.train.collective_timeout_s else None)


def resolve_run_dir(cfg: Config, config_path: str | None, accelerator: Accelerator) -> Path:
    name = cfg.train.output_dir or runs.timestamped(runs.config_stem(config_path))
    return runs.agreed_name(name, accelerator.num_processes)  # timestamps can differ between processes


def find_resume(cfg: Config, run_dir: Path, accelerator: Accelerator) -> Path | None:
    """The checkpoint to continue from (train.resume: auto or a path), or None for a fresh run."""
    ckpt_dir = run_dir / "checkpoints"
    if cfg.train.resume == "auto":
        if accelerator.is_main_process and ckpt_dir.is_dir():
            checkpoint.recover(ckpt_dir, say=accelerator.print)  # a save killed half-way (kill -9, OOM)
        accelerator.wait_for_everyone()
        return checkpoint.find_resumable(ckpt_dir, say=accelerator.print)
    if cfg.train.resume:
        return checkpoint.resolve(cfg.train.resume)
    if checkpoint.find_resumable(ckpt_dir, say=lambda _: None):
        raise UserError(f"{run_dir} already holds checkpoints: pass train.resume=auto to continue it, "
                        f"or another train.output_dir")
    return None


def configure_backends(accelerator: Accelerator) -> None:
    if accelerator.device.type == "cuda":
        # Shapes are static (drop_last), so cuDNN's autotuner pays off after the first step; TF32 matmuls
        # speed up fp32 runs on Ampere and later (bf16 runs are unaffected).
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def build_train_model(cfg: Config, data: Data, device) -> torch.nn.Module:
    model = build_model(cfg.model, len(data.classes), data.spec.channels)
    if cfg.train.init_from:
        checkpoint.init_weights(model, cfg.train.init_from, data.classes)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.train.channels_last else model


def make_plan(cfg: Config, accelerator: Accelerator, micro_per_epoch: int, n_train: int, lr: float) -> Plan:
    world, accum = accelerator.num_processes, cfg.train.grad_accum_steps
    # Per process after sharding. With drop_last, batches that cannot go to every process are dropped:
    # 330 images at 32 x 8 processes give 1 step (256 images) per epoch; the order reshuffles each epoch.
    if micro_per_epoch == 0:
        raise UserError(f"train split ({n_train} images) is smaller than one global batch "
                        f"({cfg.data.batch_size} x {world} processes): lower data.batch_size")
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / accum))
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    return Plan(world, accelerator.process_index, accum, cfg.data.batch_size * world * accum, lr, micro_per_epoch,
                steps_per_epoch, total_steps)


def setup(cfg: Config, config_path: str | None) -> Session:
    accelerator = build_accelerator(cfg)
    check_launch(accelerator, cfg)  # N processes that each see world size 1: one clear error
    run_dir = resolve_run_dir(cfg, config_path, accelerator)
    trace = RankTrace.from_env(run_dir, accelerator)  # only with CHECKBOX_DIST_RANK_TRACE=1 (tests, debugging)
    resume_from = find_resume(cfg, run_dir, accelerator)
    fresh = not run_dir.exists()
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    out = RunOutput(accelerator, run_dir, cfg)
    try:
        return _build(cfg, accelerator, run_dir, out, trace, resume_from)
    except BaseException as err:
        _discard(out, run_dir, fresh, err)
        raise


def _build(cfg: Config, accelerator: Accelerator, run_dir: Path, out: RunOutput, trace: RankTrace | None,
           resume_from: Path | None) -> Session:
    set_seed(cfg.train.seed)  # same seed on every process: identical initial weights
    configure_backends(accelerator)
    data = build_data(cfg, accelerator, say=out.print)
    model = build_train_model(cfg, data, accelerator.device)
    lr = effective_lr(cfg.optim, cfg.data.batch_size * accelerator.num_processes * cfg.train.grad_accum_steps)
    optimizer = build_optimizer(cfg.optim, model, lr)
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, data.train_loader, data.val_loader)
    plan = make_plan(cfg, accelerator, len(train_loader), len(data.train_set), lr)
    scheduler = accelerator.prepare(build_scheduler(cfg.schedule, optimizer, plan.total_steps, plan.steps_per_epoch, lr))
    # Only the training forward is compiled: checkpoints, EMA and evaluation use the plain module, so
    # state_dict keys stay clean and eval mode does not trigger a second compile.
    forward = torch.compile(model) if cfg.train.compile else model
    ema = (ModelEmaV3(accelerator.unwrap_model(model), decay=cfg.train.ema_decay, device=accelerator.device)
           if cfg.train.ema_decay else None)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    session = Session(cfg, accelerator, run_dir, out, data, model, forward, optimizer, scheduler, train_loader,
                      val_loader, ema, criterion, parse_color(cfg.data.background), plan, trace, resume_from)
    out.print(*describe(session))
    return session


def _discard(out: RunOutput, run_dir: Path, fresh: bool, err: BaseException) -> None:
    """A run that fails before its first step leaves no folder behind; a folder it did not create (a resumed
    run's) is kept, with the error at the end of its log.txt."""
    out.log_only(f"error: {err}" if str(err) else f"error: {type(err).__name__}")
    out.finish()
    if fresh and out.is_main:
        shutil.rmtree(run_dir, ignore_errors=True)


def describe(s: Session) -> list[str]:
    """The derived numbers, printed once at the start of every run."""
    cfg, p, acc = s.cfg, s.plan, s.accelerator
    scaled = f", scaled from {cfg.optim.lr:g}" if p.lr != cfg.optim.lr else ""
    n_params = sum(t.numel() for t in s.model.parameters()) / 1e6
    return [f"run: {s.run_dir} | {acc.distributed_type.value.replace('NO', 'single process')} on {acc.device} | "
            f"world size {p.world} (process {p.rank}) | precision {cfg.train.mixed_precision}",
            f"batch: {cfg.data.batch_size}/process x {p.world} processes x {p.accum} accumulation = {p.global_batch} "
            f"global | lr {p.lr:g} ({cfg.optim.name}{scaled}, {cfg.schedule.name} schedule) | "
            f"{p.steps_per_epoch} optimizer steps/epoch, {p.total_steps} planned",
            s.data.summary(),
            f"model: {cfg.model.name} ({n_params:.2f}M params, pretrained={cfg.model.pretrained}) | "
            f"{len(s.data.classes)} classes"]
