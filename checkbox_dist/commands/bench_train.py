"""`checkbox-dist bench-train`: our training loop against a plain PyTorch loop, side by side in one process."""

from __future__ import annotations

from checkbox_dist.commands import add_command, add_config_args

EXAMPLES = """examples:
  checkbox-dist bench-train                                                   # quickstart: CPU, synthetic data
  checkbox-dist bench-train --config checkbox_state_v2 data.root="" data.synth_n=4000 \\
      model.name=resnet50 data.image_size=224 data.batch_size=256 train.mixed_precision=bf16 \\
      train.channels_last=true [train.compile=true] [--find-batch-size]
  checkbox-dist bench-train --processes 2                                     # + data-parallel scaling"""
DETAILS = """Three rates, alternated (plain, ours, plain, ours, ...) and reported as medians of --repeats:
  plain step   `model(x)` + cross-entropy + backward + optimizer step on one random batch already on the
               device: same model, batch, precision, memory format, optimizer. The ceiling.
  ours, step   our real training loop between its log intervals (data, augmentation, Accelerate).
  ours, epoch  the same run's whole epochs (images / epoch wall time, evaluation excluded).
Ratios are what to compare (targets: step >= 0.97 x plain, epoch >= 0.95 x step); absolute rates depend
on the machine. --processes N adds the data-parallel figure: our loop as N processes under
`accelerate launch` against one process with the same threads each."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "bench-train", "our training loop vs a plain PyTorch loop, same process",
                    EXAMPLES, DETAILS)
    add_config_args(p, "quickstart", overrides="config overrides (model, size, batch, precision, compile)")
    p.add_argument("--repeats", type=int, default=3, help="alternations of plain and ours (median reported)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of our loop per repeat (the first is warm-up)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of the plain loop per repeat")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps of the plain loop per repeat")
    p.add_argument("--find-batch-size", action="store_true", help="also find the largest batch that fits")
    p.add_argument("--processes", type=int, default=1,
                   help="also run our loop as N processes under accelerate launch (gloo on CPU, NCCL on GPUs) "
                        "and 1 process with the same threads each: prints the scaling efficiency")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per process for --processes (default: cores // N)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.bench import train

    return train.run(args)
