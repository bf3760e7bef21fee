"""ZooKeeperSync's tree bookkeeping, driven with hand-made read results (no server, no connection)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from kazoo.protocol.states import ZnodeStat

from autoglm_runtime.config import _syncstate as sm
from autoglm_runtime.config._results import Interrupted, ReadResult
from autoglm_runtime.config._sync import ZooKeeperSync
from autoglm_runtime.config._values import ValuePipeline
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.codec import resolve_codec
from autoglm_runtime.config.health import SyncStatus
from autoglm_runtime.config.settings import ZooKeeperConnection

from .conftest import FakeClock


@pytest.fixture
def sync(clock: FakeClock) -> Iterator[ZooKeeperSync]:
    cache = ConfigCache(ttl=30.0, timer=clock)
    status = SyncStatus(timer=clock)
    pipeline = ValuePipeline(cache=cache, codec=resolve_codec("json"), validator=None, status=status)
    zk = ZooKeeperSync(
        hosts="127.0.0.1:1",  # never connected: these tests only apply reads
        root="/r",
        cache=cache,
        pipeline=pipeline,
        status=status,
        client=ZooKeeperConnection(session_timeout=2.0, reconnect_max_delay=1.0).kazoo_client("127.0.0.1:1"),
        op_timeout=2.0,
        batch_size=500,
    )
    zk.client.last_zxid = 10_000  # the server is not behind the cache
    yield zk
    zk.client.close()


class Reads:
    def __init__(self) -> None:
        self.seq = 0

    def __call__(
        self, path: str, *, czxid: int | None = None, children: list[str] | None = None, missing: bool = False
    ) -> ReadResult:
        self.seq += 1
        result = ReadResult(path, self.seq)
        result.missing = missing
        if czxid is not None:
            result.data = b"1"
            result.stat = ZnodeStat(czxid, czxid, 0, 0, 0, 0, 0, 0, 1, 0, czxid)
        result.children = children
        return result


def apply(sync: ZooKeeperSync, result: ReadResult) -> list[tuple[str, bool, bool]]:
    with sync._cache.batch():
        return sync._tree.apply(result, found=None, full=False, reconcile=False)


def load(sync: ZooKeeperSync, read: Reads) -> None:
    assert apply(sync, read("/r", children=["svc"])) == [("/r/svc", True, True)]
    assert apply(sync, read("/r/svc", czxid=10, children=["v0"])) == [("/r/svc/v0", True, True)]
    assert apply(sync, read("/r/svc/v0", czxid=11, children=[])) == []
    assert sorted(sync._cache.keys()) == ["svc", "svc/v0"]


def test_a_removed_node_listed_again_by_its_parent_is_loaded_again(sync: ZooKeeperSync) -> None:
    """The deletion's read came back "missing"; the parent's next child list (read after the znode was
    created again) still has the same name: it must be read, or its new children stay invisible."""
    read = Reads()
    load(sync, read)
    assert apply(sync, read("/r/svc", missing=True)) == []
    assert sorted(sync._cache.keys()) == []
    assert apply(sync, read("/r", children=["svc"])) == [("/r/svc", True, True)]


def test_a_new_incarnation_rereads_its_children_and_loads_every_child(sync: ZooKeeperSync) -> None:
    read = Reads()
    load(sync, read)
    # the deletion's read (data and children) finds the znode created again, with a child of the same name
    assert apply(sync, read("/r/svc", czxid=20, children=["v0"])) == [("/r/svc/v0", True, True)]
    # a data-only read that finds a new incarnation asks for the child list (re-arming the child watch)
    assert apply(sync, read("/r/svc", czxid=30)) == [("/r/svc", False, True)]
    assert apply(sync, read("/r/svc", children=["v0", "v1"])) == [
        ("/r/svc/v0", True, True),
        ("/r/svc/v1", True, True),
    ]
    # the same incarnation again: only new names are followed
    assert apply(sync, read("/r/svc", czxid=30, children=["v0", "v1", "v2"])) == [("/r/svc/v2", True, True)]


def test_removals_from_a_server_behind_the_cache_are_deferred(sync: ZooKeeperSync) -> None:
    read = Reads()
    load(sync, read)
    sync.client.last_zxid = 5  # a lagging server: it has not seen what we cached (mzxid 10 and 11)
    assert apply(sync, read("/r/svc/v0", missing=True)) == []
    assert apply(sync, read("/r/svc", czxid=10, children=[])) == []
    assert sorted(sync._cache.keys()) == ["svc", "svc/v0"]
    assert sync._guard.recheck_at is not None
    sync.client.last_zxid = 10_000
    assert apply(sync, read("/r/svc/v0", missing=True)) == []
    assert sorted(sync._cache.keys()) == ["svc"]


def test_an_unexpected_sync_failure_marks_stale_logs_and_backs_off(
    sync: ZooKeeperSync, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a full read must not spin: stale, E0409, and exponentially longer waits between retries."""
    sync.client._live.set()  # looks connected; no request is sent (the full read below fails first)
    sync._reader.checked = True
    sync.request_full_read()
    attempts: list[int] = []

    def failing_full_sync(*_: object) -> None:
        attempts.append(1)
        raise RuntimeError("boom")

    delays: list[float | None] = []

    def no_wait(timeout: float | None = None) -> bool:
        delays.append(timeout)
        sync._queue.put(("stop", "") if len(delays) == 5 else ("noop", None))
        return False

    sync._full_sync = failing_full_sync  # type: ignore[method-assign]
    sync._stopping.wait = no_wait  # type: ignore[method-assign]
    sync._queue.put(("noop", None))
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        sync._run()
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert len(attempts) == 5
    assert sync._status.stale_since is not None
    messages = [r.getMessage() for r in caplog.records if getattr(r, "error_code", "") == "E0409"]
    assert messages[:2] == [
        "config sync failed; serving last-known-good values and retrying in 0.5 s",
        "config sync failed; serving last-known-good values and retrying in 1.0 s",
    ]


def test_a_read_cut_short_stays_pending_until_it_is_read_again(sync: ZooKeeperSync) -> None:
    """A watch event's re-read timed out (no drop, so the cache still counts as following): until the read that
    retries it, a difference the reconciler finds there is that event's, not drift. The cut-short read had
    already unmarked it, so a verification meanwhile counted drift."""
    read = Reads()
    load(sync, read)
    sync._pending.mark("/r/svc/v0", data=True, children=False)

    def timed_out(specs: object) -> list[ReadResult]:
        raise Interrupted

    sync._reader.read = timed_out  # type: ignore[method-assign]
    sync._execute((sm.Read(frozenset({"/r/svc/v0"}), frozenset()),))
    assert "/r/svc/v0" in sync._pending
    assert "/r/svc/v0" in sync._state.retry
    with sync._cache.batch():
        sync._tree.drift("/r/svc/v0", "svc/v0", 2)
    assert sync._status.report(applied=0, keys=0)["drift_corrected"] == 0
