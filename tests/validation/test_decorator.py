"""``guarded`` around direct Python calls, sync and async."""

from __future__ import annotations

import asyncio

import pytest
from tests.validation._helpers import char_tok

from autoglm_runtime.errors import ContextWindowExceededError, InputDecodeError, UsageError
from autoglm_runtime.validation import ContextWindowGuard, GuardResult, guarded


def test_sync_function_sees_only_fitting_input() -> None:
    calls: list[str] = []

    @guarded(ContextWindowGuard(char_tok(), 10))
    def generate(prompt: str, max_tokens: int = 4) -> str:
        calls.append(prompt)
        return prompt.upper()

    assert generate("abc") == "ABC"
    with pytest.raises(ContextWindowExceededError) as info:
        generate("abcdefg")  # 7 + the default 4 output tokens
    assert info.value.message == (
        "This model's maximum context length is 10 tokens. However, you requested 11 tokens (7 in the "
        "input, 4 in the completion asked for by max_tokens), more than the context window of 10 "
        "tokens: shorten the input or lower max_tokens"
    )
    assert info.value.param == "prompt"
    assert generate("abcdefg", max_tokens=3) == "ABCDEFG"
    assert calls == ["abc", "abcdefg"]


def test_truncated_prompt_and_result_are_passed_in() -> None:
    seen: list[tuple[str, GuardResult | None]] = []

    @guarded(ContextWindowGuard(char_tok(), 6, truncate_on_overflow=True), result_arg="verdict")
    def generate(prompt: str, max_tokens: int = 2, verdict: GuardResult | None = None) -> None:
        seen.append((prompt, verdict))

    generate("abcdefgh")
    [(prompt, verdict)] = seen
    assert prompt == "efgh"
    assert verdict is not None
    assert verdict.removed_tokens == 4


def test_async_function_and_lone_surrogates() -> None:
    @guarded(ContextWindowGuard(char_tok(), 10), text_arg="messages", max_tokens_arg=None)
    async def chat(messages: list[str]) -> int:
        return len(messages)

    assert asyncio.run(chat(["a", "b"])) == 2
    with pytest.raises(InputDecodeError) as info:
        asyncio.run(chat(["ok", "bad \ud800"]))
    assert info.value.message == (
        "the input contains a lone surrogate U+D800 at character 4 of messages, which no tokenizer can encode: "
        "send well-formed Unicode text"
    )


def test_unknown_parameter_names_are_refused_at_decoration() -> None:
    def generate(text: str) -> str:
        return text

    with pytest.raises(UsageError) as info:
        guarded(ContextWindowGuard(char_tok(), 10))(generate)
    assert info.value.message == (
        "test_unknown_parameter_names_are_refused_at_decoration.<locals>.generate has no parameter named 'prompt' "
        "for the guard to use"
    )
