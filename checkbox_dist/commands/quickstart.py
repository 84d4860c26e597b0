"""`checkbox-dist quickstart`: synthetic data -> a small model trained on the CPU -> one image classified."""

from __future__ import annotations

from pathlib import Path

from checkbox_dist.commands import CONFIG_HELP, OVERRIDES_METAVAR, add_command

EXAMPLES = """examples:
  checkbox-dist quickstart                              # a few minutes on a laptop CPU
  checkbox-dist quickstart train.epochs=3               # shorter
  checkbox-dist quickstart --config my.yaml             # the same steps with your own config"""
DETAILS = """Generates the synthetic UI-widget dataset (cached in data.cache_dir), trains the packaged `quickstart`
config (resnet18 at 64 px) into runs/quickstart-<time>/ in the current folder, prints the metrics, and
classifies one generated image with the best checkpoint."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "quickstart", "synthetic data -> CPU training -> predict, end to end",
                    EXAMPLES, DETAILS)
    p.add_argument("--config", default="quickstart", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", metavar=OVERRIDES_METAVAR,
                   help="config overrides, e.g. train.epochs=3 model.name=resnet18 (values are YAML)")
    p.set_defaults(handler=run)


def run(args) -> int:
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
