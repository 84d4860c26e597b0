"""The training loop: `fit` runs the epochs of a set-up Session; each step is a named function below.

    fit: resume -> per epoch: train_epoch (train_step per micro-batch, log, stop?) -> evaluate ->
         report -> save -> early stop?   -> the final epoch's outcome

A stop request (SIGUSR1/SIGTERM, RUN/STOP) saves `last` at the next log interval and raises Preempted.

Launch invariance: process r of W trains global micro-batches r, r + W, ... of the epoch's one order, so a
micro-batch's global index is `micro * W + r`. Every random draw of a training step is keyed by that index
(augmentation, mixup/CutMix, and the torch RNG that dropout and drop-path draw from), never by the process:
1 process x 4 accumulation steps, 2 x 2 and 4 x 1 train on the same images with the same draws.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from checkbox_dist.core import faults, prefetch
from checkbox_dist.core.errors import Interrupted, Preempted
from checkbox_dist.data import augment
import checkbox_dist.train.guards as guards
import checkbox_dist.train.backend as backend
import checkbox_dist.train.windows as windows
from checkbox_dist.train.checkpointing import LoopState, resume, save, save_epoch_end
from checkbox_dist.train.evaluation import evaluate
from checkbox_dist.train.selection import candidate, is_better
from checkbox_dist.train.session import Session


@dataclass
class EpochSums:
    """This process's running totals of one epoch, on the device (no host sync per step)."""

    loss: torch.Tensor
    correct: torch.Tensor
    seen: torch.Tensor
    first_nonfinite: torch.Tensor  # first optimizer step with a non-finite loss; 0 = none
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, device, resumed: list[float] | None) -> "EpochSums":
        zero = lambda: torch.zeros((), device=device)  # noqa: E731
        sums = cls(zero(), zero(), zero(), torch.zeros((), device=device, dtype=torch.long))
        if resumed:  # resumed mid-epoch: carry on with the running sums saved with the checkpoint
            sums.loss += resumed[0]
            sums.correct += resumed[1]
            sums.seen += resumed[2]
        return sums

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        detached = loss.detach().float()
        self.first_nonfinite = torch.where((self.first_nonfinite == 0) & ~torch.isfinite(detached), step,
                                           self.first_nonfinite)
        self.loss += detached * len(labels)
        self.correct += logits.detach().argmax(1).eq(labels).sum()
        self.seen += len(labels)

    def as_list(self) -> list[float]:
        return [float(self.loss), float(self.correct), float(self.seen)]


@dataclass
class Outcome:
    stopped_early: bool = False
    last_metrics: dict = field(default_factory=dict)
    global_step: int = 0  # optimizer steps when fit returned
    last_epoch: int = 0  # epochs the weights have completed when fit returned (also after resuming a finished run)


def fit(s: Session) -> Outcome:
    """Train until the last epoch, max_steps or early stopping; raises Preempted on a stop request."""
    try:
        state, resumed_sums = resume(s)
    except BaseException as err:
        s.abandon(err)
        raise
    if s.trace:
        s.trace.count_steps(s.optimizer)
    s.out.start_trackers()
    outcome = Outcome()
    while state.epoch <= s.cfg.train.epochs:
        epoch = state.epoch
        sums = train_epoch(s, state, resumed_sums, outcome.last_metrics)
        resumed_sums = None
        done = bool(s.cfg.train.max_steps and state.global_step >= s.cfg.train.max_steps)
        row = epoch_row(s, state, sums)
        if s.data.refit:  # nothing held out: no evaluation, no selection; `best` is the final epoch's weights
            report_trained(s, state, row)
            outcome.last_metrics = dict(row)
            row["is_best"] = epoch == s.cfg.train.epochs or done
        elif epoch % s.cfg.eval.every_epochs == 0 or epoch == s.cfg.train.epochs or done:
            metrics = evaluate(s)
            add_evaluation(s, state, row, metrics)
            outcome.last_metrics = {k: v for k, v in row.items() if k not in ("val_per_class", "val_confusion")}
            report_evaluated(s, state, row, metrics)
        else:
            report_trained(s, state, row)
        state.epoch, state.micro_step, state.epoch_samples = epoch + 1, 0, 0
        save_epoch_end(s, state, outcome.last_metrics, sums.as_list(), bool(row.get("is_best")), done)
        if row.get("is_best") and not s.data.refit:
            s.out.summary({"best/epoch": epoch, "best/val_top1": row["val_top1"], "best/val_loss": row["val_loss"]})
        if should_stop_early(s, state):
            outcome.stopped_early = True
            break
        if done:
            break
    outcome.global_step, outcome.last_epoch = state.global_step, state.epoch - 1
    return outcome


