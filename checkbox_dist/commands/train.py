"""`checkbox-dist train`: one training run, under any launcher (the same as the root train.py and
`python -m checkbox_dist.train`)."""

from __future__ import annotations

import sys

from checkbox_dist.commands import add_command, add_config_args
from checkbox_dist.core.errors import UserError

EXAMPLES = """examples:
  checkbox-dist train --config quickstart                                   # CPU, synthetic data
  checkbox-dist train --config checkbox_state_v2 data.root=/data/crops      # your crops, ROOT/<class>/*.png
  checkbox-dist train --config my.yaml train.epochs=3 model.name=resnet18
  checkbox-dist train --config C train.output_dir=runs/a train.resume=auto  # continue a stopped run
  accelerate launch --config_file L -m checkbox_dist train --config C       # L: `checkbox-dist configs`"""
DETAILS = """The run folder is train.output_dir, by default runs/<config name>-<time>/ in the current folder:
config.yaml, log.txt, metrics.jsonl, summary.json, plots/ and checkpoints/best (what predict, eval, export
and serve load). Every key, its type and default: `checkbox-dist config --reference`.
Exit codes: 2 a problem you can fix (one `error:` line), 75 stopped on request after saving (rerun with
train.resume=auto to continue), 130 interrupted."""


# The built-in defaults are the seed's recipe (SGD, 500 epochs), not one to run by accident: train asks for one.
RECIPES = ("quickstart (a CPU demo on generated widgets), checkbox_state_v2 (the recommended recipe), "
           "seed_recipe (the seed's SGD/500-epoch recipe) or your YAML")


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "train", "train a model (any launcher: plain, accelerate launch, srun)",
                    EXAMPLES, DETAILS)
    add_config_args(p, note="required: " + RECIPES,
                    overrides="config overrides, e.g. train.epochs=3 model.name=resnet18")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist import train
    from checkbox_dist.core.config_loader import load_config

    if not args.config:
        raise UserError(f"train needs --config: {RECIPES}; `checkbox-dist configs` lists them")
    cfg = load_config(args.config, args.overrides)
    try:
        train.run(cfg, args.config)
    except RuntimeError as err:
        # gloo/NCCL when a peer died (connection reset, at once) or hung (train.collective_timeout_s): every
        # surviving process says it in one line instead of a C++ traceback, and exits.
        import torch.distributed as dist

        # A peer lost inside DDP's gradient all-reduce (session.sum_gradients' hook) reaches here as a plain
        # RuntimeError about the hook's callback ("... pair closure"), not as a DistError.
        lost = isinstance(err, dist.DistError) or any(words in str(err) for words in ("gloo", "pair closure"))
        if not lost or not dist.is_initialized():
            raise
        reason = " ".join(str(err).split())[:300]
        print(f"error: process {dist.get_rank()} of {dist.get_world_size()} lost contact with the others ({reason}); "
              f"one of them died or hung: see its log, then resume with train.resume=auto", file=sys.stderr, flush=True)
        return 2
    return 0
