"""One typed config tree: nested dataclasses, one section per concern, every key with its type, default and meaning.

Every key has a type and a default here; a YAML file or an override only changes values (core/config_loader.py
reads them, core/config_checks.py holds the value rules). docs/CONFIG.md is generated from these dataclasses
(core/config_reference.py). `to_dict(cfg)` is what every run saves as `config.yaml`; `recipe_hash(cfg)` is the
same for two runs of one recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Union

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def setting(default: Any, doc: str) -> Any:
    """A config key: its default and one line of meaning (docs/CONFIG.md is generated from these).
    A list default is copied for every Config, so no two configs share one list."""
    if isinstance(default, list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def section(cls: type) -> Any:
    """A sub-section of the tree (its docstring says what it holds)."""
    return field(default_factory=cls)


@dataclass
class AugmentConfig:
    """Train-time augmentation. Defaults are mild: widgets are symmetric, so no flips (seed's choice)."""

    hflip: float = setting(0.0, "probability of a horizontal flip")
    vflip: float = setting(0.0, "probability of a vertical flip")
    degrees: float = setting(0.0, "random rotation range (+-degrees)")
    translate: float = setting(0.0, "random shift, as a fraction of the image size")
    scale: list[float] = setting([1.0, 1.0], "zoom range of the affine [low, high]")
    brightness: float = setting(0.0, "colour jitter strength (torchvision ColorJitter semantics)")
    contrast: float = setting(0.0, "colour jitter strength (torchvision ColorJitter semantics)")
    saturation: float = setting(0.0, "colour jitter strength (torchvision ColorJitter semantics)")
    hue: float = setting(0.0, "colour jitter strength (torchvision ColorJitter semantics)")
    invert: float = setting(0.0, "probability of inverting colours: turns light themes into dark ones")
    grayscale: float = setting(0.0, "probability of turning the image grey")


@dataclass
class DataConfig:
    """Where images come from and how they become tensors."""

    root: str = setting("", 'ROOT/<class>/* or ROOT/{train,val}/<class>/*, a .csv/.jsonl/.parquet manifest, a saved '
                            'HF dataset, tar shards (a folder or glob; docs/DATA.md); "" = synthetic')
    synth_n: int = setting(600, 'size of the embedded synthetic dataset used when root is ""')
    synth_seed: int = setting(0, "seed of the synthetic dataset")
    synth_labels: str = setting("class", "class | kind: sub-folders per class, or per class and drawn kind "
                                         "(23: checked-radio, other-slider, ...)")
    cache_dir: str = setting("~/.cache/checkbox_dist", "synthetic datasets, decoded-image caches, data indexes")
    split_file: str = setting("", 'index written by `checkbox-dist split`; "" = split on the fly')
    val_fraction: float = setting(0.2, "share of the images held out for validation (seed: 80/20, stratified); 0 = "
                                       "a refit: train on every image, fixed schedule, final weights "
                                       "(eval.cv_dir gives its estimate and temperature)")
    split_seed: int = setting(42, "seed of the train/val split")
    exclude_file: str = setting("", "text file of relative paths to leave out (label audit)")
    image_size: int = setting(224, "input height (and width, unless image_width says otherwise)")
    # Real crops are wide (median 2.4:1, a quarter over 3.7:1): a wide input letterboxes them without
    # shrinking the control to a few pixels or squashing it sideways.
    image_width: int = setting(0, "input width; 0 = image_size (square); e.g. 320 with image_size 128 for wide crops")
    resize: str = setting("letterbox", "letterbox keeps the aspect (crops run to 10:1); stretch = seed's")
    background: str = setting("#ffffff", "alpha is composited over this colour, never dropped")
    alpha_channel: bool = setting(False, "also feed alpha as a 4th input channel")
    normalize: str = setting("imagenet", "imagenet | custom (mean/std below; `checkbox-dist stats` prints them)")
    mean: list[float] = setting(IMAGENET_MEAN, "per-channel mean for normalize=custom")
    std: list[float] = setting(IMAGENET_STD, "per-channel std for normalize=custom")
    batch_size: int = setting(32, "the micro-batch: images per process per forward; with train.global_batch_size "
                                  "the accumulation is derived from it, else global = batch_size * processes * "
                                  "grad_accum_steps")
    eval_batch_size: int = setting(64, "batch size of evaluation, per process")
    num_workers: int = setting(2, "data loader worker processes")
    on_bad_image: str = setting("error", "error | skip (skipped files and bad manifest rows are listed once)")
    balanced_sampling: bool = setting(False, "sample classes equally (177/124/110 in the real data)")
    device_cache: str = setting("auto", "auto | on | off: keep decoded uint8 images on the accelerator")
    device_cache_free_fraction: float = setting(0.5, "device_cache=auto holds the decoded set on the device when it "
                                                     "takes at most this share of the device's free memory (CPU: "
                                                     "the host's available memory)")
    device_cache_max_gb: float = setting(0.0, "device_cache=auto: also never more than this (GB); 0 = no cap")
    shards_by_rank: bool = setting(False, "tar shards only: process r trains on the images of shards r, r + W, ... "
                                          "(W processes) and streams them; the order then depends on W (docs/DATA.md)")
    augment: AugmentConfig = section(AugmentConfig)


@dataclass
class ModelConfig:
    """The network: any timm model, built with the data's number of classes."""

    name: str = setting("resnet50", "any timm model name")
    pretrained: Union[bool, str] = setting(False, "false | true (timm's default weights, from the hub) | hf-hub:ORG/NAME "
                                                   "| local-dir:PATH (a timm folder) | a state_dict/.safetensors file")
    drop_rate: float = setting(0.0, "dropout before the classifier")
    drop_path_rate: float = setting(0.0, "stochastic depth (models that support it)")
    # The class is decided by a control that fills a small part of a wide crop; averaging dilutes it over the map.
    global_pool: str = setting("", 'pooling before the head: "" = the model\'s own (avg for CNNs) | avg | max | '
                                   "avgmax | catavgmax")
    sync_batchnorm: bool = setting(False, "BatchNorm statistics over every process's micro-batch together, as one "
                                          "process holding all of them would (model/norm.py); off = per process, "
                                          "as DDP does")


@dataclass
class OptimConfig:
    """The optimizer."""

    name: str = setting("sgd", "sgd | adam | adamw")
    lr: float = setting(0.001, "learning rate (seed default) for a base batch of `base_batch_size`")
    momentum: float = setting(0.85, "sgd momentum (seed default)")
    nesterov: bool = setting(False, "sgd: Nesterov momentum")
    weight_decay: float = setting(0.0, "weight decay")
    betas: list[float] = setting([0.9, 0.999], "adam/adamw betas")
    scale_lr: bool = setting(False, "linear scaling: lr * global_batch / base_batch_size")
    base_batch_size: int = setting(32, "the global batch that lr is meant for (with scale_lr)")
    clip_grad_norm: float = setting(0.0, "clip the gradient norm to this; 0 = off")


@dataclass
class ScheduleConfig:
    """The learning-rate schedule."""

    name: str = setting("constant", "constant | cosine | step | plateau")
    warmup_epochs: float = setting(0.0, "linear warm-up from 0, in epochs")
    min_lr: float = setting(0.0, "cosine: the final learning rate")
    step_epochs: int = setting(30, "step: multiply by gamma every step_epochs")
    gamma: float = setting(0.1, "step: the factor")
    plateau_patience: int = setting(5, "plateau: epochs without val-loss improvement")
    plateau_factor: float = setting(0.1, "plateau: the factor")


@dataclass
class TrainConfig:
    """The training run: length, precision, regularisation, the run folder, resuming."""

    epochs: int = setting(500, "training epochs (seed: up to 500, with early stopping)")
    max_steps: int = setting(0, "stop after this many optimizer steps (0 = no limit)")
    seed: int = setting(42, "seed of weights, data order and augmentation")
    mixed_precision: str = setting("no", "no | fp16 | bf16")
    global_batch_size: int = setting(0, "images per optimizer step over all processes, on any launch shape (the "
                                        "accumulation is derived from the world size; docs/LAUNCH.md); 0 = "
                                        "data.batch_size * processes * grad_accum_steps")
    grad_accum_steps: int = setting(1, "batches per optimizer step; only without global_batch_size")
    exact_gradient_sum: bool = setting(False, "sum each step's micro-batch gradients in float64 and round once: "
                                              "bit-identical weights on every launch shape, for a float64 copy "
                                              "of the gradients and an all-reduce after backward (not on XLA; "
                                              "docs/LAUNCH.md)")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy")
    ema_decay: float = setting(0.0, "0 = off; EMA weights are evaluated and saved when on")
    mixup_alpha: float = setting(0.0, "0 = off; else lambda ~ Beta(alpha, alpha) per batch")
    cutmix_alpha: float = setting(0.0, "0 = off; with mixup_alpha too, each batch takes one of the two")
    early_stopping_patience: int = setting(20, "evaluations without a new best (epochs at eval.every_epochs=1); "
                                               "0 = off")
    output_dir: str = setting("", 'the run folder; "" = runs/<config name>-<time>')
    resume: str = setting("", '"" | auto | path to a checkpoint folder')
    init_from: str = setting("", "fine-tune from a model file/checkpoint (weights only)")
    channels_last: bool = setting(False, "channels-last memory format (faster convolutions on GPUs)")
    compile: bool = setting(False, "torch.compile the model")
    log_every_steps: int = setting(10, "a metrics.jsonl row (and a progress update) every N optimizer steps")
    nan_policy: str = setting("stop", "stop | skip: what a non-finite loss does")
    progress: bool = setting(True, "progress on the main process: tqdm bars on a terminal, else a plain line per "
                                   "log interval (files, pipes, Slurm); false = neither")
    ensemble_members: int = setting(1, "train N members, seeds train.seed + 0..N-1, one after the other, into "
                                       "RUN/members/seed_<S>, and RUN/ensemble: one model averaging them")
    collective_timeout_s: float = setting(0.0, "how long a process waits for a hung peer; 0 = Accelerate's "
                                               "(gloo 30 min)")


@dataclass
class EvalConfig:
    """Validation during training, the best-model rule and calibration."""

    every_epochs: int = setting(1, "evaluate every N epochs")
    top_k: int = setting(2, "the k of top-k accuracy (3 classes: top-2 is the informative one)")
    best_rule: str = setting("final", "which epoch checkpoints/best keeps (train/selection.py): seed (val_loss < best "
                                     "and top1 >= best) | val_loss | val_top1 | val_f1 | val_top1_smooth (best "
                                     "trailing mean of val top-1 over eval.smooth_evals evaluations, ties to the "
                                     "later) | final (the last epoch, as `last`)")
    smooth_evals: int = setting(3, "evaluations in val_top1_smooth's trailing window")
    confusion_every_epochs: int = setting(1, "write confusion_matrix_epoch_<N>.png every N epochs")
    calibrate: bool = setting(True, "fit temperature scaling on val at the end of training")
    cv_dir: str = setting("", "a `checkbox-dist cv --out` folder of this recipe: a refit (data.val_fraction=0) "
                              "quotes its estimate and fits its temperature on its out-of-fold probabilities")
    ece_bins: int = setting(15, "bins of the expected calibration error")


@dataclass
class TrackingConfig:
    """Experiment trackers (the run folder's metrics.jsonl is always written)."""

    backends: list[str] = setting([], "trackers to log to, any of Accelerate's: wandb, tensorboard (pip install "
                                      "'checkbox_dist[tensorboard]'), mlflow, comet_ml, aim, clearml, dvclive, "
                                      "swanlab, trackio ([] = none)")
    project: str = setting("checkbox_dist", "W&B project, TensorBoard folder, MLflow experiment")
    entity: str = setting("", 'W&B entity (team or user); "" = your default')
    run_name: str = setting("", 'tracker run name; "" = the run folder\'s name')
    wandb_mode: str = setting("auto", "auto (online if possible, else offline) | online | offline | disabled")
    mlflow_uri: str = setting("", 'MLflow tracking URI (sqlite:///PATH, file:PATH, http://server); "" = '
                                  "MLFLOW_TRACKING_URI, else a SQLite store in RUN/tracking/mlflow.db (never a server "
                                  "unless one is named)")


@dataclass
class CheckpointConfig:
    """What is saved, and how often."""

    keep_last: int = setting(2, "epoch checkpoints kept besides last and best")
    every_epochs: int = setting(1, "save an epoch checkpoint every N epochs")
    every_steps: int = setting(0, "also save `last` mid-epoch every N optimizer steps (0 = off)")


@dataclass
class PretrainConfig:
    """Stage one (train/pretrain.py): train on synthetic widgets first, then fine-tune from that model.
    Everything not listed here is the fine-tune's own config (model, image size, optimizer, augmentation)."""

    synth_n: int = setting(0, "synthetic images to pretrain on; 0 = off (one stage)")
    synth_seed: int = setting(0, "seed of stage one's synthetic images")
    labels: str = setting("class", "data.synth_labels of stage one: class | kind (its classes balanced by "
                                   "construction)")
    epochs: int = setting(10, "epochs of stage one")
    batch_size: int = setting(128, "stage one's micro-batch, per process")
    global_batch_size: int = setting(0, "stage one's train.global_batch_size; 0 = batch_size per process, no "
                                        "accumulation")
    lr: float = setting(0.0, "stage one's learning rate; 0 = optim.lr")
    warmup_epochs: float = setting(1.0, "linear warm-up of stage one, in epochs")
    val_fraction: float = setting(0.05, "a synthetic val split: the stage's own sanity check")
    resize: str = setting("", 'stage one\'s resize: "" = data.resize | letterbox | stretch')
    output_dir: str = setting("", 'stage one\'s model folder; "" = <data.cache_dir>/pretrain/<model>-<hash of what '
                                  "changes the weights>")
    # Rehearsal: the synthetic images go into the train split only, never val, so CV scores stay
    # real-data scores.
    mix_n: int = setting(0, "also train the fine-tune on this many synthetic images (generated with mix_seed; "
                            "works with synth_n = 0 too); 0 = off")
    mix_seed: int = setting(1, "seed of the mix_n images (1, not synth_seed's 0: new images, not stage one's "
                                 "first mix_n again)")


@dataclass
class Config:
    """The whole tree: one section per concern."""

    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    optim: OptimConfig = section(OptimConfig)
    schedule: ScheduleConfig = section(ScheduleConfig)
    train: TrainConfig = section(TrainConfig)
    eval: EvalConfig = section(EvalConfig)
    tracking: TrackingConfig = section(TrackingConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig)
    pretrain: PretrainConfig = section(PretrainConfig)


# Keys (prefixes) that change nothing a run computes: reruns of a CV run, or two runs sharing one stage one
# (pretrain.py), may differ in them.
RUN_ONLY_KEYS = ("train.progress", "train.log_every_steps", "data.num_workers", "data.cache_dir", "tracking.",
                 "train.resume", "train.output_dir", "data.device_cache", "data.eval_batch_size")


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


def recipe_hash(cfg: Config) -> str:
    """sha256 of the config without the keys that change nothing a run computes (RUN_ONLY_KEYS): two runs of
    one recipe share it, whatever their output folders, trackers or worker counts."""
    kept = {k: v for k, v in to_flat_dict(cfg).items() if not k.startswith(RUN_ONLY_KEYS)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
