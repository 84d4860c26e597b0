"""One training stage: set up a Session, fit it, then calibrate and summarise its best checkpoint."""

from __future__ import annotations

from checkbox_dist.core.config import Config
from checkbox_dist.core.files import atomic_write_json
from checkbox_dist.model import checkpoint
from checkbox_dist.train.evaluation import calibrate_best
from checkbox_dist.train.loop import Outcome, fit
from checkbox_dist.train.refit import finish_refit
from checkbox_dist.train.selection import closing_lines, selection_record
from checkbox_dist.train.session import Session, setup


def train_stage(cfg: Config, config_path: str | None = None) -> dict:
    """Train one run as `cfg` says; returns its summary (empty on processes other than the main one)."""
    session = setup(cfg, config_path)
    outcome = fit(session)
    summary = finish(session, outcome)
    if session.trace:
        session.trace.finish(session.accelerator.unwrap_model(session.model))
    session.accelerator.wait_for_everyone()
    session.out.finish()
    return summary


def finish(s: Session, outcome: Outcome) -> dict:
    """A refit: train/refit.py. Otherwise temperature scaling on the best checkpoint, the end-of-run review (confusion matrix; trackers: final metrics,
    W&B model artifact and table of val errors), then summary.json, written last: "this run finished"."""
    best_dir = s.ckpt_dir / "best"
    if not (s.accelerator.is_main_process and (best_dir / checkpoint.MODEL_FILE).is_file()):
        return {}
    if s.data.refit:
        summary = finish_refit(s, best_dir, outcome.stopped_early)
        atomic_write_json(s.run_dir / "summary.json", summary)
        return summary
    ev, n_val = s.cfg.eval, len(s.data.val_set)
    last_epoch = outcome.last_epoch
    summary, val = calibrate_best(s, best_dir, lambda epoch: selection_record(
        ev.best_rule, ev.smooth_evals, epoch, max(epoch, last_epoch), n_val))
    chosen = summary["selection"]
    plots = s.run_dir / "plots"
    summary.update(stopped_early=outcome.stopped_early, run_dir=str(s.run_dir),
                   metrics_plot=str(plots / "metrics_plot.png"))
    matrix = s.out.end_of_run(summary, best_dir, s.data.classes, val, outcome.global_step)  # trackers: once per best
    summary["confusion_matrix"] = str(matrix)
    atomic_write_json(s.run_dir / "summary.json", summary)
    s.out.print(f"done: best epoch {summary['best_epoch']} | val top-1 {summary['val_top1']:.4f} | macro-F1 "
                f"{summary['val_macro_f1']:.4f} | at temperature {summary['temperature']:.3f}: loss "
                f"{summary['val_loss']:.4f} -> {summary['val_loss_calibrated']:.4f}, ECE {summary['val_ece']:.4f}"
                f" -> {summary['val_ece_calibrated']:.4f}",
                *closing_lines(ev.best_rule, ev.smooth_evals, chosen["epoch"], chosen["last_epoch"], n_val,
                               summary["val_top1"]),
                f"best checkpoint: {best_dir}",
                f"plots: {plots / 'metrics_plot.png'} and {matrix}")
    return summary
