"""build_data: from the config to train/val datasets and (unprepared) loaders, on every process.

Files under data.cache_dir (the synthetic default dataset, the decoded-image cache) are per host: each host's
local main process writes them into its own cache (a machine's own disk, or one shared with other hosts; the
writes are atomic and locked), the other processes of the host wait for it, then read the same files, so all
processes hold identical data. Nothing here writes into the run folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from checkbox_dist import synth
from checkbox_dist.data.cache import load_decoded
from checkbox_dist.data.datasets import FileImages, TensorImages, make_loader
from checkbox_dist.data.sources import Catalog, file_ref, indexed_catalog, resolve_root
from checkbox_dist.data.split import Item, Split, build_split
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import PreprocessSpec
from checkbox_dist.data.synthetic import synthetic_folder, synthetic_root, synthetic_set


@dataclass
class Data:
    classes: list[str]
    spec: PreprocessSpec
    split: Split
    train_set: TensorImages | FileImages
    val_set: TensorImages | FileImages | None  # None: a refit (data.val_fraction=0), nothing held out
    train_loader: DataLoader
    val_loader: DataLoader | None
    on_device: bool
    probe_set: TensorImages | FileImages | None = None  # the split file's probe part (Split.probe), when listed
    probe_loader: DataLoader | None = None

    @property
    def refit(self) -> bool:
        return self.val_set is None

    def summary(self) -> str:
        n = len(self.classes)
        counts = lambda s: "/".join(str(c) for c in torch.bincount(s.labels, minlength=n).tolist())  # noqa: E731
        where = "decoded once, held on the device" if self.on_device else "decoded per step by DataLoader workers"
        return (f"data: {self.split.root} | classes {', '.join(self.classes)} | train {len(self.train_set)} "
                f"({counts(self.train_set)}) | "
                + (f"val {len(self.val_set)} ({counts(self.val_set)})" if self.val_set is not None else
                   "no val (refit: every image trains)") + " | "
                + (f"probe {len(self.probe_set)} (scored at every evaluation, never selects) | "
                   if self.probe_set is not None else "")
                + f"{self.spec.size_text} {self.spec.resize} on {self.spec.background} | {where}")


def data_root(cfg_data, accelerator) -> Path:
    """What to train on: data.root (a folder, manifest, HF dataset or tar shards: data/sources.py), or the
    synthetic default, generated once per host by its local main process."""
    if cfg_data.root:
        return resolve_root(cfg_data.root)
    if accelerator.is_local_main_process:
        synthetic_set(cfg_data.cache_dir, cfg_data.synth_n, cfg_data.synth_seed, cfg_data.synth_labels)
    accelerator.wait_for_everyone()
    return synthetic_root(cfg_data)


def data_catalog(cfg_data, accelerator, say=print) -> Catalog:
    """The catalog of data.root: each host's local main process scans it once and writes the index under
    data.cache_dir (or finds it current); the other processes wait, then read that index. A scan that fails
    fails on every process (they scan and raise the same error), never leaving the others waiting."""
    root = data_root(cfg_data, accelerator)
    cache = Path(cfg_data.cache_dir).expanduser()
    catalog, failed = None, None
    if accelerator.is_local_main_process:
        try:
            catalog = indexed_catalog(root, cache, say)
        except UserError as err:
            failed = err
    accelerator.wait_for_everyone()
    if failed is not None:
        raise failed
    return catalog or indexed_catalog(root, cache, lambda *_: None)


def synthetic_mix(cfg, classes: list[str], accelerator) -> list[Item]:
    """`pretrain.mix_n` synthetic images for the training split of a real-data run (empty when off)."""
    n, seed = cfg.pretrain.mix_n, cfg.pretrain.mix_seed
    if not n or not cfg.data.root:
        return []
    if sorted(classes) != list(synth.CLASSES):
        raise UserError(f"pretrain.mix_n: synthetic images have the classes {', '.join(synth.CLASSES)}; "
                        f"{cfg.data.root} has {', '.join(classes)}")
    if accelerator.is_local_main_process:
        synthetic_set(cfg.data.cache_dir, n, seed, workers=synth.all_cores())
    accelerator.wait_for_everyone()
    root = synthetic_folder(cfg.data.cache_dir, n, seed)
    return [(file_ref(path, root.parent), classes.index(c)) for c in synth.CLASSES
            for path in sorted((root / c).glob(f"{c}_*.png"))]


def fits_on_device(n_images: int, spec: PreprocessSpec, cfg_data) -> bool:
    if cfg_data.device_cache != "auto":
        return cfg_data.device_cache == "on"
    size_gb = n_images * spec.channels * math.prod(spec.height_width) / 1e9  # uint8: one byte per value
    return size_gb <= cfg_data.device_cache_max_gb


def build_data(cfg, accelerator, say=print, micro_batch: int = 0, epoch_multiple: int = 0) -> Data:
    """`micro_batch`: the train loader's batch (0 = data.batch_size); `epoch_multiple`: each epoch takes the
    largest multiple of it from the shuffled order (the global batch; 0 = every image)."""
    data_cfg = cfg.data
    micro_batch = micro_batch or data_cfg.batch_size
    catalog = data_catalog(data_cfg, accelerator, say)
    root = catalog.root
    split = build_split(root, data_cfg.split_file, data_cfg.val_fraction, data_cfg.split_seed, data_cfg.exclude_file,
                        data_cfg.on_bad_image, catalog)
    refit = not split.val and data_cfg.val_fraction == 0 and not data_cfg.split_file
    if not split.val and not refit:
        raise UserError(f"{root}: the validation split is empty")
    missing = [c for i, c in enumerate(split.classes) if all(y != i for _, y in split.val)]
    if missing and not refit:  # allowed (a rare class, a partial val folder), but every val figure then ignores it
        say(f"note: no val images of class {', '.join(map(repr, missing))}: its recall is not measured")
    mixed = synthetic_mix(cfg, split.classes, accelerator)
    if mixed:
        split.train = split.train + mixed
        say(f"pretrain.mix_n: + {len(mixed)} synthetic images (seed {cfg.pretrain.mix_seed}) in the training split")
    spec = PreprocessSpec.from_data_config(data_cfg)
    on_device = fits_on_device(len(split.train) + len(split.val) + len(split.probe), spec, data_cfg)
    sets = []
    for items in [split.train] + ([split.val] if not refit else []) + ([split.probe] if split.probe else []):
        if on_device:
            cache = Path(data_cfg.cache_dir).expanduser()
            if not accelerator.is_local_main_process:
                accelerator.wait_for_everyone()  # each host's local main process writes its cache first
            decoded = load_decoded(items, spec, data_cfg.on_bad_image, cache, accelerator.is_local_main_process,
                                   split.skipped)
            if accelerator.is_local_main_process:
                accelerator.wait_for_everyone()
            names = [str(items[i][0]) for i in decoded["kept"]]
            sets.append(TensorImages(decoded["images"].to(accelerator.device), decoded["labels"].to(accelerator.device),
                                     names))
        else:
            sets.append(FileImages(items, spec))
    if split.skipped:
        say(f"data.on_bad_image=skip: left out {len(split.skipped)} file(s):")
        for line in sorted(set(split.skipped)):
            say(f"  skipped {line}")
    train_set, val_set = sets[0], (None if refit else sets[1])
    probe_set = sets[-1] if split.probe else None
    if len(train_set) < micro_batch:
        say(f"note: train split ({len(train_set)}) is smaller than the micro-batch ({micro_batch})")
    train_labels = train_set.labels.cpu()
    train_loader = make_loader(train_set, train_labels, micro_batch, train=True, seed=cfg.train.seed,
                               balanced=data_cfg.balanced_sampling, num_workers=data_cfg.num_workers,
                               epoch_multiple=epoch_multiple)
    val_loader = None if refit else make_loader(val_set, val_set.labels.cpu(), data_cfg.eval_batch_size, train=False,
                                                seed=cfg.train.seed, balanced=False, num_workers=data_cfg.num_workers)
    probe_loader = None if probe_set is None else make_loader(
        probe_set, probe_set.labels.cpu(), data_cfg.eval_batch_size, train=False, seed=cfg.train.seed, balanced=False,
        num_workers=data_cfg.num_workers)
    return Data(split.classes, spec, split, train_set, val_set, train_loader, val_loader, on_device, probe_set,
                probe_loader)
