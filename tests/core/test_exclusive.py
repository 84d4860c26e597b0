"""core/files.py `exclusive`: one writer of a path at a time across processes (filelock: flock(2) on POSIX,
LockFileEx on Windows), the waiter told why it waits, the lock freed when its holder dies."""

from __future__ import annotations

import subprocess
import sys
import time

from checkbox_dist.core.files import exclusive

HOLD = """
import sys, time
from pathlib import Path
from checkbox_dist.core.files import exclusive
with exclusive(Path(sys.argv[1])):
    Path(sys.argv[2]).touch()
    time.sleep(float(sys.argv[3]))
    Path(sys.argv[2] + ".done").touch()  # the last thing before the lock is released
"""


def hold(target, flag, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(target), str(flag), str(seconds)])
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.02)
    return child


def test_a_second_writer_waits_for_the_first_and_is_told_so(tmp_path):
    child = hold(tmp_path / "data", tmp_path / "held", 1.5)
    said, start = [], time.monotonic()
    with exclusive(tmp_path / "data", said.append):
        waited = time.monotonic() - start
        assert (tmp_path / "held.done").exists()  # the holder had finished its hold before this block began
    assert child.wait(timeout=60) == 0
    assert said == [f"another process is building {tmp_path / 'data'}; waiting for it"]
    assert waited > 0.5


def test_the_lock_is_free_at_once_when_its_holder_is_killed(tmp_path):
    child = hold(tmp_path / "data", tmp_path / "held", 60)
    child.kill()
    child.wait()
    said = []
    with exclusive(tmp_path / "data", said.append):
        pass
    assert said == []
