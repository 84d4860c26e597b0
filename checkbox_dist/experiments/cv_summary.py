"""The out-of-fold results of a CV folder (experiments/cv.py), once every fold has its oof.csv: the merged
oof_predictions.csv and every number computed from it, in cv_summary.json (per fold, mean and sample std over
folds, pooled), outer_history.json (--outer-history), confusion_oof.png and the table `cv` prints.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from checkbox_dist.core import plots
from checkbox_dist.core.cv_results import read_oof
from checkbox_dist.core.files import atomic_write_csv, atomic_write_json


def scores(given: list[str], predicted: list[str], classes: list[str]) -> dict:
    """top-1, per-class precision/recall/F1, macro-F1 and the confusion matrix (rows = given)."""
    index = {c: i for i, c in enumerate(classes)}
    confusion = [[0] * len(classes) for _ in classes]
    for g, p in zip(given, predicted):
        confusion[index[g]][index[p]] += 1
    per_class = {}
    for i, c in enumerate(classes):
        tp = confusion[i][i]
        precision = tp / max(1, sum(row[i] for row in confusion))
        recall = tp / max(1, sum(confusion[i]))
        per_class[c] = {"precision": precision, "recall": recall, "support": sum(confusion[i]),
                        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}
    n = len(given)
    return {"n": n, "top1": sum(confusion[i][i] for i in range(len(classes))) / max(1, n),
            "macro_f1": sum(m["f1"] for m in per_class.values()) / len(classes),
            "per_class": per_class, "confusion": confusion}


def _mean_std(values: list[float]) -> dict:
    # Sample std (n - 1) over folds: the spread a new draw of folds would show.
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(out: Path, folds: int) -> dict:
    """Merge the folds' OOF files and compute every number in cv_summary.json from them."""
    header, merged, per_fold = None, [], []
    for i in range(folds):
        with (out / f"fold_{i}" / "oof.csv").open(newline="") as handle:
            rows = list(csv.reader(handle))
        header = header or rows[0]
        merged += rows[1:]
    atomic_write_csv(out / "oof_predictions.csv", header, sorted(merged, key=lambda r: r[0]))
    classes, rows = read_oof(out / "oof_predictions.csv")
    settings = json.loads((out / "cv.json").read_text())
    for i in range(folds):
        fold_rows = [r for r in rows if r["fold"] == i]
        s = scores([r["given"] for r in fold_rows], [r["predicted"] for r in fold_rows], classes)
        run_summary = out / f"fold_{i}" / "summary.json"
        extra = json.loads(run_summary.read_text()) if run_summary.is_file() else {}
        per_fold.append(dict(s, fold=i, best_epoch=extra.get("best_epoch"), temperature=extra.get("temperature")))
    pooled = scores([r["given"] for r in rows], [r["predicted"] for r in rows], classes)
    summary = {
        "folds": folds, "n_images": len(rows), "classes": classes, "selection": settings["selection"],
        "config": settings["config"], "root": settings["root"], "seed": settings["seed"],
        "inner_val": settings.get("inner_val", 0.0),
        "std_kind": "sample std over folds (n-1)", "train_excluded": len(settings.get("train_exclude", [])),
        "top1": _mean_std([f["top1"] for f in per_fold]),
        "macro_f1": _mean_std([f["macro_f1"] for f in per_fold]),
        "per_class_f1": {c: _mean_std([f["per_class"][c]["f1"] for f in per_fold]) for c in classes},
        "pooled_oof": pooled, "per_fold": per_fold,
        "epochs": settings["resolved_config"]["train"]["epochs"],
        "model": settings["resolved_config"]["model"]["name"],
        "image_size": settings["resolved_config"]["data"]["image_size"],
        "image_width": settings["resolved_config"]["data"]["image_width"],
    }
    atomic_write_json(out / "cv_summary.json", summary)
    if settings.get("outer_history"):
        write_outer_history(out, folds, settings)
    plots.confusion_matrix_png(pooled["confusion"], classes, out / "confusion_oof.png",
                               f"out-of-fold, {folds} folds: top-1 {100 * pooled['top1']:.1f}% (n={len(rows)})")
    return summary


def fold_history(run_dir: Path) -> list[dict]:
    """The evaluated epochs of a fold's run (metrics.jsonl; a resumed epoch's newer row wins): epoch, inner-val
    loss/top-1/macro-F1 and the outer fold's (the run's probe part) top-1/macro-F1/loss."""
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("kind") == "epoch" and "val_top1" in row:
            rows[row["epoch"]] = row
    keys = {"val_loss": "val_loss", "val_top1": "val_top1", "val_macro_f1": "val_macro_f1",
            "outer_top1": "probe_top1", "outer_macro_f1": "probe_macro_f1", "outer_loss": "probe_loss"}
    return [{"epoch": e, **{k: rows[e].get(source) for k, source in keys.items()}} for e in sorted(rows)]


def write_outer_history(out: Path, folds: int, settings: dict) -> None:
    """OUT/outer_history.json: every fold's evaluated epochs, inner-val and outer metrics side by side."""
    cfg = settings["resolved_config"]
    atomic_write_json(out / "outer_history.json", {
        "folds": folds, "seed": settings["seed"], "train_seed": cfg["train"]["seed"],
        "inner_val": settings["inner_val"], "best_rule": cfg["eval"]["best_rule"],
        "model": cfg["model"]["name"], "epochs": cfg["train"]["epochs"],
        "per_fold": [{"fold": i, "history": fold_history(out / f"fold_{i}")} for i in range(folds)]})


def format_table(summary: dict) -> str:
    classes = summary["classes"]
    head = f"{'fold':>9} {'n':>4} {'top-1':>7} {'macro-F1':>8} " + " ".join(f"{'F1 ' + c[:9]:>12}" for c in classes)
    lines = [head + f" {'epoch':>5} {'T':>5}"]
    for f in summary["per_fold"]:
        lines.append(f"{f['fold']:>9} {f['n']:>4} {f['top1']:7.4f} {f['macro_f1']:8.4f} "
                     + " ".join(f"{f['per_class'][c]['f1']:12.4f}" for c in classes)
                     + f" {f['best_epoch'] or '-':>5} {f['temperature'] or 0:5.2f}")
    ms = lambda d: f"{d['mean']:.4f}±{d['std']:.4f}"  # noqa: E731
    lines.append(f"{'mean±std':>9} {summary['n_images']:>4} {ms(summary['top1']):>7} {ms(summary['macro_f1']):>8} "
                 + " ".join(f"{ms(summary['per_class_f1'][c]):>12}" for c in classes))
    p = summary["pooled_oof"]
    lines.append(f"{'pooled':>9} {p['n']:>4} {p['top1']:7.4f} {p['macro_f1']:8.4f} "
                 + " ".join(f"{p['per_class'][c]['f1']:12.4f}" for c in classes))
    for f in summary["per_fold"]:
        lines.append(f"fold {f['fold']} confusion (rows = given, cols = predicted {'/'.join(classes)}): "
                     + "  ".join(str(row) for row in f["confusion"]))
    return "\n".join(lines)
