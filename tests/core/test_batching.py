"""core/batching.py: a config's batch settings -> micro-batch and accumulation for a world size (docs/LAUNCH.md,
"Same recipe, any launch shape")."""

from __future__ import annotations

import pytest

from checkbox_dist.core.batching import derive
from checkbox_dist.core.config_checks import ConfigError
from checkbox_dist.core.config_loader import load_config
from checkbox_dist.core.errors import UserError
from conftest import REPO


def _cfg(*overrides: str):
    return load_config(REPO / "configs" / "quickstart.yaml", list(overrides))


@pytest.mark.parametrize("world, accum", [(1, 4), (2, 2), (4, 1)])
def test_global_batch_is_the_recipe_and_accumulation_is_derived(world, accum):
    shape = derive(_cfg("train.global_batch_size=32", "data.batch_size=8"), world)
    assert (shape.world, shape.micro, shape.accum, shape.global_batch, shape.fixed) == (world, 8, accum, 32, True)
    assert shape.note == ""


def test_micro_batch_is_lowered_when_it_cannot_divide_the_share_of_a_process():
    """checkbox_state_v2.yaml (global 32, micro 32) on 8 GPUs: 4 images each, so micro-batch 4, said in a note."""
    cfg = load_config(REPO / "configs" / "checkbox_state_v2.yaml")
    shape = derive(cfg, 8)
    assert (shape.micro, shape.accum, shape.global_batch) == (4, 1, 32)
    assert shape.note.startswith("note: micro-batch 4, not data.batch_size=32")
    shape = derive(_cfg("train.global_batch_size=48", "data.batch_size=16"), 2)  # 24 per process: 12 x 2
    assert (shape.micro, shape.accum) == (12, 2) and "not data.batch_size=16" in shape.note
    assert derive(cfg, 1).micro == 32 and derive(cfg, 1).note == ""


def test_a_world_size_that_cannot_divide_the_global_batch_is_one_error():
    with pytest.raises(UserError) as err:
        derive(_cfg("train.global_batch_size=32", "data.batch_size=8"), 3)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("train.global_batch_size=32 cannot be split over 3 processes")
    assert "(1, 2, 4, 8, 16, 32)" in text


def test_the_explicit_keys_keep_working():
    shape = derive(_cfg("data.batch_size=8", "train.grad_accum_steps=3"), 2)
    assert (shape.micro, shape.accum, shape.global_batch, shape.fixed) == (8, 3, 48, False)
    with pytest.raises(ConfigError, match="train.grad_accum_steps=3 and train.global_batch_size=32 are both set"):
        _cfg("train.global_batch_size=32", "train.grad_accum_steps=3")
    with pytest.raises(ConfigError, match="train.global_batch_size: must be >= 0"):
        _cfg("train.global_batch_size=-1")


def test_shipped_recipes_state_their_global_batch():
    for name, batch, pre in (("checkbox_state_v2.yaml", 32, 128), ("seed_recipe.yaml", 32, 0)):
        cfg = load_config(REPO / "configs" / name)
        assert cfg.train.global_batch_size == batch, name
        assert cfg.pretrain.global_batch_size == pre, name
        assert {derive(cfg, w).global_batch for w in (1, 2, 4, 8, 16, 32)} == {batch}
