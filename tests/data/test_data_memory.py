"""Data memory (issue 37): the decoded cache is one memory-mapped file per host, the device-resident decision
follows the device's free memory, and the streaming loader keeps workers, prefetch and pinning as promised.

The sharing of one mapped file by the processes of a gloo world is tested in test_cache_sharing.py (system)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from checkbox_dist.core.config import Config
from checkbox_dist.core.memory import host_available_bytes, xla_free_bytes
from checkbox_dist.data.build import device_cache_choice
from checkbox_dist.data.cache import cache_file, cache_key, load_decoded
from checkbox_dist.data.datasets import PREFETCH_PER_WORKER, FileImages, TensorImages, make_loader
from checkbox_dist.data.images import PreprocessSpec
from checkbox_dist.data.split import build_split

GB = 10**9


def _data_cfg(**values):
    cfg = Config().data
    for key, value in values.items():
        setattr(cfg, key, value)
    return cfg


def test_auto_holds_the_set_when_it_takes_at_most_the_free_fraction():
    cfg = _data_cfg()  # auto, half of the free memory, no cap
    fits, why = device_cache_choice(3 * GB, 8 * GB, "free CUDA memory", cfg)
    assert fits and why == "data.device_cache=auto: 3.00 GB <= 4.00 GB = 50% of 8.0 GB free CUDA memory"
    fits, why = device_cache_choice(5 * GB, 8 * GB, "free CUDA memory", cfg)
    assert not fits and "5.00 GB > 4.00 GB = 50% of 8.0 GB" in why
    # The same set on a device with more free memory: held (the old fixed 4 GB refused it).
    assert device_cache_choice(20 * GB, 78 * GB, "free CUDA memory", cfg)[0]
    fits, why = device_cache_choice(20 * GB, 78 * GB, "free CUDA memory", _data_cfg(device_cache_free_fraction=0.2))
    assert not fits and "15.60 GB = 20% of 78.0 GB" in why


def test_the_cap_and_the_override_win_over_free_memory():
    fits, why = device_cache_choice(3 * GB, 80 * GB, "free CUDA memory", _data_cfg(device_cache_max_gb=2.0))
    assert not fits and why.endswith("capped at data.device_cache_max_gb") and "> 2.00 GB" in why
    assert device_cache_choice(10**15, 1, "free CUDA memory", _data_cfg(device_cache="on")) == \
        (True, "data.device_cache=on")
    assert device_cache_choice(1, 80 * GB, "free CUDA memory", _data_cfg(device_cache="off")) == \
        (False, "data.device_cache=off")
    fits, why = device_cache_choice(1, None, "available host memory", _data_cfg())
    assert not fits and "available host memory unknown" in why


def test_free_memory_figures_of_the_host_and_of_xla(tmp_path: Path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         7000000 kB\nMemAvailable:   17000000 kB\n")
    assert host_available_bytes(meminfo) == 17000000 * 1024
    meminfo.write_text("MemTotal: 1 kB\n")
    assert host_available_bytes(meminfo) is None
    assert host_available_bytes(tmp_path / "missing") is None
    assert xla_free_bytes({"bytes_limit": 16 * 2**30, "bytes_used": 2**30, "peak_bytes_used": 2**30}) == 15 * 2**30
    assert xla_free_bytes({"kb_free": 1000, "kb_total": 4000}) == 1000 * 1024
    assert xla_free_bytes({}) is None


def _maps_of(file: Path) -> list[str]:
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(str(file))]


def test_the_decoded_cache_is_one_mapped_file_read_back_exactly(synth_root: Path, tmp_path: Path):
    spec = PreprocessSpec(image_size=32)
    items = build_split(synth_root, val_fraction=0.2, seed=1).train
    written = load_decoded(items, spec, "error", tmp_path, True, [])
    file = cache_file(items, spec, "error", tmp_path)
    assert written["file"] == file and file.is_file()
    assert file.stat().st_size > len(items) * 3 * 32 * 32  # the images, then the trailer
    read = load_decoded(items, spec, "error", tmp_path, False, [])  # another process of the host
    assert torch.equal(read["images"], written["images"]) and read["kept"] == list(range(len(items)))
    assert read["images"].shape == (len(items), 3, 32, 32) and read["images"].dtype == torch.uint8
    assert torch.equal(read["labels"], torch.tensor([y for _, y in items]))
    from checkbox_dist.data.images import decode
    assert torch.equal(read["images"][5], decode(items[5][0], spec))
    assert _maps_of(file), "the cache file is not memory-mapped"
    assert read["images"].untyped_storage().data_ptr() != written["images"].untyped_storage().data_ptr()


def test_a_damaged_cache_file_is_rebuilt_not_trusted(synth_root: Path, tmp_path: Path):
    spec = PreprocessSpec(image_size=32)
    items = build_split(synth_root, val_fraction=0.2, seed=1).val
    good = load_decoded(items, spec, "error", tmp_path, True, [])["images"].clone()
    file = cache_file(items, spec, "error", tmp_path)
    for damage in (lambda b: b[:-5], lambda b: b[:100], lambda b: b[:-16] + b"x" * 16, lambda b: b""):
        file.write_bytes(damage(file.read_bytes()) if file.stat().st_size else b"")
        again = load_decoded(items, spec, "error", tmp_path, True, [])
        assert torch.equal(again["images"], good)
    # A reader that is not the writer never writes; with no usable file it decodes into its own memory.
    file.write_bytes(b"junk")
    alone = load_decoded(items, spec, "error", tmp_path, False, [])
    assert alone["file"] is None and torch.equal(alone["images"], good) and file.read_bytes() == b"junk"


def test_an_image_edited_in_place_is_a_new_key_and_a_given_key_reads_no_image(synth_root: Path, tmp_path: Path):
    """The key is the files' contents: the same name with other bytes (even of the same size) is another key, never
    a stale hit. A process handed the key (build_data: from its host's local main process) reads no image file."""
    import shutil

    spec = PreprocessSpec(image_size=32)
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    items = build_split(root, val_fraction=0.2, seed=1).val
    key = cache_key(items, spec)
    first = load_decoded(items, spec, "error", tmp_path / "cache", True, [], key)
    donor = next(i for i, (_, label) in enumerate(items) if label != items[0][1])
    items[0][0].path.write_bytes(items[donor][0].path.read_bytes())  # in place: the name and the label stay
    edited = cache_key(items, spec)
    assert edited != key and cache_file(items, spec, "error", tmp_path / "cache") != first["file"]
    again = load_decoded(items, spec, "error", tmp_path / "cache", True, [])
    assert torch.equal(again["images"][0], first["images"][donor]) and again["file"] != first["file"]
    for ref, _ in items:
        ref.path.unlink()  # nothing left to read: the mapped file is all a process given the key needs
    mapped = load_decoded(items, spec, "error", tmp_path / "cache", False, [], edited)
    assert mapped["file"] == again["file"] and torch.equal(mapped["images"], again["images"])


def test_skipped_files_are_kept_in_the_cache(synth_root: Path, tmp_path: Path):
    spec = PreprocessSpec(image_size=32)
    items = build_split(synth_root, val_fraction=0.2, seed=1).val
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with_bad = [items[0], (bad, 1), *items[1:]]
    first, second = [], []
    load_decoded(with_bad, spec, "skip", tmp_path / "cache", True, first)
    again = load_decoded(with_bad, spec, "skip", tmp_path / "cache", False, second)
    assert len(first) == 1 and second == first and "bad.png" in first[0]
    assert again["kept"] == [0, *range(2, len(with_bad))] and again["file"] is not None


def test_streaming_loader_keeps_workers_prefetch_and_pins_for_cuda(synth_root: Path):
    from accelerate import Accelerator

    items = build_split(synth_root, val_fraction=0.2, seed=1).train
    files = FileImages(items, PreprocessSpec(image_size=32))
    loader = make_loader(files, files.labels, 8, train=True, seed=0, balanced=False, num_workers=2, pin_memory=True)
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor, loader.pin_memory) == \
        (2, True, PREFETCH_PER_WORKER, True)
    assert PREFETCH_PER_WORKER > 2  # more than torch's default
    # What Accelerate prepares keeps the settings (it rebuilds the DataLoader from the original's attributes).
    on_cpu = make_loader(files, files.labels, 8, train=True, seed=0, balanced=False, num_workers=2, pin_memory=False)
    prepared = Accelerator(cpu=True).prepare(on_cpu)
    assert (prepared.num_workers, prepared.persistent_workers, prepared.prefetch_factor, prepared.pin_memory) == \
        (2, True, PREFETCH_PER_WORKER, False)
    # Device-resident: index batches, no workers.
    tensors = TensorImages(torch.zeros(len(items), 3, 4, 4, dtype=torch.uint8), files.labels, files.names)
    resident = make_loader(tensors, files.labels, 8, train=True, seed=0, balanced=False, num_workers=2)
    assert resident.num_workers == 0 and not resident.persistent_workers


