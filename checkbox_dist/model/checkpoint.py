"""Checkpoints you can trust: self-describing folders, written atomically, verified before loading.

    RUN/checkpoints/last/        newest state, for `train.resume=auto`
    RUN/checkpoints/best/        best by `eval.best_rule`, what `predict`/`eval`/`export` load
    RUN/checkpoints/epoch_0007/  the last `checkpoint.keep_last` epoch ends, fallbacks for resume

Each folder holds
    model.pt        plain dict: weights (float32, CPU), classes, model name, preprocessing, temperature,
                    config, metrics, versions -- loads with torch.load(weights_only=True)
    train_state.pt  optimizer, scheduler, scaler, EMA, per-process RNG, epoch, step, position in epoch
    meta.json       written last: sha256 of each file, classes, epoch, metrics, versions

A folder is written under a temporary name and renamed into place, so a crash (kill -9, full disk)
leaves the previous checkpoint intact; a folder whose meta.json is missing or whose checksums do not
match is rejected, and resume falls back to the previous good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError

FORMAT = 1
MODEL_FILE, STATE_FILE, META_FILE = "model.pt", "train_state.pt", "meta.json"


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, or from another format."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict:
    import accelerate
    import timm

    from checkbox_dist import __version__

    info = {"checkbox_dist": __version__, "torch": str(torch.__version__), "timm": str(timm.__version__),
            "accelerate": str(accelerate.__version__), "python": platform.python_version()}
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        if rev.returncode == 0:
            info["git"] = rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_json_atomic(path: Path, payload: dict) -> None:
    """Temp file + rename: a reader (or a killed writer) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


def _write_failure(err: Exception, where: Path) -> str:
    """Why a write failed, in words. torch.save's C++ writer says "unexpected pos 443520 vs 443416" for a full
    disk or `ulimit -f`, and "open file failed with strerror: Read-only file system" for a read-only one."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    text = str(err)
    if "strerror:" in text:
        return text.rsplit("strerror:", 1)[1].strip()
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"File too large (the file size limit, `ulimit -f`, is {limit:,} bytes)"
    try:
        stat = os.statvfs(where)
        free = stat.f_bavail * stat.f_frsize
    except OSError:
        free = None
    if free is not None and free < 16 << 20:  # a failed write fills the disk: a few MiB left at most
        return f"No space left on device ({free / 2**20:.1f} MiB free)"
    return text.splitlines()[0][:200] if text else type(err).__name__


# What meta.json repeats from model.pt, so a folder can be listed without loading tensors.
META_KEYS = ("classes", "model_name", "epoch", "global_step", "metrics", "versions")


def save(folder: Path, model_payload: dict, train_state: dict | None) -> Path:
    """Write the checkpoint into `folder` atomically (temp folder + rename)."""
    meta = {key: model_payload[key] for key in META_KEYS}
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        torch.save(model_payload, tmp / MODEL_FILE)
        faults.point("save.model")  # test-only fault hooks (checkbox_dist/faults.py): a dict lookup each
        files = [MODEL_FILE]
        if train_state is not None:
            torch.save(train_state, tmp / STATE_FILE)
            files.append(STATE_FILE)
        faults.point("save.state")
        manifest = dict(meta, format=FORMAT, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        files={name: _sha256(tmp / name) for name in files})
        (tmp / META_FILE).write_text(json.dumps(manifest, indent=1, default=str))
        for name in files + [META_FILE]:  # data on disk before the rename makes it visible
            with (tmp / name).open("rb") as handle:
                os.fsync(handle.fileno())
        # rename() cannot replace a non-empty folder: move the old one aside, swap, then delete it.
        if folder.exists():
            os.replace(folder, old)
            faults.point("save.swap")
        os.replace(tmp, folder)
    except (OSError, RuntimeError) as err:  # torch.save reports a full or read-only disk as RuntimeError
        reason = _write_failure(err, folder.parent)  # before cleaning up: the partial files show a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise CheckpointError(f"could not write checkpoint {folder}: {reason}; "
                              f"the previous checkpoint is untouched") from None
    shutil.rmtree(old, ignore_errors=True)
    return folder


def problem(folder: Path) -> str:
    """'' if `folder` is a complete, uncorrupted checkpoint; otherwise why not."""
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        return "no meta.json (incomplete write?)"
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError:
        return "meta.json is not valid JSON"
    if meta.get("format") != FORMAT:
        return f"checkpoint format {meta.get('format')} is not {FORMAT}"
    for name, digest in meta.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} does not match its checksum (truncated or corrupted)"
    return ""


def resolve(path: str | Path) -> Path:
    """A run folder, a checkpoint folder or its model.pt -> the checkpoint folder (run -> best)."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == MODEL_FILE:
        path = path.parent
    if (path / "checkpoints" / "best").is_dir():
        path = path / "checkpoints" / "best"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not (path / MODEL_FILE).is_file() and not (path / META_FILE).is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no {MODEL_FILE})")
    return path


