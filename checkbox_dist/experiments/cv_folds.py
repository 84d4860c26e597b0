"""Fold planning for `checkbox-dist cv` (experiments/cv.py): the pool of images every fold draws from, the fold
each image is held out in, and the inner validation split of a fold's training part (--inner-val).

Folds are stratified by class, or, for data with a group column, made of whole groups; the seed decides the
shuffle, so a rerun into the same CV folder plans the same folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from checkbox_dist.core.errors import UserError
from checkbox_dist.data.build import data_catalog
from checkbox_dist.data.sources import Catalog
from checkbox_dist.data.split import Item, apply_bad_rows, group_members, read_exclusions, stratified_split


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


def _train_exclusions(root: Path, items: list[Item], path: str) -> set[str]:
    listed = read_exclusions(path, "--train-exclude")
    present = {ref.key for ref, _ in items}
    unknown = sorted(listed - present)
    if unknown:  # a typo or a list made for other data would otherwise exclude nothing, silently
        raise UserError(f"--train-exclude {path}: {len(unknown)} path(s) not in {root}, e.g. {unknown[0]}")
    return listed


@dataclass
class FoldPool:
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


def fold_pool(cfg, state, folds: int, seed: int, train_exclude: str) -> FoldPool:
    # the folder every fold trains on: data.root, or the synthetic set, generated once
    catalog = data_catalog(cfg.data, state, say=print if state.is_main_process else (lambda *_: None))
    root = catalog.root
    classes, items, groups = list_items(catalog, cfg.data.exclude_file, folds, cfg.data.on_bad_image)
    fold_of = plan_folds([y for _, y in items], folds, seed, groups)
    return FoldPool(root, classes, items, groups, fold_of, _train_exclusions(root, items, train_exclude))


def inner_split(training: list[Item], groups: list[str], fraction: float, seed: int):
    """(inner training, inner validation) of a fold's training part; the outer fold stays out of both."""
    train_idx, val_idx = stratified_split([y for _, y in training], fraction, seed, groups)
    return [training[j] for j in train_idx], [training[j] for j in val_idx]
