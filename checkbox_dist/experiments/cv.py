"""Stratified k-fold cross-validation: the number to optimise on a 411-image dataset, with its spread.

    checkbox-dist cv --config configs/checkbox_state_v2.yaml --folds 5 [section.key=value ...] [--out DIR]
    accelerate launch -m checkbox_dist cv --config C --folds 5      # every fold uses all the processes
    checkbox-dist cv --config C --folds 5 --out DIR --fold 3         # one fold only (parallel jobs, arrays);
                                                                    # rerun without --fold to summarise
    checkbox-dist cv --config C --folds 5 --train-exclude runs/audit/flagged.txt
                                    # suspected label errors out of training, still scored: comparable
    checkbox-dist cv --config C --folds 5 --inner-val 0.2 --selection best
                                    # nested: what `train` ships by default (best epoch on 20 % of the
                                    # fold's training part), scored on the outer fold
    checkbox-dist cv --config C --folds 3 --inner-val 0.2 --selection best --outer-history
                                    # and the outer fold scored at every evaluation: OUT/outer_history.json,
                                    # what benchmarks/best_rule.py replays every eval.best_rule on

Each fold is the normal training loop (`train.run`, in this process, so `accelerate launch` and Slurm work
exactly as for `train`) on a split index file whose val part is exactly the fold's held-out images. The folds
are planned in experiments/cv_folds.py; the out-of-fold summary is experiments/cv_summary.py.

`--selection final` (default) evaluates each fold once, after the whole schedule, and keeps that model:
the held-out fold never chooses anything, so the mean is an honest estimate of a fixed recipe. (It also
skips every per-epoch eval, plot and checkpoint: on a GPU those cost more than the 330-image epoch.)
`--selection best` keeps the config's best-epoch rule, which picks the epoch on the held-out fold itself
(optimistic), unless `--inner-val F` holds out a stratified share F of each fold's training part as the
run's validation set: the epoch (and the temperature) is then chosen on that inner set and the outer fold
only scores, a nested estimate of a model trained like `train` with data.val_fraction=F. Without it, `final`
estimates a refit (data.val_fraction=0): all of the training part, the fixed schedule, the final weights.
`--outer-history` (with --inner-val and --selection best) also lists the outer fold as the fold's split file's
`probe` part: the run scores it at every evaluation, next to the inner-val metrics in metrics.jsonl, and never
selects or stops on it; OUT/outer_history.json collects those rows, so that any best-epoch rule can be applied
afterwards to the inner-val history and scored on the outer fold (benchmarks/best_rule.py).

OUT/
    cv.json                 settings of this CV run; a rerun into OUT must match (completed folds are kept)
    folds/fold_<i>.json     split index of fold i (the `checkbox-dist split` format)
    fold_<i>/               the training run of fold i; fold_<i>/oof.csv its held-out predictions
    oof_predictions.csv     every image exactly once: path, given, predicted, fold, p_<class> (temperature applied)
    cv_summary.json         per-fold top-1, macro-F1, per-class F1, confusion; mean and std over folds; pooled
    outer_history.json      --outer-history: per fold, per evaluated epoch, inner-val and outer-fold metrics
    confusion_oof.png       pooled out-of-fold confusion matrix

An OUT/STOP file (slurm/sweep.sh's stop request) stops the run before the next fold with exit 75; remove it
and rerun to continue.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import time
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list

from checkbox_dist import train
from checkbox_dist.core.config import RUN_ONLY_KEYS, to_dict, to_flat_dict
from checkbox_dist.core.config_loader import load_config
from checkbox_dist.core.distributed import process_state
from checkbox_dist.core.errors import Preempted, UserError
from checkbox_dist.core.files import atomic_write_csv, atomic_write_json
from checkbox_dist.core.runs import agreed_name, config_stem, timestamped
from checkbox_dist.data.cache import load_decoded
from checkbox_dist.data.split import Item, write_split_lists
from checkbox_dist.experiments.cv_folds import FoldPool, fold_pool, inner_split
from checkbox_dist.experiments.cv_summary import format_table, summarise
from checkbox_dist.experiments.sweep import report_to_wandb
from checkbox_dist.infer.predictor import Predictor

# cv.json keys newer than some CV folders on disk, with the value those runs had
_NEWER_SETTINGS = {"train_exclude": [], "inner_val": 0.0, "outer_history": False}


def _comparable(cfg_dict: dict) -> dict:
    return {k: v for k, v in to_flat_dict(cfg_dict).items() if not k.startswith(RUN_ONLY_KEYS)}


def predict_fold(best_dir: Path, items: list[Item], cfg, device, tta: bool):
    """Calibrated probabilities of the fold's held-out images from its best checkpoint."""
    predictor = Predictor([best_dir], device=str(device), tta=tta)
    skipped: list[str] = []
    # Same items and spec as the fold's val set: a hit in the decoded-image cache training wrote.
    decoded = load_decoded(items, predictor.spec, cfg.data.on_bad_image, Path(cfg.data.cache_dir).expanduser(),
                           True, skipped)
    images, bs = decoded["images"], cfg.data.eval_batch_size
    probs = torch.cat([predictor.predict_tensors([images[j:j + bs]]) for j in range(0, len(images), bs)])
    return predictor.classes, [items[i] for i in decoded["kept"]], probs


