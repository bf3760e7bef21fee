"""Text extraction from OpenAI-style bodies, rewriting after truncation, and the error body."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError, UsageError
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
    assert extractor.extract({"prompt": [[1, 2], [3]]}).segments == [(1, 2), (3,)]
    with pytest.raises(InvalidRequestError):
        extractor.extract({"prompt": []})  # vLLM: "please provide at least one prompt"


def test_a_batch_of_strings_names_each_prompt_as_a_batch_of_token_ids_does() -> None:
    extractor = OpenAIExtractor(max_prompts=3)
    strings = extractor.extract({"prompt": ["a", "b"]})
    ids = extractor.extract({"prompt": [[5], [7]]})
    assert strings.fields == (TextField(("prompt", 0), "a"), TextField(("prompt", 1), "b"))
    assert ids.fields == (TextField(("prompt", 0), (5,)), TextField(("prompt", 1), (7,)))
    assert (strings.batch, ids.batch) == (True, True)
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
        # The element at fault is the param, as OpenAI names it ("Invalid type for 'messages[0].content'") and as a
        # missing role (messages[0].role) or a bad prompt (prompt[1]) is named; it was the whole "messages" field.
        ({"messages": ["hi"]}, "messages[0] must be an object, got str: fix the request body", "messages[0]"),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "messages[0].content must be a string or a list of content parts, got int: fix the request body",
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
            "messages[0].content[0].text must be a string, got NoneType: fix the request body",
            "messages[0].content[0].text",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": ["a", 7]}]},
            "messages[1].content[1] must be an object, got int: fix the request body",
            "messages[1].content[1]",
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


def test_a_batch_of_strings_costs_paths_for_its_own_size_not_for_max_prompts() -> None:
    # The index paths of a batch of strings were built (and kept) for max_prompts entries whatever the batch's size:
    # a limit set very high ("no limit") made the first batch build that many tuples, all of memory for 10**9.
    extractor = OpenAIExtractor(max_prompts=500_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        extracted = extractor.extract({"prompt": ["a", "b", "c"]})
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert extracted.fields == tuple(TextField(("prompt", index), text) for index, text in enumerate("abc"))
    assert grown < 100_000  # bytes (500,000 paths are some 40 MB)


def test_apply_writes_truncated_pieces_back(chars: CallableTokenizer) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "aaaa"},
            {"role": "user", "content": [{"type": "text", "text": "bbbb"}]},
        ],
        "prompt": [1, 2, 3],
    }
    extractor = OpenAIExtractor()
    extracted = extractor.extract(body)
    result = ContextWindowGuard(chars, 5, truncate_on_overflow=True).check(extracted.segments)
    # Prompt fields come first, then messages: the left cut takes the 3 prompt ids, then 3 of "aaaa".
    assert extractor.apply(body, extracted, result) == {
        "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "bbbb"}]}],
        "prompt": [],
    }


def test_error_body_shape() -> None:
    exc = ContextWindowExceededError("too long", param="prompt")
    assert error_body(exc) == {
        "error": {"message": "too long", "type": "invalid_request_error", "param": "prompt", "code": "E0513"}
    }


ROLE_ADVICE = "give every message a role, one of 'system', 'assistant', 'user', 'function', 'tool', or 'developer'"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            {"content": "hi"},
            "messages[1].role is missing (OpenAI: \"Missing required parameter: 'messages[1].role'.\")",
        ),
        (
            {"role": 5, "content": "hi"},
            "messages[1].role is an integer, not a string (OpenAI: \"Invalid type for 'messages[1].role': expected a "
            'string, but got an integer instead.")',
        ),
        (
            {"role": None, "content": "hi"},
            "messages[1].role is null, not a string (OpenAI: \"Invalid type for 'messages[1].role': expected a "
            'string, but got null instead.")',
        ),
        (
            {"role": "robot", "content": "hi"},
            "messages[1].role is 'robot', not a role the server takes (OpenAI: \"Invalid value: 'robot'. Supported "
            "values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.\")",
        ),
    ],
)
def test_a_message_without_a_valid_role_is_e5010(message: dict[str, Any], error: str) -> None:
    # Before, all four were counted as if they had a role (a template then failed on them, or counted a "None").
    # OpenAI's roles are opted into: by default any string is a role (test_any_string_role_is_taken_by_default).
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor(roles=OpenAIExtractor.OPENAI_ROLES).extract(
            {"messages": [{"role": "system", "content": "be brief"}, message]}
        )
    assert (info.value.message, info.value.param, info.value.code) == (
        f"{error}: {ROLE_ADVICE}",
        "messages[1].role",
        "E5010",
    )


def test_every_message_without_a_valid_role_is_named_in_one_error() -> None:
    messages = [{"content": "a"}, {"role": "user", "content": "b"}, {"role": [1]}, *[{"role": "x"}] * 6]
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor(roles=OpenAIExtractor.OPENAI_ROLES).extract({"messages": messages})
    assert info.value.message == (
        "messages[0].role is missing (OpenAI: \"Missing required parameter: 'messages[0].role'.\"); messages[2].role "
        "is an array, not a string, messages[3].role is 'x', not a role the server takes, messages[4].role is 'x', "
        "not a role the server takes, messages[5].role is 'x', not a role the server takes, messages[6].role is 'x', "
        f"not a role the server takes, and 2 more messages have no valid role: {ROLE_ADVICE}"
    )
    assert info.value.param == "messages[0].role"


def test_any_string_role_is_taken_by_default_as_vllm_takes_it() -> None:
    # GLM's chat templates give tool results the role "observation"; vLLM takes any string role ("custom roles").
    # Before, the default was OpenAI's six and this chat, which vLLM runs, was refused with E5010.
    observation = {"messages": [{"role": "user", "content": "sum?"}, {"role": "observation", "content": "42"}]}
    assert OpenAIExtractor().extract(observation).segments == ["sum?", "42"]
    assert OpenAIExtractor(roles=None).extract(observation).segments == ["sum?", "42"]
    # vLLM too refuses a message without a string role (role: Required[str]).
    for message, error in (
        ({"role": 5, "content": "x"}, "an integer, not a string (OpenAI: \"Invalid type for 'messages[0].role': "
         "expected a string, but got an integer instead.\")"),
        ({"content": "x"}, "missing (OpenAI: \"Missing required parameter: 'messages[0].role'.\")"),
    ):  # fmt: skip
        with pytest.raises(InvalidRequestError) as info:
            OpenAIExtractor().extract({"messages": [message]})
        assert (info.value.message, info.value.param) == (
            f"messages[0].role is {error}: give every message a role (a string)",
            "messages[0].role",
        )


def test_a_list_of_roles_restricts_them() -> None:
    observation = {"messages": [{"role": "observation", "content": "42"}]}
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor(roles=OpenAIExtractor.OPENAI_ROLES).extract(observation)
    assert info.value.message == (
        "messages[0].role is 'observation', not a role the server takes (OpenAI: \"Invalid value: 'observation'. "
        "Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.\"): "
        f"{ROLE_ADVICE}"
    )
    glm = OpenAIExtractor(roles=(*OpenAIExtractor.OPENAI_ROLES, "observation"))
    assert glm.extract(observation).segments == ["42"]
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor(roles=["user", "observation"]).extract({"messages": [{"role": "system", "content": "x"}]})
    assert info.value.message == (
        "messages[0].role is 'system', not a role the server takes (OpenAI: \"Invalid value: 'system'. Supported "
        "values are: 'user' and 'observation'.\"): give every message a role, one of 'user' or 'observation'"
    )


@pytest.mark.parametrize("roles", ["user", [], ["user", 5]])
def test_roles_must_be_a_list_of_names(roles: Any) -> None:
    with pytest.raises(UsageError) as info:
        OpenAIExtractor(roles=roles)
    assert info.value.message == (f"roles must be a list of role names (strings), or None for any, got {roles!r}")
