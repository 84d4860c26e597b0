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
    """docs/CONFIG.md (generated; tests/core/test_config_reference.py keeps it fresh) has every key, and the
    README sends readers there."""
    reference = (REPO / "docs" / "CONFIG.md").read_text()
    sections = {heading.strip("` ") : body for heading, body in
                (part.split("\n", 1) for part in reference.split("\n## ")[1:])}
    for key in to_flat_dict(Config()):
        section, name = key.rsplit(".", 1)
        assert f"| `{name}` |" in sections.get(section, ""), f"{key} is not in docs/CONFIG.md"
    assert "docs/CONFIG.md" in README


def _commands_table() -> str:
    return README.split("## Commands", 1)[1].split("\n## ", 1)[0]


def test_every_command_in_the_readme_exists():
    rows = [line.split("|")[1] for line in _commands_table().splitlines() if line.startswith("| `")]
    listed = set(re.findall(r"`([a-z-]+)`", " ".join(rows)))
    parser = build_parser()
    available = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse has no public API
    assert listed <= available, f"README lists commands that do not exist: {sorted(listed - available)}"
    assert available <= listed, f"commands missing from the README: {sorted(available - listed)}"
