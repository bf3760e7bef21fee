"""A request asking the backend to cut its own prompt (vLLM's truncate_prompt_tokens) is not refused for its length:
the guard counts what the backend keeps, cuts nothing itself, and refuses only a number the window cannot hold."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tests.validation._helpers import char_tok

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError
from autoglm_runtime.validation import ContextWindowGuard, GuardResult, OpenAIExtractor, ValidationMiddleware


def judge(body: dict[str, Any], window: int = 100) -> GuardResult:
    guard = ContextWindowGuard(char_tok(), window, message_tokens=0)
    return guard.judge(OpenAIExtractor().extract(body).guard_input())


def text(result: GuardResult) -> str:
    return "".join(chr(i) for ids in result.token_ids for i in ids)


def test_the_backend_keeps_the_prompt_s_last_tokens() -> None:
    result = judge({"prompt": "a" * 500 + "b" * 40, "max_tokens": 10, "truncate_prompt_tokens": 40})
    assert (result.input_tokens, result.removed_tokens, text(result)) == (40, 0, "b" * 40)
    result = judge(
        {"prompt": "b" * 40 + "a" * 500, "max_tokens": 10, "truncate_prompt_tokens": 40, "truncation_side": "right"}
    )
    assert text(result) == "b" * 40
    # -1 keeps all the room the window leaves beside the output; a prompt that already fits is kept whole.
    assert judge({"prompt": "a" * 500, "max_tokens": 10, "truncate_prompt_tokens": -1}).input_tokens == 90
    assert judge({"prompt": "a" * 20, "max_tokens": 10, "truncate_prompt_tokens": -1}).input_tokens == 20


def test_a_batch_keeps_each_prompt_s_tokens_and_a_chat_its_rendered_prompt_s() -> None:
    result = judge({"prompt": ["a" * 500, "b" * 5], "max_tokens": 10, "truncate_prompt_tokens": 30})
    assert [one.input_tokens for one in result.batch] == [30, 5]
    assert result.input_tokens == 35
    chat = {"messages": [{"role": "system", "content": "s" * 10}, {"role": "user", "content": "u" * 300}]}
    result = judge({**chat, "max_tokens": 10, "truncate_prompt_tokens": 50})
    assert (result.input_tokens, text(result)) == (50, "u" * 50)


def test_keeping_more_than_the_window_holds_is_e0513_and_a_bad_value_e5010() -> None:
    with pytest.raises(ContextWindowExceededError) as info:
        judge({"prompt": "a" * 5, "max_tokens": 10, "truncate_prompt_tokens": 95})
    assert info.value.param == "truncate_prompt_tokens"
    assert info.value.message == (
        "This model's maximum context length is 100 tokens. However, truncate_prompt_tokens asks to keep 95 prompt "
        "tokens, and with the 10 tokens of the completion asked for by max_tokens that is more than the context "
        "window: lower truncate_prompt_tokens to at most 90, or send -1 for all the room there is"
    )
    for fields, message in (
        (
            {"truncate_prompt_tokens": -2},
            'truncate_prompt_tokens must be a whole number of at least 1, or -1 (vLLM also reads "5" and 5.0 as 5), '
            "got -2",
        ),
        (
            {"truncate_prompt_tokens": 2.5},
            'truncate_prompt_tokens must be a whole number of at least 1, or -1 (vLLM also reads "5" and 5.0 as 5), '
            "got 2.5",
        ),
        ({"truncation_side": "middle"}, "truncation_side must be 'left' or 'right', got 'middle'"),
    ):
        with pytest.raises(InvalidRequestError) as error:
            OpenAIExtractor().extract({"prompt": "a", **fields})
        assert error.value.message == f"{message}: fix the request body"


def test_the_middleware_forwards_such_a_body_as_it_came() -> None:
    received: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        received.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guarded = ValidationMiddleware(app, context_guard=ContextWindowGuard(char_tok(), 100))
    body = b'{"prompt": "' + b"a" * 5000 + b'", "max_tokens": 10, "truncate_prompt_tokens": -1}'

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://test") as client:
            return await client.post("/v1/completions", content=body)

    response = asyncio.run(go())
    assert response.status_code == 204
    assert "x-autoglm-truncated-tokens" not in response.headers
    assert received == [body]
