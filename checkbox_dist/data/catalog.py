"""A sample of any data.root format (`Ref`: a stable key and how to get its encoded bytes) and a root's list of
them (`Catalog`). The readers that build catalogs are data/sources.py (detection, class folders, the index),
data/manifests.py (CSV / JSON Lines / Parquet manifests, saved Hugging Face datasets) and data/shards.py (tar
shards); every ref's bytes go through data/images.py `decode`, the one decoder (budgets, hostile images).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import BadImageError

SPLITS = ("train", "val")
EXTRA_HINT = 'pip install "checkbox_dist[formats]"'


@dataclass(frozen=True, slots=True)
class Ref:
    """One encoded image: a whole file, a byte range of a tar shard, or a row of a saved HF dataset.

    Small by design (a root may list millions): its key and a record of slots; `base` is one object shared by
    every ref of a folder, shard or dataset, and a whole file's Path is made only when it is read."""

    key: str  # stable, relative to the root: what split files, exclusions and out-of-fold tables name
    base: Path  # a whole file: the folder `key` is relative to; the tar shard; the HF dataset folder
    offset: int = -1  # tar: first byte of the member's data; -1: the whole file
    size: int = 0  # tar: the member's length
    row: int = -1  # hf: the row in `part`
    part: str = ""  # hf: the DatasetDict split ("" for a single Dataset)

    @property
    def path(self) -> Path:
        """The image file (base / key); the tar shard; the HF dataset folder."""
        return self.base / self.key if self.offset < 0 and self.row < 0 else self.base

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    def __str__(self) -> str:
        if self.offset >= 0:
            return f"{self.path}:{PurePosixPath(self.key).name}"
        if self.row >= 0:
            return f"{self.path}[{self.key}]"
        return str(self.path)

    def encoded(self) -> Path | bytes:
        """The file itself (decoded from disk), or the sample's bytes."""
        if self.offset >= 0:
            faults.point(faults.READ_SITE + self.path.name)  # test-only hook (core/faults.py): a dict lookup
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(self.size)
            if len(data) != self.size:
                raise BadImageError(f"{self}: shard is shorter than its index says (rebuild: delete the index)")
            return data
        if self.row >= 0:
            return hf_bytes(self)
        return self.path

    def read_bytes(self) -> bytes:
        data = self.encoded()
        return data.read_bytes() if isinstance(data, Path) else data


@dataclass
class Catalog:
    """Every sample of a root, in a stable order (the scan's), with classes sorted by name."""

    root: Path
    kind: str
    classes: list[str]
    refs: list[Ref]
    labels: list[int]
    splits: list[str]  # "" (none), "train" or "val" per sample
    groups: list[str]  # "" = the sample is its own group
    bad: list[str] = field(default_factory=list)  # one line per bad row
    scanned: bool = True  # False: read from the index

    @property
    def has_splits(self) -> bool:
        return any(self.splits)

    @property
    def has_groups(self) -> bool:
        return any(self.groups)

    @functools.cached_property
    def by_key(self) -> dict[str, int]:
        return {ref.key: i for i, ref in enumerate(self.refs)}


def make_catalog(root: Path, kind: str, rows: list[tuple[Ref, str, str, str]], bad: list[str],
                 classes: list[str] | None = None) -> Catalog:
    """From (ref, label name, split, group) rows; classes sorted by name unless given (a ClassLabel's order)."""
    classes = classes if classes is not None else sorted({label for _, label, _, _ in rows})
    if not rows:
        raise UserError(f"{root}: no usable samples" + (f" (first bad row: {bad[0]})" if bad else ""))
    if len(classes) < 2:
        raise UserError(f"{root}: found one class ('{classes[0]}'); need at least 2")
    index = {c: i for i, c in enumerate(classes)}
    return Catalog(root, kind, classes, [r[0] for r in rows], [index[r[1]] for r in rows],
                   [r[2] for r in rows], [r[3] for r in rows], bad)


# ---------------------------------------------------------------- the rows of a saved HF dataset (Ref.encoded)


def optional(module: str, what: str):
    """An optional dependency (the `formats` extra), or one UserError line naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} need the optional dependencies: {EXTRA_HINT}") from None


@functools.lru_cache(maxsize=8)
def hf_open(path: Path, part: str):
    """The dataset (memory-mapped Arrow), once per process, with images as undecoded bytes."""
    datasets = optional("datasets", "Hugging Face datasets")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as err:
        raise UserError(f"{path}: not a dataset saved by save_to_disk ({' '.join(str(err).split())[:120]})") from None
    ds = loaded[part] if part else loaded
    image_col, label_col = _hf_columns(ds, path)
    return ds.cast_column(image_col, datasets.Image(decode=False)), image_col, label_col


def _hf_columns(ds, path: Path) -> tuple[str, str]:
    datasets = optional("datasets", "Hugging Face datasets")
    features = ds.features
    images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
    labels = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if not images or not labels:
        raise UserError(f"{path}: needs an Image column and a ClassLabel column (has: {dict(features)})")
    pick = lambda found, name: name if name in found else found[0]  # noqa: E731
    return pick(images, "image"), pick(labels, "label")


def hf_bytes(ref: Ref) -> bytes:
    ds, image_col, _ = hf_open(ref.path, ref.part)
    value = ds[ref.row][image_col]
    data = (value or {}).get("bytes")
    if data is None and (value or {}).get("path") and Path(value["path"]).is_file():
        data = Path(value["path"]).read_bytes()
    if not data:
        raise BadImageError(f"{ref}: no image bytes in the row")
    return data
