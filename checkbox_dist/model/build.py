"""build_model: a timm classifier by name, from scratch, from the hub, or from a local weights file.

    model.pretrained: false          random init (the default here: no machine reaches a model hub)
    model.pretrained: true           timm downloads the ImageNet weights from the Hugging Face hub
    model.pretrained: /path/w.pth    a local state_dict (.pth/.pt/.bin) or .safetensors file

With weights, timm's own loader adapts the stem to `in_chans` and drops the 1000-class head when the
class count differs; every other tensor must match (strict), so a wrong file fails loudly.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch

from checkbox_dist.core.errors import UserError


def _create(name: str, **kwargs) -> torch.nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise UserError(f"model.name: '{name}' is not a timm model (see timm.list_models())") from None
        raise
    except AssertionError as err:  # timm asserts on a pooling the model has not got ("Invalid pool type")
        if "global_pool" not in kwargs:
            raise
        raise UserError(f"model.global_pool: {kwargs['global_pool']!r} does not work with {name} ({err})") from None


def _hub_unreachable(timeout_s: float = 5.0) -> str:
    """'' when huggingface.co (or HF_ENDPOINT) accepts a TCP connection, else the reason."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((host.hostname, host.port or 443), timeout=timeout_s):
            return ""
    except OSError as err:
        return f"{host.hostname}: {err.strerror or err}"


def build_model(cfg, num_classes: int, in_chans: int = 3) -> torch.nn.Module:
    """`cfg` is the ModelConfig; `num_classes` comes from the data, never from the config."""
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=cfg.drop_rate)
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if cfg.global_pool:
        kwargs["global_pool"] = cfg.global_pool
    pretrained = cfg.pretrained
    if pretrained is False or pretrained in ("", "false", "False"):
        return _create(cfg.name, pretrained=False, **kwargs)
    if pretrained is True or pretrained in ("true", "True"):
        # Without a route to the hub, huggingface_hub retries for ~45 s per file; probe once instead.
        reason = _hub_unreachable()
        if reason:
            raise UserError(f"model.pretrained=true: the Hugging Face hub is unreachable ({reason}); "
                            f"set model.pretrained to a local weights file")
        try:
            return _create(cfg.name, pretrained=True, **kwargs)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - any hub/network failure becomes one line
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise UserError(f"model.pretrained=true: could not fetch {cfg.name} weights from the hub "
                            f"({reason}); set model.pretrained to a local weights file") from None
    path = Path(os.path.expanduser(str(pretrained)))
    if not path.is_file():
        raise UserError(f"model.pretrained: weights file not found: {path}")
    try:
        return _create(cfg.name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - shape/key mismatch or an unreadable file
        reason = str(err).splitlines()[0][:200]
        raise UserError(f"model.pretrained: {path} does not fit {cfg.name} ({reason})") from None


def load_weights(model: torch.nn.Module, state_dict: dict, source: str, skip_head: bool = False) -> None:
    """Strict load; with `skip_head`, the classifier may differ (fine-tuning to other classes)."""
    if skip_head:
        head = model.get_classifier()
        head_keys = {k for k in model.state_dict() if any(k.startswith(n + ".") for n, m in
                                                           model.named_modules() if m is head)}
        state_dict = {k: v for k, v in state_dict.items() if k not in head_keys}
        own = model.state_dict()
        state_dict.update({k: own[k] for k in head_keys})
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        first = str(err).split("\n")[1].strip() if "\n" in str(err) else str(err)
        raise UserError(f"{source}: weights do not fit this model ({first[:200]})") from None
