"""Predictor: a checkpoint (or several: an ensemble) as a callable that maps images to probabilities.

    from checkbox_dist.inference import Predictor
    predictor = Predictor(["runs/quickstart/checkpoints/best"])
    predictor.predict_files(["crop.png"])   # -> [{"class": "checked", "confidence": {...}}]

Preprocessing comes from the checkpoint (never re-specified), and probabilities use the temperature
fitted on the val set at the end of training, so a confidence of 0.9 means right about 9 times in 10.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from checkbox_dist import checkpoint
from checkbox_dist.errors import UserError
from checkbox_dist.images import PreprocessSpec, decode, normalize


class Predictor:
    def __init__(self, checkpoints: list[str | Path], device: str | None = None, tta: bool = False):
        if not checkpoints:
            raise UserError("no checkpoint given")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        loaded = [checkpoint.load_model(c, self.device) for c in checkpoints]
        self.models = [m for m, _ in loaded]
        self.payloads = [p for _, p in loaded]
        self.classes: list[str] = self.payloads[0]["classes"]
        if any(p["classes"] != self.classes for p in self.payloads):
            raise UserError("the checkpoints were trained on different classes: they cannot be ensembled")
        self.specs = [PreprocessSpec.from_dict(p["preprocess"]) for p in self.payloads]
        self.temperatures = [float(p.get("temperature", 1.0)) for p in self.payloads]
        self.tta = tta

    @property
    def spec(self) -> PreprocessSpec:
        return self.specs[0]

    @torch.no_grad()
    def predict_tensors(self, batches: list[torch.Tensor]) -> torch.Tensor:
        """One uint8 (N, C, S, S) batch per model (preprocessing may differ) -> (N, classes) probabilities."""
        total = None
        for model, spec, temperature, batch in zip(self.models, self.specs, self.temperatures, batches):
            x = normalize(batch.to(self.device), spec)
            probs = F.softmax(model(x).float() / temperature, dim=1)
            if self.tta:
                probs = (probs + F.softmax(model(x.flip(-1)).float() / temperature, dim=1)) / 2
            total = probs if total is None else total + probs
        return (total / len(self.models)).cpu()

    def decode(self, source: str | Path | bytes, name: str | None = None) -> list[torch.Tensor]:
        """One uint8 tensor per model for one image (raises BadImageError)."""
        return [decode(source, spec, name) for spec in self.specs]

    def predict_decoded(self, decoded: list[list[torch.Tensor]]) -> list[dict]:
        """`decoded[i]` is `self.decode(image_i)`; returns one result dict per image."""
        if not decoded:
            return []
        batches = [torch.stack([d[m] for d in decoded]) for m in range(len(self.models))]
        probs = self.predict_tensors(batches)
        return [self.describe(row) for row in probs]

    def describe(self, probs: torch.Tensor) -> dict:
        best = int(probs.argmax())
        return {"class": self.classes[best], "score": float(probs[best]),
                "confidence": {c: round(float(p), 6) for c, p in zip(self.classes, probs)}}

    def predict_files(self, paths: list[str | Path]) -> list[dict]:
        return self.predict_decoded([self.decode(p) for p in paths])
