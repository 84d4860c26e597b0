"""What every exported ONNX file of ours shares: its default name, its metadata, and quiet ONNX tooling.

    from checkbox_dist.infer.onnx_meta import read_metadata
    read_metadata(Path("RUN/checkpoints/best/model.onnx"))   # -> {"classes": [...], ...}

The metadata is one JSON object in `metadata_props["checkbox_dist"]` (classes, preprocess spec,
temperature, model name, source checkpoint ...: see `export.describe`); `set_metadata` replaces any
earlier entry, so a file never holds two. Used by `export` (float32) and `quantize` (int8); this module
imports neither, and onnx is imported only when a function needs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

from checkbox_dist import __version__

ONNX_FILE = "model.onnx"  # what `export --format onnx` writes into the checkpoint folder by default
ONNX_META_KEY = "checkbox_dist"  # metadata_props key holding the JSON description


def quiet():
    """The exporters print progress lines and deprecation warnings that are not the user's concern."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def set_metadata(model, meta: dict) -> None:
    """Writes `meta` into an in-memory onnx.ModelProto (and names us as its producer)."""
    for prop in [p for p in model.metadata_props if p.key == ONNX_META_KEY]:
        model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta, default=str)
    model.producer_name, model.producer_version = "checkbox_dist", __version__
    model.doc_string = f"checkbox state classifier ({meta['model_name']}): {', '.join(meta['classes'])}"


def read_metadata(path: Path) -> dict:
    """The JSON object `set_metadata` stored in the .onnx file at `path`."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}[ONNX_META_KEY])
