"""Where the synthetic datasets live, and the one function that finds or generates one.

    DATA.cache_dir/synth-n<N>-s<SEED>[-kind]/<class>/<class>_<index>.png   (checkbox_dist.synth writes it)

A set is generated once and reused (the generator keeps a SYNTH.json stamp and skips work that is
done); `synthetic_set` takes a file lock, so parallel CV folds, sweep trials and stage-one runs that
need the same set build it once and the others wait.
"""

from __future__ import annotations

from pathlib import Path

from checkbox_dist import synth
from checkbox_dist.core.files import exclusive


def synthetic_folder(cache_dir: str, n: int, seed: int, labels: str = "class") -> Path:
    return Path(cache_dir).expanduser() / (f"synth-n{n}-s{seed}" + ("" if labels == "class" else f"-{labels}"))


def synthetic_root(cfg_data) -> Path:
    """The folder of the synthetic set a DataConfig trains on when `data.root` is empty."""
    return synthetic_folder(cfg_data.cache_dir, cfg_data.synth_n, cfg_data.synth_seed, cfg_data.synth_labels)


def synthetic_set(cache_dir: str, n: int, seed: int, labels: str = "class", workers: int = 1) -> Path:
    """The folder of n synthetic images (seed, labels), generated first if it is not complete."""
    root = synthetic_folder(cache_dir, n, seed, labels)
    with exclusive(root):
        synth.generate(root, n, seed, workers=workers, labels=labels)
    return root
