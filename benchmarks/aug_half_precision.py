"""Error of the fused augmentation computed in 16 bits, against the float64 op-by-op chain of tests/test_data.py.
The 16-bit runs cast apply()'s packed numbers, grid and constants to that dtype (a patch tried on 2026-12-02 and
dropped, see docs/PERFORMANCE.md); this script reproduces it without the patch by casting the inputs by hand.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/aug_half_precision.py
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_data import _reference_augment  # noqa: E402

from checkbox_dist import augment  # noqa: E402
from checkbox_dist.core.config import AugmentConfig  # noqa: E402
from checkbox_dist.data.images import PreprocessSpec  # noqa: E402


def geometry_only(batch, params, cfg, dtype):
    """apply()'s geometry (x - fill, affine grid, bilinear sample, + fill) in `dtype`, as the patch computed it."""
    n = len(batch)
    theta = torch.from_numpy(augment._geometry(params, cfg, batch.shape[-1] / batch.shape[-2])).to(dtype)
    x = batch.to(dtype) - 255
    grid = F.affine_grid(theta.view(n, 2, 3), list(x.shape), align_corners=False)
    return (F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 255) / 255


batch = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
mean, std = PreprocessSpec().normalization
m, s = torch.tensor(mean).view(1, -1, 1, 1).double(), torch.tensor(std).view(1, -1, 1, 1).double()
geom = AugmentConfig(degrees=5, translate=0.08, scale=[0.85, 1.15])
params = augment.sample_params(16, geom, augment.batch_generator(0, 3, 1, 0))
want = (_reference_augment(batch, params, (255, 255, 255), geom) - m) / s
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    got = (geometry_only(batch, params, geom, dtype).double() - m) / s
    print(f"geometry in {dtype}: mean abs error {float((got - want).abs().mean()):.4f}")
full = augment.apply(batch, params, (255, 255, 255), geom, mean, std)
print(f"float32 result rounded to bfloat16 (what autocast does): {float((full.bfloat16().double() - want).abs().mean()):.4f}")
