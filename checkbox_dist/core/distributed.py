"""Launch checks for multi-process runs, and a per-rank debug trace that tests (and people) can read.

    check_launch(accelerator, cfg)        called right after the Accelerator is created, on every process
    RankTrace.from_env(run_dir, accel)    CHECKBOX_DIST_RANK_TRACE=1: each rank writes RUN/debug/rank<N>.json;
                                          =weights: process 0 also keeps RUN/debug/steps/<step>.pt

Why the check exists (accelerate 1.15, torch 2.14, a machine without a GPU, measured):
  * `accelerate launch --multi_gpu --num_processes 2 train.py`, a MULTI_GPU config with `use_cpu: true`
    and `torchrun --nproc_per_node 2 train.py` start 2 processes that each see world size 1: two
    unrelated models, different weights, exit 0. torchrun sets WORLD_SIZE=2; Accelerate ignores it
    unless ACCELERATE_USE_CPU=true, because without a GPU it has no backend to pick.
  * `accelerate launch --cpu --num_processes 2` and a `distributed_type: MULTI_CPU` config start ONE
    process (the MULTI_CPU path expects mpirun); the only trace of the request is the launcher's own
    command line, read from /proc (Linux).
The one recipe that works on CPU is `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu ...`
(the packaged launch config cpu_2proc), or torchrun with the same variable. Anything else now fails with that fix in
one line instead of training N separate models.

The trace is for tests and debugging only: it costs a host sync per batch (the sample indices) and an
audit hook that lists every file the rank creates, renames or opens for writing inside the run folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import yaml

from checkbox_dist.core import resources
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_write_json

TRACE_ENV = "CHECKBOX_DIST_RANK_TRACE"
CPU_FIX = (f"on CPU start them with `ACCELERATE_USE_CPU=true accelerate launch --config_file "
           f"{resources.launch_file('cpu_2proc')} -m checkbox_dist train ...` (or `ACCELERATE_USE_CPU=true "
           "accelerate launch --multi_gpu --num_processes N ...`, or torchrun with ACCELERATE_USE_CPU=true; "
           "`checkbox-dist configs` lists the launch configs)")


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "1"))
    except ValueError:
        return 1


def launcher_processes(pid: int | None = None) -> int:
    """How many processes the parent `accelerate launch` was asked for (0: not launched by it, or unknown)."""
    pid = os.getppid() if pid is None else pid
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return 0
    head = " ".join(argv[:4])
    if not (re.search(r"accelerate(\.exe)?\s+launch\b", head) or "accelerate.commands.launch" in head
            or any(Path(a).name == "accelerate-launch" for a in argv[:2])):
        return 0
    options = dict(re.findall(r"--(num[_-]processes|config[_-]file)(?:=|\s+)(\S+)", " ".join(argv)))
    options = {k.replace("-", "_"): v for k, v in options.items()}
    if "num_processes" in options:
        return int(options["num_processes"]) if options["num_processes"].isdigit() else 0
    if "config_file" in options:
        try:
            config = yaml.safe_load((cwd / options["config_file"]).read_text()) or {}
            return int(config.get("num_processes") or 0)
        except (OSError, ValueError, TypeError, yaml.YAMLError):
            return 0
    return 0


def check_launch(accelerator, cfg) -> None:
    """Refuse N processes that each train alone."""
    from accelerate.utils import DistributedType

    if accelerator.num_processes > 1 or accelerator.distributed_type == DistributedType.XLA:
        return
    started = max(_int_env("WORLD_SIZE"), _int_env("LOCAL_WORLD_SIZE"))
    if started > 1:
        raise UserError(f"the launcher started {started} processes (WORLD_SIZE={os.environ.get('WORLD_SIZE')}) but "
                        f"Accelerate sees world size 1 in each, so each would train its own model: {CPU_FIX}")
    asked = launcher_processes()
    if asked > 1:
        raise UserError(f"`accelerate launch` was asked for {asked} processes but started one (--cpu and "
                        f"MULTI_CPU configs start a single process): {CPU_FIX}")


def weights_sha256(module) -> str:
    """Bitwise fingerprint of a state_dict: equal on every rank when data-parallel training is in sync."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _xla_metrics() -> dict | None:
    """torch_xla's counters so far in this process, None without torch_xla:
    counts      [graphs compiled, device-to-host transfers]: constant over the steady-state steps of an epoch when
                shapes are static and the loop does not sync per step
    fallbacks   {"aten::op": calls}: ops XLA does not lower, run on the CPU with a device-host round trip each
    all_reduces in-place all-reduces traced (gradients, `accelerator.reduce`); on one device they are no-ops
                unless XLA_ALWAYS_ALLREDUCE=1"""
    if "torch_xla" not in sys.modules:
        return None
    import torch_xla.debug.metrics as met

    return {"counts": [(met.metric_data(name) or (0,))[0] for name in ("CompileTime", "TransferFromDeviceTime")],
            "fallbacks": {name: met.counter_value(name) for name in met.counter_names() if name.startswith("aten::")},
            "all_reduces": met.counter_value("xla::AllReduceInPlace") or 0}


