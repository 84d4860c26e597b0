"""Accumulation windows, decided by the loop's own count of micro-batches, the same on every backend.

Accelerate's `accumulate` closes a window on every A-th call or when its GradientState says the loader is at its
end (`end_of_dataloader`). That state is set by whoever iterates the loader: on XLA, MpDeviceLoader's thread,
up to ~24 batches ahead of the loop (Accelerate issue 480), so windows closed early, late or never, and drifted
into the next epoch. Here the count is the loop's: micro-batch m (0-based in its epoch) closes a window when
m + 1 is a multiple of A or the epoch's last (`micro_per_epoch`, known before the epoch starts). Windows are
counted from the epoch's start, so a run resumed mid-epoch (at a window end) keeps the same boundaries.
"""

from __future__ import annotations

import contextlib


def closes(micro: int, accum: int, micro_per_epoch: int) -> bool:
    """Whether micro-batch `micro` of an epoch of `micro_per_epoch` ends an accumulation window of `accum`."""
    return (micro + 1) % accum == 0 or micro + 1 == micro_per_epoch


def length(micro: int, accum: int, micro_per_epoch: int) -> int:
    """Micro-batches in the window of `micro`: `accum`, or fewer for a short last window (10 micro-batches with
    accumulation 4: 4, 4, 2)."""
    return min(accum, micro_per_epoch - (micro // accum) * accum)


@contextlib.contextmanager
def window(accelerator, model, sync: bool):
    """Forward and backward of one micro-batch inside its window; `sync`: it closes the window.

    Tells Accelerate the loop's decision, in place of `accelerator.accumulate`: the sync flag, which
    AcceleratedOptimizer.step/zero_grad read (set as `accumulate` sets it, which on a TPU also cuts the graph
    there), and DDP's `no_sync` on the other micro-batches, so gradients are all-reduced once per window."""
    accelerator.gradient_state._set_sync_gradients(sync)
    with contextlib.nullcontext() if sync else accelerator.no_sync(model):
        yield
