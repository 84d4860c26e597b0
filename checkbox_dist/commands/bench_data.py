"""`checkbox-dist bench-data`: start-up, memory and training rate against the dataset's size, cached vs streaming."""

from __future__ import annotations

from checkbox_dist.commands import add_command, add_config_args

EXAMPLES = """examples:
  checkbox-dist bench-data --sizes 1000,10000 --out bench-data          # generated crops, both data paths
  checkbox-dist bench-data --sizes 1000 --formats csv,parquet,hf,tar  # the generated crops in each format
  checkbox-dist bench-data --roots /data/crops --processes 1            # a data root as it is (any data.root)
  checkbox-dist bench-data --sizes 60 --steps 4 --processes 1 --out /tmp/b   # a smoke test"""
DETAILS = """Per data root and data path (on: the memory-mapped decoded cache held on the device; off: streaming,
decoded by DataLoader workers), the real `train` command runs in fresh processes: cold (empty cache), warm, and
2 processes under `accelerate launch`. Reported: start-up seconds (until the data is ready), peak RSS of the
largest process, train img/s of our loop and of a plain PyTorch loop on the same images, and the decode cost per
image (ms, one worker) for the GPU projection. --formats converts the generated crops to each data.root format
(a manifest beside them, a saved HF dataset, tar shards) under --work, once, and measures each. Writes OUT/bench_data.json, .md (the table) and .png (the plot)."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "bench-data", "start-up, memory and img/s against dataset size, cached vs streaming",
                    EXAMPLES, DETAILS)
    add_config_args(p, "quickstart", overrides="config overrides (the bench sets test_resnet at 64 px first)")
    p.add_argument("--sizes", default="", help="comma-separated counts of generated crops, e.g. 1000,10000,100000")
    p.add_argument("--formats", default="folder",
                   help="formats of the generated crops: folder,csv,jsonl,parquet,hf,tar (comma-separated)")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per tar shard of --formats tar")
    p.add_argument("--roots", default="", help="comma-separated data roots measured as they are (any data.root)")
    p.add_argument("--out", default="bench-data", help="folder for bench_data.json, .md and .png")
    p.add_argument("--work", default="~/.cache/checkbox_dist/bench-data",
                   help="folder for the generated crops (kept and reused) and the runs' caches (removed)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated crops")
    p.add_argument("--steps", type=int, default=24, help="training steps per run (img/s: after the first interval)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the streaming runs")
    p.add_argument("--processes", default="1,2", help="process counts to run (1 and/or 2)")
    p.add_argument("--modes", default="on,off", help="data paths: on (device-resident), off (streaming)")
    p.add_argument("--append", action="store_true", help="keep the other rows of an existing OUT/bench_data.json")
    p.add_argument("--synth-workers", type=int, default=1, help="processes that generate the crops")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.bench import data

    return data.run(args)
