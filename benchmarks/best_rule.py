"""Which `eval.best_rule` keeps the checkpoint that scores best on images no rule saw (docs/DESIGN.md, "Which
checkpoint is `best`").

    python benchmarks/best_rule.py CV_DIR [CV_DIR ...] [--smooth 3 5]

Each CV_DIR is a `checkbox-dist cv --inner-val F --selection best --outer-history` run (one per training seed,
same folds): its outer_history.json holds, per fold and evaluated epoch, the inner-val metrics the rules select
on and the outer fold's top-1 / macro-F1 (recorded, never used to select). Every rule is replayed on each fold's
inner-val history with train/selection.py's own comparison (`choose`), and the epoch it keeps is scored on the
outer fold. Printed per rule: outer top-1 and macro-F1, mean ± sample std over all folds of all runs; the mean
epoch kept; the paired deltas against `final` (the last epoch) fold by fold, their mean ± standard error and
wins/ties/losses. `oracle` (the epoch with the best outer top-1) is the ceiling no rule can reach, shown for scale.
A rule "beats final" when its mean paired delta exceeds twice its standard error.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from checkbox_dist.train.selection import RULES, choose


def load(cv_dirs: list[str]) -> list[dict]:
    """One entry per (run, fold): its name and its evaluated epochs as rule inputs plus outer scores."""
    folds = []
    for d in cv_dirs:
        data = json.loads((Path(d) / "outer_history.json").read_text())
        for fold in data["per_fold"]:
            rows = [{"epoch": r["epoch"], "loss": r["val_loss"], "top1": r["val_top1"],
                     "macro_f1": r["val_macro_f1"], "outer_top1": r["outer_top1"],
                     "outer_macro_f1": r["outer_macro_f1"]} for r in fold["history"]]
            folds.append({"name": f"s{data['train_seed']}/f{fold['fold']}", "rows": rows})
    return folds


def kept_epoch(rule: str, k: int, rows: list[dict]) -> int:
    if rule == "oracle":
        return max(rows, key=lambda r: (r["outer_top1"], r["epoch"]))["epoch"]
    return choose(rule, rows, k)


def table(folds: list[dict], smooth: list[int]) -> list[str]:
    rules = [(r, 3) for r in RULES if r != "val_top1_smooth"] + [("val_top1_smooth", k) for k in smooth]
    rules.append(("oracle", 0))
    at = lambda f, e: next(r for r in f["rows"] if r["epoch"] == e)  # noqa: E731
    final = [at(f, kept_epoch("final", 0, f["rows"]))["outer_top1"] for f in folds]
    names = " ".join(f"{f['name']:>7}" for f in folds)
    lines = [f"{'rule':<22} {'outer top-1':>13} {'macro-F1':>13} {'epoch':>5} | delta vs final, points: {names} "
             f"| {'mean ± s.e.':>12} {'w/t/l':>6}"]
    for rule, k in rules:
        epochs = [kept_epoch(rule, k, f["rows"]) for f in folds]
        top1 = [at(f, e)["outer_top1"] for f, e in zip(folds, epochs)]
        f1 = [at(f, e)["outer_macro_f1"] for f, e in zip(folds, epochs)]
        delta = [100 * (a - b) for a, b in zip(top1, final)]
        se = statistics.stdev(delta) / math.sqrt(len(delta)) if len(delta) > 1 else 0.0
        label = f"{rule} (k={k})" if rule == "val_top1_smooth" else rule
        verdict = "  beats final" if rule not in ("final", "oracle") and statistics.fmean(delta) > 2 * se > 0 else ""
        wtl = f"{sum(d > 0 for d in delta)}/{sum(d == 0 for d in delta)}/{sum(d < 0 for d in delta)}"
        lines.append(f"{label:<22} {pm(top1):>13} {pm(f1):>13} {statistics.fmean(epochs):5.1f} | "
                     f"{'':>24}{' '.join(f'{d:+7.1f}' for d in delta)} | "
                     f"{statistics.fmean(delta):+5.1f} ± {se:4.1f} {wtl:>6}{verdict}")
    return lines


def pm(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * std:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cv_dirs", nargs="+", help="cv --outer-history output folders")
    parser.add_argument("--smooth", type=int, nargs="+", default=[3, 5], help="window sizes of val_top1_smooth")
    args = parser.parse_args(argv)
    missing = [d for d in args.cv_dirs if not (Path(d) / "outer_history.json").is_file()]
    if missing:
        print(f"error: {missing[0]}/outer_history.json not found (run `checkbox-dist cv ... --outer-history`)",
              file=sys.stderr)
        return 2
    folds = load(args.cv_dirs)
    print(f"{len(folds)} folds from {len(args.cv_dirs)} CV run(s); outer top-1 and macro-F1 in %, mean ± sample "
          f"std over the folds; deltas paired per fold")
    print("\n".join(table(folds, args.smooth)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
