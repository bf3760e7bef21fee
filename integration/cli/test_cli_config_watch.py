"""``autoglm-runtime config watch`` through a ZooKeeper outage, as an operator runs it (a real process, a real server
behind a fault proxy)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import pytest
from kazoo.client import KazooClient

from autoglm_runtime.testing.zookeeper import FaultProxy

#: How long a line may take before the test gives up on it: a guard against a hang, not a speed requirement.
PATIENCE = 60.0


class Lines:
    """The lines of a pipe, read by a thread of its own, so a line that never comes fails the test instead of
    hanging it."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), name="test-pipe-reader", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")  # the end of the stream

    def next(self) -> str:
        try:
            return self._lines.get(timeout=PATIENCE)
        except queue.Empty:
            pytest.fail(f"no line within {PATIENCE:g} s")

    def rest(self) -> list[str]:
        self._thread.join(PATIENCE)
        lines = []
        while not self._lines.empty():
            lines.append(self._lines.get())
        return [line for line in lines if line]


@contextmanager
def watching(*argv: str) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "autoglm_runtime", "config", "watch", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        yield process, Lines(process.stdout), Lines(process.stderr)
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_watch_says_once_when_zookeeper_is_lost_and_once_when_it_is_back(
    zk_root: str, zk_client: KazooClient, zk_proxy: FaultProxy, as_json: bool
) -> None:
    # Before: nothing at all was printed while the connection was down, and nothing when it came back.
    zk_client.create(f"{zk_root}/limit", b"1")
    hosts = zk_proxy.hosts
    mode = ["--json"] if as_json else []
    with watching(*mode, "--count", "1", "--for", "120", "--hosts", hosts, "--root", zk_root) as (process, out, err):
        assert err.next() == f"watching {zk_root}/ on {hosts}\n"
        zk_proxy.refuse()
        zk_proxy.cut()
        assert err.next() == (
            f"autoglm-runtime: warning E0409: lost the connection to ZooKeeper at {hosts}: not following {zk_root} "
            "(retrying); changes made meanwhile will be printed once it follows again\n"
        )
        zk_client.set(f"{zk_root}/limit", b"2")  # straight to the server, while the watch cannot see it
        zk_proxy.restore()
        # The next line is this one: the reconnection attempts in between said nothing.
        assert err.next() == (
            f"autoglm-runtime: following {zk_root} on ZooKeeper at {hosts} again: reconnected in the same session "
            "and resynced\n"
        )
        change = out.next()
        assert process.wait(PATIENCE) == 0
        assert (out.rest(), err.rest()) == ([], [])
    if as_json:  # standard output holds change records only
        assert json.loads(change) == {
            "key": "limit",
            "kind": "updated",
            "old": 1,
            "new": 2,
            "version": json.loads(change)["version"],
        }
    else:
        assert change == "updated limit = 2\n"
