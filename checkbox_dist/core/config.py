"""One typed config tree: nested dataclasses, loaded from YAML, with dotted command-line overrides.

    cfg = load_config("configs/quickstart.yaml", ["train.epochs=1", "model.name=resnet18"])

Every key has a type and a default here; a YAML file or an override only changes values. An unknown
key, a wrong type or a bad value raises `ConfigError` naming the key (and the file), which the CLI
prints as one line with exit code 2. `to_dict(cfg)` is what every run saves as `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from checkbox_dist.core.config_checks import ConfigError, check_values

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class AugmentConfig:
    """Train-time augmentation. Defaults are mild: widgets are symmetric, so no flips (seed's choice)."""

    hflip: float = 0.0  # probability
    vflip: float = 0.0
    degrees: float = 0.0  # random rotation range (+-)
    translate: float = 0.0  # fraction of the image size
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # zoom range of the affine
    brightness: float = 0.0  # colour jitter strengths (torchvision ColorJitter semantics)
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    invert: float = 0.0  # probability of inverting colours: turns light themes into dark ones
    grayscale: float = 0.0  # probability


@dataclass
class DataConfig:
    """Where images come from and how they become tensors."""

    root: str = ""  # ImageFolder: ROOT/<class>/* or ROOT/{train,val}/<class>/*; "" = synthetic
    synth_n: int = 600  # size of the embedded synthetic dataset used when root is ""
    synth_seed: int = 0
    synth_labels: str = "class"  # class | kind: 23 sub-folders, checked-radio, other-slider, ... (synth.folder_of)
    cache_dir: str = "~/.cache/checkbox_dist"  # synthetic datasets and decoded-image caches
    split_file: str = ""  # index written by `checkbox-dist split`; "" = split on the fly
    val_fraction: float = 0.2  # seed: 80/20, stratified
    split_seed: int = 42
    exclude_file: str = ""  # text file of relative paths to leave out (label audit)
    image_size: int = 224  # input height (and width, unless image_width says otherwise)
    # Input width; 0 = image_size (square). Real crops are wide (median 2.4:1, a quarter over 3.7:1): a wide
    # input letterboxes them without shrinking the control to a few pixels or squashing it sideways.
    image_width: int = 0
    resize: str = "letterbox"  # letterbox keeps the aspect (crops run to 10:1); stretch = seed's
    background: str = "#ffffff"  # alpha is composited over this colour, never dropped
    alpha_channel: bool = False  # also feed alpha as a 4th input channel
    normalize: str = "imagenet"  # imagenet | custom (mean/std below; `checkbox-dist stats` prints them)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    batch_size: int = 32  # per process; global batch = batch_size * processes * grad_accum_steps
    eval_batch_size: int = 64
    num_workers: int = 2
    on_bad_image: str = "error"  # error | skip (skipped files are listed once)
    balanced_sampling: bool = False  # sample classes equally (177/124/110 in the real data)
    device_cache: str = "auto"  # auto | on | off: keep decoded uint8 images on the accelerator
    device_cache_max_gb: float = 4.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    name: str = "resnet50"  # any timm model name
    pretrained: Union[bool, str] = False  # false | true (hub) | path to a state_dict/.safetensors
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    # Pooling before the head: "" = the model's own (avg for CNNs) | avg | max | avgmax | catavgmax. The class
    # is decided by a control that fills a small part of a wide crop; averaging dilutes it over the map.
    global_pool: str = ""


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.001  # seed default; for a base batch of `base_batch_size`
    momentum: float = 0.85  # seed default
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scale_lr: bool = False  # linear scaling: lr * global_batch / base_batch_size
    base_batch_size: int = 32
    clip_grad_norm: float = 0.0  # 0 = off


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | cosine | step | plateau
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    step_epochs: int = 30  # step: multiply by gamma every step_epochs
    gamma: float = 0.1
    plateau_patience: int = 5  # plateau: epochs without val-loss improvement
    plateau_factor: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 500  # seed: up to 500 with early stopping
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit)
    seed: int = 42
    mixed_precision: str = "no"  # no | fp16 | bf16
    grad_accum_steps: int = 1
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0 = off; EMA weights are evaluated and saved when on
    mixup_alpha: float = 0.0  # 0 = off; else lambda ~ Beta(alpha, alpha) per batch
    cutmix_alpha: float = 0.0  # 0 = off; with mixup_alpha too, each batch takes one of the two
    early_stopping_patience: int = 20  # evaluations without a new best (epochs at eval.every_epochs=1); 0 = off
    output_dir: str = ""  # the run folder; "" = runs/<config name>-<time>
    resume: str = ""  # "" | auto | path to a checkpoint folder
    init_from: str = ""  # fine-tune from a model file/checkpoint (weights only)
    channels_last: bool = False
    compile: bool = False
    log_every_steps: int = 10
    nan_policy: str = "stop"  # stop | skip: what a non-finite loss does
    progress: bool = True  # tqdm bars on the main process
    collective_timeout_s: float = 0.0  # how long a process waits for a hung peer; 0 = Accelerate's (gloo 30 min)


