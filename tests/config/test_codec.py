from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoglm_runtime.config.codec import BytesCodec, JsonCodec, TextCodec, decode_value, resolve_codec
from autoglm_runtime.errors import UsageError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_json_round_trips_every_json_value(value: Any) -> None:
    codec = JsonCodec()
    assert decode_value(codec, codec.encode(value)) == value


@given(st.text())
def test_text_round_trips(value: str) -> None:
    codec = TextCodec()
    assert decode_value(codec, codec.encode(value)) == (value or None)


def test_empty_data_is_none_for_every_codec() -> None:
    for name in ("json", "text", "bytes"):
        assert decode_value(resolve_codec(name), b"") is None
        assert decode_value(resolve_codec(name), None) is None


def test_json_refuses_nan_and_bad_utf8() -> None:
    codec = JsonCodec()
    with pytest.raises(ValueError, match="JSON constant NaN is not allowed in config values"):
        codec.decode(b"NaN")
    with pytest.raises(json.JSONDecodeError):
        codec.decode(b"{not json")
    with pytest.raises(UnicodeDecodeError):
        codec.decode(b"\xff")


def test_bytes_codec_keeps_bytes() -> None:
    assert BytesCodec().decode(b"\x00\x01") == b"\x00\x01"
    with pytest.raises(TypeError, match="the bytes codec encodes bytes values, not str"):
        BytesCodec().encode("x")


def test_unknown_codec_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        resolve_codec("yaml")
    assert info.value.message == "unknown config codec 'yaml': use one of bytes, json, text or pass a Codec object"
    assert resolve_codec(JsonCodec()).name == "json"
