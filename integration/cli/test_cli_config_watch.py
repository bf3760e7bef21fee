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
from integration._helpers import kazoo_session
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

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


def test_watch_follows_what_it_may_read_and_names_each_key_it_may_not(zk_hosts: str, zk_root: str) -> None:
    # Before: a tree ZooKeeper refused in part was not followed at all (exit 2 at once, nothing watched).
    only_reader = [make_digest_acl("reader", "s3cret", all=True)]
    with kazoo_session(zk_hosts, auth_data=[("digest", "reader:s3cret")]) as owner:
        owner.create(f"{zk_root}/public", b"1")
        owner.create(f"{zk_root}/secret", b"2", acl=only_reader)
        try:
            with watching("--count", "1", "--for", "120", "--hosts", zk_hosts, "--root", zk_root) as (
                process,
                out,
                err,
            ):
                assert err.next() == (
                    f"autoglm-runtime: error E0409: ZooKeeper at {zk_hosts} denied reading key 'secret' under "
                    f"{zk_root} (and any key below it): give --auth-file (or --auth) with credentials that may read "
                    "it, or check its ACL\n"
                )
                assert err.next() == f"watching {zk_root}/ on {zk_hosts}\n"
                owner.set(f"{zk_root}/public", b"3")
                assert out.next() == "updated public = 3\n"
                assert process.wait(PATIENCE) == 3  # EXIT_PARTIAL: part of the tree was not followed
                assert (out.rest(), err.rest()) == ([], [])
        finally:
            owner.delete(f"{zk_root}/secret")  # the fixture's cleanup has no credentials for it
