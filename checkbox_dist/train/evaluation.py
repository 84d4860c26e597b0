"""Evaluation inside a training run: val metrics of an epoch, the best-model rules, and temperature
scaling of the best checkpoint at the end of the run."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from checkbox_dist.core import prefetch
from checkbox_dist.core.metrics import classification_metrics, fit_temperature
from checkbox_dist.model import checkpoint
from checkbox_dist.model.logits import collect_logits
from checkbox_dist.train.output import ValPredictions
from checkbox_dist.train.session import Session


def evaluate(s: Session) -> dict:
    """classification_metrics of the evaluated weights (EMA when on) on the val split, every sample once."""
    eval_model = s.ema.module if s.ema is not None else s.model
    lookup = s.trace.eval_lookup(s.data.val_set.lookup) if s.trace else s.data.val_set.lookup
    logits, labels = collect_logits(eval_model, prefetch.wrap(s.val_loader), lookup, s.data.spec, s.accelerator)
    if len(labels) != len(s.data.val_set):  # collect_logits keeps each val index once, on every backend
        raise RuntimeError(f"evaluation gathered {len(labels)} val rows for {len(s.data.val_set)} val images")
    return classification_metrics(logits, labels, s.data.classes, s.cfg.eval.top_k, s.cfg.eval.ece_bins)


def is_better(rule: str, metrics: dict, best: dict | None) -> bool:
    """The best-model rules. `seed`: val loss strictly lower AND top-1 not lower (the write-up's rule)."""
    if best is None:
        return True
    if rule == "seed":
        return metrics["loss"] < best["loss"] and metrics["top1"] >= best["top1"]
    if rule == "val_loss":
        return metrics["loss"] < best["loss"]
    if rule == "val_top1":  # ties broken by loss
        return (metrics["top1"], -metrics["loss"]) > (best["top1"], -best["loss"])
    return (metrics["macro_f1"], -metrics["loss"]) > (best["macro_f1"], -best["loss"])


def calibrate_best(s: Session, best_dir: Path) -> tuple[dict, ValPredictions]:
    """Fit temperature scaling on the val split for the `best` checkpoint, save it into the checkpoint, and
    return the run summary's numbers (val metrics before calibration, ECE before/after, temperature) and the
    best model's calibrated val predictions (for the end-of-run review: trackers, confusion matrix)."""
    cfg, data = s.cfg, s.data
    payload, _ = checkpoint.load(best_dir)
    model = checkpoint.model_from_payload(payload, str(best_dir), s.accelerator.device)
    loader = torch.utils.data.DataLoader(data.val_set, batch_size=cfg.data.eval_batch_size)
    logits, labels = collect_logits(model, loader, data.val_set.lookup, data.spec, None)
    before = classification_metrics(logits, labels, data.classes, cfg.eval.top_k, cfg.eval.ece_bins)
    temperature = fit_temperature(logits, labels) if cfg.eval.calibrate else 1.0
    after = classification_metrics(logits, labels, data.classes, cfg.eval.top_k, cfg.eval.ece_bins, temperature)
    payload["temperature"] = temperature
    payload["metrics"] = dict(payload["metrics"], ece_before_calibration=before["ece"],
                              ece_after_calibration=after["ece"], temperature=temperature)
    checkpoint.save(best_dir, payload, None)
    # The temperature minimises this NLL, so it never rises; ECE (15 bins over ~100 images) can, by noise.
    nll_after = float(F.cross_entropy(logits / temperature, labels)) if len(labels) else float("nan")
    summary = {"best_epoch": payload["epoch"], "val_top1": before["top1"], "val_loss": before["loss"],
               "val_loss_calibrated": nll_after, "val_macro_f1": before["macro_f1"], "val_ece": before["ece"],
               "val_ece_calibrated": after["ece"], "temperature": temperature, "best_checkpoint": str(best_dir)}
    val = ValPredictions(list(data.val_set.names), labels, F.softmax(logits / temperature, dim=1), before["confusion"])
    return summary, val
