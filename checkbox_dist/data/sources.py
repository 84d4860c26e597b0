"""Where labelled images come from: every format `data.root` may name, read into one `Catalog` of samples.

A sample is a `Ref` (a stable key, and how to get its encoded bytes), a label, and optionally a split
(train/val) and a group. The rest of the data layer (split, cache, datasets) sees only refs and labels;
every ref's bytes go through data/images.py `decode`, the one decoder (budgets, hostile images).

Formats (`detect_format`; the layout of each is in docs/DATA.md; readers: class folders here, manifests and HF
datasets in data/manifests.py, tar shards in data/shards.py; `Ref` and `Catalog` in data/catalog.py):
    folder    ROOT/<class>/**/*.png, or ROOT/{train,val}/<class>/**     key: path relative to ROOT
    csv       a manifest: columns path, label[, split][, group]         key: the path column, relative to
    jsonl       the manifest's folder (absolute paths, URLs and paths that leave that folder are bad rows)
    parquet
    hf        a Hugging Face `datasets` dataset saved with save_to_disk (image + ClassLabel label columns;
              a DatasetDict's train/validation splits become the split)  key: <split>/<row> or <row>
    tar       WebDataset-style shards: a folder of *.tar or a glob; sample KEY is KEY.png|jpg + KEY.cls (the
              class name as text)  key: <shard file>/<member>; read by byte offset, so any sample is one read

Bad rows (a missing file, an empty path or label, an image without a label) are collected as one line
each in `Catalog.bad`; data/split.py applies data.on_bad_image to them like to unreadable files.

Start-up (`indexed_catalog`): the scan is written once as an index under data.cache_dir, keyed by the
root's path and a stamp of its mtimes and sizes; the next run, and the other ranks of this one, read it.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_write_json
from checkbox_dist.data.catalog import SPLITS, Catalog, Ref, make_catalog
from checkbox_dist.data.images import list_images
from checkbox_dist.data.manifests import MANIFEST_SUFFIXES, scan_hf, scan_manifest
from checkbox_dist.data.shards import scan_tar, shard_files

INDEX_FORMAT = 1
FORMATS = ("folder", "csv", "jsonl", "parquet", "hf", "tar")


# ---------------------------------------------------------------- detection


def resolve_root(text: str) -> Path:
    """data.root as given: an existing file or folder, or a glob of tar shards (kept as the pattern)."""
    root = Path(text).expanduser()
    if root.exists():
        return root
    if glob.has_magic(str(root)) and sorted(glob.glob(str(root))):
        return root
    raise UserError(f"data.root: folder not found: {root}")


def detect_format(root: Path) -> str:
    """folder / csv / jsonl / parquet / hf / tar, from what `root` is."""
    if glob.has_magic(str(root)) and not root.exists():
        return "tar"
    if root.is_file():
        kind = MANIFEST_SUFFIXES.get(root.suffix.lower())
        if kind:
            return kind
        if root.suffix.lower() == ".tar":
            return "tar"
        raise UserError(f"data.root: folder not found ({root} is a file, but not a manifest .csv, .jsonl or "
                        f".parquet, nor a .tar shard)")
    if not root.is_dir():
        raise UserError(f"data.root: folder not found: {root}")
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        return "hf"
    if any(root.glob("*.tar")) and not any(d.is_dir() and not d.name.startswith(".") for d in root.iterdir()):
        return "tar"
    return "folder"


def scan(root: Path) -> Catalog:
    """Read `root` in its format (no index)."""
    faults.point("scan")
    kind = detect_format(root)
    reader = {"folder": _scan_folder, "csv": scan_manifest, "jsonl": scan_manifest, "parquet": scan_manifest,
              "hf": scan_hf, "tar": scan_tar}[kind]
    return reader(root, kind)


# ---------------------------------------------------------------- folder


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


def file_ref(path: Path, base: Path) -> Ref:
    return Ref(path.relative_to(base).as_posix(), base)


def _scan_folder(root: Path, kind: str) -> Catalog:
    if (root / "train").is_dir() and (root / "val").is_dir():
        parts = {split: scan_classes(root / split) for split in SPLITS}
        missing = sorted(set(parts["val"]) - set(parts["train"]))
        if missing:
            raise UserError(f"{root}/train: class '{missing[0]}' is in val but has no train folder")
    else:
        parts = {"": scan_classes(root)}
    rows = [(file_ref(p, root), c, split, "") for split, found in parts.items() for c in sorted(found)
            for p in found[c]]
    return make_catalog(root, kind, rows, [])


# ---------------------------------------------------------------- the index


def _stamp(root: Path, kind: str) -> list:
    """What changes when the data does: mtimes and sizes of the root and what the scan reads first."""
    if kind == "folder":  # the root and its class folders (and train/val's): adding or removing a file shows
        folders = [root] + [d for d in _class_dirs(root)] + [c for d in _class_dirs(root) if d.name in SPLITS
                                                             for c in _class_dirs(d)]
        paths = folders
    elif kind == "tar":
        paths = shard_files(root)
    elif kind == "hf":
        paths = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("cache-"))
    else:
        paths = [root]
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p), st.st_mtime_ns, st.st_size if p.is_file() else 0])
    return out


def index_file(root: Path, cache_dir: Path) -> Path:
    digest = hashlib.sha256(str(root.expanduser().absolute()).encode()).hexdigest()[:16]
    return cache_dir / "index" / f"{digest}.json"


def _to_index(catalog: Catalog, stamp: list) -> dict:
    refs = catalog.refs
    shards = sorted({str(r.path) for r in refs if r.offset >= 0})
    where = {s: i for i, s in enumerate(shards)}
    return {"format": INDEX_FORMAT, "root": str(catalog.root.absolute()), "kind": catalog.kind, "stamp": stamp,
            "classes": catalog.classes, "keys": [r.key for r in refs], "labels": catalog.labels,
            "splits": catalog.splits if catalog.has_splits else None,
            "groups": catalog.groups if catalog.has_groups else None, "bad": catalog.bad,
            "shards": shards, "shard": [where.get(str(r.path), -1) for r in refs] if shards else None,
            "offsets": [r.offset for r in refs] if shards else None,
            "sizes": [r.size for r in refs] if shards else None,
            "rows": [r.row for r in refs] if catalog.kind == "hf" else None,
            "parts": [r.part for r in refs] if catalog.kind == "hf" else None}


def _from_index(root: Path, payload: dict) -> Catalog:
    n, kind = len(payload["keys"]), payload["kind"]
    keys = payload["keys"]
    if kind == "tar":
        shards = [Path(s) for s in payload["shards"]]
        refs = [Ref(k, shards[s], offset=o, size=z)
                for k, s, o, z in zip(keys, payload["shard"], payload["offsets"], payload["sizes"])]
    elif kind == "hf":
        refs = [Ref(k, root, row=r, part=p) for k, r, p in zip(keys, payload["rows"], payload["parts"])]
    else:
        base = root if kind == "folder" else root.parent
        refs = [Ref(k, base) for k in keys]
    return Catalog(root, kind, payload["classes"], refs, payload["labels"], payload["splits"] or [""] * n,
                   payload["groups"] or [""] * n, payload["bad"], scanned=False)


def indexed_catalog(root: Path, cache_dir: Path | None, say=print) -> Catalog:
    """The catalog of `root`: from its index under `cache_dir` when the stamp still matches, else scanned and
    the index (re)written (atomically; a read-only cache only costs the scan next time)."""
    kind = detect_format(root)
    if cache_dir is None:
        return scan(root)
    stamp = _stamp(root, kind)
    file = index_file(root, cache_dir)
    try:
        payload = json.loads(file.read_text())
        if payload.get("format") == INDEX_FORMAT and payload.get("stamp") == stamp and payload.get("kind") == kind:
            return _from_index(root, payload)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass  # no index yet, or a damaged one: scan
    catalog = scan(root)
    try:
        atomic_write_json(file, _to_index(catalog, stamp), indent=None)
        say(f"data: scanned {root} ({catalog.kind}, {len(catalog.refs)} samples); index {file}")
    except OSError:
        say(f"data: scanned {root} ({catalog.kind}, {len(catalog.refs)} samples); index not written to {file}")
    return catalog

