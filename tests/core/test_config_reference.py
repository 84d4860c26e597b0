"""docs/CONFIG.md is the config tree itself: every key has a meaning, and the file is what
`checkbox-dist config --reference` writes (regenerate it with that command when a key changes)."""

from __future__ import annotations

from checkbox_dist.core.config import Config, to_flat_dict
from checkbox_dist.core.config_reference import reference, undocumented
from conftest import REPO, run_main


def test_every_key_has_a_meaning():
    assert undocumented() == []


def test_the_reference_lists_every_key_once():
    text = reference()
    for key in to_flat_dict(Config()):
        section, name = key.rsplit(".", 1)
        table = text.split(f"## `{section}`\n", 1)[1].split("\n## ", 1)[0]
        assert table.count(f"| `{name}` |") == 1, key


def test_docs_config_md_is_current():
    current = (REPO / "docs" / "CONFIG.md").read_text()
    assert current == reference(), ("docs/CONFIG.md is stale: run "
                                    "`checkbox-dist config --reference > docs/CONFIG.md`")


def test_the_command_prints_the_reference():
    code, out, _ = run_main("config", "--reference")
    assert code == 0 and out == reference()
