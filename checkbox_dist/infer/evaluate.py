"""Evaluation: logits over a loader, the best-model rules, and `checkbox-dist eval`.

    checkbox-dist eval --checkpoint runs/quickstart/checkpoints/best --data /data/checkbox_state_v2/val
    checkbox-dist eval --checkpoint A --checkpoint B --data D --tta     # ensemble of two, with flips

`eval` preprocesses exactly as the checkpoint's training did, prints a classification report, reports
ECE before and after the checkpoint's temperature, and writes a confusion-matrix PNG and a JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from checkbox_dist.core import faults
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import normalize


@torch.no_grad()
def collect_logits(model, loader, fetch, spec, accelerator=None, tta: bool = False):
    """(logits, labels) for every sample of `loader`, each counted once across processes."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        faults.point("eval")  # test-only fault hook (checkbox_dist/faults.py): a dict lookup
        images, labels, _ = fetch(batch)
        x = normalize(images, spec)
        context = accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)
        with context:
            logits = model(x).float()
            if tta:  # average probabilities over the horizontal mirror: widgets are near-symmetric
                logits = torch.log((F.softmax(logits, 1) + F.softmax(model(x.flip(-1)).float(), 1)) / 2)
        if accelerator is not None:
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train()
    return torch.cat(all_logits), torch.cat(all_labels)


def is_better(rule: str, metrics: dict, best: dict | None) -> bool:
    """The best-model rules. `seed`: val loss strictly lower AND top-1 not lower (the write-up's rule)."""
    if best is None:
        return True
    if rule == "seed":
        return metrics["loss"] < best["loss"] and metrics["top1"] >= best["top1"]
    if rule == "val_loss":
        return metrics["loss"] < best["loss"]
    if rule == "val_top1":  # ties broken by loss
        return (metrics["top1"], -metrics["loss"]) > (best["top1"], -best["loss"])
    return (metrics["macro_f1"], -metrics["loss"]) > (best["macro_f1"], -best["loss"])


def calibrate_best(cfg, data, best_dir: Path, device) -> dict:
    """Fit temperature scaling on the val split for the `best` checkpoint, save it into the checkpoint, and
    return the run summary's numbers (val metrics before calibration, ECE before/after, temperature)."""
    from checkbox_dist.model import checkpoint
    from checkbox_dist.core.metrics import classification_metrics, fit_temperature
    from checkbox_dist.model.build import build_model, load_weights

    payload, _ = checkpoint.load(best_dir)
    model = build_model(cfg.model, len(data.classes), data.spec.channels).to(device)
    load_weights(model, payload["model"], str(best_dir))
    loader = torch.utils.data.DataLoader(data.val_set, batch_size=cfg.data.eval_batch_size)
    logits, labels = collect_logits(model, loader, data.val_set.fetch, data.spec, None)
    before = classification_metrics(logits, labels, data.classes, cfg.eval.top_k, cfg.eval.ece_bins)
    temperature = fit_temperature(logits, labels) if cfg.eval.calibrate else 1.0
    after = classification_metrics(logits, labels, data.classes, cfg.eval.top_k, cfg.eval.ece_bins, temperature)
    payload["temperature"] = temperature
    payload["metrics"] = dict(payload["metrics"], ece_before_calibration=before["ece"],
                              ece_after_calibration=after["ece"], temperature=temperature)
    checkpoint.save(best_dir, payload, None)
    # The temperature minimises this NLL, so it never rises; ECE (15 bins over ~100 images) can, by noise.
    nll_after = float(F.cross_entropy(logits / temperature, labels)) if len(labels) else float("nan")
    return {"best_epoch": payload["epoch"], "val_top1": before["top1"], "val_loss": before["loss"],
            "val_loss_calibrated": nll_after, "val_macro_f1": before["macro_f1"], "val_ece": before["ece"],
            "val_ece_calibrated": after["ece"], "temperature": temperature, "best_checkpoint": str(best_dir)}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate checkpoint(s) on a labelled folder",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint folder or run folder (repeat for an ensemble)")
    p.add_argument("--data", required=True, help="folder ROOT/<class>/*.png (or ROOT/val/<class>)")
    p.add_argument("--out", default="", help="folder for the report files (default: next to the first checkpoint)")
    p.add_argument("--tta", action="store_true", help="average over the horizontal mirror too")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def run(args) -> int:
    from checkbox_dist.model import checkpoint
    from checkbox_dist.core import plots
    from checkbox_dist.data.datasets import FileImages, scan_classes
    from checkbox_dist.data.images import PreprocessSpec
    from checkbox_dist.core.metrics import classification_metrics, classification_report

    loaded = [checkpoint.load_model(c, args.device) for c in args.checkpoint]
    classes = loaded[0][1]["classes"]
    if any(p["classes"] != classes for _, p in loaded):
        raise UserError("--checkpoint: the checkpoints were trained on different classes")
    root = Path(args.data)
    if (root / "val").is_dir() and not any((root / c).is_dir() for c in classes):
        root = root / "val"
    found = scan_classes(root)
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise UserError(f"{root}: class folder '{unknown[0]}' is not one of the model's classes {classes}")
    items = [(p, classes.index(c)) for c in found for p in found[c]]
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
    out_dir = Path(args.out) if args.out else checkpoint.resolve(args.checkpoint[0]).parent.parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plots.confusion_matrix_png(metrics["confusion"], classes, out_dir / "confusion_matrix.png",
                                     f"{root.name}: top-1 {100 * metrics['top1']:.1f}% (n={metrics['n']})")
    report = dict(metrics, data=str(root), checkpoints=args.checkpoint, tta=args.tta)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {png} and {out_dir / 'eval.json'}")
    return 0
