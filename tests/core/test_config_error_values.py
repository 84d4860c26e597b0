"""Config errors quote the offending value in a few characters, however big it is (issue 33, defect 8): a
287-byte YAML alias bomb once produced a 312 MB message (data.mean) and a MemoryError (data.root)."""

from __future__ import annotations

import time

import pytest

from checkbox_dist.core.config_checks import ConfigError
from checkbox_dist.core.config_loader import load_config

# 9 levels of 9 aliases each: 9**9 (387 million) leaves once expanded, ~300 bytes of YAML
BOMB = "[[" + ",".join(f"&{i} [{','.join([f'*{i - 1}'] * 9) if i else ','.join('x' * 9)}]" for i in range(9)) + "]]"


@pytest.mark.parametrize("key", ["mean", "root", "std"])
def test_an_alias_bomb_value_is_a_short_one_line_error(tmp_path, key):
    assert len(BOMB) < 400
    path = tmp_path / "bomb.yaml"
    path.write_text(f"data:\n  {key}: {BOMB}\n")
    start = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert time.monotonic() - start < 10
    assert message.startswith(f"data.{key}") and len(message) < 400 and "\n" not in message, message[:500]
