"""The start of a JSON value's text is exactly the whole text's, whatever the value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autoglm_runtime.validation._partial import json_prefix

TEXT = st.text(st.sampled_from(["a", "b", " ", '"', "\\", "\n", "\x01", "é", "漢", "🙂"]), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30,
)


def string_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(map(string_chars, value))
    if isinstance(value, dict):
        return sum(len(key) + string_chars(item) for key, item in value.items())
    return 0


@settings(max_examples=400, deadline=None)
@given(value=JSON, limit=st.integers(0, 60))
def test_a_prefix_is_the_whole_texts(value: Any, limit: int) -> None:
    whole = json.dumps(value, ensure_ascii=False)
    prefix = json_prefix(value, limit)
    if string_chars(value) <= limit:
        assert prefix is None
    elif prefix is not None:  # None only when keys cut short would collide
        assert prefix == whole[: limit + 1]
        assert len(prefix) == limit + 1


def test_a_huge_string_is_not_serialized_whole() -> None:
    value = [{"type": "function", "function": {"name": "f", "description": "y\n" * 1_000_000}}]
    assert json_prefix(value, 20) == json.dumps(value, ensure_ascii=False)[:21]


def test_keys_cut_to_an_earlier_key_give_up() -> None:
    assert json_prefix({"ab": 1, "abc": 2}, 3) is None
    assert json_prefix({"ab": 1, "abc": 2}, 4) == '{"ab"'  # "abc" is kept whole: no collision