def test_build_data_pins_only_for_a_cuda_device_and_says_why_it_chose(synth_root: Path, tmp_path: Path):
    from checkbox_dist.core.config_loader import load_config
    from checkbox_dist.data.build import build_data
    from conftest import REPO, TINY

    cfg = load_config(str(REPO / "configs" / "quickstart.yaml"),
                      [*TINY, f"data.root={synth_root}", f"data.cache_dir={tmp_path}", "data.num_workers=1",
                       "data.device_cache=off"])
    acc = SimpleNamespace(device=torch.device("cpu"), num_processes=1, is_local_main_process=True,
                          wait_for_everyone=lambda: None)
    lines: list[str] = []
    data = build_data(cfg, acc, say=lines.append)
    assert not data.train_loader.pin_memory and data.train_loader.num_workers == 1
    assert "decoded per step by DataLoader workers (data.device_cache=off) | ready in" in data.summary()
    cfg.data.device_cache = "auto"
    data = build_data(cfg, acc, say=lines.append)
    assert data.on_device and "data.device_cache=auto: 0.00 GB <= " in data.summary()
    assert "available host memory" in data.summary()
    assert data.train_set.images.untyped_storage().data_ptr() in _mapped_ranges(tmp_path)


def _mapped_ranges(cache_dir: Path):
    """Addresses of every mapping of a file under cache_dir/decoded (a container with `in`)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if str(cache_dir / "decoded") in line:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append(range(start, end))
    return _Ranges(ranges)


class _Ranges:
    def __init__(self, ranges):
        self.ranges = ranges

    def __contains__(self, address: int) -> bool:
        return any(address in r for r in self.ranges)



_READ_ALL_ROWS = """
import json, sys
from pathlib import Path
import datasets  # imported before the baseline: the library's own memory is not the dataset's
from checkbox_dist.data.sources import scan

