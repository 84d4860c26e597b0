"""The end of a refit (data.val_fraction=0): every image trained, nothing held out, so nothing to select or
calibrate on. `best` is the final epoch's weights (train/loop.py saves it there); this writes what may be said
about it: no held-out figure, the CV estimate of the recipe from `eval.cv_dir`, and a temperature fitted on
that CV run's out-of-fold probabilities, or none ("uncalibrated"). Never a temperature fitted on training images.

    checkbox-dist cv --config C --folds 5 --out runs/cv-C                      # the recipe's estimate
    checkbox-dist train --config C data.val_fraction=0 eval.cv_dir=runs/cv-C    # the model to ship
"""

from __future__ import annotations

from pathlib import Path

from checkbox_dist.core.cv_results import cv_estimate, estimate_line
from checkbox_dist.model import checkpoint

NO_HELD_OUT = "no held-out figure: a refit trains on every image (data.val_fraction=0)"


def refit_evidence(cfg, classes: list[str]) -> dict:
    """The `refit` block of the checkpoint's metrics and summary.json: the CV estimate and the temperature."""
    if not cfg.eval.cv_dir:
        return {"held_out": None, "note": NO_HELD_OUT, "cv_estimate": None, "temperature": 1.0,
                "calibration": "uncalibrated: no eval.cv_dir to fit a temperature on (probabilities are the "
                               "softmax of the logits)"}
    estimate = cv_estimate(cfg.eval.cv_dir, classes)
    temperature = estimate["temperature"] if cfg.eval.calibrate else 1.0
    calibration = (f"temperature {temperature:.4f} fitted on {estimate['temperature_from']}"
                   if estimate["temperature_from"] and cfg.eval.calibrate else
                   "uncalibrated: " + ("eval.calibrate=false" if not cfg.eval.calibrate else
                                       f"{cfg.eval.cv_dir} has no out-of-fold predictions"))
    return {"held_out": None, "note": NO_HELD_OUT, "cv_estimate": estimate, "temperature": temperature,
            "calibration": calibration}


def finish_refit(s, best_dir: Path, stopped_early: bool) -> dict:
    """Temperature and evidence into the `best` (= final) checkpoint; the run's summary and closing lines."""
    payload, _ = checkpoint.load(best_dir)
    evidence = refit_evidence(s.cfg, s.data.classes)
    payload["temperature"] = evidence["temperature"]
    payload["metrics"] = dict(payload["metrics"], refit=evidence, temperature=evidence["temperature"])
    checkpoint.save(best_dir, payload, None)
    estimate = evidence["cv_estimate"]
    summary = {"refit": True, "best_epoch": payload["epoch"], "final_epoch": payload["epoch"],
               "held_out": None, "val_top1": None, "train_top1": payload["metrics"].get("train_top1"),
               "train_loss": payload["metrics"].get("train_loss"), "cv_estimate": estimate,
               "temperature": evidence["temperature"], "calibration": evidence["calibration"],
               "best_checkpoint": str(best_dir), "stopped_early": stopped_early, "run_dir": str(s.run_dir)}
    s.out.print(f"done: refit, final epoch {payload['epoch']} kept | {NO_HELD_OUT}",
                estimate_line(estimate) if estimate else
                "no CV estimate quoted: name the recipe's `checkbox-dist cv --out DIR` run with eval.cv_dir=DIR",
                f"calibration: {evidence['calibration']}",
                f"model: {best_dir} (the final weights)")
    return summary
