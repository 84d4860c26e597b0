"""Batched train-time augmentation on whatever device the batch is on (CPU or accelerator).

Images arrive as uint8 (N, C, H, W) batches, already composited and resized once (images.py). The
augmentation runs here, on the batch, so the CPU DataLoader path and the device-resident path share
one implementation and give the same result for the same batch.

Randomness is a function of (seed, epoch, micro-batch) only: `sample_params` draws from its own
`torch.Generator` on the CPU, so a run resumed mid-epoch, or run with a different number of DataLoader
workers, augments every batch exactly as the uninterrupted run did. The training loop keys it by the
micro-batch's index in the epoch's one global order (train/loop.py), not by the process that holds it, so
every launch shape draws the same parameters for the same images.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from checkbox_dist.core.config import AugmentConfig
from checkbox_dist.data.images import device_constant, standardize

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale uses.
LUMA = (0.299, 0.587, 0.114)


def is_identity(cfg: AugmentConfig) -> bool:
    return (cfg.hflip == 0 and cfg.vflip == 0 and cfg.degrees == 0 and cfg.translate == 0
            and cfg.scale == [1.0, 1.0] and cfg.brightness == 0 and cfg.contrast == 0
            and cfg.saturation == 0 and cfg.hue == 0 and cfg.invert == 0 and cfg.grayscale == 0)


def batch_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    # Large odd multipliers keep (epoch, step, rank) triples from colliding for any realistic run.
    return (seed * 1_000_003 + epoch * 7_919 * 65_536 + step * 65_537 + rank * 257) % (2**63)


def batch_generator(seed: int, epoch: int, step: int, rank: int = 0) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(batch_seed(seed, epoch, step, rank))
    return gen


def sample_params(n: int, cfg: AugmentConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-sample random parameters, always drawn in the same order so runs are reproducible."""
    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=gen)

    def bernoulli(p: float) -> torch.Tensor:
        return torch.rand(n, generator=gen) < p

    return {
        "hflip": bernoulli(cfg.hflip),
        "vflip": bernoulli(cfg.vflip),
        "angle": uniform(-cfg.degrees, cfg.degrees) * (math.pi / 180.0),
        "tx": uniform(-cfg.translate, cfg.translate) * 2.0,  # grid units span [-1, 1] = 2
        "ty": uniform(-cfg.translate, cfg.translate) * 2.0,
        "scale": uniform(cfg.scale[0], cfg.scale[1]),
        "brightness": uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
        "contrast": uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
        "saturation": uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
        "hue": uniform(-cfg.hue, cfg.hue),
        "invert": bernoulli(cfg.invert),
        "grayscale": bernoulli(cfg.grayscale),
    }


# RGB -> YIQ (NTSC); hue is a rotation of the I/Q plane. Inverted once here, in float64.
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)
_GREY = np.outer(np.ones(3), LUMA)  # G y = the grey level of y, on every channel


def _colour_maps(params: dict[str, torch.Tensor], cfg: AugmentConfig) -> tuple[np.ndarray, ...]:
    """The colour jitter as one affine map per sample, on the CPU in float64 (N x 3 x 3 numbers).

    Every colour op is affine in RGB, so the chain brightness -> contrast -> saturation -> hue -> invert ->
    grayscale composes to y = A x + a + K mean(x), where mean(x) is the image's per-channel mean (contrast
    pulls towards the grey level of the image as it is at that point of the chain). One clamp at the end
    replaces torchvision's clamp after each op: ~20 full-image passes become one (issue 5).
    NumPy, not torch: ~40 ops on 256 x 3 x 3 arrays cost ~1 us each there, ~10 us each as torch ops (1.6 ms
    per step measured), which a launch-bound GPU step (64-128 px) waits for.
    """
    n = len(params["angle"])
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    A, K, a = np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 3, 3)), np.zeros((n, 3))

    def scalar(name):
        return params[name].numpy().astype(np.float64).reshape(n, 1, 1)

    def then(P, q=0.0):  # y <- P y + q, composed after the chain so far
        nonlocal A, K, a
        A, K, a = P @ A, P @ K, (P @ a[..., None])[..., 0] + q

    if cfg.brightness > 0:
        then(scalar("brightness") * eye)
    if cfg.contrast > 0:  # y <- c y + (1 - c) G E[y], with E[y] = (A + K) mean(x) + a
        c = scalar("contrast")
        K = c * K + (1 - c) * (_GREY @ (A + K))
        a = c[..., 0] * a + (1 - c[..., 0]) * (a @ _GREY.T)
        A = c * A
    if cfg.saturation > 0:
        s = scalar("saturation")
        then(s * eye + (1 - s) * _GREY)
    if cfg.hue > 0:  # a rotation about the grey axis in YIQ space (shift in turns, +-0.5)
        theta = params["hue"].numpy().astype(np.float64) * (2 * math.pi)
        rot = np.zeros((n, 3, 3))
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = np.cos(theta), -np.sin(theta), np.sin(theta), np.cos(theta)
        then(_FROM_YIQ @ rot @ _TO_YIQ)
    if cfg.invert > 0:
        flip = params["invert"].numpy().reshape(n, 1, 1)
        then(np.where(flip, -eye, eye), flip[:, :, 0].astype(np.float64))
    if cfg.grayscale > 0:
        then(np.where(params["grayscale"].numpy().reshape(n, 1, 1), _GREY, eye))
    return A, K, a


