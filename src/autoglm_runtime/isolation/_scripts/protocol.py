"""Length-prefixed JSON frames between the host and a model worker.

STDLIB ONLY, and valid on every interpreter a model environment may use (3.8+): the worker loads this file
by path inside the model's environment, where the SDK is not installed.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON. JSON rather than
pickle, on purpose:

* the host and the worker may run different Python versions (3.11 host, 3.13 model): JSON means the same
  on both, while pickles of objects need the defining classes importable on the receiving side;
* unpickling runs code chosen by the sender; a model's environment holds third-party code the host must
  not execute, and keeping that code out of the host process is the point of isolation;
* a model's results then have to be JSON-shaped (dict, list, str, int, float, bool, None; tuples arrive
  as lists). ``bytes`` travel as ``{"$bytes": "<base64>"}`` and come back as ``bytes``.

Keys starting with ``$`` are reserved for such tags, so a user dict's ``$``-keys are escaped with one more
``$`` (``{"$bytes": "aGk="}`` travels as ``{"$$bytes": "aGk="}``): every JSON value, with ``bytes`` anywhere
in it, arrives exactly as it was sent. A body that is well framed but cannot be decoded (invalid JSON, bad
base64, an unknown tag) raises :class:`DecodeError` *after* the frame was consumed: the stream stays in
step, so a reader may report the error and go on reading.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
import time
from typing import Any

__all__ = [
    "MAX_FRAME",
    "DecodeError",
    "FrameError",
    "FrameReader",
    "PeerClosedError",
    "decode",
    "encode",
    "write_frame",
]

#: Largest frame either side accepts (64 MiB); a larger length prefix means a corrupt stream.
MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
_BYTES_TAG = "$bytes"


class FrameError(Exception):
    """The stream does not hold a well-formed frame (bad length, bad JSON); it cannot be resynchronised."""


class PeerClosedError(FrameError):
    """The other side closed the connection (at a frame boundary or in the middle of one)."""


class DecodeError(FrameError):
    """A complete frame whose body cannot be decoded; the frame was consumed and the stream is still in step."""


class _NeedsEscaping(Exception):
    """The value holds bytes or a ``$`` key: it takes the (slower) escaping path."""


def _plain_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise _NeedsEscaping
    return _default(value)


def _default(value: Any) -> Any:
    raise TypeError(f"object of type {type(value).__name__} cannot be sent to or from a model (JSON values only)")


def _escape(value: Any) -> Any:
    """``value`` with bytes tagged and user keys starting with ``$`` escaped (``$k`` -> ``$$k``)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, dict):
        return {(f"${key}" if isinstance(key, str) and key[:1] == "$" else key): _escape(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    return value  # json.dumps reports what it cannot carry (through _default)


def _object_hook(obj: dict) -> Any:  # type: ignore[type-arg]
    for key in obj:
        if key[:1] == "$":
            return _untag(obj)
    return obj


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _BYTES_TAG in obj:
        data = obj[_BYTES_TAG]
        if not isinstance(data, str):
            raise DecodeError(f'a "{_BYTES_TAG}" value must be a base64 string, got {type(data).__name__}')
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f'a "{_BYTES_TAG}" value is not valid base64: {exc}') from None
    plain: dict[str, Any] = {}
    for key, value in obj.items():
        if key[:2] == "$$":
            plain[key[1:]] = value
        elif key[:1] == "$":
            raise DecodeError(f"unknown tag {key!r} (user keys starting with '$' travel escaped as '$$')")
        else:
            plain[key] = value
    return plain


_OPTIONS: dict[str, Any] = {"ensure_ascii": False, "allow_nan": True, "separators": (",", ":")}
_PLAIN_ENCODER = json.JSONEncoder(default=_plain_default, **_OPTIONS)
_ENCODER = json.JSONEncoder(default=_default, **_OPTIONS)
_TAG_DECODER = json.JSONDecoder(object_hook=_object_hook)


def encode(message: Any) -> bytes:
    """One frame holding ``message``; raises ``TypeError`` for values JSON cannot carry, ``ValueError`` for
    values nested too deeply (or containing themselves), ``FrameError`` when the frame would exceed
    :data:`MAX_FRAME`."""
    try:
        try:  # fast path: most messages hold neither bytes nor a key starting with "$" (which dumps as '"$')
            body = _PLAIN_ENCODER.encode(message)
            if '"$' in body:
                raise _NeedsEscaping
        except _NeedsEscaping:
            body = _ENCODER.encode(_escape(message))
    except (RecursionError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc) != "Circular reference detected":
            raise
        raise ValueError("the value is nested too deeply (or contains itself) to be sent to or from a model") from None
    data = body.encode("utf-8", "surrogatepass")
    if len(data) > MAX_FRAME:
        raise FrameError(f"message of {len(data)} bytes exceeds the frame limit of {MAX_FRAME} bytes")
    return _HEADER.pack(len(data)) + data


def decode(body: bytes) -> Any:
    """The message in one frame body (without its length prefix); raises :class:`DecodeError`."""
    try:
        text = body.decode("utf-8", "surrogatepass")
        # Every tag and escaped key dumps as '"$'; without one, no object needs the (slower) hook.
        return _TAG_DECODER.decode(text) if '"$' in text else json.loads(text)
    except DecodeError as exc:
        raise DecodeError(f"frame of {len(body)} bytes holds an invalid tagged value: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError(f"frame of {len(body)} bytes is not valid JSON: {exc}") from exc


def write_frame(sock: socket.socket, message: Any) -> None:
    """Send one message as a frame (blocking until all of it is written)."""
    sock.sendall(encode(message))


class FrameReader:
    """Reads frames from one socket through a buffer, so a small reply costs one ``recv`` call.

    It owns the socket's timeout: send through :meth:`send` too, so that every operation runs under the
    deadline of the call it belongs to, never under one left over from an earlier call.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._timeout: float | None = -1.0  # unknown: set on first read

    def read(self, deadline: float | None = None) -> Any:
        """Read one message; ``deadline`` is a ``time.monotonic()`` instant, ``None`` waits for ever.

        Raises ``TimeoutError`` past the deadline, :class:`PeerClosedError` when the peer closed,
        :class:`DecodeError` for a complete frame that cannot be decoded (it is consumed: the next read
        returns the next frame), :class:`FrameError` for a corrupt stream.
        """
        buffer = self._buffer
        while True:
            if len(buffer) >= _HEADER.size:
                (length,) = _HEADER.unpack_from(buffer, 0)
                if length > MAX_FRAME:
                    raise FrameError(
                        f"frame length {length} exceeds the limit of {MAX_FRAME} bytes; the stream is corrupt"
                    )
                end = _HEADER.size + length
                if len(buffer) >= end:
                    body = bytes(buffer[_HEADER.size : end])
                    del buffer[:end]
                    return decode(body)
            self._fill(deadline)

    def send(self, data: bytes, deadline: float | None = None) -> None:
        """Send ``data`` (one or more whole frames), all of it by ``deadline`` (``None``: however long it takes).

        Raises ``TimeoutError`` when the deadline passes first (the stream may then hold part of a frame).
        """
        self._apply_deadline(deadline)
        self._sock.sendall(data)  # since 3.5 the timeout bounds the whole sendall, not each send

    def _apply_deadline(self, deadline: float | None) -> None:
        if deadline is None:
            timeout = None
        else:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("timed out")
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def _fill(self, deadline: float | None) -> None:
        self._apply_deadline(deadline)
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            where = "inside a frame" if self._buffer else "between frames"
            raise PeerClosedError(f"peer closed the connection {where}")
        self._buffer += chunk
