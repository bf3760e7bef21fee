"""A call its caller gave up on while the worker runs it: its place is freed when the worker is done, once."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from autoglm_runtime.isolation._scripts import protocol
from autoglm_runtime.isolation.workers import _calls
from autoglm_runtime.isolation.workers._calls import AbandonedSink, AsyncCallSink, StreamSink
from autoglm_runtime.isolation.workers._connection import Connection
from autoglm_runtime.testing import wait_until


def test_an_abandoned_call_is_done_when_its_reply_comes_and_only_then(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    loop = asyncio.new_event_loop()
    try:
        conn.register(3, AsyncCallSink("slow", loop))
        done: list[str] = []
        assert conn.replace(3, AbandonedSink("slow", lambda: done.append("done")))
        assert (conn.inflight, done) == (1, [])
        protocol.write_frame(peer, {"id": 3, "ok": True, "result": 1})
        wait_until(lambda: conn.inflight == 0, 30, "the abandoned call's reply to be read")
        assert done == ["done"]
        assert not conn.replace(3, AbandonedSink("slow", lambda: done.append("again")))  # nothing due any more
    finally:
        loop.close()


def test_an_abandoned_call_is_done_once_when_its_worker_goes(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    done: list[str] = []
    sink = AbandonedSink("slow", lambda: done.append("done"))
    conn.register(4, sink)
    peer.close()
    wait_until(lambda: done, 30, "the broken connection to fail the abandoned call")
    sink.deliver({"id": 4, "ok": True, "result": 1})
    assert done == ["done"]
    assert conn.inflight == 0


def test_an_abandoned_call_not_done_within_its_time_is_late_once() -> None:
    done: list[str] = []
    late = threading.Event()
    sink = AbandonedSink("slow", lambda: done.append("done"))
    sink.watch(0.01, late.set)
    assert late.wait(30)
    wait_until(lambda: done, 30, "the place to be freed once the worker was killed")
    sink.fail(ConnectionError("killed"))  # the kill broke the connection: freed once all the same
    assert done == ["done"]


def _watched(*sinks: AbandonedSink) -> bool:
    """Whether the shared watch still holds a deadline of one of ``sinks``."""
    with _calls._watch._cond:
        return any(sink in sinks for _, _, sink in _calls._watch._due)


def test_an_abandoned_call_done_in_time_is_never_late() -> None:
    late: list[str] = []
    first, second = AbandonedSink("slow", lambda: None), AbandonedSink("slow", lambda: None)
    first.watch(2.0, lambda: late.append("first"))
    second.watch(1.0, lambda: late.append("second"))  # sooner: the watch thread wakes for it
    first.deliver({"id": 1, "ok": True, "result": 1})
    second.deliver({"id": 2, "ok": True, "end": True})
    # (other tests' deadlines may still be pending in the one watch: wait for these two only)
    wait_until(lambda: not _watched(first, second), 30, "both deadlines to pass")
    first.watch(0.0, lambda: late.append("again"))  # done already: nothing to watch
    assert (late, _watched(first, second)) == ([], False)
    assert [t.name for t in threading.enumerate()].count("autoglm-abandoned-watch") == 1


def test_a_stream_closed_early_is_done_at_its_end_not_at_a_chunk_still_on_its_way(
    pair: tuple[Connection, socket.socket],
) -> None:
    conn, peer = pair
    conn.register(5, StreamSink("steps", lambda: None))
    other = StreamSink("other", lambda: None)
    conn.register(6, other)
    done: list[str] = []
    assert conn.replace(5, AbandonedSink("steps", lambda: done.append("done")))
    protocol.write_frame(peer, {"id": 5, "chunk": 1})  # sent before the worker saw the cancel
    protocol.write_frame(peer, {"id": 6, "chunk": 1})
    assert other.get(30) == {"id": 6, "chunk": 1}  # read after the closed stream's chunk
    assert (done, conn.inflight) == ([], 2)
    protocol.write_frame(peer, {"id": 5, "ok": True, "end": True})
    wait_until(lambda: conn.inflight == 1, 30, "the closed stream's end to be read")
    assert done == ["done"]


def test_an_abandoned_call_late_frees_its_place_only_once_its_worker_was_killed() -> None:
    # The reply may come between the timer's look and the kill (the kill logs first, then waits for the lifecycle
    # lock): freeing the place then would hand the doomed worker the next call, which the kill then fails (E0103).
    events: list[str] = []
    killed = threading.Event()
    sink = AbandonedSink("slow", lambda: events.append("freed"))

    def kill() -> None:
        sink.deliver({"id": 1, "ok": True, "result": 1})  # the reply, just as the timer decided
        events.append("killed")
        sink.fail(ConnectionError("killed"))  # the kill breaks the connection
        killed.set()

    sink.watch(0.0, kill)
    assert killed.wait(30)
    wait_until(lambda: "freed" in events, 30, "the place to be freed")
    assert events == ["killed", "freed"]


def test_a_kill_that_fails_at_its_deadline_is_logged_and_later_deadlines_still_fire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One watch thread runs every deadline: a kill that raises (no fork left for the restart) must not end it.
    def failing_kill() -> None:
        raise OSError("Resource temporarily unavailable")

    late = threading.Event()
    first, second = AbandonedSink("first", lambda: None), AbandonedSink("second", lambda: None)
    first.watch(0.0, failing_kill)
    second.watch(0.05, late.set)
    assert late.wait(30)
    [record] = [r for r in caplog.records if "killing its worker at its deadline failed" in r.getMessage()]
    assert (record.getMessage(), getattr(record, "error_code", None)) == (
        "model call first(): killing its worker at its deadline failed",
        "E0103",
    )


def test_a_deadline_added_when_no_thread_can_start_is_watched_once_one_can(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_calls, "_watch", _calls._Watch())  # a watch of the test's own, with no thread yet
    late: list[str] = []
    start = threading.Thread.start

    def refused(self: threading.Thread) -> None:  # what CPython raises when the system has no thread to give
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    AbandonedSink("slow", lambda: None).watch(0.0, lambda: late.append("first"))
    assert caplog.records[-1].error_code == "E0103"  # type: ignore[attr-defined]
    assert "no thread could start to watch the deadline of abandoned call slow()" in caplog.records[-1].getMessage()
    monkeypatch.setattr(threading.Thread, "start", start)
    AbandonedSink("slower", lambda: None).watch(0.0, lambda: late.append("second"))  # a thread starts now...
    wait_until(lambda: len(late) == 2, 30, "both deadlines to run")  # ...and runs the deadline that waited too
    assert sorted(late) == ["first", "second"]