def _geometry(params: dict[str, torch.Tensor], cfg: AugmentConfig, aspect: float = 1.0) -> np.ndarray | None:
    """(N, 2, 3) inverse affine maps (output pixel -> input pixel) with the flips folded in, or None.
    `aspect` = width / height of the image: grid units are half the width across and half the height down."""
    if not (cfg.hflip > 0 or cfg.vflip > 0 or cfg.degrees > 0 or cfg.translate > 0 or cfg.scale != [1.0, 1.0]):
        return None
    get = lambda name: params[name].numpy().astype(np.float64)  # noqa: E731
    angle, inv = get("angle"), 1.0 / get("scale")  # zoom s shows the image s times larger
    cos, sin = np.cos(angle), np.sin(angle)
    # A rotation in pixels is D^-1 R D in grid units, D = diag(width, height): without it a 64x160 input
    # would shear instead of turning (x and y grid units differ 2.5x there).
    theta = np.stack([np.stack([cos * inv, -sin * inv / aspect, -get("tx")], 1),
                      np.stack([sin * inv * aspect, cos * inv, -get("ty")], 1)], 1)
    # A flip of the input before the affine = negating that input coordinate (exact with align_corners=False).
    flips = np.stack([1 - 2 * get("hflip"), 1 - 2 * get("vflip")], 1)
    return theta * flips[:, :, None]


