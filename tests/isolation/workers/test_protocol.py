"""Frames of JSON plus out-of-band binary buffers between host and worker."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tests.isolation.workers._helpers import exact

from autoglm_runtime.isolation._scripts import codec, decoding
from autoglm_runtime.isolation._scripts.protocol import (
    MAX_FRAME,
    ArrayValue,
    DecodeError,
    FrameError,
    FrameReader,
    PeerClosedError,
    blob_call,
    blob_reply,
    decode,
    encode,
    send,
    wait_writable,
    write_frame,
)
from autoglm_runtime.isolation.workers.calls import request_frame
from autoglm_runtime.isolation.workers.spec import WORKER_SCRIPT
from autoglm_runtime.testing import fail_in_ci_else_skip

# Keys starting with "$" are where tags live: user dicts with such keys (even ones that look exactly like a
# tag) must round-trip unchanged.
KEYS = st.text() | st.text().map(lambda key: "$" + key) | st.sampled_from(["$b", "$$b", "$ba", "$mv", "$array", "$"])
BINARY = st.binary() | st.binary().map(bytearray) | st.binary().map(memoryview)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | BINARY,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS, children, max_size=4)
        | st.builds(lambda key, value: {key: value}, st.sampled_from(["$b", "$$b", "$array"]), children)
    ),
    max_leaves=20,
)
ARRAYS = hnp.arrays(
    dtype=hnp.scalar_dtypes() | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes(),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


def _through_socket(value: Any) -> Any:
    a, b = socket.socketpair()
    try:
        frame = encode(value)
        sender = threading.Thread(target=send, args=(a, frame), name="test-sender")
        sender.start()
        got = FrameReader(b).read()
        sender.join()
        return got
    finally:
        a.close()
        b.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@settings(deadline=None)  # a thread and a socket per example: a loaded machine is slow, not wrong
@given(JSON)
def test_round_trip_isexact(value: object) -> None:
    assert exact(_through_socket(value), value)


@settings(deadline=None)
@given(ARRAYS)
def test_numpy_arrays_round_trip_exactly(array: np.ndarray) -> None:
    got = _through_socket({"a": array, "t": [array]})
    assert exact(got, {"a": array, "t": [array]})
    assert got["a"].flags.writeable


def test_non_contiguous_arrays_travel_in_c_order() -> None:
    array = np.arange(12, dtype=np.int16).reshape(3, 4).T
    got = _through_socket(array)
    assert got.flags.c_contiguous
    assert np.array_equal(got, array)


def test_object_and_structured_arrays_are_refused() -> None:
    with pytest.raises(TypeError) as info:
        encode(np.array([object()]))
    assert str(info.value).startswith("a numpy array of dtype object cannot be sent to or from a model")
    with pytest.raises(TypeError):
        encode(np.zeros(2, dtype=[("x", "<i4")]))


def test_without_numpy_arrays_arrive_as_array_values(monkeypatch: pytest.MonkeyPatch) -> None:
    array = np.arange(6, dtype="<f4").reshape(2, 3)
    monkeypatch.setattr(decoding, "_NUMPY", [None])  # as in a worker whose environment has no numpy
    got = _through_socket({"x": array})["x"]
    assert isinstance(got, ArrayValue)
    assert (got.dtype, got.shape, bytes(got.data)) == ("<f4", (2, 3), array.tobytes())
    assert repr(got) == "ArrayValue(dtype='<f4', shape=(2, 3), nbytes=24)"
    monkeypatch.setattr(decoding, "_NUMPY", [np])
    back = _through_socket(got)  # an array value travels back as the array it stands for
    assert exact(back, array)


def test_binary_values_travel_out_of_band() -> None:
    payload = bytes(range(256)) * 4
    head, buffers = encode({"data": payload})
    assert payload not in head
    assert [bytes(view) for view in buffers] == [payload]
    assert buffers[0].obj is payload  # no copy on the sending side


def test_memoryviews_of_any_format_arrive_as_their_bytes() -> None:
    view = memoryview(np.arange(3, dtype="<i4"))
    got = _through_socket(view)
    assert isinstance(got, memoryview)
    assert (got.format, bytes(got)) == ("B", view.tobytes())


def test_frames_arrive_in_order_through_a_socket(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    for message in ({"id": 1}, [1, 2, 3], "x" * 100_000, b"\x00\x01"):
        write_frame(a, message)
    reader = FrameReader(b)
    assert [reader.read(), reader.read(), reader.read(), reader.read()] == [
        {"id": 1},
        [1, 2, 3],
        "x" * 100_000,
        b"\x00\x01",
    ]


def test_tuples_arrive_as_lists() -> None:
    assert _through_socket({"t": (1, 2)}) == {"t": [1, 2]}


def test_unsendable_values_raise_type_error() -> None:
    with pytest.raises(TypeError) as info:
        encode({"x": object()})
    assert str(info.value) == (
        "object of type object cannot be sent to or from a model (JSON values, bytes and arrays only)"
    )


def test_lone_surrogates_survive() -> None:
    assert _through_socket("\ud800") == "\ud800"


def test_read_times_out_at_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    _, b = pair
    with pytest.raises(TimeoutError):
        FrameReader(b).read(time.monotonic() + 0.05)


def test_a_deadline_seconds_away_is_kept_past_the_blocking_receive(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # The kernel's bound on the first receive is far shorter than the deadline: its running out must not end the
    # read early, and a frame arriving after it must still be read.
    a, b = pair
    reader = FrameReader(b)
    deadline = time.monotonic() + 2.6
    with pytest.raises(TimeoutError):
        reader.read(deadline)
    assert time.monotonic() >= deadline
    sender = threading.Timer(2.2, write_frame, (a, {"late": True}))
    sender.start()
    try:
        assert reader.read(time.monotonic() + 30.6) == {"late": True}
    finally:
        sender.join()


def test_a_read_without_deadline_leaves_the_socket_without_a_receive_timeout(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    reader = FrameReader(b)
    with pytest.raises(TimeoutError):
        reader.read(time.monotonic() + 0.05)
    assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) != bytes(16)  # bounded for that read
    write_frame(a, 1)
    assert reader.read() == 1
    assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) == bytes(16)  # none, for whoever reads next


class _DeadlineMissed(Exception):
    pass


def test_a_deadline_is_kept_while_signals_keep_interrupting_the_wait(pair: tuple[socket.socket, socket.socket]) -> None:
    # Python retries a receive interrupted by a signal, and the kernel then restarts its whole SO_RCVTIMEO bound:
    # signals more frequent than the bound must not keep the read waiting past its deadline.
    _, b = pair
    deadline = time.monotonic() + 1.0

    def tick(*_: object) -> None:
        if time.monotonic() > deadline + 20:  # far past the deadline: the read never noticed it
            raise _DeadlineMissed

    previous = signal.signal(signal.SIGALRM, tick)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    try:
        with pytest.raises(TimeoutError):
            FrameReader(b).read(deadline)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("timeout", [1e30, float("inf")])
def test_a_deadline_beyond_any_timeval_still_reads(pair: tuple[socket.socket, socket.socket], timeout: float) -> None:
    a, b = pair
    write_frame(a, {"x": 1})
    assert FrameReader(b).read(time.monotonic() + timeout) == {"x": 1}


def test_past_deadline_raises_without_reading(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    write_frame(a, 1)
    with pytest.raises(TimeoutError):
        FrameReader(b).read(time.monotonic() - 1)


def test_peer_closed_between_frames(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    with pytest.raises(PeerClosedError) as info:
        FrameReader(b).read()
    assert str(info.value) == "peer closed the connection between frames"


@pytest.mark.parametrize("cut", [3, 8, 20])
def test_peer_closed_inside_a_frame(pair: tuple[socket.socket, socket.socket], cut: int) -> None:
    a, b = pair
    head, buffers = encode({"id": 1, "data": b"x" * 10})
    a.sendall((head + bytes(buffers[0]))[:cut])
    a.close()
    with pytest.raises(PeerClosedError) as info:
        FrameReader(b).read()
    assert str(info.value) == "peer closed the connection inside a frame"


def test_oversized_length_is_a_corrupt_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(struct.pack(">IH", MAX_FRAME + 1, 0))
    with pytest.raises(FrameError) as info:
        FrameReader(b).read()
    assert (
        str(info.value) == f"frame length {MAX_FRAME + 1} exceeds the limit of {MAX_FRAME} bytes; the stream is corrupt"
    )


def test_invalid_json_is_a_frame_error() -> None:
    with pytest.raises(FrameError) as info:
        decode(b"{nope")
    assert str(info.value).startswith("frame of 5 bytes is not valid JSON: ")


def test_user_dicts_that_look_like_tags_arrive_unchanged() -> None:
    assert _through_socket({"$b": 0}) == {"$b": 0}
    assert exact(
        _through_socket([{"$b": b"hi"}, {"$$b": "x", "plain": b""}, "$5"]),
        [{"$b": b"hi"}, {"$$b": "x", "plain": b""}, "$5"],
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"$b":3}',
            "frame of 8 bytes holds an invalid tagged value: a binary tag names buffer 3, but the frame holds 0",
        ),
        (
            b'{"$array":0,"dtype":5,"shape":[]}',
            "frame of 33 bytes holds an invalid tagged value: an array tag needs a dtype string and a list of ints, "
            "got 5 and []",
        ),
        (
            b'{"$x":1}',
            "frame of 8 bytes holds an invalid tagged value: unknown tag '$x' (user keys starting with '$' travel "
            "escaped as '$$')",
        ),
    ],
)
def test_malformed_tags_are_decode_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(body, [] if b"$b" in body else [bytearray(4)])
    assert str(info.value) == message


def test_an_array_that_does_not_fit_its_buffer_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b'{"$array":0,"dtype":"<f4","shape":[3]}', [bytearray(8)])
    assert str(info.value).startswith("frame of 38 bytes holds an invalid tagged value: an array of dtype '<f4' and")


def test_a_decode_error_names_the_call_it_answers() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b'{"id":17,"result":{"$x":1}}')
    assert info.value.call_id == 17
    with pytest.raises(DecodeError) as info:
        decode(b'{"type":"pong","$x":1}')
    assert info.value.call_id is None


def test_a_frame_that_cannot_be_decoded_leaves_the_stream_in_step(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    body = b'{"$b":"x"}'
    a.sendall(struct.pack(">IH", len(body), 1) + struct.pack(">Q", 3) + body + b"abc")
    write_frame(a, {"id": 2, "d": b"z" * 100_000})
    reader = FrameReader(b)
    with pytest.raises(DecodeError):
        reader.read()
    assert reader.read() == {"id": 2, "d": b"z" * 100_000}


def test_values_nested_too_deeply_raise_value_error() -> None:
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="nested too deeply") as info:
        encode(looped)
    assert str(info.value) == "the value is nested too deeply (or contains itself) to be sent to or from a model"


def test_a_container_of_a_failed_encode_encodes_again_once_fixed() -> None:
    # The thread's encoder is kept from frame to frame: an encode that fails part-way must not leave its
    # containers marked as being encoded, or the same (fixed) list would read as containing itself.
    outer = [[1, object()]]
    with pytest.raises(TypeError):
        encode(outer)
    outer[0][1] = 2
    assert _through_socket(outer) == [[1, 2]]


PY313 = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")


def test_a_value_containing_itself_is_found_without_running_out_of_stack() -> None:
    # Python 3.13's C encoder recurses on the C stack: without a circular check a looped value crashed a thread
    # with a small stack (a segmentation fault) instead of raising.
    if not PY313.exists():
        fail_in_ci_else_skip(f"needs the pyenv interpreter {PY313}: install it with 'pyenv install 3.13.0'")
    script = textwrap.dedent(
        f"""
        import importlib.util, sys, threading
        spec = importlib.util.spec_from_file_location("_autoglm_worker", {WORKER_SCRIPT.as_posix()!r})
        worker = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(worker)
        codec = worker._load_sibling("codec")  # (as the worker loads its modules)
        threading.stack_size(512 * 1024)
        said = []
        def run():
            looped = [1]
            looped.append(looped)
            try:
                codec.encode(looped)
            except ValueError as exc:
                said.append(str(exc))
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        print(said)
        """
    )
    done = subprocess.run([str(PY313), "-I", "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (
        0,
        "['the value is nested too deeply (or contains itself) to be sent to or from a model']",
    )


def test_large_buffers_cross_a_socket_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    payload = bytes(range(256)) * 40_000  # 10 MB: many partial sendmsg calls
    sender = threading.Thread(target=write_frame, args=(a, [payload, bytearray(payload[:5])]), name="test-sender")
    sender.start()
    got = FrameReader(b).read()
    sender.join()
    assert got == [payload, bytearray(payload[:5])]


# The small-call fast paths: a request or reply carrying plain JSON or binary values (a lone tag is untagged
# without the general walk), a body decoded by the JSON scanner directly, a frame written by one sendmsg.
CALL_VALUES = st.lists(JSON, max_size=3)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=2**62), CALL_VALUES, st.dictionaries(st.text(), JSON, max_size=2))
def test_call_and_reply_shapes_round_trip_exactly(call_id: int, args: list[Any], kwargs: dict[str, Any]) -> None:
    request = {"id": call_id, "type": "call", "method": "echo", "args": args, "kwargs": kwargs, "stream": False}
    assert exact(_through_socket(request), request)
    for result in (*args, b"x" * 1024, bytearray(b"y"), memoryview(b"z")):
        reply = {"id": call_id, "ok": True, "result": result}
        assert exact(_through_socket(reply), reply)


@given(JSON, st.sampled_from([" ", "\n", "\t ", "\r\n"]), st.booleans(), st.booleans())
def test_bodies_with_surrounding_space_decode_alike(value: object, space: str, before: bool, after: bool) -> None:
    head, buffers = encode(value)
    count = struct.unpack_from(">IH", head)[1]
    body = head[6 + 8 * count :]
    padded = (space if before else "").encode() + body + (space if after else "").encode()
    assert exact(decode(padded, [bytearray(view) for view in buffers]), value)


@pytest.mark.parametrize("body", [b"", b"{nope", b'{"a":1} x', b"1 2", b'{"a":1}}', b'{"$b":0} {'])
def test_invalid_bodies_fail_as_json_decode_says(body: bytes) -> None:
    try:
        json.loads(body.decode())
    except ValueError as exc:
        expected = f"frame of {len(body)} bytes is not valid JSON: {exc}"
    with pytest.raises(DecodeError) as info:
        decode(body, [bytearray(1)])
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"$b":1}', "a binary tag names buffer 1, but the frame holds 1"),
        (b'{"$ba":-1}', "a binary tag names buffer -1, but the frame holds 1"),
        (b'{"$mv":"0"}', "a binary tag names buffer '0', but the frame holds 1"),
        (b'{"$mv":true}', "a binary tag names buffer True, but the frame holds 1"),
    ],
)
def test_lone_tags_naming_no_buffer_are_decode_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(body, [bytearray(1)])
    assert str(info.value) == f"frame of {len(body)} bytes holds an invalid tagged value: {message}"


def test_frames_of_more_buffers_than_one_sendmsg_takes_cross_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    value = [bytes([i % 256]) * (i % 7) for i in range(3000)]  # beyond IOV_MAX (1024) parts, some empty
    sender = threading.Thread(target=write_frame, args=(a, value), name="test-sender")
    sender.start()
    got = FrameReader(b).read()
    sender.join()
    assert got == value


def test_a_frame_sent_with_a_blocked_callback_crosses_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    payload = bytes(range(256)) * 8_000  # 2 MB: more than the socket takes at once, so blocked() is called
    waits: list[bool] = []
    called = threading.Event()

    def blocked(started: bool) -> None:
        waits.append(started)
        called.set()
        assert wait_writable(a, 30)

    sender = threading.Thread(target=send, args=(a, encode({"id": 1, "d": payload}), blocked), name="test-sender")
    sender.start()
    # Nothing reads until the sender is blocked: 2 MB cannot fit in the socket's buffer, so blocked() is called.
    assert called.wait(30)
    got = FrameReader(b).read()
    sender.join()
    assert got == {"id": 1, "d": payload}
    assert waits[-1] is True


# Each thread keeps its encoder from frame to frame: frames stay its own, and no caller's buffer stays exported.
def test_a_bytearray_can_grow_again_once_its_frame_is_gone() -> None:
    value = bytearray(b"abc")
    frame = encode({"id": 1, "ok": True, "result": value})
    assert bytes(frame[1][0]) == b"abc"
    del frame
    value.extend(b"d")  # BufferError while anything still holds a view of it
    assert value == bytearray(b"abcd")


def test_threads_encoding_at_once_each_get_their_own_buffers() -> None:
    errors: list[str] = []
    start = threading.Barrier(8)

    def encode_many(n: int) -> None:
        start.wait()
        for i in range(300):
            message = {"id": i, "args": [bytes([n]) * (i % 7 + 1), {"k": bytearray([n, i % 256])}], "n": n}
            head, buffers = encode(message)
            got = decode(head[6 + 8 * len(buffers) :], [bytearray(b) for b in buffers])
            if not exact(got, message):
                errors.append(f"thread {n}, frame {i}: {got!r}")

    threads = [threading.Thread(target=encode_many, args=(n,), name=f"test-encoder-{n}") for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_value_that_cannot_travel_leaves_the_next_frame_whole() -> None:
    with pytest.raises(TypeError, match="object of type object cannot be sent"):
        encode({"id": 1, "args": [b"x", object()]})
    head, buffers = encode({"id": 2, "args": [b"y"]})
    assert [bytes(b) for b in buffers] == [b"y"]
    assert decode(head[14:], [bytearray(b"y")]) == {"id": 2, "args": [b"y"]}


def _same_frame(got: codec.Frame, want: codec.Frame) -> None:
    assert got[0] == want[0]
    assert [bytes(view) for view in got[1]] == [bytes(view) for view in want[1]]


# Calls and replies are formatted around their values, never built as dicts (and a lone binary value, or a call's
# one binary argument, is not walked at all): the bytes must be exactly what encoding the whole message writes.
@settings(deadline=None)
@given(st.integers(min_value=0, max_value=2**62), JSON | ARRAYS | st.lists(st.binary(), min_size=1, max_size=2))
def test_a_reply_formatted_around_its_value_is_the_reply_encoded_whole(call_id: int, value: Any) -> None:
    got = codec.encode_wrapped(f'{{"id":{call_id},"ok":true,"result":', value, "}")
    _same_frame(got, encode({"id": call_id, "ok": True, "result": value}))


METHODS = st.text() | st.sampled_from(["echo", "$b", "pr\u00e9dict", "a\ud800b", 'qu"ote'])


@settings(deadline=None)
@given(
    st.integers(min_value=0, max_value=2**62),
    METHODS,
    CALL_VALUES | st.lists(st.binary(), min_size=1, max_size=2),
    st.dictionaries(st.text(), JSON, max_size=2),
    st.booleans(),
    st.none() | st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
)
def test_a_request_frame_is_the_call_encoded_whole(
    call_id: int, method: str, args: list[Any], kwargs: dict[str, Any], stream: bool, parent: str | None
) -> None:
    message = {"id": call_id, "type": "call", "method": method, "args": args, "kwargs": kwargs, "stream": stream}
    if parent is not None:
        message["traceparent"] = parent
    _same_frame(request_frame(call_id, method, tuple(args), kwargs, stream, parent), encode(message))


def test_a_lone_binary_value_is_framed_without_json_walking() -> None:
    blob = b"x" * 1024
    head, buffers = codec.encode_wrapped('{"id":3,"ok":true,"result":', blob, "}")
    body = b'{"id":3,"ok":true,"result":{"$b":0}}'
    assert head == struct.pack(">IHQ", len(body), 1, 1024) + body
    assert buffers[0].obj is blob  # the caller's bytes, not a copy
    head, buffers = encode([blob])
    assert head == struct.pack(">IHQ", len(b'[{"$b":0}]'), 1, 1024) + b'[{"$b":0}]'
    assert buffers[0].obj is blob


class _Whole(codec.Decoder):
    """The decoder without its reply shortcut: every body read whole."""

    def _enveloped(self, text: str, decoder: Any, buffers: list[bytearray] | None) -> dict[str, Any] | None:
        return None


def _decoded(decoder: codec.Decoder, body: bytes, buffers: list[bytearray]) -> Any:
    try:
        return decoder.decode(body, [bytearray(b) for b in buffers])
    except DecodeError as exc:
        return ("error", str(exc))


REPLY_TAILS = st.sampled_from(
    ['{"$b":0}}', '{"$b":1}}', '[{"$b":0}]}', "1}", '1,"x":2}', "1} ", "}", '"a"}', '{"$x":0}}']
)


@settings(deadline=None)
@given(
    st.sampled_from(['{"id":7,"ok":true,"result":', '{"id":07,"ok":true,"result":', '{"id":-1,"ok":true,"result":']),
    REPLY_TAILS | st.text().map(lambda t: t + "}"),
    st.lists(st.binary(max_size=4), max_size=2),
)
@example('{"id":7,"ok":true,"result":', "NaN}", [])  # found by hypothesis: a result never equal to itself
def test_a_reply_decodes_as_its_whole_body_reads(head: str, tail: str, buffers: list[bytes]) -> None:
    body = (head + tail).encode("utf-8", "surrogatepass")
    assert exact(_decoded(codec.Decoder(), body, buffers), _decoded(_Whole(), body, buffers))


def test_a_lone_blob_reply_arrives_as_bytes() -> None:
    message = codec.Decoder().decode(b'{"id":12,"ok":true,"result":{"$b":0}}', [bytearray(b"abc")])
    assert exact(message, {"id": 12, "ok": True, "result": b"abc"})


CALL_HEADS = st.sampled_from(
    [
        '{"id":7,"type":"call","method":"echo","args":',
        '{"id":0,"type":"call","method":"_m2","args":',
        '{"id":07,"type":"call","method":"echo","args":',
        '{"id":7,"type":"call","method":"e\\u0063ho","args":',
        '{"id":7,"type":"call","method":"1x","args":',
        '{"id":7,"type":"call","method":"echo","stream":true,"args":',
    ]
)
CALL_TAILS = st.sampled_from(
    [
        '[{"$b":0}],"kwargs":{},"stream":false}',
        '[{"$b":1}],"kwargs":{},"stream":false}',
        '[1,{"$b":0}],"kwargs":{},"stream":false}',
        '{"$b":0},"kwargs":{},"stream":false}',
        '[],"kwargs":{},"stream":false}',
        '[],"kwargs":{},"stream":false} ',
        '[1] ,"kwargs":{},"stream":false}',
        '[{"$$k":1}],"kwargs":{},"stream":false}',
        '[{"$x":0}],"kwargs":{},"stream":false}',
        '1,"kwargs":{},"stream":false}',
        '[],"kwargs":{"a":1},"stream":false}',
        '[],"kwargs":{},"stream":true}',
    ]
)


@settings(deadline=None)
@given(
    CALL_HEADS,
    CALL_TAILS | st.text().map(lambda t: t + ',"kwargs":{},"stream":false}'),
    st.lists(st.binary(max_size=4), max_size=2),
)
def test_a_call_decodes_as_its_whole_body_reads(head: str, tail: str, buffers: list[bytes]) -> None:
    body = (head + tail).encode("utf-8", "surrogatepass")
    assert exact(_decoded(codec.Decoder(), body, buffers), _decoded(_Whole(), body, buffers))


def test_a_plain_call_of_one_blob_arrives_as_the_call() -> None:
    head, buffers = request_frame(5, "echo", (b"abc",), {}, False, None)
    message = codec.Decoder().decode(head[14:], [bytearray(buffers[0])])
    assert exact(message, {"id": 5, "type": "call", "method": "echo", "args": [b"abc"], "kwargs": {}, "stream": False})


def test_frames_that_arrive_together_or_in_pieces_are_read_one_by_one(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    messages = [{"id": 1, "ok": True, "result": b"x" * 100}, {"id": 2, "ok": True, "result": "two"}, [b"y", 3]]
    frames = [head + b"".join(buffers) for head, buffers in map(encode, messages)]
    reader = FrameReader(b)
    a.sendall(b"".join(frames))  # three frames in one read
    assert [exact(reader.read(time.monotonic() + 30), m) for m in messages] == [True] * 3
    whole = b"".join(frames)
    for cut in (1, 5, 6, 13, 14, 20, len(frames[0]) - 1, len(frames[0]) + 3):  # the first frame in two pieces
        a.sendall(whole[:cut])
        threading.Timer(0.01, a.sendall, (whole[cut:],)).start()
        assert [exact(reader.read(time.monotonic() + 30), m) for m in messages] == [True] * 3


def _raw_frame(body: bytes, buffers: list[bytes]) -> bytes:
    lengths = struct.pack(f">IH{len(buffers)}Q", len(body), len(buffers), *map(len, buffers))
    return lengths + body + b"".join(buffers)


LONE_HEADS = st.sampled_from(
    [
        '{"id":0,"ok":true,"result":',
        '{"id":123456789012345678,"ok":true,"result":',
        '{"id":1234567890123456789,"ok":true,"result":',
        '{"id":07,"ok":true,"result":',
        '{"id":7,"ok":false,"result":',
    ]
)


@settings(deadline=None, max_examples=300)
@given(
    (LONE_HEADS | CALL_HEADS).flatmap(
        lambda head: st.tuples(st.just(head), REPLY_TAILS if "result" in head else CALL_TAILS)
    ),
    st.lists(st.binary(max_size=300), max_size=2),
)
def test_a_frame_read_whole_from_the_socket_is_its_body_decoded_whole(
    head_tail: tuple[str, str], buffers: list[bytes]
) -> None:
    """A small frame read in one piece: a lone blob's reply or call is read off the frame without decoding JSON,
    and must give exactly what decoding the whole body gives (bytes, never a bytearray; the same id and method)."""
    body = "".join(head_tail).encode()
    a, b = socket.socketpair()
    with a, b:
        a.sendall(_raw_frame(body, buffers))
        try:
            read = FrameReader(b).read(time.monotonic() + 30)
        except DecodeError as exc:
            read = ("error", str(exc))
    assert exact(read, _decoded(_Whole(), body, [bytearray(x) for x in buffers]))


def test_a_lone_blob_reply_and_call_read_from_the_socket_are_the_messages_sent() -> None:
    reply = {"id": 41, "ok": True, "result": b"\x00" * 1024}
    call = {"id": 42, "type": "call", "method": "echo_2", "args": [b"z" * 5], "kwargs": {}, "stream": False}
    a, b = socket.socketpair()
    with a, b:
        reader = FrameReader(b)
        for message in (reply, call):
            head, views = encode(message)
            a.sendall(head + b"".join(views))
            assert exact(reader.read(time.monotonic() + 30), message)


@settings(deadline=None)
@given(
    st.integers(min_value=0, max_value=2**62),
    st.sampled_from(["echo", "_m", "Predict2"]) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,120}", fullmatch=True),
    st.binary(max_size=40_000),
)
def test_a_lone_blob_call_and_reply_are_framed_as_encode_and_send_write_them(
    call_id: int, method: str, blob: bytes
) -> None:
    """The one-blob call the host frames without walking, and the reply the worker writes in one piece, are byte for
    byte what the general encoder (and :func:`send`, for the reply) write; a blob too large to join gets ``None``."""
    call = {"id": call_id, "type": "call", "method": method, "args": [blob], "kwargs": {}, "stream": False}
    _same_frame(blob_call(call_id, method, blob), encode(call))
    _same_frame(request_frame(call_id, method, (blob,), {}, False, None), encode(call))
    head, _ = encode({"id": call_id, "ok": True, "result": blob})
    assert blob_reply(call_id, blob) == (head + blob if len(blob) <= 16 * 1024 else None)
    a, b = socket.socketpair()
    with a, b:  # what send writes, read back whole
        a.sendall(blob_reply(call_id, blob) or head + blob)
        assert exact(FrameReader(b).read(time.monotonic() + 30), {"id": call_id, "ok": True, "result": blob})


def test_messages_read_whole_from_the_reused_receive_buffer_never_share_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    reader = FrameReader(b)
    first = {"id": 1, "ok": True, "result": b"a" * 100}
    head, buffers = encode(first)
    a.sendall(head + b"".join(buffers))  # one frame, read by one recv_into
    got = reader.read(time.monotonic() + 30)
    held = got["result"]
    later = [{"id": 2, "ok": True, "result": b"b" * 100}, {"id": 3, "ok": True, "result": [b"c" * 70000, "big"]}]
    for message in later:  # the next reads land in the same receive buffer (one larger than it, too)
        head, buffers = encode(message)
        a.sendall(head + b"".join(buffers))
        assert exact(reader.read(time.monotonic() + 30), message)
    assert exact(got, first)
    assert held == b"a" * 100


RAW_NUMBERS = st.sampled_from(["1e5", "1E+05", "-0", "-0.0", "0.1e-3", "123456789012345678901234567890", "-1.5E300"])
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3) | st.sampled_from(["$b", "$$k", "$a", "$"]), inner, max_size=3)
    ),
    max_leaves=8,
)
JSON_TEXTS = RAW_NUMBERS | st.builds(
    lambda value, ascii_only: json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":")),
    JSON_VALUES,
    st.booleans(),
)


@settings(deadline=None)
@given(JSON_TEXTS, st.lists(st.binary(max_size=4), max_size=2))
def test_a_reply_or_plain_call_of_any_json_value_decodes_as_its_whole_body(text: str, buffers: list[bytes]) -> None:
    for body in (
        '{"id":7,"ok":true,"result":' + text + "}",
        '{"id":7,"type":"call","method":"echo","args":[' + text + '],"kwargs":{},"stream":false}',
    ):
        data = body.encode("utf-8", "surrogatepass")
        assert exact(_decoded(codec.Decoder(), data, buffers), _decoded(_Whole(), data, buffers))


def test_in_a_worker_the_wire_format_files_import_one_another_as_one_package_off_sys_path() -> None:
    # codec.py loaded decoding.py by path with the same lines protocol.py used to load codec.py, and worker_main.py
    # its modules: now worker_main.py alone loads by path, making this directory a package of a private name once.
    scripts = WORKER_SCRIPT.parent
    assert sorted(p.name for p in scripts.glob("*.py") if "spec_from_file_location" in p.read_text()) == [
        "worker_main.py"
    ]
    script = f"""
        import importlib.util, json, socket, sys
        spec = importlib.util.spec_from_file_location("_autoglm_worker", {WORKER_SCRIPT.as_posix()!r})
        worker = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(worker)
        protocol = worker._load_sibling("protocol")
        a, b = socket.socketpair()
        protocol.write_frame(a, {{"a": bytearray(b"x")}})
        decoded = protocol.FrameReader(b).read()["a"]
        print(json.dumps([
            decoded == bytearray(b"x") and protocol.ArrayValue is sys.modules["_autoglm_scripts.decoding"].ArrayValue,
            protocol.__name__,
            sorted(name for name in sys.modules if name.startswith("_autoglm")),
            [entry for entry in sys.path if "_scripts" in entry],
        ]))
    """
    done = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(script)], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        True,
        "_autoglm_scripts.protocol",
        ["_autoglm_scripts", "_autoglm_scripts.codec", "_autoglm_scripts.decoding", "_autoglm_scripts.protocol"],
        [],
    ]