def run_cv(cfg, config_path: str | None, folds: int, out: Path, seed: int, selection: str = "final",
           tta: bool = False, only: list[int] | None = None, say=print, train_exclude: str = "",
           inner_val: float = 0.0, outer_history: bool = False) -> dict | None:
    """Train the folds not done yet (all, or `only`), then summarise if every fold is done.

    `train_exclude`: a file of paths (the data.exclude_file format, e.g. audit's flagged.txt) left out of
    every fold's training part but still in its held-out part, so the score counts all images and stays
    comparable with a run without it; data.exclude_file instead removes images from both.
    `inner_val`: share of each fold's training part held out (stratified, seeded) as the run's validation set.
    `outer_history`: the outer fold is also scored at every evaluation (recorded, never selecting).
    Raises Preempted when OUT/STOP exists before a fold (or a fold's training is preempted)."""
    state = process_state()
    if not 0.0 <= inner_val < 1.0:
        raise UserError(f"--inner-val must be in [0, 1), got {inner_val}")
    if outer_history and not (inner_val and selection == "best"):
        raise UserError("--outer-history needs --inner-val F and --selection best: the outer fold is scored at each "
                        "evaluation of a run that selects on its inner validation set")
    cfg = _cv_config(cfg, selection)
    pool = fold_pool(cfg, state, folds, seed, train_exclude)
    only = _folds_to_run(only, folds)
    settings = {"config": config_path, "folds": folds, "seed": seed, "selection": selection, "tta": tta,
                "root": str(pool.root.resolve()), "exclude_file": cfg.data.exclude_file, "n_images": len(pool.items),
                "train_exclude": sorted(pool.untrained), "inner_val": inner_val, "outer_history": outer_history,
                "classes": pool.classes, "resolved_config": to_dict(cfg)}
    _check_rerun(out, settings)
    if state.is_main_process:
        _write_fold_files(out, settings, pool, only)
    state.wait_for_everyone()
    _say_plan(say, pool, settings, out, train_exclude)
    for i in only:
        _stop_if_requested(out, i, state, say)
        if (out / f"fold_{i}" / "oof.csv").is_file():
            say(f"fold {i}: done before, kept")
            continue
        _train_fold(cfg, config_path, out, i, folds, pool.root, say)
        if state.is_main_process:
            _write_fold_oof(out / f"fold_{i}", i, pool, cfg, state.device, tta)
        state.wait_for_everyone()
        _free_memory()
    return _summarise_if_complete(out, folds, state, say)


def _cv_config(cfg, selection: str):
    """A copy of `cfg` for every fold: --selection final evaluates once, at the end; under a W&B sweep
    agent the CV score, not each fold, goes to the agent's run."""
    cfg = copy.deepcopy(cfg)
    if selection == "final":
        cfg.eval.every_epochs = cfg.train.epochs
        cfg.train.early_stopping_patience = 0
    if os.environ.get("WANDB_SWEEP_ID") and "wandb" in cfg.tracking.backends:
        cfg.tracking.backends = [b for b in cfg.tracking.backends if b != "wandb"]  # the agent's run gets the CV score
    return cfg


def _folds_to_run(only: list[int] | None, folds: int) -> list[int]:
    only = sorted(set(only)) if only else list(range(folds))
    if any(not 0 <= i < folds for i in only):
        raise UserError(f"--fold: fold numbers run from 0 to {folds - 1}, got {only}")
    return only


def _check_rerun(out: Path, settings: dict) -> None:
    """A rerun into an existing CV folder must have the same settings and config (completed folds are kept)."""
    cv_file = out / "cv.json"
    if not cv_file.is_file():
        return
    old = json.loads(cv_file.read_text())
    for key in ("folds", "seed", "selection", "tta", "root", "n_images", "train_exclude", "inner_val",
                "outer_history"):
        was = old.get(key, _NEWER_SETTINGS.get(key))
        if was != settings[key]:
            shown = lambda v: f"{len(v)} paths" if isinstance(v, list) else v  # noqa: E731
            raise UserError(f"{out} holds a CV run with {key}={shown(was)} (now {shown(settings[key])}): "
                            f"use another --out")
    changed = [k for k, v in _comparable(settings["resolved_config"]).items()
               if _comparable(old["resolved_config"]).get(k) != v]
    if changed:
        raise UserError(f"{out} holds a CV run with another config ({changed[0]} differs): use another --out")


def _write_fold_files(out: Path, settings: dict, pool: FoldPool, only: list[int]) -> None:
    """OUT/cv.json and the split index file of each fold to run (main process only)."""
    folds = settings["folds"]
    (out / "folds").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "cv.json", settings)
    for i in only:
        meta = {"fold": i, "folds": folds, "seed": settings["seed"], "val_fraction": round(1 / folds, 6)}
        (training, groups), val = pool.training(i), pool.held_out(i)
        if settings["inner_val"]:
            training, val = inner_split(training, groups, settings["inner_val"], settings["seed"] + i)
            meta["inner_val"] = settings["inner_val"]
        probe = pool.held_out(i) if settings["outer_history"] else None  # scored at every evaluation, never selects
        write_split_lists(out / "folds" / f"fold_{i}.json", pool.root, pool.classes, training, val, meta, probe)


