"""`checkbox-dist predict`: class + calibrated confidence of every class for files, folders, globs and URLs.

    checkbox-dist predict --checkpoint RUN crop.png
    checkbox-dist predict --checkpoint RUN crops/ 'shots/**/*.png' https://example.com/c.png
    checkbox-dist predict --checkpoint A --checkpoint B --tta crops/ --format jsonl --output preds.jsonl
    checkbox-dist predict --checkpoint RUN --backend onnx crop.png     # after `export`
    checkbox-dist predict --checkpoint RUN --image_url=https://example.com/c.png   # seed's spelling

INPUT is a file, a folder (searched recursively for images), a glob (quote it; ** recurses) or an
http(s) URL. Preprocessing is read from the checkpoint. Output: a table for people, or json / jsonl /
csv for programs (to stdout or --output FILE, written whole or not at all). Folders go through the model
in batches of --batch-size with a progress bar (on a terminal). An input that fails (missing file, not
an image, URL 404 / timeout / too big / not an image / redirect loop) is one `error:` line on stderr
(and an {"input", "error"} record in json/jsonl/csv); every other input is still predicted.

Exit code: 0 all inputs predicted, 1 some failed, 2 usage or configuration error (bad checkpoint ...).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_path
from checkbox_dist.data.download import DownloadLimits, download, is_url
from checkbox_dist.data.images import is_image_file, list_images
from checkbox_dist.infer.predictor import Predictor

FORMATS = ("table", "json", "jsonl", "csv")
SOME_FAILED = 1


def expand_inputs(inputs: list[str]) -> list[dict]:
    """Each INPUT -> items {"input": label, "path"|"url": ...} or {"input": label, "error": reason}, in order.

    Labels are printable (control characters such as a newline in a file name are escaped), so a name
    cannot forge table rows or `error:` lines. Globs never follow symlinked folders under `**` (a loop
    ends), and a file reached twice through links is predicted once."""
    items = []
    for text in inputs:
        label = printable(text)
        if is_url(text):
            items.append({"input": label, "url": text})
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            files = list_images(path)
            items += [{"input": printable(str(f)), "path": f} for f in files]
            if not files:
                items.append({"input": label, "error": f"{label}: no images in this folder"})
        elif path.is_file():  # named explicitly: tried whatever its suffix; the decoder decides
            items.append({"input": label, "path": path})
        elif glob.has_magic(text):
            files = _glob_images(os.path.expanduser(text))
            items += [{"input": printable(str(f)), "path": f} for f in files]
            if not files:
                items.append({"input": label, "error": f"{label}: no image files match"})
        else:
            items.append({"input": label, "error": f"{label}: no such file or folder"})
    return items


def _glob_images(pattern: str) -> list[Path]:
    """Image files matching `pattern` (folders it matches: their images), each real file once, in order.
    pathlib's `**` does not descend into symlinked folders, where glob.glob's loops forever over a link to
    its own folder."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:first]) if first else Path(".")
    seen, files = set(), []
    for match in sorted(base.glob(str(Path(*parts[first:])))):
        for file in list_images(match) if match.is_dir() else [match] if is_image_file(match) else []:
            real = os.path.realpath(file)
            if real not in seen:
                seen.add(real)
                files.append(file)
    return files


def printable(text: str) -> str:
    """`text` with control and other non-printable characters escaped (a newline becomes backslash-n)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                                                   for c in text)


def _load(predictor, item: dict, limits: DownloadLimits):
    """Decoded tensors for one item, or the one-line reason it failed."""
    if "error" in item:
        return item["error"]
    try:
        if "url" in item:
            return predictor.decode(download(item["url"], limits), name=item["url"])
        return predictor.decode(item["path"], name=item["input"])
    except UserError as err:  # DownloadError, BadImageError: each already starts with the input's name
        return str(err)
    except Exception as err:  # noqa: BLE001 - one input's failure (even a bug) must not lose the others' results
        return f"{item['input']}: could not be predicted ({type(err).__name__}: {' '.join(str(err).split())[:120]})"


def predict_items(predictor, items: list[dict], limits: DownloadLimits, batch_size: int = 32, jobs: int = 4,
                  progress: bool | None = None):
    """Yields one record per item, in order: {"input", "class", "score", "confidence"} or {"input", "error"}."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), unit="img", disable=(not progress) if progress is not None else None,
               file=sys.stderr, dynamic_ncols=True)
    # Threads, not processes: the work is waiting on sockets and PIL decoding, which releases the GIL.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            loaded = list(pool.map(lambda item: _load(predictor, item, limits), chunk))
            good = [d for d in loaded if not isinstance(d, str)]
            results = iter(predictor.predict_decoded(good))
            for item, got in zip(chunk, loaded):
                if isinstance(got, str):
                    bar.write(f"error: {got}", file=sys.stderr)
                    yield {"input": item["input"], "error": got}
                else:
                    yield {"input": item["input"], **next(results)}
            bar.update(len(chunk))


