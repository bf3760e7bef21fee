"""Frames over a socket between the host and a model worker: written with ``sendmsg``, read with ``recv_into``.

STDLIB ONLY, and valid on every interpreter a model environment may use (3.8+): inside the model's environment,
where the SDK is not installed, the worker imports this directory as a package of a private name (see
``worker_main.py``), so ``codec.py`` (what a frame holds, and the values it re-exports here) is imported
relatively there as here.

:func:`send` hands a frame's buffers to ``sendmsg`` without copying them; :class:`FrameReader` reads small
frames through one buffer (one ``recv`` for a small reply) and large binary buffers straight into their own
``bytearray``. The commonest small frames skip the JSON codec both ways, byte for byte the same on the wire: a
plain call or reply whose arguments or result are one ``bytes`` value is made by :func:`blob_call` /
:func:`blob_reply` and, read whole, matched by one regex. A read waits in a blocking receive the kernel bounds
(``SO_RCVTIMEO``), then in ``poll``, never with ``settimeout``: a socket's timeout would also apply to other threads
writing to it.
"""

from __future__ import annotations

import math
import re
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from . import codec as _codec

__all__ = [
    "MAX_BUFFERS",
    "MAX_FRAME",
    "ArrayValue",
    "DecodeError",
    "Frame",
    "FrameError",
    "FrameReader",
    "PeerClosedError",
    "blob_call",
    "blob_reply",
    "decode",
    "encode",
    "encode_wrapped",
    "send",
    "wait_writable",
    "write_frame",
]

MAX_FRAME = _codec.MAX_FRAME
MAX_BUFFERS = _codec.MAX_BUFFERS
MAX_BUFFER = _codec.MAX_BUFFER
ArrayValue = _codec.ArrayValue
DecodeError = _codec.DecodeError
FrameError = _codec.FrameError
PeerClosedError = _codec.PeerClosedError
Frame = _codec.Frame
decode = _codec.decode
encode = _codec.encode
encode_wrapped = _codec.encode_wrapped
_HEAD = struct.Struct(">IH")
_HEAD_ONE = struct.Struct(">IHQ")  # the head of a frame with one buffer
_LENGTH = struct.Struct(">Q")
_DIRECT = 1 << 16  # a buffer still missing this much is read with recv_into, not through the read buffer
_JOIN = 1 << 14  # a frame's lone buffer up to this size is copied next to its head: one plain send, no iovec
_SCRATCH = 1 << 16  # what one recv_into between frames takes: a small frame whole
_PART = object()  # what a read between frames got is not one whole frame
_TIMEVAL = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO
_BLOCKING = 0.002  # the longest a read with a deadline blocks in a receive before it polls (see _receive)
_LONGEST = 86400.0  # the longest one poll waits: a deadline further off (or none) is polled again
# What encode writes for a plain reply whose result is one bytes value, and for a plain call (no kwargs, not a stream,
# no trace context) whose only argument is one: read off the frame as it is, no JSON decoded (the same message).
_LONE_BLOB = re.compile(
    rb'\{"id":(0|[1-9][0-9]{0,17}),(?:"ok":true,"result":\{"\$b":0\}\}|"type":"call","method":"'
    rb'([A-Za-z_][A-Za-z0-9_]{0,99})","args":\[\{"\$b":0\}\],"kwargs":\{\},"stream":false\})'
)


