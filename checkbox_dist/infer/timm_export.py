"""`checkbox-dist export --format timm`: a folder that timm alone loads, ready for the Hugging Face hub.

    checkbox-dist export --checkpoint runs/quickstart --format timm [--out DIR] [--cv-summary CV/cv_summary.json]
    timm.create_model("local-dir:DIR", pretrained=True)          # anywhere, without checkbox-dist
    hf upload ORG/NAME DIR .                                     # or timm.models.push_to_hub; nothing uploads here
    checkbox-dist predict --checkpoint hf-hub:ORG/NAME crop.png  # any command, from the Hub (model/hub.py)

DIR/
    config.json            timm's (architecture, num_classes, label_names in our class order, model_args,
                           pretrained_cfg: input size, mean/std, interpolation, crop mode) + a `checkbox_dist`
                           block: classes, preprocess spec, temperature, model name, config, metrics, versions
    model.safetensors      the weights (timm state dict)
    README.md              the model card (infer/model_card.py)
    training_config.yaml   the run's config, for `checkbox-dist train --config`

Written by `timm.models.save_for_hf`; the folder is checked before it is kept: timm must load it with
`local-dir:` and give the checkpoint's logits. predict, eval and serve accept it as a checkpoint
(model/checkpoint.py rebuilds the payload from config.json).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml

from checkbox_dist import __version__
from checkbox_dist.core.config import RUN_ONLY_KEYS, to_flat_dict
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_folder
from checkbox_dist.data.images import PreprocessSpec, normalize
from checkbox_dist.infer import model_card
from checkbox_dist.model import checkpoint

PARITY_TOLERANCE = 1e-5  # max |logit difference| between timm's load of the folder and the checkpoint


def _require_local_dir_support() -> None:
    try:
        from timm.models import parse_model_name

        source, _ = parse_model_name("local-dir:/x")
    except (ImportError, ValueError, RuntimeError):
        source = None
    if source != "local-dir":
        import timm

        raise UserError(f"export --format timm needs a timm that loads `local-dir:` folders (this is timm "
                        f"{timm.__version__}): pip install -U timm")


def data_config(spec: PreprocessSpec) -> dict:
    """timm's preprocessing fields: as close as timm's transforms get (crop_mode border = letterbox)."""
    mean, std = spec.normalization
    return {"input_size": (spec.channels, *spec.height_width), "mean": tuple(mean), "std": tuple(std),
            "interpolation": "bilinear", "crop_pct": 1.0,
            "crop_mode": "border" if spec.resize == "letterbox" else "squash"}


def block(payload: dict, source: Path) -> dict:
    """config.json's `checkbox_dist` block: what model/checkpoint.py needs to rebuild the payload."""
    manifest = source / checkpoint.META_FILE
    sha = json.loads(manifest.read_text()).get("files", {}).get(checkpoint.MODEL_FILE) if manifest.is_file() else None
    return {"format": checkpoint.TIMM_FORMAT, "classes": list(payload["classes"]),
            "model_name": payload["model_name"], "preprocess": dict(payload["preprocess"]),
            "temperature": float(payload.get("temperature", 1.0)), "epoch": payload.get("epoch"),
            "global_step": payload.get("global_step"), "metrics": payload.get("metrics", {}),
            "config": payload.get("config", {}), "source_checkpoint": str(source), "checkpoint_sha256": sha,
            "versions": dict(payload.get("versions", {}), exported_with=__version__)}


def training_config(config: dict) -> str:
    """The run's config as `train --config` takes it: run-specific keys cleared (output folder, resume, and the
    stage-one path that `pretrain.synth_n` recomputes)."""
    config = json.loads(json.dumps(config, default=str))
    train = config.get("train", {})
    train["output_dir"], train["resume"] = "", ""
    if config.get("pretrain", {}).get("synth_n"):
        train["init_from"] = ""
    return "# checkbox-dist train --config training_config.yaml  (set data.root to your copy of the data)\n" + \
        yaml.safe_dump(config, sort_keys=False)


