"""`checkbox-dist config`: a config resolved (YAML, as a run saves it), or the reference of every key."""

from __future__ import annotations

from checkbox_dist.commands import add_command, add_config_args
from checkbox_dist.core.errors import UserError

EXAMPLES = """examples:
  checkbox-dist config --config quickstart train.epochs=3     # the config a run would get, as YAML
  checkbox-dist config                                        # the defaults
  checkbox-dist config --reference > CONFIG.md                # every key: type, default, meaning (Markdown)"""
DETAILS = """The YAML is what a run saves as config.yaml: every key, after the config file and the overrides, checked
as `train` checks it (a bad key or value is one `error:` line, exit 2). It loads back with --config FILE."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "config", "print a resolved config (YAML), or every key's reference",
                    EXAMPLES, DETAILS)
    add_config_args(p, note="defaults apply without one")
    p.add_argument("--reference", action="store_true",
                   help="print the reference of every key (type, default, meaning) as Markdown instead")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.core.config_loader import dump_yaml, load_config
    from checkbox_dist.core.config_reference import reference

    if args.reference:
        if args.config or args.overrides:
            raise UserError("config --reference describes every key; it takes no --config or overrides")
        print(reference(), end="")
        return 0
    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0
