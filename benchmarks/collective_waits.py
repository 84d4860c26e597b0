"""How long a process of a real torchrun world waits on its peers at most: what `train.collective_timeout_s` must
stay above so that only a hung peer trips it (tests/train/test_reliability_dist.py; docs/RELIABILITY.md).

    ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 \
        benchmarks/collective_waits.py train.py --config configs/quickstart.yaml ...

A torchrun worker script: runs the script after it (train.py) with every torch.distributed call it can see
timed -- process-group set-up, barriers, gathers, broadcasts -- and the two places DDP waits in C++ (the gradient
all-reduce inside backward, the buffer broadcast in forward; these include their compute, so they are upper
bounds). At exit each rank prints its longest single wait and where it was.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

longest = [0.0, ""]


def timed(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            took = time.perf_counter() - start
            if took > longest[0]:
                longest[:] = [took, label]
    setattr(owner, name, wrapper)


for function in ("init_process_group", "barrier", "all_reduce", "all_gather", "all_gather_into_tensor",
                 "all_gather_object", "broadcast", "broadcast_object_list", "gather", "gather_object", "reduce"):
    if hasattr(dist, function):
        timed(dist, function, function)
timed(torch.Tensor, "backward", "backward (DDP's gradient all-reduce)")
timed(DistributedDataParallel, "forward", "DDP forward (buffer broadcast)")
atexit.register(lambda: print(f"rank {os.environ.get('RANK')}: longest wait {longest[0]:.2f} s in {longest[1]}",
                              file=sys.stderr, flush=True))

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
