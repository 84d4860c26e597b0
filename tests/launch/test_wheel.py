"""The package as a user installs it: build the wheel, install it in a fresh virtual environment outside the
repository, and run the quickstart (tiny settings) from an empty folder. The configs must come from the
wheel, the run folder must land in that folder, and nothing may point back into the repository.

    .venv/bin/pytest tests/launch/test_wheel.py -q        # ~1 min: wheel, venv, a seconds-long training run

The new environment sees the dependencies already installed for the tests through a .pth file (nothing is
downloaded); the package itself is only the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.system


def _run(args: list, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the sources (a build writes build/ and *.egg-info next to them)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "checkbox_dist", src / "checkbox_dist", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("checkbox_dist-*.whl")
    return wheel


def _venv_with_wheel(tmp: Path, wheel: Path) -> Path:
    """A fresh venv of the same Python, the test environment's packages on its path, the wheel installed."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp)
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp)
    return venv


def test_wheel_carries_the_configs_and_runs_the_quickstart_from_an_empty_folder(tmp_path: Path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(str(p.relative_to(REPO)) for p in (REPO / "checkbox_dist" / "resources").rglob("*.yaml"))
    assert shipped and set(shipped) <= names, sorted(set(shipped) - names)

    venv = _venv_with_wheel(tmp_path, wheel)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONUNBUFFERED="1", WANDB_SILENT="true", OMP_NUM_THREADS="2")
    where = _run([venv / "bin" / "python", "-c", "import checkbox_dist; print(checkbox_dist.__file__)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    leaks = [str(REPO / "checkbox_dist"), str(REPO / "configs"), str(REPO / "launch"), "configs/quickstart.yaml"]
    listing = _run([venv / "bin" / "checkbox-dist", "configs"], work, env).stdout
    assert "quickstart" in listing and "cpu_2proc" in listing and str(venv) in listing
    launch = Path(_run([venv / "bin" / "checkbox-dist", "configs", "--path", "cpu_2proc"], work, env).stdout.strip())
    assert launch.is_file() and launch.is_relative_to(venv)

    proc = _run([venv / "bin" / "checkbox-dist", "quickstart", "model.name=test_resnet", "data.image_size=32",
                 "data.synth_n=60", "train.epochs=1", f"data.cache_dir={tmp_path / 'cache'}", "tracking.backends=[]",
                 "data.num_workers=0", "train.progress=false"], work, env)
    (run,) = (work / "runs").glob("quickstart-*")
    assert (run / "checkpoints" / "best" / "model.pt").is_file()
    assert "predict " in proc.stdout and "next:\n  checkbox-dist predict" in proc.stdout
    texts = [proc.stdout, proc.stderr, listing] + [(run / f).read_text() for f in ("config.yaml", "log.txt",
                                                                               "summary.json")]
    for text in texts:
        assert not [leak for leak in leaks if leak in text], [leak for leak in leaks if leak in text]
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
