"""Train a timm classifier on a folder of UI crops with Accelerate: one loop, top to bottom.

    checkbox-dist train --config configs/quickstart.yaml                       # CPU, synthetic data
    checkbox-dist train --config configs/checkbox_state_v2.yaml data.root=/data/checkbox_state_v2/train
    accelerate launch --config_file launch/multi_gpu.yaml train.py --config configs/checkbox_state_v2.yaml
    ACCELERATE_USE_CPU=true accelerate launch --config_file launch/cpu_2proc.yaml train.py --config ...
    sbatch slurm/train.sh --config configs/checkbox_state_v2.yaml              # see slurm/train.sh

Order of events: config -> Accelerator -> data -> model/optimizer/scheduler -> prepare -> resume ->
epochs (train, evaluate, checkpoint, plots, early stopping) -> temperature scaling on the best model.
SIGUSR1/SIGTERM (Slurm preemption) or a file RUN/STOP saves `last` and exits with code 75.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (DataLoaderConfiguration, DistributedType, InitProcessGroupKwargs, ProjectConfiguration,
                               broadcast_object_list, gather_object, send_to_device, set_seed)
from tqdm.auto import tqdm

from checkbox_dist.data import augment
from checkbox_dist.model import checkpoint
from checkbox_dist.core import faults
from checkbox_dist.train import pretrain
from checkbox_dist.core.config import Config, to_dict
from checkbox_dist.core.distributed import RankTrace, check_launch
from checkbox_dist.core.errors import UserError
from checkbox_dist.infer.evaluate import calibrate_best, collect_logits, is_better
from checkbox_dist.data.images import parse_color
from checkbox_dist.data.build import build_data
from checkbox_dist.core.metrics import classification_metrics
from checkbox_dist.model.build import build_model, load_weights
from checkbox_dist.model.optim import build_optimizer, build_scheduler, effective_lr
from checkbox_dist.train.output import RunOutput

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"; slurm/train.sh requeues on it
_stop_signal: list[str] = []


def _on_signal(signum, _frame):
    _stop_signal.append(signal.Signals(signum).name)


def resolve_run_dir(cfg: Config, config_path: str | None, accelerator: Accelerator) -> Path:
    name = [cfg.train.output_dir or f"runs/{Path(config_path or 'run').stem}-{time.strftime('%Y%m%d-%H%M%S')}"]
    broadcast_object_list(name)  # every process must agree on one folder (timestamps can differ)
    return Path(name[0]).expanduser()


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def main(cfg: Config, config_path: str | None = None) -> dict:
    # Installed first, so a preemption while data decodes or stage one trains is a clean exit 75 too (seen
    # at the first log interval). Under torch_xla's launcher (xmp.spawn) this runs in a per-device thread,
    # where Python cannot install signal handlers: there, RUN/STOP is the way to stop cleanly.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, _on_signal)
    cfg = pretrain.ensure(cfg)  # pretrain.synth_n > 0: stage one (cached), then this run fine-tunes from it
    A = cfg.train.grad_accum_steps
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=A,
        log_with=cfg.tracking.backends or None, step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(even_batches=True, non_blocking=torch.cuda.is_available()),
        project_config=ProjectConfiguration(logging_dir="."),  # the real folder is set once run_dir is known
        # A hung peer (stopped, partitioned) blocks every collective for Accelerate's default 30 min (gloo);
        # a dead one is seen at once (connection reset). Either way cli.py turns it into one line.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.collective_timeout_s))]
        if cfg.train.collective_timeout_s else None)
    check_launch(accelerator, cfg)  # N processes that each see world size 1: one clear error (distributed.py)
    world, rank = accelerator.num_processes, accelerator.process_index
    run_dir = resolve_run_dir(cfg, config_path, accelerator)
    trace = RankTrace.from_env(run_dir, accelerator)  # only with CHECKBOX_DIST_RANK_TRACE=1 (tests, debugging)
    ckpt_dir = run_dir / "checkpoints"
    resume_from = None
    if cfg.train.resume == "auto":
        if accelerator.is_main_process and ckpt_dir.is_dir():
            checkpoint.recover(ckpt_dir, say=accelerator.print)  # a save killed half-way (kill -9, OOM)
        accelerator.wait_for_everyone()
        resume_from = checkpoint.find_resumable(ckpt_dir, say=accelerator.print)
    elif cfg.train.resume:
        resume_from = checkpoint.resolve(cfg.train.resume)
    elif checkpoint.find_resumable(ckpt_dir, say=lambda _: None):
        raise UserError(f"{run_dir} already holds checkpoints: pass train.resume=auto to continue it, "
                        f"or another train.output_dir")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    out = RunOutput(accelerator, run_dir, cfg)
    set_seed(cfg.train.seed)  # same seed on every process: identical initial weights
    if accelerator.device.type == "cuda":
        # Shapes are static (drop_last), so cuDNN's autotuner pays off after the first step; TF32 matmuls
        # are ~2x fp32 on Hopper for fp32 runs (bf16 runs are unaffected).
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    # ---- data, model, optimizer, schedule ----------------------------------------------------------
    data = build_data(cfg, accelerator, say=out.print)
    model = build_model(cfg.model, len(data.classes), data.spec.channels)
    if cfg.train.init_from:
        payload, _ = checkpoint.load(checkpoint.resolve(cfg.train.init_from))
        load_weights(model, payload["model"], cfg.train.init_from, skip_head=payload["classes"] != data.classes)
    model = model.to(accelerator.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    global_batch = cfg.data.batch_size * world * A
    lr = effective_lr(cfg.optim, global_batch)
    optimizer = build_optimizer(cfg.optim, model, lr)
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, data.train_loader, data.val_loader)
    # Per process after sharding. With drop_last, batches that cannot go to every process are dropped:
    # 330 images at 32 x 8 processes give 1 step (256 images) per epoch; the order reshuffles each epoch.
    micro_per_epoch = len(train_loader)
    if micro_per_epoch == 0:
        raise UserError(f"train split ({len(data.train_set)} images) is smaller than one global batch "
                        f"({cfg.data.batch_size} x {world} processes): lower data.batch_size")
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / A))
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    scheduler = accelerator.prepare(build_scheduler(cfg.schedule, optimizer, total_steps, steps_per_epoch, lr))
    # Only the training forward is compiled: checkpoints, EMA and evaluation use the plain module, so
    # state_dict keys stay clean and eval mode does not trigger a second compile.
    forward = torch.compile(model) if cfg.train.compile else model
    ema = None
    if cfg.train.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(accelerator.unwrap_model(model), decay=cfg.train.ema_decay, device=accelerator.device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    background = parse_color(cfg.data.background)

    out.print(
        f"run: {run_dir} | {accelerator.distributed_type.value.replace('NO', 'single process')} on "
        f"{accelerator.device} | world size {world} "
        f"(process {rank}) | precision {cfg.train.mixed_precision}",
        f"batch: {cfg.data.batch_size}/process x {world} processes x {A} accumulation = {global_batch} global "
        f"| lr {lr:g} ({cfg.optim.name}{', scaled from ' + format(cfg.optim.lr, 'g') if lr != cfg.optim.lr else ''}"
        f", {cfg.schedule.name} schedule) | {steps_per_epoch} optimizer steps/epoch, {total_steps} planned",
        data.summary(),
        f"model: {cfg.model.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"pretrained={cfg.model.pretrained}) | {len(data.classes)} classes")

    # ---- resume --------------------------------------------------------------------------------------
    state = {"epoch": 1, "micro_step": 0, "global_step": 0, "best": None, "bad_epochs": 0}
    resumed_sums = None
    if resume_from:
        state, resumed_sums = checkpoint.restore(resume_from, data.classes, accelerator.unwrap_model(model), optimizer,
                                                 scheduler, accelerator.scaler, ema, rank, world)
        out.print(f"resumed from {resume_from}: epoch {state['epoch']}, batch {state['micro_step']} of "
                  f"{micro_per_epoch}, optimizer step {state['global_step']}")
    out.start_trackers()

    def save(folder_name: str, metrics: dict, with_state: bool = True) -> None:
        """Every process takes part (RNG gather); only the main process writes."""
        # With each process's RNG, its running sums of the epoch so far: resumed mid-epoch, the epoch's
        # train loss/top-1 then cover the whole epoch, as in an uninterrupted run.
        mine = dict(rng_state(), epoch_sums=[float(loss_sum), float(correct), float(seen)])
        # torch_xla cannot gather Python objects (NotImplementedError): on XLA, rank 0's state stands for all.
        rngs = ([mine] if accelerator.distributed_type == DistributedType.XLA else gather_object([mine])
                ) if with_state else []
        if accelerator.is_main_process:
            weights = (ema.module if ema is not None else accelerator.unwrap_model(model)).state_dict()
            payload = {"model": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                                 for k, v in weights.items()},
                       "classes": data.classes, "model_name": cfg.model.name, "preprocess": data.spec.to_dict(),
                       "temperature": 1.0, "config": to_dict(cfg), "metrics": metrics,
                       "epoch": metrics.get("epoch", state["epoch"] - 1),
                       "global_step": state["global_step"], "versions": checkpoint.versions()}
            train_state = None
            if with_state:
                train_state = {"raw_model": {k: v.detach().cpu() for k, v in
                                             accelerator.unwrap_model(model).state_dict().items()},
                               # CPU copies, as xm.save does on XLA: the file never names an accelerator device.
                               "optimizer": send_to_device(optimizer.state_dict(), "cpu"),
                               "scheduler": scheduler.state_dict(),
                               "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
                               "ema": send_to_device(ema.state_dict(), "cpu") if ema is not None else None,
                               "rng": rngs, "loop": dict(state), "world_size": world}
            checkpoint.save(ckpt_dir / folder_name, payload, train_state)
        accelerator.wait_for_everyone()

    def check_finite(first_bad: torch.Tensor, epoch: int) -> None:
        """nan_policy=stop: before anything is logged or saved, every process agrees the loss stayed finite."""
        if cfg.train.nan_policy != "stop":
            return
        bad = [step for step in accelerator.gather(first_bad.reshape(1)).tolist() if step]
        if bad:
            raise UserError(f"non-finite loss (NaN/inf) at optimizer step {min(bad)} (epoch {epoch}); stopped "
                            f"before saving it: the last good checkpoint is kept in {ckpt_dir} (try a lower "
                            f"optim.lr, or train.nan_policy=skip)")

    def stop_requested() -> bool:
        """One tiny all-reduce: every process must agree to stop at the same step."""
        local = bool(_stop_signal) or (run_dir / "STOP").exists()
        flag = accelerator.reduce(torch.tensor([float(local)], device=accelerator.device), reduction="sum")
        return bool(flag.item() > 0)

    # ---- epochs --------------------------------------------------------------------------------------
    summary: dict = {}
    last_metrics: dict = {}
    stopped_early = preempted = False
    while state["epoch"] <= cfg.train.epochs and not preempted:
        epoch = state["epoch"]
        train_loader.set_epoch(epoch)
        skip = state["micro_step"]
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        model.train()
        loss_sum = torch.zeros((), device=accelerator.device)
        correct = torch.zeros((), device=accelerator.device)
        seen = torch.zeros((), device=accelerator.device)
        nonfinite = torch.zeros((), device=accelerator.device, dtype=torch.long)  # first bad step; 0 = none
        window_skipped = False  # nan_policy=skip: a batch of this accumulation window had a non-finite loss
        if resumed_sums:  # resumed mid-epoch: carry on with the running sums saved with the checkpoint
            loss_sum += resumed_sums[0]
            correct += resumed_sums[1]
            seen += resumed_sums[2]
            resumed_sums = None
        started = time.perf_counter()
        interval = [started, float(seen)]  # time and images at the last log: the steady-state rate
        bar = tqdm(total=micro_per_epoch, initial=skip, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                   disable=not (accelerator.is_main_process and cfg.train.progress))
        for micro, batch in enumerate(loader, start=skip):
            images, labels, indices = data.train_set.lookup(batch)
            if trace:
                trace.train_batch(epoch, indices)
            params = augment.sample_params(len(labels), cfg.data.augment,
                                           augment.batch_generator(cfg.train.seed, epoch, micro, rank))
            x = augment.apply(images, params, background, cfg.data.augment, *data.spec.normalization,
                              channels_last=cfg.train.channels_last, compiled=cfg.train.compile)
            target = labels
            if cfg.train.mixup_alpha > 0 or cfg.train.cutmix_alpha > 0:
                x, target = augment.mix(x, labels, len(data.classes), cfg.train.mixup_alpha, cfg.train.cutmix_alpha,
                                        augment.batch_generator(cfg.train.seed + 1, epoch, micro, rank))
            # A short last window (e.g. 10 micro-batches with accumulation 4 -> 4, 4, 2) must average over
            # its real length; Accelerate divides every micro-batch by A, so rescale by A / window_len.
            window_len = min(A, micro_per_epoch - (micro // A) * A)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    logits = forward(x)
                    loss = criterion(logits, target)
                if poison := faults.point("step"):  # test-only fault hook (checkbox_dist/faults.py): a dict lookup
                    loss = loss * float(poison)  # "nan"/"inf": spreads into the gradients, as a real overflow does
                if cfg.train.nan_policy == "skip":  # opt-in: a host sync and a tiny all-reduce per batch
                    if accelerator.reduce((~torch.isfinite(loss.detach())).float().reshape(1), reduction="sum").item():
                        out.print(f"non-finite loss at optimizer step {state['global_step'] + 1} (epoch {epoch}, "
                                  f"batch {micro}): update skipped")
                        loss = loss.nan_to_num(0.0, 0.0, 0.0) * 0.0  # every process still runs backward (DDP)
                        window_skipped = True  # 0 x NaN is NaN: the window's gradients are unusable
                accelerator.backward(loss * (A / window_len))
                if accelerator.sync_gradients and cfg.optim.clip_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
                if not window_skipped:
                    optimizer.step()
                if accelerator.sync_gradients and cfg.schedule.name != "plateau":
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            detached = loss.detach().float()
            nonfinite = torch.where((nonfinite == 0) & ~torch.isfinite(detached), state["global_step"] + 1, nonfinite)
            loss_sum += detached * len(labels)
            correct += logits.detach().argmax(1).eq(labels).sum()
            seen += len(labels)
            bar.update(1)
            if not accelerator.sync_gradients:
                continue
            window_skipped = False
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step=state["global_step"])
            state["global_step"] += 1
            state["micro_step"] = micro + 1
            if state["global_step"] % cfg.train.log_every_steps == 0 or state["micro_step"] == micro_per_epoch:
                # The only host syncs of the hot loop: once per log interval.
                check_finite(nonfinite, epoch)
                now, seen_now = time.perf_counter(), float(seen)
                rate = seen_now * world / max(1e-9, now - started)
                interval_rate = (seen_now - interval[1]) * world / max(1e-9, now - interval[0])
                interval[:] = [now, seen_now]
                step_row = {"kind": "step", "epoch": epoch, "step": state["global_step"],
                            "interval_img_per_s": interval_rate,
                            "train_loss": float(loss_sum / seen.clamp_min(1)),
                            "lr": optimizer.param_groups[0]["lr"], "img_per_s": rate}
                bar.set_postfix(loss=f"{step_row['train_loss']:.4f}", lr=f"{step_row['lr']:.2e}", img_s=f"{rate:.1f}")
                out.record(step_row)
                out.log({"train/loss": step_row["train_loss"], "train/lr": step_row["lr"],
                         "train/img_per_s": rate}, step=state["global_step"])
                if stop_requested():
                    reason = _stop_signal[0] if _stop_signal else "stop request"
                    save("last", last_metrics)
                    out.remove_stop_file()  # else the requeued job would stop again at once
                    out.print(f"{reason}: saved {ckpt_dir / 'last'} at epoch {epoch} batch {state['micro_step']}; "
                              f"exiting with code {PREEMPTED_EXIT} (resume with train.resume=auto)")
                    preempted = True
                    break
            if cfg.checkpoint.every_steps and state["global_step"] % cfg.checkpoint.every_steps == 0:
                check_finite(nonfinite, epoch)  # never save weights a non-finite step has reached
                save("last", last_metrics)
            if cfg.train.max_steps and state["global_step"] >= cfg.train.max_steps:
                break
        bar.close()
        if preempted:
            break
        check_finite(nonfinite, epoch)  # also after a max_steps break between log intervals

        # ---- evaluate ----------------------------------------------------------------------------------
        totals = accelerator.reduce(torch.stack([loss_sum, correct, seen]).float(), reduction="sum")
        train_loss, train_top1 = float(totals[0] / totals[2].clamp_min(1)), float(totals[1] / totals[2].clamp_min(1))
        done = cfg.train.max_steps and state["global_step"] >= cfg.train.max_steps
        row = {"kind": "epoch", "epoch": epoch, "step": state["global_step"], "train_loss": train_loss,
               "train_top1": train_top1, "lr": optimizer.param_groups[0]["lr"],
               "epoch_seconds": time.perf_counter() - started}
        if epoch % cfg.eval.every_epochs == 0 or epoch == cfg.train.epochs or done:
            eval_model = ema.module if ema is not None else model
            logits, labels = collect_logits(eval_model, val_loader, trace.eval_lookup(data.val_set.lookup) if trace
                                            else data.val_set.lookup, data.spec, accelerator)
            metrics = classification_metrics(logits, labels, data.classes, cfg.eval.top_k, cfg.eval.ece_bins)
            row.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)})
            row["val_per_class"], row["val_confusion"] = metrics["per_class"], metrics["confusion"]
            if cfg.schedule.name == "plateau":
                scheduler.step(metrics["loss"])  # patience counts evaluations: set eval.every_epochs=1 for it
            row["is_best"] = is_better(cfg.eval.best_rule, metrics, state["best"])
            last_metrics = {k: v for k, v in row.items() if k not in ("val_per_class", "val_confusion")}
            state["bad_epochs"] = 0 if row["is_best"] else state["bad_epochs"] + 1
            if row["is_best"]:
                state["best"] = {"loss": metrics["loss"], "top1": metrics["top1"], "macro_f1": metrics["macro_f1"],
                                 "epoch": epoch}
            out.record(row)  # epochs without evaluation are recorded below, with train metrics only
            out.epoch_plots(epoch, metrics["confusion"], data.classes, metrics["top1"], state["global_step"])
            out.log({"epoch": epoch, "train/epoch_loss": train_loss, "train/top1": train_top1,
                     **{f"val/{k}": v for k, v in metrics.items() if isinstance(v, float)}}, step=state["global_step"])
            out.print(f"epoch {epoch}: train loss {train_loss:.4f} top-1 {train_top1:.3f} | val loss "
                      f"{metrics['loss']:.4f} top-1 {metrics['top1']:.3f} top-{min(cfg.eval.top_k, len(data.classes))} "
                      f"{row.get(f'val_top{min(cfg.eval.top_k, len(data.classes))}', 0):.3f} F1 "
                      f"{metrics['macro_f1']:.3f}{' | new best' if row['is_best'] else ''} "
                      f"({row['epoch_seconds']:.1f}s)")
        else:
            out.record(row)
            out.log({"epoch": epoch, "train/epoch_loss": train_loss, "train/top1": train_top1}, step=state["global_step"])
            out.print(f"epoch {epoch}: train loss {train_loss:.4f} top-1 {train_top1:.3f} ({row['epoch_seconds']:.1f}s)")
        # ---- checkpoint ---------------------------------------------------------------------------------
        state["epoch"], state["micro_step"] = epoch + 1, 0
        if row.get("is_best"):
            save("best", last_metrics, with_state=False)
            out.summary({"best/epoch": epoch, "best/val_top1": row["val_top1"], "best/val_loss": row["val_loss"]})
        if epoch % cfg.checkpoint.every_epochs == 0 or done or epoch == cfg.train.epochs:
            save("last", last_metrics)
            if cfg.checkpoint.keep_last:
                save(f"epoch_{epoch:04d}", last_metrics)
                if accelerator.is_main_process:
                    checkpoint.prune_epochs(ckpt_dir, cfg.checkpoint.keep_last)
        patience = cfg.train.early_stopping_patience
        if patience and state["bad_epochs"] >= patience:
            out.print(f"early stopping: no new best for {patience} epochs (best epoch {state['best']['epoch']})")
            stopped_early = True
            break
        if done:
            break

    # ---- finish: temperature scaling on the best model ---------------------------------------------------
    if preempted:
        out.finish()
        accelerator.end_training()
        sys.exit(PREEMPTED_EXIT)
    best_dir = ckpt_dir / "best"
    if accelerator.is_main_process and (best_dir / checkpoint.MODEL_FILE).is_file():
        summary = calibrate_best(cfg, data, best_dir, accelerator.device)
        summary.update(stopped_early=stopped_early, run_dir=str(run_dir),
                       metrics_plot=str(run_dir / "plots" / "metrics_plot.png"))
        checkpoint.write_json_atomic(run_dir / "summary.json", summary)  # written last: "this run finished"
        out.summary({"best/temperature": summary["temperature"], "best/ece_calibrated": summary["val_ece_calibrated"]})
        out.print(f"done: best epoch {summary['best_epoch']} | val top-1 {summary['val_top1']:.4f} | macro-F1 "
                  f"{summary['val_macro_f1']:.4f} | at temperature {summary['temperature']:.3f}: loss "
                  f"{summary['val_loss']:.4f} -> {summary['val_loss_calibrated']:.4f}, ECE {summary['val_ece']:.4f}"
                  f" -> {summary['val_ece_calibrated']:.4f}",
                  f"best checkpoint: {best_dir}",
                  f"plots: {run_dir / 'plots' / 'metrics_plot.png'} and "
                  f"{run_dir / 'plots'}/confusion_matrix_epoch_<N>.png")
    if trace:
        trace.finish(accelerator.unwrap_model(model))
    accelerator.wait_for_everyone()
    out.finish()
    return summary


if __name__ == "__main__":  # python -m checkbox_dist.train --config C [overrides]: same as `checkbox-dist train`
    from checkbox_dist.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
