"""Stage one of the two-stage recipe: pretrain on the embedded synthetic widgets, then fine-tune from it.

    pretrain:            # in a config; every `train`, `cv` fold and sweep trial then fine-tunes from it
      synth_n: 20000     # 0 = off (one stage, from scratch or train.init_from)
      epochs: 10

`train.run` calls `ensure(cfg)` first. It derives the pretraining run from the config (same model, image
size, optimizer and augmentation; data = `pretrain.synth_n` generated images; the `pretrain.*` keys below
override), trains it once into a cache folder named by a hash of everything that changes its weights, and
returns the config with `train.init_from` pointing at that run's `checkpoints/last`. Stage one is one run of
every process together, whatever the number of hosts; its folder must be one that every process sees
(`stage_folder`): on hosts with their own data.cache_dir it goes under the shared run folder instead. Five CV folds or a
sweep's trials with the same pretraining train it once: the first takes a file lock, the rest wait and
reuse it. An interrupted pretraining (preemption, kill) resumes from its own `last` on the next call.
`pretrain.labels=kind` trains stage one on 23 classes instead of 3 (checked-radio, other-slider, ...: what the
generator drew, synth.folder_of); the fine-tune then starts with a new 3-class head on the same body.
`pretrain.mix_n` (checkbox_dist/data/build.py: synthetic_mix) keeps synthetic images in the fine-tune's training
split as well; it does not change stage one, so runs that differ only in it share one.

Whether it pays, with the commands that measured it: docs/RESULTS.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

from accelerate.utils import broadcast_object_list

from checkbox_dist import __version__, synth
from checkbox_dist.core.config import RUN_ONLY_KEYS, Config, to_dict, to_flat_dict
from checkbox_dist.core.distributed import blind_processes, check_shared_folder, process_state
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import exclusive
from checkbox_dist.data.images import PreprocessSpec
from checkbox_dist.data.synthetic import synthetic_set
from checkbox_dist.train.session import resolve_run_dir
from checkbox_dist.train.stage import train_stage

# Keys that do not change the pretrained weights: two configs differing only here share one pretraining. Stage
# one saves no epoch checkpoints and is evaluated once, at its end; pretrain.* is already applied by stage_config.
_NOT_WEIGHTS = RUN_ONLY_KEYS + ("checkpoint.", "eval.", "pretrain.")


def stage_config(cfg: Config) -> Config:
    """The pretraining run's config: the fine-tune's, on synthetic data, with the pretrain.* overrides."""
    p = cfg.pretrain
    pre = copy.deepcopy(cfg)
    pre.pretrain.synth_n = pre.pretrain.mix_n = 0  # stage one has no stage one, and nothing to mix into
    pre.data.root, pre.data.split_file, pre.data.exclude_file = "", "", ""
    pre.data.shards_by_rank = False  # synthetic class folders: no shards
    pre.data.synth_n, pre.data.synth_seed, pre.data.synth_labels = p.synth_n, p.synth_seed, p.labels
    if p.labels == "kind":  # 17 of the 23 kinds are `other`: balancing kinds would make 74 % of a batch `other`
        pre.data.balanced_sampling = False  # the 3 classes are balanced by construction (index % 3)
    pre.data.val_fraction, pre.data.batch_size = p.val_fraction, p.batch_size
    pre.train.global_batch_size = p.global_batch_size  # 0: p.batch_size per process, the fine-tune's accumulation
    if p.global_batch_size:
        pre.train.grad_accum_steps = 1  # derived from the global batch
    pre.data.resize = p.resize or cfg.data.resize
    pre.optim.lr = p.lr or cfg.optim.lr
    pre.schedule.warmup_epochs = p.warmup_epochs
    pre.train.epochs, pre.train.max_steps = p.epochs, 0
    pre.train.init_from, pre.train.resume = "", "auto"  # an interrupted pretraining continues
    pre.train.ensemble_members = 1  # one stage one, shared by every member (and by single runs of the recipe)
    pre.train.early_stopping_patience = 0  # fixed length: `last` is the model every fine-tune starts from
    pre.eval.every_epochs, pre.eval.calibrate = p.epochs, False
    pre.checkpoint.keep_last = 0
    if pre.tracking.run_name:
        pre.tracking.run_name += "-pretrain"
    pre.train.output_dir = str(stage_dir(cfg, pre))
    return pre


def stage_dir(cfg: Config, pre: Config) -> Path:
    if cfg.pretrain.output_dir:
        return Path(cfg.pretrain.output_dir).expanduser()
    weights = {k: v for k, v in to_flat_dict(to_dict(pre)).items() if not k.startswith(_NOT_WEIGHTS)}
    weights["versions"] = [__version__, synth.VERSION]
    key = hashlib.sha256(json.dumps(weights, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(cfg.data.cache_dir).expanduser() / "pretrain" / f"{cfg.model.name}-{key}"


def stage_folder(cfg: Config, pre: Config, run_dir: Path) -> Path:
    """Stage one's folder, which every process must read (its `last` initialises the fine-tune on each) and
    resume from: pretrain.output_dir when set (checked to be seen by every process); else the cache folder
    <data.cache_dir>/pretrain/<model>-<hash> when every process sees it (one host, or a cache every host shares:
    trained once, reused by every later run); else the same name under the run folder `run_dir`, which every
    host shares (hosts with their own caches: trained once per run). A collective with several processes."""
    default = Path(pre.train.output_dir)
    if cfg.pretrain.output_dir:
        check_shared_folder(default, "pretrain.output_dir")
        return default
    if not blind_processes(default.parent, "data.cache_dir"):
        return default
    return run_dir / "pretrain" / default.name


def finished(folder: Path) -> bool:
    # summary.json is written after the final checkpoint, so its presence means `last` is complete.
    return (folder / "summary.json").is_file() and (folder / "checkpoints" / "last").is_dir()


def ensure(cfg: Config, config_path: str | None = None) -> Config:
    """cfg unchanged when pretrain.synth_n is 0; else cfg fine-tuning from the (cached) pretraining."""
    if not cfg.pretrain.synth_n:
        return cfg
    state = process_state()
    pre, tuned = stage_config(cfg), copy.deepcopy(cfg)
    if state.num_processes > 1:  # the hosts may not share data.cache_dir: place stage one where all see it
        run_dir = resolve_run_dir(cfg, config_path, state)
        check_shared_folder(run_dir, "train.output_dir")  # before stage one trains, not after
        tuned.train.output_dir = cfg.train.output_dir or str(run_dir)  # the same timestamped name in setup
        pre.train.output_dir = str(stage_folder(cfg, pre, run_dir))
    folder = Path(pre.train.output_dir)
    init_from = str(folder / "checkpoints" / "last")
    if cfg.train.init_from and Path(cfg.train.init_from).expanduser() != Path(init_from):
        raise UserError(f"train.init_from={cfg.train.init_from} and pretrain.synth_n={cfg.pretrain.synth_n} are both "
                        f"set: fine-tune from one of them (pretrain.synth_n=0 keeps train.init_from)")
    say = state.print if state.is_main_process else (lambda *_: None)  # once, not once per host
    with exclusive(folder, lambda text: say(f"pretrain: {text}")) if state.is_main_process else nullcontext():
        todo = [not finished(folder)]
        broadcast_object_list(todo)  # every process takes the same branch: training is collective
        if todo[0]:
            kinds = " labelled by kind" if pre.data.synth_labels == "kind" else ""
            say(f"pretrain: stage one, {pre.train.epochs} epochs on {pre.data.synth_n} synthetic images{kinds} "
                f"({pre.data.resize}, {PreprocessSpec.from_data_config(pre.data).size_text}) -> {folder}")
            if state.is_local_main_process:  # once per host (its cache), with every core, before the run reads it
                synthetic_set(pre.data.cache_dir, pre.data.synth_n, pre.data.synth_seed, pre.data.synth_labels,
                              workers=synth.all_cores())
            state.wait_for_everyone()
            train_stage(pre)
        else:
            say(f"pretrain: reusing {folder} (same model, data and recipe)")
    state.wait_for_everyone()
    tuned.train.init_from = init_from  # saved with the run: its config.yaml names the model it started from
    return tuned
