"""Frames' JSON bodies back into messages: tags into bytes, memoryviews and arrays (see ``codec.py``, whose public face
:class:`Decoder` and :func:`decode` are).

STDLIB ONLY, and valid on every interpreter a model environment may use (3.8+), as ``codec.py``, which imports it
last (the names imported from there below are defined by then): the same objects, so an :class:`ArrayValue` decoded
here is the one the encoder knows.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .codec import _KINDS, ArrayValue, DecodeError, _undecodable

__all__ = ["Decoder", "decode"]


class _Untagger:
    def __init__(self, buffers: list[bytearray]) -> None:
        self.buffers = buffers
        self.numpy: Any = None

    def _buffer(self, index: Any) -> bytearray:
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise DecodeError(f"a binary tag names buffer {index!r}, but the frame holds {len(self.buffers)}")
        return self.buffers[index]

    def hook(self, obj: dict) -> Any:  # type: ignore[type-arg]
        if len(obj) == 1:  # a lone binary tag, the commonest tagged object, without the general walk
            for key, index in obj.items():
                kind = _KINDS.get(key)
                if kind is not None:
                    data = self._buffer(index)
                    return data if kind is bytearray else bytes(data) if kind is bytes else memoryview(data)
        for key in obj:
            if key[:1] == "$":
                return self._untag(obj)
        return obj

    def tags_only(self, obj: dict) -> Any:  # type: ignore[type-arg]
        """:meth:`hook` for a frame whose every ``"$`` starts a tag's key, as :func:`encode` writes them when no user
        key or string starts with ``$``: only tag-shaped objects (one key, or an array's three) need looking at."""
        size = len(obj)
        return self.hook(obj) if size == 1 or (size == 3 and "$array" in obj) else obj

    def _untag(self, obj: dict[str, Any]) -> Any:
        if len(obj) == 1:
            ((key, index),) = obj.items()
            kind = _KINDS.get(key)
            if kind is not None:
                data = self._buffer(index)
                return data if kind is bytearray else bytes(data) if kind is bytes else memoryview(data)
        if "$array" in obj and set(obj) == {"$array", "dtype", "shape"}:
            return self._array(self._buffer(obj["$array"]), obj["dtype"], obj["shape"])
        plain = {}
        for key, value in obj.items():
            if key[:2] == "$$":
                plain[key[1:]] = value
            elif key[:1] == "$":
                raise DecodeError(f"unknown tag {key!r} (user keys starting with '$' travel escaped as '$$')")
            else:
                plain[key] = value
        return plain

    def _array(self, data: bytearray, dtype: Any, shape: Any) -> Any:
        if not isinstance(dtype, str) or not isinstance(shape, list) or not all(type(n) is int for n in shape):
            raise DecodeError(f"an array tag needs a dtype string and a list of ints, got {dtype!r} and {shape!r}")
        numpy = _numpy()
        if numpy is None:
            return ArrayValue(dtype, tuple(shape), memoryview(data))
        try:
            return numpy.frombuffer(data, dtype=numpy.dtype(dtype)).reshape(tuple(shape))
        except (TypeError, ValueError) as exc:
            raise DecodeError(
                f"an array of dtype {dtype!r} and shape {shape!r} does not fit its buffer: {exc}"
            ) from None


_NUMPY: list[Any] = []


def _numpy() -> Any:
    """numpy if it imports here (once; a refusal, as in a subinterpreter, counts as absent), else ``None``."""
    if not _NUMPY:
        found: Any = None
        try:
            import numpy

            found = numpy
        except Exception:  # ImportError, or an extension refusing this interpreter
            found = None
        _NUMPY.append(found)
    return _NUMPY[0]


class Decoder:
    """Decodes frames' JSON bodies; one per reader, reused from frame to frame (one thread at a time)."""

    def __init__(self) -> None:
        self._untagger = _Untagger([])
        self._json = json.JSONDecoder(object_hook=self._untagger.hook)
        self._tags = json.JSONDecoder(object_hook=self._untagger.tags_only)
        self._plain = json.JSONDecoder()

    def decode(self, body: bytes | bytearray, buffers: list[bytearray] | None) -> Any:
        try:
            text = body.decode("utf-8", "surrogatepass")
            marks = text.count('"$')
            if not marks:  # no tag and no escaped key: no object needs the (slower) hook
                decoder = self._plain
            else:
                buffers = buffers or []
                decoder = self._tags if marks == len(buffers) else self._json  # (see encode)
                self._untagger.buffers = buffers
            try:
                message = self._enveloped(text, decoder, buffers)
                if message is not None:
                    return message
                # The scanner directly when the text is one JSON value from its first character to its last (what
                # encode writes); anything else (surrounding space, invalid JSON) takes decode itself, so results
                # and errors are exactly the same.
                try:
                    value, end = decoder.scan_once(text, 0)  # type: ignore[attr-defined]
                except (StopIteration, ValueError):
                    end = -1
                return value if end == len(text) else decoder.decode(text)
            finally:
                self._untagger.buffers = []
        except DecodeError as exc:
            raise _undecodable(f"frame of {len(body)} bytes holds an invalid tagged value: {exc}", body) from None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _undecodable(f"frame of {len(body)} bytes is not valid JSON: {exc}", body) from exc

    def _enveloped(self, text: str, decoder: Any, buffers: list[bytearray] | None) -> dict[str, Any] | None:
        """A plain reply in the exact form the worker formats it (``encode_wrapped``), or a plain call (no kwargs,
        not a stream, no trace context) as the host formats it, with only its result or arguments decoded; ``None``
        for any other text, which :meth:`decode` then reads whole (to the same value: the envelope holds no tag, and
        a JSON value ends where it ends)."""
        envelope = _ENVELOPE.match(text)
        if envelope is None:
            return None
        method = envelope.group(2)
        if method is None and text[-1] == "}":  # a reply
            found, value = self._value(text[envelope.end() : -1], decoder, buffers)
            return {"id": int(envelope.group(1)), "ok": True, "result": value} if found else None
        if method is not None and text.endswith(_PLAIN_CALL_END):
            found, args = self._value(text[envelope.end() : -len(_PLAIN_CALL_END)], decoder, buffers)
            if not found or type(args) is not list:
                return None
            return {
                "id": int(envelope.group(1)),
                "type": "call",
                "method": method,
                "args": args,
                "kwargs": {},
                "stream": False,
            }
        return None

    def _value(self, text: str, decoder: Any, buffers: list[bytearray] | None) -> tuple[bool, Any]:
        """``(True, value)`` when ``text`` is exactly one JSON value, else ``(False, None)``."""
        if decoder is self._tags and buffers is not None and len(buffers) == 1:  # a lone blob, as encode frames it
            if text == '{"$b":0}':
                return True, bytes(buffers[0])
            if text == '[{"$b":0}]':
                return True, [bytes(buffers[0])]
        try:
            value, end = decoder.scan_once(text, 0)
        except (StopIteration, ValueError):
            return False, None
        return end == len(text), value


# The reply envelope the worker formats, and the plain call the host formats (call ids are small non-negative ints;
# a method named as an identifier reads the same in JSON): any other text is decoded whole.
_ENVELOPE = re.compile(
    r'\{"id":(0|[1-9][0-9]{0,17}),(?:"ok":true,"result":|"type":"call","method":"([A-Za-z_][A-Za-z0-9_]{0,99})","args":)'
)
_PLAIN_CALL_END = ',"kwargs":{},"stream":false}'


def decode(body: bytes, buffers: list[bytearray] | None = None) -> Any:
    """The message in one frame's JSON ``body`` and its ``buffers``; raises :class:`DecodeError`."""
    return Decoder().decode(body, buffers)
