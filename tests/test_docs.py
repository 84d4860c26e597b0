"""The README and docs/ tell the truth: CI runs the README's test command verbatim, every config key and every CLI
command the README lists exist, every key that exists is documented, and every command shown in README.md,
CONTRIBUTING.md or docs/*.md parses with the real CLI and resolves its config (the cheap ones run)."""

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


# ---- every command shown in README.md, CONTRIBUTING.md and docs/*.md -----------------------------------------------
#
# Fenced bash blocks are commands: each line (continuations joined, comments dropped) must parse in full. An inline
# `checkbox-dist ...` span in prose may name a command without all its required arguments ("`checkbox-dist eval`
# writes ..."), so it may only lack required arguments: an unknown flag or a bad choice fails it as well. The
# checkbox-dist part of a launcher line (accelerate launch ... train.py ARGS, torchrun, sbatch slurm/train.sh ARGS,
# launch/tpu_vm.sh ARGS, docker run IMAGE ...) is checked the same way, then its config and overrides are resolved by
# the real config loader (what `checkbox-dist config` prints; keys exist, values type-check). Repository paths a
# command names must exist; `pip install` extras must be in pyproject.toml. Cheap commands (configs, config, --help)
# also run for real.

import argparse  # noqa: E402 - this section's own imports
import contextlib  # noqa: E402
import io  # noqa: E402
import shlex  # noqa: E402
import tomllib  # noqa: E402

import pytest  # noqa: E402

from checkbox_dist.core.config_loader import load_config  # noqa: E402
from conftest import run_main  # noqa: E402

DOCS = [REPO / "README.md", *sorted(REPO.glob("CONTRIBUTING.md")), *sorted((REPO / "docs").glob("*.md"))]
_ENTRY = re.compile(r"checkbox-dist|checkbox_dist|train\.py|slurm/\w+\.sh|launch/tpu_vm\.sh|benchmarks/")
# What a docs placeholder stands for when the config loader needs a real file.
PLACEHOLDER_CONFIGS = {"C": "quickstart", "my.yaml": "quickstart"}
PLACEHOLDER_WORDS = {"COMMAND": "train"}
# The images of docker/: what `docker run IMAGE [ARGS]` runs (Dockerfile.cpu's ENTRYPOINT + CMD; the others' CMD).
DOCKER_IMAGES = {"checkbox-dist:serve": (["serve", "--host", "0.0.0.0", "--port", "8000", "--no-url-fetch"],
                                         ["--checkpoint", "/model"])}
