"""What the worker (``_scripts/dispatch.py``) and the host (``_replies.py``) say of a value of the wrong type."""

from __future__ import annotations

import pytest

from autoglm_runtime.isolation._scripts.dispatch import method_of, not_a_generator
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


class _Model:
    label = "not callable"

    def predict(self, text: str) -> str:
        return text

    def generate(self, text: str) -> str:
        return text

    def _private(self) -> None: ...

    @property
    def costly(self) -> str:  # never read to list the methods
        raise AssertionError("the model's property ran")


def test_a_method_the_model_lacks_is_named_with_those_it_has() -> None:
    # Before: "raised AttributeError: '_Model' object has no attribute 'predcit'", as if the model had failed.
    model = _Model()
    assert method_of(model, "predict")("hi") == "hi"
    with pytest.raises(AttributeError) as missing:
        method_of(model, "predcit")
    assert str(missing.value) == "the model (_Model) has no method 'predcit': its methods are generate, predict"
    with pytest.raises(AttributeError) as attribute:
        method_of(model, "label")
    assert str(attribute.value) == (
        "the model (_Model) has an attribute that is not a method named 'label': its methods are generate, predict"
    )
    with pytest.raises(AttributeError) as bare:
        method_of(object(), "predict")
    assert str(bare.value) == "the model (object) has no method 'predict': it has no public method"
