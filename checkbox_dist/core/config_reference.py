"""The config reference (docs/CONFIG.md): every key of the tree with its type, default and meaning.

    checkbox-dist config --reference > docs/CONFIG.md

Read from the dataclasses in core/config.py (each key's `setting(default, meaning)`, each section's
docstring) and the allowed values in core/config_checks.py, so it cannot drift from the code; a test fails
when docs/CONFIG.md is not what this writes.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from typing import Any

from checkbox_dist.core.config import Config
from checkbox_dist.core.config_checks import CHOICES

HEADER = """# Configuration reference

Generated from `checkbox_dist/core/config.py` by `checkbox-dist config --reference > docs/CONFIG.md`: edit
the code, not this file (a test compares them).

A config is a YAML file of these sections, or the name of a packaged one (`checkbox-dist configs` lists
them); any key can be overridden on the command line as `section.key=value` (values are YAML:
`data.augment.scale=[0.9,1.1]`, `tracking.backends=[wandb]`). An unknown key, a wrong type or a bad value is
one line naming the key, exit 2. `checkbox-dist config --config C [section.key=value ...]` prints the
resolved config, as a run saves it in `config.yaml`. Defaults are shown as YAML (JSON) values.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def _type_text(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Union:
        return " \\| ".join(_type_text(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list[{_type_text(typing.get_args(tp)[0])}]"
    return tp.__name__


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _rows(cls: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        key = prefix + f.name
        doc = f.metadata.get("doc", "")
        if key in CHOICES and not all(c in doc for c in CHOICES[key] if c):
            doc += " (" + " | ".join(json.dumps(c) if not c else c for c in CHOICES[key]) + ")"
        rows.append(f"| `{f.name}` | {_type_text(hints[f.name])} | `{json.dumps(_default(f))}` | {_cell(doc)} |")
    return rows


def _sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found.append((prefix + f.name, hints[f.name]))
            found.extend(_sections(hints[f.name], f"{prefix}{f.name}."))
    return found


def reference() -> str:
    """docs/CONFIG.md: a table per section, in the order of the tree."""
    parts = [HEADER]
    for name, cls in _sections(Config):
        doc = " ".join(inspect.getdoc(cls).split())
        parts.append(f"## `{name}`\n\n{doc}\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
                     + "\n".join(_rows(cls, name + ".")) + "\n")
    return "\n".join(parts)


def undocumented() -> list[str]:
    """Keys without a meaning (a test keeps this empty)."""
    return [f"{name}.{f.name}" for name, cls in _sections(Config) for f in dataclasses.fields(cls)
            if not dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name]) and not f.metadata.get("doc")]
