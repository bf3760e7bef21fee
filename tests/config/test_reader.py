"""ZooKeeperReader against a fake kazoo client: multiRead fallbacks, drops, and the self-check."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss, NoNodeError, UnimplementedError
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.states import ZnodeStat

from autoglm_runtime.config._reader import ZooKeeperReader
from autoglm_runtime.config._results import Interrupted
from autoglm_runtime.config._wire import GET_DATA, MAX_REQUEST_BYTES, MultiRead, SetWatches
from autoglm_runtime.config.health import SyncStatus

from .conftest import FakeClock


def stat(zxid: int) -> ZnodeStat:
    return ZnodeStat(zxid, zxid, 0, 0, 0, 0, 0, 0, 1, 0, zxid)


class FakeKazoo:
    """Answers plain reads from ``tree``; ``multi`` decides what a MultiRead gets ("ok" or an exception)."""

    def __init__(self, tree: dict[str, bytes], multi: Any = "ok") -> None:
        self.tree = tree
        self.multi = multi
        self.connected = True
        self.last_zxid = 7
        self.chroot = ""
        self.hosts = "fake:2181"
        self.handler = SequentialThreadingHandler()
        self._data_watchers: defaultdict[str, set[Any]] = defaultdict(set)
        self._child_watchers: defaultdict[str, set[Any]] = defaultdict(set)
        self.multireads = 0
        self.plain = 0

    def _answer(self, value: Any) -> Any:
        result = self.handler.async_result()
        if isinstance(value, BaseException):
            result.set_exception(value)
        else:
            result.set(value)
        return result

    def _data(self, path: str) -> Any:
        return (self.tree[path], stat(len(path))) if path in self.tree else NoNodeError()

    def _kids(self, path: str) -> Any:
        if path not in self.tree:
            return NoNodeError()
        base = path.rstrip("/") + "/"
        return [p[len(base) :] for p in self.tree if p.startswith(base) and "/" not in p[len(base) :]]

    def get_async(self, path: str, watch: Any = None) -> Any:
        self.plain += 1
        return self._answer(self._data(path))

    def get_children_async(self, path: str, watch: Any = None) -> Any:
        self.plain += 1
        return self._answer(self._kids(path))

    def exists_async(self, path: str, watch: Any = None) -> Any:
        return self._answer(None)

    def _call(self, request: Any, result: Any) -> None:
        if isinstance(request, SetWatches):
            result.set(None)
            return
        assert isinstance(request, MultiRead)
        self.multireads += 1
        if isinstance(self.multi, BaseException):
            result.set_exception(self.multi)
            return
        result.set([self._data(p) if op == GET_DATA else self._kids(p) for op, p in request.ops])


def tree(count: int = 20) -> dict[str, bytes]:
    out = {"/r": b""}
    out.update({f"/r/k{i:02d}": str(i).encode() for i in range(count)})
    return out


def reader(fake: FakeKazoo) -> ZooKeeperReader:
    status = SyncStatus(timer=FakeClock())
    return ZooKeeperReader(client=fake, watch=lambda event: None, status=status, batch_size=500, op_timeout=2.0)  # type: ignore[arg-type]


# Reads of znodes of unknown size: as many as one multiRead answer takes (MAX_ANSWER_BYTES).
SPECS = [(f"/r/k{i:02d}", True, True) for i in range(16)]


def test_unimplemented_multiread_falls_back_to_plain_reads_for_good(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeKazoo(tree(), multi=UnimplementedError())
    zk = reader(fake)
    with caplog.at_level(logging.INFO, logger="autoglm_runtime.config"):
        results = zk.read(SPECS)
    assert [r.data for r in results] == [str(i).encode() for i in range(16)]
    assert (zk.bulk, zk.rearm) == (False, True)  # setWatches predates 3.6: re-arming still works
    [record] = caplog.records
    assert record.getMessage() == (
        "ZooKeeper does not support multiRead (needs 3.6+: UnimplementedError); reading znodes one by one"
    )
    zk.read(SPECS)
    assert fake.multireads == 1


def test_a_dropped_multiread_halves_the_batch_then_reads_one_by_one() -> None:
    fake = FakeKazoo(tree(), multi=ConnectionLoss())
    zk = reader(fake)
    with pytest.raises(Interrupted):
        zk.read(SPECS)
    assert zk._max_bytes == MAX_REQUEST_BYTES // 2
    with pytest.raises(Interrupted):
        zk.read(SPECS)
    assert zk.bulk  # a drop is an interruption, not a reason to give multiRead up
    results = zk.read(SPECS)  # the level after two drops in a row: plain reads
    assert [r.data for r in results] == [str(i).encode() for i in range(16)]
    assert fake.multireads == 2
    fake.multi = "ok"
    zk.read(SPECS)
    assert fake.multireads == 3


def test_an_unexpected_multiread_failure_downgrades_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeKazoo(tree(), multi=RuntimeError("kazoo changed"))
    zk = reader(fake)
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        results = zk.read(SPECS)
        zk.read(SPECS)
    assert len(results) == 16
    assert (zk.bulk, zk.rearm) == (False, False)
    [record] = caplog.records
    assert record.error_code == "E0409"  # type: ignore[attr-defined]
    assert record.getMessage() == (
        "config sync cannot use multiRead/setWatches (a multiRead failed: RuntimeError: kazoo changed); reading "
        "znodes one by one and re-reading the whole tree after each reconnect"
    )
    assert fake.multireads == 1


def test_self_check_passes_when_multiread_answers_like_plain_reads() -> None:
    zk = reader(FakeKazoo(tree()))
    zk.self_check("/r")
    assert (zk.checked, zk.bulk, zk.rearm) == (True, True, True)
    missing = reader(FakeKazoo(tree()))
    missing.self_check("/absent")
    assert (missing.bulk, missing.rearm) == (True, True)


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("no_call", "KazooClient._call is missing"),
        ("watchers", "KazooClient._child_watchers is not a dict of sets"),
        ("zxid", "KazooClient.last_zxid is not an int"),
        ("answers", "a multiRead of /r did not answer what get/get_children do"),
    ],
)
def test_self_check_downgrades_when_kazoo_internals_differ(
    breakage: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeKazoo(tree())
    if breakage == "no_call":
        fake._call = None  # type: ignore[assignment,method-assign]
    elif breakage == "watchers":
        fake._child_watchers = {"/r": [print]}  # type: ignore[assignment,dict-item]
    elif breakage == "zxid":
        fake.last_zxid = None  # type: ignore[assignment]
    else:
        original = fake._data

        def wrong(path: str) -> Any:
            data, st = original(path)
            return (data + b"!", st) if fake.multireads else (data, st)

        fake._data = wrong  # type: ignore[method-assign]
        fake.get_async = lambda path, watch=None: fake._answer(original(path))  # type: ignore[method-assign]
    zk = reader(fake)
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        zk.self_check("/r")
    assert (zk.checked, zk.bulk, zk.rearm) == (True, False, False)
    [record] = caplog.records
    assert record.getMessage() == (
        f"config sync cannot use multiRead/setWatches ({reason}); reading znodes one by one and re-reading the "
        "whole tree after each reconnect"
    )


def test_data_sizes_learned_from_reads_let_small_values_share_one_answer() -> None:
    fake = FakeKazoo(tree(40))
    zk = reader(fake)
    specs = [(f"/r/k{i:02d}", True, True) for i in range(40)]
    zk.read(specs)
    assert fake.multireads == 3  # sizes unknown (up to 1 MiB each): 16 + 16 + 8
    zk.read(specs)
    assert fake.multireads == 4  # each known to hold a byte: one answer


def test_sizes_of_znodes_found_gone_are_forgotten() -> None:
    fake = FakeKazoo(tree(40))
    zk = reader(fake)
    specs = [(f"/r/k{i:02d}", True, True) for i in range(40)]
    zk.read(specs)
    zk.keep_sizes({f"/r/k{i:02d}" for i in range(24)})  # what a full read found: k24..k39 were deleted meanwhile
    zk.forget_size("/r/k23")  # removed with its parent
    before = fake.multireads
    zk.read(specs[23:40])  # (created again) 17 reads of unknown size again (up to 1 MiB each): 16 + 1
    assert fake.multireads - before == 2
    zk.read(specs[:23])  # still known to hold a byte each: one answer
    assert fake.multireads - before == 3