_REPO_PATH = re.compile(r"^(?:\.\./)?(?:launch|slurm|docker|configs|benchmarks|docs|tests|checkbox_dist)/[\w./-]+$")
_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", "$(", ">", ">>", "<", "2>", "2>&1"}


def _shell_commands(text: str) -> list[tuple[int, str, bool]]:
    """(line, command, from a code block) for every command shown in a Markdown text: fenced shell blocks,
    indented code blocks (4 spaces after a blank line) and inline code spans."""
    found, in_block, fenced, indented, pending, previous = [], False, False, False, "", ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
            in_block = fenced and stripped[3:].strip() in ("bash", "sh", "shell", "console")
            previous = line
            continue
        indented = not fenced and line.startswith("    ") and (indented or not previous.strip())
        previous = line
        if fenced and not in_block:
            continue
        if in_block or indented:
            command = re.sub(r"(^|\s)#.*$", "", stripped).removeprefix("$ ").strip()
            if command.endswith("\\"):
                pending += command[:-1] + " "
                continue
            command, pending = pending + command, ""
            if _ENTRY.search(command):
                found.append((number, command, True))
        else:
            found += [(number, span, False) for span in re.findall(r"`([^`\n]+)`", line)
                      if _ENTRY.search(span) and " " in span.strip()]
    return found


def _segments(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at && || ; | and $( ), as words; usage notation dropped:
    `[optional ...]` groups and `...`)."""
    command = re.sub(r"\[[^\]=]*=[^\]]*\]|\[--[^\]]*\]", " ", command).replace("$(", " ( ")
    lexer = shlex.shlex(command, posix=True, punctuation_chars="();<>|&")
    lexer.whitespace_split = True
    segments, current = [], []
    for word in lexer:
        if word in _OPERATORS or set(word) <= set("();<>|&"):
            segments.append(current)
            current = [] if word not in (">", ">>", "<", "2>") else ["<redirect>"]
        elif current[:1] != ["<redirect>"]:
            current.append(word)
    segments.append(current)
    return [s for s in segments if s and s != ["<redirect>"]]


def _checkbox_dist_argv(words: list[str]) -> list[str] | None:
    """The `checkbox-dist` arguments a simple command amounts to, or None when it runs none."""
    words = [w for w in words if w not in ("...", "ARGS")]
    for i, word in enumerate(words):
        rest = words[i + 1:]
        if word == "checkbox-dist" or word.endswith("/checkbox-dist"):
            return rest
        if word == "-m" and rest[:1] in (["checkbox_dist"], ["checkbox_dist.train"]):
            return (["train"] if rest[0].endswith(".train") else []) + rest[1:]
        if word in DOCKER_IMAGES and words[:2] == ["docker", "run"]:
            entry, default = DOCKER_IMAGES[word]
            return entry + (rest or default)
        if word.endswith("benchmarks/cv_proxy.sh"):  # NAME, then overrides of a `cv` of the packaged recipe
            return ["cv", "--config", "checkbox_state_v2", *rest[1:]]
        if word.split("/")[-1] == "train.py" or word.endswith(("launch/tpu_vm.sh", "slurm/train.sh")):
            if word.endswith("slurm/train.sh") and "--config" not in rest:
                rest = ["--config", "checkbox_state_v2", *rest]  # the script's default
            return ["train", *rest]
    return None


def _parse(argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """(namespace, "") or (None, argparse's message); --help and --version count as parsed."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv), ""
    except SystemExit as exit_:
        return (argparse.Namespace(command=None), "") if exit_.code == 0 else (None, err.getvalue().strip())


def _doc_commands() -> list[tuple[str, str, bool]]:
    return [(f"{doc.relative_to(REPO)}:{number}", command, fenced)
            for doc in DOCS for number, command, fenced in _shell_commands(doc.read_text())]


def _placeholder(value: str) -> bool:
    """A docs placeholder where a value goes: N, DIR, $EVERY, <time>."""
    return bool(re.fullmatch(r"[A-Z][A-Z_]*|\$\w+|<\w+>", value))


def command_problems(command: str, fenced: bool) -> list[str]:
    """What is wrong with one documented command line ([] when nothing): a repository path or a pip extra that
    does not exist, checkbox-dist arguments the real parser refuses, a config or override the loader refuses."""
    from checkbox_dist.commands import merge_config_files
    from checkbox_dist.core.config import Config
    from checkbox_dist.core.config_checks import ConfigError

    problems = []
    for words in _segments(command):
        for word in words:
            path = word.split("=", 1)[-1]
            if _REPO_PATH.match(path) and not any(c in path for c in "<*$") and not (REPO / path).exists():
                problems.append(f"names {path}, which does not exist")
            declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
            for extras in re.findall(r"(?:^\.|checkbox_dist)\[([\w,-]+)\]", word):
                problems += [f"no extra [{extra}] in pyproject.toml" for extra in extras.split(",")
                             if extra not in declared]
        argv = _checkbox_dist_argv(words)
        if argv is None:
            continue
        argv = [PLACEHOLDER_WORDS.get(a, a) for a in argv]
        args, message = _parse(argv)
        if args is None:
            # prose may name a command or a flag without its values; a fenced command must be complete
            named_only = not fenced and any(m in message for m in ("the following arguments are required",
                                                                   "expected one argument"))
            if not named_only:
                problems.append(f"`checkbox-dist {' '.join(argv)}` does not parse: {message.splitlines()[-1]}")
            continue
        if args.command == "sweep" and not args.config or not hasattr(args, "overrides"):
            continue
        args = merge_config_files(args)
        keys = to_flat_dict(Config())
        overrides = []
        for override in args.overrides:
            key, _, value = override.partition("=")
            if _placeholder(value):
                if key not in keys:
                    problems.append(f"{override}: no such config key")
            elif "=" in override or override.startswith("@"):
                overrides.append(override)
        try:
            load_config(PLACEHOLDER_CONFIGS.get(args.config, args.config), overrides)
        except ConfigError as err:
            problems.append(f"`checkbox-dist {' '.join(argv)}`: {err}")
    return problems


def test_the_command_check_catches_what_it_is_for(monkeypatch):
    """The README once showed `predict --json` (the flag is `--format json`): each kind of wrong command fails."""
    monkeypatch.chdir(REPO)
    wrong = {"checkbox-dist predict --checkpoint RUN crop.png --json": "unrecognized arguments: --json",
             "checkbox-dist train --config quickstart train.epochz=3": "train.epochz",
             "checkbox-dist train --config quickstart train.epochs=three": "train.epochs",
             "checkbox-dist train --config no_such_recipe": "no_such_recipe",
             "accelerate launch --config_file launch/nope.yaml train.py --config quickstart": "launch/nope.yaml",
             "sbatch slurm/train.sh --config quickstart data.rot=/x": "data.rot",
             "docker run -p 8000:8000 checkbox-dist:serve --checkpoint /m --treads 2": "--treads",
             "pip install -e '.[serving]'": "[serving]",
             "bash benchmarks/cv_proxy.sh row pretrain.synth_m=3": "pretrain.synth_m",
             "checkbox-dist train ... train.ensemble_members=N model.nam=X": "model.nam"}
    for command, named in wrong.items():
        problems = command_problems(command, fenced=True)
        assert problems and named in " ".join(problems), (command, problems)
    assert command_problems("`checkbox-dist eval` writes eval.json", fenced=False) == []
    assert command_problems("checkbox-dist predict --checkpoint RUN --format json crop.png", fenced=True) == []


@pytest.mark.parametrize("where, command, fenced", _doc_commands(), ids=[w for w, _, _ in _doc_commands()])
def test_every_documented_command_parses_and_its_config_resolves(where, command, fenced, monkeypatch):
    monkeypatch.chdir(REPO)
    assert command_problems(command, fenced) == [], f"{where}: {command}"


CHEAP = {"configs", "config"}


@pytest.mark.parametrize("where, command", [(w, c) for w, c, _ in _doc_commands()
                                            if any((_checkbox_dist_argv(s) or [""])[0] in CHEAP or
                                                   "--help" in (_checkbox_dist_argv(s) or []) for s in _segments(c))])
def test_the_cheap_documented_commands_run(where, command, monkeypatch):
    """`checkbox-dist configs`, `config ...` and `--help` lines, run by the real entry point in the repository."""
    monkeypatch.chdir(REPO)
    for words in _segments(command):
        argv = _checkbox_dist_argv(words)
        if not argv or not (argv[0] in CHEAP or "--help" in argv):
            continue
        argv = [PLACEHOLDER_WORDS.get(a, PLACEHOLDER_CONFIGS.get(a, a)) for a in argv]
        try:
            code, out, err = run_main(*argv)
        except SystemExit as exit_:  # --help
            code, out, err = exit_.code, "", ""
        assert code == 0, f"{where}: `checkbox-dist {' '.join(argv)}` exited {code}: {err.strip()}"
