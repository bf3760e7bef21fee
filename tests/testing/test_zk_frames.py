"""The fault proxy's ZooKeeper frame scanner: every header found once, where its frame starts, however split."""

from __future__ import annotations

import struct

import pytest

from autoglm_runtime.testing._zkframes import REPLY_HEADER, REQUEST_HEADER, REQUESTS, FrameScanner


def _frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def _stream(header: struct.Struct, *frames: tuple[tuple[int, ...], bytes]) -> tuple[bytes, list[tuple[int, tuple]]]:
    """A handshake, then ``frames`` (header fields, rest of the body); and the headers a scanner must find,
    each with the offset of its frame."""
    stream = _frame(b"handshake: no header, whatever it holds \x00\x00\x00\x05\x00\x00\x00\x01")
    expected = []
    for fields, rest in frames:
        expected.append((len(stream), fields))
        stream += _frame(header.pack(*fields) + rest)
    return stream, expected


def _scan_in_chunks(scanner: FrameScanner, stream: bytes, size: int) -> list[tuple[int, tuple]]:
    found = []
    for offset in range(0, len(stream), size):
        found += [(offset + start, fields) for start, fields in scanner.scan(stream[offset : offset + size])]
    return found


REQUEST_STREAM = _stream(
    REQUEST_HEADER,
    ((1, 1), b"\x00\x00\x00\x02/a" + b"x" * 300),  # a create with a body longer than one small chunk
    ((-2, 11), b""),  # a ping: a header and nothing else
    ((2, 4), b"\x00\x00\x00\x02/a\x00"),
)
REPLY_STREAM = _stream(
    REPLY_HEADER,
    ((1, 7, -110), b""),  # an error answer: the header alone
    ((-1, -1, 0), b"\x00" * 40),  # a watch notification
    ((2, 8, 0), b"value"),
)


@pytest.mark.parametrize(
    ("header", "stream", "expected"),
    [(REQUEST_HEADER, *REQUEST_STREAM), (REPLY_HEADER, *REPLY_STREAM)],
    ids=["requests", "answers"],
)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 11, 16, 17, 19, 20, 21, 64, 200, 4096])
def test_every_header_is_found_once_at_its_frames_start_however_the_stream_is_split(
    header: struct.Struct, stream: bytes, expected: list[tuple[int, tuple]], size: int
) -> None:
    assert _scan_in_chunks(FrameScanner(header), stream, size) == expected


def test_a_frame_shorter_than_a_header_is_skipped_whole() -> None:
    scanner = FrameScanner(REPLY_HEADER)
    stream = _frame(b"hs") + _frame(b"tiny") + _frame(REPLY_HEADER.pack(3, 9, 0))
    assert scanner.scan(stream) == [(4 + 2 + 4 + 4, (3, 9, 0))]


def test_a_stream_that_is_not_zookeepers_is_scanned_without_holding_anything() -> None:
    # Plain bytes (the unit tests' echo server): the first four read as a huge handshake length, the rest is skipped.
    scanner = FrameScanner(REQUEST_HEADER)
    assert scanner.scan(b"hello" * 1000) == []
    assert scanner.scan(b"a") == []


def test_the_requests_are_named_by_kazoos_methods() -> None:
    assert REQUESTS["create"] == {1, 15, 19, 21}  # create, create2 (kazoo's include_data), container, TTL
    assert REQUESTS["set"] == {5}
    assert REQUESTS["transaction"] == {14}
