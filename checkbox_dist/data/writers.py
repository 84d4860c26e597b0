"""Write labelled images as the data.root formats sources.py reads: the inverse of its readers.

    write_manifest("csv" | "jsonl" | "parquet", rows, out)   rows: dicts with path (relative to out's folder),
                                                              label[, split][, group]
    write_hf(images, classes, out)                            a `datasets.Dataset` (image bytes + ClassLabel
                                                              label), save_to_disk
    write_shards(images, out, per_shard)                      WebDataset-style shards: KEY.png + KEY.cls per
                                                              sample, KEY = <class>_<stem>
    convert(folder, kind, out)                                a class folder (ROOT/<class>/*) in format `kind`

`images` are files in class folders (the label is the parent folder's name). The layouts are docs/DATA.md's.
Used by `bench-data --formats` and by the tests that build each format; the writers are what a user's own
conversion script would do, not a second reader.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
from pathlib import Path

from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_folder, atomic_path
from checkbox_dist.data.sources import FORMATS, scan_classes

MANIFESTS = ("csv", "jsonl", "parquet")


def write_manifest(kind: str, rows: list[dict], out: Path) -> Path:
    """`rows` as a manifest of format `kind` at `out` (the columns: the first row's keys)."""
    if kind == "csv":
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif kind == "jsonl":
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), out)
    else:
        raise UserError(f"write_manifest: {kind!r} is not one of {', '.join(MANIFESTS)}")
    return out


def manifest_rows(images: list[Path], base: Path, folder: Path) -> list[dict]:
    """One row per image of `folder` (which `base` holds): its path relative to `base` (the manifest's folder) and
    its class folder's name."""
    prefix = folder.absolute().relative_to(base.absolute())
    return [{"path": (prefix / p.relative_to(folder)).as_posix(), "label": p.parent.name} for p in images]


def write_hf(images: list[Path], classes: list[str], out: Path) -> Path:
    """A saved Hugging Face dataset of `images` (encoded bytes, as they are) with a ClassLabel of `classes`."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": p.read_bytes(), "path": None} for p in images],
                                     "label": [classes.index(p.parent.name) for p in images]}, features=features)
    ds.save_to_disk(str(out))
    return out


def write_shards(images: list[Path], out: Path, per_shard: int = 1000, shards: int = 0) -> Path:
    """`shards` (0: ceil(len / per_shard)) shards train-NNNN.tar in `out`, each sample KEY.<ext> + KEY.cls (KEY =
    <class>_<stem>); image i goes to shard i mod shards (the classes mix in every shard, as after the shuffle a
    real writer does first)."""
    out.mkdir(parents=True, exist_ok=True)
    shards = shards or max(1, math.ceil(len(images) / per_shard))
    width = max(4, len(str(shards - 1)))
    for s in range(shards):
        with tarfile.open(out / f"train-{s:0{width}d}.tar", "w") as tar:
            for path in images[s::shards]:
                key = f"{path.parent.name}_{path.stem}"
                tar.add(path, arcname=f"{key}{path.suffix.lower()}")
                label = path.parent.name.encode()
                info = tarfile.TarInfo(f"{key}.cls")
                info.size = len(label)
                tar.addfile(info, io.BytesIO(label))
    return out


def class_images(folder: Path) -> tuple[list[Path], list[str]]:
    """The images of a class folder in the folder reader's order, and the classes sorted by name."""
    found = scan_classes(folder)
    classes = sorted(found)
    return [p for c in classes for p in found[c]], classes


def convert(folder: Path, kind: str, out: Path, per_shard: int = 1000) -> Path:
    """The class folder `folder` as data.root of format `kind`, at `out` (a manifest file, an HF dataset folder or
    a folder of shards; `folder` itself for "folder"). The images are not copied: a manifest at `out` names them
    relative to its folder, which must hold `folder`. Written whole or not at all (core/files.py atomic_path,
    atomic_folder)."""
    if kind not in FORMATS:
        raise UserError(f"convert: {kind!r} is not one of {', '.join(FORMATS)}")
    if kind == "folder":
        return folder
    if kind in MANIFESTS and not folder.absolute().is_relative_to(out.parent.absolute()):
        raise UserError(f"convert: {out.parent} must hold {folder} (a manifest names its images relative to it)")
    images, classes = class_images(folder)
    if kind in MANIFESTS:
        with atomic_path(out) as tmp:
            write_manifest(kind, manifest_rows(images, out.parent, folder), tmp)
    else:
        with atomic_folder(out) as tmp:
            if kind == "hf":
                write_hf(images, classes, tmp)
            else:
                write_shards(images, tmp, per_shard)
    return out
