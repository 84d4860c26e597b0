"""How often the order of a step's gradient sum changes where training goes (docs/LAUNCH.md, "Tolerance, measured").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/summation_order.py [--trials 40] [--steps 12]   # ~2 min, 2 cores

One process, the AdamW recipe of tests/train/test_launch_invariance.py (test_resnet at 32 px, micro-batches of 8,
4 per step, drop-path 0.1 re-seeded per micro-batch, lr 0.002, 200 generated images). Each trial trains twice from
the same weights on the same micro-batches, once summing every step's 4 micro-batch gradients in order (what
1 process x 4 accumulation does) and once in another order drawn for that trial (what another launch shape's
all-reduce does). It prints, per summation (float32 as DDP does, float64 rounded once as train.exact_gradient_sum
does), the largest parameter difference after the last step over the trials, and in how many trials it
exceeded 1e-4: a forward decision tipped the other way, not rounding.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import timm
import torch

from checkbox_dist.data.cache import decode_all
from checkbox_dist.data.images import PreprocessSpec, normalize
from checkbox_dist.data.split import build_split
from checkbox_dist.synth.generator import generate


def load_images(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    generate(folder, 200, seed=3)
    spec = PreprocessSpec(image_size=32)
    images, labels, _ = decode_all(build_split(folder, val_fraction=0.2, seed=42).train, spec, "error", [])
    return normalize(images, spec), labels


def train(x, y, orders: list[list[int]], exact: bool) -> list[torch.Tensor]:
    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=3, drop_path_rate=0.1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.002)
    for step, order in enumerate(orders):
        grads = []
        for j in range(4):
            k = (step * 4 + j) * 8 % (len(y) - 8)
            torch.manual_seed(1000 * step + j)  # drop-path masks keyed by the micro-batch, as the loop keys them
            model.zero_grad()
            (torch.nn.functional.cross_entropy(model(x[k:k + 8]), y[k:k + 8]) / 4).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for i, p in enumerate(model.parameters()):
            if exact:
                p.grad = sum(grads[j][i].double() for j in order).float()
            else:
                p.grad = sum((grads[j][i] for j in order[1:]), grads[order[0]][i])
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        x, y = load_images(Path(tmp) / "synth")
    in_order = [[0, 1, 2, 3]] * args.steps
    for exact in (False, True):
        reference = train(x, y, in_order, exact)
        diffs = []
        for trial in range(args.trials):
            g = torch.Generator().manual_seed(trial)
            orders = [torch.randperm(4, generator=g).tolist() for _ in range(args.steps)]
            other = train(x, y, orders, exact)
            diffs.append(max((p - q).abs().max().item() for p, q in zip(reference, other)))
        print(f"{'float64, rounded once' if exact else 'float32':22s} {args.trials} trials x {args.steps} steps: "
              f"largest difference {max(diffs):.2g}, median {statistics.median(diffs):.2g}, "
              f"> 1e-4 in {sum(d > 1e-4 for d in diffs)} trials")


if __name__ == "__main__":
    main()
