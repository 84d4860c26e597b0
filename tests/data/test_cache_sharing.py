"""The processes of a host share ONE copy of the decoded cache (issue 37): a 2-process gloo world on one machine
(what `ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2` starts) trains from the device-resident set, and
both processes map the same cache file, whose resident pages are shared: in /proc/<pid>/smaps each process is
charged about half of them (Pss), not all (a per-process copy, the old torch.load, has no file mapping at all).
Only the local main process reads the image files for the cache key; the other processes get the key from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import load_weights, tiny_train_args
from reliability_harness import one_line_error, run_world, start_world, wait_for

pytestmark = pytest.mark.system


def cache_mappings(pid: int, decoded: Path) -> dict[str, dict[str, int]]:
    """{mapped file: {"Rss": kB, "Pss": kB, "inode": n}} of the files under `decoded` that process `pid` maps."""
    found: dict[str, dict[str, int]] = {}
    current = None
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:  # a mapping's header line
            current = fields[5] if len(fields) > 5 and fields[5].startswith(str(decoded)) else None
            if current:
                entry = found.setdefault(current, {"Rss": 0, "Pss": 0, "inode": int(fields[4])})
        elif current and fields[0] in ("Rss:", "Pss:"):
            entry[fields[0][:-1]] += int(fields[1])
    return found


def test_two_local_processes_map_one_cache_file_and_share_its_pages(tmp_path: Path):
    cache = tmp_path / "cache"
    decoded = cache / "decoded"
    argv = tiny_train_args(tmp_path / "run", cache, "data.device_cache=on", "data.image_size=64", "data.batch_size=8",
                           "train.epochs=12", "eval.every_epochs=1000")
    children = start_world(2, argv)
    seen: dict[int, dict] = {}

    def both_share() -> bool:
        for child in children:
            seen[child.pid] = cache_mappings(child.pid, decoded)
        maps = list(seen.values())
        common = set(maps[0]) & set(maps[1])
        # every page of the train file touched by both: each process is charged about half of its resident pages
        return any(all(m[f]["Rss"] > 0 and m[f]["Pss"] * 1.5 <= m[f]["Rss"] for m in maps) for f in common)

    try:
        wait_for(both_share, 240, "both processes to share the mapped cache's pages", children[0])
    except AssertionError as err:
        raise AssertionError(f"{err}; last seen: {seen}") from None
    finally:
        results = [child.wait(300) for child in children]
    assert [r.rc for r in results] == [0, 0], results[0].err[-3000:] + results[1].err[-3000:]
    maps = list(seen.values())
    common = set(maps[0]) & set(maps[1])
    assert common and all(f.endswith(".u8") for f in common)
    for f in common:
        assert maps[0][f]["inode"] == maps[1][f]["inode"]  # the same file, not two copies
    assert "held on the device (data.device_cache=on)" in results[0].out
    assert len(list(decoded.glob("*.u8"))) == 2  # train and val, written once by the local main process


def test_only_the_local_main_process_hashes_the_files_and_both_train_as_one_process_does(tmp_path: Path):
    """Rank 1 would be SIGKILLed if it hashed one file for the cache key (CHECKBOX_DIST_FAULT=cache_key:1@1): the
    local main process hashes and decodes, rank 1 maps the file it wrote. 2 processes x 1 micro-batch train
    bit-identical parameters to 1 process x 2 (exact sums): both ranks trained on the same, right images."""
    recipe = ["train.global_batch_size=16", "data.batch_size=8", "train.exact_gradient_sum=true", "train.epochs=1",
              "train.max_steps=2", "eval.calibrate=false", "data.device_cache=on"]
    runs = {}
    for world in (2, 1):
        out = runs[world] = tmp_path / f"world{world}"
        cache = tmp_path / f"cache{world}"
        args = tiny_train_args(out, cache, *recipe)[1:]
        results = run_world(world, ["train", *args], env={"CHECKBOX_DIST_FAULT": "cache_key:1@1"})
        for rank, result in enumerate(results):
            assert result.rc == 0, f"rank {rank} of {world}: exit {result.rc}\n{result.err[-3000:]}"
        assert "held on the device (data.device_cache=on)" in results[0].out
        assert len(list((cache / "decoded").glob("*.u8"))) == 2  # train and val, written once
    a, b = load_weights(runs[2] / "checkpoints" / "last"), load_weights(runs[1] / "checkpoints" / "last")
    params = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params and all(torch.equal(a[k], b[k]) for k in params)  # BatchNorm statistics are per process


def test_an_unreadable_image_stops_both_processes_with_one_line(tmp_path: Path):
    """The local main process meets the unreadable image while it decodes the cache; rank 1, waiting for the key,
    is not left waiting: it decodes itself and stops with the same error (exit 2, no traceback)."""
    from PIL import Image

    root = tmp_path / "data"
    for cls in ("checked", "other", "unchecked"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), (i * 40, 0, 0)).save(root / cls / f"{i}.png")
    (root / "other" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    args = tiny_train_args(tmp_path / "run", tmp_path / "cache", "data.device_cache=on", "data.batch_size=4",
                           "train.epochs=1", data_root=root)[1:]
    results = run_world(2, ["train", *args], env={"CHECKBOX_DIST_ALL_RANKS_ERRORS": "1"}, timeout=120)
    for result in results:
        assert "corrupt.png" in one_line_error(result)
    assert not (tmp_path / "run" / "checkpoints").exists()
