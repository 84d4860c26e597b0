"""The value rules of the config tree (core/config.py holds the keys, their types and defaults).

`config_loader.load_config` runs `check_values` after the YAML file and the overrides are applied, so an
out-of-range value is one `ConfigError` naming the key, before anything is built.
"""

from __future__ import annotations

import math
from typing import Any

from checkbox_dist.core.errors import UserError


class ConfigError(UserError):
    """A config file or override that cannot be used; the message names the key."""


CHOICES = {
    "data.resize": ("letterbox", "stretch"),
    "pretrain.resize": ("", "letterbox", "stretch"),
    "data.synth_labels": ("class", "kind"),
    "pretrain.labels": ("class", "kind"),
    "data.normalize": ("imagenet", "custom"),
    "data.on_bad_image": ("error", "skip"),
    "data.device_cache": ("auto", "on", "off"),
    "optim.name": ("sgd", "adam", "adamw"),
    "schedule.name": ("constant", "cosine", "step", "plateau"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.nan_policy": ("stop", "skip"),
    "eval.best_rule": ("seed", "val_loss", "val_top1", "val_f1", "val_top1_smooth", "final"),
    "tracking.wandb_mode": ("auto", "online", "offline", "disabled"),
}
# Accelerate's trackers (accelerate.utils.LoggerType, "all" left out: a run names what it logs to) and the module each
# needs; train/session.py refuses one that is not installed (Accelerate would drop it with a warning).
TRACKERS = {"wandb": ("wandb",), "tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",),
            "comet_ml": ("comet_ml",), "aim": ("aim",), "clearml": ("clearml",), "dvclive": ("dvclive",),
            "swanlab": ("swanlab",), "trackio": ("trackio",)}
POSITIVE = {"data.image_size", "data.batch_size", "data.eval_batch_size", "train.epochs",
            "train.grad_accum_steps", "eval.every_epochs", "eval.top_k", "eval.ece_bins", "eval.smooth_evals",
            "optim.base_batch_size", "train.log_every_steps", "checkpoint.every_epochs", "schedule.step_epochs",
            "pretrain.epochs", "pretrain.batch_size"}
NON_NEGATIVE = {"data.num_workers", "data.synth_n", "train.max_steps",
                "train.label_smoothing", "train.early_stopping_patience", "checkpoint.keep_last",
                "checkpoint.every_steps", "data.device_cache_max_gb", "train.mixup_alpha", "train.cutmix_alpha",
                "schedule.warmup_epochs", "optim.clip_grad_norm", "schedule.gamma",
                "schedule.min_lr", "schedule.plateau_patience", "model.drop_rate", "model.drop_path_rate",
                "train.collective_timeout_s", "pretrain.synth_n", "pretrain.warmup_epochs",
                "pretrain.mix_n", "data.image_width", "train.global_batch_size", "pretrain.global_batch_size",
                "data.augment.degrees", "data.augment.translate", "data.augment.brightness",
                "data.augment.contrast", "data.augment.saturation"}
# key -> (low, high, high included): values in [low, high] or [low, high). A learning rate over 10 or a weight
# decay over 1 is a typo (an optimizer step would throw the weights to inf); probabilities are probabilities.
RANGES = {"optim.lr": (0.0, 10.0, True), "pretrain.lr": (0.0, 10.0, True), "optim.momentum": (0.0, 1.0, False),
          "optim.weight_decay": (0.0, 1.0, True), "data.augment.hflip": (0.0, 1.0, True),
          "data.augment.vflip": (0.0, 1.0, True), "data.augment.invert": (0.0, 1.0, True),
          "data.augment.grayscale": (0.0, 1.0, True), "data.augment.hue": (0.0, 0.5, True)}


