"""Codecs turn a znode's bytes into a config value and back.

A codec never sees empty data: the sync layer maps ``b""`` to ``None`` itself, so every codec agrees on
what an empty node means. ``decode`` raises ``ValueError`` (or a subclass such as
``json.JSONDecodeError`` / ``UnicodeDecodeError``) for data it cannot read; the caller keeps the last
good value and reports E0409.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from autoglm_runtime.errors import UsageError

__all__ = ["BytesCodec", "Codec", "JsonCodec", "TextCodec", "decode_value", "resolve_codec"]


@runtime_checkable
class Codec(Protocol):
    """What a codec promises: ``decode(encode(v)) == v`` for every value it accepts."""

    name: str

    def decode(self, data: bytes) -> Any:
        """Turn non-empty znode data into a value; raise ``ValueError`` when it cannot."""

    def encode(self, value: Any) -> bytes:
        """Turn a value into znode data (``None`` becomes ``b""``)."""


class JsonCodec:
    """UTF-8 JSON; the default. ``NaN``/``Infinity`` are refused because other languages cannot read them."""

    name = "json"

    def decode(self, data: bytes) -> Any:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)

    def encode(self, value: Any) -> bytes:
        if value is None:
            return b""
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


class TextCodec:
    """UTF-8 text, returned as ``str``."""

    name = "text"

    def decode(self, data: bytes) -> Any:
        return data.decode("utf-8")

    def encode(self, value: Any) -> bytes:
        if value is None:
            return b""
        if not isinstance(value, str):
            raise TypeError(f"the text codec encodes str values, not {type(value).__name__}")
        return value.encode("utf-8")


class BytesCodec:
    """The raw bytes, unchanged."""

    name = "bytes"

    def decode(self, data: bytes) -> Any:
        return bytes(data)

    def encode(self, value: Any) -> bytes:
        if value is None:
            return b""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"the bytes codec encodes bytes values, not {type(value).__name__}")
        return bytes(value)


_BUILTIN: dict[str, Codec] = {"json": JsonCodec(), "text": TextCodec(), "bytes": BytesCodec()}


def resolve_codec(codec: str | Codec) -> Codec:
    """Return the codec named ``"json"``, ``"text"`` or ``"bytes"``, or ``codec`` itself if it is one.

    >>> resolve_codec("json").decode(b'{"a": 1}')
    {'a': 1}
    """
    if isinstance(codec, str):
        try:
            return _BUILTIN[codec]
        except KeyError:
            names = ", ".join(sorted(_BUILTIN))
            raise UsageError(f"unknown config codec {codec!r}: use one of {names} or pass a Codec object") from None
    if not isinstance(codec, Codec):
        raise UsageError(f"codec must be a codec name or an object with decode() and encode(), not {codec!r}")
    return codec


def decode_value(codec: Codec, data: bytes | None) -> Any:
    """Decode znode data with ``codec``; empty or missing data decodes to ``None`` for every codec."""
    if not data:
        return None
    return codec.decode(data)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed in config values")
