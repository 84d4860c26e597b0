"""What can end a run early, checked at agreed points so every process stops at the same step.

- Stop requests: SIGUSR1/SIGTERM (Slurm preemption) or a file RUN/STOP. The run saves `last` and raises
  core.errors.Preempted (exit 75; slurm/train.sh requeues on it).
- Non-finite losses: with train.nan_policy=stop, a NaN/inf loss ends the run before the weights it
  reached are saved; with `skip`, the optimizer step of that accumulation window is skipped.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from checkbox_dist.core.errors import UserError

_requests: list[str] = []


def _on_signal(signum, _frame) -> None:
    _requests.append(signal.Signals(signum).name)


def install_stop_signals() -> None:
    """SIGUSR1/SIGTERM become a stop request. Under torch_xla's launcher (xmp.spawn) training runs in a
    per-device thread, where Python cannot install handlers: there, RUN/STOP is the way to stop cleanly."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, _on_signal)


def stop_reason() -> str:
    return _requests[0] if _requests else "stop request"


def stop_requested(accelerator, run_dir: Path) -> bool:
    """One tiny all-reduce: every process must agree to stop at the same step."""
    local = bool(_requests) or (run_dir / "STOP").exists()
    flag = accelerator.reduce(torch.tensor([float(local)], device=accelerator.device), reduction="sum")
    return bool(flag.item() > 0)


def check_finite(accelerator, nan_policy: str, first_bad: torch.Tensor, epoch: int, ckpt_dir: Path) -> None:
    """nan_policy=stop: before anything is logged or saved, every process agrees the loss stayed finite.
    `first_bad` holds the first optimizer step with a non-finite loss on this process (0 = none)."""
    if nan_policy != "stop":
        return
    bad = [step for step in accelerator.gather(first_bad.reshape(1)).tolist() if step]
    if bad:
        raise UserError(f"non-finite loss (NaN/inf) at optimizer step {min(bad)} (epoch {epoch}); stopped "
                        f"before saving it: the last good checkpoint is kept in {ckpt_dir} (try a lower "
                        f"optim.lr, or train.nan_policy=skip)")


def all_finite(accelerator, loss: torch.Tensor) -> bool:
    """nan_policy=skip: a host sync and a tiny all-reduce per batch; False if any process's loss is not finite."""
    return not accelerator.reduce((~torch.isfinite(loss.detach())).float().reshape(1), reduction="sum").item()
