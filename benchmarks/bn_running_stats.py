"""The numbers behind docs/LAUNCH.md "What differs: BatchNorm running buffers": how far apart the BatchNorm running
statistics (raw model and EMA) and the validation loss of the same config end on 1 x 4, 2 x 2 and 4 x 1.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bn_running_stats.py      # ~1 min on 2 cores

It runs the AdamW + EMA recipe of tests/train/test_launch_invariance.py as that test runs it (real gloo worlds of CPU
processes) and prints, against 1 x 4, the largest difference of any running mean / running var relative to the
largest value of that buffer, and each shape's val loss after epochs 1 and 2.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "train")]

import test_launch_invariance as inv  # noqa: E402
from reliability_harness import read_metrics  # noqa: E402

STATS = ("running_mean", "running_var")


def relative(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).abs().max() / a[k].abs().max()).item() for k in a if k.endswith(STATS))


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bn_stats_"))
    runs = {w: inv.train(w, tmp / f"w{w}", tmp / "cache", *inv.RECIPES["adamw-fp32-ema"]) for w in inv.SHAPES}
    states = {w: inv.checkpoint(run) for w, run in runs.items()}
    for w in inv.SHAPES:
        losses = [round(r["val_loss"], 4) for r in read_metrics(runs[w]) if r["kind"] == "epoch"]
        line = f"{w} x {4 // w}: val loss by epoch {losses}"
        if w > 1:
            line += (f" | running statistics vs 1 x 4: raw {relative(states[1][1]['raw_model'], states[w][1]['raw_model']):.2g}"
                     f", EMA {relative(states[1][0], states[w][0]):.2g}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
