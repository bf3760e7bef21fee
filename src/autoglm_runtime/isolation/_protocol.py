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
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
from typing import Any

__all__ = [
    "MAX_FRAME",
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


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"object of type {type(value).__name__} cannot be sent to or from a model (JSON values only)")


def _object_hook(obj: dict) -> Any:  # type: ignore[type-arg]
    if len(obj) == 1 and _BYTES_TAG in obj and isinstance(obj[_BYTES_TAG], str):
        return base64.b64decode(obj[_BYTES_TAG])
    return obj


def encode(message: Any) -> bytes:
    """One frame holding ``message``; raises ``TypeError`` for values JSON cannot carry, ``FrameError`` when
    the frame would exceed :data:`MAX_FRAME`."""
    body = json.dumps(message, default=_default, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
    data = body.encode("utf-8", "surrogatepass")
    if len(data) > MAX_FRAME:
        raise FrameError(f"message of {len(data)} bytes exceeds the frame limit of {MAX_FRAME} bytes")
    return _HEADER.pack(len(data)) + data


def decode(body: bytes) -> Any:
    """The message in one frame body (without its length prefix)."""
    try:
        return json.loads(body.decode("utf-8", "surrogatepass"), object_hook=_object_hook)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"frame of {len(body)} bytes is not valid JSON: {exc}") from exc


def write_frame(sock: socket.socket, message: Any) -> None:
    """Send one message as a frame (blocking until all of it is written)."""
    sock.sendall(encode(message))


class FrameReader:
    """Reads frames from one socket through a buffer, so a small reply costs one ``recv`` call."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._timeout: float | None = -1.0  # unknown: set on first read

    def read(self, deadline: float | None = None) -> Any:
        """Read one message; ``deadline`` is a ``time.monotonic()`` instant, ``None`` waits for ever.

        Raises ``TimeoutError`` past the deadline, :class:`PeerClosedError` when the peer closed,
        :class:`FrameError` for a corrupt stream.
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

    def _fill(self, deadline: float | None) -> None:
        if deadline is None:
            timeout = None
        else:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("timed out")
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            where = "inside a frame" if self._buffer else "between frames"
            raise PeerClosedError(f"peer closed the connection {where}")
        self._buffer += chunk
