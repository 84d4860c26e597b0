"""Where labelled images come from: every format `data.root` may name, read into one `Catalog` of samples.

A sample is a `Ref` (a stable key, and how to get its encoded bytes), a label, and optionally a split
(train/val) and a group. The rest of the data layer (split, cache, datasets) sees only refs and labels;
every ref's bytes go through data/images.py `decode`, the one decoder (budgets, hostile images).

Formats (`detect_format`; the layout of each is in docs/DATA.md):
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

import csv
import functools
import glob
import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_write_json
from checkbox_dist.data.images import IMAGE_SUFFIXES, BadImageError, list_images

INDEX_FORMAT = 1
FORMATS = ("folder", "csv", "jsonl", "parquet", "hf", "tar")
MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
SPLITS = ("train", "val")
EXTRA_HINT = 'pip install "checkbox_dist[formats]"'


@dataclass(frozen=True)
class Ref:
    """One encoded image: a whole file, a byte range of a tar shard, or a row of a saved HF dataset."""

    key: str  # stable, relative to the root: what split files, exclusions and out-of-fold tables name
    path: Path  # the image file; the tar shard; the HF dataset folder
    offset: int = -1  # tar: first byte of the member's data; -1: the whole file
    size: int = 0  # tar: the member's length
    row: int = -1  # hf: the row in `part`
    part: str = ""  # hf: the DatasetDict split ("" for a single Dataset)

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
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(self.size)
            if len(data) != self.size:
                raise BadImageError(f"{self}: shard is shorter than its index says (rebuild: delete the index)")
            return data
        if self.row >= 0:
            return _hf_bytes(self)
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
    reader = {"folder": _scan_folder, "csv": _scan_manifest, "jsonl": _scan_manifest, "parquet": _scan_manifest,
              "hf": _scan_hf, "tar": _scan_tar}[kind]
    return reader(root, kind)


def _catalog(root: Path, kind: str, rows: list[tuple[Ref, str, str, str]], bad: list[str],
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
    return Ref(path.relative_to(base).as_posix(), path)


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
    return _catalog(root, kind, rows, [])


# ---------------------------------------------------------------- manifests


def _manifest_rows(root: Path, kind: str) -> list[dict]:
    try:
        if kind == "csv":
            with root.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        if kind == "jsonl":
            return [_json_row(line) for line in root.read_text(encoding="utf-8").splitlines()]
        pq = _optional("pyarrow.parquet", "Parquet manifests")
        return pq.read_table(root).to_pylist()
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{root}: not a readable {kind} manifest ({' '.join(str(err).split())[:120]})") from None


def _json_row(line: str) -> dict:
    """One JSON Lines row; a line that is not a JSON object is a bad row, not an unreadable manifest."""
    if not line.strip():
        return {"\0bad": "empty line"}
    try:
        row = json.loads(line)
    except ValueError as err:
        return {"\0bad": f"not JSON ({err.msg})"}
    return row if isinstance(row, dict) else {"\0bad": "not a JSON object"}


def _scan_manifest(root: Path, kind: str) -> Catalog:
    rows = _manifest_rows(root, kind)
    columns = set().union(*(r.keys() for r in rows)) - {"\0bad"} if rows else set()
    if not {"path", "label"} <= columns:
        raise UserError(f"{root}: a manifest needs the columns path and label (found: {', '.join(sorted(columns))})")
    base = root.parent
    good, bad, seen = [], [], set()
    first = 2 if kind == "csv" else 1  # csv: line 1 is the header
    for n, row in enumerate(rows, first):
        where = f"{root}:{n}" if kind != "parquet" else f"{root} row {n - 1}"
        text = lambda key: "" if row.get(key) is None else str(row[key]).strip()  # noqa: E731
        path, label, split, group = text("path"), text("label"), text("split"), text("group")
        key = PurePosixPath(path).as_posix()
        problem = row.get("\0bad") or _manifest_problem(base, path, label, split)
        if not problem and key in seen:
            problem = f"{path}: listed before (a path is one sample)"
        if problem:
            bad.append(f"{where}: {problem}")
            continue
        seen.add(key)
        good.append((Ref(key, base / path), label, split, group))
    return _catalog(root, kind, good, bad)


def _manifest_problem(base: Path, path: str, label: str, split: str) -> str:
    if not path:
        return "empty path"
    if "://" in path or path.startswith("/") or PurePosixPath(path).is_absolute() or Path(path).is_absolute():
        return f"path {path!r} must be relative to the manifest's folder (no URLs or absolute paths)"
    if ".." in PurePosixPath(path).parts:
        return f"path {path!r} leaves the manifest's folder"
    if not label:
        return f"{path}: empty label"
    if split and split not in SPLITS:
        return f"{path}: split {split!r} is not train or val"
    if not (base / path).is_file():
        return f"{path}: file not found"
    return ""


# ---------------------------------------------------------------- Hugging Face datasets


def _optional(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} need the optional dependencies: {EXTRA_HINT}") from None


@functools.lru_cache(maxsize=8)
def _hf_open(path: Path, part: str):
    """The dataset (memory-mapped Arrow), once per process, with images as undecoded bytes."""
    datasets = _optional("datasets", "Hugging Face datasets")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as err:
        raise UserError(f"{path}: not a dataset saved by save_to_disk ({' '.join(str(err).split())[:120]})") from None
    ds = loaded[part] if part else loaded
    image_col, label_col = _hf_columns(ds, path)
    return ds.cast_column(image_col, datasets.Image(decode=False)), image_col, label_col


def _hf_columns(ds, path: Path) -> tuple[str, str]:
    datasets = _optional("datasets", "Hugging Face datasets")
    features = ds.features
    images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
    labels = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if not images or not labels:
        raise UserError(f"{path}: needs an Image column and a ClassLabel column (has: {dict(features)})")
    pick = lambda found, name: name if name in found else found[0]  # noqa: E731
    return pick(images, "image"), pick(labels, "label")


def _hf_bytes(ref: Ref) -> bytes:
    ds, image_col, _ = _hf_open(ref.path, ref.part)
    value = ds[ref.row][image_col]
    data = (value or {}).get("bytes")
    if data is None and (value or {}).get("path") and Path(value["path"]).is_file():
        data = Path(value["path"]).read_bytes()
    if not data:
        raise BadImageError(f"{ref}: no image bytes in the row")
    return data


def _scan_hf(root: Path, kind: str) -> Catalog:
    parts = [""]
    if (root / "dataset_dict.json").is_file():
        names = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        split_of = {"train": "train", "val": "val", "validation": "val"}
        parts = [p for p in names if p in split_of]
        if not parts:
            raise UserError(f"{root}: a DatasetDict needs a train (and val or validation) split; has {names}")
    rows, bad, classes = [], [], None
    for part in parts:
        ds, _, label_col = _hf_open(root, part)
        names = ds.features[label_col].names
        if classes is not None and names != classes:
            raise UserError(f"{root}: splits {parts} have different ClassLabel names")
        classes = names
        split = {"": "", "train": "train", "val": "val", "validation": "val"}[part]
        for row, label in enumerate(ds[label_col]):
            key = f"{part}/{row}" if part else str(row)
            if label is None or not 0 <= label < len(names):
                bad.append(f"{root}[{key}]: no label")
                continue
            rows.append((Ref(key, root, row=row, part=part), names[label], split, ""))
    return _catalog(root, kind, rows, bad, classes=list(classes))


# ---------------------------------------------------------------- tar shards


def shard_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if root.is_dir():
        return sorted(root.glob("*.tar"))
    return sorted(Path(p) for p in glob.glob(str(root)) if p.endswith(".tar"))


def _scan_tar(root: Path, kind: str) -> Catalog:
    shards = shard_files(root)
    if not shards:
        raise UserError(f"data.root: no .tar shards in {root}")
    rows, bad = [], []
    for shard in shards:
        found, more_bad = _scan_shard(shard)
        rows += found
        bad += more_bad
    return _catalog(root, kind, rows, bad)


def _linked(link: tarfile.TarInfo, target: tarfile.TarInfo) -> tarfile.TarInfo:
    """A hard-link member as the regular member it points to (tar writes a file's second name so)."""
    member = tarfile.TarInfo(link.name)
    member.type, member.size, member.offset_data = tarfile.REGTYPE, target.size, target.offset_data
    return member


def _scan_shard(shard: Path) -> tuple[list, list[str]]:
    """One shard's samples in the order of its members (WebDataset key = member name up to the first dot)."""
    images, labels, order, files = {}, {}, [], {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if member.islnk() and member.linkname in files:  # a hard link: an earlier member's bytes
                    member = _linked(member, files[member.linkname])
                if not member.isfile():
                    continue
                files[member.name] = member
                base, _, suffix = member.name.partition(".")
                if base not in images and base not in labels:
                    order.append(base)
                if f".{suffix.lower()}" in IMAGE_SUFFIXES:
                    images[base] = member
                elif suffix == "cls":
                    labels[base] = tar.extractfile(member).read().decode("utf-8", "replace").strip()
    except (OSError, tarfile.TarError, EOFError) as err:
        return [], [f"{shard}: unreadable shard ({' '.join(str(err).split())[:120]})"]
    rows, bad = [], []
    for base in order:
        member = images.get(base)
        if member is None:
            bad.append(f"{shard}:{base}: a .cls without an image")
        elif not labels.get(base):
            bad.append(f"{shard}:{member.name}: no label (.cls missing or empty)")
        else:
            ref = Ref(f"{shard.name}/{member.name}", shard, offset=member.offset_data, size=member.size)
            rows.append((ref, labels[base], "", ""))
    return rows, bad


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
        refs = [Ref(k, base / k) for k in keys]
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

