"""ValidationMiddleware over httpx's ASGI transport: budgets, batches, guard_result, framing, wording, the pool."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.validation._helpers import Gate, char_tok

from autoglm_runtime.validation import ContextWindowGuard, GuardResult, OpenAIExtractor, ValidationMiddleware


async def echo(request: Request) -> JSONResponse:
    body = await request.json()
    result: GuardResult | None = getattr(request.state, "guard_result", None)
    return JSONResponse(
        {
            "received": body,
            "headers": {k: v for k, v in request.headers.items() if k in ("content-length", "transfer-encoding")},
            "input_tokens": result.input_tokens if result else None,
            "token_ids": [list(ids) for ids in result.token_ids] if result else None,
        }
    )


def build_app(*, window: int = 50, truncate: bool = False, **options: Any) -> Starlette:
    guard = ContextWindowGuard(char_tok(), window, truncate_on_overflow=truncate, message_tokens=0)
    return Starlette(
        routes=[
            Route("/v1/completions", echo, methods=["POST"]),
            Route("/v1/chat/completions", echo, methods=["POST"]),
        ],
        # These bodies name their budgets themselves: no completions default of 16 output tokens.
        middleware=[
            Middleware(
                ValidationMiddleware,
                context_guard=guard,
                extractor=OpenAIExtractor(prompt_max_tokens=None),
                **options,
            )
        ],
    )


async def _post(app: Any, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, **kwargs)


def post(app: Any, path: str = "/v1/completions", **kwargs: Any) -> httpx.Response:
    return asyncio.run(_post(app, path, **kwargs))


def test_the_budget_field_vllm_uses_is_judged_over_http() -> None:
    # vLLM's chat server uses max_completion_tokens when it is sent, else max_tokens; its completions server has no
    # max_completion_tokens at all (it is ignored there).
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    response = post(build_app(), "/v1/chat/completions", json={**chat, "max_tokens": 5, "max_completion_tokens": 10**6})
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == ("max_completion_tokens", "E0513")
    response = post(build_app(), "/v1/chat/completions", json={**chat, "max_tokens": 10**6, "max_completion_tokens": 5})
    assert response.status_code == 200
    assert post(build_app(), json={"prompt": "hi", "max_tokens": 5, "max_completion_tokens": 10**6}).status_code == 200


def test_a_batch_reaches_the_app_with_only_the_long_prompt_cut() -> None:
    # No budget is sent: each prompt leaves room for the one token the model writes at least.
    response = post(build_app(window=20, truncate=True), json={"prompt": ["a" * 10, "b" * 30]})
    assert response.status_code == 200
    assert response.json()["received"] == {"prompt": ["a" * 10, "b" * 19]}
    assert response.headers["x-autoglm-truncated-tokens"] == "11"


def test_a_truncated_batch_with_a_suffix_keeps_the_suffix() -> None:
    body = {"prompt": ["a" * 10, "b" * 30], "suffix": "s" * 5}
    response = post(build_app(window=20, truncate=True), json=body)
    assert response.status_code == 200
    assert response.json()["received"] == {"prompt": ["a" * 10, "b" * 14], "suffix": "s" * 5}
    assert response.headers["x-autoglm-truncated-tokens"] == "16"


def test_a_batch_error_names_the_prompt_over_http() -> None:
    response = post(build_app(window=20), json={"prompt": ["a" * 10, "b" * 30]})
    assert response.json()["error"]["param"] == "prompt[1]"


def test_a_message_of_the_wrong_shape_is_named_as_openai_names_it_over_http() -> None:
    # The param was the whole "messages" field while the message named messages[1].content; the openai client
    # shows the param as BadRequestError.param, as OpenAI's own "Invalid type for 'messages[1].content'" does.
    body = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]}
    response = post(build_app(error_style="openai"), "/v1/chat/completions", json=body)
    assert (response.status_code, response.json()["error"]) == (
        400,
        {
            "message": "E5010: messages[1].content must be a string or a list of content parts, got int: fix the "
            "request body",
            "type": "invalid_request_error",
            "param": "messages[1].content",
            "code": "E5010",
        },
    )


def test_dropped_turns_leave_the_body_the_app_receives() -> None:
    messages = [
        {"role": "system", "content": "S" * 5},
        {"role": "user", "content": "x" * 20},
        {"role": "assistant", "content": "y" * 20},
        {"role": "user", "content": "z" * 10},
    ]
    response = post(build_app(window=20, truncate=True), "/v1/chat/completions", json={"messages": messages})
    assert response.json()["received"]["messages"] == [messages[0], messages[3]]


# 11. The rewritten body has exactly one framing header.
def test_a_truncated_chunked_request_has_one_framing_header() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps({"prompt": "p" * 80}).encode()

    response = post(build_app(truncate=True), content=chunks())
    assert response.status_code == 200
    assert response.json()["headers"] == {"content-length": str(len(json.dumps({"prompt": "p" * 49})))}


# 13. The app reuses the guard's tokens instead of tokenizing again.
def test_the_app_receives_the_guard_result() -> None:
    response = post(build_app(), json={"prompt": "hey", "max_tokens": 3})
    assert response.json()["input_tokens"] == 3
    assert response.json()["token_ids"] == [[ord("h"), ord("e"), ord("y")]]


@pytest.mark.parametrize("body", [{"model": "m"}, {"model": "m", "prompt": None}, {"messages": None}])
def test_a_body_without_input_reaches_the_app_without_a_guard_result(body: dict[str, Any]) -> None:
    # docs/validation.md: nothing to judge, so the app answers it; it must read guard_result with getattr.
    response = post(build_app(), json=body)
    assert (response.status_code, response.json()["received"], response.json()["input_tokens"]) == (200, body, None)


def test_lifespan_state_is_kept_next_to_the_guard_result() -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope["state"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guarded = ValidationMiddleware(app, context_guard=ContextWindowGuard(char_tok(), 50))
    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": [], "state": {"db": "pool"}}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"prompt": "ab"}', "more_body": False}

    async def send(message: Any) -> None:
        return None

    asyncio.run(guarded(scope, receive, send))
    assert seen[0]["db"] == "pool"
    assert seen[0]["guard_result"].input_tokens == 2


# 15. OpenAI-compatible wording and codes; every rejection logged once with its code.
def test_openai_error_style_puts_context_length_exceeded_in_code() -> None:
    response = post(build_app(error_style="openai"), json={"prompt": "x" * 60, "max_tokens": 1})
    error = response.json()["error"]
    assert response.headers["x-autoglm-error-code"] == "E0513"
    assert (error["code"], error["type"], error["param"]) == (
        "context_length_exceeded",
        "invalid_request_error",
        "prompt",
    )
    assert error["message"].startswith("E0513: This model's maximum context length is 50 tokens.")


def test_other_errors_keep_their_code_in_openai_style() -> None:
    response = post(build_app(error_style="openai"), json={"prompt": 5})
    assert (response.json()["error"]["code"], response.headers["x-autoglm-error-code"]) == ("E5010", "E5010")


def test_every_rejection_is_logged_once_with_its_code(caplog: pytest.LogCaptureFixture) -> None:
    app = build_app(max_body_bytes=1000)
    caplog.set_level(logging.INFO, logger="autoglm_runtime")
    requests: Sequence[dict[str, Any]] = [
        {"json": {"prompt": "x" * 60}},
        {"content": b'{"prompt": "\\ud800"}'},
        {"json": {"prompt": "hi"}, "headers": {"authorization": "x" * 600}},
        {"content": b"x" * 2000},
        {"json": {"prompt": [1.5]}},
        {"json": {"prompt": "fine"}},
    ]
    statuses = [post(app, **kwargs).status_code for kwargs in requests]
    assert statuses == [400, 400, 431, 413, 400, 200]
    codes = [getattr(r, "error_code", None) for r in caplog.records if r.name.startswith("autoglm_runtime")]
    assert codes == ["E0513", "E5009", "E0512", "E0515", "E5010"]


# 9. Large bodies are judged on a bounded pool of the middleware's own; a full pool answers 503 at once.


@pytest.mark.parametrize(("retry_after", "told"), [(3, 3), (0, 1)])
def test_a_full_guard_pool_answers_503_with_retry_after_and_small_bodies_pass(retry_after: int, told: int) -> None:
    # retry_after=0 is told as 1 s: "Retry-After: 0" sends a client that follows it straight back (before, it did).
    gate = Gate()
    guard = ContextWindowGuard(gate, 100_000)
    app = Starlette(routes=[Route("/v1/completions", echo, methods=["POST"])])
    middleware = ValidationMiddleware(app, context_guard=guard, max_concurrent_checks=1, retry_after=retry_after)
    big = {"prompt": "b" * 20_000}

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        first = asyncio.create_task(_post(middleware, "/v1/completions", json=big))
        assert await asyncio.to_thread(gate.entered.wait, 30)
        refused = await _post(middleware, "/v1/completions", json=big)
        small = await _post(middleware, "/v1/completions", json={"prompt": "small"})
        gate.release.set()
        return await first, refused, small

    with middleware:
        first, refused, small = asyncio.run(scenario())
    assert (first.status_code, small.status_code) == (200, 200)
    assert refused.status_code == 503
    assert (refused.headers["retry-after"], refused.headers["x-autoglm-error-code"]) == (str(told), "E0516")
    assert refused.json()["error"]["message"] == (
        f"all 1 guard threads are busy judging other requests: retry in {told} second{'s' if told > 1 else ''}"
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("autoglm-guard")]


# 10. A body that does not arrive in time is answered 408 and the connection closed.
def test_a_stalled_body_gets_408() -> None:
    sent: list[Any] = []
    stalled = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not sent and not stalled.is_set():
            stalled.set()
            return {"type": "http.request", "body": b'{"prompt": ', "more_body": True}
        await asyncio.Event().wait()  # the client never sends the rest
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    middleware = ValidationMiddleware(app, body_timeout=0.05)
    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert (b"x-autoglm-error-code", b"E0517") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["message"] == (
        "the request body did not arrive within 0.05 seconds: send the body promptly (the server's body_timeout)"
    )


def test_a_chat_without_text_or_budget_is_still_judged() -> None:
    # Messages holding only images (or null content) carry no text, but each still costs its role markers: 30
    # messages at message_tokens=4, plus the reply's start, are 124 tokens (and one the model writes at least) in a
    # window of 100.
    guard = ContextWindowGuard(char_tok(), 100)
    app = Starlette(
        routes=[Route("/v1/chat/completions", echo, methods=["POST"])],
        middleware=[Middleware(ValidationMiddleware, context_guard=guard)],
    )
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
    for message in (image, {"role": "user", "content": None}):
        response = post(app, "/v1/chat/completions", json={"messages": [message] * 30})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "E0513"
        # Exact: there is no text to count, only the markers.
        assert "you requested 125 tokens (124 in the input" in response.json()["error"]["message"]
    response = post(app, "/v1/chat/completions", json={"messages": [image] * 2})
    assert (response.status_code, response.json()["input_tokens"]) == (200, 12)
