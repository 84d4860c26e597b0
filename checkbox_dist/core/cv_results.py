"""What a `checkbox-dist cv --out DIR` folder says, for the layers that use it without running CV: the
out-of-fold CSV (audit, ensembles of OOF files) and the estimate plus calibration a refit quotes.

    DIR/cv_summary.json       mean ± std over folds, pooled out-of-fold scores, selection
    DIR/oof_predictions.csv   path, given, predicted, fold, p_<class>: every image once, held out
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from checkbox_dist.core.errors import UserError
from checkbox_dist.core.metrics import fit_temperature

SUMMARY_FILE, OOF_FILE = "cv_summary.json", "oof_predictions.csv"


def read_oof(path: Path) -> tuple[list[str], list[dict]]:
    """(classes, rows) of an OOF CSV; each row: path, given, predicted, fold (int), probs (list)."""
    if not path.is_file():
        raise UserError(f"out-of-fold predictions not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        classes = [f[2:] for f in fields if f.startswith("p_")]
        if not {"path", "given", "predicted"} <= set(fields) or not classes:
            raise UserError(f"{path}: not an out-of-fold CSV (need path, given, predicted, p_<class> columns)")
        rows = [{"path": r["path"], "given": r["given"], "predicted": r["predicted"],
                 "fold": int(r.get("fold") or 0), "probs": [float(r[f"p_{c}"]) for c in classes]} for r in reader]
    return classes, rows


def cv_estimate(cv_dir: str | Path, classes: list[str]) -> dict:
    """The CV estimate of a recipe, to quote for a model trained on all of its images (a refit), and a
    temperature fitted on its out-of-fold probabilities: held-out data, never the refit's training images.

    The OOF columns are probabilities with each fold's own temperature applied (cv_summary.json per_fold), so
    T_fold * log p = logits - const per image: the fold models' logits up to a shift softmax ignores. The
    temperature is fitted on those, and transfers to a refit of the same recipe as far as the fold models'
    confidence does."""
    folder = Path(cv_dir).expanduser()
    summary_file = folder / SUMMARY_FILE
    if not summary_file.is_file():
        raise UserError(f"eval.cv_dir={cv_dir}: no {SUMMARY_FILE} (run `checkbox-dist cv --out {cv_dir}` to the end)")
    summary = json.loads(summary_file.read_text())
    if summary.get("classes") != classes:
        raise UserError(f"eval.cv_dir={cv_dir}: its CV ran on classes {summary.get('classes')}, this run has {classes}")
    estimate = {"cv_dir": str(folder), "folds": summary["folds"], "n_images": summary["n_images"],
                "selection": summary.get("selection"), "top1": summary["top1"], "macro_f1": summary["macro_f1"],
                "pooled_top1": summary["pooled_oof"]["top1"], "temperature_from": None, "temperature": 1.0}
    if (folder / OOF_FILE).is_file():
        oof_classes, rows = read_oof(folder / OOF_FILE)
        if oof_classes == classes and rows:
            fold_t = {f["fold"]: float(f.get("temperature") or 1.0) for f in summary.get("per_fold", [])}
            log_probs = torch.tensor([r["probs"] for r in rows], dtype=torch.float64).clamp_min(1e-12).log()
            log_probs *= torch.tensor([fold_t.get(r["fold"], 1.0) for r in rows], dtype=torch.float64)[:, None]
            labels = torch.tensor([classes.index(r["given"]) for r in rows])
            estimate.update(temperature=fit_temperature(log_probs, labels),
                            temperature_from=f"{len(rows)} out-of-fold predictions in {folder / OOF_FILE}")
    return estimate


def estimate_line(estimate: dict) -> str:
    """One line quoting the estimate, for closing lines, summaries and model cards."""
    t, f = estimate["top1"], estimate["macro_f1"]
    return (f"{estimate['folds']}-fold CV estimate of this recipe ({estimate['n_images']} images, selection "
            f"{estimate['selection']}): top-1 {t['mean']:.4f} ± {t['std']:.4f}, macro-F1 {f['mean']:.4f} ± "
            f"{f['std']:.4f}, pooled out-of-fold top-1 {estimate['pooled_top1']:.4f} ({estimate['cv_dir']})")
