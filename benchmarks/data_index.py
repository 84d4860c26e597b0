"""Start-up of each data format: a full scan vs reading the index (docs/DATA.md, "Start-up: the index").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_index.py [N] [WORK_DIR]

Writes N samples (default 20,000; 30 generated images hard-linked N/30 times) in every format (data/writers.py)
under WORK_DIR (default /tmp/data-index-bench), then times, per format: `scan` (what every rank did at start before
the index), the first `indexed_catalog` (scan + write the index) and the second (read the index), best of 3.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from checkbox_dist.data.sources import index_file, indexed_catalog, scan
from checkbox_dist.data.writers import write_hf, write_manifest, write_shards
from checkbox_dist.synth import generate


def build(n: int, work: Path) -> dict[str, Path]:
    seed_dir = work / "seed"
    generate(seed_dir, 30, seed=5)
    images = sorted(seed_dir.glob("*/*.png"))
    folder, rows = work / "folder", []
    for i in range(n):
        src = images[i % len(images)]
        dst = folder / src.parent.name / f"{src.stem}_{i:07d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
        rows.append((dst, src.parent.name))
    files = [p for p, _ in rows]
    write_manifest("csv", [{"path": p.relative_to(work).as_posix(), "label": label, "group": f"g{i // 5}"}
                           for i, (p, label) in enumerate(rows)], work / "manifest.csv")
    write_shards(files, work / "shards", per_shard=5000)
    write_hf(files, sorted({label for _, label in rows}), work / "hf")
    return {"folder": folder, "csv": work / "manifest.csv", "tar": work / "shards", "hf": work / "hf"}


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    work = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/data-index-bench")
    shutil.rmtree(work, ignore_errors=True)
    roots = build(n, work)
    print(f"| format | samples | scan s | scan + write index s | read index s | index MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, root in roots.items():
        cache = work / "cache"
        scanned = best(lambda: scan(root))
        first = []

        def cold():
            index_file(root, cache).unlink(missing_ok=True)
            first.append(indexed_catalog(root, cache, lambda *_: None))

        write = best(cold)
        read = best(lambda: indexed_catalog(root, cache, lambda *_: None))
        assert first[-1].scanned and not indexed_catalog(root, cache, lambda *_: None).scanned
        size = index_file(root, cache).stat().st_size / 1e6
        print(f"| {kind} | {len(first[-1].refs):,} | {scanned:.2f} | {write:.2f} | {read:.2f} | {size:.1f} |")


if __name__ == "__main__":
    main()