def load(folder: Path, with_state: bool = False) -> tuple[dict, dict | None]:
    """Verified load of (model payload, train state). Plain tensors and containers only."""
    reason = problem(folder)
    if reason:
        raise CheckpointError(f"{folder}: {reason}")
    payload = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
    state = None
    if with_state:
        if not (folder / STATE_FILE).is_file():
            raise CheckpointError(f"{folder}: has no {STATE_FILE}, so it cannot resume training")
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    return payload, state


def restore(folder: Path, classes: list[str], model, optimizer, scheduler, scaler, ema, rank: int,
            world: int) -> tuple[dict, list | None]:
    """Load a `last` checkpoint's full training state in place (weights, optimizer, schedule, scaler, EMA,
    this rank's RNG); returns the loop state and, resumed mid-epoch at the same world size, the epoch's
    running sums so far (else None: a new world size deals the batches differently)."""
    from checkbox_dist.model.build import load_weights

    payload, saved = load(folder, with_state=True)
    if payload["classes"] != classes:
        raise UserError(f"{folder}: trained on classes {payload['classes']}, data has {classes}")
    load_weights(model, saved["raw_model"], str(folder))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    if ema is not None and saved.get("ema"):
        ema.load_state_dict(saved["ema"])
    rng = saved["rng"][rank] if rank < len(saved["rng"]) else saved["rng"][0]
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    loop = saved["loop"]
    return loop, rng.get("epoch_sums") if loop["micro_step"] and saved.get("world_size") == world else None


def epoch_folders(checkpoints: Path) -> list[Path]:
    return sorted(p for p in checkpoints.glob("epoch_*") if p.is_dir())


def recover(checkpoints: Path, say=print) -> None:
    """Finish what a killed `save` left: drop its uncommitted `.NAME.tmp-PID` folders, and when it died
    between its two renames (NAME moved to `.NAME.old-PID`, the new one not yet in place) put the old
    one back. Run by one process before resuming; afterwards only committed checkpoints remain."""
    for tmp in sorted(checkpoints.glob(".*.tmp-*")):
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(checkpoints.glob(".*.old-*")):
        folder = checkpoints / old.name[1:].rsplit(".old-", 1)[0]
        if not folder.exists() and not problem(old):
            os.replace(old, folder)
            say(f"checkpoint: restored {folder} from {old.name} (its save was interrupted)")
        elif folder.exists() and not problem(folder):
            shutil.rmtree(old, ignore_errors=True)


def find_resumable(checkpoints: Path, say=print) -> Path | None:
    """Newest good checkpoint with a train state: last, else the newest epoch_N; says what it skipped."""
    candidates = [checkpoints / "last"] + list(reversed(epoch_folders(checkpoints)))
    candidates += sorted(checkpoints.glob(".last.old-*"))  # a crash between the two renames
    for folder in candidates:
        if not folder.is_dir():
            continue
        reason = problem(folder) or ("" if (folder / STATE_FILE).is_file() else f"no {STATE_FILE}")
        if not reason:
            return folder
        say(f"resume: skipping {folder}: {reason}")
    return None


def prune_epochs(checkpoints: Path, keep: int) -> None:
    for folder in epoch_folders(checkpoints)[: max(0, len(epoch_folders(checkpoints)) - keep)]:
        shutil.rmtree(folder, ignore_errors=True)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """For inference: (model in eval mode, payload) from any checkpoint path, strictly loaded."""
    from checkbox_dist.model.build import build_model, load_weights
    from checkbox_dist.core.config import ModelConfig

    folder = resolve(path)
    payload, _ = load(folder)
    preprocess = payload["preprocess"]
    channels = 4 if preprocess.get("alpha_channel") else 3
    # The pooling changes the graph but adds no weights: a max-pooled model loads strictly into an avg-pooled
    # one and predicts wrongly (measured: CV folds at 68-75 % instead of the 73-80 % they had in training).
    pool = payload.get("config", {}).get("model", {}).get("global_pool", "")
    model = build_model(ModelConfig(name=payload["model_name"], global_pool=pool), len(payload["classes"]), channels)
    load_weights(model, payload["model"], str(folder))
    return model.to(device).eval(), payload
