"""Messages as frames and back: a JSON header plus raw binary buffers (the wire format's values).

STDLIB ONLY, and valid on every interpreter a model environment may use (3.8+): the worker imports it (through
``protocol.py``) inside the model's environment, where the SDK is not installed (see ``worker_main.py``). Encoding
is here; decoding is in ``decoding.py``, which this file imports (:class:`Decoder` and :func:`decode` are its).

A frame is ``>IH`` (JSON length, buffer count), one ``>Q`` length per buffer, the UTF-8 JSON body, then the
buffers' raw bytes. Binary values anywhere in a message travel as buffers, never inside the JSON (no base64,
no escaping walk, no copy on the sending side), and in the JSON they are tags:

* ``bytes`` -> ``{"$b": i}``, ``bytearray`` -> ``{"$ba": i}``, ``memoryview`` -> ``{"$mv": i}``: each arrives
  as the type it was sent as (a memoryview as a 1-D ``"B"`` view of its bytes);
* a numpy array (non-object, non-structured dtype; a non-contiguous one is copied to C order first) ->
  ``{"$array": i, "dtype": "<f4", "shape": [2, 3]}``: it arrives as a writable numpy array where numpy
  imports on the receiving side, else as an :class:`ArrayValue` (dtype string, shape, memoryview), which
  travels back as the same array.

JSON rather than pickle, on purpose: unpickling runs code chosen by the sender, and a model's environment
holds third-party code the host must not execute; JSON also means the same on a 3.11 host and a 3.13
worker. Results are JSON-shaped (tuples arrive as lists). Keys starting with ``$`` are reserved for tags,
so a user dict's ``$``-keys travel escaped with one more ``$``: every value arrives exactly as it was sent.
A frame that is well framed but cannot be decoded raises :class:`DecodeError` *after* it was consumed: the
stream stays in step.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import threading
from typing import Any, List, Tuple  # noqa: UP035 (this file runs on Python 3.8)

__all__ = [
    "MAX_BUFFERS",
    "MAX_FRAME",
    "ArrayValue",
    "DecodeError",
    "Decoder",
    "Frame",
    "FrameError",
    "PeerClosedError",
    "decode",
    "encode",
    "encode_wrapped",
]

#: Largest JSON body either side accepts (64 MiB); a larger length means a corrupt stream.
MAX_FRAME = 64 * 1024 * 1024
#: Most binary buffers in one frame, and the largest one (16 GiB): beyond either the stream is corrupt.
MAX_BUFFERS = 65535
MAX_BUFFER = 16 * 1024 * 1024 * 1024
_HEAD = struct.Struct(">IH")
_LENGTH = struct.Struct(">Q")
_HEAD_ONE = struct.Struct(">IHQ")  # the head of a frame with one buffer
_KINDS = {"$b": bytes, "$ba": bytearray, "$mv": memoryview}
#: A frame ready to send: the head (lengths and JSON) and the buffers, as 1-D unsigned-byte memoryviews for ``sendmsg``.
Frame = Tuple[bytes, List[memoryview]]  # noqa: UP006 (typing generics: this file runs on Python 3.8)


class FrameError(Exception):
    """The stream does not hold a well-formed frame (bad length, bad JSON); it cannot be resynchronised."""


class PeerClosedError(FrameError):
    """The other side closed the connection (at a frame boundary or in the middle of one)."""


class DecodeError(FrameError):
    """A complete frame whose body cannot be decoded; the frame was consumed and the stream is still in step.

    ``call_id`` is the id the frame starts with (both sides write ``"id"`` first), so that the one call it
    answers can fail; ``None`` when it names none. ``chunk``: the frame is a stream's chunk (``"chunk"`` follows
    the id), not the call's last reply.
    """

    call_id: int | None = None
    chunk = False


_ID = re.compile(rb'^\{"id":(-?[0-9]{1,18})(?:\}|,("chunk":)?)')


def _undecodable(message: str, body: bytes | bytearray) -> DecodeError:
    error = DecodeError(message)
    match = _ID.match(body)
    error.call_id = int(match.group(1)) if match else None
    error.chunk = match is not None and match.group(2) is not None
    return error


class ArrayValue:
    """An array received where numpy does not import: ``dtype`` (numpy's ``dtype.str``, e.g. ``"<f4"``),
    ``shape`` (a tuple) and ``data`` (a memoryview of its C-order bytes). Sent back, it travels as the array."""

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, dtype: str, shape: tuple[int, ...], data: memoryview) -> None:
        self.dtype = dtype
        self.shape = tuple(shape)
        self.data = data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArrayValue):
            return NotImplemented
        return (self.dtype, self.shape) == (other.dtype, other.shape) and self.data == other.data

    __hash__ = None  # type: ignore[assignment]  # mutable, like the arrays it stands for

    def __repr__(self) -> str:
        return f"ArrayValue(dtype={self.dtype!r}, shape={self.shape!r}, nbytes={self.data.nbytes})"


class _NeedsEscaping(Exception):
    """The value holds a user key starting with ``$``: it takes the (slower) escaping path."""


def _bytes_of(value: Any) -> memoryview:
    view = memoryview(value)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class _Collector:
    """Turns binary values into tags while JSON encodes, collecting their buffers (one encode at a time)."""

    def __init__(self) -> None:
        self.buffers: list[memoryview] = []
        self.busy = False
        self._markers: dict[int, Any] = {}  # the containers being encoded (a circular check)
        self._encoder = _MAKE_ENCODER(self.tag, self._markers) if _MAKE_ENCODER is not None else None

    def dumps(self, value: Any) -> str:
        if self._encoder is not None:
            try:
                return "".join(self._encoder(value, 0))
            except BaseException:
                self._markers.clear()  # an encode that failed part-way leaves its containers marked
                raise
        return json.JSONEncoder(default=self.tag, **_OPTIONS).encode(value)

    def _add(self, view: memoryview) -> int:
        self.buffers.append(view)
        return len(self.buffers) - 1

    def tag(self, value: Any) -> Any:
        kind = type(value)
        if kind is bytes or kind is bytearray:  # a 1-D view of bytes as they are: no checks to make
            buffers = self.buffers
            buffers.append(memoryview(value))
            return {"$b" if kind is bytes else "$ba": len(buffers) - 1}
        if kind is memoryview:
            return {"$mv": self._add(_bytes_of(value))}
        if isinstance(value, ArrayValue):
            return {"$array": self._add(_bytes_of(value.data)), "dtype": value.dtype, "shape": list(value.shape)}
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(value, numpy.ndarray):
            if value.dtype.hasobject or value.dtype.fields is not None:
                raise TypeError(
                    f"a numpy array of dtype {value.dtype} cannot be sent to or from a model (object and structured "
                    "dtypes have no raw form; convert it to plain numbers or a list)"
                )
            array = value if value.flags.c_contiguous else value.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
            return {
                "$array": self._add(_bytes_of(array.reshape(-1).view("u1"))),
                "dtype": array.dtype.str,
                "shape": list(array.shape),
            }
        raise TypeError(
            f"object of type {kind.__name__} cannot be sent to or from a model (JSON values, bytes and arrays only)"
        )

    def escape(self, value: Any) -> Any:
        """``value`` with user keys starting with ``$`` escaped (``$k`` -> ``$$k``), binary values tagged."""
        kind = type(value)
        if kind is str or kind is int or kind is float or kind is bool or value is None:
            return value
        if isinstance(value, dict):
            return {
                (f"${key}" if isinstance(key, str) and key[:1] == "$" else key): self.escape(v)
                for key, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.escape(item) for item in value]
        if isinstance(value, (str, int, float)):
            return value
        return self.tag(value)


_OPTIONS: Any = {"ensure_ascii": False, "allow_nan": True, "separators": (",", ":")}


def _c_encoder() -> Any:
    """``make(default)``: the C encoder ``JSONEncoder.encode`` builds on each call, made once per thread and kept (a
    small frame costs noticeably less), with its circular check on a markers dict the caller keeps (a value
    containing itself is found at once, never by running out of stack); ``None`` where this interpreter has no
    usable one."""
    try:
        from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

        def make(default: Any, markers: Any) -> Any:
            return c_make_encoder(markers, default, encode_basestring, None, ":", ",", False, False, True)

        sample = {"a": [1.5, "\u00e9", None, True, float("nan")]}
        if c_make_encoder is None or "".join(make(repr, {})(sample, 0)) != json.JSONEncoder(**_OPTIONS).encode(sample):
            return None
    except Exception:  # ImportError, or a C encoder of another signature
        return None
    return make


_MAKE_ENCODER = _c_encoder()
#: Each thread's collector (and C encoder), reused from frame to frame.
_LOCAL = threading.local()


def encode(message: Any) -> Frame:
    """``message`` as a :data:`Frame`; raises ``TypeError`` for values that cannot travel, ``ValueError`` for
    values nested too deeply (or containing themselves), ``FrameError`` when the JSON exceeds :data:`MAX_FRAME`."""
    body, buffers = _dump(message)
    return _frame(body, buffers)


def encode_wrapped(prefix: str, value: Any, suffix: str) -> Frame:
    """The frame of a message whose JSON is ``prefix``, then ``value``'s, then ``suffix``: byte for byte what
    :func:`encode` writes for the whole message, with only ``value`` walked (a call's or reply's envelope is
    formatted, never built as a dict). ``prefix`` and ``suffix`` are JSON text holding no ``"$``; raises as
    :func:`encode` does."""
    body, buffers = _dump(value)
    return _frame(prefix + body + suffix, buffers)


def _dump(message: Any) -> tuple[str, list[memoryview]]:
    kind = type(message)
    if kind is bytes or kind is bytearray:  # one binary value (an image, audio): nothing to walk
        return ('{"$b":0}' if kind is bytes else '{"$ba":0}'), [memoryview(message)]
    if kind is list and len(message) == 1 and type(message[0]) is bytes:  # the arguments of call(method, blob)
        return '[{"$b":0}]', [memoryview(message[0])]
    collector: _Collector | None = getattr(_LOCAL, "collector", None)
    if collector is None:
        collector = _LOCAL.collector = _Collector()
    elif collector.busy:  # encode re-entered on this thread (a signal handler): a collector of its own
        collector = _Collector()
    collector.busy = True
    buffers = collector.buffers = []
    try:
        body = collector.dumps(message)
        # Each tag's key dumps as one '"$'; any more is a user key (or a string) starting with "$".
        if body.count('"$') != len(buffers):
            escaping = _Collector()
            body = escaping.dumps(escaping.escape(message))
            buffers = escaping.buffers
    except (RecursionError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc) != "Circular reference detected":
            raise
        raise ValueError("the value is nested too deeply (or contains itself) to be sent to or from a model") from None
    finally:
        collector.buffers = []  # no reference to the caller's buffers is kept (a bytearray could not resize)
        collector.busy = False
    return body, buffers


def _frame(body: str, buffers: list[memoryview]) -> Frame:
    data = body.encode("utf-8", "surrogatepass")
    if len(data) > MAX_FRAME:
        raise FrameError(f"message of {len(data)} bytes exceeds the frame limit of {MAX_FRAME} bytes")
    if len(buffers) > MAX_BUFFERS:
        raise FrameError(f"message holds {len(buffers)} binary values, more than the limit of {MAX_BUFFERS}")
    if not buffers:
        return _HEAD.pack(len(data), 0) + data, buffers
    if len(buffers) == 1:
        return _HEAD_ONE.pack(len(data), 1, buffers[0].nbytes) + data, buffers
    lengths = struct.pack(f">{len(buffers)}Q", *[view.nbytes for view in buffers])
    return _HEAD.pack(len(data), len(buffers)) + lengths + data, buffers


# The decoding side, last: it imports the names above from this module, then partly initialised.
from . import decoding as _decoding  # noqa: E402

Decoder = _decoding.Decoder
decode = _decoding.decode
