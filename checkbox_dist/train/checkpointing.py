"""Checkpoints during training: what a save collects from every process, and resuming from one.

Every process takes part in a save (its RNG state is gathered); only the main process writes, through
model/checkpoint.py (the format: plain dicts, written atomically, verified on load).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field

import torch
from accelerate.utils import DistributedType, gather_object

from checkbox_dist.core.config import to_dict
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_folder
from checkbox_dist.model import checkpoint
from checkbox_dist.train.session import Session


@dataclass
class LoopState:
    """Where the loop is; saved as train_state.pt's "loop" dict and restored on resume."""

    epoch: int = 1
    micro_step: int = 0  # micro-batches of `epoch` this process has done (a mid-epoch save)
    global_step: int = 0  # optimizer steps
    best: dict | None = None  # the best evaluation so far: selection.candidate (loss, top1, macro_f1, epoch, ...)
    bad_epochs: int = 0  # evaluations since the last new best (early stopping)
    # Images of the epoch's global order done, all processes together: what a resume on another world size
    # continues from (micro_step = epoch_samples / (world x micro-batch)).
    epoch_samples: int = 0
    recent_top1: list[float] = field(default_factory=list)  # val top-1 of the last eval.smooth_evals evaluations


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save(s: Session, state: LoopState, name: str, metrics: dict, epoch_sums: list[float],
         with_state: bool = True) -> None:
    """Save checkpoints/<name>; `epoch_sums` (this process's running loss/correct/seen of the epoch), summed over
    the processes, let a run resumed mid-epoch, on any world size, report the whole epoch's train loss and top-1
    as an uninterrupted one does."""
    acc = s.accelerator
    if s.trace:
        s.trace.saved(name, state.global_step, s.weights_module(), acc.unwrap_model(s.model))
    rngs, totals = [], None
    if with_state:
        mine = rng_state()
        # torch_xla cannot gather Python objects (NotImplementedError): on XLA, rank 0's state stands for all.
        rngs = [mine] if acc.distributed_type == DistributedType.XLA else gather_object([mine])
        totals = acc.reduce(torch.tensor(epoch_sums, device=acc.device), reduction="sum").tolist()
    if acc.is_main_process:
        payload = checkpoint.build_payload(
            s.weights_module().state_dict(), s.data.classes, s.cfg.model.name, s.data.spec.to_dict(), to_dict(s.cfg),
            metrics, epoch=state.epoch - 1, global_step=state.global_step)  # the epochs its weights completed
        train_state = None
        if with_state:
            train_state = checkpoint.build_train_state(
                acc.unwrap_model(s.model).state_dict(), s.optimizer.state_dict(), s.scheduler.state_dict(),
                acc.scaler.state_dict() if acc.scaler else None,
                s.ema.state_dict() if s.ema is not None else None, rngs, asdict(state), s.plan.world,
                epoch_sums=totals, micro_batch=s.plan.micro)
        checkpoint.save(s.ckpt_dir / name, payload, train_state)
    acc.wait_for_everyone()


def resume(s: Session) -> tuple[LoopState, list[float] | None]:
    """(loop state, running sums of the interrupted epoch or None): a fresh state without a checkpoint. The
    checkpoint may come from another world size: the epoch position is kept in images, not micro-batches."""
    if not s.resume_from:
        return LoopState(), None
    got = checkpoint.restore(s.resume_from, s.data.classes, s.accelerator.unwrap_model(s.model), s.optimizer,
                             s.scheduler, s.accelerator.scaler, s.ema, s.plan.rank, s.plan.world)
    state = LoopState(**got.loop)
    if "epoch_samples" not in got.loop:  # a checkpoint from before the field: micro-batches of its own shape
        state.epoch_samples = state.micro_step * got.world_size * got.micro_batch
    per_step = s.plan.world * s.plan.micro
    if state.epoch_samples % per_step:
        raise UserError(f"{s.resume_from}: saved {state.epoch_samples} images into epoch {state.epoch}, which "
                        f"{s.plan.world} processes x micro-batch {s.plan.micro} cannot continue from (not a multiple "
                        f"of {per_step}); resume on {got.world_size} processes, or with a data.batch_size that "
                        f"divides it")
    state.micro_step = state.epoch_samples // per_step
    carry_best(s, state)
    if s.trace:
        s.trace.resumed(s.resume_from, state.epoch, state.global_step)
    if got.world_size != s.plan.world:
        s.out.print(*elastic_notes(s, got))
    s.out.print(f"resumed from {s.resume_from}: epoch {state.epoch}, batch {state.micro_step} of "
                f"{s.plan.micro_per_epoch} (image {state.epoch_samples} of the epoch), optimizer step "
                f"{state.global_step}")
    return state, got.epoch_sums


def carry_best(s: Session, state: LoopState) -> None:
    """train.resume=PATH from another run's folder: this run has no `best` yet, though the restored state names a
    best epoch. The source's `best` comes along when it holds that epoch; otherwise (a later best overwrote it,
    or the checkpoint was copied alone) the best is chosen again from this run's evaluations."""
    source = s.resume_from.parent / "best"
    if state.best is None or s.resume_from.parent == s.ckpt_dir or (s.ckpt_dir / "best").is_dir():
        return
    try:
        found = checkpoint.load(source)[0].get("epoch") if source.is_dir() else None
    except UserError:  # damaged or unreadable: as if absent
        found = None
    if found == state.best["epoch"]:
        if s.accelerator.is_main_process:
            with atomic_folder(s.ckpt_dir / "best") as tmp:
                for file in source.iterdir():
                    if file.is_file():
                        shutil.copy2(file, tmp / file.name)
        s.out.print(f"resume: copied {source} (epoch {found}, the best so far) to {s.ckpt_dir / 'best'}")
    else:
        s.out.print(f"note: the best so far (epoch {state.best['epoch']}) is not in {source}: the best checkpoint "
                    f"is chosen again from this run's evaluations")
        state.best, state.bad_epochs = None, 0
    s.accelerator.wait_for_everyone()


def elastic_notes(s: Session, got) -> list[str]:
    """What changes when a run continues on another number of processes."""
    lines = [f"resume: world size {got.world_size} -> {s.plan.world}: accumulation {s.plan.accum}, micro-batch "
             f"{s.plan.micro}, global batch {s.plan.global_batch}"]
    if not s.plan.fixed:
        lines.append(f"note: train.global_batch_size is not set, so the global batch follows the world size "
                     f"({got.world_size} -> {s.plan.world} processes): set it to keep the recipe across launch "
                     f"shapes")
    return lines


def save_epoch_end(s: Session, state: LoopState, metrics: dict, epoch_sums: list[float], is_best: bool,
                   done: bool) -> None:
    """After an epoch: `best` when it is a new best, `last` (and a kept epoch_N) on the checkpoint schedule."""
    epoch = state.epoch - 1
    if is_best:
        save(s, state, "best", metrics, epoch_sums, with_state=False)
    if epoch % s.cfg.checkpoint.every_epochs == 0 or done or epoch == s.cfg.train.epochs:
        save(s, state, "last", metrics, epoch_sums)
        if s.cfg.checkpoint.keep_last:
            save(s, state, f"epoch_{epoch:04d}", metrics, epoch_sums)
            if s.accelerator.is_main_process:
                checkpoint.prune_epochs(s.ckpt_dir, s.cfg.checkpoint.keep_last)