@dataclass
class EvalConfig:
    every_epochs: int = 1
    top_k: int = 2  # 3 classes: top-2 is the informative top-k
    best_rule: str = "seed"  # seed (val_loss < best and top1 >= best) | val_loss | val_top1 | val_f1
    confusion_every_epochs: int = 1  # write confusion_matrix_epoch_<N>.png every N epochs
    calibrate: bool = True  # fit temperature scaling on val at the end of training
    ece_bins: int = 15


@dataclass
class TrackingConfig:
    backends: list[str] = field(default_factory=list)  # wandb, tensorboard
    project: str = "checkbox_dist"
    entity: str = ""
    run_name: str = ""
    wandb_mode: str = "auto"  # auto (online if possible, else offline) | online | offline | disabled


@dataclass
class CheckpointConfig:
    keep_last: int = 2  # epoch checkpoints kept besides last and best
    every_epochs: int = 1
    every_steps: int = 0  # also save `last` mid-epoch every N optimizer steps (0 = off)


@dataclass
class PretrainConfig:
    """Stage one (checkbox_dist/pretrain.py): train on synthetic widgets first, then fine-tune from that model.
    Everything not listed here is the fine-tune's own config (model, image size, optimizer, augmentation)."""

    synth_n: int = 0  # synthetic images to pretrain on; 0 = off (one stage)
    synth_seed: int = 0
    labels: str = "class"  # data.synth_labels of stage one: class | kind (its classes balanced by construction)
    epochs: int = 10
    batch_size: int = 128  # per process
    lr: float = 0.0  # 0 = optim.lr
    warmup_epochs: float = 1.0
    val_fraction: float = 0.05  # a synthetic val split: the stage's own sanity check
    resize: str = ""  # "" = data.resize; letterbox | stretch
    output_dir: str = ""  # "" = <data.cache_dir>/pretrain/<model>-<hash of what changes the weights>
    # Rehearsal: also train the fine-tune on this many synthetic images (train split only, never val, so CV
    # scores stay real-data scores), generated with mix_seed; works with synth_n = 0 too. 0 = off.
    mix_n: int = 0
    mix_seed: int = 1  # 1, not synth_seed's 0: new images, not stage one's first mix_n again


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# Keys (prefixes) that change nothing a run computes: reruns of a CV run, or two runs sharing one stage one
# (pretrain.py), may differ in them.
RUN_ONLY_KEYS = ("train.progress", "train.log_every_steps", "data.num_workers", "data.cache_dir", "tracking.",
                 "train.resume", "train.output_dir", "data.device_cache", "data.eval_batch_size")

class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `mixed_precision: no` as False."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def _load_yaml(text: str):
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted for floats, nothing else converts."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_type)}, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
    if tp is str and value is None:
        return ""
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _apply(node: Any, updates: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(node))
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(node))
            raise ConfigError(f"unknown key {key!r} (known here: {known})")  # !r: a key may hold a newline
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of keys, got {value!r}")
            _apply(getattr(node, name), value, key + ".")
        else:
            setattr(node, name, _coerce(value, hints[name], key))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw  # not YAML: keep the text as a string
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file <- `section.key=value` overrides, then validated."""
    cfg = Config()
    where = ""
    if path:
        path = Path(path)
        where = f" (in {path})"
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = _load_yaml(path.read_text()) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a UTF-8 text file (a YAML config is text)") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a usable YAML config (nested too deeply)") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            problem = " ".join(str(getattr(err, "problem", None) or err).split())  # PyYAML's text spans lines
            raise ConfigError(f"{path}:{line} is not valid YAML ({problem})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        try:
            _apply(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{err}{where}") from None
    for text in overrides:
        keys, value = _parse_override(text)
        nested: Any = value
        for name in reversed(keys):
            nested = {name: nested}
        try:
            _apply(cfg, nested)
        except ConfigError as err:
            raise ConfigError(f"{err} (from override {text!r})") from None
    try:
        check_values(cfg, to_flat_dict(cfg))
    except ConfigError as err:
        raise ConfigError(f"{err}{where}") from None
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def to_flat_dict(cfg: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in to_dict(cfg).items() if dataclasses.is_dataclass(cfg) else cfg.items():
        if isinstance(value, dict):
            flat.update(to_flat_dict(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def from_dict(data: dict) -> Config:
    """Rebuild a Config saved by `to_dict` (checkpoints); keys unknown to this version are errors."""
    cfg = Config()
    _apply(cfg, data)
    return cfg


def recipe_hash(cfg: Config) -> str:
    """sha256 of the config without the keys that change nothing a run computes (RUN_ONLY_KEYS): two runs of
    one recipe share it, whatever their output folders, trackers or worker counts."""
    kept = {k: v for k, v in to_flat_dict(cfg).items() if not k.startswith(RUN_ONLY_KEYS)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
