"""Guard metrics and spans from real requests: the ASGI middleware over httpx, a real gRPC channel, the decorator."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests._support.telemetry import Delta, span_exporter
from tests.observability._grpc_server import unary_channel
from tests.validation._helpers import Gate, char_tok, extract, rewrite

from autoglm_runtime.errors import ContextWindowExceededError
from autoglm_runtime.logging import configure_json_logging
from autoglm_runtime.validation import ContextWindowGuard, ValidationMiddleware, guarded
from autoglm_runtime.validation.grpc import AsyncValidationInterceptor, ValidationInterceptor

CODES = ("E0512", "E0513", "E0516", "E5009", "E5010")
LONG_METADATA = (("authorization", "Bearer " + "t" * 600),)


def guard_series(surface: str) -> Delta:
    return Delta(
        *[("autoglm_guard_rejections_total", {"code": code, "surface": surface}) for code in CODES],
        ("autoglm_guard_truncations_total", {"surface": surface}),
        ("autoglm_guard_truncated_tokens_total", {"surface": surface}),
        ("autoglm_guard_check_duration_seconds_count", {"surface": surface}),
    )


def expected(surface: str, *, checks: int, truncations: int = 0, tokens: float = 0, **rejections: int) -> dict:
    moved = {f"autoglm_guard_rejections_total{{code={code},surface={surface}}}": 0.0 for code in CODES}
    moved.update(
        {f"autoglm_guard_rejections_total{{code={c},surface={surface}}}": float(n) for c, n in rejections.items()}
    )
    moved[f"autoglm_guard_truncations_total{{surface={surface}}}"] = float(truncations)
    moved[f"autoglm_guard_truncated_tokens_total{{surface={surface}}}"] = float(tokens)
    moved[f"autoglm_guard_check_duration_seconds_count{{surface={surface}}}"] = float(checks)
    return moved


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"received": await request.json()})


def http_app(*, truncate: bool = False, tokenizer: Any = None, **options: Any) -> ValidationMiddleware:
    guard = ContextWindowGuard(tokenizer or char_tok(), 50, truncate_on_overflow=truncate, message_tokens=0)
    app = Starlette(routes=[Route("/v1/completions", echo, methods=["POST"]), Route("/ping", echo, methods=["POST"])])
    return ValidationMiddleware(app, context_guard=guard, **options)


async def _post(app: Any, path: str = "/v1/completions", **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.post(path, **kwargs)


def post(app: Any, path: str = "/v1/completions", **kwargs: Any) -> httpx.Response:
    return asyncio.run(_post(app, path, **kwargs))


def test_http_requests_move_each_counter_by_exactly_their_outcome() -> None:
    app, truncating = http_app(), http_app(truncate=True)
    moved = guard_series("http")
    assert post(app, json={"prompt": "hello", "max_tokens": 5}).status_code == 200
    assert post(app, json={"prompt": "x" * 100, "max_tokens": 5}).headers["x-autoglm-error-code"] == "E0513"
    assert post(app, json={"prompt": "x" * 100}).headers["x-autoglm-error-code"] == "E0513"
    long_header = {"authorization": "Bearer " + "t" * 600}
    assert post(app, json={"prompt": "hi"}, headers=long_header).headers["x-autoglm-error-code"] == "E0512"
    # An unguarded path: the header check still rejects (and counts), a good request is not a check.
    assert post(app, "/ping", json={"prompt": "hi"}, headers=long_header).headers["x-autoglm-error-code"] == "E0512"
    assert post(app, "/ping", json={"prompt": "x" * 100}).status_code == 200
    bad = post(app, content=b'{"prompt": "\\ud800"}', headers={"content-type": "application/json"})
    assert bad.headers["x-autoglm-error-code"] == "E5009"
    cut = post(truncating, json={"prompt": "x" * 100, "max_tokens": 5})
    removed = int(cut.headers["x-autoglm-truncated-tokens"])
    assert removed > 0
    assert moved.moved() == expected("http", checks=7, truncations=1, tokens=removed, E0513=2, E0512=2, E5009=1)


def test_an_overloaded_guard_pool_counts_e0516_once_per_refusal() -> None:
    gate = Gate()
    guard = ContextWindowGuard(gate, 100_000)
    middleware = ValidationMiddleware(Starlette(routes=[Route("/v1/completions", echo, methods=["POST"])]),
                                      context_guard=guard, max_concurrent_checks=1)  # fmt: skip
    big = {"prompt": "b" * 20_000}
    moved = guard_series("http")

    async def scenario() -> list[int]:
        first = asyncio.create_task(_post(middleware, json=big))
        assert await asyncio.to_thread(gate.entered.wait, 30)
        refused = [(await _post(middleware, json=big)).status_code for _ in range(3)]
        gate.release.set()
        return [(await first).status_code, *refused]

    with middleware:
        assert asyncio.run(scenario()) == [200, 503, 503, 503]
    assert moved.moved() == expected("http", checks=4, E0516=3)


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    def complete(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    interceptor = ValidationInterceptor(
        context_guard=ContextWindowGuard(char_tok(), 20, truncate_on_overflow=True, message_tokens=0),
        extractor=extract,
        rewriter=rewrite,
    )
    with unary_channel(interceptor, complete, "test.Llm") as chan:
        yield chan


def call(channel: grpc.Channel, body: bytes, metadata: Any = ()) -> tuple[bytes, dict[str, str]]:
    response, info = channel.unary_unary("/test.Llm/Complete").with_call(body, metadata=metadata, timeout=10)
    return response, dict(info.trailing_metadata() or ())


def test_grpc_calls_move_each_counter_by_exactly_their_outcome(channel: grpc.Channel) -> None:
    moved = guard_series("grpc")
    assert json.loads(call(channel, b'{"prompt": "hello", "max_tokens": 2}')[0])["prompt"] == "hello"
    _, trailing = call(channel, b'{"prompt": "' + b"y" * 40 + b'", "max_tokens": 2}')
    removed = int(trailing["x-autoglm-truncated-tokens"])
    with pytest.raises(grpc.RpcError) as budget:
        call(channel, b'{"prompt": "hi", "max_tokens": 50}')  # the output budget alone exceeds the window
    with pytest.raises(grpc.RpcError) as header:
        call(channel, b"{}", metadata=[("authorization", "Bearer " + "t" * 600)])
    with pytest.raises(grpc.RpcError) as garbage:
        call(channel, b"not json")
    codes = [e.value.details().split(":")[0] for e in (budget, header, garbage)]  # type: ignore[union-attr]
    assert codes == ["E0513", "E0512", "E5009"]
    assert removed > 0
    assert moved.moved() == expected("grpc", checks=5, truncations=1, tokens=removed, E0513=1, E0512=1, E5009=1)


def test_the_decorator_counts_passes_truncations_and_rejections() -> None:
    @guarded(ContextWindowGuard(char_tok(), 20, truncate_on_overflow=True, message_tokens=0))
    def generate(prompt: str, max_tokens: int = 2) -> str:
        return prompt

    moved = guard_series("decorator")
    assert generate("hello") == "hello"
    assert len(generate("z" * 40)) == 18
    with pytest.raises(ContextWindowExceededError):
        generate("hi", max_tokens=50)
    assert moved.moved() == expected("decorator", checks=3, truncations=1, tokens=22, E0513=1)


def test_each_request_has_one_guard_span_and_its_log_lines_carry_the_span_ids() -> None:
    exporter = span_exporter()
    stream = io.StringIO()
    handler = configure_json_logging(logging.WARNING, stream=stream, logger="autoglm_runtime")
    try:
        response = post(http_app(), json={"prompt": "x" * 100, "max_tokens": 5})
        assert post(http_app(truncate=True), json={"prompt": "x" * 100, "max_tokens": 5}).status_code == 200
    finally:
        logging.getLogger("autoglm_runtime").removeHandler(handler)
    assert response.status_code == 400
    rejected, truncated = exporter.get_finished_spans()
    assert (rejected.name, truncated.name) == ("autoglm.guard.check", "autoglm.guard.check")
    assert dict(rejected.attributes or {}) == {"autoglm.guard.surface": "http", "error.type": "E0513"}
    assert rejected.status.status_code is StatusCode.ERROR
    assert rejected.status.description == "E0513: ContextWindowExceededError"
    assert rejected.events == ()  # the exception is the log line below, not a span event as well
    assert dict(truncated.attributes or {}) == {
        "autoglm.guard.surface": "http",
        "autoglm.guard.input_tokens": 45,
        "autoglm.guard.removed_tokens": 55,
        "autoglm.warning.code": "E0514",
    }
    assert truncated.status.status_code is StatusCode.UNSET
    rejection, truncation = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (rejection["error_code"], truncation["error_code"]) == ("E0513", "E0514")
    for line, span in ((rejection, rejected), (truncation, truncated)):
        context = span.get_span_context()
        assert (line["trace_id"], line["span_id"]) == (
            format(context.trace_id, "032x"),
            format(context.span_id, "016x"),
        )


def test_grpc_aio_calls_and_streams_count_each_message_and_rejection() -> None:
    interceptor = AsyncValidationInterceptor(
        context_guard=ContextWindowGuard(char_tok(), 20, truncate_on_overflow=True, message_tokens=0),
        extractor=extract,
        rewriter=rewrite,
    )

    async def complete(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def echo(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request

    async def scenario() -> list[Any]:
        server = grpc.aio.server(interceptors=[interceptor])
        handlers = {
            "Complete": grpc.unary_unary_rpc_method_handler(complete),
            "Echo": grpc.stream_stream_rpc_method_handler(echo),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Aio", handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
                unary = chan.unary_unary("/test.Aio/Complete")
                ok = await unary(b'{"prompt": "hi", "max_tokens": 2}', timeout=10)
                codes = []
                for body, metadata in ((b'{"prompt": "hi", "max_tokens": 99}', ()), (b"{}", LONG_METADATA)):
                    try:
                        await unary(body, metadata=metadata, timeout=10)
                    except grpc.aio.AioRpcError as error:
                        codes.append((error.details() or "").split(":")[0])
                stream = chan.stream_stream("/test.Aio/Echo")
                requests = [b'{"prompt": "' + b"w" * n + b'", "max_tokens": 2}' for n in (3, 30, 4)]
                echoed = [json.loads(r)["prompt"] async for r in stream(iter(requests), timeout=10)]
                return [json.loads(ok)["prompt"], codes, [len(p) for p in echoed]]
        finally:
            await server.stop(None)

    moved = guard_series("grpc")
    assert asyncio.run(scenario()) == ["hi", ["E0513", "E0512"], [3, 18, 4]]
    # Three stream messages, one unary pass, two rejections: six checks; the long message lost 12 tokens.
    assert moved.moved() == expected("grpc", checks=6, truncations=1, tokens=12, E0513=1, E0512=1)
