"""`checkbox-dist eval`: score checkpoints (one, or an ensemble) on a labelled folder."""

from __future__ import annotations

from checkbox_dist.commands import add_command

EXAMPLES = """examples:
  checkbox-dist eval --checkpoint runs/quickstart-<time> --data /data/checkbox_state_v2/val
  checkbox-dist eval --checkpoint A --checkpoint B --data D --tta     # ensemble of two, with flips"""
DETAILS = """Preprocesses exactly as the checkpoint's training did, prints a classification report, reports ECE
before and after the checkpoint's temperature, and writes a confusion-matrix PNG and eval.json."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "eval", "evaluate checkpoint(s) on a labelled folder", EXAMPLES, DETAILS)
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint folder, run folder, exported timm folder or Hub id hf-hub:ORG/NAME "
                        "(repeat for an ensemble)")
    p.add_argument("--data", required=True,
                   help="folder ROOT/<class>/*.png (or ROOT/val/<class>), or any other data.root format (a manifest, "
                        "a saved HF dataset, tar shards: its val part when it has one)")
    p.add_argument("--out", "--output", dest="out",
                   default="", help="folder for the report files (default: next to the first checkpoint)")
    p.add_argument("--tta", action="store_true", help="average over the horizontal mirror too")
    p.add_argument("--batch-size", type=int, default=64, help="images per model call")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, mps ... (default: cuda if present, else Apple's mps, else cpu)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.infer import evaluate

    return evaluate.run(args)
