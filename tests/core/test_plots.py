"""The run's pictures read right: markers, whole-number epoch ticks, legend names, a visible one-epoch
plot, and a confusion matrix that says its percentages are per true class. Read from the figure's artists
and from the written PNG, not by eye."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from checkbox_dist.core import plots


def _row(epoch, best=False):
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "train_top1": 0.5 + epoch / 20,
            "val_top1": 0.4 + epoch / 20, "val_top2": 0.8, "is_best": best}


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_curves_have_markers_integer_ticks_and_readable_legends():
    fig = plots.metrics_figure([_row(1), _row(2, best=True), _row(3)], "val_top2")
    ax_loss, ax_acc = fig.axes
    assert _legend(ax_loss) == ["train loss", "val loss", "best (epoch 2)"]
    assert _legend(ax_acc) == ["train top-1", "val top-1", "val top-2", "best (epoch 2)"]
    for ax in (ax_loss, ax_acc):
        data_lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
        assert data_lines and all(line.get_marker() == "o" for line in data_lines)
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)


def test_a_one_epoch_plot_is_not_empty(tmp_path):
    fig = plots.metrics_figure([_row(1, best=True)], "val_top2")
    for ax in fig.axes:
        low, high = ax.get_xlim()
        assert low < 1 < high and high - low >= 1  # a real axis, not a zero-width one
        points = [line for line in ax.get_lines() if len(line.get_xdata()) == 1 and line.get_marker() == "o"]
        assert points  # the single epoch is drawn as a visible marker
    path = plots.save_png(fig, tmp_path / "one.png")
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # matplotlib's default blue (#1f77b4) and orange (#ff7f0e) markers are in the image
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(pixels - colour).sum(axis=2) < 30).sum() > 10, colour


def test_confusion_matrix_says_percentages_are_per_true_class(tmp_path):
    fig = plots.confusion_matrix_figure([[8, 2], [1, 3]], ["checked", "unchecked"], "epoch 1")
    ax = fig.axes[0]
    cells = [t.get_text() for t in ax.texts]
    assert cells == ["8\n80%", "2\n20%", "1\n25%", "3\n75%"]  # rows sum to 100 %
    assert "share of the true class" in ax.get_xlabel() and ax.get_ylabel() == "true"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["checked (n=10)", "unchecked (n=4)"]
    path = plots.save_png(fig, tmp_path / "cm.png")
    assert Image.open(path).size[0] > 200 and not list(tmp_path.glob(".*"))  # written whole, no temp left
