"""The `checkbox-dist` command: builds the parser from checkbox_dist/commands/ and runs the chosen command.

Each command is a light module in checkbox_dist/commands/ (add_parser + run); it imports the code that does
the work only when it runs, so `--help` does not pay for torch. A problem the user can fix (bad path, bad
config, corrupt image) prints one line and exits 2; a run stopped on request (preemption) exits 75 after
saving; Ctrl-C exits 130. This module is the only one that turns exceptions into exit codes.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from checkbox_dist import __version__
from checkbox_dist.commands import MODULES, HelpFormatter, merge_config_files
from checkbox_dist.core.errors import Preempted, UserError

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO, errno.EACCES, errno.EPERM}

DESCRIPTION = """Train and serve an image classifier for the state of UI checkboxes (checked / unchecked / other),
with one code path from a laptop CPU to many GPUs, a Slurm cluster or a TPU VM."""
EPILOG = """start here:
  checkbox-dist quickstart                                  # synthetic data -> CPU training -> predict
  checkbox-dist configs                                     # the packaged configs
  checkbox-dist train --config checkbox_state_v2 data.root=DIR     # your crops: DIR/<class>/*.png
  checkbox-dist predict --checkpoint runs/<run> crop.png           # classify with a trained run
  checkbox-dist COMMAND --help                              # a command's options and examples

Runs are folders under ./runs/. Config keys are overridden as section.key=value; `checkbox-dist config
--reference` lists every key. Exit codes: 0 done, 2 a problem you can fix (one `error:` line), 75 stopped
on request after saving (run the same command with train.resume=auto to continue), 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="checkbox-dist", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"checkbox_dist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name in MODULES:
        importlib.import_module(f"checkbox_dist.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = merge_config_files(build_parser().parse_args(argv))
    try:
        return int(args.handler(args) or 0)
    except Preempted as err:  # the run said where it saved and how to resume; slurm/*.sh requeue on 75
        return err.exit_code
    except UserError as err:
        # In a multi-process run every process hits the same error: let one of them per host say it.
        if _says_errors():
            print(f"error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except OSError as err:
        # A full, read-only or failing disk under the run folder (log, metrics, plots): one line too.
        # Checkpoints have their own message (checkpoint.save); anything else stays a traceback (a bug).
        if err.errno not in _DISK_ERRNOS:
            raise
        if _says_errors():
            print(f"error: {err.filename or 'write'}: {err.strerror}{_refused_user(err)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _says_errors() -> bool:
    """The process that prints a run's error: the first of each host (LOCAL_RANK 0; every host's log says why)."""
    return os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) == "0" or \
        bool(os.environ.get("CHECKBOX_DIST_ALL_RANKS_ERRORS"))


def _refused_user(err: OSError) -> str:
    """Names the user a permission error refused: in a container (uid 1000) it is often not the folder's owner."""
    if err.errno in (errno.EACCES, errno.EPERM) and hasattr(os, "getuid"):
        return f" (as uid {os.getuid()})"
    return ""


if __name__ == "__main__":
    sys.exit(main())
