"""Length-prefixed JSON frames between host and worker."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoglm_runtime.isolation._protocol import (
    MAX_FRAME,
    FrameError,
    FrameReader,
    PeerClosedError,
    decode,
    encode,
    write_frame,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
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