def read_cv_summary(path: str, payload: dict) -> tuple[dict, str, list[str]]:
    """(cv_summary.json, the command that made it, notes on where its recipe differs from this model's)."""
    file = Path(path).expanduser()
    try:
        cv = json.loads(file.read_text())
        float(cv["top1"]["mean"]) + float(cv["macro_f1"]["mean"]) + int(cv["folds"])  # the keys the card uses
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"--cv-summary: {file} is not a cv_summary.json from `checkbox-dist cv` ({err})") from None
    data = payload.get("config", {}).get("data", {})
    ours = (payload["model_name"], data.get("image_size"), data.get("image_width", 0))
    theirs = (cv.get("model"), cv.get("image_size"), cv.get("image_width", 0))
    if None not in theirs and theirs != ours:
        raise UserError(f"--cv-summary: {file} scores {theirs[0]} at {theirs[1]}x{theirs[2] or theirs[1]} px, this "
                        f"checkpoint is {ours[0]} at {ours[1]}x{ours[2] or ours[1]} px: not this recipe")
    command = f"checkbox-dist cv --config {cv.get('config') or model_card.CONFIG_FILE} --folds {cv['folds']}"
    command += f" --seed {cv['seed']}" if cv.get("seed") is not None else ""
    command += " --selection best" if cv.get("selection") == "best" else ""
    command += f" data.root={cv['root']}" if cv.get("root") else ""
    return cv, command, _recipe_differences(file.parent / "cv.json", payload.get("config", {}))


def _recipe_differences(cv_json: Path, config: dict) -> list[str]:
    if not cv_json.is_file():
        return []
    resolved = json.loads(cv_json.read_text()).get("resolved_config", {})
    skip = RUN_ONLY_KEYS + ("eval.", "train.early_stopping_patience", "train.init_from", "data.split_file",
                            "data.val_fraction", "data.split_seed", "checkpoint.")
    ours, theirs = to_flat_dict(config), to_flat_dict(resolved)
    differ = sorted(k for k in set(ours) | set(theirs) if not k.startswith(skip) and ours.get(k) != theirs.get(k))
    if not differ:
        return ["The CV run's resolved config (cv.json) matches this model's recipe."]
    return ["Where the CV run's config differs from this model's: "
            + ", ".join(f"`{k}` {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ[:12])
            + (f" and {len(differ) - 12} more" if len(differ) > 12 else "") + "."]


def check_folder(folder: Path, model: torch.nn.Module, spec: PreprocessSpec, n: int = 3) -> float:
    """Max |logit difference| between timm.create_model("local-dir:folder") and `model` on random images."""
    import timm

    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    images = torch.randint(0, 256, (n, spec.channels, *spec.height_width), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    x = normalize(images, spec)
    with torch.inference_mode():
        return float((loaded(x) - model(x)).abs().max())


def export_timm(model: torch.nn.Module, payload: dict, source: Path, out: Path, license_id: str = "other",
                cv_summary: str = "") -> float:
    """Writes `out` atomically (save_for_hf + card + training config), checked with timm; returns the check."""
    from timm.models import save_for_hf

    _require_local_dir_support()
    spec = PreprocessSpec.from_dict(payload["preprocess"])
    cv, cv_command, cv_notes = read_cv_summary(cv_summary, payload) if cv_summary else (None, "", [])
    name = out.name if out.name not in ("timm", "") else f"checkbox-dist-{payload['model_name']}"
    command = f"checkbox-dist export --checkpoint {source} --format timm"
    with atomic_folder(out) as tmp:
        model = model.cpu().eval()
        model_config = {"label_names": list(payload["classes"]), checkpoint.TIMM_BLOCK: block(payload, source),
                        "pretrained_cfg": {"tag": "checkbox_dist", "license": license_id}}
        save_for_hf(model, str(tmp), safe_serialization=True, data_config=data_config(spec), model_config=model_config)
        (tmp / "README.md").write_text(model_card.card(payload, name, license_id, cv, cv_command, cv_notes, command))
        (tmp / model_card.CONFIG_FILE).write_text(training_config(payload.get("config", {})))
        os.chmod(tmp / checkpoint.TIMM_WEIGHTS, (tmp / "README.md").stat().st_mode & 0o777)  # safetensors writes 0600
        diff = check_folder(tmp, model, spec)
        if not diff < PARITY_TOLERANCE:
            raise UserError(f"timm's load of the exported folder does not match the checkpoint: max |logit "
                            f"difference| {diff:.2e} >= {PARITY_TOLERANCE:g}; {out} not written")
        reason = checkpoint.timm_config_mismatch(json.loads((tmp / checkpoint.TIMM_CONFIG).read_text()),
                                                 block(payload, source))
        if reason:
            raise UserError(f"timm wrote a config.json that disagrees with the checkpoint ({reason}); "
                            f"{out} not written")
    return diff