def apply(batch: torch.Tensor, params: dict[str, torch.Tensor], background: tuple[int, int, int],
          cfg: AugmentConfig, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
          channels_last: bool = False, compiled: bool = False) -> torch.Tensor:
    """uint8 (N, C, H, W) -> augmented float; in [0, 1], or normalised `(x - mean) / std` when given (one
    value per channel, alpha included). Padding from the affine is the background colour.

    On the device this is a few kernels whatever the config: uint8 -> float minus the background, one
    bilinear warp (`warp`, ops every backend lowers natively, XLA included) for flips + rotation + scale +
    translation, one channel mean (contrast), one batched 3x3
    matmul that applies the whole colour chain, /255 and the normalisation, and one clamp. The per-sample
    numbers are composed on the CPU and sent in one pinned, non-blocking copy: no host sync.
    `compiled` (train.compile) runs those kernels through torch.compile, which can fuse the elementwise
    ones of the warp and around the matmul; the CPU-side composition stays eager.
    """
    n, channels = batch.shape[:2]
    device = batch.device
    mean = tuple(mean) if mean is not None else (0.0,) * channels
    std = tuple(std) if std is not None else (1.0,) * channels
    if is_identity(cfg):
        x = standardize(batch.float() / 255.0, mean, std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x
    fill = np.array(tuple(background[:3]) + (0,) * (channels - 3), dtype=np.float64)
    A, K, a = _colour_maps(params, cfg)
    # Everything after the warp as z = M x1 + offset + Kd mean_rgb(x1), x1 = sampled (pixel - fill),
    # in 0..255 units; D = 1/std folds the normalisation in, and the clamp to [0, 1] becomes a clamp to
    # [(0 - mean) / std, (1 - mean) / std].
    inv_std, mean_v = 1.0 / np.array(std, dtype=np.float64), np.array(mean, dtype=np.float64)
    M = np.tile(np.diag(inv_std / 255.0), (n, 1, 1))  # alpha (and any extra channel) passes through
    M[:, :3, :3] = inv_std[:3, None] * A / 255.0
    fill01 = fill / 255.0
    offset = np.tile((fill01 - mean_v) * inv_std, (n, 1))
    offset[:, :3] = inv_std[:3] * (A @ fill01[:3] + a + K @ fill01[:3] - mean_v[:3])
    Kd = inv_std[:3, None] * K / 255.0
    theta = _geometry(params, cfg, batch.shape[-1] / batch.shape[-2])
    parts = [M.reshape(n, -1), offset, Kd.reshape(n, -1)] + ([theta.reshape(n, -1)] if theta is not None else [])
    packed = _send(torch.from_numpy(np.concatenate(parts, 1).astype(np.float32)), device)
    low = device_constant(tuple((0.0 - m) / s for m, s in zip(mean, std)), device)
    high = device_constant(tuple((1.0 - m) / s for m, s in zip(mean, std)), device)
    transform = _compiled_transform() if compiled else _transform
    return transform(batch, packed, device_constant(tuple(fill.tolist()), device), low, high,
                     theta is not None, cfg.contrast > 0, channels_last)


def _transform(batch: torch.Tensor, packed: torch.Tensor, fill: torch.Tensor, low: torch.Tensor,
               high: torch.Tensor, geometry: bool, contrast: bool, channels_last: bool) -> torch.Tensor:
    """The device half of `apply`: tensors in, tensors out, no host work, so torch.compile can trace it."""
    n, channels = batch.shape[:2]
    M, offset = packed[:, :channels**2].view(n, channels, channels), packed[:, channels**2:channels**2 + channels]
    Kd = packed[:, channels**2 + channels:channels**2 + channels + 9].view(n, 3, 3)
    x = batch - fill  # uint8 - float: the float conversion in the same pass
    if geometry:
        x = warp(x, packed[:, -6:].view(n, 2, 3))
    if contrast:  # offset is a view of this call's own copy: safe to add to in place
        offset[:, :3] += (Kd @ x[:, :3].mean(dim=(2, 3)).unsqueeze(2)).squeeze(2)
    flat = x.reshape(n, channels, -1)
    if channels_last:  # (N, HW, C) is the channels_last layout: the matmul writes it directly
        z = torch.baddbmm(offset.unsqueeze(1), flat.transpose(1, 2), M.transpose(1, 2))
        z = z.view(n, *x.shape[2:], channels).permute(0, 3, 1, 2)
    else:
        z = torch.baddbmm(offset.unsqueeze(2), M, flat).view(x.shape)
    return z.clamp_(low, high)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of float (N, C, H, W) images through (N, 2, 3) affine maps, zeros outside: the
    function of `F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), padding_mode="zeros",
    align_corners=False)`, written as index arithmetic and four `gather`s from the image with a 1 px zero
    border. torch_xla lowers every op here; grid_sample it runs on the CPU (an aten fallback: a device-host
    round trip per batch)."""
    n, c, h, w = x.shape
    # Output pixel centres in grid units ([-1, 1] across the image), mapped by theta, then to input pixels,
    # clamped to the border: a point beyond it has only zeros around it.
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
    ys = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1).unsqueeze(1)
    t = theta.to(x.dtype).reshape(n, 6, 1, 1)
    ix = (((t[:, 0] * xs + t[:, 1] * ys + t[:, 2] + 1) * w - 1) / 2).clamp(-1, w)
    iy = (((t[:, 3] * xs + t[:, 4] * ys + t[:, 5] + 1) * h - 1) / 2).clamp(-1, h)
    x0, y0 = ix.floor().clamp(max=w - 1), iy.floor().clamp(max=h - 1)  # top-left neighbour, in [-1, size - 1]
    fx, fy = (ix - x0).reshape(n, 1, h * w), (iy - y0).reshape(n, 1, h * w)
    row = w + 2
    flat = F.pad(x, (1, 1, 1, 1)).reshape(n, c, (h + 2) * row)
    corner = ((y0 + 1) * row + (x0 + 1)).long().reshape(n, 1, h * w)

    def pick(offset: int) -> torch.Tensor:
        return flat.gather(2, (corner + offset).expand(n, c, h * w))

    top, bottom = torch.lerp(pick(0), pick(1), fx), torch.lerp(pick(row), pick(row + 1), fx)
    return torch.lerp(top, bottom, fy).reshape(n, c, h, w)


@functools.lru_cache(maxsize=1)
def _compiled_transform():
    # Built on first use, once per process; dynamic=False: every train step has one batch shape (drop_last),
    # so one graph per (shape, switches) and no shape-generic kernels.
    return torch.compile(_transform, dynamic=False)


def _send(packed: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One copy, pinned and non-blocking on CUDA: twelve small pageable copies each waited for the GPU
    stream to drain (measured: ours/plain 0.73 at 64 px on an H200 before batching them)."""
    if device.type == "cuda":
        packed = packed.pin_memory()
    return packed.to(device, non_blocking=True)


def mix(x: torch.Tensor, labels: torch.Tensor, n_classes: int, mixup_alpha: float, cutmix_alpha: float,
        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix on one batch, soft targets. With both on, each batch takes one of them with
    probability 1/2 (timm's default switch_prob), so neither is diluted by the other."""
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
    perm = torch.randperm(len(labels), generator=gen).to(x.device)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    if use_cutmix:
        x, lam = _paste_box(x, perm, float(rng.beta(cutmix_alpha, cutmix_alpha)), rng)
    else:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        x = lam * x + (1 - lam) * x[perm]
    one_hot = F.one_hot(labels, n_classes).float()
    return x, lam * one_hot + (1 - lam) * one_hot[perm]


def _paste_box(x: torch.Tensor, perm: torch.Tensor, lam: float,
               rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """CutMix (Yun et al. 2019): one box of about (1 - lam) of the area, centred anywhere and clipped at the
    edges, copied from each image's partner. Returns the weight of the image's own label: the share of its
    pixels left after clipping (a box centred on a corner loses 3/4 of its nominal area off the image)."""
    h, w = x.shape[-2:]
    side = math.sqrt(1.0 - lam)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    half_h, half_w = int(h * side) // 2, int(w * side) // 2
    y0, y1 = max(cy - half_h, 0), min(cy + half_h, h)
    x0, x1 = max(cx - half_w, 0), min(cx + half_w, w)
    x[..., y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # x is this step's own augmented copy: safe in place
    return x, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
