"""RequestIdMiddleware as a pure ASGI app: which client ids it keeps, the one header it sends, what it leaves alone.
(Over real HTTP with the openai client: integration/validation/test_request_ids.py.)"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from autoglm_runtime.errors import UsageError
from autoglm_runtime.logging import RequestIdMiddleware, current_request_id, current_trace_id


async def nothing(scope: Any, receive: Any, send: Any) -> None:
    pass


def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    return sent


def test_an_id_the_app_set_itself_is_replaced_by_the_bound_one() -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((current_trace_id(), current_request_id()))
        headers = [(b"X-Request-Id", b"inner"), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {"type": "http", "headers": [(b"x-request-id", b"req-7f3a")]}
    start = call(RequestIdMiddleware(app), scope)[0]
    assert start["headers"] == [(b"content-type", b"text/plain"), (b"x-request-id", b"req-7f3a")]
    assert seen == [("req-7f3a", "req-7f3a")]
    assert (current_trace_id(), current_request_id()) == (None, None)  # unbound once the request is done


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (b"req-7f3a", True),
        (b"~" * 128, True),
        (b"~" * 129, False),
        (b"", False),
        (b"req 7f3a", False),
        (b"req\r\nx-forged: 1", False),
        (b"req-\x7f", False),
        (b"req-\xe9", False),
        (None, False),
    ],
)
def test_only_short_visible_ascii_ids_are_kept(given: bytes | None, kept: bool) -> None:
    request_id = RequestIdMiddleware(nothing).request_id(given)
    if kept:
        assert given is not None
        assert request_id == given.decode()
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)


def test_max_length_moves_the_bound() -> None:
    middleware = RequestIdMiddleware(nothing, max_length=8)
    assert middleware.request_id(b"12345678") == "12345678"
    assert middleware.request_id(b"123456789") != "123456789"


def test_lifespan_passes_through_untouched() -> None:
    scopes: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append((scope, current_trace_id()))

    scope = {"type": "lifespan"}
    call(RequestIdMiddleware(app), scope)
    assert scopes == [(scope, None)]


@pytest.mark.parametrize("max_length", [0, -1, True, "128", 12.5, None])
def test_a_max_length_it_cannot_use_is_refused_when_built(max_length: Any) -> None:
    # Before, 0 silently replaced every client's id, and "128" or None raised TypeError in every request that sent
    # an X-Request-Id (a 500), long after start-up.
    with pytest.raises(UsageError, match=r"max_length must be a whole number of at least 1, got "):
        RequestIdMiddleware(nothing, max_length=max_length)


def test_an_exception_is_logged_once_with_the_outermost_binding_and_re_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("gone")

    nested = RequestIdMiddleware(RequestIdMiddleware(app))
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [(b"x-request-id", b"r-1")]}
    with caplog.at_level("ERROR", logger="autoglm_runtime.logging"), pytest.raises(KeyError):
        call(nested, scope)
    assert [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        (
            "ERROR",
            "unhandled exception in the app for POST /v1/chat/completions; the server answers 500 (if nothing was "
            "sent yet) and logs the exception again, without the request id",
            True,
        )
    ]
