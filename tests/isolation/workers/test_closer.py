"""Dropped streams are closed on the closer thread: never waiting for a lock the dropping thread holds."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections.abc import Callable

import pytest

from autoglm_runtime.isolation.workers import _closer


@pytest.fixture(autouse=True)
def started(monkeypatch: pytest.MonkeyPatch) -> None:
    # Long enough that a loaded machine never gives up waiting for a close that can run; only the test of a
    # close that cannot run (yet) shortens it.
    monkeypatch.setattr(_closer, "CLOSE_WAIT", 60.0)
    _closer.ensure_started()


def test_a_close_runs_on_the_closer_thread_before_close_dropped_returns() -> None:
    ran: list[str] = []
    _closer.close_dropped(lambda: ran.append(threading.current_thread().name))
    assert ran == ["autoglm-stream-closer"]


def test_a_close_needing_a_lock_the_dropping_thread_holds_completes_once_it_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_closer, "CLOSE_WAIT", 0.2)
    lock = threading.Lock()
    closed = threading.Event()

    def close() -> None:
        with lock:
            closed.set()

    with lock:  # as the garbage collector may run a stream's __del__ inside a critical section
        _closer.close_dropped(close)  # returns after CLOSE_WAIT instead of waiting for this thread for ever
        assert not closed.is_set()
    assert closed.wait(30)


def test_a_failing_close_is_dropped_and_the_next_one_runs() -> None:
    def failing() -> None:
        raise OSError("the worker went away")

    ran: list[int] = []
    _closer.close_dropped(failing)
    _closer.close_dropped(lambda: ran.append(1))
    assert ran == [1]


def test_a_stream_dropped_on_the_closer_thread_is_queued_not_waited_for() -> None:
    order: list[str] = []

    def outer() -> None:
        _closer.close_dropped(lambda: order.append("inner"))  # on the closer thread: queued, no wait
        order.append("outer")

    _closer.close_dropped(outer)
    _closer.close_dropped(lambda: None)  # the queue is served in order: both ran once this returns
    assert order == ["outer", "inner"]


def test_a_closed_stream_is_let_go_before_close_dropped_returns() -> None:
    # The close is the dropped stream's bound method: kept by the closer thread, the stream (and the chunks it
    # buffered) would live on until the next stream is dropped.
    class Stream:
        def close(self) -> None:
            pass

    stream = Stream()
    gone = weakref.ref(stream)
    _closer.close_dropped(stream.close)
    del stream
    assert gone() is None


def test_a_forked_child_runs_none_of_the_closes_its_parent_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    # Run in the child, the parent's closes would cancel the parent's calls on the sockets both share (or wait
    # for ever for a lock held at the fork, and with it every stream the child drops).
    monkeypatch.setattr(_closer, "CLOSE_WAIT", 0.0)
    lock = threading.Lock()
    closing = threading.Event()
    ran_in: list[int] = []

    def blocked() -> None:
        closing.set()
        with lock:
            pass

    with lock:
        _closer.close_dropped(blocked)
        _closer.close_dropped(lambda: ran_in.append(os.getpid()))  # queued behind `blocked`
        assert closing.wait(60)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                _closer.ensure_started()  # as opening the child's first stream does
                _closer.CLOSE_WAIT = 60.0
                _closer.close_dropped(lambda: None)
                os.write(write, repr(ran_in).encode())
            finally:
                os._exit(0)
        os.close(write)
        assert os.waitpid(pid, 0)[1] == 0
        with os.fdopen(read) as child:
            assert child.read() == "[]"
    monkeypatch.setattr(_closer, "CLOSE_WAIT", 60.0)
    _closer.close_dropped(lambda: None)
    assert ran_in == [os.getpid()]


class _InACycle:
    """Finalized by the garbage collector only, as a stream a traceback holds is."""

    def __init__(self, close: Callable[[], None]) -> None:
        self.close = close
        self.me = self

    def __del__(self) -> None:
        _closer.dropped(self.close)


def test_a_stream_dropped_by_its_last_reference_is_closed_inline() -> None:
    # (not handed over: where threads contend for the GIL, a handoff took up to a second per drop)
    ran: list[str] = []
    _closer.dropped(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]


def test_a_stream_the_garbage_collector_finds_is_closed_on_the_closer_thread() -> None:
    ran: list[str] = []
    _InACycle(lambda: ran.append(threading.current_thread().name))
    gc.collect()
    assert ran == ["autoglm-stream-closer"]
