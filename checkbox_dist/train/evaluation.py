"""Evaluation inside a training run: val (and probe) metrics of an epoch, and temperature scaling of the best
checkpoint at the end of the run. The best-model rules: train/selection.py."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from checkbox_dist.core import prefetch
from checkbox_dist.core.metrics import classification_metrics, fit_temperature
from checkbox_dist.model import checkpoint
from checkbox_dist.model.logits import collect_logits
from checkbox_dist.train.output import ValPredictions
from checkbox_dist.train.session import Session


def evaluate(s: Session, probe: bool = False) -> dict:
    """classification_metrics of the evaluated weights (EMA when on) on the val split (`probe`: on the split
    file's probe part, which only gets recorded), every sample once."""
    eval_model = s.ema.module if s.ema is not None else s.model
    dataset, loader = (s.data.probe_set, s.probe_loader) if probe else (s.data.val_set, s.val_loader)
    lookup = s.trace.eval_lookup(dataset.lookup) if s.trace and not probe else dataset.lookup
    logits, labels = collect_logits(eval_model, prefetch.wrap(loader), lookup, s.data.spec, s.accelerator)
    if len(labels) != len(dataset):  # collect_logits keeps each index once, on every backend
        raise RuntimeError(f"evaluation gathered {len(labels)} rows for {len(dataset)} images")
    return classification_metrics(logits, labels, s.data.classes, s.cfg.eval.top_k, s.cfg.eval.ece_bins)


def calibrate_best(s: Session, best_dir: Path,
                   selection: Callable[[int], dict] | None = None) -> tuple[dict, ValPredictions]:
    """Fit temperature scaling on the val split for the `best` checkpoint, save it into the checkpoint, and
    return the run summary's numbers (val metrics before calibration, ECE before/after, temperature, and
    `selection(best epoch)`: how the epoch was chosen, train/selection.py) and the best model's calibrated val
    predictions (for the end-of-run review: trackers, confusion matrix)."""
    cfg, data = s.cfg, s.data
    payload, _ = checkpoint.load(best_dir)
    model = checkpoint.model_from_payload(payload, str(best_dir), s.accelerator.device)
    loader = torch.utils.data.DataLoader(data.val_set, batch_size=cfg.data.eval_batch_size)
    logits, labels = collect_logits(model, loader, data.val_set.lookup, data.spec, None)
    before = classification_metrics(logits, labels, data.classes, cfg.eval.top_k, cfg.eval.ece_bins)
    temperature = fit_temperature(logits, labels) if cfg.eval.calibrate else 1.0
    after = classification_metrics(logits, labels, data.classes, cfg.eval.top_k, cfg.eval.ece_bins, temperature)
    chosen = selection(payload["epoch"]) if selection else None
    payload["temperature"] = temperature
    payload["metrics"] = dict(payload["metrics"], ece_before_calibration=before["ece"],
                              ece_after_calibration=after["ece"], temperature=temperature,
                              **({"selection": chosen} if chosen else {}))
    checkpoint.save(best_dir, payload, None)
    # The temperature minimises this NLL, so it never rises; ECE (15 bins over ~100 images) can, by noise.
    nll_after = float(F.cross_entropy(logits / temperature, labels)) if len(labels) else float("nan")
    summary = {"best_epoch": payload["epoch"], "val_top1": before["top1"], "val_loss": before["loss"],
               "val_loss_calibrated": nll_after, "val_macro_f1": before["macro_f1"], "val_ece": before["ece"],
               "val_ece_calibrated": after["ece"], "temperature": temperature, "best_checkpoint": str(best_dir),
               **({"best_rule": chosen["rule"], "selection": chosen} if chosen else {})}
    val = ValPredictions(list(data.val_set.names), labels, F.softmax(logits / temperature, dim=1), before["confusion"])
    return summary, val
