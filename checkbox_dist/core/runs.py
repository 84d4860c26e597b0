"""Run-folder naming: the one place a default output folder gets its name.

    runs/<stem>-<YYYYmmdd-HHMMSS>       e.g. runs/quickstart-20261203-194501, runs/cv-checkbox_state_v2-...

Every process of a multi-process launch must agree on the name (clocks and start times differ by a
second), so callers broadcast what the main process chose (`agreed_name`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path


def timestamped(stem: str, parent: str = "runs") -> str:
    return f"{parent}/{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def newest(stem: str, parent: str = "runs") -> str | None:
    """The latest `timestamped(stem)` folder that exists under `parent`, or None."""
    pattern = re.compile(rf"{re.escape(stem)}-\d{{8}}-\d{{6}}")
    folder = Path(parent)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and pattern.fullmatch(p.name)) \
        if folder.is_dir() else []
    return f"{parent}/{names[-1]}" if names else None


def config_stem(config_path: str | None, default: str = "run") -> str:
    """`configs/checkbox_state_v2.yaml` -> `checkbox_state_v2`; no config -> `run`."""
    return Path(config_path or default).stem


def agreed_name(name: str, num_processes: int) -> Path:
    """The main process's `name`, broadcast to every process of a distributed launch."""
    chosen = [name]
    if num_processes > 1:
        from accelerate.utils import broadcast_object_list  # a collective: only with a process group

        broadcast_object_list(chosen)
    return Path(chosen[0]).expanduser()
