"""`checkbox-dist stats`: per-channel mean/std of the preprocessed training images."""

from __future__ import annotations


from checkbox_dist.commands import add_command

EXAMPLES = """examples:
  checkbox-dist stats --data /data/crops --image-size 128
  checkbox-dist train --config C data.normalize=custom 'data.mean=[...]' 'data.std=[...]'   # what it prints"""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "stats", "per-channel mean/std of the images (for data.mean/std)",
                    EXAMPLES)
    p.add_argument("--data", required=True,
                   help="as data.root: a folder ROOT/<class>/*, a manifest, a saved HF dataset or tar shards")
    p.add_argument("--image-size", type=int, default=224, help="as data.image_size")
    p.add_argument("--resize", choices=["letterbox", "stretch"], default="letterbox", help="as data.resize")
    p.add_argument("--background", default="#ffffff", help="as data.background")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.data.cache import channel_stats
    from checkbox_dist.data.images import PreprocessSpec, parse_color
    from checkbox_dist.data.sources import resolve_root
    from checkbox_dist.data.split import build_split

    parse_color(args.background)
    split = build_split(resolve_root(args.data))
    spec = PreprocessSpec(image_size=args.image_size, resize=args.resize, background=args.background)
    mean, std = channel_stats(split.train, spec)
    print(f"{len(split.train)} training images, {args.image_size}px {args.resize} on {args.background}")
    print(f"data.mean={mean} data.std={std}")
    print(f"use: data.normalize=custom 'data.mean={mean}' 'data.std={std}'")
    return 0