class Writer:
    """Streams jsonl/csv records as they come; table and json are written once everything is known."""

    def __init__(self, fmt: str, classes: list[str], sink):
        self.fmt, self.classes, self.sink, self.records = fmt, classes, sink, []
        if fmt == "csv":
            self.csv = csv.writer(sink, lineterminator="\n")
            self.csv.writerow(["input", "class", "score", *classes, "error"])

    def add(self, record: dict) -> None:
        if self.fmt == "jsonl":
            self.sink.write(json.dumps(record) + "\n")
        elif self.fmt == "csv":
            conf = record.get("confidence", {})
            self.csv.writerow([record["input"], record.get("class", ""), record.get("score", ""),
                               *[conf.get(c, "") for c in self.classes], record.get("error", "")])
        else:
            self.records.append(record)

    def close(self) -> None:
        if self.fmt == "json":
            self.sink.write(json.dumps(self.records, indent=1) + "\n")
        elif self.fmt == "table":
            self.sink.write(table(self.records, self.classes))

    @property
    def buffered(self) -> bool:
        return self.fmt in ("table", "json")


def table(records: list[dict], classes: list[str], max_width: int = 60) -> str:
    rows = [r for r in records if "error" not in r]
    if not rows:
        return ""
    names = [r["input"] if len(r["input"]) <= max_width else "..." + r["input"][-(max_width - 3):] for r in rows]
    width = max(len("input"), *map(len, names))
    cls_width = max(len("class"), *map(len, classes))
    cols = [max(6, len(c)) for c in classes]
    lines = [f"{'input':<{width}}  {'class':<{cls_width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(classes, cols))]
    for name, r in zip(names, rows):
        conf = "  ".join(f"{r['confidence'][c]:>{w}.3f}" for c, w in zip(classes, cols))
        lines.append(f"{name:<{width}}  {r['class']:<{cls_width}}  {conf}")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    inputs = list(args.inputs) + list(args.image_url)
    if not inputs:
        raise UserError("predict: give at least one INPUT (file, folder, glob or URL) or --image_url")
    if args.batch_size < 1 or args.timeout <= 0 or args.max_mb <= 0 or args.max_redirects < 0:
        raise UserError("predict: --batch-size, --timeout and --max-mb must be positive, --max-redirects >= 0")
    out = Path(args.output).expanduser() if args.output else None
    if out is not None and not out.parent.is_dir():
        raise UserError(f"--output: folder not found: {out.parent}")
    predictor = Predictor(args.checkpoint, device=args.device, tta=args.tta, backend=args.backend)
    limits = DownloadLimits(args.timeout, int(args.max_mb * 2**20), args.max_redirects)
    try:
        return _predict_all(predictor, expand_inputs(inputs), limits, args, out)
    except BrokenPipeError:  # `predict ... | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _predict_all(predictor, items: list[dict], limits: DownloadLimits, args, out: Path | None) -> int:
    n_ok = n_failed = 0
    with atomic_path(out) if out else contextlib.nullcontext() as target:
        sink = open(target, "w", newline="") if out else sys.stdout
        try:
            writer = Writer(args.format, predictor.classes, sink)
            for record in predict_items(predictor, items, limits, args.batch_size, args.jobs, args.progress):
                writer.add(record)
                n_failed += "error" in record
                n_ok += "error" not in record
                if not writer.buffered:
                    sink.flush()
            writer.close()
        finally:
            if out:
                sink.close()
    if out:
        print(f"wrote {out}: {n_ok} predicted, {n_failed} failed", file=sys.stderr)
    elif n_failed:
        print(f"{n_ok} predicted, {n_failed} failed", file=sys.stderr)
    return SOME_FAILED if n_failed else 0
