"""Three ZooKeeper requests kazoo lacks: ``multiRead``, ``setWatches`` and ``addWatch``.

kazoo sends any object with ``type`` (the opcode), ``serialize()`` and ``deserialize(buffer, offset)``
through ``KazooClient._call``; these two follow that shape, built on kazoo's own serialization helpers.

* ``multiRead`` (opcode 22, ZooKeeper 3.6+) carries many getData/getChildren reads in one request and
  one response: a load of 10,000 znodes is a few dozen round trips instead of 20,000 requests, each of
  which costs kazoo a select-loop turn. Reads inside a multiRead cannot set watches.
* ``setWatches`` (opcode 101; what ZooKeeper's Java client sends after a reconnect) arms data and child
  watches on many paths at once, relative to a zxid: the server fires at once for any path changed after
  that zxid, so nothing that happened between our read and the arming is lost.
* ``addWatch`` (opcode 106, ZooKeeper 3.6+) adds a persistent watch; in ``PERSISTENT_RECURSIVE`` mode it
  reports every creation, change and deletion at or below its path, for as long as the connection lasts:
  one watch on the server instead of two per znode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from kazoo.exceptions import EXCEPTIONS, NoNodeError
from kazoo.protocol.serialization import (
    MultiHeader,
    ZnodeStat,
    int_struct,
    long_struct,
    multiheader_struct,
    read_buffer,
    read_string,
    stat_struct,
    write_string,
)

__all__ = [
    "ADD_WATCH_PERSISTENT_RECURSIVE",
    "GET_CHILDREN",
    "GET_DATA",
    "MAX_ANSWER_BYTES",
    "MAX_REQUEST_BYTES",
    "UNKNOWN_DATA_BYTES",
    "AddWatch",
    "MultiRead",
    "SetWatches",
    "Spec",
    "kazoo_internals_problems",
    "plan_batches",
    "same_answers",
    "setwatches_chunks",
]

GET_DATA = 4
GET_CHILDREN = 8
_ERROR = -1
#: addWatch's mode for a persistent watch on a path and every path below it.
ADD_WATCH_PERSISTENT_RECURSIVE = 1

# ZooKeeper refuses packets over jute.maxbuffer (1 MiB by default); stay far below it.
MAX_REQUEST_BYTES = 256 * 1024
#: What a data read of a znode not read yet may answer: up to jute.maxbuffer (1 MiB by default).
UNKNOWN_DATA_BYTES = 1024 * 1024
#: The data a multiRead may answer at most, as far as known: the server builds the whole answer in memory (and
#: copies it) before sending it, so 40 values of 1 MB in one answer exhausted a 256 MB heap and ended the server.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_OP_OVERHEAD = 9 + 4 + 1  # multiheader, string length, watch flag

Spec = tuple[str, bool, bool]  # path, read data, read children


class MultiRead:
    """Many reads in one request; ``ops`` are ``(GET_DATA | GET_CHILDREN, server path)``.

    The response is a list with one item per op: ``(data, ZnodeStat)`` for a data read, a list of child
    names for a children read, or a kazoo exception instance (``NoNodeError``, ``NoAuthError``...).
    """

    type: ClassVar[int] = 22
    __slots__ = ("ops",)

    def __init__(self, ops: Sequence[tuple[int, str]]) -> None:
        self.ops = ops

    def __repr__(self) -> str:
        return f"MultiRead(<{len(self.ops)} reads>)"

    def serialize(self) -> bytearray:
        out = bytearray()
        for op, path in self.ops:
            out += multiheader_struct.pack(op, False, -1)
            out += write_string(path)
            out.append(0)  # watch: false (ignored by the server inside a multiRead anyway)
        out += multiheader_struct.pack(-1, True, -1)
        return out

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> list[Any]:
        results: list[Any] = []
        while True:
            header, offset = MultiHeader.deserialize(buffer, offset)
            if header.done:
                return results
            if header.type == GET_DATA:
                data, offset = read_buffer(buffer, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(buffer, offset))
                offset += stat_struct.size
                results.append((data or b"", stat))
            elif header.type == GET_CHILDREN:
                count = int_struct.unpack_from(buffer, offset)[0]
                offset += int_struct.size
                names = []
                for _ in range(max(count, 0)):
                    name, offset = read_string(buffer, offset)
                    names.append(name)
                results.append(names)
            elif header.type == _ERROR:
                err = int_struct.unpack_from(buffer, offset)[0]
                offset += int_struct.size
                results.append(EXCEPTIONS[err]())
            else:
                raise ValueError(f"unexpected multiRead result type {header.type}")


class SetWatches:
    """Arm data watches on ``data`` paths and child watches on ``children`` paths, relative to ``zxid``."""

    type: ClassVar[int] = 101
    __slots__ = ("children", "data", "exist", "zxid")

    def __init__(self, zxid: int, data: Sequence[str], exist: Sequence[str], children: Sequence[str]) -> None:
        self.zxid = zxid
        self.data = data
        self.exist = exist
        self.children = children

    def __repr__(self) -> str:
        return f"SetWatches(zxid={self.zxid}, <{len(self.data)} data, {len(self.children)} child watches>)"

    def serialize(self) -> bytearray:
        out = bytearray(long_struct.pack(self.zxid))
        for paths in (self.data, self.exist, self.children):
            out += int_struct.pack(len(paths))
            for path in paths:
                out += write_string(path)
        return out

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> None:
        return None


class AddWatch:
    """Add a persistent watch of ``mode`` on ``path`` (a server path); the answer carries no body."""

    type: ClassVar[int] = 106
    __slots__ = ("mode", "path")

    def __init__(self, path: str, mode: int = ADD_WATCH_PERSISTENT_RECURSIVE) -> None:
        self.path = path
        self.mode = mode

    def __repr__(self) -> str:
        return f"AddWatch({self.path!r}, mode={self.mode})"

    def serialize(self) -> bytearray:
        return bytearray(write_string(self.path) + int_struct.pack(self.mode))

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> None:
        return None


def plan_batches(
    specs: Sequence[Spec],
    *,
    count: int,
    max_bytes: int,
    path_bytes: Callable[[str], int],
    data_bytes: Callable[[str], int] = lambda path: 0,
) -> list[int]:
    """Where to cut ``specs`` into multiRead requests: the end index of each batch.

    A batch holds at most ``count`` specs, at most ``max_bytes`` of encoded ops (each data or child read
    costs its path's bytes plus a fixed overhead) and data reads answering at most ``MAX_ANSWER_BYTES``
    (``data_bytes(path)``: what the znode's data read may answer); a single spec over a budget still gets a
    batch.
    """
    ends: list[int] = []
    size = answer = items = 0
    for index, (path, want_data, want_children) in enumerate(specs):
        cost = (int(want_data) + int(want_children)) * (path_bytes(path) + _OP_OVERHEAD)
        data = data_bytes(path) if want_data else 0
        if items and (items >= count or size + cost > max_bytes or answer + data > MAX_ANSWER_BYTES):
            ends.append(index)
            size = answer = items = 0
        size += cost
        answer += data
        items += 1
    if items:
        ends.append(len(specs))
    return ends


def setwatches_chunks(
    data: list[str], exist: list[str], children: list[str]
) -> list[tuple[list[str], list[str], list[str]]]:
    """Split watch paths into setWatches requests that stay under the packet limit."""
    out: list[tuple[list[str], list[str], list[str]]] = []
    current: tuple[list[str], list[str], list[str]] = ([], [], [])
    size = 0
    for index, paths in ((0, data), (1, exist), (2, children)):
        for path in paths:
            cost = len(path.encode("utf-8")) + 4
            if size + cost > MAX_REQUEST_BYTES and any(current):
                out.append(current)
                current, size = ([], [], []), 0
            current[index].append(path)
            size += cost
    if any(current):
        out.append(current)
    return out


def kazoo_internals_problems(client: Any) -> list[str]:
    """What is off in the kazoo internals these requests rely on: ``KazooClient._call``, the watcher tables
    (dicts of sets) and ``last_zxid`` (an int). Empty when all is as expected."""
    problems: list[str] = []
    if not callable(getattr(client, "_call", None)):
        problems.append("KazooClient._call is missing")
    for name in ("_data_watchers", "_child_watchers"):
        watchers = getattr(client, name, None)
        if not isinstance(watchers, dict) or not all(isinstance(v, set) for v in watchers.values()):
            problems.append(f"KazooClient.{name} is not a dict of sets")
    if not isinstance(getattr(client, "last_zxid", None), int):
        problems.append("KazooClient.last_zxid is not an int")
    return problems


def same_answers(plain: list[Any], bulk: list[Any]) -> bool:
    """Whether a multiRead's answers to a data and a child-list read equal plain get/get_children answers."""
    if isinstance(plain[0], NoNodeError) or isinstance(bulk[0], NoNodeError):
        return isinstance(plain[0], NoNodeError) and isinstance(bulk[0], NoNodeError)
    if isinstance(plain[0], BaseException) or isinstance(bulk[0], BaseException):
        return type(plain[0]) is type(bulk[0])
    (data, stat), (bulk_data, bulk_stat) = plain[0], bulk[0]
    return bool(
        (data or b"") == bulk_data
        and tuple(stat) == tuple(bulk_stat)
        and not isinstance(bulk[1], BaseException)
        and sorted(plain[1]) == sorted(bulk[1])
    )
