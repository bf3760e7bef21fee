"""http_error: our errors as the status, headers and body an HTTP server answers, as the middleware answers them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.validation._helpers import char_tok

from autoglm_runtime.errors import (
    AutoGLMRuntimeError,
    ContextWindowExceededError,
    GuardOverloadedError,
    InvalidRequestError,
    ModelOverloadedError,
    ModelTimeoutError,
    UsageError,
    WorkerError,
)
from autoglm_runtime.validation import (
    ContextWindowGuard,
    HTTPError,
    OpenAIExtractor,
    ValidationMiddleware,
    error_body,
    http_error,
)


def test_an_overloaded_model_is_503_with_retry_after_in_whole_seconds_rounded_up() -> None:
    exc = ModelOverloadedError("model 'gen' is overloaded: retry later", retry_after=0.5)
    assert http_error(exc, "openai") == HTTPError(
        503,
        {"x-autoglm-error-code": "E0106", "retry-after": "1"},
        {
            "error": {
                "message": "E0106: model 'gen' is overloaded: retry later",
                "type": "server_error",
                "param": None,
                "code": "E0106",
            }
        },
    )
    # Never sooner than the model said: 1.2 s is 2 whole seconds, not 1. Never 0 either: a client that follows
    # "Retry-After: 0" retries at once, into the same overload (before, 0 and 0.0 were sent as "0").
    for seconds, header in ((1.2, "2"), (2.0, "2"), (0.0, "1"), (0, "1"), (0.3, "1"), (3, "3")):
        assert http_error(ModelOverloadedError("busy", retry_after=seconds)).headers["retry-after"] == header


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ModelTimeoutError("the model 'gen' did not answer within 10 s: its worker was restarted"), 504),
        (WorkerError("the worker of 'gen' died (exit code -9)"), 503),
    ],
)
def test_a_model_error_without_retry_after_has_its_class_status_and_code(exc: AutoGLMRuntimeError, status: int) -> None:
    answer = http_error(exc)
    assert (answer.status, answer.headers, answer.body) == (
        status,
        {"x-autoglm-error-code": exc.code},
        {"error": {"message": exc.message, "type": "server_error", "param": None, "code": exc.code}},
    )


def test_a_guard_rejection_in_openai_style_keeps_openais_code_and_ours_in_the_header() -> None:
    exc = ContextWindowExceededError("too long: shorten the input", param="messages")
    assert http_error(exc, "openai") == HTTPError(
        400,
        {"x-autoglm-error-code": "E0513"},
        {
            "error": {
                "message": "E0513: too long: shorten the input",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    assert http_error(exc).body == error_body(exc)


def test_status_and_code_can_be_overridden_and_a_4xx_is_the_requests_fault() -> None:
    exc = UsageError("there is no endpoint at GET /v2: the server answers /v1/models")
    assert http_error(exc, "openai", status=404, code="not_found") == HTTPError(
        404,
        {"x-autoglm-error-code": "E0001"},
        {
            "error": {
                "message": "E0001: there is no endpoint at GET /v2: the server answers /v1/models",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        },
    )
    assert http_error(exc, status=500).body["error"]["type"] == "server_error"


def test_the_middleware_answers_its_rejections_as_http_error_says() -> None:
    # One shape whoever raises: the guard's 400 and an app's own error answered with http_error agree.
    refused_by_app = InvalidRequestError("the app refuses: send another model", param="model")

    async def app_error(request: Request) -> JSONResponse:
        answer = http_error(refused_by_app, "openai")
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    guard = ContextWindowGuard(char_tok(), 10)
    app = ValidationMiddleware(
        Starlette(routes=[Route("/v1/completions", app_error, methods=["POST"])]),
        context_guard=guard,
        error_style="openai",
    )

    async def go(body: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/v1/completions", json=body)

    too_long = {"prompt": "x" * 20, "max_tokens": 1}
    with pytest.raises(ContextWindowExceededError) as info:
        guard.judge(OpenAIExtractor().extract(too_long).guard_input())
    for body, expected in (
        (too_long, http_error(info.value, "openai")),
        ({"prompt": "x", "max_tokens": 1}, http_error(refused_by_app, "openai")),
    ):
        response = asyncio.run(go(body))
        assert response.status_code == expected.status
        assert {name: response.headers[name] for name in expected.headers} == expected.headers
        assert response.json() == expected.body


def test_a_busy_guard_answers_with_its_retry_after() -> None:
    assert http_error(GuardOverloadedError("all 4 guard threads are busy: retry in 3 seconds", retry_after=3)) == (
        HTTPError(
            503,
            {"x-autoglm-error-code": "E0516", "retry-after": "3"},
            {
                "error": {
                    "message": "all 4 guard threads are busy: retry in 3 seconds",
                    "type": "server_error",
                    "param": None,
                    "code": "E0516",
                }
            },
        )
    )
    assert json.dumps(http_error(GuardOverloadedError("x")).body)  # JSON-ready as is