def status_kb(field):
    return int(next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":")).split()[1])

def mapped_kb(folder):  # resident kB of the files under folder that this process maps (smaps)
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's header line
            current = len(fields) >= 6 and fields[5].startswith(folder)
        elif current and fields[0] == "Rss:":
            total += int(fields[1])
    return total

root = Path(sys.argv[1])
before = status_kb("RssAnon")
read = sum(len(ref.read_bytes()) for ref in scan(root).refs)  # opens the dataset, reads every row
print(json.dumps({"read_kb": read // 1024, "anon_kb": status_kb("RssAnon") - before, "mapped_kb": mapped_kb(str(root))}))
"""


def test_a_saved_hf_dataset_is_read_through_its_mapping_not_copied_per_process(tmp_path: Path):
    """A fresh process that opens a saved HF dataset and reads every row holds the Arrow files' pages as
    file-backed, mapped memory (the page cache: one copy per host, as the decoded cache), not a copy of its own
    in anonymous memory: the mapped pages, not the anonymous ones, grow by the dataset's size."""
    pytest.importorskip("datasets")
    import json
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from checkbox_dist.data.writers import write_hf

    rng = np.random.default_rng(0)
    files = []
    for i in range(60):  # incompressible 64x64 RGBA crops, ~16 KB each
        path = tmp_path / "crops" / ("checked", "unchecked", "other")[i % 3] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), "RGBA").save(path)
        files.append(path)
    root = write_hf(files * 40, ["checked", "other", "unchecked"], tmp_path / "hf")  # 2,400 rows
    size_kb = sum(f.stat().st_size for f in root.glob("*.arrow")) // 1024
    assert size_kb > 30_000

    done = subprocess.run([sys.executable, "-c", _READ_ALL_ROWS, str(root)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["read_kb"] >= 0.9 * size_kb
    assert got["mapped_kb"] >= 0.8 * size_kb, f"the Arrow files are not read through a mapping: {got}, {size_kb} kB"
    assert got["anon_kb"] < 0.25 * size_kb, f"anonymous memory grew with the dataset: {got}, {size_kb} kB"


def test_the_catalog_holds_a_sample_in_about_a_hundred_bytes_besides_its_key():
    """A million-sample root costs each process its catalog: a ref is its key plus a small fixed record (the
    folder, shard or dataset it is read from is shared by every ref), no per-sample Path object or __dict__."""
    import tracemalloc

    from checkbox_dist.data.sources import _from_index

    n = 20_000
    keys = [f"{('checked', 'other', 'unchecked')[i % 3]}/crop_{i:07d}.png" for i in range(n)]
    payload = {"kind": "folder", "keys": keys, "classes": ["checked", "other", "unchecked"],
               "labels": [i % 3 for i in range(n)], "splits": None, "groups": None, "bad": []}
    tracemalloc.start()
    try:
        catalog = _from_index(Path("/data/crops"), payload)
        per_sample = tracemalloc.get_traced_memory()[0] / n
    finally:
        tracemalloc.stop()
    assert catalog.refs[7].path == Path("/data/crops") / keys[7] and catalog.refs[7].key == keys[7]
    assert per_sample < 200, f"{per_sample:.0f} bytes per sample besides its key"
