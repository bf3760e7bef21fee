"""after_fork_in_child: a reset runs in a forked child, right after the fork, and never in the parent."""

from __future__ import annotations

import os

import pytest

from autoglm_runtime._fork import after_fork_in_child


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_the_reset_runs_in_the_child_only() -> None:
    runs: list[int] = []

    @after_fork_in_child
    def reset() -> None:
        runs.append(os.getpid())

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, repr(runs == [os.getpid()]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as from_child:
        seen = from_child.read()
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    assert (seen, runs) == ("True", [])
    assert reset.__name__ == "reset"  # (the decorator gives the function back)
