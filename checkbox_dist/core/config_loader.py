"""Loading the config tree (core/config.py) from YAML, with dotted command-line overrides.

    cfg = load_config("quickstart", ["train.epochs=1", "model.name=resnet18"])     # a packaged config
    cfg = load_config("my/config.yaml")                                             # or a file

A bare name (no "/", no .yaml suffix) that is not a file in the current folder is a config shipped with the
package (core.resources: quickstart, checkbox_state_v2, seed_recipe; `checkbox-dist configs` lists them).

A YAML file or an override only changes values of the tree's keys. An unknown key, a wrong type or a bad value
raises `ConfigError` naming the key (and the file), which the CLI prints as one line with exit code 2.
`dump_yaml(cfg)` is the YAML every run saves as `config.yaml`; `from_dict` rebuilds a Config a checkpoint saved.
"""

from __future__ import annotations

import dataclasses
import os
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from checkbox_dist.core import resources
from checkbox_dist.core.config import Config, to_dict, to_flat_dict
from checkbox_dist.core.config_checks import ConfigError, check_values


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `mixed_precision: no` as False."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def _load_yaml(text: str):
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 6, 4, 80, 80


def _show(value: Any, limit: int = 120) -> str:
    """`value` for an error message: a repr that looks at a few items and levels only (a YAML alias bomb
    expands to billions of items), cut to `limit` characters."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted for floats, nothing else converts."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{key}: expected {names}, got {_show(value)}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_type)}, got {_show(value)}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
    if tp is str and value is None:
        return ""
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}")
    return value


def _apply(node: Any, updates: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(node))
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(node))
            raise ConfigError(f"unknown key {key!r} (known here: {known})")  # !r: a key may hold a newline
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of keys, got {_show(value)}")
            _apply(getattr(node, name), value, key + ".")
        else:
            setattr(node, name, _coerce(value, hints[name], key))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    if raw.lstrip().startswith("#"):  # `data.background=#000000` from a shell: a colour, not a YAML comment
        return key.strip().split("."), raw.strip()
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw  # not YAML: keep the text as a string
    return key.strip().split("."), value


def resolve_config_path(value: str | Path) -> Path:
    """`value` as a path, or, for a bare name that is not an existing file, the packaged config of that name."""
    text = str(value)
    path = Path(value)
    if path.is_file() or "/" in text or os.sep in text or path.suffix in (".yaml", ".yml"):
        return path
    packaged = resources.config_file(text)
    if packaged is None:
        raise ConfigError(f"config {text!r} is neither a file nor a packaged config (packaged: "
                          f"{', '.join(resources.config_names())}; or give the path of a YAML file)")
    return packaged


def read_config_file(value: str | Path) -> tuple[Path, dict]:
    """(the file, its mapping of sections) for a packaged config name or a YAML file; ConfigError otherwise."""
    path = resolve_config_path(value)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _load_yaml(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (a YAML config is text)") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a usable YAML config (nested too deeply)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # PyYAML's text spans lines
        raise ConfigError(f"{path}:{line} is not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return path, data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file <- overrides in order, then validated. An override is `section.key=value`, or
    `@FILE`: another config file merged over what came before (`--config a --config b` passes b this way)."""
    cfg = Config()
    where = ""
    if path:
        path, data = read_config_file(path)
        where = f" (in {path})"
        try:
            _apply(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{err}{where}") from None
    for text in overrides:
        if text.startswith("@"):
            layer, data = read_config_file(text[1:])
            try:
                _apply(cfg, data)
            except ConfigError as err:
                raise ConfigError(f"{err} (in {layer})") from None
            continue
        keys, value = _parse_override(text)
        nested: Any = value
        for name in reversed(keys):
            nested = {name: nested}
        try:
            _apply(cfg, nested)
        except ConfigError as err:
            raise ConfigError(f"{err} (from override {text!r})") from None
    try:
        check_values(cfg, to_flat_dict(cfg))
    except ConfigError as err:
        raise ConfigError(f"{err}{where}") from None
    return cfg


def from_dict(data: dict) -> Config:
    """Rebuild a Config saved by `to_dict` (checkpoints); keys unknown to this version are errors."""
    cfg = Config()
    _apply(cfg, data)
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
