"""What can end a run early, checked at agreed points so every process stops at the same step.

- Stop requests: SIGUSR1/SIGTERM (Slurm preemption) or a file RUN/STOP. The run saves `last` and raises
  core.errors.Preempted (exit 75; slurm/train.sh requeues on it). Ctrl-C (SIGINT) does the same and raises
  Interrupted (exit 130); a second Ctrl-C stops at once, without saving.
- Non-finite losses: with train.nan_policy=stop, a NaN/inf loss ends the run before the weights it
  reached are saved; with `skip`, the optimizer step of that accumulation window is skipped.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

import torch

from checkbox_dist.core.errors import UserError

_requests: list[str] = []


def _on_signal(signum, _frame) -> None:
    _requests.append(signal.Signals(signum).name)


def _on_interrupt(signum, frame) -> None:
    if "SIGINT" in _requests:  # the second Ctrl-C: the user does not want to wait for the save
        raise KeyboardInterrupt
    _on_signal(signum, frame)
    print("\ninterrupted: saving `last` at the next log interval (Ctrl-C again to stop at once)", flush=True)


@contextlib.contextmanager
def stop_signals():
    """While the block runs, SIGUSR1/SIGTERM/SIGINT are stop requests; the previous handlers come back after.
    Under torch_xla's launcher (xmp.spawn) training runs in a per-device thread, where Python cannot install
    handlers: there, RUN/STOP is the way to stop cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requests.clear()
    handlers = {signal.SIGUSR1: _on_signal, signal.SIGTERM: _on_signal, signal.SIGINT: _on_interrupt}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_reason() -> str:
    return _requests[0] if _requests else "stop request"


def interrupted() -> bool:
    """The stop request came from Ctrl-C (exit 130) rather than from a scheduler or a STOP file (exit 75)."""
    return stop_reason() == "SIGINT"


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
