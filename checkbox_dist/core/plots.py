"""The seed's two pictures, readable at a glance: a confusion matrix per epoch and the training curves."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def confusion_matrix_png(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    """Counts and row percentages (recall) in each cell; the diagonal is what we want dark."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.6 * n + 2.2, 1.4 * n + 1.6))
    totals = [max(1, sum(row)) for row in confusion]
    shares = [[v / t for v in row] for row, t in zip(confusion, totals)]
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{confusion[i][j]}\n{100 * shares[i][j]:.0f}%", ha="center", va="center",
                    color="white" if shares[i][j] > 0.6 else "black", fontsize=11)
    ax.set_xticks(range(n), classes, rotation=30, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def metrics_plot_png(history: list[dict], path: Path, top_k_key: str = "top2") -> Path:
    """Loss (train, val) and accuracy (train top-1, val top-1 and top-k) per epoch, best epoch marked."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="val loss")
    ax_acc.plot(epochs, [h["train_top1"] for h in history], label="train top-1")
    ax_acc.plot(epochs, [h["val_top1"] for h in history], label="val top-1")
    if all(top_k_key in h for h in history):
        ax_acc.plot(epochs, [h[top_k_key] for h in history], label=f"val {top_k_key}", linestyle=":")
    best = [h["epoch"] for h in history if h.get("is_best")]
    for ax in (ax_loss, ax_acc):
        if best:
            ax.axvline(best[-1], color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best[-1]})")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    ax_acc.set_ylim(0, 1.02)
    return _save(fig, path)
