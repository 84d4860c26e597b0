"""CPU cost of the affine warp as gathers (augment.warp, XLA-native since issue 38) against F.grid_sample, which
torch_xla runs as a CPU fallback: augment.apply on the quickstart's batch (32 x 3 x 64 x 64, its augmentation),
the two alternated 15 times, 10 batches each; prints the fastest and the median time per batch.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/aug_warp.py [THREADS]
"""

import sys
import time

import torch
import torch.nn.functional as F

from checkbox_dist.core.config import AugmentConfig
from checkbox_dist.data import augment


def grid_sample_warp(x, theta):
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
cfg = AugmentConfig(translate=0.05, scale=[0.9, 1.1], brightness=0.2, contrast=0.2, invert=0.2)  # quickstart
batch = torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8)
params = augment.sample_params(32, cfg, augment.batch_generator(0, 1, 0))
gathers = augment.warp
times: dict[str, list[float]] = {"warp (gathers)": [], "grid_sample": []}
for _ in range(15):
    for name, fn in (("warp (gathers)", gathers), ("grid_sample", grid_sample_warp)):
        augment.warp = fn
        start = time.perf_counter()
        for _ in range(10):
            augment.apply(batch, params, (255, 255, 255), cfg, (0.5,) * 3, (0.25,) * 3)
        times[name].append((time.perf_counter() - start) / 10 * 1e3)
augment.warp = gathers
for name, values in times.items():
    print(f"{name}: fastest {min(values):.2f} ms, median {sorted(values)[len(values) // 2]:.2f} ms per batch "
          f"({torch.get_num_threads()} thread)")
