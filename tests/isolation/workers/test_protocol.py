"""Length-prefixed JSON frames between host and worker."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoglm_runtime.isolation._scripts.protocol import (
    MAX_FRAME,
    DecodeError,
    FrameError,
    FrameReader,
    PeerClosedError,
    decode,
    encode,
    write_frame,
)

# Keys starting with "$" are where tags live: user dicts with such keys (even ones that look exactly like a
# tag) must round-trip unchanged.
KEYS = st.text() | st.text().map(lambda key: "$" + key) | st.sampled_from(["$bytes", "$$bytes", "$", "$$", "$dict"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS, children, max_size=4)
        | st.builds(lambda key, value: {key: value}, st.sampled_from(["$bytes", "$$bytes"]), children)
    ),
    max_leaves=20,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@given(JSON)
def test_round_trip(value: object) -> None:
    frame = encode(value)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert decode(frame[4:]) == value


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
    assert decode(encode({"t": (1, 2)})[4:]) == {"t": [1, 2]}


def test_unsendable_values_raise_type_error() -> None:
    with pytest.raises(TypeError) as info:
        encode({"x": object()})
    assert str(info.value) == "object of type object cannot be sent to or from a model (JSON values only)"


def test_lone_surrogates_survive() -> None:
    assert decode(encode("\ud800")[4:]) == "\ud800"


def test_read_times_out_at_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    _, b = pair
    with pytest.raises(TimeoutError):
        FrameReader(b).read(time.monotonic() + 0.05)


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


def test_peer_closed_inside_a_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(encode({"id": 1})[:6])
    a.close()
    with pytest.raises(PeerClosedError) as info:
        FrameReader(b).read()
    assert str(info.value) == "peer closed the connection inside a frame"


def test_oversized_length_is_a_corrupt_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(struct.pack(">I", MAX_FRAME + 1))
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
    value = {"$bytes": "aGk="}
    assert decode(encode(value)[4:]) == {"$bytes": "aGk="}
    assert decode(encode([{"$bytes": b"hi"}, {"$$bytes": "x", "plain": b""}])[4:]) == [
        {"$bytes": b"hi"},
        {"$$bytes": "x", "plain": b""},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"$bytes":"%%%"}',
            'frame of 16 bytes holds an invalid tagged value: a "$bytes" value is not valid base64: Only base64 '
            "data is allowed",
        ),
        (
            b'{"$bytes":"aGk"}',
            'frame of 16 bytes holds an invalid tagged value: a "$bytes" value is not valid base64: Incorrect padding',
        ),
        (
            b'{"$bytes":5}',
            'frame of 12 bytes holds an invalid tagged value: a "$bytes" value must be a base64 string, got int',
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
        decode(body)
    assert str(info.value) == message


def test_a_frame_that_cannot_be_decoded_leaves_the_stream_in_step(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    body = b'{"$bytes":"%%%"}'
    a.sendall(struct.pack(">I", len(body)) + body)
    write_frame(a, {"id": 2})
    reader = FrameReader(b)
    with pytest.raises(DecodeError):
        reader.read()
    assert reader.read() == {"id": 2}


def test_values_nested_too_deeply_raise_value_error() -> None:
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="nested too deeply") as info:
        encode(looped)
    assert str(info.value) == "the value is nested too deeply (or contains itself) to be sent to or from a model"


def test_send_runs_under_its_own_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    write_frame(a, 1)
    reader = FrameReader(b)
    assert reader.read(time.monotonic() + 0.05) == 1  # leaves a 0.05 s timeout on the socket
    reader.send(encode(2))
    assert b.gettimeout() is None  # an untimed send waits as long as it takes, whatever the last read used
    reader.send(encode(3), time.monotonic() + 30)
    timeout = b.gettimeout()
    assert timeout is not None
    assert 0 < timeout <= 30
    reader_a = FrameReader(a)
    assert [reader_a.read(), reader_a.read()] == [2, 3]


def test_send_past_its_deadline_sends_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    with pytest.raises(TimeoutError):
        FrameReader(b).send(encode(1), time.monotonic() - 1)
    b.close()
    with pytest.raises(PeerClosedError) as info:
        FrameReader(a).read()
    assert str(info.value) == "peer closed the connection between frames"
