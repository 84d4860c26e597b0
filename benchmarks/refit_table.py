"""The table behind docs/RESULTS.md's refit rows, from the runs of benchmarks/refit.sh: per-fold top-1, mean ± sample
std over folds, pooled, for (a), each (b) seed, and OOF ensembles of the first k seeds.

    .venv/bin/python benchmarks/refit_table.py runs/refit
"""

import statistics
import sys
from pathlib import Path

from checkbox_dist.experiments.audit import average_oof, oof_scores

root = Path(sys.argv[1])
single = {"a: 80 % + best epoch on inner 20 %": root / "a_inner20_best"}
seeds = [s for s in (42, 1, 2, 3, 4) if (root / f"b_refit_s{s}" / "oof_predictions.csv").is_file()]
single.update({f"b: refit, train.seed={s}": root / f"b_refit_s{s}" for s in seeds})


def row(name: str, files: list[Path]) -> tuple[str, list[float]]:
    classes, rows = average_oof(files)
    s = oof_scores(classes, rows)
    folds = [s["per_fold"][k]["top1"] for k in sorted(s["per_fold"])]
    print(f"| {name} | {100 * statistics.fmean(folds):.1f} ± {100 * statistics.stdev(folds):.1f} | "
          + " / ".join(f"{100 * f:.1f}" for f in folds) + f" | {100 * s['top1']:.1f} | {100 * s['macro_f1']:.1f} |")
    return name, folds


print("| model | CV top-1 mean ± std | per fold | pooled top-1 | pooled macro-F1 |")
print("| --- | --- | --- | --- | --- |")
results = {}
for name, folder in single.items():
    if (folder / "oof_predictions.csv").is_file():
        results[name] = row(name, [folder / "oof_predictions.csv"])[1]
for k in (3, 5):
    if len(seeds) >= k:
        results[f"ens{k}"] = row(f"c: OOF ensemble of refits, seeds {', '.join(map(str, seeds[:k]))}",
                                 [root / f"b_refit_s{s}" / "oof_predictions.csv" for s in seeds[:k]])[1]
singles = [v for k, v in results.items() if k.startswith("b:")]
if singles:
    means = [statistics.fmean(f) for f in singles]
    print(f"\nsingle refits over {len(singles)} seeds: mean of CV means {100 * statistics.fmean(means):.1f}, "
          f"spread (std of the CV means) {100 * (statistics.stdev(means) if len(means) > 1 else 0):.1f}")
a = results.get("a: 80 % + best epoch on inner 20 %")
if a and singles:
    print("paired per fold, refit seed 42 - (a): " + " / ".join(f"{100 * (b - x):+.1f}" for b, x in zip(singles[0], a)))
