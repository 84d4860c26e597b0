"""What Accelerate leaves wrong per backend, handled once here: precision, SyncBN on XLA, and the random
generators of replicas that are threads.

Precision
    Who decides: an explicit launcher choice (`accelerate launch --mixed_precision bf16`, or `mixed_precision:` in
    its config file, both seen as ACCELERATE_MIXED_PRECISION) wins over train.mixed_precision, as it does for any
    Accelerate script; the launcher's default `no` leaves the config's choice. The run says so in a note.
    fp16 on a CPU: Accelerate runs plain fp32; here it autocasts to float16 with a CPU GradScaler, the path a
    GPU takes (loss scaling, skipped overflow steps, scaler state).
    bf16 on XLA: on a TPU, Accelerate exports XLA_USE_BF16=1 (torch_xla's deprecated whole-program downcast:
    weights, gradients and optimizer moments all stored in bf16) and its autocast() does nothing; on a CPU XLA
    device it autocasts. Here every XLA device autocasts (torch.autocast("xla", dtype=torch.bfloat16),
    torch_xla's AMP: float32 weights and optimizer state) and XLA_USE_BF16 / XLA_DOWNCAST_BF16 are never left
    set: torch_xla reads them once, at the first tensor a process puts on a device, which comes after the
    Accelerator is built.

The host's first process
    Off a TPU, Accelerate numbers an XLA process within its host from LOCAL_RANK and leaves it at -1 when that is
    unset (`PartialState`), so no process of a CPU XLA run would be its host's main process, and nobody would
    build the host's data cache. The host's processes are numbered by torch_xla's local ordinal instead.

model.sync_batchnorm, train.exact_gradient_sum
    model/norm.py all-reduces over torch.distributed; XLA runs without a torch.distributed group, so the
    setting would silently do nothing there: refused with one line. The exact gradient sum (train/reduction.py)
    all-reduces float64, which TPUs do not offer: refused the same way.

Random generators of replicas
    TPU v2/v3 (and torch_xla on several CPU devices) run one thread per device in one process: the replicas
    share torch's CPU generator. Seeding it and drawing the initial weights is therefore one locked step
    (`build_seeded`), else one replica's seed lands between another's seed and its draws and the replicas
    start from different weights. Per micro-batch, dropout and drop-path draw from the generator of the
    device: `seed_step` seeds the replica's own, keyed by the micro-batch's global index, on every backend.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, set_seed

from checkbox_dist.core.config import Config
from checkbox_dist.core.errors import UserError

T = TypeVar("T")

# Set by Accelerate (AcceleratorState with bf16 on a TPU; `accelerate launch --mixed_precision bf16` on a TPU).
XLA_DOWNCAST_VARS = ("XLA_USE_BF16", "XLA_DOWNCAST_BF16")

_BUILD_LOCK = threading.Lock()


def clear_xla_downcast() -> None:
    """Remove torch_xla's whole-program bf16 switches from this process's environment."""
    for name in XLA_DOWNCAST_VARS:
        os.environ.pop(name, None)


def launcher_precision(cfg: Config) -> str | None:
    """Before the Accelerator is built: take an explicit launcher precision into `cfg` (so the saved config says
    what ran); returns the note the run prints, or None."""
    asked = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if asked not in ("fp16", "bf16") or asked == cfg.train.mixed_precision:
        return None
    note = (f"note: precision {asked} from the launcher (accelerate launch --mixed_precision or its config file), "
            f"not the config's train.mixed_precision={cfg.train.mixed_precision}")
    cfg.train.mixed_precision = asked
    return note


def fix_precision(accelerator: Accelerator, cfg: Config) -> None:
    """Called right after the Accelerator is built, before any tensor is on the device (see the module doc)."""
    precision = cfg.train.mixed_precision
    if accelerator.distributed_type == DistributedType.XLA:
        clear_xla_downcast()
        if precision == "bf16":
            accelerator.native_amp = True  # accelerator.autocast() = torch.autocast("xla", dtype=torch.bfloat16)
    elif precision == "fp16" and accelerator.device.type == "cpu" and accelerator.scaler is None:
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu")


def fix_local_index(accelerator: Accelerator) -> None:
    """Called right after the Accelerator is built: on XLA, a host-local process index Accelerate left unset."""
    if accelerator.distributed_type == DistributedType.XLA and accelerator.local_process_index < 0:
        import torch_xla.core.xla_model as xm

        index = xm.get_local_ordinal()
        PartialState().local_process_index = index  # shared states: every Accelerator after this one sees it
        accelerator.state.local_process_index = index  # AcceleratorState copied PartialState's when it was built


def check_supported(accelerator: Accelerator, cfg: Config) -> None:
    """Settings a backend cannot honour: one UserError, before anything is built."""
    if accelerator.distributed_type != DistributedType.XLA:
        return
    if cfg.model.sync_batchnorm:
        raise UserError("model.sync_batchnorm is not supported on XLA (TPU): its statistics are all-reduced "
                        "over torch.distributed, which XLA runs without; set model.sync_batchnorm=false")
    if cfg.train.exact_gradient_sum:
        raise UserError("train.exact_gradient_sum is not supported on XLA (TPU): no float64 all-reduce there; "
                        "set train.exact_gradient_sum=false")


def build_seeded(seed: int, build: Callable[[], T]) -> T:
    """`build()` right after seeding every generator with `seed`, as one step no other thread of this process
    can enter: the initial weights are the same in every replica, threads included."""
    with _BUILD_LOCK:
        set_seed(seed)
        return build()


def seed_step(seed: int, device: torch.device) -> None:
    """Seed the generator that this micro-batch's dropout and drop-path masks come from. On XLA that is the
    device's own (torch_xla keeps one per device, and torch.manual_seed does not reach it), so replicas that
    are threads do not share it; on a CPU or GPU the replicas are processes, each with its own default
    generator."""
    if device.type == "xla":
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(seed, str(device))
    else:
        torch.manual_seed(seed)
