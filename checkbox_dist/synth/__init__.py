"""The synthetic UI-widget generator: the package's embedded default dataset (see generator.py).

    checkbox-dist synth --out data/synth --n 3000 --seed 0 --workers 2
    python -m checkbox_dist.synth 500          # time render_sample

Layer: imports only checkbox_dist.core. Modules: generator (plans a sample, writes datasets), widgets
(themes, controls, labels), glyphs (icon and tick shapes), pictures (icons, avatars), other (the `other` class).
"""

from checkbox_dist.synth import generator
from checkbox_dist.synth.generator import (CLASSES, LABELS, VERSION, all_cores, folder_of, generate,
                                           render_index, render_sample, render_sample_meta, run)

__all__ = ["CLASSES", "LABELS", "VERSION", "all_cores", "folder_of", "generate", "render_index",
           "render_sample", "render_sample_meta", "run", "SynthDataset"]


def __getattr__(name: str):  # SynthDataset is built on first use: `import checkbox_dist.synth` stays torch-free
    if name == "SynthDataset":
        return generator.SynthDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
