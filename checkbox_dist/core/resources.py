"""The files shipped inside the package: training configs, sweep spaces and Accelerate launch configs.

    config_file("quickstart")   -> <package>/resources/configs/quickstart.yaml   (None: no such config)
    launch_file("cpu_2proc")    -> <package>/resources/launch/cpu_2proc.yaml
    catalogue()                 -> every shipped file: kind, name, path, what its comment says first

They are package data (pyproject.toml), so an installed wheel carries them; in a checkout the top-level
configs/ and launch/ folders are links to these same files. `--config NAME` finds a training config here
(core.config_loader.resolve_config_path); `checkbox-dist configs` lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ROOT = Path(str(resources.files("checkbox_dist") / "resources"))
CONFIGS = ROOT / "configs"
SWEEPS = CONFIGS / "sweeps"
LAUNCH = ROOT / "launch"


@dataclass(frozen=True)
class Shipped:
    kind: str  # config | sweep | launch
    name: str  # what --config / `configs --path` takes
    path: Path
    summary: str  # the first sentence of the file's leading comment


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def config_names() -> list[str]:
    return _names(CONFIGS)


def config_file(name: str) -> Path | None:
    """The packaged training config called `name` (no suffix), or None."""
    return CONFIGS / f"{name}.yaml" if name in config_names() else None


def launch_file(name: str) -> Path:
    """The packaged Accelerate config `name` (cpu_2proc, multi_gpu, multi_node, single_gpu, tpu_vm)."""
    return LAUNCH / f"{name}.yaml"


def _summary(path: Path) -> str:
    """The first sentence of the file's leading comment (up to a blank comment line or an indented example)."""
    words = []
    for line in path.read_text().splitlines():
        text = line.lstrip("#")
        if not line.startswith("#") or not text.strip() or text.startswith("  "):
            break
        words.append(text.strip())
    first = " ".join(words).split(". ")[0].rstrip(":.")
    return first if len(first) <= 110 else first[:106].rsplit(" ", 1)[0] + " ..."


def catalogue() -> list[Shipped]:
    """Every shipped config: training configs, then sweep spaces, then launch configs."""
    groups = [("config", CONFIGS, ""), ("sweep", SWEEPS, "sweeps/"), ("launch", LAUNCH, "")]
    return [Shipped(kind, prefix + name, folder / f"{name}.yaml", _summary(folder / f"{name}.yaml"))
            for kind, folder, prefix in groups for name in _names(folder)]
