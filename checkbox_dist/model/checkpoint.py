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

`export --format timm` folders load here too (`resolve`, `load`, `load_model`): timm's config.json +
model.safetensors, with a `checkbox_dist` block in config.json (classes, preprocess, temperature, model
name, config) from which the same payload is rebuilt, so predict/eval/serve treat both alike. Such a folder
published on the Hugging Face Hub is named `hf-hub:ORG/NAME[@REVISION]`: `resolve` fetches it (model/hub.py),
so every command that takes a checkpoint takes a Hub id.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import resource  # POSIX only: the file size limit (`ulimit -f`) in the words of a failed write
except ImportError:
    resource = None
import accelerate
import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from checkbox_dist import __version__
from checkbox_dist.core import faults
from checkbox_dist.core.config import ModelConfig
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_folder, leftovers, original_name
from checkbox_dist.data.images import PreprocessSpec
from checkbox_dist.model import hub
from checkbox_dist.model.build import build_model, load_weights

FORMAT = 1
MODEL_FILE, STATE_FILE, META_FILE = "model.pt", "train_state.pt", "meta.json"
# A timm folder (`export --format timm`): what timm.models.save_for_hf writes, plus our block in config.json.
TIMM_CONFIG, TIMM_WEIGHTS = "config.json", "model.safetensors"
TIMM_BLOCK, TIMM_FORMAT = "checkbox_dist", "checkbox_dist.timm/1"
ENSEMBLE_FILE = "ensemble.json"  # an ensemble folder (model/ensemble.py): resolves to itself


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, or from another format."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict:
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