def send(sock: socket.socket, frame: Frame, blocked: Callable[[bool], None] | None = None) -> None:
    """Write ``frame`` with ``sendmsg`` (large buffers are never copied; a small lone one is joined to the head for
    one plain ``send``), all of it, however many calls it takes.

    With ``blocked``, the socket is never waited on here: each time it cannot take more, ``blocked(started)``
    is called (``started``: part of the frame went out already) to wait until it can, or to raise.
    """
    head, buffers = frame
    if not buffers:  # a small control message or reply: one syscall, nothing to slice
        parts = [memoryview(head)]
    elif len(buffers) == 1 and buffers[0].nbytes <= _JOIN:  # one small blob: joined, one plain send
        parts = [memoryview(head + buffers[0])]
    else:
        parts = [memoryview(head), *buffers]
    if len(parts) == 1:
        if blocked is None:
            sock.sendall(parts[0])
            return
        try:
            sent = sock.send(parts[0], socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent == parts[0].nbytes:
            return
        _send_rest(sock, _skip(parts, sent), sent > 0, blocked)
        return
    if len(parts) <= 1024:  # IOV_MAX: the whole frame in one sendmsg, as it nearly always goes
        total = sum(map(len, parts))  # (every part is a 1-D view of bytes: its len is its size)
        try:
            sent = sock.sendmsg(parts) if blocked is None else sock.sendmsg(parts, (), socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent == total:
            return
    else:
        sent = 0
    _send_rest(sock, _skip(parts, sent) if sent else parts, sent > 0, blocked)


def _send_rest(
    sock: socket.socket, parts: list[memoryview], started: bool, blocked: Callable[[bool], None] | None
) -> None:
    """Write what is left of a frame (``started``: part of it went out already); see :func:`send`."""
    while parts:
        if blocked is None:
            sent = sock.sendmsg(parts[:1024])  # IOV_MAX
        else:
            try:
                sent = sock.sendmsg(parts[:1024], (), socket.MSG_DONTWAIT)
            except BlockingIOError:
                blocked(started)
                continue
        started = started or sent > 0
        parts = _skip(parts, sent)


def _skip(parts: list[memoryview], sent: int) -> list[memoryview]:
    """``parts`` less their first ``sent`` bytes (and any empty part at the front)."""
    while sent:
        size = parts[0].nbytes
        if sent >= size:
            sent -= size
            parts.pop(0)
        else:
            parts[0] = parts[0][sent:]
            sent = 0
    while parts and not parts[0].nbytes:
        parts.pop(0)
    return parts


def _ready(sock: socket.socket, events: int, timeout: float) -> bool:
    """Whether ``sock`` is ready for ``events`` (``select.POLLIN``/``POLLOUT``) within ``timeout`` s.

    Polled rather than ``settimeout``: a timeout would also apply to other threads' reads or writes."""
    poller = select.poll()
    try:
        poller.register(sock, events)
    except ValueError:  # closed meanwhile (its fileno is -1)
        raise OSError("the socket is closed") from None
    return bool(poller.poll(math.ceil(timeout * 1000)))


def wait_writable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` can take more data within ``timeout`` s (for :func:`send`'s ``blocked``)."""
    return timeout > 0 and _ready(sock, select.POLLOUT, timeout)


def blob_call(call_id: int, method: str, blob: bytes) -> Frame:
    """The frame :func:`encode` makes of the plain call ``{"id": call_id, "type": "call", "method": method, "args":
    [blob], "kwargs": {}, "stream": False}`` (``method`` an ASCII identifier), made without walking anything."""
    body = f'{{"id":{call_id},"type":"call","method":"{method}","args":[{{"$b":0}}],"kwargs":{{}},"stream":false}}'
    data = body.encode("ascii")
    return _HEAD_ONE.pack(len(data), 1, len(blob)) + data, [memoryview(blob)]


def blob_reply(call_id: int, blob: bytes) -> bytes | None:
    """All that :func:`send` writes for the frame of the reply ``{"id": call_id, "ok": True, "result": blob}``, in
    one piece (the answer of a model echoing or making one small blob); ``None`` when ``blob`` is too large to be
    joined to its head."""
    if len(blob) > _JOIN:
        return None
    body = b'{"id":%d,"ok":true,"result":{"$b":0}}' % call_id
    return _HEAD_ONE.pack(len(body), 1, len(blob)) + body + blob


def write_frame(sock: socket.socket, message: Any) -> None:
    """Send one message as a frame (blocking until all of it is written)."""
    send(sock, encode(message))


class FrameReader:
    """Reads frames from one socket: small ones through a buffer (one ``recv`` for a small reply), large
    binary buffers straight into their own ``bytearray`` with ``recv_into``. One reader per socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._scratch = bytearray(_SCRATCH)  # what a read between frames receives into (reused)
        self._decoder = _codec.Decoder()
        self._bound = 0.0  # the socket's receive timeout (SO_RCVTIMEO) as last set; 0: none

    def read(self, deadline: float | None = None) -> Any:
        """Read one message; ``deadline`` is a ``time.monotonic()`` instant, ``None`` waits for ever.

        The deadline bounds each blocking receive (``SO_RCVTIMEO``) and poll, never ``settimeout``: the socket stays
        blocking, so another thread may write to it meanwhile without inheriting a timeout.

        Raises ``TimeoutError`` past the deadline (the stream may then hold part of a frame),
        :class:`PeerClosedError` when the peer closed, :class:`DecodeError` for a complete frame that cannot
        be decoded (it is consumed), :class:`FrameError` for a corrupt stream.
        """
        buffer = self._buffer  # grows in place: the name stays valid across fills
        if not buffer:  # between frames, nothing read ahead: one recv_into, which usually holds a small frame whole
            message = self._read_whole(deadline)
            if message is not _PART:
                return message
        while len(buffer) < _HEAD.size:
            self._fill(deadline)
        length, count = _HEAD.unpack_from(buffer, 0)
        if length > MAX_FRAME:
            raise FrameError(f"frame length {length} exceeds the limit of {MAX_FRAME} bytes; the stream is corrupt")
        start = _HEAD.size + count * _LENGTH.size
        end = start + length
        if not count:
            while len(buffer) < end:
                self._fill(deadline)
            body = buffer[start:end]
            del buffer[:end]
            return self._decoder.decode(body, None)
        while len(buffer) < start:
            self._fill(deadline)
        sizes = _LENGTH.unpack_from(buffer, _HEAD.size) if count == 1 else struct.unpack_from(f">{count}Q", buffer, 6)
        if max(sizes) > MAX_BUFFER:
            raise FrameError(f"a buffer length exceeds the limit of {MAX_BUFFER} bytes; the stream is corrupt")
        while len(buffer) < end:
            self._fill(deadline)
        body = buffer[start:end]
        if count == 1 and len(buffer) >= end + sizes[0]:  # a small frame, read whole: one copy of its buffer out
            data = buffer[end : end + sizes[0]]
            del buffer[: end + sizes[0]]
            return self._decoder.decode(body, [data])
        del buffer[:end]
        return self._decoder.decode(body, [self._read_buffer(size, deadline) for size in sizes])

    def _read_whole(self, deadline: float | None) -> Any:
        """The message of the one frame the next ``recv_into`` holds exactly; else what it got goes into the read
        buffer and ``_PART`` is returned (:meth:`read` goes on from there)."""
        scratch = self._scratch
        got = self._receive(scratch, deadline)
        if not got:
            raise PeerClosedError("peer closed the connection between frames")
        if got >= _HEAD_ONE.size:
            length, count, size = _HEAD_ONE.unpack_from(scratch, 0)
            if count == 1 and got == _HEAD_ONE.size + length + size:
                end = _HEAD_ONE.size + length
                lone = _LONE_BLOB.fullmatch(scratch, _HEAD_ONE.size, end)
                if lone is not None:
                    return _lone_blob(lone, bytes(memoryview(scratch)[end:got]))
                return self._decoder.decode(scratch[_HEAD_ONE.size : end], [scratch[end:got]])
            if count == 0 and got == _HEAD.size + length:
                return self._decoder.decode(scratch[_HEAD.size : got], None)
        elif got >= _HEAD.size and _HEAD.unpack_from(scratch, 0) == (got - _HEAD.size, 0):
            return self._decoder.decode(scratch[_HEAD.size : got], None)
        self._buffer += memoryview(scratch)[:got]
        return _PART

    def _need(self, size: int, deadline: float | None) -> None:
        while len(self._buffer) < size:
            self._fill(deadline)

    def _read_buffer(self, size: int, deadline: float | None) -> bytearray:
        if size <= len(self._buffer):  # a small buffer, read with its frame's head: one copy out of the read buffer
            data = self._buffer[:size]
            del self._buffer[:size]
            return data
        data = bytearray(size)
        have = min(size, len(self._buffer))
        data[:have] = self._buffer[:have]
        del self._buffer[:have]
        view = memoryview(data)
        while have < size:
            if size - have < _DIRECT:
                self._need(size - have, deadline)
                data[have:] = self._buffer[: size - have]
                del self._buffer[: size - have]
                break
            got = self._receive(view[have:], deadline)
            if not got:
                raise PeerClosedError("peer closed the connection inside a frame")
            have += got
        return data

    def _receive(self, into: bytearray | memoryview | None, deadline: float | None) -> Any:
        """``recv_into(into)`` (``recv`` of up to 64 KB when ``into`` is ``None``), waiting until ``deadline``;
        ``TimeoutError`` once it has passed.

        A read with a deadline first blocks in the receive itself for up to 2 ms, bounded by the kernel
        (``SO_RCVTIMEO``, set only when it changes): a quick answer then costs no poll, whose wake-up costs tens of
        microseconds more when the peer runs on the other CPU (measured here: a 1 KB socketpair round trip 48-55 us
        blocking, 73-92 us polled). A longer wait polls: after a signal Python retries a receive and the kernel
        restarts its whole bound, so signals coming more often than a long bound would keep it waiting past the
        deadline for ever, while a poll's wait is recomputed each time."""
        sock = self._sock
        if deadline is None:
            bound = 0.0
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            bound = math.ceil(min(left, _BLOCKING) * 1000) / 1000
        if bound != self._bound:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(0, round(bound * 1_000_000)))
            self._bound = bound
        while True:
            try:
                return sock.recv_into(into) if into is not None else sock.recv(_SCRATCH)
            except BlockingIOError:  # the bound ran out (or the socket is non-blocking): wait in poll
                pass
            while True:
                if deadline is None:
                    wait = _LONGEST
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("timed out")
                    wait = min(left, _LONGEST)
                if _ready(sock, select.POLLIN, wait):
                    break

    def _fill(self, deadline: float | None) -> None:
        chunk = self._receive(None, deadline)
        if not chunk:
            where = "inside a frame" if self._buffer else "between frames"
            raise PeerClosedError(f"peer closed the connection {where}")
        self._buffer += chunk


def _lone_blob(match: re.Match[bytes], blob: bytes) -> dict[str, Any]:
    """The message of a frame :data:`_LONE_BLOB` matched, holding ``blob``: what decoding its JSON gives."""
    method = match.group(2)
    if method is None:
        return {"id": int(match.group(1)), "ok": True, "result": blob}
    return {
        "id": int(match.group(1)),
        "type": "call",
        "method": method.decode("ascii"),
        "args": [blob],
        "kwargs": {},
        "stream": False,
    }
