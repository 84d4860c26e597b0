"""`checkbox-dist synth`: the deterministic synthetic UI-widget generator, to a folder."""

from __future__ import annotations

from checkbox_dist.commands import add_command

LABELS = ("class", "kind")  # synth.LABELS (tests/test_cli.py checks)
EXAMPLES = """examples:
  checkbox-dist synth --out data/synth --n 3000 --seed 0 --workers 2
  checkbox-dist synth --out data/synth-kinds --n 3000 --labels kind      # OUT/checked-radio/, other-slider/ ..."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "synth", "write the synthetic checkbox dataset to a folder", EXAMPLES,
                    "Render N synthetic UI crops into OUT/<class>/ (cached by N, seed).")
    p.add_argument("--out", "--output", dest="out", required=True, help="output folder (created)")
    p.add_argument("--n", type=int, default=3000, help="number of images, classes balanced (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--labels", choices=LABELS, default="class",
                   help="sub-folders per class (default) or per class and drawn kind: checked-radio, other-slider")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist import synth

    return synth.run(args)