def _write_failure(err: Exception, where: Path) -> str:
    """Why a write failed, in words. torch.save's C++ writer says "unexpected pos 443520 vs 443416" for a full
    disk or `ulimit -f`, and "open file failed with strerror: Read-only file system" for a read-only one."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    text = str(err)
    if "strerror:" in text:
        return text.rsplit("strerror:", 1)[1].strip()
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource else None
    if resource and limit != resource.RLIM_INFINITY:
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


def build_payload(weights: dict, classes: list[str], model_name: str, preprocess: dict, config: dict,
                  metrics: dict, epoch: int, global_step: int, temperature: float = 1.0) -> dict:
    """The model.pt dict: float32 CPU weights and everything needed to use them without the run."""
    return {"model": {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                      for k, v in weights.items()},
            "classes": list(classes), "model_name": model_name, "preprocess": preprocess,
            "temperature": temperature, "config": config, "metrics": metrics, "epoch": epoch,
            "global_step": global_step, "versions": versions()}


def build_train_state(raw_model: dict, optimizer: dict, scheduler: dict, scaler: dict | None, ema: dict | None,
                      rng: list[dict], loop: dict, world_size: int, epoch_sums: list[float] | None = None,
                      micro_batch: int = 0) -> dict:
    """The train_state.pt dict: what resuming needs besides the weights. Every tensor is a CPU copy, as
    xm.save does on XLA, so the file never names an accelerator device. `epoch_sums`: the epoch's running
    loss/correct/seen summed over every process; `world_size` and `micro_batch`: the shape that saved it."""
    return {"raw_model": {k: v.detach().cpu() for k, v in raw_model.items()},
            "optimizer": _to_cpu(optimizer), "scheduler": scheduler, "scaler": scaler,
            "ema": _to_cpu(ema) if ema is not None else None, "rng": rng, "loop": dict(loop),
            "world_size": world_size, "epoch_sums": epoch_sums, "micro_batch": micro_batch}


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def save(folder: Path, model_payload: dict, train_state: dict | None) -> Path:
    """Write the checkpoint into `folder` atomically (core.files.atomic_folder)."""
    meta = {key: model_payload[key] for key in META_KEYS}
    folder = Path(folder)
    try:
        with atomic_folder(folder) as tmp:
            try:
                _write_files(tmp, meta, model_payload, train_state)
            except (OSError, RuntimeError) as err:  # torch.save reports a full or read-only disk as RuntimeError
                raise CheckpointError(f"could not write checkpoint {folder}: {_write_failure(err, folder.parent)}; "
                                      f"the previous checkpoint is untouched") from None
    except OSError as err:  # the swap itself failed
        raise CheckpointError(f"could not write checkpoint {folder}: {_write_failure(err, folder.parent)}; "
                              f"the previous checkpoint is untouched") from None
    return folder


def _write_files(tmp: Path, meta: dict, model_payload: dict, train_state: dict | None) -> None:
    torch.save(model_payload, tmp / MODEL_FILE)
    faults.point("save.model")  # test-only fault hooks (core/faults.py): a dict lookup each
    files = [MODEL_FILE]
    if train_state is not None:
        torch.save(train_state, tmp / STATE_FILE)
        files.append(STATE_FILE)
    faults.point("save.state")
    manifest = dict(meta, format=FORMAT, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    files={name: _sha256(tmp / name) for name in files})
    (tmp / META_FILE).write_text(json.dumps(manifest, indent=1, default=str))


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


def is_timm_folder(path: Path) -> bool:
    """A folder timm loads with `local-dir:` (config.json + model.safetensors), exported by us or not."""
    return (path / TIMM_CONFIG).is_file() and (path / TIMM_WEIGHTS).is_file()


def resolve(path: str | Path) -> Path:
    """A run folder, a checkpoint folder or its model.pt, a timm export folder (or its config.json), or a Hub id
    (hf-hub:ORG/NAME: its downloaded folder) -> the checkpoint folder (run -> best); an ensemble folder -> itself
    (model/ensemble.py loads its members)."""
    if hub.hub_id(path) is not None:
        return hub.snapshot(str(path))
    path = Path(path).expanduser()
    if path.is_file() and path.name in (MODEL_FILE, TIMM_CONFIG, TIMM_WEIGHTS):
        path = path.parent
    if (path / "checkpoints" / "best").is_dir():
        path = path / "checkpoints" / "best"
    if (path / ENSEMBLE_FILE).is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not (path / MODEL_FILE).is_file() and not (path / META_FILE).is_file() and not is_timm_folder(path):
        raise CheckpointError(f"{path}: not a checkpoint folder (no {MODEL_FILE}, and not a timm folder with "
                              f"{TIMM_CONFIG} + {TIMM_WEIGHTS})")
    return path


def load(folder: Path, with_state: bool = False) -> tuple[dict, dict | None]:
    """Verified load of (model payload, train state). Plain tensors and containers only."""
    if not (folder / MODEL_FILE).is_file() and not (folder / META_FILE).is_file() and is_timm_folder(folder):
        if with_state:
            raise CheckpointError(f"{folder}: a timm export holds weights only, so it cannot resume training")
        return timm_payload(folder), None
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


def timm_payload(folder: Path) -> dict:
    """The model.pt payload rebuilt from an `export --format timm` folder: weights from model.safetensors,
    the rest from config.json's checkbox_dist block, checked against timm's own fields in that file."""
    try:
        cfg = json.loads((folder / TIMM_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / TIMM_CONFIG}: not readable JSON ({err})") from None
    block = cfg.get(TIMM_BLOCK) if isinstance(cfg, dict) else None
    if not isinstance(block, dict) or block.get("format") != TIMM_FORMAT:
        raise CheckpointError(f"{folder}: a timm folder, but not one `checkbox-dist export --format timm` wrote (no "
                              f"'{TIMM_BLOCK}' block in {TIMM_CONFIG}), so its classes, preprocessing and "
                              f"temperature are unknown")
    mismatch = timm_config_mismatch(cfg, block)
    if mismatch:
        raise CheckpointError(f"{folder / TIMM_CONFIG}: {mismatch}; it was edited after the export")
    try:
        weights = load_file(str(folder / TIMM_WEIGHTS), device="cpu")
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{folder / TIMM_WEIGHTS}: unreadable ({str(err)[:200]})") from None
    return {"model": weights, "classes": list(block["classes"]), "model_name": block["model_name"],
            "preprocess": dict(block["preprocess"]), "temperature": float(block["temperature"]),
            "config": block.get("config", {}), "metrics": block.get("metrics", {}), "epoch": block.get("epoch"),
            "global_step": block.get("global_step"), "versions": block.get("versions", {})}


def timm_config_mismatch(cfg: dict, block: dict) -> str:
    """'' when timm's fields in config.json say what our block says (what timm alone would use), else what differs."""
    spec = PreprocessSpec.from_dict(block["preprocess"])
    pretrained = cfg.get("pretrained_cfg", {})
    mean, std = spec.normalization
    checks = {"architecture": (cfg.get("architecture"), block["model_name"]),
              "label_names": (cfg.get("label_names"), block["classes"]),
              "num_classes": (cfg.get("num_classes"), len(block["classes"])),
              "pretrained_cfg.input_size": (list(pretrained.get("input_size", [])),
                                            [spec.channels, *spec.height_width]),
              "pretrained_cfg.mean": (_rounded(pretrained.get("mean")), _rounded(mean)),
              "pretrained_cfg.std": (_rounded(pretrained.get("std")), _rounded(std))}
    for key, (found, expected) in checks.items():
        if found != expected:
            return f"{key} is {found!r} but the {TIMM_BLOCK} block says {expected!r}"
    return ""


