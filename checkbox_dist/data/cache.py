"""Decoded images: every file of a split decoded and resized once, cached on disk as one uint8 file that
the processes of a host memory-map.

The cache file is keyed by the files' contents, their labels and the preprocessing, so a changed image
or setting is a new key, never a stale hit (the key reads every file: once per host, by its local main
process, which hands it to the others); a damaged cache file is rebuilt, never trusted. Its layout:
the images as raw uint8 (N, C, H, W), then a JSON trailer (shape, labels, kept indices, skipped files),
its length (8 bytes, little-endian) and a magic. The local main process decodes straight into the file
(one image in memory at a time) and renames it into place; every process of the host then maps the
image bytes read-only-in-practice (`torch.from_file(shared=False)`, a private copy-on-write mapping that
nothing writes): the host holds ONE copy, in the page cache, whatever its number of processes. On a CPU
run the mapped tensor is the "device-resident" set itself; on an accelerator data/build.py copies it to
each process's device.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_path
from checkbox_dist.data.images import BadImageError, PreprocessSpec, decode

CACHE_FORMAT = 2
MAGIC = b"CBDUINT8"
KEY_BYTES = 16  # of cache_key's digest
_TAIL = struct.Struct("<Q8s")  # trailer length, magic


def cache_key(items: list[tuple[Path, int]], spec: PreprocessSpec) -> str:
    """The key of the decoded split `items` under `spec`: KEY_BYTES as hex digits, a digest of the preprocessing
    and of every file's name, label and the sha256 of its bytes, so a changed image (edited in place too) or
    setting is a new key. It reads every file: data/build.py has each host's local main process compute it once
    and hand it to the other processes of its host."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, spec.to_dict()]).encode())
    for path, label in items:
        faults.point("cache_key")
        digest.update(f"{path.name}:{label}:".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:2 * KEY_BYTES]


def cache_file(items: list[tuple[Path, int]], spec: PreprocessSpec, on_bad_image: str, cache_dir: Path,
               key: str | None = None) -> Path:
    """Where the decoded split `items` is cached; `key`: its cache_key when already known (else computed)."""
    return Path(cache_dir) / "decoded" / f"{key or cache_key(items, spec)}-{on_bad_image}.u8"


def _decoded(items: list[tuple[Path, int]], spec: PreprocessSpec, on_bad_image: str,
             skipped: list[str]) -> Iterator[tuple[int, torch.Tensor]]:
    """(item index, uint8 image) for every readable file, in order; a bad one raises or is noted in `skipped`."""
    for i, (path, _) in enumerate(items):
        faults.point("decode")
        try:
            image = decode(path, spec)
        except BadImageError as err:
            if on_bad_image == "error":
                raise UserError(f"{err} (set data.on_bad_image=skip to leave such files out)") from None
            skipped.append(str(err))
            continue
        yield i, image


def decode_all(items: list[tuple[Path, int]], spec: PreprocessSpec, on_bad_image: str,
               skipped: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Decode every file into memory; returns images (N, C, H, W) uint8, labels (N,), and kept item indices."""
    kept, images = [], []
    for i, image in _decoded(items, spec, on_bad_image, skipped):
        kept.append(i)
        images.append(image)
    if not images:
        raise UserError("no readable images left after skipping bad files")
    return torch.stack(images), torch.tensor([items[i][1] for i in kept], dtype=torch.long), kept


def write_cache(file: Path, items: list[tuple[Path, int]], spec: PreprocessSpec, on_bad_image: str) -> None:
    """Decode `items` straight into the cache file (atomically: a reader sees the whole file or none)."""
    kept, skipped, shape = [], [], None
    with atomic_path(file) as tmp, open(tmp, "wb") as out:
        for i, image in _decoded(items, spec, on_bad_image, skipped):
            shape = shape or list(image.shape)
            out.write(image.contiguous().numpy().tobytes())
            kept.append(i)
        if not kept:
            raise UserError("no readable images left after skipping bad files")
        trailer = json.dumps({"format": CACHE_FORMAT, "shape": [len(kept), *shape], "kept": kept,
                              "labels": [items[i][1] for i in kept], "skipped": skipped}).encode()
        out.write(trailer + _TAIL.pack(len(trailer), MAGIC))


def map_cache(file: Path) -> dict | None:
    """The cached split, its images memory-mapped (shared with every process of the host that maps the same
    file); None when the file is missing or not a whole cache file of this format."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            f.seek(size - _TAIL.size)
            length, magic = _TAIL.unpack(f.read(_TAIL.size))
            if magic != MAGIC or length > size - _TAIL.size:
                return None
            f.seek(size - _TAIL.size - length)
            meta = json.loads(f.read(length))
        shape = meta["shape"]
        n_bytes = shape[0] * shape[1] * shape[2] * shape[3]
        if meta["format"] != CACHE_FORMAT or n_bytes + length + _TAIL.size != size or len(meta["kept"]) != shape[0]:
            return None
        images = torch.from_file(str(file), shared=False, size=n_bytes, dtype=torch.uint8).view(*shape)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error, RuntimeError):
        return None  # a damaged cache file is rebuilt, never trusted
    return {"images": images, "labels": torch.tensor(meta["labels"], dtype=torch.long), "kept": meta["kept"],
            "skipped": meta["skipped"], "file": file}


def load_decoded(items: list[tuple[Path, int]], spec: PreprocessSpec, on_bad_image: str, cache_dir: Path,
                 writer_is_main: bool, skipped: list[str], key: str | None = None) -> dict:
    """Decoded split, memory-mapped from the host's cache file (decoded into it now by the local main process,
    `writer_is_main`); decoded into this process's memory when the cache cannot be written or read. `key`: the
    split's cache_key when known (a process given it reads no image file unless it decodes into memory).
    Returns {"images", "labels", "kept", "skipped", "file" (None when in memory)}."""
    file = cache_file(items, spec, on_bad_image, Path(cache_dir), key)
    cached = map_cache(file)
    if cached is None and writer_is_main:
        try:
            write_cache(file, items, spec, on_bad_image)
        except OSError:
            pass  # a read-only or full cache only costs memory (one copy per process) and the decode next run
        cached = map_cache(file)
    if cached is not None:
        skipped += cached["skipped"]
        return cached
    local_skipped: list[str] = []
    images, labels, kept = decode_all(items, spec, on_bad_image, local_skipped)
    skipped += local_skipped
    return {"images": images, "labels": labels, "kept": kept, "skipped": local_skipped, "file": None}


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
