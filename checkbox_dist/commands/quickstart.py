"""`checkbox-dist quickstart`: synthetic data -> a small model trained on the CPU -> one image classified."""

from __future__ import annotations

from pathlib import Path

from checkbox_dist.commands import add_command, add_config_args

EXAMPLES = """examples:
  checkbox-dist quickstart                              # a few minutes on a laptop CPU
  checkbox-dist quickstart train.epochs=3               # shorter
  checkbox-dist quickstart --config my.yaml             # the same steps with your own config"""
DETAILS = """Generates the synthetic UI-widget dataset (cached in data.cache_dir), trains the packaged `quickstart`
config (resnet10t at 64 px, 4,000 generated images, 10 epochs) into runs/quickstart-<time>/ in the current
folder, prints the metrics, and classifies one generated image with the best checkpoint."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "quickstart", "synthetic data -> CPU training -> predict, end to end",
                    EXAMPLES, DETAILS)
    add_config_args(p, "quickstart",
                    overrides="config overrides, e.g. train.epochs=3 model.name=resnet18 (values are YAML)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist import train
    from checkbox_dist.core import runs
    from checkbox_dist.core.config_loader import load_config
    from checkbox_dist.infer.predictor import Predictor
    from checkbox_dist.synth import render_index

    overrides = list(args.overrides)
    if not any(o.startswith("train.output_dir=") for o in overrides):
        overrides.append(f"train.output_dir={runs.timestamped('quickstart')}")
    cfg = load_config(args.config, overrides)
    summary = train.run(cfg, args.config)
    if not summary:  # not the main process of a multi-process launch
        return 0
    model = summary.get("ensemble") or summary["best_checkpoint"]  # train.ensemble_members > 1: the ensemble
    run_dir = Path(summary.get("run_dir") or Path(model).parent)
    # A widget the model has never seen: a new seed, not a file of its training or validation split.
    image, label = render_index(cfg.data.synth_seed + 1_000_003, 0)
    sample = run_dir / f"sample_{label}.png"
    image.save(sample)
    result = Predictor([model], device="cpu").predict_files([sample])[0]
    confidences = ", ".join(f"{c} {p:.3f}" for c, p in result["confidence"].items())
    print(f"predict {sample} (drawn as {label}): {result['class']} ({confidences})")
    for line in closing_lines(cfg, summary, model):
        print(line)
    return 0


def closing_lines(cfg, summary: dict, model: str) -> list[str]:
    """What the model is and what to run next (the run itself has printed where its plots are)."""
    synthetic = not cfg.data.root
    what = ("a demo trained on generated widgets, not meant for real screenshots"
            if synthetic else f"trained on {cfg.data.root}")
    score = (f"val top-1 {summary['val_top1']:.3f} on its {'synthetic ' if synthetic else ''}validation split"
             if summary.get("val_top1") is not None else "no held-out figure (a refit or an ensemble: see above)")
    return [f"model: {model} ({what}); {score}",
            "next:",
            f"  checkbox-dist predict --checkpoint {model} YOUR_IMAGE.png",
            "  checkbox-dist train --config checkbox_state_v2 data.root=YOUR_CROPS      # ROOT/<class>/*.png",
            "  accelerate launch --config_file $(checkbox-dist configs --path multi_gpu) -m checkbox_dist.train "
            "--config checkbox_state_v2 data.root=YOUR_CROPS      # every GPU of this machine"]
