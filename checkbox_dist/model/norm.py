"""model.sync_batchnorm: BatchNorm statistics over the micro-batches of every process, over torch.distributed
(gloo, NCCL). XLA has no torch.distributed group: train/backend.py refuses the setting there.

torch.nn.SyncBatchNorm refuses CPU tensors (gloo); this one is plain all-reduces: in the forward the sum of
the activations, then the sum of squared deviations from the global mean; in the backward batch norm's two
per-channel gradient sums. The element count is static (every process holds a micro-batch of the same shape),
so it stays a host number: no layer adds a host-device round trip to a step. Processes that each hold B images then normalise exactly as one process
holding all W x B would, in the forward and in the backward, and keep identical running statistics.

`convert(model)` swaps the class of every BatchNorm layer (torch's and timm's BatchNormAct2d) in place for
a subclass with this forward, so parameter and buffer names do not change: checkpoints load into a plain
model for inference. Outside training, or in a world of one process, the layer is the plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

_CLASSES: dict[type, type] = {}


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _update_running(bn: _BatchNorm, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
    """Running statistics from the global batch's; `count` is a host number, no step reads the device."""
    if not bn.track_running_stats or bn.running_mean is None:
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / bn.num_batches_tracked if bn.momentum is None else bn.momentum  # momentum=None: a tensor
        unbiased = var * (count / max(count - 1.0, 1.0))
        bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype) * factor)
        bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype) * factor)


def _sum_over_processes(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """One all-reduce (sum) of several per-channel vectors."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    return list(flat.split([t.numel() for t in tensors]))


def _acc(x: torch.Tensor) -> torch.dtype:
    """The dtype of the per-channel sums: float64 on the CPU, as torch's CPU batch norm accumulates."""
    return torch.float64 if x.device.type == "cpu" else x.dtype


class _GlobalBatchNorm(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias with mean and (biased) var over every process's batch.
    The backward is batch norm's closed form, with its two per-channel sums also summed over the processes:
    what torch's SyncBatchNorm computes, with plain all-reduces that gloo runs on the CPU."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, total):
        dims, shape, acc = [0] + list(range(2, x.ndim)), [1, -1] + [1] * (x.ndim - 2), _acc(x)
        (total_sum,) = _sum_over_processes(x.sum(dims, dtype=acc))
        mean = total_sum / total
        (var_sum,) = _sum_over_processes((x.to(acc) - mean.view(shape)).square().sum(dims))
        var = var_sum / total
        invstd = torch.rsqrt(var + eps)
        scale = invstd * weight.to(acc) if weight is not None else invstd
        shift = (bias.to(acc) if bias is not None else 0) - mean * scale
        y = x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)  # one multiply-add per element
        ctx.save_for_backward(x, mean, invstd, weight)
        ctx.has_affine, ctx.total = weight is not None, total
        return y, mean.to(x.dtype), var.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x, mean, invstd, weight = ctx.saved_tensors
        total = ctx.total
        dims, shape, acc = [0] + list(range(2, x.ndim)), [1, -1] + [1] * (x.ndim - 2), _acc(x)
        sum_dy = grad_y.sum(dims, dtype=acc)
        sum_dy_xmu = (grad_y.to(acc) * (x.to(acc) - mean.view(shape))).sum(dims)
        grad_weight = (sum_dy_xmu * invstd).to(x.dtype) if ctx.has_affine else None  # this process's share:
        grad_bias = sum_dy.to(x.dtype) if ctx.has_affine else None  # DDP reduces parameter gradients
        all_dy, all_dy_xmu = _sum_over_processes(sum_dy, sum_dy_xmu)
        gain = invstd * weight.to(acc) if ctx.has_affine else invstd
        # dx = gain * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))), means over every process
        k, mean_dy = all_dy_xmu * invstd.square() / total, all_dy / total
        offset = (mean.view(shape) * k.view(shape) - mean_dy.view(shape)) * gain.view(shape)
        grad_x = grad_y * gain.to(x.dtype).view(shape) - x * (k * gain).to(x.dtype).view(shape) + offset.to(x.dtype)
        return grad_x, grad_weight, grad_bias, None, None


def global_batch_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm of `x` with the statistics of every process's batch (at least float32 inside).
    Every process holds a micro-batch of the same shape (the training loader drops the last, short one), so
    the element count per channel over all processes is a host number: no tensor from Python, no read-back."""
    compute = torch.promote_types(x.dtype, torch.float32)  # half precision in, float32 statistics
    weight = bn.weight.to(compute) if bn.affine else None
    bias = bn.bias.to(compute) if bn.affine else None
    total = x.numel() // x.shape[1] * (dist.get_world_size() if _distributed() else 1)
    with torch.autocast(x.device.type, enabled=False):
        y, mean, var = _GlobalBatchNorm.apply(x.to(compute), weight, bias, bn.eps, total)
    _update_running(bn, mean.detach(), var.detach(), float(total))
    return y.to(x.dtype)


class _GlobalStats:
    """Mixed in before a BatchNorm class: training forward with global statistics when distributed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        y = global_batch_norm(self, x)
        if hasattr(self, "act") and hasattr(self, "drop"):  # timm's BatchNormAct2d: norm -> drop -> act
            y = self.act(self.drop(y))
        return y


def _synced(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Sync{cls.__name__}", (_GlobalStats, cls), {"__module__": __name__})
    return _CLASSES[cls]


def convert(model: torch.nn.Module) -> int:
    """Make every BatchNorm layer of `model` use global statistics; returns how many layers it changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not isinstance(module, _GlobalStats):
            module.__class__ = _synced(type(module))
            changed += 1
    return changed
