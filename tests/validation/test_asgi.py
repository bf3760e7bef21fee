"""ValidationMiddleware in a real Starlette app over httpx's ASGI transport, plus raw-ASGI checks and fuzzing."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from tests.validation._helpers import char_tok

from autoglm_runtime.errors import UsageError
from autoglm_runtime.validation import (
    ContextWindowGuard,
    HeaderTokenGuard,
    OpenAIExtractor,
    ValidationMiddleware,
)

CODES = {"E0512", "E0513", "E0515", "E5009", "E5010"}


async def echo(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"received": body, "content_length": request.headers.get("content-length")})


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


def build_app(
    *, truncate: bool = False, max_body_bytes: int = 4096, window: int = 50, extractor: OpenAIExtractor | None = None
) -> Starlette:
    guard = ContextWindowGuard(char_tok(), window, truncate_on_overflow=truncate)
    return Starlette(
        routes=[
            Route("/v1/completions", echo, methods=["POST"]),
            Route("/v1/chat/completions", echo, methods=["POST"]),
            Route("/other", echo, methods=["POST"]),
            WebSocketRoute("/ws", ws_echo),
        ],
        middleware=[
            Middleware(ValidationMiddleware, context_guard=guard, max_body_bytes=max_body_bytes, extractor=extractor)
        ],
    )


def post(
    app: Any, path: str, *, content: bytes | None = None, json_body: Any = None, headers: Any = None
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, content=content, json=json_body, headers=headers)

    return asyncio.run(go())


def error_of(response: httpx.Response) -> dict[str, Any]:
    payload: dict[str, Any] = response.json()["error"]
    assert response.headers["x-autoglm-error-code"] == payload["code"]
    assert payload["type"] == "invalid_request_error"
    return payload


def test_fitting_request_reaches_the_app_unchanged() -> None:
    response = post(build_app(), "/v1/completions", json_body={"prompt": "hello", "max_tokens": 10})
    assert response.status_code == 200
    assert response.json()["received"] == {"prompt": "hello", "max_tokens": 10}
    assert "x-autoglm-truncated-tokens" not in response.headers


def test_context_overflow_is_400_with_openai_error_body() -> None:
    response = post(
        build_app(),
        "/v1/chat/completions",
        json_body={"messages": [{"role": "user", "content": "x" * 45}], "max_tokens": 10},
    )
    assert response.status_code == 400
    assert error_of(response) == {
        # 45 characters, plus 4 tokens for the message and 4 for the reply's start (no chat template given).
        "message": "This model's maximum context length is 50 tokens. However, you requested 63 tokens (53 in the "
        "input, 10 in the completion asked for by max_tokens), more than the context window of 50 tokens: shorten "
        "the input or lower max_tokens",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "E0513",
    }


def test_a_message_without_a_valid_role_is_400_e5010_naming_it() -> None:
    openai = OpenAIExtractor(roles=OpenAIExtractor.OPENAI_ROLES)
    for message, param, opening, extractor in (
        ({"content": "hi"}, "messages[1].role", "messages[1].role is missing", None),
        ({"role": 5, "content": "hi"}, "messages[1].role", "messages[1].role is an integer, not a string", None),
        ({"role": "robot", "content": "hi"}, "messages[1].role", "messages[1].role is 'robot', not a role", openai),
    ):
        body = {"messages": [{"role": "user", "content": "hi"}, message], "max_tokens": 1}
        response = post(build_app(extractor=extractor), "/v1/chat/completions", json_body=body)
        assert response.status_code == 400
        error = error_of(response)
        assert (error["code"], error["param"]) == ("E5010", param)
        assert error["message"].startswith(opening), error["message"]


def test_a_custom_role_passes_by_default_as_vllm_takes_it() -> None:
    # GLM's tool results come as "observation" messages; before, the default refused every role but OpenAI's six.
    body = {"messages": [{"role": "user", "content": "hi"}, {"role": "observation", "content": "42"}], "max_tokens": 1}
    response = post(build_app(), "/v1/chat/completions", json_body=body)
    assert response.status_code == 200, response.text
    assert response.json()["received"] == body


def test_truncated_request_passes_the_truncated_body_and_says_so() -> None:
    response = post(build_app(truncate=True), "/v1/completions", json_body={"prompt": "ab" * 30, "max_tokens": 10})
    assert response.status_code == 200
    received = response.json()
    assert received["received"] == {"prompt": "ab" * 20, "max_tokens": 10}
    assert received["content_length"] == str(len(json.dumps({"prompt": "ab" * 20, "max_tokens": 10})))
    assert response.headers["x-autoglm-truncated-tokens"] == "20"
    assert response.headers["x-autoglm-warning-code"] == "E0514"


def test_overlong_authorization_is_431_naming_the_header() -> None:
    response = post(build_app(), "/other", json_body={}, headers={"Authorization": "Bearer " + "t" * 600})
    assert response.status_code == 431
    assert error_of(response) == {
        # For the client, who cannot raise the limit (before: "or raise the limit if such values are legitimate").
        "message": "the authorization header is 607 bytes long, more than the 512 bytes this server takes: send at "
        "most 512 bytes",
        "type": "invalid_request_error",
        "param": "authorization",
        "code": "E0512",
    }


def test_lone_surrogate_escape_is_400_e5009() -> None:
    response = post(build_app(), "/v1/completions", content=b'{"prompt": "\\ud800"}')
    assert response.status_code == 400
    assert error_of(response)["message"] == (
        "the input contains a lone surrogate U+D800 at character 0 of prompt, which no tokenizer can encode: "
        "send well-formed Unicode text"
    )


def test_a_body_in_utf16_or_with_a_bom_is_read_as_starlette_reads_it() -> None:
    # Starlette's (and FastAPI's, vLLM's) request.json() is json.loads of the bytes, which reads these encodings.
    body = json.dumps({"prompt": "h\u00e9llo \U0001f642", "max_tokens": 3}, ensure_ascii=False)
    for encoding in ("utf-8-sig", "utf-16", "utf-16-be", "utf-32-le"):
        response = post(build_app(), "/v1/completions", content=body.encode(encoding))
        assert response.status_code == 200, encoding
        assert response.json()["received"] == json.loads(body)
    response = post(build_app(), "/v1/completions", content=body.encode("utf-16-le")[:-1])
    assert error_of(response)["message"] == (
        "the input is not valid UTF-16-LE: the bytes at offset 76 cannot be decoded (truncated data): send UTF-8 "
        "encoded text"
    )


def test_a_compressed_body_is_refused_for_what_it_is() -> None:
    response = post(
        build_app(),
        "/v1/completions",
        content=gzip.compress(b'{"prompt": "hi"}'),
        headers={"content-encoding": "gzip"},
    )
    assert response.status_code == 400
    assert (error_of(response)["code"], error_of(response)["message"]) == (
        "E5009",
        "the request body is sent with content-encoding 'gzip', which the guard cannot read: send it uncompressed",
    )
    identity = post(
        build_app(), "/v1/completions", content=b'{"prompt": "hi"}', headers={"content-encoding": "identity"}
    )
    assert identity.status_code == 200


def test_declared_oversize_body_is_413() -> None:
    response = post(build_app(max_body_bytes=100), "/v1/completions", content=b"x" * 101)
    assert response.status_code == 413
    assert error_of(response) == {
        # Worded for the client, who cannot raise the limit ("or raise max_body_bytes" was the operator's remedy).
        "message": "the request body is 101 bytes long, more than the 100 bytes this server takes: send a body of at "
        "most 100 bytes (the limit is the server's max_body_bytes setting)",
        "type": "invalid_request_error",
        "param": None,
        "code": "E0515",
    }


def test_unguarded_paths_skip_body_checks() -> None:
    response = post(build_app(), "/other", json_body={"prompt": "x" * 100})
    assert response.status_code == 200


# --- raw ASGI: what happens before and while the body is read -------------------------------------------------


class Driver:
    """Runs one request through an ASGI app, feeding the body in chunks and recording what was read."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.reads >= len(self.chunks):
            await asyncio.Event().wait()  # a real client would now disconnect; the app must not get here
        self.reads += 1
        more = self.reads < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.reads - 1], "more_body": more}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, app: Any, headers: list[tuple[bytes, bytes]], path: str = "/v1/completions") -> int:
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
        await asyncio.wait_for(app(scope, self.receive, self.send), timeout=10)
        status: int = self.sent[0]["status"]
        return status

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app must not be called")