def train_epoch(s: Session, state: LoopState, resumed_sums: list[float] | None, last_metrics: dict) -> EpochSums:
    """One pass over this process's shard, from `state.micro_step` on; updates `state` as it goes."""
    epoch, skip, acc = state.epoch, state.micro_step, s.accelerator
    s.train_loader.set_epoch(epoch)
    loader = prefetch.wrap(acc.skip_first_batches(s.train_loader, skip) if skip else s.train_loader)
    s.model.train()
    sums = EpochSums.start(acc.device, resumed_sums)
    interval = [sums.started, float(sums.seen)]  # time and images at the last log: the steady-state rate
    bar = tqdm(total=s.plan.micro_per_epoch, initial=skip, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
               disable=not (acc.is_main_process and s.cfg.train.progress and sys.stderr.isatty()))
    window_skipped = False  # nan_policy=skip: a batch of this accumulation window had a non-finite loss
    for micro, batch in enumerate(loader, start=skip):
        sync = windows.closes(micro, s.plan.accum, s.plan.micro_per_epoch)  # the loop's count, not the loader's
        window_skipped = train_step(s, state, batch, micro, sync, sums, window_skipped)
        bar.update(1)
        if not sync:
            continue
        window_skipped = False
        if s.trace:
            s.trace.window_end(epoch, micro)
        s.update_averages(state.global_step)  # BatchNorm statistics over the processes, then the EMA
        state.global_step += 1
        if s.trace:
            s.trace.optimizer_step(state.global_step, acc.unwrap_model(s.model))
        state.micro_step = micro + 1
        state.epoch_samples = state.micro_step * s.plan.world * s.plan.micro  # images of the global order done
        if state.global_step % s.cfg.train.log_every_steps == 0 or state.micro_step == s.plan.micro_per_epoch:
            guards.check_finite(acc, s.cfg.train.nan_policy, sums.first_nonfinite, epoch, s.ckpt_dir)
            log_interval(s, state, sums, interval, bar)  # the only host syncs of the hot loop
            if guards.stop_requested(acc, s.run_dir):
                bar.close()
                preempt(s, state, sums, last_metrics)
        if s.cfg.checkpoint.every_steps and state.global_step % s.cfg.checkpoint.every_steps == 0:
            guards.check_finite(acc, s.cfg.train.nan_policy, sums.first_nonfinite, epoch, s.ckpt_dir)
            save(s, state, "last", last_metrics, sums.as_list())  # never weights a non-finite step reached
        if s.cfg.train.max_steps and state.global_step >= s.cfg.train.max_steps:
            break
    bar.close()
    guards.check_finite(acc, s.cfg.train.nan_policy, sums.first_nonfinite, epoch, s.ckpt_dir)
    return sums


