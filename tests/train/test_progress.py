"""Progress output: tqdm bars on a terminal; plain lines, one per log interval, where the output is a file or a
pipe (a Slurm output file, CI, `| tee`), instead of carriage-return redraws. `train.progress=false` silences both."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from conftest import REPO, run_cli, tiny_train_args

ARGS = ["train.epochs=2", "train.log_every_steps=1"]


def train(out, cache_dir, *extra: str, terminal: bool = False) -> str:
    """stdout and stderr of a real `checkbox-dist train`, written to a pseudo-terminal or to a pipe."""
    args = [a for a in tiny_train_args(out, cache_dir, *ARGS) if a != "train.progress=false"] + list(extra)
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_SILENT="true", OMP_NUM_THREADS="1", COLUMNS="120")
    if not terminal:
        proc = subprocess.run([sys.executable, "-m", "checkbox_dist", *args], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "checkbox_dist", *args], stdout=follower, stderr=follower,
                            env=env, cwd=REPO)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the run is over
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=300) == 0, b"".join(chunks)[-3000:]
    return b"".join(chunks).decode(errors="replace")


def test_a_pipe_gets_one_plain_line_per_log_interval(tmp_path, cache_dir):
    text = train(tmp_path / "run", cache_dir)
    assert "\r" not in text
    steps = re.findall(r"^epoch (\d) step (\d+)/(\d+): loss \d+\.\d{4} lr \S+ \d+(\.\d)? img/s$", text, re.M)
    assert [int(s[1]) for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 2, text[-2000:]
    assert steps[-1][0] == "2" and steps[-1][1] == steps[-1][2]  # the last step of the planned run


def test_a_terminal_gets_bars_and_progress_false_gets_neither(tmp_path, cache_dir):
    assert "\r" in train(tmp_path / "tty", cache_dir, terminal=True)  # tqdm redraws its bar in place
    # Output to files, not a terminal (run_cli: the harness's forked process, no second interpreter start-up):
    # there progress=true prints the plain lines of the test above; progress=false must silence them too.
    proc = run_cli(*tiny_train_args(tmp_path / "quiet", cache_dir, *ARGS, "train.progress=false"))
    quiet = proc.stdout + proc.stderr
    assert "\r" not in quiet and not re.search(r"^epoch \d step ", quiet, re.M)
