"""Regressions found by review: uncounted tool-call messages, silent settings, uncoded errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoglm_runtime.errors import InvalidRequestError, UsageError
from autoglm_runtime.validation import (
    CallableTokenizer,
    ChatTemplate,
    ContextWindowGuard,
    GuardSettings,
    OpenAIExtractor,
    ValidationMiddleware,
    guarded,
)

BIG = "word " * 500
ARGUMENTS = json.dumps({"text": BIG})  # vLLM refuses arguments that are not JSON


@pytest.mark.parametrize(
    "message",
    [
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ARGUMENTS}}],
        },
        {"role": "assistant", "function_call": {"name": "f", "arguments": BIG}},
        {"role": "assistant", "reasoning_content": BIG},
    ],
    ids=["tool_calls", "function_call", "reasoning_content"],
)
def test_a_message_without_content_still_counts_what_the_model_reads(message: dict[str, object]) -> None:
    extracted = OpenAIExtractor().extract({"messages": [{"role": "user", "content": "hi"}, message]})
    counted = "".join(str(field.value) for field in extracted.fields)
    assert "word word" in counted


def test_settings_with_limits_but_no_tokenizer_are_refused() -> None:
    with pytest.raises(UsageError) as info:
        GuardSettings.from_mapping({"context_window": 64})
    assert "'context_window' needs 'tokenizer'" in str(info.value)


def test_a_chat_template_file_that_is_missing_or_not_an_object_is_a_coded_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        ChatTemplate.from_file(tmp_path / "nope" / "tokenizer_config.json")
    listed = tmp_path / "tokenizer_config.json"
    listed.write_text(json.dumps([1]))
    with pytest.raises(UsageError, match="holds a JSON list, not an object"):
        ChatTemplate.from_file(listed)


@pytest.mark.parametrize("text", [None, 5])
def test_the_decorator_refuses_a_text_that_is_not_text(text: object) -> None:
    guard = ContextWindowGuard(CallableTokenizer(lambda s: list(s.encode())), 64)

    @guarded(guard, max_tokens_arg=None)
    def generate(prompt: object) -> str:
        return "ok"

    with pytest.raises(InvalidRequestError) as info:
        generate(text)
    assert info.value.code == "E5010"


@pytest.mark.parametrize("value", [-5, "soon", True])
def test_retry_after_must_be_whole_seconds(value: object) -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        return None

    with pytest.raises(UsageError, match="retry_after must be a whole number of seconds"):
        ValidationMiddleware(app, retry_after=value)  # type: ignore[arg-type]