# Audit events that change the file system; os.replace raises "os.rename" (src, dst, ...).
_WRITE_EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate")


class RankTrace:
    """RUN/debug/rank<N>.json: world size, device, the sample indices this rank trained on per epoch and
    evaluated per pass, the files it wrote inside RUN (debug/ excluded), the checkpoint it resumed from, the
    hashes of the weights at each save and of its final weights, the micro-batches that closed an
    accumulation window and the calls of `optimizer.step` per epoch, and on XLA the compile/transfer,
    CPU-fallback and in-place all-reduce counters at each train batch."""

    def __init__(self, run_dir: Path, accelerator):
        self.run_dir = os.path.abspath(run_dir)
        self.file = Path(run_dir) / "debug" / f"rank{accelerator.process_index}.json"
        self.record = {"rank": accelerator.process_index, "world_size": accelerator.num_processes,
                       "distributed_type": str(accelerator.distributed_type.value), "device": str(accelerator.device),
                       "pid": os.getpid(), "train": {}, "val": [], "writes": [], "windows": {},
                       "optimizer_steps": {}}
        self._epoch = "0"
        sys.addaudithook(self._audit)  # cannot be removed: the trace lives as long as the process

    @classmethod
    def from_env(cls, run_dir: Path, accelerator) -> "RankTrace | None":
        return cls(run_dir, accelerator) if os.environ.get(TRACE_ENV, "") not in ("", "0") else None

    def _audit(self, event: str, args: tuple) -> None:
        try:
            if event == "open":
                path, mode, flags = args
                if isinstance(mode, str):
                    writing = any(c in mode for c in "wax+")
                else:
                    writing = bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            elif event in _WRITE_EVENTS:
                path, writing = args[1] if event == "os.rename" else args[0], True
            else:
                return
            if not writing or not isinstance(path, (str, os.PathLike)):
                return
            full = os.path.abspath(os.fspath(path))
            if full.startswith(self.run_dir + os.sep):
                rel = os.path.relpath(full, self.run_dir)
                if not rel.startswith("debug"):
                    self.record["writes"].append(f"{event} {rel}")
        except Exception:  # an audit hook must never break the operation it watches
            pass

    def train_batch(self, epoch: int, indices) -> None:
        self._epoch = str(epoch)
        xla = _xla_metrics()  # before our own .tolist(), which is one device-to-host transfer on XLA
        if xla is not None:
            per_epoch = lambda key: self.record.setdefault(key, {}).setdefault(str(epoch), [])  # noqa: E731
            per_epoch("xla").append(xla["counts"])
            self.record["xla_fallbacks"] = xla["fallbacks"]  # the totals so far, by op
            per_epoch("xla_fallback_calls").append(sum(xla["fallbacks"].values()))
            per_epoch("xla_all_reduces").append(xla["all_reduces"])
        self.record["train"].setdefault(str(epoch), []).extend(int(i) for i in indices.tolist())

    def window_end(self, epoch: int, micro: int) -> None:
        """Micro-batch `micro` of `epoch` closed an accumulation window (the optimizer's turn)."""
        self.record["windows"].setdefault(str(epoch), []).append(micro)

    def count_steps(self, optimizer) -> None:
        """Count the calls of `optimizer.step` per epoch (the epoch of the last train batch seen)."""
        step, steps = optimizer.step, self.record["optimizer_steps"]

        def counted(*args, **kwargs):
            steps[self._epoch] = steps.get(self._epoch, 0) + 1
            return step(*args, **kwargs)

        optimizer.step = counted

    def eval_lookup(self, lookup):
        """Wrap a dataset's lookup for one evaluation pass: records the indices this rank evaluated,
        including the duplicates Accelerate pads the last batch with (evaluation keeps one row per index)."""
        seen: list[int] = []
        self.record["val"].append(seen)

        def wrapped(batch):
            images, labels, indices = lookup(batch)
            seen.extend(int(i) for i in indices.tolist())
            return images, labels, indices

        return wrapped

    def optimizer_step(self, step: int, model) -> None:
        """With CHECKBOX_DIST_RANK_TRACE=weights, process 0 keeps the weights after every optimizer step
        (RUN/debug/steps/<step>.pt): where two launch shapes first diverge, and in which parameter."""
        if self.record["rank"] != 0 or os.environ.get(TRACE_ENV) != "weights":
            return
        import torch

        folder = self.file.parent / "steps"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, folder / f"{step}.pt")

    def resumed(self, folder, epoch: int, global_step: int) -> None:
        self.record["resumed"] = {"from": str(folder), "epoch": epoch, "global_step": global_step}

    def saved(self, name: str, global_step: int, weights, raw) -> None:
        """A checkpoint save: the hashes of the weights it holds (EMA when on) and of the raw model, on this rank."""
        self.record.setdefault("saves", []).append({"name": name, "step": global_step,
                                                    "weights_sha256": weights_sha256(weights),
                                                    "raw_sha256": weights_sha256(raw)})

    def finish(self, model) -> None:
        self.record["weights_sha256"] = weights_sha256(model)
        atomic_write_json(self.file, self.record, indent=None)


