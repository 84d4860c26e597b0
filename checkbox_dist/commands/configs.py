"""`checkbox-dist configs`: the configs shipped with the package (training configs, sweep spaces, launch
configs), and where they are."""

from __future__ import annotations

from checkbox_dist.commands import add_command
from checkbox_dist.core import resources
from checkbox_dist.core.errors import UserError

EXAMPLES = """examples:
  checkbox-dist configs                                       # list them
  checkbox-dist train --config checkbox_state_v2              # a training config, by name
  checkbox-dist config --config quickstart                    # what a config resolves to
  ACCELERATE_USE_CPU=true accelerate launch --config_file "$(checkbox-dist configs --path cpu_2proc)" \\
      -m checkbox_dist train --config quickstart              # a launch config, by path"""
HEADINGS = {
    "config": "training configs: checkbox-dist train --config NAME (or the path of your own YAML)",
    "sweep": 'sweep spaces: checkbox-dist sweep --space "$(checkbox-dist configs --path NAME)" --config C',
    "launch": 'Accelerate launch configs: accelerate launch --config_file "$(checkbox-dist configs --path NAME)" '
              "-m checkbox_dist train --config C",
}


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "configs", "list the packaged configs (training, sweep spaces, launch)", EXAMPLES)
    p.add_argument("--path", metavar="NAME", default=None,
                   help="print only the file of the packaged config NAME (e.g. quickstart, cpu_2proc, "
                        "sweeps/checkbox_state_v2)")
    p.set_defaults(handler=run)


def run(args) -> int:
    shipped = resources.catalogue()
    if args.path is not None:
        match = [s for s in shipped if s.name == args.path]
        if not match:
            raise UserError(f"configs --path: no packaged config {args.path!r} (packaged: "
                            f"{', '.join(s.name for s in shipped)})")
        print(match[0].path)
        return 0
    width = max(len(s.name) for s in shipped) + 2
    for kind, heading in HEADINGS.items():
        print(heading)
        for s in (s for s in shipped if s.kind == kind):
            print(f"  {s.name:<{width}}{s.summary}")
        print()
    print(f"files: {resources.ROOT}")
    return 0
