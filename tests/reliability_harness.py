"""Helpers of the reliability suite (tests/*/test_reliability_*.py): run the real CLI in real processes, fast,
and compare a resumed run with an uninterrupted one bit for bit (`assert_same_run`).

`cli(argv)` and `start(argv)` run `checkbox_dist.cli.main(argv)` -- the function behind the `checkbox-dist`
console script -- in a fresh OS process forked from a multiprocessing "forkserver" that has already
imported torch, timm, accelerate and the package. Importing those costs ~7 s of CPU per process here
(`import checkbox_dist.train`: 6.7 s user, 2 shared cores); the fork costs ~0.1 s, and the faults suite's
3-epoch run itself ~2 s of CPU with one thread (measured 1.8 s). The child is a
real process with its own pid, environment, stdout/stderr files and exit status: `kill -9`, SIGTERM and
exit code 75 behave exactly as for the console script. (A few tests also run the console script itself.)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRELOAD = ["checkbox_dist.cli", "checkbox_dist.train", "checkbox_dist.infer.evaluate", "checkbox_dist.core.faults",
           "checkbox_dist.synth", "matplotlib.pyplot", "reliability_harness"]
_ctx = None
_log_dir: Path | None = None  # the children's stdout/stderr files, deleted once read


def _context():
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx


def _child(argv: list[str], env: dict, cwd: str, out_file: str, err_file: str, max_file_bytes: int | None) -> None:
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.chdir(cwd)
    for fd, path in ((1, out_file), (2, err_file)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    if max_file_bytes is not None:  # `ulimit -f`: a bigger write fails with EFBIG (Python ignores SIGXFSZ)
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the forkserver's handlers are not the CLI's
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    from checkbox_dist.core import faults, prefetch
    from checkbox_dist.cli import main

    faults.reload()  # CHECKBOX_DIST_FAULT was read when the server imported the module
    prefetch.reload()  # and CHECKBOX_DIST_PREFETCH
    import torch

    # One thread: on 2 shared cores, 2 OpenMP threads per tiny run cost 3x the CPU time (measured 9.8 s vs
    # 3.3 s for the faults suite's 3-epoch run). Every run of a comparison uses the same count, so the
    # bit-exact checks are unaffected.
    torch.set_num_threads(1)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


@dataclass
class Result:
    rc: int | None
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


class Child:
    """A running CLI process: .pid, .wait(timeout) -> Result, .signal(sig). With `tty` (a terminal's path, e.g. a
    pseudo-terminal's follower) its stdout and stderr are that terminal, and the caller reads what it prints."""

    def __init__(self, argv: list[str], env: dict | None, cwd: Path, log_dir: Path, max_file_bytes: int | None,
                 tty: str | None = None):
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.monotonic_ns()}"
        self.tty = tty
        self.out_file, self.err_file = ((Path(tty), Path(tty)) if tty else
                                        (log_dir / f"out-{stamp}.txt", log_dir / f"err-{stamp}.txt"))
        full_env = {"PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true", "CHECKBOX_DIST_FAULT": None,
                    "CHECKBOX_DIST_PREFETCH": None}
        full_env.update(env or {})
        self.process = _context().Process(target=_child, args=(list(argv), full_env, str(cwd), str(self.out_file),
                                                               str(self.err_file), max_file_bytes))
        self.process.start()
        self.pid = self.process.pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 300) -> Result:
        self.process.join(timeout)
        if self.process.exitcode is None:  # hung: that is a failure of the test, not a pass
            os.kill(self.pid, signal.SIGKILL)
            self.process.join(30)
            rc = None
        else:
            rc = self.process.exitcode
        if self.tty:
            return Result(rc, "", "")
        out, err = (p.read_text(errors="replace") if p.exists() else "" for p in (self.out_file, self.err_file))
        result = Result(rc, out, err)
        for path in (self.out_file, self.err_file):
            path.unlink(missing_ok=True)
        return result


def start(argv: list[str], env: dict | None = None, cwd: Path = REPO, log_dir: Path | None = None,
          max_file_bytes: int | None = None, tty: str | None = None) -> Child:
    global _log_dir
    if log_dir is None:
        _log_dir = _log_dir or Path(tempfile.mkdtemp(prefix="checkbox_dist_cli_"))
    return Child(argv, env, cwd, log_dir or _log_dir, max_file_bytes, tty)


