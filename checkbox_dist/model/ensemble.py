"""An ensemble checkpoint folder: N models with the same classes and preprocessing, used as one model.

    ENSEMBLE/ensemble.json   format, member folder names, classes, preprocessing, seeds, where each came from
    ENSEMBLE/member_<i>/     a copy of member i's checkpoint folder (model.pt + meta.json, verified on load)

`checkbox-dist train ... train.ensemble_members=N` writes RUN/ensemble/ (train/members.py); `predict`, `eval`,
`serve`, `export` and `bench-infer` take it wherever they take a checkpoint. Every loader goes through
`load_models`, which refuses members that disagree, so averaging their probabilities is always meaningful.
The ensemble's probability is the mean of its members' calibrated probabilities.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from checkbox_dist.core.files import atomic_folder
from checkbox_dist.model import checkpoint
from checkbox_dist.model.checkpoint import ENSEMBLE_FILE, CheckpointError

FORMAT = "checkbox_dist.ensemble/1"


def is_ensemble(path: str | Path) -> bool:
    return (Path(path).expanduser() / ENSEMBLE_FILE).is_file()


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / ENSEMBLE_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / ENSEMBLE_FILE}: not readable JSON ({err})") from None
    if manifest.get("format") != FORMAT or not manifest.get("members"):
        raise CheckpointError(f"{folder / ENSEMBLE_FILE}: not an ensemble manifest of format {FORMAT}")
    return manifest


def member_folders(path: str | Path) -> list[Path]:
    """The checkpoint folders an argument names: an ensemble's members, or the one checkpoint."""
    path = Path(path).expanduser()
    if not is_ensemble(path):
        return [checkpoint.resolve(path)]
    return [path / name for name in read_manifest(path)["members"]]


def disagreement(payloads: list[dict], names: list[str]) -> str:
    """'' when every payload has the first one's classes and preprocessing, else what differs, in words."""
    first = payloads[0]
    for name, p in zip(names[1:], payloads[1:]):
        for key, label in (("classes", "classes"), ("preprocess", "preprocessing")):
            if p[key] != first[key]:
                return f"{name} has {label} {p[key]}, {names[0]} has {first[key]}"
    return ""


def load_models(path: str | Path, device: str | torch.device = "cpu") -> list[tuple[torch.nn.Module, dict]]:
    """[(model in eval mode, payload)] of a checkpoint (one) or an ensemble folder (its members, checked to
    agree: one CheckpointError line naming the member that does not)."""
    folders = member_folders(path)
    loaded = [checkpoint.load_model(f, device) for f in folders]
    problem = disagreement([p for _, p in loaded], [f.name for f in folders])
    if problem:
        raise CheckpointError(f"{path}: its members cannot be averaged: {problem}")
    return loaded


def write(out: Path, members: list[Path], info: dict | None = None) -> Path:
    """ENSEMBLE folder `out` from member checkpoint folders (copied in), atomically; refuses members that
    disagree on classes or preprocessing."""
    folders = [checkpoint.resolve(m) for m in members]
    payloads = [checkpoint.load(f)[0] for f in folders]
    problem = disagreement(payloads, [str(f) for f in folders])
    if problem:
        raise CheckpointError(f"cannot make an ensemble of these checkpoints: {problem}")
    names = [f"member_{i}" for i in range(len(folders))]
    manifest = {"format": FORMAT, "members": names, "classes": payloads[0]["classes"],
                "preprocess": payloads[0]["preprocess"], "model_names": [p["model_name"] for p in payloads],
                "seeds": [p.get("config", {}).get("train", {}).get("seed") for p in payloads],
                "temperatures": [float(p.get("temperature", 1.0)) for p in payloads],
                "sources": [str(f) for f in folders], **(info or {})}
    with atomic_folder(out) as tmp:
        for name, folder in zip(names, folders):
            shutil.copytree(folder, tmp / name, ignore=shutil.ignore_patterns(checkpoint.STATE_FILE, "*.onnx"))
        (tmp / ENSEMBLE_FILE).write_text(json.dumps(manifest, indent=1, default=str))
    return out
