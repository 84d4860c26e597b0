"""Datasets and loaders: uint8 batches from device memory when the split fits, else from workers.

`TensorImages` holds a decoded split (data/cache.py) as one tensor, on the accelerator: a batch is an
index lookup, with no DataLoader workers, no host-to-device copy and no decode per epoch. `FileImages`
decodes each file in DataLoader workers, for larger datasets. Either way the loader Accelerate prepares
yields the same index batches and `lookup(batch)` returns (images, labels, indices), so sharding, resume
and results are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import PreprocessSpec, decode


class ItemNames(Sequence):
    """The names of `items` (each ref as text), in the order of `kept` (default: all), made when read: only
    evaluation's predictions read them, so a million-sample training split never builds its million strings."""

    def __init__(self, items: list[tuple[Path, int]], kept: list[int] | None = None):
        self.items, self.kept = items, kept

    def __len__(self) -> int:
        return len(self.items) if self.kept is None else len(self.kept)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return str(self.items[index if self.kept is None else self.kept[index]][0])


class TensorImages(Dataset):
    """Index dataset: yields sample indices; images live in `self.images` (possibly on the device)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, names: Sequence[str]):
        self.images, self.labels, self.names = images, labels, names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> int:
        return index

    def lookup(self, batch):
        """Prepared-loader batch (indices on the device) -> (uint8 images, labels, indices)."""
        index = batch.to(self.images.device)
        return self.images[index], self.labels[index], batch


class FileImages(Dataset):
    """Decodes each file in a worker: for datasets too large to keep in memory."""

    def __init__(self, items: list[tuple[Path, int]], spec: PreprocessSpec):
        self.items, self.spec = items, spec
        self.names = ItemNames(items)
        self.labels = torch.tensor([y for _, y in items], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        return decode(path, self.spec), label, index

    @staticmethod
    def lookup(batch):
        return batch[0], batch[1], batch[2]


class EpochSampler(Sampler[int]):
    """Seeded order per epoch: shuffled (or class-balanced, with replacement) as a pure function of
    (seed, epoch), so a resumed run and a run with any number of workers see the same order. It is the ONE
    global order of the epoch: Accelerate deals its micro-batches to the processes in turn (process r gets
    micro-batches r, r + W, ...), so every launch shape trains on the same images in the same optimizer steps.
    With `multiple` (the global batch), an epoch is the first largest multiple of it of that order.

    With `owners` (data.shards_by_rank: the process that reads each sample, data/shards.py `shard_ranks`) and
    `world` processes, process r's samples are drawn among its own (the same draw as above for one process),
    cut into micro-batches of `micro`, and the order interleaves them: [r0 mb0, r1 mb0, ..., r0 mb1, ...], so
    the micro-batches Accelerate deals to process r are all its own. Every process gets the same number of
    micro-batches per epoch (the fewest any has, cut to a multiple of `multiple`): none waits for another.
    The order then depends on `world`: no launch invariance."""

    def __init__(self, labels: torch.Tensor, seed: int, shuffle: bool, balanced: bool = False, multiple: int = 0,
                 owners: list[int] | None = None, world: int = 1, micro: int = 1):
        self.labels, self.seed, self.shuffle, self.balanced, self.epoch = labels, seed, shuffle, balanced, 0
        n = len(labels)
        self.length = n - n % multiple if multiple and shuffle else n
        self.own, self.micro, self.per_process = None, micro, 0  # per_process: micro-batches of each process
        if owners is not None and shuffle:
            ranks = torch.tensor(owners, dtype=torch.long)
            self.own = [torch.nonzero(ranks == r).flatten() for r in range(world)]
            fewest = min(len(own) for own in self.own)
            self.length = fewest // micro * micro * world
            self.length -= self.length % multiple if multiple else 0
            self.per_process = self.length // (micro * world)
            if not self.per_process:
                poorest = min(range(world), key=lambda r: len(self.own[r]))
                raise UserError(f"data.shards_by_rank: process {poorest}'s shards hold {fewest} training images, "
                                f"fewer than {max(micro, multiple // world)} (its share of one global batch): "
                                f"write more images per shard or run fewer processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        if not self.shuffle:
            return iter(range(len(self.labels)))
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.own is None:
            return iter(self._draw(torch.arange(len(self.labels)), gen)[:self.length].tolist())
        cut = self.per_process * self.micro
        parts = [self._draw(own, gen)[:cut].view(self.per_process, self.micro) for own in self.own]
        return iter(torch.stack(parts, 1).flatten().tolist())  # (micro-batch, process, sample), in that order

    def _draw(self, among: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """`among` (sample indices) shuffled, or len(among) class-balanced draws from them with replacement."""
        if self.balanced:
            weights = (1.0 / torch.bincount(self.labels).float())[self.labels[among]]
            return among[torch.multinomial(weights, len(among), True, generator=gen)]
        return among[torch.randperm(len(among), generator=gen)]


# Batches each streaming worker keeps decoded ahead (torch's default is 2): with 2 workers, 8 batches in flight absorb
# the slow files (a large PNG) without starving the step; memory is 8 uint8 batches.
PREFETCH_PER_WORKER = 4


def make_loader(dataset: Dataset, labels: torch.Tensor, batch_size: int, *, train: bool, seed: int,
                balanced: bool, num_workers: int, epoch_multiple: int = 0, pin_memory: bool = False,
                owners: list[int] | None = None, world: int = 1) -> DataLoader:
    """The loader of a split. Streaming (`FileImages`): `num_workers` processes decode, kept alive across epochs,
    each `PREFETCH_PER_WORKER` batches ahead; `pin_memory` (a CUDA device) makes their host-to-device copies
    asynchronous. Device-resident (`TensorImages`): no workers, the batches are indices. `owners`, `world`:
    each sample's process (data.shards_by_rank; EpochSampler)."""
    sampler = EpochSampler(labels, seed, shuffle=train, balanced=balanced and train, multiple=epoch_multiple,
                           owners=owners, world=world, micro=batch_size)
    # drop_last on train: every step has the same shape (XLA compiles once) and the same batch size,
    # so gradient accumulation windows average equal-sized batches. Eval keeps every image.
    batches = BatchSampler(sampler, batch_size, drop_last=train and len(labels) >= batch_size)
    workers = num_workers if isinstance(dataset, FileImages) else 0
    # Own generator: each new iterator draws a worker seed, from the global RNG otherwise, so a resumed run
    # (one more iterator) would see other dropout masks than an uninterrupted one.
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                      pin_memory=pin_memory,  # lets index/image batches copy without a sync
                      persistent_workers=workers > 0, prefetch_factor=PREFETCH_PER_WORKER if workers else None,
                      generator=torch.Generator().manual_seed(seed))


def class_counts(items: list[tuple[Path, int]], n_classes: int) -> list[int]:
    counts = [0] * n_classes
    for _, y in items:
        counts[y] += 1
    return counts
