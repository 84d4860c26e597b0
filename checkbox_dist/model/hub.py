"""Model sources named the way timm names them: `hf-hub:ORG/NAME[@REVISION]` and `local-dir:PATH`.

    snapshot("hf-hub:ORG/NAME")    -> the local folder huggingface_hub downloaded (or found in its cache)
    timm_folder("local-dir:PATH")  -> PATH, checked to hold a timm model (config.json + model.safetensors)

The one place a Hub id becomes a folder: model/checkpoint.py `resolve` (predict, eval, serve, export) and
model/build.py (`model.pretrained`) both call `snapshot`. huggingface_hub does the work with its own settings:
HF_HUB_CACHE / HF_HOME for the cache, HF_TOKEN for private repositories, HF_ENDPOINT for a mirror, and
HF_HUB_OFFLINE=1 to answer from the cache alone without touching the network. Only the files a timm model
folder needs are fetched. Nothing is ever uploaded from here (publishing: `hf upload ORG/NAME DIR`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from checkbox_dist.core.errors import UserError

HUB, LOCAL = "hf-hub:", "local-dir:"
TIMM_CONFIG, TIMM_WEIGHTS = "config.json", "model.safetensors"
# What `export --format timm` writes: the model, its card and its training config.
FILES = [TIMM_CONFIG, TIMM_WEIGHTS, "README.md", "training_config.yaml"]


def hub_id(source) -> str | None:
    """'ORG/NAME[@REVISION]' when `source` names a Hub model, else None."""
    text = str(source)
    return text[len(HUB):] if text.startswith(HUB) else None


def local_name(source) -> str:
    """Where outputs of a command on Hub model `source` go by default: NAME in the working folder (never the
    Hub cache)."""
    return str(Path.cwd() / hub_id(source).partition("@")[0].split("/")[-1])


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    import huggingface_hub.constants as constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false")


def hub_unreachable(timeout_s: float = 5.0) -> str:
    """'' when the Hub (huggingface.co, or HF_ENDPOINT) accepts a TCP connection, else the reason. Without a
    route, huggingface_hub retries for ~45 s per file; one probe says it in 5 s."""
    if offline():
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((host.hostname, host.port or 443), timeout=timeout_s):
            return ""
    except OSError as err:
        return f"{host.hostname}: {err.strerror or err}"


def snapshot(source: str) -> Path:
    """The local folder of Hub model `source` (hf-hub:ORG/NAME[@REVISION]): downloaded, or from the cache when
    the Hub is unreachable or HF_HUB_OFFLINE is set; one UserError line when neither has it."""
    from huggingface_hub import snapshot_download

    repo_id, _, revision = hub_id(source).partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"{source}: a Hub model is named hf-hub:ORG/NAME (or hf-hub:ORG/NAME@REVISION)")
    unreachable = hub_unreachable()
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=FILES,
                                        local_files_only=bool(unreachable)))
    except Exception as err:  # noqa: BLE001 - huggingface_hub's errors (missing repo, no cache, auth) as one line
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        where = (f"not in the Hugging Face cache ({_cache()}) and the Hub is not asked ({unreachable})"
                 if unreachable else reason)
        raise UserError(f"{source}: could not get it from the Hugging Face Hub: {where}") from None
    if not (folder / TIMM_CONFIG).is_file() or not (folder / TIMM_WEIGHTS).is_file():
        raise UserError(f"{source}: the Hub repository has no {TIMM_CONFIG} + {TIMM_WEIGHTS}: not a timm model")
    return folder


def _cache() -> str:
    import huggingface_hub.constants as constants

    return constants.HF_HUB_CACHE


def timm_folder(source: str) -> Path:
    """The folder of a timm model named `local-dir:PATH`, `hf-hub:ORG/NAME` or by its path."""
    if hub_id(source) is not None:
        return snapshot(source)
    folder = Path(os.path.expanduser(str(source).removeprefix(LOCAL)))
    if not (folder / TIMM_CONFIG).is_file() or not (folder / TIMM_WEIGHTS).is_file():
        raise UserError(f"{source}: not a timm model folder (no {TIMM_CONFIG} + {TIMM_WEIGHTS})")
    return folder