def _rounded(values) -> list | None:
    return [round(float(v), 9) for v in values] if values is not None else None


@dataclass
class Restored:
    """What `restore` read besides what it loaded in place."""

    loop: dict  # the loop state as saved (train/checkpointing.py: LoopState)
    epoch_sums: list[float] | None  # this process's share of the interrupted epoch's running sums, or None
    world_size: int  # the world size that saved it
    micro_batch: int  # its micro-batch


def restore(folder: Path, classes: list[str], model, optimizer, scheduler, scaler, ema, rank: int,
            world: int) -> Restored:
    """Load a `last` checkpoint's full training state in place (weights, optimizer, schedule, scaler, EMA,
    this rank's RNG). Resumed mid-epoch, process 0 carries on the epoch's running sums over every process
    (checkpoints before those were saved: each process its own, and only on the same world size)."""
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
    set_rng_state(rng)
    loop, saved_world = saved["loop"], saved.get("world_size", 1)
    sums = None
    if loop["micro_step"] and saved.get("epoch_sums") is not None:
        sums = saved["epoch_sums"] if rank == 0 else None
    elif loop["micro_step"] and saved_world == world:
        sums = rng.get("epoch_sums")
    micro = saved.get("micro_batch") or payload.get("config", {}).get("data", {}).get("batch_size", 0)
    return Restored(loop, sums, saved_world, micro)


def set_rng_state(rng: dict) -> None:
    """A process's saved RNG state back in place: the CPU generator, and the current CUDA device's when the state
    has one and CUDA is here (a checkpoint from a GPU run resumes on a CPU-only machine with the CPU state only)."""
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def epoch_folders(checkpoints: Path) -> list[Path]:
    return sorted(p for p in checkpoints.glob("epoch_*") if p.is_dir())


def recover(checkpoints: Path, say=print) -> None:
    """Finish what a killed `save` left: drop its uncommitted temporary folders, and when it died between
    its two renames (NAME moved aside, the new one not yet in place) put the old one back. Run by one
    process before resuming; afterwards only committed checkpoints remain."""
    temporary, moved_aside = leftovers(checkpoints)
    for tmp in temporary:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in moved_aside:
        folder = checkpoints / original_name(old.name)
        if not folder.exists() and not problem(old):
            os.replace(old, folder)
            say(f"checkpoint: restored {folder} from {old.name} (its save was interrupted)")
        elif folder.exists() and not problem(folder):
            shutil.rmtree(old, ignore_errors=True)


def find_resumable(checkpoints: Path, say=print) -> Path | None:
    """Newest good checkpoint with a train state: last, else the newest epoch_N; says what it skipped."""
    candidates = [checkpoints / "last"] + list(reversed(epoch_folders(checkpoints)))
    candidates += [p for p in leftovers(checkpoints)[1] if original_name(p.name) == "last"]  # killed mid-swap
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


def model_from_payload(payload: dict, source: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The one way a model is rebuilt from a checkpoint payload: architecture, channels and pooling from
    the payload, weights loaded strictly, in eval mode on `device`."""
    channels = 4 if payload["preprocess"].get("alpha_channel") else 3
    # The pooling changes the graph but adds no weights: a max-pooled model loads strictly into an avg-pooled
    # one and predicts wrongly, so it must come from the payload's config.
    pool = payload.get("config", {}).get("model", {}).get("global_pool", "")
    model = build_model(ModelConfig(name=payload["model_name"], global_pool=pool), len(payload["classes"]), channels)
    load_weights(model, payload["model"], source)
    return model.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """For inference: (model in eval mode, payload) from any checkpoint path, strictly loaded."""
    folder = resolve(path)
    if (folder / ENSEMBLE_FILE).is_file():
        raise CheckpointError(f"{folder}: an ensemble folder; load its members with model.ensemble.load_models")
    payload, _ = load(folder)
    return model_from_payload(payload, str(folder), device), payload


def init_weights(model: torch.nn.Module, path: str | Path, classes: list[str]) -> None:
    """train.init_from: start `model` from a checkpoint's weights; a new head when the classes differ."""
    folder = resolve(path)
    payload, _ = load(folder)
    load_weights(model, payload["model"], str(path), skip_head=payload["classes"] != classes)
