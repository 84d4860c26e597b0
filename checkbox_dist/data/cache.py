"""Decoded images: every file of a split decoded and resized once, cached on disk as one uint8 tensor.

The cache file is keyed by the files' contents, their labels and the preprocessing, so a changed image
or setting is a new key, never a stale hit; a damaged cache file is rebuilt, never trusted. Small
datasets (411 images at 224 px are 62 MB as uint8) are then held on the accelerator by data/build.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_path
from checkbox_dist.data.images import BadImageError, PreprocessSpec, decode

CACHE_FORMAT = 1


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
            with atomic_path(file) as tmp:
                torch.save(decoded, tmp)
        except OSError:
            pass  # a read-only cache only costs the decode time next run
    return decoded


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
