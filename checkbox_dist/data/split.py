"""Split a catalog (data/sources.py: any format data.root may be) into train and val.

In order: a split index file (`data.split_file`, written by `checkbox-dist split` or `cv`) decides; else
the data's own split (ROOT/{train,val}/<class>/, a manifest's split column, a DatasetDict's splits; rows
without one are split as below and join them); else a seeded stratified split, per class. With a group
column the split is grouped: every sample of a group lands on the same side (near-duplicate crops of one
screenshot never straddle train and val), groups stratified by their most common class.
Class names are sorted (a ClassLabel's order for HF datasets) and stored in every checkpoint.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_write_json
from checkbox_dist.data.sources import Catalog, Ref, scan

Item = tuple[Ref, int]


@dataclass
class Split:
    classes: list[str]
    train: list[Item]
    val: list[Item]
    root: Path
    skipped: list[str]
    # A split file's optional `probe` part: images scored at every evaluation and recorded, never used to select
    # or stop (cv --outer-history puts the outer fold here); neither trained on nor part of val.
    probe: list[Item] = field(default_factory=list)


def stratified_split(labels: list[int], val_fraction: float, seed: int,
                     groups: list[str] | None = None) -> tuple[list[int], list[int]]:
    """Per class: shuffle with `seed`, send round(n * val_fraction) (at least 1) to val; 0 = none (a refit).
    With `groups` (a name per sample, "" = its own group): whole groups, see grouped_split."""
    if groups is not None and any(groups):
        return grouped_split(labels, groups, val_fraction, seed)
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        order = [members[j] for j in torch.randperm(len(members), generator=gen).tolist()]
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction))) if val_fraction > 0 else 0
        val += order[:n_val]
        train += order[n_val:]
    return sorted(train), sorted(val)


def group_members(labels: list[int], groups: list[str]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """({group: sample indices} in order of first appearance, {group: its most common label (ties: lowest)});
    a sample with no group ("") is a group of its own."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g if g else f"\0{i}", []).append(i)
    label_of = {g: min(Counter(labels[i] for i in m).items(), key=lambda kv: (-kv[1], kv[0]))[0]
                for g, m in members.items()}
    return members, label_of


def grouped_split(labels: list[int], groups: list[str], val_fraction: float, seed: int):
    """Per class of group: shuffle the groups with `seed`, move whole groups to val until it holds
    round(n * val_fraction) of that class's samples (at least one group, never every group)."""
    gen = torch.Generator().manual_seed(seed)
    members, label_of = group_members(labels, groups)
    train, val = [], []
    for label in sorted(set(label_of.values())):
        names = [g for g in members if label_of[g] == label]
        order = [names[j] for j in torch.randperm(len(names), generator=gen).tolist()]
        target = max(1, round(sum(len(members[g]) for g in names) * val_fraction)) if val_fraction > 0 else 0
        taken = 0
        for n, g in enumerate(order):
            to_val = taken < target and n < len(order) - 1
            (val if to_val else train).extend(members[g])
            taken += len(members[g]) if to_val else 0
    return sorted(train), sorted(val)


def read_exclusions(path: str, option: str = "data.exclude_file") -> set[str]:
    if not path:
        return set()
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{option} not found: {file}")
    lines = (line.split("#")[0].strip() for line in file.read_text().splitlines())
    return {line for line in lines if line}


def apply_bad_rows(catalog: Catalog, on_bad_image: str, skipped: list[str]) -> None:
    """The catalog's bad rows, like unreadable files: data.on_bad_image=error stops at the first, skip lists each."""
    if not catalog.bad:
        return
    if on_bad_image == "error":
        more = f"; {len(catalog.bad) - 1} more" if len(catalog.bad) > 1 else ""
        raise UserError(f"{catalog.bad[0]} (set data.on_bad_image=skip to leave such rows out{more})")
    skipped += catalog.bad


def build_split(root: Path, split_file: str = "", val_fraction: float = 0.2, seed: int = 42,
                exclude_file: str = "", on_bad_image: str = "error", catalog: Catalog | None = None) -> Split:
    """The train/val lists for `root` (its `catalog`, scanned now when not given), whatever its format."""
    catalog = catalog or scan(root)
    skipped: list[str] = []
    apply_bad_rows(catalog, on_bad_image, skipped)
    excluded = read_exclusions(exclude_file)
    if split_file:
        split = read_split_file(Path(split_file), catalog, excluded)
        split.skipped = skipped
        return split
    keep = [i for i, ref in enumerate(catalog.refs) if ref.key not in excluded]
    train = [i for i in keep if catalog.splits[i] == "train"]
    val = [i for i in keep if catalog.splits[i] == "val"]
    free = [i for i in keep if not catalog.splits[i]]
    if free:
        train_idx, val_idx = stratified_split([catalog.labels[i] for i in free], val_fraction, seed,
                                              [catalog.groups[i] for i in free])
        train, val = sorted(train + [free[j] for j in train_idx]), sorted(val + [free[j] for j in val_idx])
    items = lambda idx: [(catalog.refs[i], catalog.labels[i]) for i in idx]  # noqa: E731
    return Split(catalog.classes, items(train), items(val), root, skipped)


def write_split_file(root: Path, out: Path, val_fraction: float, seed: int) -> Split:
    split = build_split(root, "", val_fraction, seed)
    write_split_lists(out, root, split.classes, split.train, split.val, {"val_fraction": val_fraction, "seed": seed})
    return split


def write_split_lists(out: Path, root: Path, classes: list[str], train: list[Item],
                      val: list[Item], extra: dict | None = None, probe: list[Item] | None = None) -> None:
    """An index file (the `split` format) from explicit lists, e.g. one cross-validation fold; `probe`: images
    the run scores at every evaluation without selecting on them (Split.probe)."""
    rel = lambda items: [[ref.key, classes[y]] for ref, y in items]  # noqa: E731
    payload = {"format": 1, "root": str(root.resolve()), **(extra or {}),
               "classes": classes, "train": rel(train), "val": rel(val)}
    if probe:
        payload["probe"] = rel(probe)
    atomic_write_json(out, payload)


def read_split_file(path: Path, catalog: Catalog, excluded: set[str] = frozenset()) -> Split:
    """A split index file's lists, resolved against `catalog` (every key it lists must be there)."""
    if not path.is_file():
        raise UserError(f"data.split_file not found: {path}")
    try:
        payload = json.loads(path.read_text())
        classes = list(payload["classes"])
        index = {c: i for i, c in enumerate(classes)}
        sets = [[(key, index[c]) for key, c in payload.get(part, []) if key not in excluded]
                for part in ("train", "val", "probe")]
        if "train" not in payload or "val" not in payload:
            raise KeyError("train" if "train" not in payload else "val")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: not a split file written by `checkbox-dist split` ({err})") from None
    where = catalog.by_key
    for key, _ in sets[0] + sets[1] + sets[2]:
        if key not in where:
            raise UserError(f"{path}: lists {key}, which is not in data.root ({catalog.root})")
    resolve = lambda items: [(catalog.refs[where[key]], y) for key, y in items]  # noqa: E731
    return Split(classes, resolve(sets[0]), resolve(sets[1]), catalog.root, [], resolve(sets[2]))