def train_step(s: Session, state: LoopState, batch, micro: int, sync: bool, sums: EpochSums,
               window_skipped: bool) -> bool:
    """Forward and backward of one micro-batch; when it closes its accumulation window (`sync`), the update.
    Returns whether the current window's update is to be skipped (nan_policy=skip)."""
    acc, cfg, accum = s.accelerator, s.cfg, s.plan.accum
    images, labels, indices = s.data.train_set.lookup(batch)
    if s.trace:
        s.trace.train_batch(state.epoch, indices)
    g = micro * s.plan.world + s.plan.rank  # this micro-batch's index in the epoch's global order
    x, target = augment_batch(s, images, labels, state.epoch, g)
    backend.seed_step(augment.batch_seed(cfg.train.seed + 2, state.epoch, g), acc.device)  # dropout, drop-path
    # A short last window (e.g. 10 micro-batches with accumulation 4 -> 4, 4, 2) must average over
    # its real length; Accelerate divides every micro-batch by A, so rescale by A / window_len. DDP sums the
    # processes' gradients (session.sum_gradients): divide by their number here, before backward.
    window_len = windows.length(micro, accum, s.plan.micro_per_epoch)
    with windows.window(acc, s.model, sync):
        with acc.autocast():
            logits = s.forward(x)
            loss = s.criterion(logits, target)
        if poison := faults.point("step"):  # test-only fault hook (core/faults.py): a dict lookup
            loss = loss * float(poison)  # "nan"/"inf": spreads into the gradients, as a real overflow does
        if cfg.train.nan_policy == "skip" and not guards.all_finite(acc, loss):
            s.out.print(f"non-finite loss at optimizer step {state.global_step + 1} (epoch {state.epoch}, "
                        f"batch {micro}): update skipped")
            loss = loss.nan_to_num(0.0, 0.0, 0.0) * 0.0  # every process still runs backward (DDP)
            window_skipped = True  # 0 x NaN is NaN: the window's gradients are unusable
        acc.backward(loss * (accum / (window_len * s.plan.loss_divisor)))
    if s.exact_sum is not None:  # train.exact_gradient_sum: the window's sum in float64 (train/reduction.py)
        s.exact_sum.add()
        if sync:
            s.exact_sum.finish()
    if sync:
        update(s, window_skipped)
    sums.add(loss, logits, labels, state.global_step + 1)
    return window_skipped


def update(s: Session, skipped: bool) -> None:
    """The end of an accumulation window: clip and step the optimizer (on XLA the window's one gradient
    all-reduce), advance the schedule, zero the gradients. A window nan_policy=skip dropped leaves the weights,
    the optimizer state and fp16's GradScaler untouched: no clipping either, which would unscale the gradients
    (and, on XLA, all-reduce them) for a step and a scaler update that never come."""
    acc, cfg = s.accelerator, s.cfg
    if not skipped:
        if cfg.optim.clip_grad_norm:
            acc.clip_grad_norm_(s.model.parameters(), cfg.optim.clip_grad_norm)
        s.optimizer.step()
    if cfg.schedule.name != "plateau":
        s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)


def augment_batch(s: Session, images, labels, epoch: int, g: int):
    """Device-side augmentation and normalisation, then mixup/CutMix when on: (inputs, targets). `g` is the
    micro-batch's global index in the epoch: the draws do not depend on which process holds it."""
    cfg = s.cfg
    params = augment.sample_params(len(labels), cfg.data.augment, augment.batch_generator(cfg.train.seed, epoch, g))
    x = augment.apply(images, params, s.background, cfg.data.augment, *s.data.spec.normalization,
                      channels_last=cfg.train.channels_last, compiled=cfg.train.compile)
    if cfg.train.mixup_alpha > 0 or cfg.train.cutmix_alpha > 0:
        return augment.mix(x, labels, len(s.data.classes), cfg.train.mixup_alpha, cfg.train.cutmix_alpha,
                           augment.batch_generator(cfg.train.seed + 1, epoch, g))
    return x, labels


def log_interval(s: Session, state: LoopState, sums: EpochSums, interval: list[float], bar) -> None:
    now, seen_now = time.perf_counter(), float(sums.seen)
    rate = seen_now * s.plan.world / max(1e-9, now - sums.started)
    interval_rate = (seen_now - interval[1]) * s.plan.world / max(1e-9, now - interval[0])
    interval[:] = [now, seen_now]
    row = {"kind": "step", "epoch": state.epoch, "step": state.global_step, "interval_img_per_s": interval_rate,
           "train_loss": float(sums.loss / sums.seen.clamp_min(1)), "lr": s.optimizer.param_groups[0]["lr"],
           "img_per_s": rate}
    bar.set_postfix(loss=f"{row['train_loss']:.4f}", lr=f"{row['lr']:.2e}", img_s=f"{rate:.1f}")
    if bar.disable and s.cfg.train.progress:  # not a terminal (a file, a pipe): a plain line, not bar redraws
        s.out.console(f"epoch {state.epoch} step {state.global_step}/{s.plan.total_steps}: loss "
                      f"{row['train_loss']:.4f} lr {row['lr']:.2e} {rate:.1f} img/s")
    s.out.record(row)
    s.out.log({"train/loss": row["train_loss"], "train/lr": row["lr"], "train/img_per_s": rate},
              step=state.global_step)


