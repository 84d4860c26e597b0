"""The readers of manifests (CSV / JSON Lines / Parquet: columns path, label[, split][, group]) and of Hugging
Face `datasets` datasets saved with save_to_disk, into a data/catalog.py `Catalog` (layouts: docs/DATA.md).

Bad rows (a missing file, an empty path or label, a path listed twice, a row without a label) are one line each
in `Catalog.bad`; data/split.py applies data.on_bad_image to them like to unreadable files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path, PurePosixPath

from checkbox_dist.core.errors import UserError
from checkbox_dist.data.catalog import SPLITS, Catalog, Ref, hf_open, make_catalog, optional

MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


# ---------------------------------------------------------------- manifests


def _manifest_rows(root: Path, kind: str) -> list[dict]:
    try:
        if kind == "csv":
            with root.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        if kind == "jsonl":
            return [_json_row(line) for line in root.read_text(encoding="utf-8").splitlines()]
        pq = optional("pyarrow.parquet", "Parquet manifests")
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


def scan_manifest(root: Path, kind: str) -> Catalog:
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
        good.append((Ref(key, base), label, split, group))
    return make_catalog(root, kind, good, bad)


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


def scan_hf(root: Path, kind: str) -> Catalog:
    parts = [""]
    if (root / "dataset_dict.json").is_file():
        names = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        split_of = {"train": "train", "val": "val", "validation": "val"}
        parts = [p for p in names if p in split_of]
        if not parts:
            raise UserError(f"{root}: a DatasetDict needs a train (and val or validation) split; has {names}")
    rows, bad, classes = [], [], None
    for part in parts:
        ds, _, label_col = hf_open(root, part)
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
    return make_catalog(root, kind, rows, bad, classes=list(classes))
