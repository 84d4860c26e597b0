"""The config contract: every shipped YAML validates; unknown keys, wrong types and bad values fail with
the key's name; overrides use `section.key=value`; the CLI turns config errors into one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from checkbox_dist.core.config import Config, to_dict
from checkbox_dist.core.config_checks import ConfigError
from checkbox_dist.core.config_loader import from_dict, load_config
from conftest import REPO, run_cli, run_main

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def test_configs_folder_has_the_three_documented_configs():
    names = {p.name for p in CONFIGS}
    assert {"quickstart.yaml", "checkbox_state_v2.yaml", "seed_recipe.yaml"} <= names


@pytest.mark.parametrize("path", [p for p in CONFIGS if "sweeps" not in p.parts], ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # Round trip: what a run saves as config.yaml loads back to the same tree.
    assert to_dict(from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))) == to_dict(cfg)


def test_seed_recipe_is_the_seeds_settings():
    cfg = load_config(REPO / "configs" / "seed_recipe.yaml")
    assert (cfg.data.image_size, cfg.data.resize, cfg.data.batch_size) == (224, "stretch", 32)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum) == ("sgd", 0.001, 0.85)
    assert (cfg.train.epochs, cfg.train.early_stopping_patience, cfg.eval.best_rule) == (500, 20, "seed")
    assert cfg.data.augment.hflip == 0 and cfg.data.augment.vflip == 0
    assert cfg.data.mean == [0.485, 0.456, 0.406] and cfg.model.name == "resnet50"


def test_dotted_overrides_parse_values_by_type():
    cfg = load_config(REPO / "configs" / "quickstart.yaml",
                      ["train.epochs=1", "model.name=resnet18", "data.root=/data/x", "train.output_dir=runs/a",
                       "optim.lr=3e-4", "data.augment.scale=[0.8, 1.2]", "tracking.backends=[wandb]",
                       "model.pretrained=true", "train.channels_last=false"])
    assert cfg.train.epochs == 1 and cfg.model.name == "resnet18" and cfg.data.root == "/data/x"
    assert cfg.train.output_dir == "runs/a" and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.augment.scale == [0.8, 1.2] and cfg.tracking.backends == ["wandb"]
    assert cfg.model.pretrained is True and cfg.train.channels_last is False
    assert load_config(None, ["model.pretrained=/w/resnet50.safetensors"]).model.pretrained == "/w/resnet50.safetensors"


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown key 'train.epoch'"),
    ("trainer.epochs=3", "unknown key 'trainer'"),
    ("train.epochs=three", "train.epochs: expected int"),
    ("train.epochs=2.5", "train.epochs: expected int"),
    ("train.epochs=0", "train.epochs: must be > 0"),
    ("optim.name=lamb", "optim.name: 'lamb' is not one of sgd, adam, adamw"),
    ("data.resize=crop", "data.resize"),
    ("train.mixed_precision=fp8", "train.mixed_precision"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("data.augment.scale=[1.2]", "data.augment.scale"),
    ("data.mean=[0.5, 0.5]", "data.mean"),
    ("train=3", "train: expected a mapping"),
    ("train.epochs", "not of the form section.key=value"),
    ("tracking.backends=[neptune]", "tracking.backends"),
])
def test_bad_overrides_name_the_key(override: str, message: str):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "quickstart.yaml", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_errors_name_the_file(tmp_path: Path):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("train:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rate'.*bad_key.yaml"):
        load_config(bad_key)
    bad_type = tmp_path / "bad_type.yaml"
    bad_type.write_text("data:\n  batch_size: [32]\n")
    with pytest.raises(ConfigError, match=r"data.batch_size: expected int.*bad_type.yaml"):
        load_config(bad_type)
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("train: {epochs: 3\n")
    with pytest.raises(ConfigError, match=r"broken.yaml.*not valid YAML"):
        load_config(not_yaml)


# CLI config errors (one line, exit 2, nothing written): tests/core/test_reliability_config_fuzz.py


def test_missing_config_file_is_one_line(tmp_path: Path):
    proc = run_cli("train", "--config", str(tmp_path / "nope.yaml"), check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: config file not found: {tmp_path / 'nope.yaml'}"


def test_an_unquoted_colour_on_the_command_line_is_the_colour_not_a_yaml_comment():
    """`data.background=#000000` in a shell is the text `#000000`; as YAML it would be a comment (= "")."""
    cfg = load_config(None, ["data.background=#000000", "data.image_size=64"])
    assert cfg.data.background == "#000000"
    assert load_config(None, ["data.background='#101010'"]).data.background == "#101010"  # quoted still works
    assert load_config(None, ["data.image_size=64  # a comment after a value"]).data.image_size == 64


def test_several_config_files_merge_in_order_and_overrides_come_last(tmp_path):
    """`--config a.yaml --config b.yaml k=v`: a, then b over it, then the overrides (b used to replace a)."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train:\n  epochs: 7\n  seed: 3\ndata:\n  image_size: 48\n")
    b.write_text("train:\n  epochs: 9\n")
    code, out, err = run_main("config", "--config", str(a), "--config", str(b), "data.image_size=40")
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert (shown["train"]["epochs"], shown["train"]["seed"], shown["data"]["image_size"]) == (9, 3, 40)
    code, _, err = run_main("config", "--config", str(a), "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and err.strip() == f"error: config file not found: {tmp_path / 'missing.yaml'}"