def cli(argv: list[str], env: dict | None = None, cwd: Path = REPO, timeout: float = 300,
        log_dir: Path | None = None, max_file_bytes: int | None = None) -> Result:
    return start(argv, env, cwd, log_dir, max_file_bytes).wait(timeout)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_world(world: int, argv: list[str], env: dict | None = None, cwd: Path = REPO) -> list[Child]:
    """`world` CLI processes that form one gloo world on this machine: what `ACCELERATE_USE_CPU=true torchrun
    --nproc_per_node N train.py ...` starts (the same environment: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT),
    forked from the preloaded server instead of importing torch N times. world 1: one plain process."""
    if world == 1:
        return [start(argv, env, cwd)]
    port = str(free_port())
    base = {"ACCELERATE_USE_CPU": "true", "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "GROUP_RANK": "0", "OMP_NUM_THREADS": "1"}
    return [start(argv, {**base, "RANK": str(rank), "LOCAL_RANK": str(rank), **(env or {})}, cwd)
            for rank in range(world)]


def start_hosts(argv: list[str], envs: list[dict], cwd: Path = REPO) -> list[Child]:
    """One process per "host", `len(envs)` hosts on this machine: what `ACCELERATE_USE_CPU=true torchrun --nnodes N
    --node_rank r --nproc_per_node 1 --master_addr 127.0.0.1 ...` starts on each of N machines (RANK r, LOCAL_RANK 0,
    GROUP_RANK r, LOCAL_WORLD_SIZE 1): every process is its host's local main process. `envs[r]` is host r's own
    environment on top (its HOME, so `~` and the default data.cache_dir are per host, as on machines with their
    own disks)."""
    port = str(free_port())
    base = {"ACCELERATE_USE_CPU": "true", "WORLD_SIZE": str(len(envs)), "LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "0",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
    return [start(argv, {**base, "RANK": str(rank), "GROUP_RANK": str(rank), **env}, cwd)
            for rank, env in enumerate(envs)]


def run_world(world: int, argv: list[str], env: dict | None = None, cwd: Path = REPO,
              timeout: float = 600) -> list[Result]:
    """start_world, then every process's Result (rank order)."""
    return [child.wait(timeout) for child in start_world(world, argv, env, cwd)]


def one_line_error(result: Result) -> str:
    """The single `error: ...` line a user-facing failure must print (asserts: no traceback, exit 2)."""
    assert result.rc == 2, (f"exit {result.rc}, expected 2\n--- stdout\n{result.out[-2000:]}\n"
                            f"--- stderr\n{result.err[-3000:]}")
    assert "Traceback" not in result.err, result.err[-3000:]
    lines = [line for line in result.error_lines if line.startswith("error:")]
    assert len(lines) == 1, result.err[-3000:]
    return lines[0]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def is_stopped(pid: int) -> bool:
    """The process is in state T (SIGSTOP; faults action `stop`). False once it has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(predicate, timeout: float, what: str, child: Child | None = None) -> None:
    """Poll `predicate` every 50 ms (a hang guard, not a timing measurement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if child is not None and child.process.exitcode is not None:
            raise AssertionError(f"the process exited ({child.process.exitcode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# ---- comparing a resumed run with an uninterrupted one ----------------------------------------------

TIME_KEYS = {"epoch_seconds", "img_per_s", "interval_img_per_s"}  # wall-clock: the only fields that may differ


def strip_time(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIME_KEYS}


def final_rows(run_dir: Path, kind: str, key: str) -> dict:
    """Last row per epoch (or step): a resumed run re-does what the killed one had not saved."""
    return {row[key]: strip_time(row) for row in read_metrics(run_dir) if row["kind"] == kind}


def tensors_equal(a, b, where: str) -> None:
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            tensors_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == b or (a != a and b != b), where
    else:
        assert a == b, where


def assert_same_run(run_dir: Path, reference: Path, step_rows: bool = True) -> None:
    """Bit-identical to `reference`: weights of last and best, temperature, optimizer/scheduler/loop state,
    every epoch (and step) row of metrics.jsonl, summary.json; and only committed checkpoint folders."""
    import torch

    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers
    for name in ("last", "best"):
        ours = torch.load(run_dir / "checkpoints" / name / "model.pt", weights_only=True)
        theirs = torch.load(reference / "checkpoints" / name / "model.pt", weights_only=True)
        tensors_equal(ours["model"], theirs["model"], f"{name}/model.pt weights")
        assert ours["temperature"] == theirs["temperature"] and ours["epoch"] == theirs["epoch"]
        assert strip_time(ours["metrics"]) == strip_time(theirs["metrics"]), (name, ours["metrics"], theirs["metrics"])
    ours = torch.load(run_dir / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    theirs = torch.load(reference / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    for key in ("optimizer", "scheduler", "loop", "raw_model"):
        tensors_equal(ours[key], theirs[key], f"train_state.{key}")
    assert final_rows(run_dir, "epoch", "epoch") == final_rows(reference, "epoch", "epoch")
    if step_rows:  # a run logged at another train.log_every_steps has other step rows, same training
        assert final_rows(run_dir, "step", "step") == final_rows(reference, "step", "step")
    paths = {"run_dir", "best_checkpoint", "metrics_plot", "confusion_matrix"}
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    assert {k: v for k, v in ours.items() if k not in paths} == {k: v for k, v in theirs.items() if k not in paths}
