"""Find the images, split them, and serve uint8 batches: from device memory when they fit, else workers.

Layouts (class names are the folder names, sorted, and are stored in every checkpoint):
    ROOT/<class>/**/*.png                 one pool, split by `data.split_file` or a seeded stratified split
    ROOT/{train,val}/<class>/**/*.png     already split

Small datasets (the real one is 411 images = 62 MB as uint8 at 224 px) are decoded once, cached on
disk keyed by file contents + preprocessing, and kept as one uint8 tensor on the accelerator: a batch
is then an index lookup, with no DataLoader workers, no host-to-device copy and no decode per epoch.
Larger ones fall back to DataLoader workers that decode each file. Either way the loader Accelerate
prepares yields the same index batches, so sharding, resume and results are identical.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import BadImageError, PreprocessSpec, decode, list_images

CACHE_FORMAT = 1


@dataclass
class Split:
    classes: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    root: Path
    skipped: list[str]


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
    """Per class: shuffle with `seed`, send round(n * val_fraction) (at least 1) to val."""
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        order = [members[j] for j in torch.randperm(len(members), generator=gen).tolist()]
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
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
                      val: list[tuple[Path, int]], extra: dict | None = None) -> None:
    """An index file (the `split` format) from explicit lists, e.g. one cross-validation fold."""
    rel = lambda items: [[p.relative_to(root).as_posix(), classes[y]] for p, y in items]  # noqa: E731
    payload = {"format": 1, "root": str(root.resolve()), **(extra or {}),
               "classes": classes, "train": rel(train), "val": rel(val)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # pid: parallel writers never share a temp file
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, out)


def read_split_file(path: Path, root: Path, excluded: set[str] = frozenset()) -> Split:
    if not path.is_file():
        raise UserError(f"data.split_file not found: {path}")
    try:
        payload = json.loads(path.read_text())
        classes = list(payload["classes"])
        index = {c: i for i, c in enumerate(classes)}
        sets = [[(root / rel, index[c]) for rel, c in payload[part] if rel not in excluded]
                for part in ("train", "val")]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a split file written by `checkbox-dist split` ({err})") from None
    for file, _ in sets[0] + sets[1]:
        if not file.is_file():
            raise UserError(f"{path}: lists {file}, which does not exist under data.root")
    return Split(classes, sets[0], sets[1], root, [])


# ----------------------------------------------------------------------------------------------------
# Decoded images: one uint8 tensor per split, cached on disk.

def _cache_key(items: list[tuple[Path, int]], spec: PreprocessSpec) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, spec.to_dict()]).encode())
    for path, label in items:
        digest.update(f"{path.name}:{label}:".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def decode_all(items: list[tuple[Path, int]], spec: PreprocessSpec, on_bad_image: str,
               skipped: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Decode every file; returns images (N, C, H, W) uint8, labels (N,), and kept item indices."""
    images, labels, kept = [], [], []
    for i, (path, label) in enumerate(items):
        faults.point("decode")
        try:
            images.append(decode(path, spec))
        except BadImageError as err:
            if on_bad_image == "error":
                raise UserError(f"{err} (set data.on_bad_image=skip to leave such files out)") from None
            skipped.append(str(err))
            continue
        labels.append(label)
        kept.append(i)
    if not images:
        raise UserError("no readable images left after skipping bad files")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), kept


def load_decoded(items: list[tuple[Path, int]], spec: PreprocessSpec, on_bad_image: str, cache_dir: Path,
                 writer_is_main: bool, skipped: list[str]) -> dict:
    """Decoded split from the disk cache, or decoded now (and cached by the main process)."""
    key = _cache_key(items, spec)
    file = cache_dir / "decoded" / f"{key}-{on_bad_image}.pt"
    if file.is_file():
        try:
            cached = torch.load(file, weights_only=True)
            skipped += cached["skipped"]
            return cached
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt, never trusted
            pass
    local_skipped: list[str] = []
    images, labels, kept = decode_all(items, spec, on_bad_image, local_skipped)
    skipped += local_skipped
    decoded = {"images": images, "labels": labels, "kept": kept, "skipped": local_skipped}
    if writer_is_main:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
            torch.save(decoded, tmp)
            os.replace(tmp, file)
        except OSError:
            pass  # a read-only cache only costs the decode time next run
    return decoded


class TensorImages(Dataset):
    """Index dataset: yields sample indices; images live in `self.images` (possibly on the device)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, names: list[str]):
        self.images, self.labels, self.names = images, labels, names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> int:
        return index

    def lookup(self, batch):
        """Prepared-loader batch (indices on the device) -> (uint8 images, labels, indices)."""
        index = batch.to(self.images.device)
        return self.images[index], self.labels[index], batch


class FileImages(Dataset):
    """Decodes each file in a worker: for datasets too large to keep in memory."""

    def __init__(self, items: list[tuple[Path, int]], spec: PreprocessSpec):
        self.items, self.spec = items, spec
        self.names = [str(p) for p, _ in items]
        self.labels = torch.tensor([y for _, y in items], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        return decode(path, self.spec), label, index

    @staticmethod
    def lookup(batch):
        return batch[0], batch[1], batch[2]


class EpochSampler(Sampler[int]):
    """Seeded order per epoch: shuffled (or class-balanced, with replacement) as a pure function of
    (seed, epoch), so a resumed run and a run with any number of workers see the same order."""

    def __init__(self, labels: torch.Tensor, seed: int, shuffle: bool, balanced: bool = False):
        self.labels, self.seed, self.shuffle, self.balanced, self.epoch = labels, seed, shuffle, balanced, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(len(self.labels)))
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.balanced:
            counts = torch.bincount(self.labels).float()
            weights = (1.0 / counts)[self.labels]
            return iter(torch.multinomial(weights, len(self.labels), True, generator=gen).tolist())
        return iter(torch.randperm(len(self.labels), generator=gen).tolist())


def make_loader(dataset: Dataset, labels: torch.Tensor, batch_size: int, *, train: bool, seed: int,
                balanced: bool, num_workers: int) -> DataLoader:
    sampler = EpochSampler(labels, seed, shuffle=train, balanced=balanced and train)
    # drop_last on train: every step has the same shape (XLA compiles once) and the same batch size,
    # so gradient accumulation windows average equal-sized batches. Eval keeps every image.
    batches = BatchSampler(sampler, batch_size, drop_last=train and len(labels) >= batch_size)
    workers = num_workers if isinstance(dataset, FileImages) else 0
    # Own generator: each new iterator draws a worker seed, from the global RNG otherwise, so a resumed run
    # (one more iterator) would see other dropout masks than an uninterrupted one.
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                      pin_memory=torch.cuda.is_available(),  # lets index/image batches copy without a sync
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))


def class_counts(items: list[tuple[Path, int]], n_classes: int) -> list[int]:
    counts = [0] * n_classes
    for _, y in items:
        counts[y] += 1
    return counts


def channel_stats(items: list[tuple[Path, int]], spec: PreprocessSpec) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the preprocessed RGB (after compositing and resizing), in [0, 1]."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for path, _ in items:
        x = decode(path, spec)[:3].double() / 255.0
        total += x.sum(dim=(1, 2))
        total_sq += (x * x).sum(dim=(1, 2))
        pixels += x.shape[1] * x.shape[2]
    mean = total / pixels
    std = (total_sq / pixels - mean * mean).clamp_min(0).sqrt()
    return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]
