"""The processes of a host share ONE copy of the decoded cache (issue 37): a 2-process gloo world on one machine
(what `ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2` starts) trains from the device-resident set, and
both processes map the same cache file, whose resident pages are shared: in /proc/<pid>/smaps each process is
charged about half of them (Pss), not all (a per-process copy, the old torch.load, has no file mapping at all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_train_args
from reliability_harness import start_world, wait_for

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
