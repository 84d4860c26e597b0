"""Memory figures: what a device has free (for data/build.py's device-cache decision) and what a process uses
(for the benchmarks and tests).

    free_bytes(device)      -> (bytes or None, "free CUDA memory" | "available host memory" | ...)
    host_available_bytes()  MemAvailable of /proc/meminfo (Linux), else None
    peak_rss_bytes()        this process's peak resident set (getrusage)
    pss_bytes()             this process's proportional set (Pss of /proc/self/smaps_rollup): a page shared by
                            N processes counts 1/N in each
"""

from __future__ import annotations

import sys
from pathlib import Path

# An XLA device that does not report its memory (torch_xla's CPU device, an older runtime) is assumed to have this
# much free: below every TPU's HBM (v2: 8 GiB per core), so the decision errs towards streaming.
XLA_ASSUMED_FREE_BYTES = 4 * 2**30


def host_available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's estimate of memory available to new work without swapping (MemAvailable), in bytes."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def xla_free_bytes(info: dict) -> int | None:
    """Free bytes from torch_xla's `xm.get_memory_info(device)`: {"bytes_limit", "bytes_used"} (torch_xla 2.x)
    or {"kb_free", "kb_total"} (1.x)."""
    if "bytes_limit" in info and "bytes_used" in info and info["bytes_limit"] > 0:
        return int(info["bytes_limit"]) - int(info["bytes_used"])
    if "kb_free" in info and info["kb_free"] > 0:
        return int(info["kb_free"]) * 1024
    return None


def free_bytes(device) -> tuple[int | None, str]:
    """(bytes free on `device`, what the figure is) for a torch.device of type cuda, xla or cpu (host RAM)."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0], "free CUDA memory"
    if kind == "xla":
        try:
            import torch_xla.core.xla_model as xm

            free = xla_free_bytes(xm.get_memory_info(device))
        except Exception:  # noqa: BLE001 - the CPU XLA device and older runtimes do not report memory
            free = None
        if free is not None:
            return free, "free XLA device memory"
        return XLA_ASSUMED_FREE_BYTES, "XLA device memory (not reported: assumed 4 GiB)"
    return host_available_bytes(), "available host memory"


def peak_rss_bytes() -> int:
    """This process's peak resident set size (bytes; ru_maxrss is KiB on Linux, bytes on macOS). POSIX only."""
    import resource  # not on Windows: imported where used, so the package imports there

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def pss_bytes() -> int | None:
    """This process's proportional set size now (Linux), bytes; None where the kernel does not report it."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
