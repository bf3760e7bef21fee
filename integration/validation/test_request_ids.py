"""``RequestIdMiddleware`` outside the guards on a real FastAPI app under uvicorn, driven over real HTTP by the
official openai client (which reads the response's ``x-request-id`` as ``_request_id`` / ``request_id``): the
guard's rejection line carries the request's id, and a bad incoming id is neither logged nor echoed."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from integration._helpers import served
from tests._support.telemetry import span_exporter
from tests.validation._helpers import write_chat_model

from autoglm_runtime.logging import JsonFormatter, RequestIdMiddleware, current_request_id
from autoglm_runtime.testing import wait_until
from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer, ValidationMiddleware

WINDOW = 32
OVERLONG = "the quick brown fox " * 20
NEW_ID = re.compile(r"[0-9a-f]{32}")


def build_app(model_dir: Path) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "text": current_request_id() or "", "finish_reason": "stop", "logprobs": None}],
        }

    guard = ContextWindowGuard(HFTokenizer.from_file(model_dir / "tokenizer.json"), WINDOW)
    app.add_middleware(ValidationMiddleware, context_guard=guard, error_style="openai")
    app.add_middleware(RequestIdMiddleware)  # added last: the outermost, so the guard's lines carry the id
    return app


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("autoglm_runtime.validation")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    model_dir = write_chat_model(tmp_path / "model", "{{ messages[0]['content'] }}")
    with served(build_app(model_dir)) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="test", max_retries=0, timeout=30) as client:
        yield client


def rejections(lines: io.StringIO) -> list[dict[str, Any]]:
    return [entry for entry in map(json.loads, lines.getvalue().splitlines()) if entry["error_code"] == "E0513"]


def test_the_rejection_line_and_the_error_carry_the_id_the_client_sent(
    client: openai.OpenAI, log_lines: io.StringIO
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="m", prompt=OVERLONG, extra_headers={"X-Request-Id": "req-7f3a"})
    assert info.value.request_id == "req-7f3a"
    assert [entry["request_id"] for entry in rejections(log_lines)] == ["req-7f3a"]


def test_a_request_without_an_id_gets_a_new_one_the_app_sees_too(client: openai.OpenAI) -> None:
    first = client.completions.create(model="m", prompt="hello", max_tokens=4)
    second = client.completions.create(model="m", prompt="hello", max_tokens=4)
    assert NEW_ID.fullmatch(first._request_id or "")
    assert first.choices[0].text == first._request_id  # the id bound while the app ran is the one sent back
    assert second._request_id != first._request_id


@pytest.mark.parametrize(
    "given", ["r" * 129, "", "req 7f3a", "req-\tforged"], ids=["too long", "empty", "a space", "a tab"]
)
def test_a_bad_id_from_the_client_is_replaced_never_logged_or_echoed(
    given: str, client: openai.OpenAI, log_lines: io.StringIO
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="m", prompt=OVERLONG, extra_headers={"X-Request-Id": given})
    request_id = info.value.request_id
    assert request_id is not None
    assert NEW_ID.fullmatch(request_id)
    assert [entry["request_id"] for entry in rejections(log_lines)] == [request_id]


@pytest.mark.parametrize(
    "given", [b"req-\x01\x1b[31m", b"req-\xc3\xa9t\xc3\xa9", b"r" * 4000], ids=["control", "non-ascii", "huge"]
)
def test_raw_bytes_no_client_library_would_send_are_replaced(given: bytes, server: str, log_lines: io.StringIO) -> None:
    host, port = server.removeprefix("http://").split(":")
    body = json.dumps({"model": "m", "prompt": OVERLONG}).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"X-Request-Id: " + given + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head = received.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0].startswith(b"HTTP/1.1 400 ")
    echoed = [line.partition(b": ")[2] for line in head if line.lower().startswith(b"x-request-id:")]
    assert len(echoed) == 1
    assert NEW_ID.fullmatch(echoed[0].decode())
    assert [entry["request_id"] for entry in rejections(log_lines)] == [echoed[0].decode()]
    assert given.decode("latin-1") not in log_lines.getvalue()


def test_an_unhandled_exception_is_logged_once_with_the_id_the_client_sent() -> None:
    """uvicorn logs an exception the app raises ("Exception in ASGI application") after the middleware's binding
    ended, so no traceback line carried the request's id: the one line an operator needs to tie to the client's
    ``x-request-id``. The middleware now logs it once with the id, then re-raises."""
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the model fell over")

    app.add_middleware(RequestIdMiddleware)
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    # The SDK's line reaches the root logger; uvicorn's stays on its own (uvicorn's default config stops it there,
    # and replaces that logger's handlers as the server starts).
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
    with served(app) as url:
        for logger in loggers:
            logger.addHandler(handler)
        try:
            answer = httpx.get(f"{url}/boom", headers={"X-Request-Id": "req-boom-1"}, timeout=30)
            assert answer.status_code == 500
            wait_until(lambda: "Exception in ASGI application" in lines.getvalue(), timeout=30, what="uvicorn's line")
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
    tracebacks = [entry for entry in map(json.loads, lines.getvalue().splitlines()) if "exception" in entry]
    assert [(entry["module"], entry.get("request_id")) for entry in tracebacks] == [
        ("autoglm_runtime.logging", "req-boom-1"),
        ("uvicorn.error", None),
    ]
    ours = tracebacks[0]
    assert (ours["level"], ours["message"]) == (
        "ERROR",
        "unhandled exception in the app for GET /boom; the server answers 500 (if nothing was sent yet) and logs "
        "the exception again, without the request id",
    )
    assert ours["exception"].endswith("RuntimeError: the model fell over")


def test_with_a_span_active_the_line_keeps_the_client_id_as_request_id(
    client: openai.OpenAI, log_lines: io.StringIO
) -> None:
    """With a tracer provider set (tracing on), the guard's span is active while it logs: its trace id took the
    line's ``trace_id``, and the id the client sent was on no line at all (this failed in a full run, where an
    earlier test had set the process's provider). ``request_id`` keeps it, beside the span's ids."""
    exporter = span_exporter()
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="m", prompt=OVERLONG, extra_headers={"X-Request-Id": "req-traced"})
    assert info.value.request_id == "req-traced"
    [line] = rejections(log_lines)
    [guard] = [span for span in exporter.get_finished_spans() if span.name == "autoglm.guard.check"]
    assert guard.context is not None
    assert (line["request_id"], line["trace_id"]) == ("req-traced", format(guard.context.trace_id, "032x"))
