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
exactly as for `train`) on a split index file whose val part is exactly the fold's held-out images.

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
import csv
import gc
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list

from checkbox_dist import train
from checkbox_dist.core import plots
from checkbox_dist.core.config import RUN_ONLY_KEYS, to_dict, to_flat_dict
from checkbox_dist.core.config_loader import load_config
from checkbox_dist.core.cv_results import read_oof
from checkbox_dist.core.distributed import process_state
from checkbox_dist.core.errors import Preempted, UserError
from checkbox_dist.core.files import atomic_write_csv, atomic_write_json
from checkbox_dist.core.runs import agreed_name, config_stem, timestamped
from checkbox_dist.data.build import data_catalog
from checkbox_dist.data.cache import load_decoded
from checkbox_dist.data.sources import Catalog
from checkbox_dist.data.split import (Item, apply_bad_rows, group_members, read_exclusions, stratified_split,
                                      write_split_lists)
from checkbox_dist.experiments.sweep import report_to_wandb
from checkbox_dist.infer.predictor import Predictor


def plan_folds(labels: list[int], k: int, seed: int, groups: list[str] | None = None) -> list[int]:
    """Fold index per item. Per class: a seeded shuffle dealt round-robin, each class starting where the
    previous one stopped, so fold sizes differ by at most one and class counts per fold by at most one.
    With `groups` (data with a group column): whole groups, per class of group (its most common label) in a
    seeded order, each to the fold with the fewest images so far, so no group straddles two folds."""
    if groups is not None and any(groups):
        return _plan_grouped_folds(labels, groups, k, seed)
    gen = torch.Generator().manual_seed(seed)
    fold = [-1] * len(labels)
    start = 0
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        for j, idx in enumerate(torch.randperm(len(members), generator=gen).tolist()):
            fold[members[idx]] = (start + j) % k
        start = (start + len(members)) % k
    return fold


def _plan_grouped_folds(labels: list[int], groups: list[str], k: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    members, label_of = group_members(labels, groups)
    if len(members) < k:
        raise UserError(f"the data has {len(members)} group(s), fewer than --folds {k}")
    fold, sizes = [-1] * len(labels), [0] * k
    for label in sorted(set(label_of.values())):
        names = [g for g in members if label_of[g] == label]
        for j in torch.randperm(len(names), generator=gen).tolist():
            target = min(range(k), key=lambda f: (sizes[f], f))
            for i in members[names[j]]:
                fold[i] = target
            sizes[target] += len(members[names[j]])
    return fold


def list_items(catalog: Catalog, exclude_file: str, k: int, on_bad_image: str = "error",
               skipped: list[str] | None = None) -> tuple[list[str], list[Item], list[str]]:
    """(classes, items, group per item) of the pool every fold draws from."""
    root = catalog.root
    if catalog.has_splits:
        raise UserError(f"{root} is split into train and val: cv needs one pool; for a folder point data.root at "
                        f"{root / 'train'} (or merge the two); for a manifest drop the split column")
    apply_bad_rows(catalog, on_bad_image, skipped if skipped is not None else [])
    excluded = read_exclusions(exclude_file)
    keep = [i for i, ref in enumerate(catalog.refs) if ref.key not in excluded]
    classes = catalog.classes
    items = [(catalog.refs[i], catalog.labels[i]) for i in keep]
    for i, c in enumerate(classes):
        n = sum(1 for _, y in items if y == i)
        if n < k:
            raise UserError(f"{root}: class '{c}' has {n} image(s) left, fewer than --folds {k}")
    return classes, items, [catalog.groups[i] for i in keep]


# cv.json keys newer than some CV folders on disk, with the value those runs had
_NEWER_SETTINGS = {"train_exclude": [], "inner_val": 0.0, "outer_history": False}


def _train_exclusions(root: Path, items: list[Item], path: str) -> set[str]:
    listed = read_exclusions(path, "--train-exclude")
    present = {ref.key for ref, _ in items}
    unknown = sorted(listed - present)
    if unknown:  # a typo or a list made for other data would otherwise exclude nothing, silently
        raise UserError(f"--train-exclude {path}: {len(unknown)} path(s) not in {root}, e.g. {unknown[0]}")
    return listed


def _comparable(cfg_dict: dict) -> dict:
    return {k: v for k, v in to_flat_dict(cfg_dict).items() if not k.startswith(RUN_ONLY_KEYS)}


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


@dataclass
class _Pool:
    """The images every fold draws from and the fold each one is held out in."""

    root: Path
    classes: list[str]
    items: list[Item]
    groups: list[str]  # per item; "" = its own group
    fold_of: list[int]
    untrained: set[str]  # --train-exclude: never in a training part, still held out and scored

    def held_out(self, i: int) -> list[Item]:
        return [it for it, f in zip(self.items, self.fold_of) if f == i]

    def training(self, i: int) -> tuple[list[Item], list[str]]:
        """Fold i's training part and its groups."""
        kept = [(it, g) for it, g, f in zip(self.items, self.groups, self.fold_of)
                if f != i and it[0].key not in self.untrained]
        return [it for it, _ in kept], [g for _, g in kept]


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
    pool = _pool(cfg, state, folds, seed, train_exclude)
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


def _pool(cfg, state, folds: int, seed: int, train_exclude: str) -> _Pool:
    # the folder every fold trains on: data.root, or the synthetic set, generated once
    catalog = data_catalog(cfg.data, state, say=print if state.is_main_process else (lambda *_: None))
    root = catalog.root
    classes, items, groups = list_items(catalog, cfg.data.exclude_file, folds, cfg.data.on_bad_image)
    fold_of = plan_folds([y for _, y in items], folds, seed, groups)
    return _Pool(root, classes, items, groups, fold_of, _train_exclusions(root, items, train_exclude))


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


def _write_fold_files(out: Path, settings: dict, pool: _Pool, only: list[int]) -> None:
    """OUT/cv.json and the split index file of each fold to run (main process only)."""
    folds = settings["folds"]
    (out / "folds").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "cv.json", settings)
    for i in only:
        meta = {"fold": i, "folds": folds, "seed": settings["seed"], "val_fraction": round(1 / folds, 6)}
        (training, groups), val = pool.training(i), pool.held_out(i)
        if settings["inner_val"]:
            training, val = _inner_split(training, groups, settings["inner_val"], settings["seed"] + i)
            meta["inner_val"] = settings["inner_val"]
        probe = pool.held_out(i) if settings["outer_history"] else None  # scored at every evaluation, never selects
        write_split_lists(out / "folds" / f"fold_{i}.json", pool.root, pool.classes, training, val, meta, probe)


def _inner_split(training: list[Item], groups: list[str], fraction: float, seed: int):
    """(inner training, inner validation) of a fold's training part; the outer fold stays out of both."""
    train_idx, val_idx = stratified_split([y for _, y in training], fraction, seed, groups)
    return [training[j] for j in train_idx], [training[j] for j in val_idx]


def _say_plan(say, pool: _Pool, settings: dict, out: Path, train_exclude: str) -> None:
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


def _write_fold_oof(run_dir: Path, i: int, pool: _Pool, cfg, device, tta: bool) -> None:
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
