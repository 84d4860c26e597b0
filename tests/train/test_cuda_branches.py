"""The CUDA-only branches, decided on CPU with the device type given (no GPU here): fused optimizer kernels, cuDNN
autotuning and TF32, and the CUDA RNG state saved with a checkpoint and put back on resume. On a lent GPU,
benchmarks/cuda_branches.py (run by benchmarks/gpu.sh) runs them for real."""

from __future__ import annotations

import pytest
import torch

from checkbox_dist.core.config import OptimConfig
from checkbox_dist.model import checkpoint
from checkbox_dist.model.optim import build_optimizer, kernel_options
from checkbox_dist.train import checkpointing
from checkbox_dist.train.session import configure_backends


def test_fused_optimizer_kernels_on_cuda_only():
    assert kernel_options("cuda") == {"fused": True}
    for device_type in ("cpu", "xla", "mps"):
        assert kernel_options(device_type) == {"foreach": True}
    model = torch.nn.Linear(3, 2)
    for name in ("sgd", "adam", "adamw"):  # what the CPU path builds: foreach, not fused
        optimizer = build_optimizer(OptimConfig(name=name), model, 0.1)
        assert optimizer.defaults["foreach"] is True and not optimizer.defaults.get("fused"), name


@pytest.fixture
def backend_flags():
    names = [(torch.backends.cudnn, "benchmark"), (torch.backends.cuda.matmul, "allow_tf32"),
             (torch.backends.cudnn, "allow_tf32")]
    saved = [getattr(obj, attr) for obj, attr in names]
    torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield lambda: [getattr(obj, attr) for obj, attr in names]
    for (obj, attr), value in zip(names, saved):
        setattr(obj, attr, value)


def test_cudnn_autotuner_and_tf32_are_set_on_cuda_only(backend_flags):
    for device_type in ("cpu", "xla", "mps"):
        configure_backends(device_type)
        assert backend_flags() == [False, False, False], device_type
    configure_backends("cuda")
    assert backend_flags() == [True, True, True]


def test_the_cuda_rng_state_is_saved_and_restored_when_cuda_is_there(monkeypatch):
    fake_state = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a, **k: fake_state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, *a, **k: restored.append(state))
    state = checkpointing.rng_state()
    assert torch.equal(state["cuda"], fake_state) and torch.equal(state["cpu"], torch.get_rng_state())
    expected = torch.rand(3)  # the CPU stream from the saved point on
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected)  # the CPU state went back
    assert len(restored) == 1 and torch.equal(restored[0], fake_state)


def test_a_gpu_checkpoint_resumes_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    called = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *a, **k: called.append(1))
    assert "cuda" not in checkpointing.rng_state()
    checkpoint.set_rng_state({"cpu": torch.get_rng_state(), "cuda": torch.zeros(16, dtype=torch.uint8)})
    assert not called
