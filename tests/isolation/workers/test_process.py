"""What calls see of a worker process without waiting: whether it is still alive (real child processes); what a
worker logs of the processes it starts and stops."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoglm_runtime.errors import WorkerError
from autoglm_runtime.isolation.workers.process import WorkerProcess, WorkerSpec, _alive
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


LOG_MODEL = """
import os

class Model:
    def exit(self):
        os._exit(3)

    def ping(self):
        return "pong"

def load():
    return Model()
"""


def test_a_worker_logs_each_process_it_stops_while_it_runs_and_not_one_that_ended_by_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What the example server counts in its "stopped: ..." line after Ctrl-C (a load interrupted included).
    (tmp_path / "log_model.py").write_text(LOG_MODEL)
    worker = WorkerProcess(WorkerSpec("logs", sys.executable, str(tmp_path), "log_model:load"))
    with caplog.at_level(logging.INFO, logger="autoglm_runtime.isolation.workers.process"):
        worker.start()
        first = worker.health()["pid"]
        with pytest.raises(WorkerError):
            worker.call("exit", timeout=60)  # ends by itself: its death is logged as such, no "stopped"
        assert worker.call("ping", timeout=60) == "pong"  # on a new process
        second = worker.health()["pid"]
        worker.close()
        worker.close()  # (once: already stopped)
    lines = [
        (r.getMessage(), getattr(r, "model", None), getattr(r, "pid", None))
        for r in caplog.records
        if "worker st" in r.getMessage()
    ]
    assert lines == [
        (f"model logs worker started (pid {first}, process backend)", None, None),
        (f"model logs worker started (pid {second}, process backend)", None, None),
        (f"model logs worker stopped (pid {second})", "logs", second),
    ]
