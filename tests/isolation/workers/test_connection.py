"""The host's end of a worker socket, over a real socketpair: who reads, hand-overs, bounded writes."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from autoglm_runtime.isolation._scripts import protocol
from autoglm_runtime.isolation.workers._calls import CallSink, StreamSink
from autoglm_runtime.isolation.workers._connection import Connection, PeerGone, SendTimeout


def _request(call_id: int) -> protocol.Frame:
    return protocol.encode({"id": call_id, "type": "call", "method": "echo", "args": [call_id]})


def _answer_all_in_reverse(peer: socket.socket, count: int) -> threading.Thread:
    """A peer that reads ``count`` calls, then answers them last first."""

    def run() -> None:
        reader = protocol.FrameReader(peer)
        ids = [reader.read()["id"] for _ in range(count)]
        for call_id in reversed(ids):
            protocol.write_frame(peer, {"id": call_id, "ok": True, "result": call_id})

    thread = threading.Thread(target=run, name="test-peer")
    thread.start()
    return thread


class _Witness(CallSink):
    """A call sink that notes which thread delivered its reply."""

    delivered_on = ""

    def deliver(self, message: dict[str, Any]) -> None:
        self.delivered_on = threading.current_thread().name
        super().deliver(message)


def test_a_lone_call_reads_its_own_reply_on_its_own_thread(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    sink = _Witness("echo")
    conn.register(7, sink)
    peer_thread = _answer_all_in_reverse(peer, 1)
    conn.send(_request(7))
    assert conn.wait(sink, time.monotonic() + 30)
    peer_thread.join()
    assert sink.reply == {"id": 7, "ok": True, "result": 7}
    assert sink.delivered_on == threading.current_thread().name
    assert conn.inflight == 0


def test_concurrent_callers_hand_the_read_side_over_and_each_gets_its_own_reply(
    pair: tuple[Connection, socket.socket],
) -> None:
    conn, peer = pair
    peer_thread = _answer_all_in_reverse(peer, 8)
    results: dict[int, Any] = {}

    def caller(call_id: int) -> None:
        sink = CallSink("echo")
        conn.register(call_id, sink)
        conn.send(_request(call_id))
        assert conn.wait(sink, time.monotonic() + 30)
        results[call_id] = sink.reply

    threads = [threading.Thread(target=caller, args=(i,), name=f"test-caller-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peer_thread.join()
    assert results == {i: {"id": i, "ok": True, "result": i} for i in range(8)}
    assert conn.inflight == 0


def test_a_stream_is_read_by_the_reader_thread_while_a_blocked_call_reads_its_own(
    pair: tuple[Connection, socket.socket],
) -> None:
    conn, peer = pair
    ended: list[int] = []
    stream = StreamSink("tokens", lambda: ended.append(conn.inflight))
    conn.register(1, stream)
    call = CallSink("echo")
    conn.register(2, call)
    protocol.write_frame(peer, {"id": 1, "chunk": "a"})
    protocol.write_frame(peer, {"id": 2, "ok": True, "result": 2})
    protocol.write_frame(peer, {"id": 1, "ok": True, "end": True})
    assert conn.wait(call, time.monotonic() + 30)
    assert call.reply == {"id": 2, "ok": True, "result": 2}
    assert [stream.get(30), stream.get(30)] == [{"id": 1, "chunk": "a"}, {"id": 1, "ok": True, "end": True}]
    assert ended == [0]  # once, as its end was routed (the stream no longer counted in flight)
    assert conn.inflight == 0


def test_a_wait_past_its_deadline_returns_false(pair: tuple[Connection, socket.socket]) -> None:
    conn, _ = pair
    sink = CallSink("echo")
    conn.register(3, sink)
    assert conn.wait(sink, time.monotonic() + 0.05) is False
    assert not sink.settled


def test_a_broken_stream_fails_the_blocked_call(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    sink = CallSink("echo")
    conn.register(4, sink)
    peer.shutdown(socket.SHUT_RDWR)
    assert conn.wait(sink, None)
    assert isinstance(sink.error, ConnectionError)
    assert str(sink.error) == "echo: the peer went away"


def _fill(sock: socket.socket) -> None:
    """Write to ``sock`` until the peer's side holds all it can."""
    while True:
        try:
            sock.send(b"\0" * 65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return


def test_a_write_that_cannot_start_by_its_deadline_raises_unwritten(pair: tuple[Connection, socket.socket]) -> None:
    conn, _ = pair
    _fill(conn._sock)
    with pytest.raises(SendTimeout) as info:
        conn.send(_request(5), time.monotonic() + 0.05)
    assert info.value.partial is False
    with pytest.raises(SendTimeout) as again:  # nothing was torn: a later write waits for room like the first
        conn.send(_request(6), time.monotonic() + 0.05)
    assert again.value.partial is False


def test_a_write_left_half_done_raises_partial_and_later_writes_fail(pair: tuple[Connection, socket.socket]) -> None:
    conn, _ = pair
    big = protocol.encode({"id": 6, "type": "call", "method": "echo", "args": [b"x" * (8 << 20)]})
    with pytest.raises(SendTimeout) as info:
        conn.send(big, time.monotonic() + 0.2)
    assert info.value.partial is True
    with pytest.raises(OSError, match="a frame was left half written on this connection"):
        conn.send(_request(7))
    assert conn.send_message({"type": "ping"}) is False


# Connection.call: a blocking call with nothing else in flight holds the read side from the moment it registers.
def _answer_after_a_pong(peer: socket.socket) -> threading.Thread:
    def run() -> None:
        call_id = protocol.FrameReader(peer).read()["id"]
        protocol.write_frame(peer, {"type": "pong", "seq": 1})
        protocol.write_frame(peer, {"id": call_id, "ok": True, "result": call_id})

    thread = threading.Thread(target=run, name="test-peer")
    thread.start()
    return thread


def test_a_lone_call_takes_its_own_reply_and_routes_what_came_before(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    before = conn.last_pong
    peer_thread = _answer_after_a_pong(peer)
    reply = conn.call(11, "echo", _request(11), None, time.monotonic() + 30)
    peer_thread.join()
    assert reply == {"id": 11, "ok": True, "result": 11}
    assert conn.last_pong > before
    assert conn.inflight == 0
    after = _Witness("echo")  # the read side was passed on: the next blocked call reads for itself
    conn.register(12, after)
    protocol.write_frame(peer, {"id": 12, "ok": True, "result": 12})
    assert conn.wait(after, time.monotonic() + 30)
    assert after.delivered_on == threading.current_thread().name


def test_calls_in_flight_together_each_get_their_own_reply(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    peer_thread = _answer_all_in_reverse(peer, 6)
    results: dict[int, Any] = {}

    def caller(call_id: int) -> None:
        results[call_id] = conn.call(call_id, "echo", _request(call_id), None, time.monotonic() + 30)

    threads = [threading.Thread(target=caller, args=(i,), name=f"test-caller-{i}") for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peer_thread.join()
    assert results == {i: {"id": i, "ok": True, "result": i} for i in range(6)}
    assert conn.inflight == 0


def test_a_lone_call_fails_with_the_supervisors_error_when_the_worker_end_closes(
    pair: tuple[Connection, socket.socket],
) -> None:
    conn, peer = pair

    def read_then_close() -> None:
        protocol.FrameReader(peer).read()
        peer.shutdown(socket.SHUT_RDWR)

    closer = threading.Thread(target=read_then_close, name="test-peer")
    closer.start()
    with pytest.raises(ConnectionError, match=r"^echo: the peer went away$"):
        conn.call(13, "echo", _request(13), None, time.monotonic() + 30)
    closer.join()
    assert conn.inflight == 0


def test_a_lone_call_past_its_deadline_returns_none_and_is_unregistered(pair: tuple[Connection, socket.socket]) -> None:
    conn, _ = pair
    assert conn.call(14, "echo", _request(14), None, time.monotonic() + 0.05) is None
    assert conn.inflight == 0


def test_a_lone_call_not_written_in_time_frees_the_read_side(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    _fill(conn._sock)
    with pytest.raises(SendTimeout) as info:
        conn.call(15, "echo", _request(15), time.monotonic() + 0.05, time.monotonic() + 30)
    assert info.value.partial is False
    assert conn.inflight == 0
    after = _Witness("echo")
    conn.register(16, after)
    protocol.write_frame(peer, {"id": 16, "ok": True, "result": 16})
    assert conn.wait(after, time.monotonic() + 30)
    assert after.delivered_on == threading.current_thread().name


def test_a_lone_call_whose_reply_races_a_closer_fails_with_the_closers_error_not_a_missing_reply(
    pair: tuple[Connection, socket.socket],
) -> None:
    # The closer takes every sink under the lock and fails them after releasing it; a reply read in between
    # must not leave the call "answered" with neither reply nor error (which calls.call takes for a timeout).
    conn, peer = pair
    taken, release = threading.Event(), threading.Event()

    def reason(method: str) -> BaseException:
        if threading.current_thread().name == "test-closer":  # hold the closer between taking and failing
            taken.set()
            release.wait(30)
        return ConnectionError(f"{method}: closed")

    outcome: list[Any] = []

    def caller() -> None:
        try:
            outcome.append(conn.call(17, "echo", _request(17), None, time.monotonic() + 30))
        except ConnectionError as exc:
            outcome.append(exc)

    call_thread = threading.Thread(target=caller, name="test-caller")
    call_thread.start()
    protocol.FrameReader(peer).read()  # the call registered and is reading for itself
    closer = threading.Thread(target=conn.close, args=(reason,), name="test-closer")
    closer.start()
    assert taken.wait(30)
    protocol.write_frame(peer, {"id": 17, "ok": True, "result": 17})
    call_thread.join(30)
    release.set()
    closer.join(30)
    assert not call_thread.is_alive()
    assert [type(item) for item in outcome] == [ConnectionError]
    assert str(outcome[0]) == "echo: closed"
    assert conn.inflight == 0


@contextlib.contextmanager
def _interrupting_main_once(ready: Callable[[], bool]) -> Iterator[None]:
    """Ctrl-C in the main thread once ``ready()`` holds: one ``KeyboardInterrupt``, whenever the main thread takes it.

    A single SIGINT is not enough: one that arrives after the main thread last looked for signals and before it
    blocks (in ``sendall``, or a lock's wait) is taken only when that wait ends, which may be never. So SIGINT is
    sent again until the handler has raised, and the handler raises once (later ones only note the signal)."""
    raised = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if not raised.is_set():
            raised.set()
            raise KeyboardInterrupt

    def interrupt() -> None:
        while not ready() and not stop.is_set():
            stop.wait(0.001)
        while not raised.is_set() and not stop.is_set():
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            raised.wait(0.005)

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, handler)
    interrupter = threading.Thread(target=interrupt, name="test-interrupter")
    interrupter.start()
    try:
        yield
    finally:
        stop.set()
        interrupter.join()
        signal.signal(signal.SIGINT, previous)


def test_a_call_interrupted_while_waiting_its_turn_leaves_no_sink_and_does_not_take_the_read_side_with_it(
    pair: tuple[Connection, socket.socket],
) -> None:
    # Ctrl-C in the main thread while its call sleeps behind another call's read: once that call has its reply,
    # the read side must not be handed to the interrupted call (nobody would read again).
    conn, peer = pair
    requests = protocol.FrameReader(peer)
    first: list[Any] = []
    holder = threading.Thread(
        target=lambda: first.append(conn.call(21, "echo", _request(21), None, time.monotonic() + 30)),
        name="test-holder",
    )
    holder.start()
    assert requests.read()["id"] == 21  # the holder registered alone: it holds the read side

    with _interrupting_main_once(lambda: bool(conn._waiting)), pytest.raises(KeyboardInterrupt):
        conn.call(22, "echo", _request(22), None, time.monotonic() + 30)
    assert requests.read()["id"] == 22
    protocol.write_frame(peer, {"id": 21, "ok": True, "result": 21})
    holder.join(30)
    assert first == [{"id": 21, "ok": True, "result": 21}]
    assert conn.inflight == 0
    protocol.write_frame(peer, {"id": 22, "ok": True, "result": 22})  # late: nobody waits for it any more
    peer_thread = _answer_all_in_reverse(peer, 1)
    assert conn.call(23, "echo", _request(23), None, time.monotonic() + 30) == {"id": 23, "ok": True, "result": 23}
    peer_thread.join()


def test_a_lone_call_interrupted_while_writing_its_request_frees_the_read_side(
    pair: tuple[Connection, socket.socket],
) -> None:
    conn, peer = pair
    _fill(conn._sock)  # the request cannot go out: the call blocks writing it, holding the read side

    with _interrupting_main_once(lambda: conn.inflight > 0), pytest.raises(KeyboardInterrupt):
        conn.call(31, "echo", _request(31), None, time.monotonic() + 30)
    assert conn.inflight == 0
    while True:  # the peer drops what filled its buffer (none of the request went out)
        try:
            peer.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
    peer_thread = _answer_all_in_reverse(peer, 1)
    assert conn.call(32, "echo", _request(32), None, time.monotonic() + 30) == {"id": 32, "ok": True, "result": 32}
    peer_thread.join()


def test_a_lone_call_to_a_closed_worker_end_says_the_peer_is_gone_and_frees_everything(
    pair: tuple[Connection, socket.socket],
) -> None:
    conn, peer = pair
    peer.close()  # the worker died while idle: nothing of the request can reach it
    with pytest.raises(PeerGone):
        conn.call(41, "echo", _request(41), time.monotonic() + 30, time.monotonic() + 30)
    assert (conn.inflight, conn._reading) == (0, False)
    # Told not to retry (a second attempt), the call fails as any call on a broken stream does.
    with pytest.raises(ConnectionError, match=r"^echo: the peer went away$"):
        conn.call(42, "echo", _request(42), time.monotonic() + 30, time.monotonic() + 30, retry=False)
    assert conn.inflight == 0


def test_a_call_beside_another_on_a_closed_worker_end_says_the_peer_is_gone_too(
    pair: tuple[Connection, socket.socket],
) -> None:
    conn, peer = pair
    other = CallSink("stream")
    conn.register(43, other)  # something else in flight: the worker died during it, but never had this request
    peer.close()
    with pytest.raises(PeerGone):
        conn.call(44, "echo", _request(44), time.monotonic() + 30, time.monotonic() + 30)
    assert (conn.inflight, other.settled) == (1, False)  # the other call is the reader's to fail
    with pytest.raises(ConnectionError, match=r"^echo: the peer went away$"):
        conn.call(45, "echo", _request(45), time.monotonic() + 30, time.monotonic() + 30, retry=False)
    assert (conn.inflight, str(other.error)) == (0, "stream: the peer went away")
    with pytest.raises(PeerGone):  # broken before it registered: none of it went out
        conn.call(46, "echo", _request(46), time.monotonic() + 30, time.monotonic() + 30)


def test_an_undecodable_frame_for_no_call_is_logged_with_its_code(
    pair: tuple[Connection, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    conn, peer = pair
    body = b'{"id":999,"ok":true,"result":{"$b":1}}'  # well framed, but names a buffer the frame does not hold
    stream = StreamSink("tokens", lambda: None)
    conn.register(7, stream)
    with caplog.at_level(logging.WARNING, logger="test"):
        peer.sendall(struct.pack(">IH", len(body), 0) + body)
        protocol.write_frame(peer, {"id": 7, "ok": True, "end": True})  # read after it: the stream is in step
        assert stream.get(30) == {"id": 7, "ok": True, "end": True}
    (record,) = [r for r in caplog.records if "cannot decode" in r.getMessage()]
    assert (getattr(record, "error_code", None), getattr(record, "model", None)) == ("E0105", "m")