def check_values(cfg: Any, flat: dict[str, Any]) -> None:
    """Raise ConfigError naming the first key whose value is out of range (cfg: a config.Config, flat: its
    to_flat_dict)."""
    for key, value in flat.items():  # NaN passes every `<`/`>` check below; inf overflows int(warmup * steps)
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(f"{key}: {flat[key]!r} is not one of {', '.join(allowed)}")
    for key, (low, high, closed) in RANGES.items():
        if not (low <= flat[key] <= high if closed else low <= flat[key] < high):
            raise ConfigError(f"{key}: must be in [{low:g}, {high:g}{']' if closed else ')'}, got {flat[key]!r}")
    for key in POSITIVE:
        if flat[key] <= 0:
            raise ConfigError(f"{key}: must be > 0, got {flat[key]!r}")
    for key in NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"{key}: must be >= 0, got {flat[key]!r}")
    if not 0.0 < cfg.pretrain.val_fraction < 1.0:
        raise ConfigError(f"pretrain.val_fraction: must be between 0 and 1, got {cfg.pretrain.val_fraction}")
    if not 0.0 < cfg.data.device_cache_free_fraction <= 1.0:
        raise ConfigError(f"data.device_cache_free_fraction: must be in (0, 1], got {cfg.data.device_cache_free_fraction}")
    if cfg.data.shards_by_rank and cfg.data.device_cache == "on":
        raise ConfigError("data.shards_by_rank=true streams each process's own shards; data.device_cache=on would "
                          "decode every shard on every host: use data.device_cache=auto or off")
    if cfg.data.shards_by_rank and cfg.pretrain.mix_n:
        raise ConfigError("data.shards_by_rank=true needs every training image in a tar shard; pretrain.mix_n adds "
                          "synthetic files: set it to 0")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be in [0, 1) (0 = refit on every image), "
                          f"got {cfg.data.val_fraction}")
    if cfg.data.val_fraction == 0 and cfg.schedule.name == "plateau":
        raise ConfigError("schedule.name=plateau steps on the val loss; a refit (data.val_fraction=0) has none: "
                          "use a fixed schedule (cosine, step, constant)")
    if cfg.train.ensemble_members < 1:
        raise ConfigError(f"train.ensemble_members: must be >= 1, got {cfg.train.ensemble_members}")
    if cfg.train.global_batch_size and cfg.train.grad_accum_steps != 1:
        raise ConfigError(f"train.grad_accum_steps={cfg.train.grad_accum_steps} and train.global_batch_size="
                          f"{cfg.train.global_batch_size} are both set: with a global batch the accumulation is "
                          f"derived from the world size; drop train.grad_accum_steps")
    if not 0.0 <= cfg.train.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing: must be in [0, 1), got {cfg.train.label_smoothing}")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay: must be in [0, 1), got {cfg.train.ema_decay}")
    for key in ("mean", "std"):
        values = getattr(cfg.data, key)
        if len(values) != 3 or (key == "std" and min(values) <= 0):
            raise ConfigError(f"data.{key}: expected 3 numbers (R, G, B){', all > 0' if key == 'std' else ''}")
    scale = cfg.data.augment.scale
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise ConfigError(f"data.augment.scale: expected [min, max] with 0 < min <= max, got {scale}")
    if len(cfg.optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.optim.betas):
        raise ConfigError(f"optim.betas: expected 2 numbers in [0, 1), got {cfg.optim.betas}")
    for key in ("model.drop_rate", "model.drop_path_rate"):
        if flat[key] >= 1.0:
            raise ConfigError(f"{key}: must be in [0, 1), got {flat[key]!r}")
    if not 0.0 < cfg.schedule.plateau_factor < 1.0:
        raise ConfigError(f"schedule.plateau_factor: must be in (0, 1), got {cfg.schedule.plateau_factor}")
    if cfg.schedule.warmup_epochs > 1e6:  # int(warmup_epochs * steps_per_epoch) must stay a number
        raise ConfigError(f"schedule.warmup_epochs: must be at most 1e6, got {cfg.schedule.warmup_epochs}")
    for backend in cfg.tracking.backends:
        if backend not in TRACKERS:
            raise ConfigError(f"tracking.backends: {backend!r} is not one of {', '.join(TRACKERS)}")
    if cfg.data.root == "" and cfg.data.synth_n < 6:
        raise ConfigError("data.synth_n: the synthetic dataset needs at least 6 images (2 per class)")
    if 0 < cfg.pretrain.synth_n < 6:
        raise ConfigError("pretrain.synth_n: the synthetic dataset needs at least 6 images (2 per class); 0 = off")
