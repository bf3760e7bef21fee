"""RecursiveWatch: one addWatch per connection, routing of its events, and the fallbacks to per-node watches."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kazoo.exceptions import UnimplementedError
from kazoo.protocol.states import WatchedEvent

from autoglm_runtime.config._reader import ZooKeeperReader
from autoglm_runtime.config._recursive import RecursiveWatch
from autoglm_runtime.config._wire import AddWatch
from autoglm_runtime.config.health import SyncStatus

from .conftest import FakeClock
from .test_reader import FakeKazoo, tree


class AddWatchKazoo(FakeKazoo):
    """Answers addWatch with ``answer`` (None: accepted, or an exception) and records the requests."""

    def __init__(self, answer: BaseException | None = None) -> None:
        super().__init__(tree())
        self.answer = answer
        self.added: list[tuple[str, int]] = []

    def _call(self, request: Any, result: Any) -> None:
        if isinstance(request, AddWatch):
            self.added.append((request.path, request.mode))
            if self.answer is None:
                result.set(None)
            else:
                result.set_exception(self.answer)
            return
        super()._call(request, result)


def watch(fake: FakeKazoo, events: list[WatchedEvent], factory: Any = None) -> tuple[RecursiveWatch, SyncStatus]:
    status = SyncStatus(timer=FakeClock())
    reader = ZooKeeperReader(client=fake, watch=events.append, status=status, batch_size=500, op_timeout=2.0)  # type: ignore[arg-type]
    recursive = RecursiveWatch(
        client=fake,  # type: ignore[arg-type]
        root="/r",
        route=events.append,
        reader=reader,
        status=status,
        session_factory=factory,
        op_timeout=2.0,
    )
    return recursive, status


def test_the_watch_is_added_once_per_connection_and_its_events_are_routed() -> None:
    fake = AddWatchKazoo()
    events: list[WatchedEvent] = []
    recursive, status = watch(fake, events)
    assert status.watch_mode == "persistent"
    assert recursive.ensure(1)
    assert recursive.ensure(1)
    assert fake.added == [("/r", 1)]  # PERSISTENT_RECURSIVE
    assert recursive.ensure(2)
    assert fake.added == [("/r", 1), ("/r", 1)]
    # kazoo looks up an event's watchers with pop(path, []): paths at or under the root reach the route.
    table = fake._data_watchers
    assert table.pop("/r/k01", []) == [events.append]
    assert table.pop("/r", []) == [events.append]
    assert table.pop("/rx/k01", []) == []
    assert table.pop("/other", []) == []


def test_a_refused_add_watch_falls_back_to_per_node_watches(caplog: pytest.LogCaptureFixture) -> None:
    fake = AddWatchKazoo(UnimplementedError())
    recursive, status = watch(fake, [])
    with caplog.at_level(logging.INFO, logger="autoglm_runtime.config"):
        assert not recursive.ensure(1)
    assert (recursive.mode, status.watch_mode, recursive._reader.watching) == ("per_node", "per_node", True)
    assert "the server refused addWatch (UnimplementedError; it needs ZooKeeper 3.6+)" in caplog.text
    assert not recursive.ensure(2)
    assert len(fake.added) == 1  # never asked again


def test_without_a_second_session_the_catch_up_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = AddWatchKazoo()
    recursive, _ = watch(fake, [], factory=lambda: fake)
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        assert not recursive.catch_up(7, ["/r/k01"], ["/r"], [], lambda event: None)
        assert not recursive.catch_up(7, ["/r/k01"], ["/r"], [], lambda event: None)
    [record] = caplog.records
    assert record.error_code == "E0409"  # type: ignore[attr-defined]
    assert "it returned the same client" in record.getMessage()