def ranks_without(ok: bool) -> list[int]:
    """The processes for which `ok` is False, known to every process (a collective: every process calls it)."""
    import torch
    from accelerate.utils import reduce

    state = process_state()
    if state.num_processes == 1:
        return [] if ok else [0]
    flags = torch.zeros(state.num_processes, device=state.device)
    flags[state.process_index] = float(not ok)
    return [rank for rank, flag in enumerate(reduce(flags, reduction="sum").tolist()) if flag]


def from_local_main(value: bytes | None, size: int, state) -> bytes | None:
    """The `size` bytes this host's local main process passes as `value`, on every process of the host (a
    collective over `state`, the Accelerator or its PartialState: every process calls it, the others pass None;
    it returns once every process, the local main ones included, has called it). The processes of a host are
    taken to have consecutive ranks, its local main process first, as torchrun, `accelerate launch`,
    slurm/train.sh and torch_xla number them. None when the local main process passed None, or the process at
    that rank is not a local main process: the caller then computes the value itself."""
    import torch
    from accelerate.utils import reduce

    if value is not None and len(value) != size:
        raise ValueError(f"from_local_main: {len(value)} bytes, expected {size}")
    if state.num_processes == 1:
        return value
    rows = torch.zeros(state.num_processes, size + 1, device=state.device)  # [given?, bytes...] per process
    if state.is_local_main_process and value is not None:
        rows[state.process_index, 0] = 1
        rows[state.process_index, 1:] = torch.tensor(list(value), dtype=torch.float32)
    host = reduce(rows, reduction="sum")[state.process_index - state.local_process_index].tolist()
    return bytes(int(b) for b in host[1:]) if host[0] == 1 else None


def processes_named(ranks: list[int]) -> str:
    """[1] -> 'process 1'; [2, 3] -> 'processes 2, 3'."""
    return f"process{'es' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


def check_shared_folder(folder: Path, key: str) -> None:
    """Every process must see the files process 0 writes in `folder` (the setting `key` names it): on several
    hosts it must be on a filesystem they share. One UserError on every process when a process cannot see it."""
    blind = blind_processes(folder, key)
    if blind:
        raise UserError(f"{key}={folder}: {processes_named(blind)} of {process_state().num_processes} cannot see the "
                        f"file process 0 wrote there: {key} must be on a filesystem every host shares, at the same "
                        f"path on every host")


def blind_processes(folder: Path, key: str) -> list[int]:
    """The processes that cannot see a file process 0 writes in `folder` ([] in a single process; a collective).
    Process 0 creates the folder if needed and a marker file in it; every process looks for the marker; then the
    marker, and the folder if it was created here, are removed. A folder process 0 cannot write: one UserError."""
    from accelerate.utils import broadcast_object_list

    state = process_state()
    if state.num_processes == 1:
        return []
    folder = Path(folder)
    shared = [None, ""]  # process 0's marker name, or its error
    created = False
    if state.is_main_process:
        try:
            created = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            marker = folder / f".shared-check-{uuid.uuid4().hex}"
            marker.touch()
            shared[0] = marker.name
        except OSError as err:
            shared[1] = f"{key}={folder}: cannot write there ({err.strerror or err})"
    broadcast_object_list(shared)
    if shared[1]:
        raise UserError(shared[1])
    marker = folder / shared[0]
    visible = marker.is_file()
    for _ in range(10):  # a network filesystem can take a moment to show a new file on another host
        if visible:
            break
        time.sleep(0.2)
        visible = marker.is_file()
    blind = ranks_without(visible)
    if state.is_main_process:
        marker.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # empty again: the run creates it for real
    return blind


def process_state():
    """The process group Accelerate will use: created the way AcceleratorState creates it (ACCELERATE_USE_CPU
    included), since the first PartialState() of a process fixes the world for every Accelerator after it."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
