"""`checkbox-dist export`: a checkpoint as ONNX, TorchScript, safetensors or a timm folder, self-describing.

    checkbox-dist export --checkpoint RUN --format onnx            # -> .../best/model.onnx
    checkbox-dist export --checkpoint RUN --format onnx --int8     # + model.int8.onnx (CPU)
    checkbox-dist export --checkpoint RUN --format torchscript     # -> model.torchscript.pt
    checkbox-dist export --checkpoint RUN --format safetensors     # -> model.safetensors
    checkbox-dist export --checkpoint RUN --format timm            # -> timm/ (infer/timm_export.py)
    checkbox-dist export --checkpoint RUN/ensemble --format onnx   # -> RUN/ensemble/model.onnx, one graph
    checkbox-dist predict --checkpoint RUN --backend onnx crop.png

ONNX and TorchScript files hold the whole inference graph: uint8 images (N, C, H, W), already resized /
letterboxed / composited as `images.decode` does, go in; `logits` and `probabilities` (softmax of
logits / temperature) come out, with the normalisation inside, and the batch axis is dynamic. Their
metadata (ONNX `metadata_props["checkbox_dist"]`, TorchScript extra file `checkbox_dist.json`,
safetensors header `checkbox_dist`) is one JSON object: classes, preprocess spec, temperature, model
name, source checkpoint + sha256, metrics, versions. safetensors holds the timm weights only (no graph).
`timm` writes a folder timm alone loads (`timm.create_model("local-dir:DIR", pretrained=True)`), with a model
card: see infer/timm_export.py.

Every ONNX export is checked before it is kept: ONNX Runtime must agree with PyTorch to < 1e-4 in
probability on a batch of images, at batch sizes 1 and 3.
An ensemble folder (model/ensemble.py) exports as one graph (ONNX or TorchScript) that runs every member on the
same uint8 input and averages their calibrated probabilities; its `logits` output is the log of that mean
(so its metadata's temperature is 1), and the same parity check applies to the whole graph. Files are written to a temporary name and
renamed, so a failed export never leaves a half-written file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from checkbox_dist import __version__
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_path
from checkbox_dist.data.images import PreprocessSpec
from checkbox_dist.infer import quantize, timm_export
from checkbox_dist.infer.onnx_meta import ONNX_FILE, ONNX_META_KEY, quiet, set_metadata
from checkbox_dist.model import checkpoint, ensemble, hub

FORMATS = ("onnx", "torchscript", "safetensors", "timm")
DEFAULT_NAMES = {"onnx": ONNX_FILE, "torchscript": "model.torchscript.pt", "safetensors": "model.safetensors",
                 "timm": "timm"}
PARITY_TOLERANCE = 1e-4  # max |p_onnx - p_torch| an export must stay under
MAX_BATCH = 4096  # upper bound of the dynamic batch axis the exporter is told about


class InferenceGraph(torch.nn.Module):
    """uint8 (N, C, H, W) -> (logits, calibrated probabilities): what every exported graph computes."""

    def __init__(self, model: torch.nn.Module, spec: PreprocessSpec, temperature: float):
        super().__init__()
        self.model, self.spec, self.temperature = model, spec, float(temperature)
        # The same arithmetic as images.normalize, as buffers: normalize caches its constants, and a
        # constant first built while the exporter traces would be a fake tensor, cached for later callers.
        extra = [0.5] if spec.alpha_channel else []
        self.register_buffer("mean", torch.tensor(list(spec.mean) + extra).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(spec.std) + extra).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor):
        logits = self.model((image.float() / 255.0 - self.mean) / self.std)
        return logits, F.softmax(logits / self.temperature, dim=1)


class EnsembleGraph(torch.nn.Module):
    """uint8 (N, C, H, W) -> (log of the mean probability, mean of the members' calibrated probabilities)."""

    def __init__(self, members: list[InferenceGraph]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.spec = members[0].spec  # the members agree on it (ensemble.load_models checks)

    def forward(self, image: torch.Tensor):
        probs = torch.stack([member(image)[1] for member in self.members]).mean(0)
        return probs.clamp_min(1e-12).log(), probs


def load_for_export(path: str | Path) -> tuple[Path, InferenceGraph | EnsembleGraph, dict]:
    """(folder, graph in eval mode, payload); for an ensemble the first member's payload, temperature 1 (the
    members' temperatures are inside the graph) and an `ensemble` block."""
    folder = checkpoint.resolve(path)
    loaded = ensemble.load_models(folder, "cpu")
    graphs = [InferenceGraph(model, PreprocessSpec.from_dict(p["preprocess"]), p.get("temperature", 1.0))
              for model, p in loaded]
    payload = loaded[0][1]
    if not ensemble.is_ensemble(folder):
        return folder, graphs[0].eval(), payload
    manifest = ensemble.read_manifest(folder)
    payload = dict(payload, temperature=1.0, ensemble={"members": len(graphs), "seeds": manifest.get("seeds"),
                                                       "temperatures": [g.temperature for g in graphs]})
    return folder, EnsembleGraph(graphs).eval(), payload


def describe(folder: Path, payload: dict, fmt: str) -> dict:
    """The metadata every exported file carries (plain JSON)."""
    spec = payload["preprocess"]
    channels = 4 if spec.get("alpha_channel") else 3
    return {"format": f"checkbox_dist.{fmt}/1", "classes": payload["classes"], "model_name": payload["model_name"],
            "preprocess": spec, "temperature": float(payload.get("temperature", 1.0)),
            "input": f"image: uint8 (N, {channels}, {spec['image_size']}, {spec.get('image_width') or spec['image_size']}), RGB"
                     f"{'A' if channels == 4 else ''} after checkbox_dist.data.images.decode (resize/letterbox, alpha "
                     f"composited over the background)",
            "outputs": "logits (N, classes); probabilities (N, classes) = softmax(logits / temperature)",
            "checkpoint": str(folder), "checkpoint_sha256": _model_sha256(folder),
            "epoch": payload.get("epoch"), "metrics": payload.get("metrics", {}), "config": payload.get("config", {}),
            "ensemble": payload.get("ensemble"),
            "versions": dict(payload.get("versions", {}), exported_with=__version__,
                             torch_export=str(torch.__version__))}


def _model_sha256(folder: Path) -> str | None:
    """From the checkpoint's manifest (verified when it was loaded), so the file is not hashed twice."""
    if not (folder / checkpoint.META_FILE).is_file():  # a timm export folder: no manifest
        return None
    manifest = json.loads((folder / checkpoint.META_FILE).read_text())
    return manifest.get("files", {}).get(checkpoint.MODEL_FILE)


def sample_input(spec: PreprocessSpec, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    channels = 4 if spec.alpha_channel else 3
    return torch.randint(0, 256, (n, channels, *spec.height_width), generator=generator,
                         dtype=torch.uint8)


def export_onnx(graph: InferenceGraph, meta: dict, out: Path, exporter: str = "dynamo",
                check_images: torch.Tensor | None = None) -> dict:
    """Writes `out` (dynamic batch, metadata), checks ONNX Runtime against PyTorch; returns the check."""
    import onnx

    example = sample_input(graph.spec, 2)
    with atomic_path(out) as tmp:
        try:
            with quiet():
                if exporter == "dynamo":
                    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
                    torch.onnx.export(graph, (example,), str(tmp), dynamo=True, external_data=False,
                                      input_names=["image"], output_names=["logits", "probabilities"],
                                      dynamic_shapes={"image": {0: batch}}, verbose=False)
                else:  # the TorchScript-based exporter: deprecated in torch, but faster to run
                    torch.onnx.export(graph, (example,), str(tmp), dynamo=False, opset_version=17,
                                      input_names=["image"], output_names=["logits", "probabilities"],
                                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"},
                                                    "probabilities": {0: "batch"}})
        except Exception as err:  # noqa: BLE001 - exporter failures come in many types; one line for the user
            other = "legacy" if exporter == "dynamo" else "dynamo"
            raise exporter_failed("ONNX", meta, err, f"; try --onnx-exporter {other}") from None
        model = onnx.load(str(tmp))
        set_metadata(model, meta)
        onnx.save(model, str(tmp))
        check = parity(graph, tmp, check_images)
        if check["max_abs_diff"] >= PARITY_TOLERANCE:
            raise UserError(f"ONNX export does not match PyTorch: max |p_onnx - p_torch| = "
                            f"{check['max_abs_diff']:.2e} >= {PARITY_TOLERANCE:g}; {out} not written")
    return check


def parity(graph: InferenceGraph, onnx_path: Path, images: torch.Tensor | None = None) -> dict:
    """Max |p_onnx - p_torch| on `images` (uint8 batch; random ones if None), at batch 1 and batch n."""
    import onnxruntime as ort

    images = sample_input(graph.spec, 3) if images is None else images
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    run = lambda x: torch.from_numpy(session.run(["probabilities"], {"image": x.numpy()})[0])  # noqa: E731
    with torch.inference_mode():
        reference = graph(images)[1]
    diffs = [float((run(images[:1]) - reference[:1]).abs().max()), float((run(images) - reference).abs().max())]
    return {"max_abs_diff": max(diffs), "images": len(images)}


def exporter_failed(what: str, meta: dict, err: Exception, hint: str = "") -> UserError:
    """An exporter's exception (many types, often pages of trace) as the user's one line: its first line."""
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    return UserError(f"{what} export of {meta['model_name']} failed ({first}){hint}")


def export_torchscript(graph: InferenceGraph, meta: dict, out: Path) -> None:
    example = sample_input(graph.spec, 2)
    with atomic_path(out) as tmp, quiet():
        try:
            traced = torch.jit.trace(graph, (example,), check_trace=False)
        except Exception as err:  # noqa: BLE001 - as export_onnx: one line for the user
            raise exporter_failed("TorchScript", meta, err) from None
        torch.jit.save(traced, str(tmp), _extra_files={"checkbox_dist.json": json.dumps(meta, default=str)})


def export_safetensors(graph: InferenceGraph, meta: dict, out: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in graph.model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={ONNX_META_KEY: json.dumps(meta, default=str)})


def run(args) -> int:
    if args.int8 and args.format != "onnx":
        raise UserError("--int8 applies to --format onnx only")
    if args.cv_summary and args.format != "timm":
        raise UserError("--cv-summary applies to --format timm only")
    if args.format == "onnx":
        _require("onnx", "onnxruntime")
    folder, graph, payload = load_for_export(args.checkpoint)
    if "ensemble" in payload and (args.format in ("safetensors", "timm") or args.int8):
        raise UserError(f"{folder} is an ensemble: it exports as one graph, --format onnx (without --int8) or "
                        f"torchscript; export a member (e.g. {folder}/member_0) for {args.format}")
    beside = Path(hub.local_name(args.checkpoint)) if hub.hub_id(args.checkpoint) is not None else folder
    out = Path(args.out).expanduser() if args.out else beside / DEFAULT_NAMES[args.format]
    meta = describe(folder, payload, args.format)
    if args.format == "onnx":
        check = export_onnx(graph, meta, out, args.onnx_exporter)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, dynamic batch axis): ONNX Runtime matches "
              f"PyTorch, max |dp| = {check['max_abs_diff']:.1e} on {check['images']} images")
        if args.int8:
            int8_out = out.with_name(out.name.removesuffix(".onnx") + ".int8.onnx")
            report = quantize.quantize_onnx(out, int8_out, payload, meta, args.int8_mode, args.calib_data,
                                            args.calib_n)
            print(f"wrote {int8_out} ({int8_out.stat().st_size / 1e6:.1f} MB, int8 {args.int8_mode}): "
                  f"{report['summary']}")
            print(f"compare accuracy and speed: checkbox-dist bench-infer --checkpoint {folder} --data DIR")
    elif args.format == "torchscript":
        export_torchscript(graph, meta, out)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): torch.jit.load(path)(uint8 images) -> "
              f"(logits, probabilities); metadata in extra file checkbox_dist.json")
    elif args.format == "timm":
        diff = timm_export.export_timm(graph.model, payload, folder, out, args.license, args.cv_summary)
        print(f"wrote {out}/ (config.json, model.safetensors, README.md, {timm_export.model_card.CONFIG_FILE}): "
              f"timm.create_model(\"local-dir:{out}\", pretrained=True) gives the checkpoint's logits "
              f"(max |d| = {diff:.1e}); the card's snippet reproduces `predict`")
    else:
        export_safetensors(graph, meta, out)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): timm {payload['model_name']} weights; "
              f"metadata (classes, preprocess, temperature) in the safetensors header")
    return 0


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"export needs {', '.join(missing)}: pip install 'checkbox_dist[export]'")
