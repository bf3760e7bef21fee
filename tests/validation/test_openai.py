"""Text extraction from OpenAI-style bodies, rewriting after truncation, and the error body."""

from __future__ import annotations

from typing import Any

import pytest

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError
from autoglm_runtime.validation import (
    CallableTokenizer,
    ContextWindowGuard,
    OpenAIExtractor,
    TextField,
    error_body,
)


def test_prompt_string_and_max_tokens() -> None:
    extracted = OpenAIExtractor().extract({"prompt": "hi", "max_tokens": 5})
    assert (extracted.fields, extracted.max_output_tokens, extracted.param) == (
        (TextField(("prompt",), "hi"),),
        5,
        "prompt",
    )


def test_prompt_lists_and_token_ids() -> None:
    extractor = OpenAIExtractor()
    assert extractor.extract({"prompt": ["a", "b"]}).segments == ["a", "b"]
    assert extractor.extract({"prompt": [1, 2, 3]}).segments == [(1, 2, 3)]
    assert extractor.extract({"prompt": [[1, 2], "c"]}).segments == [(1, 2), "c"]
    with pytest.raises(InvalidRequestError):
        extractor.extract({"prompt": []})  # vLLM: "please provide at least one prompt"


def test_a_batch_of_strings_names_each_prompt_as_a_mixed_batch_does() -> None:
    extractor = OpenAIExtractor(max_prompts=3)
    strings = extractor.extract({"prompt": ["a", "b"]})
    mixed = extractor.extract({"prompt": ["a", [7]]})
    assert strings.fields == (TextField(("prompt", 0), "a"), TextField(("prompt", 1), "b"))
    assert mixed.fields == (TextField(("prompt", 0), "a"), TextField(("prompt", 1), (7,)))
    assert (strings.batch, mixed.batch) == (True, True)
    assert all(type(field) is TextField for field in strings.fields)
    assert extractor.extract({"prompt": ["x", "y", "z"]}).fields[2] == TextField(("prompt", 2), "z")


def test_messages_with_string_and_part_contents() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "assistant", "content": None, "tool_calls": []},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look:"},
                    {"type": "image_url", "image_url": {"url": "data:"}},
                    {"type": "text", "text": "what is it?"},
                ],
            },
        ],
        "max_completion_tokens": 7,
    }
    extracted = OpenAIExtractor().extract(body)
    assert [f.path for f in extracted.fields] == [
        ("messages", 0, "content"),
        ("messages", 1, "tool_calls"),
        ("messages", 2, "content", 0, "text"),
        ("messages", 2, "content", 2, "text"),
    ]
    assert extracted.segments == ["be brief", "[]", "look:", "what is it?"]
    assert extracted.pinned == {0, 1}  # the system message and the tool calls are never cut
    assert (extracted.max_output_tokens, extracted.param) == (7, "messages")


def test_configurable_fields() -> None:
    extractor = OpenAIExtractor(prompt_fields=("inputs",), max_tokens_fields=("parameters.max_new_tokens",))
    extracted = extractor.extract({"inputs": "tgi style", "parameters": {"max_new_tokens": 20}})
    assert (extracted.segments, extracted.max_output_tokens, extracted.param) == (["tgi style"], 20, "inputs")


def test_no_input_fields() -> None:
    assert OpenAIExtractor().extract({"model": "x"}).fields == ()


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        ([], "the request body must be a JSON object, got list: send a JSON object", None),
        (
            {"prompt": 3},
            "prompt must be a string, a list of strings or a list of token ids, got int: fix the request body",
            "prompt",
        ),
        (
            {"prompt": ["a", 1.5]},
            "prompt[1] must be a string or a list of token ids, got float: fix the request body",
            "prompt[1]",
        ),
        ({"messages": "hi"}, "messages must be a list of messages, got str: fix the request body", "messages"),
        ({"messages": ["hi"]}, "messages[0] must be an object, got str: fix the request body", "messages"),
        (
            {"messages": [{"content": 5}]},
            "messages[0].content must be a string or a list of content parts, got int: fix the request body",
            "messages",
        ),
        (
            {"messages": [{"content": [{"type": "text", "text": None}]}]},
            "messages[0].content[0].text must be a string, got NoneType: fix the request body",
            "messages",
        ),
        (
            {"prompt": "a", "max_tokens": -3},
            'max_tokens must be a whole number of at least 1 (vLLM also reads "16" and 16.0 as 16), got -3: fix the '
            "request body",
            "max_tokens",
        ),
        (
            {"prompt": "a", "max_tokens": "9 tokens"},
            "max_tokens must be a whole number of at least 1 (vLLM also reads \"16\" and 16.0 as 16), got '9 tokens': "
            "fix the request body",
            "max_tokens",
        ),
    ],
)
def test_wrong_shapes_are_coded(body: Any, message: str, param: str | None) -> None:
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract(body)
    assert (info.value.message, info.value.param, info.value.code) == (message, param, "E5010")


def test_apply_writes_truncated_pieces_back(chars: CallableTokenizer) -> None:
    body = {"messages": [{"content": "aaaa"}, {"content": [{"type": "text", "text": "bbbb"}]}], "prompt": [1, 2, 3]}
    extractor = OpenAIExtractor()
    extracted = extractor.extract(body)
    result = ContextWindowGuard(chars, 5, truncate_on_overflow=True).check(extracted.segments)
    # Prompt fields come first, then messages: the left cut takes the 3 prompt ids, then 3 of "aaaa".
    assert extractor.apply(body, extracted, result) == {
        "messages": [{"content": "a"}, {"content": [{"type": "text", "text": "bbbb"}]}],
        "prompt": [],
    }


def test_error_body_shape() -> None:
    exc = ContextWindowExceededError("too long", param="prompt")
    assert error_body(exc) == {
        "error": {"message": "too long", "type": "invalid_request_error", "param": "prompt", "code": "E0513"}
    }
