"""Setting up one training run: everything `fit` needs, built in a fixed order, as one `Session`.

Order: Accelerator (precision fixed per backend) -> launch and backend checks -> run folder -> what to resume ->
run output -> seed -> data -> model (seeded again, as one step: train/backend.py build_seeded) -> optimizer ->
accelerator.prepare -> plan (steps per epoch) -> schedule -> compile, EMA, loss.
The order is part of the contract: the seed is set before the data and the model are built, so every
process (and every thread replica) starts from identical weights and a resumed run rebuilds exactly what it saved.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import (DataLoaderConfiguration, InitProcessGroupKwargs, ProjectConfiguration,
                               broadcast_object_list, reduce, set_seed)
from timm.utils import ModelEmaV3

from checkbox_dist.core import runs
from checkbox_dist.core.batching import BatchShape, derive
from checkbox_dist.core.config import Config
from checkbox_dist.core.config_checks import TRACKERS
from checkbox_dist.core.cv_results import cv_estimate
from checkbox_dist.core.distributed import (RankTrace, check_launch, check_shared_folder, processes_named,
                                           ranks_without)
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.build import Data, build_data
from checkbox_dist.data.images import parse_color
from checkbox_dist.model import checkpoint, norm
from checkbox_dist.model.build import build_model
from checkbox_dist.model.optim import build_optimizer, build_scheduler, effective_lr
import checkbox_dist.train.backend as backend
from checkbox_dist.train.output import RunOutput
from checkbox_dist.train.reduction import ExactGradientSum, build_gradient_sum, keep_local
from checkbox_dist.train.selection import patience_note


@dataclass
class Plan:
    """The derived numbers of a run, printed once at its start."""

    world: int
    rank: int
    micro: int  # images per process per forward
    accum: int  # micro-batches per process per optimizer step
    global_batch: int  # images per optimizer step, all processes together
    fixed: bool  # the global batch is the config's train.global_batch_size (launch-invariant)
    loss_divisor: int  # processes whose gradients DDP sums (sum_gradients); 1 where it averages (XLA, one process)
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
    running_stats: list[torch.Tensor] = field(default_factory=list)  # BatchNorm buffers averaged after each step
    exact_sum: ExactGradientSum | None = None  # train.exact_gradient_sum: the loop hands it every micro-batch
    probe_loader: object = None  # the split file's probe part, prepared like val_loader (None: none listed)
    fresh: bool = False  # setup created run_dir: a run that fails before its first step removes it

    def abandon(self, err: BaseException) -> None:
        """The run failed before its first step (e.g. the checkpoint to resume does not fit): as a failed setup."""
        _discard(self.out, self.run_dir, self.fresh, err)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def weights_module(self) -> torch.nn.Module:
        """What checkpoints and evaluation use: the EMA weights when on, else the unwrapped model."""
        return self.ema.module if self.ema is not None else self.accelerator.unwrap_model(self.model)

    def update_averages(self, step: int) -> None:
        """After each optimizer step: the BatchNorm running statistics averaged over the processes, then the EMA.
        Every process then holds the same model and the same EMA (buffers included), at every step: evaluation
        runs one model, every save holds what every process evaluated, and a resume continues bit for bit."""
        average_running_stats(self.running_stats)
        if self.ema is not None:
            self.ema.update(self.accelerator.unwrap_model(self.model), step=step)


def check_trackers(backends: list[str]) -> None:
    """Every tracker the config names is installed: Accelerate would drop a missing one with a warning."""
    for name in backends:
        if not any(importlib.util.find_spec(module) for module in TRACKERS[name]):
            extra = f"'checkbox_dist[{name}]'" if name in ("tensorboard", "mlflow") else name
            raise UserError(f"tracking.backends: {name} is not installed in this environment: pip install {extra}")


def build_accelerator(cfg: Config) -> Accelerator:
    """The Accelerator, with accumulation 1 until the world size is known (`set_batch_shape`), and its
    precision as train/backend.py fixes it per backend."""
    check_trackers(cfg.tracking.backends)
    backend.clear_xla_downcast()  # `accelerate launch --mixed_precision bf16` exports it on a TPU
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        log_with=cfg.tracking.backends or None, step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(even_batches=True, non_blocking=torch.cuda.is_available()),
        project_config=ProjectConfiguration(logging_dir="."),  # the real folder is set once run_dir is known
        # A hung peer (stopped, partitioned) blocks every collective for Accelerate's default 30 min (gloo);
        # a dead one is seen at once (connection reset). Either way cli.py turns it into one line.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.collective_timeout_s))]
        if cfg.train.collective_timeout_s else None)
    backend.fix_precision(accelerator, cfg)
    backend.fix_local_index(accelerator)
    return accelerator


def set_batch_shape(cfg: Config, accelerator: Accelerator) -> BatchShape:
    """Derive micro-batch and accumulation for this world size (one UserError if it cannot hold the global batch)."""
    shape = derive(cfg, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = shape.accum
    return shape


def resolve_run_dir(cfg: Config, config_path: str | None, accelerator: Accelerator) -> Path:
    if cfg.train.resume == "auto" and not cfg.train.output_dir:  # the default folder is a new one every time
        latest = runs.newest(runs.config_stem(config_path))
        hint = (f"the newest run of this config is {latest}: pass train.output_dir={latest}" if latest else
                "there is no run of this config under runs/: pass train.output_dir=FOLDER")
        raise UserError(f"train.resume=auto continues the run named by train.output_dir; {hint}")
    name = cfg.train.output_dir or runs.timestamped(runs.config_stem(config_path))
    return runs.agreed_name(name, accelerator.num_processes)  # timestamps can differ between processes


def find_resume(cfg: Config, run_dir: Path, accelerator: Accelerator) -> Path | None:
    """The checkpoint to continue from (train.resume: auto or a path), or None for a fresh run. Process 0 chooses
    and tells the others, so every process continues from the same checkpoint; each checks that it can read it."""
    choice = [None, ""]  # (checkpoint folder or None, process 0's error)
    if accelerator.is_main_process:
        try:
            choice[0] = _choose_resume(cfg, run_dir, accelerator.print)
        except UserError as err:
            choice[1] = str(err)
    if accelerator.num_processes > 1:
        broadcast_object_list(choice)
    if choice[1]:
        raise UserError(choice[1])
    chosen = Path(choice[0]) if choice[0] else None
    blind = ranks_without(chosen.is_dir()) if chosen and accelerator.num_processes > 1 else []
    if blind:
        raise UserError(f"train.resume: {processes_named(blind)} of {accelerator.num_processes} cannot see {chosen}, "
                        f"the checkpoint process 0 chose: it must be on a filesystem every host shares")
    return chosen


def _choose_resume(cfg: Config, run_dir: Path, say) -> str | None:
    ckpt_dir = run_dir / "checkpoints"
    if cfg.train.resume == "auto":
        if ckpt_dir.is_dir():
            checkpoint.recover(ckpt_dir, say=say)  # a save killed half-way (kill -9, OOM)
        found = checkpoint.find_resumable(ckpt_dir, say=say)
        return str(found) if found else None
    if cfg.train.resume:
        return str(checkpoint.resolve(cfg.train.resume))
    if checkpoint.find_resumable(ckpt_dir, say=lambda _: None):
        raise UserError(f"{run_dir} already holds checkpoints: pass train.resume=auto to continue it, "
                        f"or another train.output_dir")
    return None


def configure_backends(device_type: str) -> None:
    """On CUDA: cuDNN's autotuner and TF32 matmuls/convolutions on; other devices are left as they are."""
    if device_type == "cuda":
        # Shapes are static (drop_last), so cuDNN's autotuner pays off after the first step; TF32 matmuls
        # speed up fp32 runs on Ampere and later (bf16 runs are unaffected).
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def build_train_model(cfg: Config, data: Data, device, say=print) -> torch.nn.Module:
    model = build_model(cfg.model, len(data.classes), data.spec.channels)
    if cfg.train.init_from:
        checkpoint.init_weights(model, cfg.train.init_from, data.classes)
    if cfg.model.sync_batchnorm and not norm.convert(model):
        say(f"note: model.sync_batchnorm: {cfg.model.name} has no BatchNorm layer, nothing to synchronise")
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.train.channels_last else model


