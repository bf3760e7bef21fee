"""What the worker (``_scripts/dispatch.py``) and the host (``_replies.py``) say of a value of the wrong type."""

from __future__ import annotations

import pytest

from autoglm_runtime.isolation._scripts.dispatch import not_a_generator
from autoglm_runtime.isolation.workers._replies import ReplyMismatch, hello_of, result_of


@pytest.mark.parametrize(
    ("result", "said"),
    [(3, "an int"), ([1], "a list"), ({}, "a dict"), (None, "a NoneType"), (object(), "an object"), ("x", "a str")],
)
def test_a_stream_of_something_else_names_the_type_with_its_article(result: object, said: str) -> None:
    error = not_a_generator("generate", result)
    assert isinstance(error, TypeError)
    assert str(error) == f"generate() returned {said}, not a generator: use call()"


def test_a_frame_that_breaks_the_protocol_names_its_type_with_its_article() -> None:
    with pytest.raises(ReplyMismatch) as handshake:
        hello_of("m", "m:load", 7)
    assert str(handshake.value) == "sent an int instead of a handshake"
    with pytest.raises(ReplyMismatch) as reply:
        result_of("m", "generate", 1, [])
    assert str(reply.value) == "answered generate() with a list"
