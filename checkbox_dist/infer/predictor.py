"""Predictor: a checkpoint (or several: an ensemble) as a callable that maps images to probabilities.

    from checkbox_dist.infer.predictor import Predictor
    predictor = Predictor(["RUN/checkpoints/best"])
    predictor.predict_files(["crop.png"])   # -> [{"class": "checked", "score": 0.97, "confidence": {...}}]
    Predictor(["RUN/checkpoints/best/model.onnx"])            # ONNX Runtime (`export` wrote it)
    Predictor(["RUN"], backend="onnx")                        # the same, found in the folder
    Predictor(["RUN/checkpoints/best/timm"])                  # an `export --format timm` folder
    Predictor(["hf-hub:ORG/NAME"])                            # such a folder on the Hugging Face Hub
    Predictor(["RUN/ensemble"])                               # an ensemble folder (model/ensemble.py): N members
    Predictor(["RUN/ensemble"], backend="onnx")               # its model.onnx: one graph averaging them

Preprocessing comes from the checkpoint (never re-specified), and probabilities use the temperature
fitted on the val set at the end of training, so a confidence of 0.9 means right about 9 times in 10.
An ensemble averages the calibrated probabilities of its members (each with its own preprocessing);
`tta=True` also averages each member over the horizontal mirror.

Backends: `torch` (the checkpoint folder, eager PyTorch) and `onnx` (a file from `checkbox-dist export`,
which holds the preprocessing, classes and temperature in its metadata; temperature is inside the graph).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import PreprocessSpec, decode, normalize
from checkbox_dist.infer.onnx_meta import ONNX_FILE, ONNX_META_KEY
from checkbox_dist.model import checkpoint, ensemble, hub

BACKENDS = ("auto", "torch", "onnx")


class TorchMember:
    """One checkpoint run with eager PyTorch."""

    backend = "torch"

    def __init__(self, path: str | Path, device: torch.device, loaded: tuple | None = None):
        folder = checkpoint.resolve(path)
        self.source = str(path) if hub.hub_id(path) is not None else str(folder)
        self.model, self.payload = loaded or checkpoint.load_model(folder, device)
        self.device = device
        self.classes: list[str] = self.payload["classes"]
        self.spec = PreprocessSpec.from_dict(self.payload["preprocess"])
        self.temperature = float(self.payload.get("temperature", 1.0))

    @torch.inference_mode()
    def probs(self, batch: torch.Tensor, tta: bool) -> torch.Tensor:
        x = normalize(batch.to(self.device), self.spec)
        probs = F.softmax(self.model(x).float() / self.temperature, dim=1)
        if tta:  # widgets are near-symmetric: the mirror is a second look, not a different image
            probs = (probs + F.softmax(self.model(x.flip(-1)).float() / self.temperature, dim=1)) / 2
        return probs.cpu()

    def info(self) -> dict:
        p = self.payload
        return {"source": self.source, "backend": self.backend, "model_name": p["model_name"],
                "epoch": p.get("epoch"), "temperature": self.temperature, "preprocess": self.spec.to_dict(),
                "metrics": p.get("metrics", {}), "versions": p.get("versions", {}), "config": p.get("config", {})}


class OnnxMember:
    """One exported .onnx file run with ONNX Runtime on the CPU: uint8 images in, probabilities out."""

    backend = "onnx"

    def __init__(self, path: str | Path, threads: int = 0, spinning: bool = True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("the onnx backend needs onnxruntime: pip install 'checkbox_dist[export]'") from None
        self.source = str(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = ONNX Runtime's default (one per physical core)
        options.log_severity_level = 3  # its warnings about unused initializers are not the user's business
        if not spinning:  # idle pool threads sleep instead of spinning (serve: the cores are needed for HTTP)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            raise UserError(f"{path}: cannot load the ONNX model ({str(err).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
        if not meta:
            raise UserError(f"{path}: no '{ONNX_META_KEY}' metadata: export it with `checkbox-dist export`")
        self.meta = json.loads(meta)
        self.classes = self.meta["classes"]
        self.spec = PreprocessSpec.from_dict(self.meta["preprocess"])
        self.temperature = float(self.meta["temperature"])
        self.input_name = self.session.get_inputs()[0].name

    def probs(self, batch: torch.Tensor, tta: bool) -> torch.Tensor:
        x = batch.cpu().contiguous()
        def run(t: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.session.run(["probabilities"], {self.input_name: t.numpy()})[0])

        probs = run(x)
        if tta:
            probs = (probs + run(x.flip(-1).contiguous())) / 2
        return probs

    def info(self) -> dict:
        keep = ("model_name", "epoch", "metrics", "versions", "config", "checkpoint", "checkpoint_sha256",
                "quantization")
        return {"source": self.source, "backend": self.backend, "temperature": self.temperature,
                "preprocess": self.spec.to_dict(), **{k: self.meta.get(k) for k in keep}}


def _members(path: str | Path, backend: str, device: torch.device, threads: int, spinning: bool) -> list:
    """The members one checkpoint argument stands for: an ensemble folder's (checked to agree), or one."""
    path = Path(path).expanduser()
    if backend == "auto":
        backend = "onnx" if path.suffix == ".onnx" else "torch"
    if backend == "torch":
        if path.suffix == ".onnx":
            raise UserError(f"{path}: an ONNX file needs --backend onnx (or auto)")
        if ensemble.is_ensemble(path):
            folders = ensemble.member_folders(path)
            return [TorchMember(f, device, loaded) for f, loaded in zip(folders, ensemble.load_models(path, device))]
        return [TorchMember(path, device)]
    if backend != "onnx":
        raise UserError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if path.suffix != ".onnx":
        folder = checkpoint.resolve(path)
        path = folder / ONNX_FILE
        if not path.is_file():
            raise UserError(f"{folder}: no {ONNX_FILE}; run `checkbox-dist export --checkpoint {folder} "
                            f"--format onnx` first, or pass the .onnx file")
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    return [OnnxMember(path, threads, spinning)]