def make_plan(cfg: Config, accelerator: Accelerator, shape: BatchShape, micro_per_epoch: int, n_train: int,
              lr: float, loss_divisor: int = 1) -> Plan:
    # Per process after sharding. With a global batch, every epoch is the largest whole number of global batches
    # (the rest of the shuffled order waits for a later epoch), the same on every launch shape. With the explicit
    # keys, drop_last drops the micro-batches that cannot go to every process: 330 images at 32 x 8 processes
    # give 1 step (256 images) per epoch, and a short last accumulation window averages over its real length.
    if micro_per_epoch == 0:
        raise UserError(f"train split ({n_train} images) is smaller than one global batch ({shape.global_batch} = "
                        f"{shape.micro} x {shape.world} processes x {shape.accum} accumulation): lower "
                        f"{'train.global_batch_size' if shape.fixed else 'data.batch_size'}")
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / shape.accum))
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    return Plan(shape.world, accelerator.process_index, shape.micro, shape.accum, shape.global_batch, shape.fixed,
                loss_divisor, lr, micro_per_epoch, steps_per_epoch, total_steps)


def running_stats(cfg: Config, model: torch.nn.Module, world: int) -> list[torch.Tensor]:
    """The BatchNorm running mean/var buffers to average over the processes after each optimizer step: none in one
    process, with model.sync_batchnorm (its statistics are already the world's) or without BatchNorm."""
    if world == 1 or cfg.model.sync_batchnorm:
        return []
    return [b for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] in ("running_mean", "running_var")]


