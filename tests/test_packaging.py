"""Packaging metadata that users and installers read: the licence, and constraints.txt as CI installs it."""

from __future__ import annotations

import re
import sys
import tomllib

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_license_file_is_the_one_pyproject_names():
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_constraints_pin_every_dependency_and_hold_no_freeze_leftovers():
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = {}
    for number, line in enumerate(lines, 1):
        if number == 1 and line.startswith("#"):
            continue  # the header says what the file is
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s=]+)", line)
        assert match, f"constraints.txt line {number} is not NAME==VERSION: {line!r}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    wanted = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["serve"],
              *PYPROJECT["project"]["optional-dependencies"]["export"]]
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower().replace("_", "-")
        assert name in pins, f"{name} (pyproject.toml) has no pin in constraints.txt"


def test_every_lower_bound_is_a_version_ci_runs():
    """No untested range: each dependency's lower bound is its pin in constraints.txt, torch's the torch of the
    torch_xla environment (tests/xla_venv.sh), the oldest torch CI runs the package with."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines()[1:]:
        name, version = line.split("==")
        pins[name.lower().replace("_", "-")] = version
    xla_torch = re.search(r"torch==(\S+)", (REPO / "tests" / "xla_venv.sh").read_text()).group(1)
    extras = PYPROJECT["project"]["optional-dependencies"]
    for requirement in [*PYPROJECT["project"]["dependencies"], *(r for name, reqs in extras.items()
                                                                 if name not in ("tpu", "dev") for r in reqs),
                        *(r for r in extras["dev"] if not r.startswith("checkbox_dist"))]:
        name, bound = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=(\S+)", requirement).groups()
        key = name.lower().replace("_", "-")
        assert bound == (xla_torch if key == "torch" else pins[key]), requirement
    assert PYPROJECT["project"]["requires-python"] == f">={sys.version_info.major}.{sys.version_info.minor}"
