"""What calls see of a worker process without waiting: whether it is still alive (real child processes)."""

from __future__ import annotations

import os
import subprocess
import sys

from autoglm_runtime.isolation.workers.process import _alive
from autoglm_runtime.testing import wait_until


def _exited(pid: int) -> bool:
    """Exited and not reaped (``WNOWAIT`` leaves it to be reaped)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def test_a_running_child_is_alive_and_left_unreaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert _alive(child)
        assert _alive(child)
        assert child.returncode is None
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


def test_an_exited_child_is_not_alive_and_is_reaped_with_its_status() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    wait_until(lambda: _exited(child.pid), 30, "the child to exit")
    assert child.returncode is None  # nobody reaped it yet
    assert not _alive(child)
    assert child.returncode == 7  # reaped by the check, its status recorded as poll() records it


def test_a_child_reaped_elsewhere_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert child.wait() == 0
    assert not _alive(child)
