"""build_model: a timm classifier by name, from scratch, from the hub, or from a local weights file.

    model.pretrained: false                random init (the default here: no machine reaches a model hub)
    model.pretrained: true                 timm downloads model.name's default pretrained weights (ImageNet)
    model.pretrained: hf-hub:ORG/NAME      a timm model on the Hugging Face Hub (model/hub.py: the cache, or
                                           offline with HF_HUB_OFFLINE=1), e.g. an `export --format timm` folder
    model.pretrained: local-dir:PATH       a timm model folder (config.json + model.safetensors); PATH alone too
    model.pretrained: /path/w.pth          a local state_dict (.pth/.pt/.bin) or .safetensors file

With weights, timm's own loader adapts the stem to `in_chans` and drops the head when the class count
differs from the source's; every other tensor must match (strict), so a wrong file fails loudly. A timm
folder or Hub model must be of model.name's architecture (its config.json `architecture`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import timm
import torch

from checkbox_dist.core.errors import UserError
from checkbox_dist.model import hub


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


def _from_timm_folder(cfg, source: str, **kwargs) -> torch.nn.Module:
    """model.pretrained = hf-hub:ORG/NAME, local-dir:PATH or a timm folder: timm's `local-dir:` loader."""
    folder = hub.timm_folder(source)
    try:
        architecture = json.loads((folder / hub.TIMM_CONFIG).read_text()).get("architecture", "")
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"model.pretrained: {source}: unreadable {hub.TIMM_CONFIG} ({err})") from None
    if architecture.split(".")[0] != cfg.name.split(".")[0]:
        raise UserError(f"model.pretrained: {source} is a {architecture or '(no architecture)'}, model.name is "
                        f"{cfg.name}: set model.name={architecture}")
    try:
        return _create(f"local-dir:{folder}", pretrained=True, **kwargs)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - shape/key mismatch or an unreadable file
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise UserError(f"model.pretrained: {source} does not load into {cfg.name} ({reason})") from None


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
        reason = hub.hub_unreachable()
        if reason:
            raise UserError(f"model.pretrained=true: the Hugging Face hub is unreachable ({reason}); "
                            f"set model.pretrained to a local weights file or timm folder")
        try:
            return _create(cfg.name, pretrained=True, **kwargs)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - any hub/network failure becomes one line
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise UserError(f"model.pretrained=true: could not fetch {cfg.name} weights from the hub "
                            f"({reason}); set model.pretrained to a local weights file or timm folder") from None
    path = Path(os.path.expanduser(str(pretrained)))
    if str(pretrained).startswith((hub.HUB, hub.LOCAL)) or path.is_dir():
        return _from_timm_folder(cfg, str(pretrained), **kwargs)
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
