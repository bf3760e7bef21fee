"""The guard span of a decorated call and of a one-message gRPC call stays current while the guarded code runs, so
what that code traces (its model calls, their workers) is in the guard's trace, under the guard span; a failure of
the guarded code after the verdict is not the guard's. Calls with a stream of responses: test_guard_stream_scope."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.trace import StatusCode
from tests._support.telemetry import Delta, span_exporter
from tests.observability._grpc_server import unary_channel
from tests.observability._scope import assert_inner_under_guard, guard, inner_work
from tests.validation._helpers import extract, rewrite

from autoglm_runtime.errors import WorkerError
from autoglm_runtime.validation import guarded
from autoglm_runtime.validation.grpc import AsyncValidationInterceptor, ValidationInterceptor


def test_a_decorated_call_runs_inside_its_guard_span() -> None:
    exporter = span_exporter()

    @guarded(guard())
    def generate(prompt: str, max_tokens: int = 2) -> str:
        inner_work()
        return prompt

    assert generate("hello") == "hello"
    assert_inner_under_guard(exporter.get_finished_spans())


def test_an_async_decorated_call_runs_inside_its_guard_span() -> None:
    exporter = span_exporter()

    @guarded(guard())
    async def generate(prompt: str, max_tokens: int = 2) -> str:
        await asyncio.sleep(0)
        inner_work()
        return prompt

    assert asyncio.run(generate("hello")) == "hello"
    assert_inner_under_guard(exporter.get_finished_spans())


def test_a_failure_after_the_verdict_is_not_a_guard_rejection() -> None:
    exporter = span_exporter()

    @guarded(guard())
    def generate(prompt: str, max_tokens: int = 2) -> str:
        inner_work()
        raise WorkerError("the model's worker died")

    rejections = Delta(("autoglm_guard_rejections_total", {"code": "E0103", "surface": "decorator"}))
    with pytest.raises(WorkerError):
        generate("hello")
    assert_inner_under_guard(exporter.get_finished_spans())  # the guard span's status stays UNSET
    assert rejections.moved() == {"autoglm_guard_rejections_total{code=E0103,surface=decorator}": 0.0}


def test_a_rejected_decorated_call_never_runs() -> None:
    exporter = span_exporter()
    ran = []

    @guarded(guard())
    def generate(prompt: str, max_tokens: int = 2) -> str:
        ran.append(prompt)
        return prompt

    with pytest.raises(Exception, match="E0513"):
        generate("x" * 100)
    assert ran == []
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {}).get("error.type") == "E0513"


@pytest.fixture
def sync_channel() -> Iterator[grpc.Channel]:
    def complete(request: bytes, context: grpc.ServicerContext) -> bytes:
        inner_work()
        return request

    interceptor = ValidationInterceptor(context_guard=guard(), extractor=extract, rewriter=rewrite)
    with unary_channel(interceptor, complete, "test.Scope") as chan:
        yield chan


def test_a_unary_grpc_handler_runs_inside_its_guard_span(sync_channel: grpc.Channel) -> None:
    exporter = span_exporter()
    assert sync_channel.unary_unary("/test.Scope/Complete")(b'{"prompt": "hi", "max_tokens": 2}', timeout=10)
    assert_inner_under_guard(exporter.get_finished_spans())


def test_a_unary_grpc_aio_handler_runs_inside_its_guard_span() -> None:
    exporter = span_exporter()

    async def complete(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0)
        inner_work()
        return request

    async def scenario() -> Any:
        interceptor = AsyncValidationInterceptor(context_guard=guard(), extractor=extract, rewriter=rewrite)
        server = grpc.aio.server(interceptors=[interceptor])
        handlers = {"Complete": grpc.unary_unary_rpc_method_handler(complete)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Scope", handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
                return await chan.unary_unary("/test.Scope/Complete")(b'{"prompt": "hi", "max_tokens": 2}', timeout=10)
        finally:
            await server.stop(None)

    assert asyncio.run(scenario())
    assert_inner_under_guard(exporter.get_finished_spans())
