"""Classification metrics from gathered logits: loss, top-1/top-k, per-class P/R/F1, confusion, ECE.

Everything is computed once per evaluation on the full, de-duplicated val set (model/logits.py gathers
logits with their sample indices and keeps one row per index), so the numbers do not depend on the number of processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017): sum_b |acc_b - conf_b| * n_b / n."""
    confidence, predicted = probs.max(dim=1)
    correct = predicted.eq(labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.float().mean() * (correct[inside].mean() - confidence[inside].mean()).abs()
    return float(ece)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) on held-out data (Guo et al. 2017)."""
    logits, labels = logits.detach().double(), labels.detach()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    # Clamp: 411 images can give a degenerate fit (all val correct -> T -> 0); 0.05..20 is plenty.
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], top_k: int = 2,
                           ece_bins: int = 15, temperature: float = 1.0) -> dict:
    logits, labels = logits.float().cpu(), labels.cpu()
    n_classes = len(classes)
    probs = F.softmax(logits / temperature, dim=1)
    predicted = logits.argmax(dim=1)
    k = min(top_k, n_classes)
    topk_hit = logits.topk(k, dim=1).indices.eq(labels[:, None]).any(dim=1)
    confusion = torch.bincount(labels * n_classes + predicted, minlength=n_classes**2).view(n_classes, n_classes)
    true_pos = confusion.diag().float()
    precision = true_pos / confusion.sum(0).clamp_min(1)
    recall = true_pos / confusion.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return {
        "loss": float(F.cross_entropy(logits, labels)) if len(labels) else float("nan"),
        "top1": float(predicted.eq(labels).float().mean()),
        f"top{k}": float(topk_hit.float().mean()),
        "macro_f1": float(f1.mean()),
        "ece": expected_calibration_error(probs, labels, ece_bins),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(confusion[i].sum())} for i, c in enumerate(classes)},
        "confusion": confusion.tolist(),
        "n": int(len(labels)),
    }


def classification_report(metrics: dict, classes: list[str]) -> str:
    """A text table like sklearn's classification_report, plus the confusion matrix."""
    lines = [f"{'class':>12} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}"]
    for c in classes:
        m = metrics["per_class"][c]
        lines.append(f"{c:>12} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} {m['support']:7d}")
    topk = next(k for k in metrics if k.startswith("top") and k != "top1")
    lines.append(f"{'accuracy':>12} {metrics['top1']:9.4f}   {topk} {metrics[topk]:.4f}   macro-F1 "
                 f"{metrics['macro_f1']:.4f}   loss {metrics['loss']:.4f}   ECE {metrics['ece']:.4f}   n={metrics['n']}")
    width = max(len(c) for c in classes) + 2
    lines.append("confusion (rows = true, columns = predicted):")
    lines.append(" " * width + "".join(f"{c[:9]:>10}" for c in classes))
    for c, row in zip(classes, metrics["confusion"]):
        lines.append(f"{c:>{width}}" + "".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)
