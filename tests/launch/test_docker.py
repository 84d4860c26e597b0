"""Static checks of docker/Dockerfile* (no Docker engine runs here): pinned bases, a non-root user, the
same pinned package set as CI, and every file the entry points need copied and not .dockerignore'd.

    .venv/bin/pytest tests/launch/test_docker.py -q          # < 1 s
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu", "Dockerfile.tpu"]
# What each image's entry point needs in /app besides the installed package.
NEEDS = {"Dockerfile": ["train.py", "launch", "configs"], "Dockerfile.cpu": [],
         "Dockerfile.tpu": ["train.py", "launch", "configs"]}


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (REPO / "docker" / name).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def first(name: str, kind: str) -> str:
    return next(args for op, args in instructions(name) if op == kind)


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_is_pinned_and_user_is_not_root(name):
    base = first(name, "FROM")
    assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+[\w.-]*(@sha256:[0-9a-f]{64})?", base), base
    users = [args for op, args in instructions(name) if op == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    ops = [op for op, _ in instructions(name)]
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN")  # nothing runs as root after


def _pip_lines(name: str) -> list[str]:
    return [args for op, args in instructions(name) if op == "RUN" and "pip install" in args]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_installs_the_ci_constraints(name):
    """CI installs `pip install -c constraints.txt -e ".[dev]"` (.ci/run): the images use that same file."""
    ci = (REPO / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci
    copies = " ".join(args for op, args in instructions(name) if op == "COPY")
    assert "constraints.txt" in copies
    for line in _pip_lines(name):
        for command in line.split("&&"):
            if "pip install" in command:
                assert "-c constraints.txt" in command, command
    if name == "Dockerfile.cpu":
        assert any('".[serve]"' in line for line in _pip_lines(name))  # FastAPI + uvicorn for `serve`


def test_tpu_image_installs_the_xla_pins_the_tests_use():
    script = (REPO / "tests" / "xla_venv.sh").read_text()
    pins = re.search(r'^PINS="([^"]+)"', script, re.M).group(1).split()
    grep = re.search(r"^grep .*constraints\.txt", script, re.M).group(0).split(" > ")[0].split(" constraints.txt")[0]
    run = " ".join(_pip_lines("Dockerfile.tpu"))
    for pin in pins:
        name, version = pin.split("==")
        assert re.search(rf"{re.escape(name)}(\[\w+\])?=={re.escape(version)}", run), pin
    assert grep in run  # the same filter over constraints.txt
    assert "-c /tmp/constraints-xla.txt" in run and "launch/tpu_vm.yaml" in first("Dockerfile.tpu", "CMD")


def _dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = path.split("/")
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(parts[0], p) for p in patterns)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copies_what_the_entry_points_need(name):
    copied = set()
    for op, args in instructions(name):
        if op == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            copied.update(words[:-1])
    for needed in ["pyproject.toml", "checkbox_dist", "README.md", *NEEDS[name]]:
        assert needed in copied, needed
        assert (REPO / needed).exists(), needed
        assert not _dockerignored(needed), needed
    tracked = subprocess.run(["git", "ls-files", "checkbox_dist", "launch", "configs"], capture_output=True, text=True,
                             cwd=REPO).stdout.split()
    assert not [f for f in tracked if _dockerignored(f)]
    command = exec_form(first(name, "ENTRYPOINT") if name == "Dockerfile.cpu" else first(name, "CMD"))
    for word in command:  # files the default command names are in the image
        if re.search(r"\.(py|yaml)$", word):
            assert any(word == c or word.startswith(c.rstrip("/") + "/") for c in copied), word
            assert (REPO / word).is_file(), word
    if name == "Dockerfile.cpu":
        assert command[:2] == ["checkbox-dist", "serve"] and "0.0.0.0" in command


def test_dockerignore_keeps_local_and_large_things_out():
    for path in (".venv", ".venv-xla", ".git", "runs", "wandb", "tests"):
        assert _dockerignored(path), path
