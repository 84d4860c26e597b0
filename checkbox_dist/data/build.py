"""build_data: from the config to train/val datasets and (unprepared) loaders, on every process.

Files under data.cache_dir (the synthetic default dataset, the decoded-image cache) are per host: each host's
local main process writes them into its own cache (a machine's own disk, or one shared with other hosts; the
writes are atomic and locked), the other processes of the host wait for it, then read the same files, so all
processes hold identical data; the decoded cache's key, which reads every image file, is computed by the local
main process alone and handed to the others (`host_decoded`). Nothing here writes into the run folder.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from checkbox_dist import synth
from checkbox_dist.core.distributed import from_local_main
from checkbox_dist.core.memory import free_bytes
from checkbox_dist.data.cache import KEY_BYTES, cache_key, load_decoded
from checkbox_dist.data.datasets import FileImages, ItemNames, TensorImages, make_loader
from checkbox_dist.data.shards import shard_ranks
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
    why: str = ""  # why the split is (or is not) held on the device: device_cache_choice's reason
    seconds: float = 0.0  # wall time of build_data: scan, split, decode or map
    notes: list[str] = field(default_factory=list)  # how the data was found (the scan, its index): for the run's log

    @property
    def refit(self) -> bool:
        return self.val_set is None

    def summary(self) -> str:
        n = len(self.classes)
        counts = lambda s: "/".join(str(c) for c in torch.bincount(s.labels, minlength=n).tolist())  # noqa: E731
        where = "decoded once, held on the device" if self.on_device else "decoded per step by DataLoader workers"
        where += f" ({self.why}) | ready in {self.seconds:.2f} s" if self.why else f" | ready in {self.seconds:.2f} s"
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


def device_cache_choice(n_bytes: int, free: int | None, where: str, cfg_data) -> tuple[bool, str]:
    """Hold the decoded split (`n_bytes` of uint8) on the device? With data.device_cache=auto: yes when it takes at
    most data.device_cache_free_fraction of the `free` bytes the device has (and at most data.device_cache_max_gb
    when that is set); on/off decide alone. Returns (decision, the reason the run's data line prints)."""
    if cfg_data.device_cache != "auto":
        return cfg_data.device_cache == "on", f"data.device_cache={cfg_data.device_cache}"
    if free is None:
        return False, f"data.device_cache=auto: {where} unknown, streaming"
    fraction = cfg_data.device_cache_free_fraction
    budget, cap = fraction * free, ""
    if cfg_data.device_cache_max_gb and cfg_data.device_cache_max_gb * 1e9 < budget:
        budget, cap = cfg_data.device_cache_max_gb * 1e9, ", capped at data.device_cache_max_gb"
    fits = n_bytes <= budget
    return fits, (f"data.device_cache=auto: {n_bytes / 1e9:.2f} GB {'<=' if fits else '>'} {budget / 1e9:.2f} GB = "
                  f"{fraction:.0%} of {free / 1e9:.1f} GB {where}{cap}")


def device_free_bytes(accelerator) -> tuple[int | None, str]:
    """Free bytes for the decoded split on this process's device, the smallest over all processes (every process
    must take the same decision: build_data's collectives differ between the two paths).

    CUDA: the device's free memory, shared by the processes on that device. CPU: the host's available memory
    (MemAvailable), not divided by the local processes: they map ONE copy of the cache file (data/cache.py).
    XLA: torch_xla's figure, or a conservative assumed one (core/memory.py)."""
    free, where = free_bytes(accelerator.device)
    if free is not None and accelerator.device.type == "cuda":  # more local processes than GPUs share them
        free //= math.ceil(int(os.environ.get("LOCAL_WORLD_SIZE") or 1) / max(1, torch.cuda.device_count()))
    if accelerator.num_processes > 1:
        mib = torch.tensor([-1.0 if free is None else free / 2**20], device=accelerator.device)
        smallest = accelerator.gather(mib).min().item()
        free = None if smallest < 0 else int(smallest * 2**20)
    return free, where


def fits_on_device(n_images: int, spec: PreprocessSpec, cfg_data, accelerator) -> tuple[bool, str]:
    """device_cache_choice for `n_images` of `spec` (uint8: one byte per value) on the accelerator's device."""
    n_bytes = n_images * spec.channels * math.prod(spec.height_width)
    if cfg_data.device_cache != "auto":
        return device_cache_choice(n_bytes, None, "", cfg_data)
    return device_cache_choice(n_bytes, *device_free_bytes(accelerator), cfg_data)


def on_device_of(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; on a CPU run the tensor itself (the host's one mapped copy of the cache): Accelerate's
    MULTI_CPU device is `cpu:0`, and `.to("cpu:0")` copies a tensor, a private copy in every process."""
    return tensor if device.type == "cpu" else tensor.to(device)


def host_decoded(items: list[Item], spec: PreprocessSpec, cfg_data, accelerator, skipped: list[str]) -> dict:
    """load_decoded with the cache key computed once per host (a collective: every process calls it). The local
    main process hashes the files and writes (or finds) the cache file, then hands the key to the other processes
    of its host (core/distributed.py from_local_main), which map that file without reading an image file. A
    process that cannot map it decodes into its own memory; when the local main process failed (an unreadable
    image), the others hash and decode themselves and fail with the same error, none is left waiting."""
    cache = Path(cfg_data.cache_dir).expanduser()
    decoded, failed, key = None, None, None
    if accelerator.is_local_main_process:
        try:
            key = cache_key(items, spec)
            decoded = load_decoded(items, spec, cfg_data.on_bad_image, cache, True, skipped, key)
        except UserError as err:
            failed = err
    given = from_local_main(bytes.fromhex(key) if decoded is not None else None, KEY_BYTES, accelerator)
    if failed is not None:
        raise failed
    if decoded is not None:
        return decoded
    return load_decoded(items, spec, cfg_data.on_bad_image, cache, False, skipped, given.hex() if given else None)


def build_data(cfg, accelerator, say=print, micro_batch: int = 0, epoch_multiple: int = 0) -> Data:
    """`micro_batch`: the train loader's batch (0 = data.batch_size); `epoch_multiple`: each epoch takes the
    largest multiple of it from the shuffled order (the global batch; 0 = every image)."""
    started = time.perf_counter()
    data_cfg = cfg.data
    micro_batch = micro_batch or data_cfg.batch_size
    notes: list[str] = []  # printed by the caller after the run's header, not before it
    catalog = data_catalog(data_cfg, accelerator, notes.append)
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
    on_device, why = (False, "data.shards_by_rank: each process streams its own shards") if data_cfg.shards_by_rank \
        else fits_on_device(len(split.train) + len(split.val) + len(split.probe), spec, data_cfg, accelerator)
    sets = []
    for items in [split.train] + ([split.val] if not refit else []) + ([split.probe] if split.probe else []):
        if on_device:
            decoded = host_decoded(items, spec, data_cfg, accelerator, split.skipped)
            names = ItemNames(items, decoded["kept"])
            sets.append(TensorImages(on_device_of(decoded["images"], accelerator.device),
                                     on_device_of(decoded["labels"], accelerator.device), names))
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
    pin = accelerator.device.type == "cuda"
    owners = shard_ranks(catalog.kind, split.train, accelerator.num_processes) if data_cfg.shards_by_rank else None
    train_loader = make_loader(train_set, train_labels, micro_batch, train=True, seed=cfg.train.seed,
                               balanced=data_cfg.balanced_sampling, num_workers=data_cfg.num_workers,
                               epoch_multiple=epoch_multiple, pin_memory=pin, owners=owners,
                               world=accelerator.num_processes)
    val_loader = None if refit else make_loader(val_set, val_set.labels.cpu(), data_cfg.eval_batch_size, train=False,
                                               seed=cfg.train.seed, balanced=False, num_workers=data_cfg.num_workers,
                                               pin_memory=pin)
    probe_loader = None if probe_set is None else make_loader(
        probe_set, probe_set.labels.cpu(), data_cfg.eval_batch_size, train=False, seed=cfg.train.seed, balanced=False,
        num_workers=data_cfg.num_workers, pin_memory=pin)
    return Data(split.classes, spec, split, train_set, val_set, train_loader, val_loader, on_device, probe_set,
                probe_loader, why, time.perf_counter() - started, notes)
