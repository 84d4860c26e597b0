"""data.shards_by_rank: with tar shards, process r of W trains only on the images of shards r, r + W, ... (in
file-name order), and reads no other shard. The sampler (data/datasets.py EpochSampler) builds the epoch's one
order so that the micro-batches Accelerate deals to process r are all from r's shards, the same number for every
process; position and resume are counted in samples as in the default mode. Unit tests of the order, dealt by
Accelerate's own sharding and skip_first_batches, and one real 2-process gloo run in which a process is SIGKILLed
if it reads a shard that is not its own (CHECKBOX_DIST_FAULT=read.SHARD:1@RANK, core/faults.py), stopped and
resumed bit-identical to the uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.data_loader import prepare_data_loader, skip_first_batches

from conftest import load_weights, tiny_train_args
from checkbox_dist.core import faults
from checkbox_dist.core.config_checks import ConfigError
from checkbox_dist.core.config_loader import load_config
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.catalog import Ref
from checkbox_dist.data.datasets import EpochSampler, TensorImages, make_loader
from checkbox_dist.data.shards import shard_ranks
from checkbox_dist.data.sources import scan
from checkbox_dist.data.split import build_split
from checkbox_dist.data.writers import write_shards

MICRO = 4
SIZES = [12, 20, 9, 15, 14]  # five shards of unequal size: process 0 of 2 holds 12 + 9 + 14, process 1 20 + 15


def _items(sizes=SIZES) -> list[tuple[Ref, int]]:
    return [(Ref(f"s{s}.tar/{j}.png", Path(f"/data/s{s}.tar"), offset=512 * j, size=10), (s + j) % 3)
            for s, n in enumerate(sizes) for j in range(n)]


def _dealt(owners, world: int, epoch: int, *, seed: int = 7, multiple: int = 0, balanced: bool = False,
           skip: int = 0) -> list[list[list[int]]]:
    """Each process's micro-batches of `epoch` as Accelerate deals them (its own BatchSamplerShard and, after
    `skip` micro-batches, skip_first_batches: what the training loop iterates)."""
    labels = torch.tensor([y for _, y in _items()])
    data = TensorImages(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels, [""] * len(labels))
    out = []
    for rank in range(world):
        loader = make_loader(data, labels, MICRO, train=True, seed=seed, balanced=balanced, num_workers=0,
                             epoch_multiple=multiple, owners=owners, world=world)
        prepared = prepare_data_loader(loader, num_processes=world, process_index=rank, put_on_device=False)
        prepared.set_epoch(epoch)
        out.append([b.tolist() for b in (skip_first_batches(prepared, skip) if skip else prepared)])
    return out


@pytest.mark.parametrize("world,multiple", [(2, 0), (2, 16), (3, 0), (3, 24)])
def test_each_process_trains_on_its_own_shards_the_same_number_of_micro_batches(world, multiple):
    items = _items()
    owners = shard_ranks("tar", items, world)
    assert owners == [s % world for s, n in enumerate(SIZES) for _ in range(n)]
    dealt = _dealt(owners, world, epoch=1, multiple=multiple)
    own = [sum(n for s, n in enumerate(SIZES) if s % world == r) for r in range(world)]
    per_process = min(own) // MICRO
    if multiple:
        per_process -= per_process % (multiple // (MICRO * world))
    for rank, batches in enumerate(dealt):
        assert len(batches) == per_process and all(len(b) == MICRO for b in batches)
        assert {owners[i] for b in batches for i in b} == {rank}
    seen = [i for batches in dealt for b in batches for i in b]
    assert len(seen) == len(set(seen)) and (not multiple or len(seen) % multiple == 0)
    assert dealt == _dealt(owners, world, epoch=1, multiple=multiple)  # a pure function of (seed, epoch)
    assert dealt != _dealt(owners, world, epoch=2, multiple=multiple)
    assert dealt != _dealt(owners, world, epoch=1, multiple=multiple, seed=8)


@pytest.mark.parametrize("balanced", [False, True])
def test_resuming_at_a_position_gives_the_uninterrupted_tail(balanced):
    owners = shard_ranks("tar", _items(), 2)
    full = _dealt(owners, 2, epoch=3, balanced=balanced)
    for skip in (1, 3, len(full[0]) - 1):
        assert _dealt(owners, 2, epoch=3, balanced=balanced, skip=skip) == [b[skip:] for b in full]
    if balanced:  # with replacement, still each process's own images
        assert all({owners[i] for b in batches for i in b} == {r} for r, batches in enumerate(full))


@pytest.mark.parametrize("balanced", [False, True])
def test_one_process_is_the_plain_shuffled_order_of_all_shards(balanced):
    labels = torch.tensor([y for _, y in _items()])
    owners = shard_ranks("tar", _items(), 1)
    for multiple in (0, 8):
        plain = EpochSampler(labels, 5, shuffle=True, balanced=balanced, multiple=multiple)
        by_rank = EpochSampler(labels, 5, shuffle=True, balanced=balanced, multiple=multiple, owners=owners,
                               world=1, micro=8)
        plain.set_epoch(2)
        by_rank.set_epoch(2)
        # the plain order's micro-batches of 8 (the loader drops a short last one): the same images, same steps
        cut = len(plain) // 8 * 8
        assert list(by_rank) == list(plain)[:cut] and len(by_rank) == cut


def test_more_processes_than_shards_a_folder_root_or_too_small_shards_are_one_line():
    with pytest.raises(UserError, match=r"^data.shards_by_rank=true: 6 processes but 5 shard\(s\) with training "
                                        r"images: each process needs at least one"):
        shard_ranks("tar", _items(), 6)
    with pytest.raises(UserError, match=r"^data.shards_by_rank=true assigns tar shards to processes; data.root is a "
                                        r"csv dataset"):
        shard_ranks("csv", _items(), 2)
    items = _items([12, 3])
    labels = torch.tensor([y for _, y in items])
    with pytest.raises(UserError, match=r"^data.shards_by_rank: process 1's shards hold 3 training images, fewer "
                                        r"than 4"):
        EpochSampler(labels, 0, shuffle=True, owners=shard_ranks("tar", items, 2), world=2, micro=MICRO)
    for extra, what in (("data.device_cache=on", "data.device_cache=on would decode every shard"),
                        ("pretrain.mix_n=12", "pretrain.mix_n adds synthetic files")):
        with pytest.raises(ConfigError, match=what):
            load_config(None, ["data.shards_by_rank=true", extra])


def test_stage_one_of_a_shards_by_rank_run_trains_on_its_synthetic_folders_without_it():
    from checkbox_dist.train.pretrain import stage_config

    cfg = load_config(None, ["data.shards_by_rank=true", "data.root=/data/shards", "pretrain.synth_n=48"])
    assert cfg.data.shards_by_rank and not stage_config(cfg).data.shards_by_rank


def test_every_read_of_a_shard_sample_passes_its_fault_site(tmp_path: Path, monkeypatch):
    from checkbox_dist.synth import generate

    generate(tmp_path / "images", 6, seed=5)
    catalog = scan(write_shards(sorted((tmp_path / "images").glob("*/*.png")), tmp_path / "shards", shards=2))
    monkeypatch.setattr(faults, "_PLAN", faults.parse("read.train-0001.tar:99", rank="0"))
    monkeypatch.setattr(faults, "_hits", {})
    for ref in catalog.refs:
        ref.read_bytes()
    assert faults._hits == {"read.train-0001.tar": sum(r.path.name == "train-0001.tar" for r in catalog.refs)}
    with pytest.raises(ValueError, match="bad fault 'read.:1'"):
        faults.parse("read.:1")


@pytest.mark.system  # real 2-process gloo worlds
def test_two_processes_read_only_their_own_shards_and_resume_bit_identical(tmp_path: Path):
    """4 shards of 30 images, 2 processes: process 0 trains on shards 0 and 2, process 1 on 1 and 3. A process
    that reads a sample of another's shard is SIGKILLed (CHECKBOX_DIST_FAULT); a refit (data.val_fraction=0) has
    no evaluation, whose loader keeps the global order. The rank traces name the images each process trained on.
    A run stopped after its first step (RUN/STOP, exit 75) and resumed ends with the uninterrupted run's weights,
    bit for bit. Without data.shards_by_rank the same fault kills a process (both read every shard). 2 processes
    on 1 shard: one error line."""
    from reliability_harness import one_line_error, run_world
    from checkbox_dist.synth import generate

    generate(tmp_path / "images", 30, seed=5)
    shards = write_shards(sorted((tmp_path / "images").glob("*/*.png")), tmp_path / "shards", shards=4)
    names = [f"train-{s:04d}.tar" for s in range(4)]
    foreign = ",".join(f"read.{name}:1@{1 - s % 2}" for s, name in enumerate(names))
    env = {"CHECKBOX_DIST_FAULT": foreign, "CHECKBOX_DIST_RANK_TRACE": "1"}
    recipe = ["data.shards_by_rank=true", "data.val_fraction=0", "train.global_batch_size=8", "data.batch_size=4",
              "train.epochs=2", "train.log_every_steps=1", "eval.calibrate=false"]
    runs = {}
    for name in ("straight", "stopped"):
        out = runs[name] = tmp_path / name
        args = tiny_train_args(out, tmp_path / "cache", *recipe, data_root=shards)[1:]
        if name == "stopped":
            out.mkdir()
            (out / "STOP").touch()
            first = run_world(2, ["train", *args], env=env, timeout=180)
            assert [r.rc for r in first] == [75, 75], first[0].err[-3000:] + first[1].err[-3000:]
            args = [*args, "train.resume=auto"]
        results = run_world(2, ["train", *args], env=env, timeout=180)
        for rank, result in enumerate(results):
            assert result.rc == 0, f"{name} rank {rank}: exit {result.rc}\n{result.err[-3000:]}"
    split = build_split(shards, val_fraction=0.0)
    for rank in range(2):
        trained = json.loads((runs["straight"] / "debug" / f"rank{rank}.json").read_text())["train"]
        read = {split.train[i][0].path.name for epoch in trained.values() for i in epoch}
        assert read == set(names[rank::2]) and len(trained) == 2, (rank, read)
    a, b = load_weights(runs["straight"] / "checkpoints" / "last"), load_weights(runs["stopped"] / "checkpoints" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    default = [a for a in tiny_train_args(tmp_path / "default", tmp_path / "cache", *recipe, data_root=shards)[1:]
               if a != "data.shards_by_rank=true"]  # the global order: both processes read every shard
    killed = run_world(2, ["train", *default], env={"CHECKBOX_DIST_FAULT": foreign}, timeout=120)
    assert -9 in [r.rc for r in killed], [r.rc for r in killed]  # the observable bites
    one = tmp_path / "one"
    write_shards(sorted((tmp_path / "images").glob("*/*.png")), one, shards=1)
    failed = run_world(2, ["train", *tiny_train_args(tmp_path / "run1", tmp_path / "cache", *recipe,
                                                      data_root=one)[1:]], timeout=180)
    assert one_line_error(failed[0]) == ("error: data.shards_by_rank=true: 2 processes but 1 shard(s) with training "
                                         "images: each process needs at least one (write more, smaller shards, or "
                                         "run fewer processes)")
    assert failed[1].rc == 2 and not failed[1].err.strip()  # the host's first process says it, once