def test_headers_are_checked_before_the_body_is_read() -> None:
    driver = Driver([b"{}"])
    app = ValidationMiddleware(never_called)
    assert asyncio.run(driver.run(app, [(b"authorization", b"x" * 513)])) == 431
    assert driver.reads == 0


def test_a_content_length_of_thousands_of_digits_is_413_unread() -> None:
    driver = Driver([b"{}"])
    app = ValidationMiddleware(never_called, max_body_bytes=100)
    assert asyncio.run(driver.run(app, [(b"content-length", b"9" * 5000)])) == 413
    assert driver.reads == 0
    assert driver.body["error"]["message"] == (
        "the request body is 999999999999... (5000 digits) bytes long, more than the 100 bytes this server takes: "
        "send a body of at most 100 bytes (the limit is the server's max_body_bytes setting)"
    )


def test_an_output_budget_over_the_window_is_400_even_without_input() -> None:
    for body in ({"max_tokens": 100_000}, {"prompt": "", "max_tokens": 51}):
        response = post(build_app(), "/v1/completions", json_body=body)
        assert response.status_code == 400
        assert error_of(response)["param"] == "max_tokens"
        assert error_of(response)["message"] == (
            f"This model's maximum context length is 50 tokens. However, max_tokens asks for {body['max_tokens']} "
            "output tokens, more than the context window of 50 tokens on its own: lower max_tokens to at most 50 "
            "minus the input's tokens"
        )
    assert post(build_app(), "/v1/completions", json_body={"max_tokens": 50}).status_code == 200


