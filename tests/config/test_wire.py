"""The multiRead / setWatches requests, byte for byte against ZooKeeper's jute layout."""

from __future__ import annotations

import struct

from kazoo.exceptions import NoAuthError, NoNodeError
from kazoo.protocol.serialization import ZnodeStat

from autoglm_runtime.config._wire import (
    GET_CHILDREN,
    GET_DATA,
    MAX_ANSWER_BYTES,
    MAX_REQUEST_BYTES,
    UNKNOWN_DATA_BYTES,
    MultiRead,
    SetWatches,
    plan_batches,
    setwatches_chunks,
)


def jstr(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!i", len(raw)) + raw


def header(kind: int, done: bool, err: int) -> bytes:
    return struct.pack("!iBi", kind, done, err)


STAT = (5, 9, 1, 2, 3, 0, 0, 0, 4, 1, 7)


def test_multiread_serializes_each_op_behind_a_multiheader() -> None:
    request = MultiRead([(GET_DATA, "/a"), (GET_CHILDREN, "/a")])
    assert request.type == 22
    assert bytes(request.serialize()) == (
        header(4, False, -1) + jstr("/a") + b"\x00" + header(8, False, -1) + jstr("/a") + b"\x00" + header(-1, True, -1)
    )
    assert repr(request) == "MultiRead(<2 reads>)"


def test_multiread_parses_data_children_and_errors() -> None:
    response = (
        header(4, False, 0)
        + struct.pack("!i", 3)
        + b"abc"
        + struct.pack("!qqqqiiiqiiq", *STAT)
        + header(4, False, 0)
        + struct.pack("!i", -1)  # null data
        + struct.pack("!qqqqiiiqiiq", *STAT)
        + header(8, False, 0)
        + struct.pack("!i", 2)
        + jstr("x")
        + jstr("y")
        + header(-1, False, -101)
        + struct.pack("!i", -101)
        + header(-1, False, -102)
        + struct.pack("!i", -102)
        + header(-1, True, -1)
    )
    data, empty, children, missing, denied = MultiRead.deserialize(b"junk" + response, 4)
    assert data == (b"abc", ZnodeStat(*STAT))
    assert empty == (b"", ZnodeStat(*STAT))
    assert children == ["x", "y"]
    assert isinstance(missing, NoNodeError)
    assert isinstance(denied, NoAuthError)


def test_setwatches_layout() -> None:
    request = SetWatches(42, ["/a", "/b"], (), ["/a"])
    assert request.type == 101
    assert bytes(request.serialize()) == (
        struct.pack("!q", 42)
        + struct.pack("!i", 2)
        + jstr("/a")
        + jstr("/b")
        + struct.pack("!i", 0)
        + struct.pack("!i", 1)
        + jstr("/a")
    )
    assert SetWatches.deserialize(b"", 0) is None


def test_setwatches_are_split_under_the_packet_limit() -> None:
    data = [f"/root/{'d' * 200}/{i}" for i in range(3000)]
    children = [f"/root/{'c' * 100}/{i}" for i in range(3000)]
    exist = ["/root"]
    chunks = setwatches_chunks(data, exist, children)
    assert len(chunks) > 1
    assert [p for d, _, _ in chunks for p in d] == data
    assert [p for _, e, _ in chunks for p in e] == exist
    assert [p for _, _, c in chunks for p in c] == children
    for d, e, c in chunks:
        assert len(SetWatches(1, d, e, c).serialize()) <= MAX_REQUEST_BYTES + 20


def test_multiread_batches_are_cut_by_bytes_as_well_as_by_count() -> None:
    """Long paths must not make a request exceed jute.maxbuffer (the server drops the connection)."""
    long = [(f"/e5/{'d' * 400}/{'e' * 400}/{i:04d}{'n' * 300}", True, True) for i in range(600)]
    ends = plan_batches(long, count=500, max_bytes=MAX_REQUEST_BYTES, path_bytes=lambda p: len(p.encode()))
    assert ends[-1] == 600
    starts = [0, *ends[:-1]]
    for start, end in zip(starts, ends, strict=True):
        request = MultiRead([(op, path) for path, _, _ in long[start:end] for op in (GET_DATA, GET_CHILDREN)])
        assert len(request.serialize()) <= MAX_REQUEST_BYTES
    assert len(ends) == 6
    short = [(f"/k{i}", True, True) for i in range(1200)]
    assert plan_batches(short, count=500, max_bytes=MAX_REQUEST_BYTES, path_bytes=len) == [500, 1000, 1200]
    huge = [("/" + "x" * 300_000, True, False), ("/y", True, False)]
    assert plan_batches(huge, count=500, max_bytes=MAX_REQUEST_BYTES, path_bytes=len) == [1, 2]


def test_multiread_batches_are_cut_by_what_their_data_reads_may_answer() -> None:
    """The server builds a multiRead's whole answer in memory: data reads of unknown size (up to 1 MiB each) share
    answers of MAX_ANSWER_BYTES; known small values still go 500 to a request, child-list reads cost nothing."""
    per_answer = MAX_ANSWER_BYTES // UNKNOWN_DATA_BYTES
    unknown = [(f"/k{i}", True, True) for i in range(40)]
    cut = plan_batches(unknown, count=500, max_bytes=MAX_REQUEST_BYTES, path_bytes=len, data_bytes=lambda p: 1 << 20)
    assert cut == [per_answer, 2 * per_answer, 40]
    small = plan_batches(unknown * 25, count=500, max_bytes=MAX_REQUEST_BYTES, path_bytes=len, data_bytes=lambda p: 100)
    assert small == [500, 1000]
    lists = [(f"/k{i}", False, True) for i in range(40)]
    assert plan_batches(
        lists, count=500, max_bytes=MAX_REQUEST_BYTES, path_bytes=len, data_bytes=lambda p: 1 << 20
    ) == [40]
