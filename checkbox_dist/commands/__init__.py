"""The commands of `checkbox-dist`: one light module per command, each `add_parser(subparsers)` + `run(args)`.

Part of the command-line layer, with cli.py. A command's module holds its flags, defaults, help and
examples, and imports the code that does the work inside `run`, when the command runs: building the whole
parser imports no torch, timm or accelerate, so `checkbox-dist --help` and `checkbox-dist COMMAND --help`
answer at once (tests/test_cli.py times them). That is why these modules, like cli.py, may import
checkbox_dist modules inside functions (tests/test_architecture.py); the work itself lives in the layers
below, which import at the top of a module as usual.
"""

from __future__ import annotations

import argparse
import textwrap

# Command modules (checkbox_dist.commands.<name>), in `checkbox-dist --help` order.
MODULES = ["quickstart", "train", "evaluate", "predict", "export", "serve", "cv", "sweep", "audit", "split",
           "stats", "synth", "configs", "config", "bench_train", "bench_data", "bench_infer", "bench_serve"]

OVERRIDES_METAVAR = "section.key=value"
CONFIG_HELP = "a packaged config name (`checkbox-dist configs` lists them) or a YAML file"


class HelpFormatter(argparse.HelpFormatter):
    """A paragraph with indented lines (examples, tables) keeps its line breaks; prose is wrapped to the
    terminal. An option's default is shown unless it is empty or off, or its help already says it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks = []
        for block in text.split("\n\n"):
            lines = block.splitlines()
            if any(line.startswith(" ") for line in lines):
                blocks.append("\n".join(indent + line for line in lines))
            else:
                blocks.append(textwrap.fill(" ".join(block.split()), width, initial_indent=indent,
                                            subsequent_indent=indent))
        return "\n\n".join(blocks)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default is argparse.SUPPRESS or default in ("", [])
        positional_default = not action.option_strings and action.nargs not in ("?", "*")
        if hidden or positional_default or "default" in text or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if action.nargs == argparse.PARSER:  # argparse measures command names less indented than it prints them
            longest = max(map(len, action.choices), default=0)
            self._action_max_length = max(self._action_max_length, self._current_indent + 2 + longest)


def add_config_args(p: argparse.ArgumentParser, default: str | None = None, note: str = "",
                    overrides: str = "config overrides, as for train") -> None:
    """--config (a packaged name or a file; `note` is added to its help) and the `section.key=value` overrides."""
    p.add_argument("--config", default=default, action=ConfigFiles,
                   help=CONFIG_HELP + "; repeat it to merge files in order" + (f"; {note}" if note else ""))
    p.add_argument("overrides", nargs="*", metavar=OVERRIDES_METAVAR, help=overrides)


class ConfigFiles(argparse.Action):
    """--config A [--config B ...]: A is `args.config`; each later file is kept for `merge_config_files`."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, "_config_given", False):
            namespace.config_layers = [*getattr(namespace, "config_layers", []), values]
        else:
            namespace.config, namespace._config_given = values, True


def merge_config_files(args: argparse.Namespace) -> argparse.Namespace:
    """After parsing: the files of a repeated --config go first among the overrides, as `@FILE`
    (core/config_loader.py load_config merges them in order, before the `section.key=value` overrides)."""
    layers = getattr(args, "config_layers", None)
    if layers:
        args.overrides = [f"@{layer}" for layer in layers] + list(args.overrides)
    return args


def add_command(subparsers, name: str, summary: str, examples: str = "", details: str = "") -> argparse.ArgumentParser:
    """Register `name`: `summary` is its line in `checkbox-dist --help`; its own --help shows the summary,
    the examples (line by line) and the details."""
    description = "\n\n".join(part.strip("\n") for part in (summary[:1].upper() + summary[1:] + ".", examples,
                                                            details) if part)
    return subparsers.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter)
