"""Find the images and split them: class folders, stratified seeded splits, split index files.

Layouts (class names are the folder names, sorted, and are stored in every checkpoint):
    ROOT/<class>/**/*.png                 one pool, split by `data.split_file` or a seeded stratified split
    ROOT/{train,val}/<class>/**/*.png     already split
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_write_json
from checkbox_dist.data.images import list_images


@dataclass
class Split:
    classes: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    root: Path
    skipped: list[str]
    # A split file's optional `probe` part: images scored at every evaluation and recorded, never used to select
    # or stop (cv --outer-history puts the outer fold here); neither trained on nor part of val.
    probe: list[tuple[Path, int]] = field(default_factory=list)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def scan_classes(folder: Path) -> dict[str, list[Path]]:
    """{class: files} for ROOT/<class>/*; an empty class folder is an error, not a silent drop."""
    if not folder.is_dir():
        raise UserError(f"data folder not found: {folder}")
    classes = {d.name: list_images(d) for d in _class_dirs(folder)}
    if not classes:
        raise UserError(f"{folder}: no class folders (expected {folder}/<class>/*.png)")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise UserError(f"{folder}: class folder '{empty[0]}' has no images")
    if len(classes) < 2:
        raise UserError(f"{folder}: found one class ('{next(iter(classes))}'); need at least 2")
    return classes


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per class: shuffle with `seed`, send round(n * val_fraction) (at least 1) to val; 0 = none (a refit)."""
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        order = [members[j] for j in torch.randperm(len(members), generator=gen).tolist()]
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction))) if val_fraction > 0 else 0
        val += order[:n_val]
        train += order[n_val:]
    return sorted(train), sorted(val)


def read_exclusions(path: str, option: str = "data.exclude_file") -> set[str]:
    if not path:
        return set()
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{option} not found: {file}")
    lines = (line.split("#")[0].strip() for line in file.read_text().splitlines())
    return {line for line in lines if line}


def build_split(root: Path, split_file: str = "", val_fraction: float = 0.2, seed: int = 42,
                exclude_file: str = "") -> Split:
    """The train/val file lists for `root`, whichever layout it has."""
    excluded = read_exclusions(exclude_file)
    keep = lambda p: p.relative_to(root).as_posix() not in excluded  # noqa: E731
    if (root / "train").is_dir() and (root / "val").is_dir() and not split_file:
        train_map, val_map = scan_classes(root / "train"), scan_classes(root / "val")
        classes = sorted(set(train_map) | set(val_map))
        missing = [c for c in classes if c not in train_map]
        if missing:
            raise UserError(f"{root}/train: class '{missing[0]}' is in val but has no train folder")
        index = {c: i for i, c in enumerate(classes)}
        train = [(p, index[c]) for c in classes for p in train_map.get(c, []) if keep(p)]
        val = [(p, index[c]) for c in classes for p in val_map.get(c, []) if keep(p)]
        return Split(classes, train, val, root, [])
    if split_file:
        return read_split_file(Path(split_file), root, excluded)
    files = scan_classes(root)
    classes = list(files)
    items = [(p, i) for i, c in enumerate(classes) for p in files[c] if keep(p)]
    train_idx, val_idx = stratified_split([y for _, y in items], val_fraction, seed)
    return Split(classes, [items[i] for i in train_idx], [items[i] for i in val_idx], root, [])


def write_split_file(root: Path, out: Path, val_fraction: float, seed: int) -> Split:
    split = build_split(root, "", val_fraction, seed)
    write_split_lists(out, root, split.classes, split.train, split.val, {"val_fraction": val_fraction, "seed": seed})
    return split


def write_split_lists(out: Path, root: Path, classes: list[str], train: list[tuple[Path, int]],
                      val: list[tuple[Path, int]], extra: dict | None = None,
                      probe: list[tuple[Path, int]] | None = None) -> None:
    """An index file (the `split` format) from explicit lists, e.g. one cross-validation fold; `probe`: images
    the run scores at every evaluation without selecting on them (Split.probe)."""
    rel = lambda items: [[p.relative_to(root).as_posix(), classes[y]] for p, y in items]  # noqa: E731
    payload = {"format": 1, "root": str(root.resolve()), **(extra or {}),
               "classes": classes, "train": rel(train), "val": rel(val)}
    if probe:
        payload["probe"] = rel(probe)
    atomic_write_json(out, payload)


def read_split_file(path: Path, root: Path, excluded: set[str] = frozenset()) -> Split:
    if not path.is_file():
        raise UserError(f"data.split_file not found: {path}")
    try:
        payload = json.loads(path.read_text())
        classes = list(payload["classes"])
        index = {c: i for i, c in enumerate(classes)}
        sets = [[(root / rel, index[c]) for rel, c in payload.get(part, []) if rel not in excluded]
                for part in ("train", "val", "probe")]
        if "train" not in payload or "val" not in payload:
            raise KeyError("train" if "train" not in payload else "val")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: not a split file written by `checkbox-dist split` ({err})") from None
    for file, _ in sets[0] + sets[1] + sets[2]:
        if not file.is_file():
            raise UserError(f"{path}: lists {file}, which does not exist under data.root")
    return Split(classes, sets[0], sets[1], root, [], sets[2])
