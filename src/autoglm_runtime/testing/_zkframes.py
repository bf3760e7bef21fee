"""ZooKeeper's wire framing, as far as the fault proxy needs it to find one request's answer.

Each direction of a connection is a stream of frames: a 4-byte big-endian length, then that many bytes of
body. The first frame each way is the session handshake (ConnectRequest, ConnectResponse), with no header;
every later request starts with ``xid, opcode`` (two int32) and every later answer with ``xid, zxid, err``
(int32, int64, int32), the answer carrying its request's xid. A transaction's (multi's) answer has ``err`` 0
even when its operations failed (and none was done): its body then starts with an error result's
``MultiHeader`` (type -1, not done), which :func:`multi_failed` reads.
"""

from __future__ import annotations

import struct
from typing import Any

_LENGTH = struct.Struct(">i")
REQUEST_HEADER = struct.Struct(">ii")  # xid, opcode
REPLY_HEADER = struct.Struct(">iqi")  # xid, zxid, err
MULTI_HEADER = struct.Struct(">i?i")  # type, done, err: before each result in a multi's answer
MULTI_OPCODE = 14

#: The request opcodes (ZooDefs.OpCode) behind each kazoo request method, for ``FaultProxy.cut_before_answer``.
REQUESTS: dict[str, frozenset[int]] = {
    "create": frozenset({1, 15, 19, 21}),  # create, create2, createContainer, createTTL
    "delete": frozenset({2}),
    "exists": frozenset({3}),
    "get": frozenset({4}),
    "set": frozenset({5}),
    "get_acls": frozenset({6}),
    "set_acls": frozenset({7}),
    "get_children": frozenset({8, 12}),  # getChildren, getChildren2
    "sync": frozenset({9}),
    "transaction": frozenset({MULTI_OPCODE}),  # multi
}


def multi_failed(body: bytes) -> bool:
    """Whether a multi's answer whose body (after the reply header) starts with ``body`` reports failed operations
    (ZooKeeper then rolls them all back): its first result is an error (type -1) rather than the end marker.

    >>> multi_failed(MULTI_HEADER.pack(-1, False, -110))  # the first op's NodeExists: nothing was done
    True
    >>> multi_failed(MULTI_HEADER.pack(1, False, -1))  # a create's result: all were done
    False
    """
    if len(body) < MULTI_HEADER.size:
        return False
    kind, done, _err = MULTI_HEADER.unpack_from(body)
    return kind == -1 and not done


class FrameScanner:
    """Follows one direction of a connection frame by frame, chunk after chunk, copying nothing but the few
    bytes of a header split between two chunks; it never holds data back, so it does no harm to a stream that
    is not ZooKeeper's (it then reads nonsense headers, which nobody asks about). With ``extra``, each frame's
    fields end with up to that many bytes of the body after the header (as many as the frame holds).

    >>> scanner = FrameScanner(REQUEST_HEADER)
    >>> scanner.scan(b"\\0\\0\\0\\1h" + b"\\0\\0\\0\\x08\\0\\0\\0\\x05\\0\\0")  # the handshake, half a header
    []
    >>> scanner.scan(b"\\0\\x01")
    [(-10, (5, 1))]
    """

    def __init__(self, header: struct.Struct, extra: int = 0) -> None:
        self._header = header
        self._extra = extra
        self._tail = b""  # the start of a frame whose length or header has not fully arrived yet
        self._left = 0  # bytes of the current frame's body not seen yet
        self._handshake = True

    def scan(self, data: bytes) -> list[tuple[int, tuple[Any, ...]]]:
        """The frames whose header completes in ``data``, in order: ``(start, header fields)`` (ints, then the
        ``extra`` bytes if asked for), ``start`` being where the frame's length prefix begins, as an offset into
        ``data`` (negative when the frame began in an earlier chunk)."""
        buf = self._tail + data if self._tail else data
        before = len(buf) - len(data)
        found: list[tuple[int, tuple[Any, ...]]] = []
        pos = 0
        while True:
            if self._left:
                step = min(self._left, len(buf) - pos)
                pos += step
                self._left -= step
                if self._left:
                    break
            if len(buf) - pos < _LENGTH.size:
                break
            (length,) = _LENGTH.unpack_from(buf, pos)
            length = max(length, 0)
            need = 0 if self._handshake else min(length, self._header.size + self._extra)
            if len(buf) - pos - _LENGTH.size < need:
                break
            if not self._handshake and length >= self._header.size:
                fields = self._header.unpack_from(buf, pos + _LENGTH.size)
                if self._extra:
                    body = pos + _LENGTH.size + self._header.size
                    fields = (*fields, bytes(buf[body : pos + _LENGTH.size + need]))
                found.append((pos - before, fields))
            self._handshake = False
            self._left = length
            pos += _LENGTH.size
        self._tail = bytes(buf[pos:])
        return found
