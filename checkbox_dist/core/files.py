"""Atomic writes and file locks: the one implementation every module uses.

A file or folder is written under a hidden temporary name next to its destination, `.NAME.PID.tmp`, and
renamed into place only when complete, so a reader (or a killed writer) never sees half of it. The PID
in the name lets a later run tell a dead writer's leftovers (safe to delete) from a live one's
(`writer_alive`). `exclusive(path)` serialises writers of one path across processes and machines that
share a POSIX file system (parallel CV folds, sweep trials, Slurm jobs).

    with atomic_path(out) as tmp:      # any writer that takes a path: torch.save, savefig, onnx.save
        torch.save(obj, tmp)
    atomic_write_json(run_dir / "summary.json", summary)
    with exclusive(cache_dir / "synth-n900-s0"):
        ...                            # one process builds it, the others wait and reuse it
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError

TMP_SUFFIX, OLD_SUFFIX = ".tmp", ".old"


def temp_path(path: Path, suffix: str = TMP_SUFFIX) -> Path:
    """The hidden sibling `.NAME.PID.tmp` that `path` is written under."""
    return path.with_name(f".{path.name}.{os.getpid()}{suffix}")


def writer_pid(temp_name: str) -> int | None:
    """The PID in a `.NAME.PID.tmp` (or `.old`) name; None if the name is not one."""
    try:
        return int(temp_name.rsplit(".", 2)[1])
    except (ValueError, IndexError):
        return None


def writer_alive(temp_name: str) -> bool:
    """Is the process that owns this temporary name still running?"""
    pid = writer_pid(temp_name)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yields a temporary path next to `path`; renamed onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: Path, payload, indent: int = 1) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent, default=str))


def atomic_write_csv(path: Path, header: list[str], rows) -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def _fsync_tree(folder: Path) -> None:
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        with file.open("rb") as handle:
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_folder(folder: Path):
    """Yields an empty temporary folder; when the block succeeds its files are synced to disk and it
    replaces `folder` (the old one is moved aside, the new one renamed in, the old one deleted). If the
    block or the swap fails, the temporary folder is removed and `folder` is left as it was."""
    folder = Path(folder)
    tmp, old = temp_path(folder), temp_path(folder, OLD_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        _fsync_tree(tmp)  # data on disk before the rename makes it visible
        if folder.exists():  # rename() cannot replace a non-empty folder
            os.replace(folder, old)
            faults.point("save.swap")
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def leftovers(parent: Path) -> tuple[list[Path], list[Path]]:
    """(temporary, moved-aside) entries that `atomic_folder` calls killed mid-write left in `parent`."""
    hidden = sorted(p for p in parent.glob(".*") if writer_pid(p.name) is not None)
    return ([p for p in hidden if p.name.endswith(TMP_SUFFIX)], [p for p in hidden if p.name.endswith(OLD_SUFFIX)])


def original_name(temp_name: str) -> str:
    """`.NAME.PID.tmp` -> NAME."""
    return temp_name[1:].rsplit(".", 2)[0]


@contextlib.contextmanager
def exclusive(path: Path, say=None):
    """One writer of `path` at a time across processes: a lock file `.NAME.lock` beside it. `say` (if
    given) is told when this process has to wait. The kernel releases the lock if its holder dies."""
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as err:
        raise UserError(f"cannot create lock file {lock}: {err.strerror or err}") from None
    held = FileLock(lock)  # flock(2) on POSIX, LockFileEx on Windows: released by the kernel if we die
    try:
        held.acquire(timeout=0)
    except Timeout:
        if say:
            say(f"another process is building {path}; waiting for it")
        held.acquire()
    try:
        yield
    finally:
        held.release()
