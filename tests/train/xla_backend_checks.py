"""Checks of train/backend.py on a real torch_xla device (PJRT_DEVICE=CPU, one device), run by
tests/train/test_xla.py in the torch_xla environment; prints one JSON object.

    PJRT_DEVICE=CPU PYTHONPATH=. .venv-xla/bin/python tests/train/xla_backend_checks.py

- bf16: the Accelerator built as on a TPU (Accelerate's TPU test answers yes; a TPU is the only place where
  Accelerate sets XLA_USE_BF16 and turns its autocast off): the environment afterwards, float32 tensors
  still float32 on the device, and the convolutions of a training forward in bf16 (from the HLO).
- dropout masks per micro-batch: `backend.seed_step` keys them by the seed on the device's own generator, while
  another thread (what a second thread replica does to process-wide state) reseeds torch and draws from it;
  the control: torch.manual_seed, what the loop called before, does not reach the XLA generator.
"""

from __future__ import annotations

import json
import os
import re
import threading
from unittest import mock

import torch
import torch_xla
import torch_xla.core.xla_model as xm  # noqa: F401  (seed_step's import, loaded before the threads start)

import accelerate.state
import accelerate.utils.imports
from checkbox_dist.core.config_loader import load_config
from checkbox_dist.model.build import build_model
from checkbox_dist.train import backend
from checkbox_dist.train.session import build_accelerator


def _as_if_tpu(real):
    def answer(check_is_tpu=False, check_is_gpu=False):
        return True if check_is_tpu else real(check_is_gpu=check_is_gpu)
    return answer


def _convolutions(hlo: str) -> list[str]:
    return re.findall(r"= (\w+)\[[^\]]*\]\{?[^ ]* convolution\(", hlo)


def bf16_checks() -> dict:
    cfg = load_config(None, ["model.name=test_resnet", "train.mixed_precision=bf16", "tracking.backends=[]"])
    real = accelerate.utils.imports.is_torch_xla_available
    with mock.patch.object(accelerate.state, "is_torch_xla_available", _as_if_tpu(real)), \
            mock.patch.object(accelerate.utils.imports, "is_torch_xla_available", _as_if_tpu(real)):
        accelerator = build_accelerator(cfg)
        took_tpu_branch = accelerate.utils.imports.is_bf16_available(True) is False
    device = accelerator.device
    probe = torch.ones(2, 2).to(device) * 3  # the first tensor on the device: torch_xla reads XLA_USE_BF16 now
    model = build_model(cfg.model, 3).to(device)
    x, y = torch.rand(4, 3, 32, 32).to(device), torch.tensor([0, 1, 2, 0]).to(device)
    with accelerator.autocast():
        loss = torch.nn.functional.cross_entropy(model(x), y)
    hlo = torch_xla._XLAC._get_xla_tensors_hlo([loss])
    return {"took_tpu_branch": took_tpu_branch, "distributed_type": accelerator.distributed_type.value,
            "env": {name: os.environ.get(name) for name in backend.XLA_DOWNCAST_VARS},
            "probe_ir": torch_xla._XLAC._get_xla_tensors_text([probe]),
            "weight_ir": torch_xla._XLAC._get_xla_tensors_text([next(model.parameters())]),
            "convolutions": _convolutions(hlo)}


def _mask(device) -> list[int]:
    x = torch.ones(64, device=device)
    return (torch.nn.functional.dropout(x, 0.5, training=True).cpu() > 0).int().tolist()


def rng_checks() -> dict:
    device = torch_xla.device()
    seeds = [11, 12, 13, 11]

    def masks(seed_fn) -> list[list[int]]:
        out = []
        for seed in seeds:  # 11 again at the end: the same mask after other draws
            seed_fn(seed)
            out.append(_mask(device))
        return out

    reference = masks(lambda seed: backend.seed_step(seed, device))
    stop = threading.Event()

    def other_replica():  # what another thread replica does to process-wide state: reseed torch, draw on the CPU
        n = 0
        while not stop.is_set():
            torch.manual_seed(n)
            torch.nn.functional.dropout(torch.ones(256), 0.5, training=True)
            n += 1

    thread = threading.Thread(target=other_replica)
    thread.start()
    try:
        concurrent = [masks(lambda seed: backend.seed_step(seed, device)) for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    control = masks(torch.manual_seed)  # the loop's call before issue 38
    return {"reference": reference, "concurrent": concurrent, "control": control}


if __name__ == "__main__":
    print(json.dumps({"bf16": bf16_checks(), "rng": rng_checks()}))
