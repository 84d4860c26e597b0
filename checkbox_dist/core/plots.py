"""The seed's two pictures, readable at a glance: a confusion matrix and the training curves.

`*_figure` functions build the matplotlib figure (tests read its artists); `*_png` save it atomically.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from checkbox_dist.core.files import atomic_path  # noqa: E402


def save_png(fig, path: Path) -> Path:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def confusion_matrix_figure(confusion: list[list[int]], classes: list[str], title: str):
    """Each cell: the count and its share of the true class (the row), so the diagonal reads as recall."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.6 * n + 2.2, 1.4 * n + 1.8))
    totals = [max(1, sum(row)) for row in confusion]
    shares = [[v / t for v in row] for row, t in zip(confusion, totals)]
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{confusion[i][j]}\n{100 * shares[i][j]:.0f}%", ha="center", va="center",
                    color="white" if shares[i][j] > 0.6 else "black", fontsize=11)
    ax.set_xticks(range(n), classes, rotation=30, ha="right")
    ax.set_yticks(range(n), [f"{c} (n={sum(row)})" for c, row in zip(classes, confusion)])
    ax.set_xlabel("predicted\n(% = share of the true class: each row sums to 100%)")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def confusion_matrix_png(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    return save_png(confusion_matrix_figure(confusion, classes, title), path)


def _label(key: str) -> str:
    """metrics.jsonl keys as people say them: val_top2 -> val top-2."""
    split, _, metric = key.partition("_")
    return f"{split} {metric.replace('top', 'top-')}" if metric.startswith("top") else key.replace("_", " ")


def metrics_figure(history: list[dict], top_k_key: str = "val_top2"):
    """Loss (train, val) and accuracy (train top-1, val top-1 and top-k) per epoch, the best epoch marked.
    Every point has a marker, so a run of one epoch shows; the epoch axis has whole-number ticks."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    style = dict(marker="o", markersize=4)
    for key in ("train_loss", "val_loss"):
        ax_loss.plot(epochs, [h[key] for h in history], label=_label(key), **style)
    for key in ("train_top1", "val_top1"):
        ax_acc.plot(epochs, [h[key] for h in history], label=_label(key), **style)
    if history and all(top_k_key in h for h in history):
        ax_acc.plot(epochs, [h[top_k_key] for h in history], label=_label(top_k_key), linestyle=":", **style)
    best = [h["epoch"] for h in history if h.get("is_best")]
    for ax in (ax_loss, ax_acc):
        if best:
            ax.axvline(best[-1], color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best[-1]})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(set(epochs)) == 1:  # one point: give it room instead of a zero-width axis
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    ax_acc.set_ylim(0, 1.02)
    return fig


def metrics_plot_png(history: list[dict], path: Path, top_k_key: str = "val_top2") -> Path:
    return save_png(metrics_figure(history, top_k_key), path)
