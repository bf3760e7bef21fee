"""The fault proxy's ZooKeeper frame scanner: every header found once, where its frame starts, however split."""

from __future__ import annotations

import struct

import pytest

from autoglm_runtime.testing._zkframes import (
    MULTI_HEADER,
    REPLY_HEADER,
    REQUEST_HEADER,
    REQUESTS,
    FrameScanner,
    multi_failed,
)


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


@pytest.mark.parametrize("size", [1, 3, 16, 20, 21, 4096])
def test_extra_ends_each_frames_fields_with_the_bytes_after_its_header_as_many_as_it_holds(size: int) -> None:
    failed = MULTI_HEADER.pack(-1, False, -110) + b"\xff\xff\xff\x92" + MULTI_HEADER.pack(-1, True, -1)
    stream, _ = _stream(
        REPLY_HEADER,
        ((1, 7, 0), failed),  # a multi whose first operation failed
        ((2, 8, -101), b""),  # an error answer: the header alone
        ((3, 9, 0), b"abc"),  # a body shorter than extra
    )
    found = _scan_in_chunks(FrameScanner(REPLY_HEADER, MULTI_HEADER.size), stream, size)
    assert [fields for _, fields in found] == [(1, 7, 0, failed[:9]), (2, 8, -101, b""), (3, 9, 0, b"abc")]
    assert [multi_failed(fields[3]) for _, fields in found] == [True, False, False]


def test_a_multi_is_failed_when_its_first_result_is_an_error_not_the_end_marker() -> None:
    assert multi_failed(MULTI_HEADER.pack(-1, False, -101))  # (ZooKeeper rolls back the others)
    assert not multi_failed(MULTI_HEADER.pack(1, False, -1))  # a create's result
    assert not multi_failed(MULTI_HEADER.pack(-1, True, -1))  # an empty multi: the end marker at once
    assert not multi_failed(b"")
