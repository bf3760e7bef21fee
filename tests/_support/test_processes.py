"""The /proc helpers tests use to prove nothing was left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from tests._support.processes import group_members, is_running, processes_matching


def test_a_group_a_marker_and_a_reaped_process() -> None:
    marker = f"autoglm-test-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.stdin.read()", marker],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert is_running(proc.pid)
        assert group_members(proc.pid) == [proc.pid]
        assert processes_matching(marker.encode()) == [proc.pid]
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    assert not is_running(proc.pid)
    assert group_members(proc.pid) == []
    assert processes_matching(marker.encode()) == []
    assert is_running(os.getpid())
