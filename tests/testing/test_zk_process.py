"""The process handling under the local backend: a whole process group goes on stop(), none is left behind."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests._support.processes import group_members

from autoglm_runtime.testing._local import JavaProcess, live_processes

# Stands in for java: a parent that starts a child in its group, then waits; both must die on stop().
_FAMILY = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "print('ready', flush=True); time.sleep(600)",
]


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)  # polling a condition with a deadline
    return True


def test_stop_kills_the_whole_group_and_forgets_it(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    process = JavaProcess(_FAMILY, log_path=log, cwd=tmp_path, name="family")
    process.start()
    pgid = process.pid
    assert pgid is not None
    assert pgid != os.getpgid(0)  # its own process group, so signals to ours do not reach it and back
    assert _wait_for(lambda: len(group_members(pgid)) == 2 and process.log_tail() == "ready")
    assert process in live_processes()

    process.stop(grace=5)

    assert not process.running
    assert _wait_for(lambda: group_members(pgid) == []), group_members(pgid)  # the child dies a moment later
    assert process not in live_processes()
    assert process.log_tail() == "ready"


def test_stop_before_start_and_twice_is_harmless(tmp_path: Path) -> None:
    process = JavaProcess([sys.executable, "-c", "pass"], log_path=tmp_path / "log", cwd=tmp_path, name="quick")
    process.stop()
    process.start()
    process.stop()
    process.stop()

    assert not process.running
    assert process.log_tail() == ""
