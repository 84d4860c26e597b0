"""Packaging metadata that users and installers read: the licence, and constraints.txt as CI installs it."""

from __future__ import annotations

import re
import sys
import tomllib

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_license_file_is_the_one_pyproject_names():
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_constraints_pin_every_dependency_and_hold_no_freeze_leftovers():
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = {}
    for number, line in enumerate(lines, 1):
        if number == 1 and line.startswith("#"):
            continue  # the header says what the file is
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s=]+)", line)
        assert match, f"constraints.txt line {number} is not NAME==VERSION: {line!r}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    wanted = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["serve"],
              *PYPROJECT["project"]["optional-dependencies"]["export"]]
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower().replace("_", "-")
        assert name in pins, f"{name} (pyproject.toml) has no pin in constraints.txt"


def test_every_lower_bound_is_a_version_ci_runs():
    """No untested range: each dependency's lower bound is its pin in constraints.txt, torch's the torch of the
    torch_xla environment (tests/xla_venv.sh), the oldest torch CI runs the package with."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines()[1:]:
        name, version = line.split("==")
        pins[name.lower().replace("_", "-")] = version
    xla_torch = re.search(r"torch==(\S+)", (REPO / "tests" / "xla_venv.sh").read_text()).group(1)
    extras = PYPROJECT["project"]["optional-dependencies"]
    for requirement in [*PYPROJECT["project"]["dependencies"], *(r for name, reqs in extras.items()
                                                                 if name not in ("tpu", "dev") for r in reqs),
                        *(r for r in extras["dev"] if not r.startswith("checkbox_dist"))]:
        name, bound = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=(\S+)", requirement).groups()
        key = name.lower().replace("_", "-")
        assert bound == (xla_torch if key == "torch" else pins[key]), requirement
    assert PYPROJECT["project"]["requires-python"] == f">={sys.version_info.major}.{sys.version_info.minor}"


# ---- the CUDA 12 install of README ("Installing", "CUDA 12"), resolved by pip against a stand-in of PyTorch's index --
#
# PyTorch's cu126 index is not reachable from CI, so the test makes one: wheels named as PyTorch names them
# (torch-2.14.1+cu126, torchvision-0.29.1+cu126) whose METADATA is the installed torch's and torchvision's, with the
# CUDA 13 runtime requirements turned into CUDA 12.6 ones (cuda-toolkit 12.6.3, cuda-bindings 12.x, nvidia-*-cu12),
# plus empty wheels of that runtime. Every other package is the installed one (CI installs constraints.txt exactly).
# It proves that pip's resolver accepts the README's lines: the constraints' `torch==2.14.1` admits the local version
# `2.14.1+cu126`, and once the CUDA 13 runtime pins are left out nothing else in constraints.txt conflicts with a
# CUDA 12 torch; and that the unfiltered constraints.txt refuses it. It cannot prove what PyTorch's real cu126 wheels
# require: their runtime pins are assumed to mirror the CUDA 13 build's.

import os  # noqa: E402 - this section's own imports
import shlex  # noqa: E402
import subprocess  # noqa: E402
import zipfile  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

from packaging.requirements import Requirement  # noqa: E402


def _wheel(folder: Path, name: str, version: str, text: str | None = None) -> None:
    dist = f"{name.replace('-', '_')}-{version}"
    text = text or f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{dist}.dist-info/METADATA", text)
        whl.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n")
        whl.writestr(f"{dist}.dist-info/RECORD", "")


def _as_cuda12(text: str) -> str:
    """A CUDA 13 build's METADATA as the same release's CUDA 12.6 build would state it."""
    text = re.sub(r"^Version: (\S+)$", r"Version: \1+cu126", text, count=1, flags=re.M)
    text = re.sub(r"cuda-toolkit(\[[^\]]*\])?==13[.\d]*", r"cuda-toolkit\1==12.6.3", text)
    text = re.sub(r"cuda-bindings<14,>=13[.\d]*", "cuda-bindings<13,>=12.6.0", text)
    return text.replace("-cu13", "-cu12")


def _cuda12_index(folder: Path) -> Path:
    folder.mkdir()
    torch_text = _as_cuda12(metadata.distribution("torch").read_text("METADATA"))
    _wheel(folder, "torch", re.search(r"^Version: (\S+)$", torch_text, re.M).group(1), torch_text)
    vision = metadata.distribution("torchvision")
    _wheel(folder, "torchvision", f"{vision.version}+cu126", _as_cuda12(vision.read_text("METADATA")))
    for line in re.findall(r"^Requires-Dist: (.+)$", torch_text, re.M):
        requirement = Requirement(line)
        if not requirement.name.startswith(("cuda-", "nvidia-")) or not requirement.marker.evaluate():
            continue
        version = next(spec.version for spec in requirement.specifier if spec.operator in ("==", ">="))
        extras = "".join(f"Provides-Extra: {extra}\n" for extra in requirement.extras)
        _wheel(folder, requirement.name, version,
               f"Metadata-Version: 2.1\nName: {requirement.name}\nVersion: {version}\n{extras}")
    assert "cuda-toolkit" in torch_text and "+cu126" in torch_text  # the CUDA 13 build's runtime was found
    return folder


def _readme_cuda12_lines() -> list[str]:
    block = (REPO / "README.md").read_text().split("**CUDA 12.**", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.strip()]


def _dry_run(pip_line: str, index: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The README's `pip install` line as pip runs it here: this interpreter's pip, the stand-in index instead of
    PyTorch's, nothing from the network, the package's metadata built with the installed setuptools."""
    words = shlex.split(pip_line.split("&&")[-1])
    words = words[words.index("install") + 1:]
    at = words.index("--extra-index-url")
    assert words[at + 1] == "https://download.pytorch.org/whl/cu126", pip_line
    words[at:at + 2] = ["--no-index", "--find-links", str(index)]
    words = [str(REPO) if w == "." else w for w in words]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # this machine's pip settings out
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-build-isolation",
                           "--disable-pip-version-check", *words], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(env, PIP_CONFIG_FILE=os.devnull))


def test_the_readme_cuda12_install_resolves_and_the_unfiltered_constraints_refuse_it(tmp_path):
    grep, pip_line = _readme_cuda12_lines()
    index = _cuda12_index(tmp_path / "index")
    (tmp_path / "constraints.txt").write_text((REPO / "constraints.txt").read_text())
    subprocess.run(grep, shell=True, cwd=tmp_path, check=True)
    filtered = (tmp_path / "constraints-cu126.txt").read_text()
    assert "torch==" in filtered and "triton==" in filtered and "nvidia-" not in filtered

    proc = _dry_run(pip_line, index, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    would = re.search(r"^Would install (.+)$", proc.stdout, re.M).group(1).split()
    assert "torch-2.14.1+cu126" in would and "torchvision-0.29.1+cu126" in would, would
    assert "cuda-toolkit-12.6.3" in would and not any("cu13" in w for w in would), would

    refused = _dry_run(pip_line.replace("constraints-cu126.txt", "constraints.txt"), index, tmp_path)
    assert refused.returncode != 0 and "cuda-toolkit" in refused.stdout + refused.stderr, refused.stdout[-2000:]