def preempt(s: Session, state: LoopState, sums: EpochSums, last_metrics: dict) -> None:
    """Save `last` where the loop is, close the run's outputs and raise Preempted (exit 75), or Interrupted
    (exit 130) for Ctrl-C; both print the command that continues the run."""
    reason = guards.stop_reason()
    error = Interrupted if guards.interrupted() else Preempted
    save(s, state, "last", last_metrics, sums.as_list())
    s.out.remove_stop_file()  # else the requeued job would stop again at once
    message = (f"{reason}: saved {s.ckpt_dir / 'last'} at epoch {state.epoch} batch {state.micro_step}; "
               f"exiting with code {error.exit_code} (resume with train.resume=auto)")
    s.out.print(message, f"resume: checkbox-dist train --config {s.run_dir / 'config.yaml'} "
                         f"train.output_dir={s.run_dir} train.resume=auto")
    s.out.finish()
    s.accelerator.end_training()
    raise error(message)


def epoch_row(s: Session, state: LoopState, sums: EpochSums) -> dict:
    totals = s.accelerator.reduce(torch.stack([sums.loss, sums.correct, sums.seen]).float(), reduction="sum")
    return {"kind": "epoch", "epoch": state.epoch, "step": state.global_step,
            "train_loss": float(totals[0] / totals[2].clamp_min(1)),
            "train_top1": float(totals[1] / totals[2].clamp_min(1)), "lr": s.optimizer.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - sums.started}


def add_evaluation(s: Session, state: LoopState, row: dict, metrics: dict) -> None:
    """Val metrics into the epoch's row (and the probe part's, recorded only); the plateau schedule, best model
    (train/selection.py) and patience counters advance."""
    row.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)})
    row["val_per_class"], row["val_confusion"] = metrics["per_class"], metrics["confusion"]
    if s.probe_loader is not None:  # cv --outer-history: scored and written down, never selects or stops
        probe = evaluate(s, probe=True)
        row.update({f"probe_{k}": probe[k] for k in ("top1", "macro_f1", "loss")})
    if s.cfg.schedule.name == "plateau":
        s.scheduler.step(metrics["loss"])  # patience counts evaluations: set eval.every_epochs=1 for it
    k = s.cfg.eval.smooth_evals
    state.recent_top1 = (state.recent_top1 + [metrics["top1"]])[-k:]
    scored = candidate(metrics, state.epoch, state.recent_top1, k)
    row["is_best"] = is_better(s.cfg.eval.best_rule, scored, state.best)
    state.bad_epochs = 0 if row["is_best"] else state.bad_epochs + 1
    if row["is_best"]:
        state.best = scored


def report_evaluated(s: Session, state: LoopState, row: dict, metrics: dict) -> None:
    k = min(s.cfg.eval.top_k, len(s.data.classes))
    s.out.record(row)
    s.out.epoch_plots(state.epoch, metrics["confusion"], s.data.classes, metrics["top1"], state.global_step)
    s.out.log({"epoch": state.epoch, "train/epoch_loss": row["train_loss"], "train/top1": row["train_top1"],
               **{f"val/{name}": v for name, v in metrics.items() if isinstance(v, float)}}, step=state.global_step)
    s.out.print(f"epoch {state.epoch}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.3f} | val loss "
                f"{metrics['loss']:.4f} top-1 {metrics['top1']:.3f} top-{k} {row.get(f'val_top{k}', 0):.3f} F1 "
                f"{metrics['macro_f1']:.3f}{' | new best' if row['is_best'] else ''} ({row['epoch_seconds']:.1f}s)")


def report_trained(s: Session, state: LoopState, row: dict) -> None:
    """An epoch without evaluation: train metrics only."""
    s.out.record(row)
    s.out.log({"epoch": state.epoch, "train/epoch_loss": row["train_loss"], "train/top1": row["train_top1"]},
              step=state.global_step)
    s.out.print(f"epoch {state.epoch}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.3f} "
                f"({row['epoch_seconds']:.1f}s)")


def should_stop_early(s: Session, state: LoopState) -> bool:
    patience = s.cfg.train.early_stopping_patience
    if patience and state.bad_epochs >= patience:
        s.out.print(f"early stopping: no new best for {patience} epochs (best epoch {state.best['epoch']})")
        return True
    return False
