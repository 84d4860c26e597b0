"""model/norm.py's global batch norm, in one process: equal to torch's batch norm, and no host sync.

    .venv/bin/pytest tests/model/test_norm.py -q

The two-process behaviour (statistics over every process's images) is tests/train/test_sync_batchnorm.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from checkbox_dist.model import norm


@pytest.fixture
def world_of_one(tmp_path: Path):
    """A one-process gloo group: what global_batch_norm's all-reduces run over (a sum over one process)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_global_batch_norm_reads_nothing_back_from_the_device(world_of_one, monkeypatch, momentum):
    # The element count per channel is static: made into a tensor and read back with float(), it cost two
    # host-device round trips per BatchNorm layer per forward (a stall per layer on a GPU or TPU).
    calls: list[str] = []

    def counting(name, original):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)
        return wrapped

    bn = torch.nn.BatchNorm2d(5, momentum=momentum)
    plain = torch.nn.BatchNorm2d(5, momentum=momentum)
    x = torch.randn(4, 5, 6, 7, requires_grad=True)
    for name in ("item", "__float__", "__int__", "__bool__", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tensor", counting("torch.tensor", torch.tensor))
    for _ in range(2):
        y = norm.global_batch_norm(bn, x)
        y.square().sum().backward()
    monkeypatch.undo()
    assert calls == []
    grad, x.grad = x.grad.clone(), None
    for _ in range(2):  # torch's own batch norm, same two steps
        want = plain(x)
        want.square().sum().backward()
    assert torch.allclose(y, want, atol=1e-5)
    assert torch.allclose(grad, x.grad, atol=1e-4)
    assert torch.allclose(bn.running_mean, plain.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, plain.running_var, atol=1e-5)
    assert int(bn.num_batches_tracked) == 2
