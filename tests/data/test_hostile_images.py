"""The decoder (data/images.py) on hostile bytes: crafted files are one BadImageError, never another exception."""

from __future__ import annotations

import pytest

from checkbox_dist.data.images import BadImageError, PreprocessSpec, decode
from hostile_images import CRAFTED


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_files_are_bad_images(name):
    with pytest.raises(BadImageError) as caught:
        decode(CRAFTED[name], PreprocessSpec(image_size=32), name)
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "\n" not in message, message
