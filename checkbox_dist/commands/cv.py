"""`checkbox-dist cv`: stratified k-fold cross-validation of a config."""

from __future__ import annotations

from checkbox_dist.commands import add_command, add_config_args

EXAMPLES = """examples:
  checkbox-dist cv --config checkbox_state_v2 data.root=/data/crops --folds 5 [--out DIR]
  accelerate launch -m checkbox_dist cv --config C --folds 5      # every fold uses all the processes
  checkbox-dist cv --config C --folds 5 --out DIR --fold 3         # one fold only (parallel jobs, arrays);
                                                                  # rerun without --fold to summarise
  checkbox-dist cv --config C --folds 5 --train-exclude runs/audit/flagged.txt
                                  # suspected label errors out of training, still scored: comparable
  checkbox-dist cv --config C --folds 3 --inner-val 0.2 --selection best --outer-history
                                  # the outer fold scored at every epoch too: OUT/outer_history.json, which
                                  # `python benchmarks/best_rule.py OUT` replays every eval.best_rule on"""
DETAILS = """Each fold is the normal training loop on a split whose val part is exactly the fold's held-out images.
`--selection final` (default) evaluates each fold once, after the whole schedule: the held-out fold never
chooses anything, so the mean is an honest estimate of a fixed recipe. `--selection best` keeps the
config's best-epoch rule, which picks the epoch on the held-out fold itself (optimistic).

OUT/ holds cv.json (settings; a rerun into OUT must match, completed folds are kept), folds/fold_<i>.json,
fold_<i>/ (each fold's run), oof_predictions.csv (every image once, with its out-of-fold probabilities),
cv_summary.json (per fold, mean and std, pooled) and confusion_oof.png. An OUT/STOP file stops the run
before the next fold with exit 75; remove it and rerun to continue."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "cv", "k-fold cross-validation: mean ± std, out-of-fold predictions",
                    EXAMPLES, DETAILS)
    add_config_args(p, note="data.root is the pool ROOT/<class>/*")
    p.add_argument("--folds", type=int, default=5, help="number of folds (at least 2)")
    p.add_argument("--seed", type=int, default=None, help="fold assignment seed (default: data.split_seed)")
    p.add_argument("--out", "--output", dest="out", default="", help="CV folder (default runs/cv-<config>-<time>)")
    p.add_argument("--fold", type=int, action="append", default=None,
                   help="run only this fold (repeatable); the summary is written once all folds are done")
    p.add_argument("--selection", choices=["final", "best"], default="final",
                   help="final: the model after the full schedule (honest); best: best epoch on the held-out fold")
    p.add_argument("--tta", action="store_true", help="out-of-fold predictions averaged with the mirror image")
    p.add_argument("--train-exclude", default="", metavar="FILE",
                   help="paths (audit's flagged.txt) left out of training but still scored in their fold")
    p.add_argument("--inner-val", type=float, default=0.0, metavar="F",
                   help="hold out F of each fold's training part as the run's val set (nested: with --selection "
                        "best, the epoch is chosen there and the outer fold only scores)")
    p.add_argument("--outer-history", action="store_true",
                   help="with --inner-val and --selection best: score the outer fold at every evaluation too "
                        "(recorded, never used to select) into OUT/outer_history.json, for benchmarks/best_rule.py")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.experiments import cv

    return cv.run(args)
