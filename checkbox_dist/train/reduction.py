"""Order-independent gradient sums (`train.exact_gradient_sum`): the same weights, bit for bit, on any launch shape.

Without it, an optimizer step's gradient is the float32 sum of its A x W micro-batch gradients, added in an
order that depends on the launch shape: 1 x 4 adds them one after another as they accumulate, 4 x 1 in the
ring order of the all-reduce. The sums differ in their last bits, so do the weights after one step, and so
do the activations of every later forward. Most of the time that stays a rounding-level difference; but a
forward decision taken on a near tie (a ReLU at zero, the max of equal pixels of a flat background) can go
the other way on one shape and not on another, and AdamW then turns the changed gradient into steps of
about `lr`: the shapes end 1e-3 apart (docs/LAUNCH.md, "Tolerance"). Which step, if any, meets such a tie
depends on the last bits of every kernel, so on the CPU or GPU model and its libraries.

With `exact_gradient_sum`, each micro-batch's float32 gradient is added into one float64 buffer and the
buffers of the processes are summed by one float64 all-reduce at the end of the window; the total is
rounded to float32 once. Float64 holds the sum of a few float32 numbers exactly (53 bits against 24,
unless their exponents lie ~29 binades apart), so the result does not depend on the order, and every
launch shape steps with the same gradient. The cost: a float64 copy of the gradients per process, twice the
bytes per all-reduce, and no overlap of the all-reduce with backward (DDP's buckets are bypassed). Not on
XLA (TPUs have no float64 all-reduce): train/backend.py refuses it there with one line.
"""

from __future__ import annotations

import torch
import torch.distributed as dist



def keep_local(_state, bucket):
    """DDP communication hook that communicates nothing: ExactGradientSum does the reduction itself."""
    future = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future


class ExactGradientSum:
    """Sums the gradients of an accumulation window over every micro-batch and process in float64.

    Call `add()` after every backward pass (it moves `.grad` into the buffer and clears it) and `finish()`
    on the window's last micro-batch: it all-reduces the buffer and writes the float32 total into `.grad`."""

    def __init__(self, model: torch.nn.Module, world: int):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.world = world
        numel = sum(p.numel() for p in self.params)
        self.total = torch.zeros(numel, dtype=torch.float64, device=self.params[0].device if self.params else "cpu")

    def add(self) -> None:
        offset = 0
        for p in self.params:
            n = p.numel()
            if p.grad is not None:
                self.total[offset:offset + n] += p.grad.reshape(-1)
                p.grad = None
            offset += n

    def finish(self) -> None:
        if self.world > 1:
            dist.all_reduce(self.total)
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = self.total[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
        self.total.zero_()


def build_gradient_sum(enabled: bool, model: torch.nn.Module, world: int) -> ExactGradientSum | None:
    """The exact summation when `train.exact_gradient_sum` is on (after accelerator.prepare and
    session.sum_gradients, which gives DDP the `keep_local` hook), else None."""
    return ExactGradientSum(model, world) if enabled else None
