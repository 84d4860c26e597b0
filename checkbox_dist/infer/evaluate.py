"""`checkbox-dist eval`: score checkpoints (one, or an ensemble) on a labelled folder.

    checkbox-dist eval --checkpoint RUN/checkpoints/best --data /data/checkbox_state_v2/val
    checkbox-dist eval --checkpoint A --checkpoint B --data D --tta     # ensemble of two, with flips
    checkbox-dist eval --checkpoint RUN/ensemble --data D               # an ensemble folder: its members

`eval` preprocesses exactly as the checkpoint's training did, prints a classification report, reports
ECE before and after the checkpoint's temperature, and writes a confusion-matrix PNG and a JSON file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from checkbox_dist.core import plots
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_write_json
from checkbox_dist.core.metrics import classification_metrics, classification_report
from checkbox_dist.data.datasets import FileImages
from checkbox_dist.data.sources import resolve_root, scan
from checkbox_dist.data.split import apply_bad_rows
from checkbox_dist.data.images import PreprocessSpec
from checkbox_dist.model import checkpoint, ensemble, hub
from checkbox_dist.model.logits import collect_logits
from checkbox_dist.infer.predictor import inference_device


def default_out(source: str) -> Path:
    """RUN/eval for RUN/checkpoints/<name>; ENSEMBLE/eval for an ensemble; beside an exported timm folder;
    ./NAME-eval for a Hub model (hf-hub:ORG/NAME)."""
    if hub.hub_id(source) is not None:
        return Path(hub.local_name(source) + "-eval")
    folder = checkpoint.resolve(source)
    if ensemble.is_ensemble(folder):
        return folder / "eval"
    if checkpoint.is_timm_folder(folder) and not (folder / checkpoint.MODEL_FILE).is_file():
        return folder.parent / "eval"
    return folder.parent.parent / "eval"


def labelled_items(data: str, classes: list[str]) -> tuple[list, Path]:
    """(items, root) to score from --data, any data.root format: a folder ROOT/<class>/* (or its val/ part),
    or the val part of data that has one (ROOT/{train,val}, a split column, a DatasetDict), else all of it.
    Bad rows are one error line, as data.on_bad_image=error does in training."""
    root = resolve_root(data)
    if root.is_dir() and (root / "val").is_dir() and not any((root / c).is_dir() for c in classes):
        root = root / "val"
    catalog = scan(root)
    apply_bad_rows(catalog, "error", [])
    unknown = [c for c in catalog.classes if c not in classes]
    if unknown:
        raise UserError(f"{root}: class '{unknown[0]}' is not one of the model's classes {classes}")
    keep = [i for i, s in enumerate(catalog.splits) if s == "val"] if catalog.has_splits else range(len(catalog.refs))
    return [(catalog.refs[i], classes.index(catalog.classes[catalog.labels[i]])) for i in keep], root


def run(args) -> int:
    """`checkbox-dist eval` (flags: commands/evaluate.py); --device defaults to CUDA, else MPS, else the CPU."""
    args.device = str(inference_device(args.device))
    loaded = [m for c in args.checkpoint for m in ensemble.load_models(c, args.device)]  # an ensemble: its members
    classes = loaded[0][1]["classes"]
    if any(p["classes"] != classes for _, p in loaded):
        raise UserError("--checkpoint: the checkpoints were trained on different classes")
    items, root = labelled_items(args.data, classes)
    probs_sum, ece_raw, temps = None, [], []
    for model, payload in loaded:
        spec = PreprocessSpec.from_dict(payload["preprocess"])
        dataset = FileImages(items, spec)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=0)
        logits, labels = collect_logits(model, loader, lambda b: (b[0].to(args.device), b[1], b[2]), spec, tta=args.tta)
        ece_raw.append(classification_metrics(logits, labels, classes)["ece"])
        temps.append(payload.get("temperature", 1.0))
        probs = F.softmax(logits / temps[-1], dim=1)
        probs_sum = probs if probs_sum is None else probs_sum + probs
    mean_probs = probs_sum / len(loaded)
    logits = mean_probs.clamp_min(1e-12).log()  # ensemble = mean of calibrated probabilities
    metrics = classification_metrics(logits, labels, classes)
    metrics["ece_uncalibrated"] = ece_raw[0] if len(loaded) == 1 else None
    metrics["temperatures"] = temps
    print(classification_report(metrics, classes))
    if len(loaded) == 1:
        print(f"ECE: {ece_raw[0]:.4f} uncalibrated -> {metrics['ece']:.4f} with temperature {temps[0]:.3f}")
    out_dir = Path(args.out) if args.out else default_out(args.checkpoint[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plots.confusion_matrix_png(metrics["confusion"], classes, out_dir / "confusion_matrix.png",
                                     f"{root.name}: top-1 {100 * metrics['top1']:.1f}% (n={metrics['n']})")
    report = dict(metrics, data=str(root), checkpoints=args.checkpoint, tta=args.tta)
    atomic_write_json(out_dir / "eval.json", report)
    print(f"wrote {png} and {out_dir / 'eval.json'}")
    return 0
