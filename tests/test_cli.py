"""The command line a user meets first: `--help` imports no torch (so it answers at once, whatever the machine's
load: no wall-clock bound is asserted), every command says what it does with examples, configs are found by name,
`configs` lists them and `config` prints one resolved. ~10 s, most of it the fresh interpreters of the --help runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from checkbox_dist.cli import build_parser
from checkbox_dist.commands import export as export_command
from checkbox_dist.commands import predict as predict_command
from checkbox_dist.commands import serve as serve_command
from checkbox_dist.commands import synth as synth_command
from checkbox_dist.core import resources
from checkbox_dist.core.config import to_dict
from checkbox_dist.core.config_checks import ConfigError
from checkbox_dist.core.config_loader import dump_yaml, load_config
from conftest import REPO, TINY, run_main

HEAVY = ("torch", "torchvision", "timm", "accelerate", "wandb", "matplotlib", "fastapi", "onnxruntime")


def _commands() -> list[str]:
    return list(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse has no public API


def _subparser(name: str):
    return build_parser()._subparsers._group_actions[0].choices[name]  # noqa: SLF001


@pytest.mark.parametrize("command", [[]] + [[c] for c in _commands()], ids=lambda c: " ".join(c) or "checkbox-dist")
def test_help_imports_no_heavy_library(command):
    """A fresh `python -m checkbox_dist [COMMAND] --help`; -X importtime lists every module it imported."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "checkbox_dist", *command, "--help"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"--help imported {heavy[:5]}"
    assert proc.stdout.startswith("usage: checkbox-dist")


def test_building_the_parser_imports_no_heavy_library():
    code = ("import sys; from checkbox_dist import cli; cli.build_parser(); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_top_level_help_is_product_text_with_every_command_on_one_line():
    text = build_parser().format_help()
    assert "image classifier for the state of UI checkboxes" in text and "checkbox-dist quickstart" in text
    for name in _commands():
        summary = _subparser(name).description.splitlines()[0]
        assert re.search(rf"^    {re.escape(name)} +\S", text, re.M), f"{name} has no one-line summary in --help"
        assert summary.endswith(".") and len(summary) < 80, summary


@pytest.mark.parametrize("name", _commands())
def test_every_command_help_has_examples_that_keep_their_lines(name):
    text = _subparser(name).format_help()
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples and all(line.startswith("  ") for line in examples), text
    assert any(f"checkbox-dist {name}" in line or "accelerate launch" in line for line in examples)
    # Runs are runs/<name>-<time>; no default or example points into the repository.
    assert not re.search(r"runs/quickstart(?![-\w])", text), text
    assert not re.search(r"(?<![\w/])(configs|launch|docs)/", text), text


def test_defaults_are_shown_and_arguments_are_described():
    quickstart = _subparser("quickstart").format_help()
    assert "(default: quickstart)" in quickstart and "config overrides" in quickstart
    assert "(default: 8000)" in _subparser("serve").format_help()
    synth = _subparser("synth").format_help()
    assert "(default 3000)" in synth and "(default: 3000)" not in synth  # said once, by the help text itself


def test_command_choices_match_their_implementations():
    """The light command modules repeat a few choices of the heavy implementation modules: they must agree."""
    from checkbox_dist import synth
    from checkbox_dist.infer import export, predict
    from checkbox_dist.serve import api

    assert predict_command.FORMATS == predict.FORMATS
    assert export_command.FORMATS == export.FORMATS
    assert synth_command.LABELS == synth.LABELS
    assert serve_command.Settings is api.Settings


def test_a_bare_name_is_the_packaged_config(tmp_path, monkeypatch):
    by_path = to_dict(load_config(REPO / "configs" / "quickstart.yaml"))
    monkeypatch.chdir(tmp_path)
    assert to_dict(load_config("quickstart")) == by_path
    assert set(resources.config_names()) >= {"quickstart", "checkbox_state_v2", "seed_recipe"}
    with pytest.raises(ConfigError) as err:
        load_config("quickstat")
    assert "quickstat" in str(err.value) and ", ".join(resources.config_names()) in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="config file not found: missing.yaml"):
        load_config("missing.yaml")  # a path stays a path
    (tmp_path / "quickstart").write_text("train:\n  epochs: 7\n")  # an existing file wins over the name
    assert load_config("quickstart").train.epochs == 7