def inference_device(requested: str | None = None) -> torch.device:
    """The device inference runs on: `requested` when given, else CUDA, else Apple's MPS, else the CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    return torch.device("mps" if mps is not None and mps.is_available() else "cpu")


class Predictor:
    def __init__(self, checkpoints: list[str | Path], device: str | None = None, tta: bool = False,
                 backend: str = "auto", threads: int = 0, onnx_spinning: bool = True):
        if not checkpoints:
            raise UserError("no checkpoint given")
        self.device = inference_device(device)
        self.members = [m for c in checkpoints for m in _members(c, backend, self.device, threads, onnx_spinning)]
        self.classes: list[str] = self.members[0].classes
        if any(m.classes != self.classes for m in self.members):
            raise UserError("the checkpoints were trained on different classes: they cannot be ensembled")
        self.specs = [m.spec for m in self.members]
        self.temperatures = [m.temperature for m in self.members]
        self.tta = tta

    @property
    def spec(self) -> PreprocessSpec:
        return self.specs[0]

    @property
    def models(self) -> list[torch.nn.Module]:
        return [m.model for m in self.members if isinstance(m, TorchMember)]

    @property
    def payloads(self) -> list[dict]:
        return [m.payload for m in self.members if isinstance(m, TorchMember)]

    def predict_tensors(self, batches: list[torch.Tensor]) -> torch.Tensor:
        """One uint8 (N, C, H, W) batch per member (preprocessing may differ) -> (N, classes) probabilities."""
        total = sum(member.probs(batch, self.tta) for member, batch in zip(self.members, batches))
        return total / len(self.members)

    def decode(self, source: str | Path | bytes, name: str | None = None, **limits) -> list[torch.Tensor]:
        """One uint8 tensor per member for one image (raises BadImageError); `limits`: images.decode's
        max_bytes and budget."""
        return [decode(source, spec, name, **limits) for spec in self.specs]

    def predict_decoded(self, decoded: list[list[torch.Tensor]]) -> list[dict]:
        """`decoded[i]` is `self.decode(image_i)`; returns one result dict per image."""
        if not decoded:
            return []
        batches = [torch.stack([d[m] for d in decoded]) for m in range(len(self.members))]
        probs = self.predict_tensors(batches)
        return [self.describe(row) for row in probs]

    def describe(self, probs: torch.Tensor) -> dict:
        best = int(probs.argmax())
        return {"class": self.classes[best], "score": round(float(probs[best]), 6),
                "confidence": {c: round(float(p), 6) for c, p in zip(self.classes, probs)}}

    def predict_files(self, paths: list[str | Path]) -> list[dict]:
        return self.predict_decoded([self.decode(p) for p in paths])

    def info(self) -> dict:
        return {"classes": self.classes, "tta": self.tta, "ensemble": len(self.members) > 1,
                "members": [m.info() for m in self.members]}