def _say_plan(say, pool: FoldPool, settings: dict, out: Path, train_exclude: str) -> None:
    counts = ", ".join(f"{c} {sum(1 for _, y in pool.items if y == i)}" for i, c in enumerate(pool.classes))
    say(f"cv: {len(pool.items)} images in {pool.root} ({counts}) "
        f"| {settings['folds']} folds, seed {settings['seed']}, selection {settings['selection']}"
        + (f" on an inner {settings['inner_val']:.0%} of each training part" if settings["inner_val"] else "")
        + f" | out {out}")
    if pool.untrained:
        say(f"cv: {len(pool.untrained)} images left out of every fold's training ({train_exclude}), still scored")


def _stop_if_requested(out: Path, i: int, state, say) -> None:
    """slurm/sweep.sh's stop request for a whole trial (OUT/STOP), seen between folds: raise Preempted."""
    stop = [(out / "STOP").exists()]
    if state.num_processes > 1:
        broadcast_object_list(stop)  # every process must take the same branch
    if stop[0]:
        message = f"cv: {out / 'STOP'} exists: stopping before fold {i}; remove it and rerun to continue"
        say(message)
        raise Preempted(message)


def _train_fold(cfg, config_path: str | None, out: Path, i: int, folds: int, root: Path, say) -> None:
    """Fold i's training run into OUT/fold_<i> (an interrupted one resumes; a finished one is kept)."""
    run_dir = out / f"fold_{i}"
    if (run_dir / "summary.json").is_file():
        return
    fold_cfg = copy.deepcopy(cfg)
    fold_cfg.data.root = str(root)
    fold_cfg.data.split_file = str(out / "folds" / f"fold_{i}.json")
    fold_cfg.train.output_dir = str(run_dir)
    fold_cfg.train.resume = ""
    if fold_cfg.tracking.backends and not fold_cfg.tracking.run_name:
        fold_cfg.tracking.run_name = f"{out.name}-fold{i}"
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        fold_cfg.train.resume = "auto"  # an interrupted fold continues where it stopped
    say(f"---- fold {i + 1}/{folds}: training into {run_dir}")
    started = time.perf_counter()
    train.run(fold_cfg, config_path)
    say(f"fold {i}: trained in {time.perf_counter() - started:.0f}s")


def _write_fold_oof(run_dir: Path, i: int, pool: FoldPool, cfg, device, tta: bool) -> None:
    """RUN_DIR/oof.csv: fold i's held-out predictions from its best checkpoint (main process only)."""
    classes = pool.classes
    fold_classes, kept, probs = predict_fold(run_dir / "checkpoints" / "best", pool.held_out(i), cfg, device, tta)
    if fold_classes != classes:
        raise UserError(f"{run_dir}: trained on classes {fold_classes}, data has {classes}")
    rows = [[ref.key, classes[y], classes[int(pr.argmax())], i,
             *[f"{v:.6f}" for v in pr.tolist()]] for (ref, y), pr in zip(kept, probs)]
    atomic_write_csv(run_dir / "oof.csv", ["path", "given", "predicted", "fold", *[f"p_{c}" for c in classes]], rows)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _summarise_if_complete(out: Path, folds: int, state, say) -> dict | None:
    missing = [i for i in range(folds) if not (out / f"fold_{i}" / "oof.csv").is_file()]
    if missing:
        say(f"cv: folds {missing} not done yet; rerun without --fold (or with those folds) to finish and summarise")
        return None
    summary = summarise(out, folds) if state.is_main_process else None
    state.wait_for_everyone()
    return summary


def run(args) -> int:
    if args.folds < 2:
        raise UserError(f"--folds must be at least 2, got {args.folds}")
    cfg = load_config(args.config, args.overrides)
    state = process_state()
    # one folder for every process, whatever their clocks say
    out = agreed_name(args.out or timestamped(f"cv-{config_stem(args.config)}"), state.num_processes)
    seed = cfg.data.split_seed if args.seed is None else args.seed
    say = print if state.is_main_process else (lambda *_: None)
    summary = run_cv(cfg, args.config, args.folds, out, seed, args.selection, args.tta, args.fold, say,
                     args.train_exclude, args.inner_val, args.outer_history)
    if summary is None:
        return 0
    say(format_table(summary))
    say(f"cv top-1 {summary['top1']['mean']:.4f} ± {summary['top1']['std']:.4f} | macro-F1 "
        f"{summary['macro_f1']['mean']:.4f} ± {summary['macro_f1']['std']:.4f} over {args.folds} folds "
        f"({summary['n_images']} images) | wrote {out / 'cv_summary.json'} and {out / 'oof_predictions.csv'}")
    if os.environ.get("WANDB_SWEEP_ID") and state.is_main_process:
        report_to_wandb(summary)
    return 0