def test_the_repository_folders_are_links_to_the_packaged_files():
    assert (REPO / "configs").is_symlink() and (REPO / "launch").is_symlink()
    assert (REPO / "configs").resolve() == resources.CONFIGS.resolve()
    assert (REPO / "launch").resolve() == resources.LAUNCH.resolve()
    assert resources.launch_file("cpu_2proc").is_file()
    stored = subprocess.run(["git", "ls-files", "-s", "configs", "launch"], capture_output=True, text=True,
                            cwd=REPO).stdout.split()
    if stored:  # a git checkout: stored as links (mode 120000), not as copies
        assert stored[0] == "120000" and stored[4] == "120000", stored


def test_configs_lists_every_shipped_file_and_prints_one_path():
    code, out, _ = run_main("configs")
    assert code == 0
    for shipped in resources.catalogue():
        assert re.search(rf"^  {re.escape(shipped.name)} ", out, re.M), shipped.name
        assert shipped.summary and shipped.path.is_file()
    assert {s.kind for s in resources.catalogue()} == {"config", "sweep", "launch"}
    code, out, _ = run_main("configs", "--path", "cpu_2proc")
    assert code == 0 and Path(out.strip()) == resources.launch_file("cpu_2proc")
    code, _, err = run_main("configs", "--path", "nope")
    assert code == 2 and err.count("\n") == 1 and "quickstart" in err


def test_config_prints_the_resolved_config_that_loads_back(tmp_path):
    code, out, _ = run_main("config", "--config", "quickstart", "train.epochs=3", "train.mixed_precision=no")
    assert code == 0
    expected = load_config("quickstart", ["train.epochs=3", "train.mixed_precision=no"])
    assert out == dump_yaml(expected)
    (tmp_path / "c.yaml").write_text(out)
    assert to_dict(load_config(tmp_path / "c.yaml")) == to_dict(expected)
    assert yaml.safe_load(out)["train"]["epochs"] == 3
    code, _, err = run_main("config", "--config", "quickstart", "train.epoch=3")
    assert code == 2 and "unknown key 'train.epoch'" in err
    code, _, err = run_main("config", "--reference", "--config", "quickstart")
    assert code == 2 and err.startswith("error: ")


def test_a_refused_write_names_the_user(monkeypatch, capsys):
    """An unwritable run folder (in a container: mounted, owned by another uid) is one line naming the user."""
    import errno

    from checkbox_dist import cli
    from checkbox_dist.commands import configs

    def refuse(args):
        raise PermissionError(errno.EACCES, "Permission denied", "runs/x")

    monkeypatch.setattr(configs, "run", refuse)
    assert cli.main(["configs"]) == 2
    assert capsys.readouterr().err == f"error: runs/x: Permission denied (as uid {os.getuid()})\n"


@pytest.mark.parametrize("command, required", [("predict", ["--checkpoint", "c", "x.png"]), ("cv", []),
                                               ("split", ["--data", "d"]), ("export", ["--checkpoint", "c"]),
                                               ("eval", ["--checkpoint", "c", "--data", "d"]), ("sweep", []),
                                               ("synth", []), ("audit", ["--cv-dir", "cv1"])])
def test_out_and_output_are_one_flag_in_every_command(command, required):
    """One spelling documented (--out), both accepted: `predict --out` used to be refused and `cv --output` too."""
    parser = build_parser()
    got = {spelling: vars(parser.parse_args([command, spelling, "target", *required])) for spelling in
           ("--out", "--output")}
    assert got["--out"] == got["--output"]
    assert "target" in got["--out"].values()


def test_train_without_a_config_is_refused_and_help_says_so(tmp_path):
    """`train` with no --config used to run the built-in defaults (the seed's SGD/500-epoch recipe) silently;
    it now asks for a recipe in one line, before touching data or the run folder, and `train --help` says so."""
    code, out, err = run_main("train", *TINY, f"train.output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path}",
                              "train.epochs=1", "data.synth_n=60")
    assert code == 2 and out == ""
    assert err.startswith("error: train needs --config") and len(err.strip().splitlines()) == 1, err
    assert "checkbox_state_v2" in err and "quickstart" in err and "seed_recipe" in err
    assert not (tmp_path / "run").exists()
    config_help = next(a.help for a in _subparser("train")._actions if "--config" in a.option_strings)
    assert "required" in config_help and "defaults apply" not in config_help
