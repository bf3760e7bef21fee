"""Long tool definitions are judged from the start of their JSON text; verdicts match judging the whole text."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from autoglm_runtime.errors import ContextWindowExceededError
from autoglm_runtime.validation import (
    CallableTokenizer,
    ContextWindowGuard,
    GuardResult,
    HFTokenizer,
    IncompleteInput,
    Limits,
    OpenAIExtractor,
    ValidationMiddleware,
)


def two_chars_a_token(max_token_chars: int | None) -> CallableTokenizer:
    return CallableTokenizer(lambda text: list(range((len(text) + 1) // 2)), max_token_chars=max_token_chars)


def tools_body(description: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": description}}],
    }


def test_a_long_tool_definition_is_extracted_as_the_start_of_its_json() -> None:
    body = tools_body("y\n" * 1000)
    extracted = OpenAIExtractor().extract(body, max_text_chars=40)
    assert extracted.partial == frozenset({1})
    assert extracted.fields[1].value == json.dumps(body["tools"], ensure_ascii=False)[:41]
    whole = OpenAIExtractor().extract(body)
    assert whole.partial == frozenset()
    assert whole.fields[1].value == json.dumps(body["tools"], ensure_ascii=False)


def test_a_short_tool_definition_is_extracted_whole() -> None:
    body = tools_body("short")
    assert OpenAIExtractor().extract(body, max_text_chars=4000).partial == frozenset()


def test_the_text_limit_is_the_window_in_characters() -> None:
    assert ContextWindowGuard(two_chars_a_token(3), 100).text_limit() == 300
    assert ContextWindowGuard(two_chars_a_token(None), 100).text_limit() == 16 * 101


def test_with_a_bound_the_start_alone_rejects() -> None:
    guard = ContextWindowGuard(two_chars_a_token(2), 100, message_tokens=0)
    body = tools_body("y " * 10_000)
    extracted = OpenAIExtractor().extract(body, max_text_chars=guard.text_limit())
    with pytest.raises(ContextWindowExceededError) as info:
        guard.judge(extracted.guard_input())
    # The 201 characters held, at no more than 2 characters a token: at least 101 tokens (the tool definition is
    # pinned, so only it is weighed: with truncation on, the rest of the input could be cut).
    assert "you requested at least 102 tokens (at least 101 in the input, 1 for the completion" in info.value.message


def test_with_truncation_on_a_long_tool_definition_is_still_rejected() -> None:
    guard = ContextWindowGuard(two_chars_a_token(2), 100, message_tokens=0, truncate_on_overflow=True)
    body = {**tools_body("y " * 10_000), "messages": [{"role": "user", "content": "x" * 10_000}]}
    extracted = OpenAIExtractor().extract(body, max_text_chars=guard.text_limit())
    assert extracted.partial == frozenset({1})
    with pytest.raises(ContextWindowExceededError) as info:
        guard.judge(extracted.guard_input())
    # Truncation cannot help: the message says the pieces never truncated are what leaves no room.
    assert info.value.message == (
        "This model's maximum context length is 100 tokens. However, the system and developer messages, tool "
        "definitions and other pieces that are never truncated leave no room for the rest of the input. With them "
        "alone, you requested at least 102 tokens (at least 101 in the input, 1 for the completion by default, as "
        "the request sets no max_completion_tokens), more than the context window of 100 tokens: shorten them"
    )
    assert info.value.param == "messages"


def test_least_tokens_is_the_seam_for_judging_a_start() -> None:
    encoded: list[int] = []

    def encode(text: str) -> list[int]:
        encoded.append(len(text))
        return list(range((len(text) + 1) // 2))

    text = "y " * 100_000
    # With a bound: by length alone, nothing tokenized.
    bounded = ContextWindowGuard(CallableTokenizer(encode, max_token_chars=2), 100)
    assert bounded.least_tokens([text, "abc"], 100) == 100_002
    assert encoded == []
    # Without one: counted with early exit, less one cut's slack, tokenizing only a little past the window.
    blind = ContextWindowGuard(CallableTokenizer(encode), 100)
    least = blind.least_tokens([text], 100)
    assert 100 < least < 100_000
    assert sum(encoded) < 20_000
    assert blind.least_tokens(["y y"], 100) == 0  # two tokens, less the slack of a cut


def test_without_a_bound_the_start_is_counted_with_early_exit() -> None:
    guard = ContextWindowGuard(two_chars_a_token(None), 100, message_tokens=0)
    body = tools_body("y " * 10_000)
    extracted = OpenAIExtractor().extract(body, max_text_chars=guard.text_limit())
    assert len(extracted.fields[1].value) == 16 * 101 + 1
    with pytest.raises(ContextWindowExceededError) as info:
        guard.judge(extracted.guard_input())
    assert "However, you requested at least " in info.value.message


def test_a_start_that_proves_nothing_asks_for_the_whole_text() -> None:
    # Sixteen characters a token: the start holds too few tokens to prove anything.
    sparse = CallableTokenizer(lambda text: list(range(len(text) // 64)))
    guard = ContextWindowGuard(sparse, 100, max_chars_per_token=None, message_tokens=0)
    body = tools_body("y" * 20_000)
    extracted = OpenAIExtractor().extract(body, max_text_chars=guard.text_limit())
    with pytest.raises(IncompleteInput):
        guard.judge(extracted.guard_input())


class Growing:
    """Limits that grow after the first read: the window changes between text_limit() and judge()."""

    def __init__(self) -> None:
        self.reads = 0

    def current(self) -> Limits:
        self.reads += 1
        return Limits(100 if self.reads == 1 else 100_000)


async def echo(request: Request) -> JSONResponse:
    result: GuardResult = request.state.guard_result
    return JSONResponse({"input_tokens": result.input_tokens})


def test_the_middleware_judges_the_whole_text_when_the_window_grew_meanwhile() -> None:
    guard = ContextWindowGuard(two_chars_a_token(2), Growing(), message_tokens=0)
    app = ValidationMiddleware(
        Starlette(routes=[Route("/v1/chat/completions", echo, methods=["POST"])]), context_guard=guard
    )
    body = tools_body("y " * 1000)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/v1/chat/completions", json=body)

    response = asyncio.run(call())
    assert response.status_code == 200
    whole = json.dumps(body["tools"], ensure_ascii=False)
    assert response.json() == {"input_tokens": 1 + (len(whole) + 1) // 2}


PIECES = st.sampled_from(["a", "b", " ", "\n", '"', "é", "漢", "🙂", "hello", " world"])
DESCRIPTION = st.lists(PIECES, max_size=150).map("".join)


@settings(max_examples=150, deadline=None)
@given(description=DESCRIPTION, window=st.integers(1, 80), output=st.integers(1, 20), bounded=st.booleans())
def test_verdicts_from_the_start_match_the_whole_text(
    hf_bytelevel: HFTokenizer, description: str, window: int, output: int, bounded: bool
) -> None:
    guard = ContextWindowGuard(hf_bytelevel, window, max_chars_per_token="auto" if bounded else None)
    body = {**tools_body(description), "max_tokens": output}
    extractor = OpenAIExtractor()

    def verdict(max_text_chars: int | None) -> int | None:
        try:
            return guard.judge(extractor.extract(body, max_text_chars=max_text_chars).guard_input()).input_tokens
        except ContextWindowExceededError:
            return None

    expected = verdict(None)
    try:
        found = verdict(guard.text_limit())
    except IncompleteInput:
        return  # the middleware then judges the whole text, as verdict(None) does
    assert found == expected
