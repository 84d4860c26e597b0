"""Config fuzzing (hypothesis): any YAML file and any `section.key=value` overrides give either a config that
works or one `ConfigError` line -- never a traceback, never a config that crashes later.

    .venv/bin/pytest tests/core/test_reliability_config_fuzz.py -q                        # ~600 derandomized examples
    FUZZ_EXAMPLES=20000 FUZZ_RANDOM=1 .venv/bin/pytest tests/core/test_reliability_config_fuzz.py -q   # deeper, new seeds

"Works" is checked on everything a config feeds that is cheap to build: the optimizer and LR schedule (all
steps), the colour, the preprocessing, augmentation and mixup on a tiny batch, dropout, and the round trip
through the `config.yaml` every run saves. The in-process cases are fast; a few go through the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkbox_dist.data import augment
from checkbox_dist.core.config import Config, to_flat_dict
from checkbox_dist.core.config_checks import ConfigError
from checkbox_dist.core.config_loader import dump_yaml, load_config
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import PreprocessSpec, parse_color
from checkbox_dist.model.optim import build_optimizer, build_scheduler, effective_lr
from reliability_harness import cli, one_line_error

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None,
                derandomize=not os.environ.get("FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

DEFAULTS = to_flat_dict(Config())
KEYS = sorted(DEFAULTS)
SECTIONS = sorted({k.split(".")[0] for k in KEYS})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30), st.integers(-3, 600),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 2.0),
    st.text(max_size=12), st.sampled_from(["auto", "skip", "stop", "no", "yes", "off", "on", "null", "~", "1e-3",
                                           "3e-4", ".nan", "-.inf", "#ffffff", "red", "resnet18", "wandb"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
# Near-valid values: the default of some key, nudged (the interesting failures are just past a boundary).
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS), st.text(max_size=10),
                 st.sampled_from(KEYS).map(lambda k: k + ".x"), st.sampled_from(KEYS).map(lambda k: k.upper()))


def _nested(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return tree


def _assert_one_line(err: Exception) -> None:
    text = str(err)
    assert text.strip() and "\n" not in text and "\r" not in text, repr(text)


def _train_steps(cfg: Config, model: torch.nn.Module, channels: int) -> None:
    """The optimizer and LR schedule the config builds, driven for real: forward, backward, the configured clip and
    step for the first 3 optimizer steps (weights must move whenever the lr is > 0, never otherwise, and stay
    finite), then the schedule through its remaining steps (up to 12)."""
    lr = effective_lr(cfg.optim, cfg.data.batch_size * cfg.train.grad_accum_steps)
    optimizer = build_optimizer(cfg.optim, model, lr)
    steps_per_epoch = 3
    total = min(steps_per_epoch * cfg.train.epochs, cfg.train.max_steps or 10**18)
    scheduler = build_scheduler(cfg.schedule, optimizer, total, steps_per_epoch, lr)
    images = torch.randn(4, channels, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0])
    model.train()
    for step in range(min(total, 12)):
        optimizer.zero_grad(set_to_none=True)
        if step < 3:
            before = [p.detach().clone() for p in model.parameters()]
            loss = torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=cfg.train.label_smoothing)
            loss.backward()
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
            if cfg.optim.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
            step_lr = max(group["lr"] for group in optimizer.param_groups)
        optimizer.step()  # past step 3: no gradients, so no update; the schedule still advances
        if step < 3:
            moved = any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
            assert moved == (step_lr > 0), (step, step_lr, cfg.optim)
            if lr <= 10:  # optim.lr <= 10 in the config; only optim.scale_lr can multiply it past that
                assert all(torch.isfinite(p).all() for p in model.parameters()), (step, cfg.optim)
        scheduler.step(1.0) if cfg.schedule.name == "plateau" else scheduler.step()


def assert_works(cfg: Config, tmp_path: Path) -> None:
    """What an accepted config feeds, built for real on a tiny scale. A UserError here is still one clean
    line for the user (e.g. a colour checked when the run starts); anything else is a bug."""
    try:
        parse_color(cfg.data.background)
    except UserError as err:
        _assert_one_line(err)
        return
    spec = PreprocessSpec.from_data_config(cfg.data)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(spec.channels, 2, 1), torch.nn.Flatten(), torch.nn.LazyLinear(3),
                                torch.nn.Dropout(cfg.model.drop_rate))
    model(torch.zeros(1, spec.channels, 4, 4))
    _train_steps(cfg, model, spec.channels)
    images = torch.randint(0, 256, (2, spec.channels, 8, 8), dtype=torch.uint8)
    params = augment.sample_params(2, cfg.data.augment, augment.batch_generator(cfg.train.seed, 1, 0, 0))
    out = augment.apply(images, params, parse_color(cfg.data.background), cfg.data.augment)
    assert torch.isfinite(out.float()).all()
    if cfg.train.mixup_alpha > 0 or cfg.train.cutmix_alpha > 0:
        mixed, target = augment.mix(out.float(), torch.tensor([0, 1]), 3, cfg.train.mixup_alpha,
                                    cfg.train.cutmix_alpha, augment.batch_generator(cfg.train.seed + 1, 1, 0, 0))
        assert torch.isfinite(mixed).all() and torch.allclose(target.sum(1), torch.ones(2))
    saved = tmp_path / "saved_config.yaml"  # what every run writes as RUN/config.yaml must load back as is
    saved.write_text(dump_yaml(cfg))
    assert load_config(saved) == cfg


def check(tmp_path: Path, yaml_text: str | bytes | None, overrides: list[str]) -> str | None:
    """The one-line ConfigError for this config, or None for a config that works (assert_works)."""
    path = None
    if yaml_text is not None:
        path = tmp_path / "fuzz.yaml"
        path.write_bytes(yaml_text if isinstance(yaml_text, bytes) else yaml_text.encode("utf-8", "surrogatepass"))
    try:
        cfg = load_config(path, overrides)
    except ConfigError as err:
        _assert_one_line(err)
        return str(err)
    assert_works(cfg, tmp_path)
    return None


@FUZZ
@given(flat=st.dictionaries(keys, values, max_size=5))
def test_fuzzed_yaml_values_are_a_working_config_or_one_line(tmp_path_factory, flat):
    tmp = tmp_path_factory.mktemp("fuzz")
    check(tmp, yaml.safe_dump(_nested(flat), allow_unicode=True), [])


@FUZZ
@given(pairs=st.lists(st.tuples(keys, st.one_of(values.map(lambda v: yaml.safe_dump(v, default_flow_style=True)
                                                                 .strip().removesuffix("...").strip()),
                                                st.text(max_size=15))), max_size=4),
       junk=st.lists(st.text(max_size=10), max_size=1))
def test_fuzzed_overrides_are_a_working_config_or_one_line(tmp_path_factory, pairs, junk):
    tmp = tmp_path_factory.mktemp("fuzz")
    check(tmp, None, [f"{k}={v}" for k, v in pairs] + junk)


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.binary(max_size=40),
                      st.lists(st.sampled_from(["data:", "  root: x", "train:", "  epochs: 2", "- 1", "[", "{",
                                                "]", "}", ":", "&a", "*a", "!!python/object:os.system", "? ",
                                                "\t", "  ", "'", '"', "#", "%YAML 1.2", "---", "..."]),
                               max_size=8).map("\n".join)))
def test_fuzzed_yaml_text_is_a_working_config_or_one_line(tmp_path_factory, text):
    tmp = tmp_path_factory.mktemp("fuzz")
    check(tmp, text, [])


# Found by the fuzzers above (kept as plain cases so they stay covered whatever hypothesis draws), each with its
# one outcome: the text of its one-line error, or None for a config that must be accepted and work.
EDGES = {
    "nested 5000 deep": ("a: " + "[" * 5000 + "]" * 5000, [], "nested too deeply"),
    "not UTF-8": (b"\xff\xfe\x00 not text", [], "not a UTF-8 text file"),
    "NaN learning rate": (None, ["optim.lr=.nan"], "optim.lr: must be a finite number, got nan"),
    "infinite learning rate": (None, ["optim.lr=1e400"], "optim.lr: must be a finite number, got inf"),
    "learning rate 11": (None, ["optim.lr=11"], "optim.lr: must be in [0, 10], got 11.0"),
    "learning rate 10": (None, ["optim.lr=10"], None),
    "infinite warmup": ("schedule:\n  warmup_epochs: .inf\n", [], "schedule.warmup_epochs: must be a finite number"),
    "step schedule every 0 epochs": (None, ["schedule.name=step", "schedule.step_epochs=0"],
                                     "schedule.step_epochs: must be > 0, got 0"),
    "negative momentum": (None, ["optim.momentum=-1"], "optim.momentum: must be in [0, 1), got -1.0"),
    "momentum 1": (None, ["optim.momentum=1.0"], "optim.momentum: must be in [0, 1), got 1.0"),
    "weight decay 2": (None, ["optim.weight_decay=2"], "optim.weight_decay: must be in [0, 1], got 2.0"),
    "betas outside [0, 1)": (None, ["optim.name=adam", "optim.betas=[2, 3]"],
                             "optim.betas: expected 2 numbers in [0, 1), got [2.0, 3.0]"),
    "plateau factor 1": (None, ["schedule.name=plateau", "schedule.plateau_factor=1.0"],
                         "schedule.plateau_factor: must be in (0, 1), got 1.0"),
    "dropout 1.5": (None, ["model.drop_rate=1.5"], "model.drop_rate: must be in [0, 1), got 1.5"),
    "newline in a key": ('"a\\nb": 1\n', [], "unknown key"),
    "newline in an override key": (None, ["train.a\nb=1"], "unknown key"),
    "NaN image mean": (None, ["data.mean=[.nan, 0.5, 0.5]"], "data.mean: must be a finite number"),
    "flip probability 2": (None, ["data.augment.hflip=2.0"], "data.augment.hflip: must be in [0, 1], got 2.0"),
    "negative invert probability": (None, ["data.augment.invert=-0.1"],
                                    "data.augment.invert: must be in [0, 1], got -0.1"),
    "hue 0.6": (None, ["data.augment.hue=0.6"], "data.augment.hue: must be in [0, 0.5], got 0.6"),
    "flip probability 1, hue 0.5": (None, ["data.augment.hflip=1.0", "data.augment.hue=0.5"], None),
    "learning rate 0": (None, ["optim.lr=0.0"], None),  # a frozen fine-tune (tests/train/test_pretrain.py)
}


@pytest.mark.parametrize("case", list(EDGES))
def test_edge_cases_found_by_fuzzing(case: str, tmp_path: Path):
    text, overrides, expected = EDGES[case]
    got = check(tmp_path, text, overrides)
    if expected is None:
        assert got is None, got
    else:
        assert got is not None and expected in got, (expected, got)


CLI_CASES = {
    "not valid YAML": ("train:\n  epochs: [\n", [], "not valid YAML"),
    "unknown key": ("train:\n  epoch: 3\n", [], "unknown key 'train.epoch'"),
    "unknown override key": ("train:\n  epochs: 3\n", ["model.nam=resnet18"], "unknown key 'model.nam'"),
    "wrong type": ("", ["train.epochs=three"], "train.epochs: expected int"),
    "not UTF-8": (b"\xff\xfe garbage", [], "not a UTF-8 text file"),
    "NaN learning rate": ("", ["optim.lr=.nan"], "optim.lr: must be a finite number"),
    "nested 5000 deep": ("train: " + "[" * 5000 + "]" * 5000, [], "nested too deeply"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_config_errors_are_one_line_exit_2(case: str, tmp_path: Path):
    text, overrides, expected = CLI_CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = cli(["train", "--config", str(path), *overrides, f"train.output_dir={tmp_path / 'run'}"])
    line = one_line_error(result)
    assert expected in line and result.error_lines == [line], result.err[-2000:]
    assert "Traceback" not in result.out
    assert not (tmp_path / "run").exists()

