"""Progress output: tqdm bars on a terminal; plain lines, one per log interval, where the output is a file or a
pipe (a Slurm output file, CI, `| tee`), instead of carriage-return redraws. `train.progress=false` silences both."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

from conftest import REPO, run_cli, tiny_train_args
from reliability_harness import start

ARGS = ["train.epochs=2", "train.log_every_steps=1"]


def train(out, cache_dir, *extra: str, terminal: bool = False) -> str:
    """stdout and stderr of a real `checkbox-dist train`, written to a pseudo-terminal (a process forked by the
    reliability harness, whose stdout and stderr are the terminal) or to a pipe (a new interpreter)."""
    args = [a for a in tiny_train_args(out, cache_dir, *ARGS) if a != "train.progress=false"] + list(extra)
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_SILENT="true", OMP_NUM_THREADS="1", COLUMNS="120")
    if not terminal:
        proc = subprocess.run([sys.executable, "-m", "checkbox_dist", *args], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr
    leader, follower = pty.openpty()  # the follower stays open here until the run ends: reads never hit EIO early
    # A terminal of 24 x 120, as a user's has: on a new pseudo-terminal's 0 x 0, tqdm draws nothing at all.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    child = start(args, env={"COLUMNS": "120"}, tty=os.ttyname(follower))
    chunks, deadline = [], time.monotonic() + 300
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                chunks.append(os.read(leader, 65536))
            elif child.process.exitcode is not None or time.monotonic() > deadline:
                break  # exited and everything it wrote has been read (or the hang guard)
    finally:
        rc = child.wait(timeout=30).rc
        os.close(follower)
        os.close(leader)
    assert rc == 0, b"".join(chunks)[-3000:]
    return b"".join(chunks).decode(errors="replace")


def test_a_pipe_gets_one_plain_line_per_log_interval(tmp_path, cache_dir):
    text = train(tmp_path / "run", cache_dir)
    assert "\r" not in text
    steps = re.findall(r"^epoch (\d) step (\d+)/(\d+): loss \d+\.\d{4} lr \S+ \d+(\.\d)? img/s$", text, re.M)
    assert [int(s[1]) for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 2, text[-2000:]
    assert steps[-1][0] == "2" and steps[-1][1] == steps[-1][2]  # the last step of the planned run


def test_a_terminal_gets_bars_and_progress_false_gets_neither(tmp_path, cache_dir):
    # tqdm redraws its bar in place: "\r" then the bar. Not any "\r": a terminal turns every "\n" into "\r\n".
    text = train(tmp_path / "tty", cache_dir, terminal=True)
    assert re.search(r"\repoch [12]: +\d+%\|", text), text[-2000:]
    # Output to files, not a terminal (run_cli: the harness's forked process, no second interpreter start-up):
    # there progress=true prints the plain lines of the test above; progress=false must silence them too.
    proc = run_cli(*tiny_train_args(tmp_path / "quiet", cache_dir, *ARGS, "train.progress=false"))
    quiet = proc.stdout + proc.stderr
    assert "\r" not in quiet and not re.search(r"^epoch \d step ", quiet, re.M)
