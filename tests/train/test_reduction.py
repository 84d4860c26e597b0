"""train/reduction.py: gradient sums that do not depend on the order of the micro-batches (train.exact_gradient_sum).
The launch shapes end bit-identical through it: tests/train/test_launch_invariance.py."""

from __future__ import annotations

import pytest
import torch

from checkbox_dist.core.errors import UserError
from checkbox_dist.train.reduction import ExactGradientSum, build_gradient_sum


def micro_batch_gradients(n: int = 4, size: int = 10_000) -> list[torch.Tensor]:
    """Gradients of mixed sizes and signs, as micro-batches give: float32 sums of them depend on the order."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(size, generator=g) * 10.0 ** torch.randint(-4, 2, (size,), generator=g) for _ in range(n)]


def exact_sum(grads: list[torch.Tensor]) -> torch.Tensor:
    layer = torch.nn.Linear(len(grads[0]), 1, bias=False)
    summer = ExactGradientSum(layer, world=1)
    for grad in grads:
        layer.weight.grad = grad.reshape(1, -1).clone()
        summer.add()
        assert layer.weight.grad is None  # moved into the float64 buffer
    summer.finish()
    return layer.weight.grad.reshape(-1)


def test_float32_sums_depend_on_the_order_and_exact_sums_do_not():
    grads = micro_batch_gradients()
    in_order = ((grads[0] + grads[1]) + grads[2]) + grads[3]  # 1 process x 4 accumulation
    paired = (grads[0] + grads[2]) + (grads[1] + grads[3])  # 2 x 2: each process's pair, then the all-reduce
    assert not torch.equal(in_order, paired)  # the premise: float32 order matters for these numbers
    forward, backward = exact_sum(grads), exact_sum(grads[::-1])
    assert forward.dtype == torch.float32
    assert torch.equal(forward, backward)
    assert torch.equal(forward, sum(g.double() for g in grads).float())
    assert (forward - in_order).abs().max() < 1e-5  # the same sum, rounded once


def test_the_buffer_starts_empty_for_the_next_window():
    grads = micro_batch_gradients(2)
    layer = torch.nn.Linear(len(grads[0]), 1, bias=False)
    summer = ExactGradientSum(layer, world=1)
    for window in (grads, grads[::-1]):
        for grad in window:
            layer.weight.grad = grad.reshape(1, -1).clone()
            summer.add()
        summer.finish()
        assert torch.equal(layer.weight.grad.reshape(-1), (grads[0].double() + grads[1].double()).float())


def test_off_builds_nothing_and_xla_is_refused_with_one_line():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from checkbox_dist.core.config import Config
    from checkbox_dist.train.backend import check_supported

    layer = torch.nn.Linear(2, 1)
    assert build_gradient_sum(False, layer, 1) is None
    assert isinstance(build_gradient_sum(True, layer, 1), ExactGradientSum)
    cfg = Config()
    cfg.train.exact_gradient_sum = True
    check_supported(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU), cfg)  # fine off XLA
    with pytest.raises(UserError, match=r"^train.exact_gradient_sum is not supported on XLA"):
        check_supported(SimpleNamespace(distributed_type=DistributedType.XLA), cfg)