@torch.no_grad()
def average_running_stats(buffers: list[torch.Tensor]) -> None:
    """Each process updates its BatchNorm running statistics with its own micro-batches (DDP then broadcasts process
    0's at the next forward): replace them, in place, by their average over the processes. One all-reduce of a
    flat tensor, a small fraction of the gradients' size; every process receives the same sum, so the buffers stay identical.
    Accelerate's `reduce` works on every backend (gloo, NCCL; on XLA an xm.all_reduce between two xm.mark_step);
    timm's `distribute_bn` would do one torch.distributed collective per buffer, and has no group on XLA."""
    if not buffers:
        return
    mean = reduce(torch.cat([b.reshape(-1).float() for b in buffers]), reduction="mean")
    offset = 0
    for b in buffers:
        b.copy_(mean[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


def _sum_hook(_state, bucket):
    """DDP communication hook: the plain sum of every process's gradient bucket (DDP's default averages)."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def sum_gradients(model: torch.nn.Module, world: int, exact: bool = False) -> int:
    """Make DDP sum gradients instead of averaging them, so the loop can divide each micro-batch's loss by the
    micro-batches of the whole step (accumulation x world) BEFORE backward. Every backward pass then sees the
    same loss scale on every launch shape: with fp16, the same gradients overflow (or not) under the GradScaler
    whether a step is 1 process x 4 micro-batches or 4 x 1. Returns the loss divisor (1 when not DDP).
    With `exact` (train.exact_gradient_sum) DDP communicates nothing: train/reduction.py sums in float64."""
    if world > 1 and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model.register_comm_hook(None, keep_local if exact else _sum_hook)
        return world
    return 1


def setup(cfg: Config, config_path: str | None) -> Session:
    precision_note = backend.launcher_precision(cfg)  # an explicit `accelerate launch --mixed_precision` wins
    accelerator = build_accelerator(cfg)
    check_launch(accelerator, cfg)  # N processes that each see world size 1: one clear error
    backend.check_supported(accelerator, cfg)  # a setting this backend cannot honour: one clear error
    shape = set_batch_shape(cfg, accelerator)  # a global batch this world size cannot hold: one clear error
    run_dir = resolve_run_dir(cfg, config_path, accelerator)
    trace = RankTrace.from_env(run_dir, accelerator)  # only with CHECKBOX_DIST_RANK_TRACE=1 (tests, debugging)
    fresh = not run_dir.exists()
    check_shared_folder(run_dir, "train.output_dir")  # several hosts: one run folder they all see, or one line
    resume_from = find_resume(cfg, run_dir, accelerator)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    out = RunOutput(accelerator, run_dir, cfg)
    if precision_note:
        out.print(precision_note)
    try:
        session = _build(cfg, accelerator, shape, run_dir, out, trace, resume_from)
        session.fresh = fresh
        return session
    except BaseException as err:
        _discard(out, run_dir, fresh, err)
        raise


def _build(cfg: Config, accelerator: Accelerator, shape: BatchShape, run_dir: Path, out: RunOutput,
           trace: RankTrace | None, resume_from: Path | None) -> Session:
    set_seed(cfg.train.seed)  # same seed on every process: identical initial weights
    configure_backends(accelerator.device.type)
    if shape.note:
        out.print(shape.note)
    data = build_data(cfg, accelerator, say=out.print, micro_batch=shape.micro,
                      epoch_multiple=shape.global_batch if shape.fixed else 0)
    if cfg.eval.cv_dir:  # a refit quotes this CV run at the end: a wrong folder fails now, not after training
        cv_estimate(cfg.eval.cv_dir, data.classes)
    # Seeded again right before the weights are drawn, as one step: thread replicas (TPU v2/v3) share the generator
    model = backend.build_seeded(cfg.train.seed, lambda: build_train_model(cfg, data, accelerator.device, out.print))
    lr = effective_lr(cfg.optim, shape.global_batch)
    optimizer = build_optimizer(cfg.optim, model, lr)
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, data.train_loader, data.val_loader)
    probe_loader = accelerator.prepare(data.probe_loader) if data.probe_loader is not None else None
    plan = make_plan(cfg, accelerator, shape, len(train_loader), len(data.train_set), lr,
                     sum_gradients(model, accelerator.num_processes, cfg.train.exact_gradient_sum))
    exact_sum = build_gradient_sum(cfg.train.exact_gradient_sum, model, accelerator.num_processes)
    scheduler = accelerator.prepare(build_scheduler(cfg.schedule, optimizer, plan.total_steps, plan.steps_per_epoch, lr))
    # Only the training forward is compiled: checkpoints, EMA and evaluation use the plain module, so
    # state_dict keys stay clean and eval mode does not trigger a second compile.
    forward = torch.compile(model) if cfg.train.compile else model
    ema = (ModelEmaV3(accelerator.unwrap_model(model), decay=cfg.train.ema_decay, device=accelerator.device)
           if cfg.train.ema_decay else None)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    session = Session(cfg, accelerator, run_dir, out, data, model, forward, optimizer, scheduler, train_loader,
                      val_loader, ema, criterion, parse_color(cfg.data.background), plan, trace, resume_from,
                      running_stats(cfg, accelerator.unwrap_model(model), accelerator.num_processes), exact_sum,
                      probe_loader)
    out.print(*describe(session), *data.notes)
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
            f"batch: {p.global_batch} global{' (train.global_batch_size)' if p.fixed else ''} = {p.micro}/process x "
            f"{p.world} processes x {p.accum} accumulation{' (derived)' if p.fixed else ''} | "
            f"lr {p.lr:g} ({cfg.optim.name}{scaled}, {cfg.schedule.name} schedule) | "
            f"{p.steps_per_epoch} optimizer steps/epoch, {p.total_steps} planned",
            s.data.summary(),
            f"model: {cfg.model.name} ({n_params:.2f}M params, pretrained={cfg.model.pretrained}) | "
            f"{len(s.data.classes)} classes", *patience_note(cfg.eval.best_rule, cfg.train.early_stopping_patience)]
