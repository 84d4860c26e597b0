"""The README tells the truth: CI runs its test command verbatim, every config key and every CLI command
it lists exist, and every key that exists is documented."""

from __future__ import annotations

import re

from checkbox_dist.cli import build_parser
from checkbox_dist.core.config import Config, to_flat_dict
from conftest import REPO

README = (REPO / "README.md").read_text()


def _setup_commands() -> list[str]:
    block = README.split("## Set-up: two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_readme_test_command_verbatim():
    quickstart, tests = _setup_commands()
    assert "checkbox-dist quickstart" in quickstart and "pytest" in tests
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_every_config_key_is_documented():
    table = README.split("## Configuration", 1)[1].split("## The run folder", 1)[0]
    for key in to_flat_dict(Config()):
        section, name = key.rsplit(".", 1)
        row = next((l for l in table.splitlines() if l.startswith(f"| `{section}` |")), "")
        assert f"`{name}`" in row, f"{key} is not in the README's configuration table"


def test_every_command_in_the_readme_exists():
    listed = set(re.findall(r"^\| `checkbox-dist ([a-z-]+)", README, flags=re.M))
    parser = build_parser()
    available = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse has no public API
    assert listed <= available, f"README lists commands that do not exist: {sorted(listed - available)}"
    assert available <= listed, f"commands missing from the README: {sorted(available - listed)}"