def test_reading_stops_at_the_limit_without_content_length() -> None:
    driver = Driver([b"x" * 60] * 100)
    app = ValidationMiddleware(never_called, max_body_bytes=100)
    assert asyncio.run(driver.run(app, [])) == 413
    assert driver.reads == 2
    assert driver.body["error"]["message"] == (
        "the request body is larger than the 100 bytes this server takes (120 bytes received when reading "
        "stopped): send a body of at most 100 bytes (the limit is the server's max_body_bytes setting)"
    )


def sent_by_middleware(scope: dict[str, Any], received: dict[str, Any], **options: Any) -> list[Any]:
    """What ``ValidationMiddleware(never_called, **options)`` sends for ``scope`` when every receive() gives
    ``received``."""
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return received

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(ValidationMiddleware(never_called, **options)(scope, receive, send))
    return sent


def test_a_close_reason_too_long_for_websocket_is_cut_between_words() -> None:
    # A close reason holds at most 123 bytes. Before, the reason was cut at 120 characters wherever that fell: here
    # "send at most 51", a limit the server does not have.
    name = "x-" + "k" * 22
    scope = {"type": "websocket", "path": "/ws", "headers": [(name.encode("ascii"), b"x" * 600)]}
    sent = sent_by_middleware(scope, {"type": "websocket.connect"}, header_guard=HeaderTokenGuard(512, (name,)))
    reason = sent[0]["reason"]
    assert reason == (
        f"E0512: the {name} header is 600 bytes long, more than the 512 bytes this server takes: send at most..."
    )
    assert len(reason.encode("utf-8")) <= 123


def test_client_disconnect_while_reading_ends_quietly() -> None:
    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}
    assert sent_by_middleware(scope, {"type": "http.disconnect"}) == []


def test_websocket_with_overlong_header_is_closed_before_accept() -> None:
    scope = {"type": "websocket", "path": "/ws", "headers": [(b"authorization", b"x" * 600)]}
    assert sent_by_middleware(scope, {"type": "websocket.connect"}) == [
        {
            "type": "websocket.close",
            "code": 1008,
            "reason": "E0512: the authorization header is 600 bytes long, more than the 512 bytes this server takes: "
            "send at most 512 bytes",
        }
    ]


def test_large_bodies_are_judged_off_the_event_loop() -> None:
    prompt = "z" * 20_000
    driver = Driver([json.dumps({"prompt": prompt}).encode()])
    app = ValidationMiddleware(build_app(window=100_000), context_guard=ContextWindowGuard(char_tok(), 10))
    assert asyncio.run(driver.run(app, [])) == 400
    assert driver.body["error"]["code"] == "E0513"


def test_bad_body_limit() -> None:
    with pytest.raises(UsageError) as info:
        ValidationMiddleware(never_called, max_body_bytes=0)
    assert info.value.message == "max_body_bytes must be at least 1, got 0"


# --- fuzzing: always a coded 4xx or a pass, never a 500 or a hang --------------------------------------------

JSON_TEXT = st.one_of(
    st.text(max_size=80),
    st.just("\ud800"),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
    st.just("x" * 5000),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | JSON_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(JSON_TEXT, children, max_size=4),
    max_leaves=12,
)
ROLES = ["system", "user", "assistant", "tool", "observation"]
REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "prompt": JSON_VALUES,
        "messages": st.lists(
            st.fixed_dictionaries({"content": JSON_VALUES}, optional={"role": st.sampled_from(ROLES) | JSON_VALUES})
            | JSON_VALUES,
            max_size=3,
        ),
        "max_tokens": st.integers(-5, 100) | JSON_VALUES,
    },
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode("ascii")  # ascii escapes lone surrogates as \\udXXX, like a hostile client


BODIES = st.one_of(
    st.binary(max_size=200),
    REQUESTS.map(_json_bytes),
    REQUESTS.map(_json_bytes).map(lambda b: b[: len(b) // 2]),
    st.just(b"[" * 50_000),
    st.just(b'{"max_tokens": ' + b"7" * 4400 + b"}"),
    st.just(b'{"prompt": "' + b"y" * 6000 + b'"}'),
)
HEADERS = st.lists(
    st.tuples(
        st.sampled_from([b"authorization", b"content-type", b"x-other", b"content-length"]), st.binary(max_size=700)
    ),
    max_size=4,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, headers=HEADERS, chunk=st.integers(1, 4000), truncate=st.booleans())
def test_fuzzed_requests_get_a_coded_4xx_or_pass(
    body: bytes, headers: list[tuple[bytes, bytes]], chunk: int, truncate: bool
) -> None:
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    driver = Driver(chunks)
    app = ValidationMiddleware(
        build_app(window=100_000),
        context_guard=ContextWindowGuard(char_tok(), 3000, truncate_on_overflow=truncate),
        header_guard=HeaderTokenGuard(max_length=512),
        max_body_bytes=5000,
        offload=False,
    )
    status = asyncio.run(driver.run(app, headers))
    if status == 200:
        return
    assert status in (400, 413, 431)
    assert driver.body["error"]["code"] in CODES
