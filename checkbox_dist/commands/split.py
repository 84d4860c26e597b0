"""`checkbox-dist split`: a stratified, seeded train/val index file (no images are copied)."""

from __future__ import annotations

from pathlib import Path

from checkbox_dist.commands import add_command
from checkbox_dist.core.errors import UserError

EXAMPLES = """examples:
  checkbox-dist split --data /data/crops --out /data/crops/split.json
  checkbox-dist train --config checkbox_state_v2 data.root=/data/crops data.split_file=/data/crops/split.json"""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "split", "write a stratified, seeded train/val index file (no copying)", EXAMPLES)
    p.add_argument("--data", required=True,
                   help="as data.root: a folder ROOT/<class>/*, a manifest, a saved HF dataset or tar shards; "
                        "a group column keeps each group on one side")
    p.add_argument("--out", "--output", dest="out",
                   required=True, help="index file to write (JSON), used as data.split_file")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out for validation")
    p.add_argument("--seed", type=int, default=42, help="seed of the split")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.data.sources import resolve_root
    from checkbox_dist.data.split import write_split_file

    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    split = write_split_file(resolve_root(args.data), Path(args.out), args.val_fraction, args.seed)
    for name, items in (("train", split.train), ("val", split.val)):
        counts = [sum(1 for _, y in items if y == i) for i in range(len(split.classes))]
        print(f"{name}: {len(items)} images (" + ", ".join(f"{c} {n}" for c, n in zip(split.classes, counts)) + ")")
    print(f"wrote {args.out}; train with data.root={args.data} data.split_file={args.out}")
    return 0
