"""Look at live processes, for tests that prove nothing was left behind (Linux: reads ``/proc``).

    from tests._support.processes import group_members, is_running, processes_matching
    assert group_members(worker_pgid) == []
    assert processes_matching(b"my-unique-marker") == []

A zombie (exited, waiting to be reaped) counts as gone: it runs no code and holds no resources but its pid.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

__all__ = ["group_members", "is_running", "processes_matching"]


def _stat_fields(pid: str) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name: state first, then ppid, pgrp, ..."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pids() -> Iterator[str]:
    return (entry for entry in os.listdir("/proc") if entry.isdigit())


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat_fields(str(pid))
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """The running (non-zombie) processes of process group ``pgid``."""
    members = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(pid))
    return members


def processes_matching(needle: bytes) -> list[int]:
    """The running processes whose command line contains ``needle``."""
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if needle in cmdline and is_running(int(pid)):
            found.append(int(pid))
    return found
