"""The `checkbox-dist` command. Every subcommand lives in its module as add_parser(sub) + run(args).

    checkbox-dist quickstart                      synthetic data -> train on CPU -> classify one image
    checkbox-dist train --config C [section.key=value ...]
    checkbox-dist eval --checkpoint RUN --data DIR
    checkbox-dist split --data DIR --out split.json [--val-fraction 0.2 --seed 42]
    checkbox-dist stats --data DIR [--image-size 224 --resize letterbox --background '#ffffff']
    checkbox-dist synth --out DIR --n 600 --seed 0

A problem the user can fix (bad path, bad config, corrupt image) prints one line and exits 2; a run
stopped on request (preemption) exits 75 after saving; Ctrl-C exits 130. This module is the only one that
turns exceptions into exit codes. It imports each command's modules when that command runs, so `--help`
does not pay for torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from pathlib import Path

from checkbox_dist import __version__
from checkbox_dist.core.errors import Preempted, UserError

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO, errno.EACCES, errno.EPERM}

# Modules that provide a subcommand (add_parser + run), in `--help` order.
COMMAND_MODULES = ["checkbox_dist.infer.evaluate", "checkbox_dist.synth", "checkbox_dist.experiments.cv", "checkbox_dist.experiments.sweep",
                   "checkbox_dist.experiments.audit", "checkbox_dist.infer.predict", "checkbox_dist.infer.export",
                   "checkbox_dist.serve.app", "checkbox_dist.bench.infer", "checkbox_dist.bench.train",
                   "checkbox_dist.bench.serve"]


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (any launcher: plain, accelerate launch, srun)")
    p.add_argument("--config", default=None, help="YAML config (configs/*.yaml); defaults apply without one")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=3 model.name=resnet18")
    p.set_defaults(handler=_run_train)


def _run_train(args) -> int:
    from checkbox_dist import train
    from checkbox_dist.core.config import load_config

    cfg = load_config(args.config, args.overrides)
    try:
        train.run(cfg, args.config)
    except RuntimeError as err:
        # gloo/NCCL when a peer died (connection reset, at once) or hung (train.collective_timeout_s): every
        # surviving process says it in one line instead of a C++ traceback, and exits.
        import torch.distributed as dist

        if not (isinstance(err, dist.DistError) or "gloo" in str(err)) or not dist.is_initialized():
            raise
        reason = " ".join(str(err).split())[:300]
        print(f"error: process {dist.get_rank()} of {dist.get_world_size()} lost contact with the others ({reason}); "
              f"one of them died or hung: see its log, then resume with train.resume=auto", file=sys.stderr, flush=True)
        return 2
    return 0


def _add_split(sub) -> None:
    p = sub.add_parser("split", help="write a stratified, seeded train/val index file (no copying)")
    p.add_argument("--data", required=True, help="folder ROOT/<class>/*")
    p.add_argument("--out", required=True, help="index file to write (JSON), used as data.split_file")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(handler=_run_split)


def _run_split(args) -> int:
    from checkbox_dist.data.split import write_split_file

    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    split = write_split_file(Path(args.data), Path(args.out), args.val_fraction, args.seed)
    for name, items in (("train", split.train), ("val", split.val)):
        counts = [sum(1 for _, y in items if y == i) for i in range(len(split.classes))]
        print(f"{name}: {len(items)} images (" + ", ".join(f"{c} {n}" for c, n in zip(split.classes, counts)) + ")")
    print(f"wrote {args.out}; train with data.root={args.data} data.split_file={args.out}")
    return 0


def _add_stats(sub) -> None:
    p = sub.add_parser("stats", help="per-channel mean/std of the preprocessed images (for data.mean/std)")
    p.add_argument("--data", required=True, help="folder ROOT/<class>/* or ROOT/{train,val}/<class>/*")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--resize", choices=["letterbox", "stretch"], default="letterbox")
    p.add_argument("--background", default="#ffffff")
    p.set_defaults(handler=_run_stats)


def _run_stats(args) -> int:
    from checkbox_dist.data.cache import channel_stats
    from checkbox_dist.data.split import build_split
    from checkbox_dist.data.images import PreprocessSpec, parse_color

    parse_color(args.background)
    split = build_split(Path(args.data))
    spec = PreprocessSpec(image_size=args.image_size, resize=args.resize, background=args.background)
    mean, std = channel_stats(split.train, spec)
    print(f"{len(split.train)} training images, {args.image_size}px {args.resize} on {args.background}")
    print(f"data.mean={mean} data.std={std}")
    print(f"use: data.normalize=custom 'data.mean={mean}' 'data.std={std}'")
    return 0


def _add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="the embedded default end to end: synthetic data, CPU training, predict")
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(handler=_run_quickstart)


def _run_quickstart(args) -> int:
    from checkbox_dist import train
    from checkbox_dist.core import runs
    from checkbox_dist.core.config import load_config
    from checkbox_dist.data.synthetic import synthetic_root
    from checkbox_dist.infer.predictor import Predictor

    overrides = list(args.overrides)
    if not any(o.startswith("train.output_dir=") for o in overrides):
        overrides.append(f"train.output_dir={runs.timestamped('quickstart')}")
    cfg = load_config(args.config, overrides)
    summary = train.run(cfg, args.config)
    root = Path(cfg.data.root) if cfg.data.root else synthetic_root(cfg.data)
    sample = sorted(root.glob("checked*/checked_*.png"))[0]  # checked/ or, with data.synth_labels=kind, checked-*/
    result = Predictor([summary["best_checkpoint"]], device="cpu").predict_files([sample])[0]
    confidences = ", ".join(f"{c} {p:.3f}" for c, p in result["confidence"].items())
    print(f"predict {sample}: {result['class']} ({confidences})")
    print(f"next: checkbox-dist predict --checkpoint {summary['best_checkpoint']} YOUR_IMAGE.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="checkbox-dist", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"checkbox_dist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_quickstart(sub)
    _add_train(sub)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        before = set(sub.choices)
        module.add_parser(sub)
        for added in set(sub.choices) - before:
            if sub.choices[added].get_default("handler") is None:
                sub.choices[added].set_defaults(handler=module.run)
    _add_split(sub)
    _add_stats(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Preempted as err:  # the run said where it saved and how to resume; slurm/*.sh requeue on 75
        return err.exit_code
    except UserError as err:
        # In a multi-process run every process hits the same error: let one of them say it.
        if os.environ.get("RANK", "0") == "0" or os.environ.get("CHECKBOX_DIST_ALL_RANKS_ERRORS"):
            print(f"error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except OSError as err:
        # A full, read-only or failing disk under the run folder (log, metrics, plots): one line too.
        # Checkpoints have their own message (checkpoint.save); anything else stays a traceback (a bug).
        if err.errno not in _DISK_ERRNOS:
            raise
        if os.environ.get("RANK", "0") == "0" or os.environ.get("CHECKBOX_DIST_ALL_RANKS_ERRORS"):
            print(f"error: {err.filename or 'write'}: {err.strerror}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
