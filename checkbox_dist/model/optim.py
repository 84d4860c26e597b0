"""build_optimizer and build_scheduler: the seed's SGD (lr 0.001, momentum 0.85) by default.

Schedules are defined per optimizer step (warmup and cosine are smooth within an epoch), except
`plateau`, which watches the val loss once per epoch. The loop steps the scheduler itself after each
optimizer step: Accelerate's default would step it once per process (x world size).
"""

from __future__ import annotations

import math

import torch


def effective_lr(cfg, global_batch: int) -> float:
    """Linear scaling rule (Goyal et al.) when `optim.scale_lr`: lr * global_batch / base_batch_size."""
    return cfg.lr * global_batch / cfg.base_batch_size if cfg.scale_lr else cfg.lr


def kernel_options(device_type: str) -> dict:
    """The optimizer's update kernels: fused (one kernel per step) on CUDA; elsewhere foreach, which batches the
    per-tensor updates (161 tensors in ResNet50)."""
    return {"fused": True} if device_type == "cuda" else {"foreach": True}


def build_optimizer(cfg, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    # No weight decay on norm weights and biases (1-D tensors): decaying BN gains hurts small nets.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fast = kernel_options(next(model.parameters()).device.type)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               **fast)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(cfg.betas), **fast)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), **fast)


def lr_factor(cfg, step: int, total_steps: int, steps_per_epoch: int, base_lr: float) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "cosine":
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "step":
        return cfg.gamma ** ((step // max(1, steps_per_epoch)) // cfg.step_epochs)
    return 1.0


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, base_lr: float):
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, total_steps, steps_per_epoch, base_lr))
