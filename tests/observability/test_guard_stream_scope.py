"""A gRPC call with one request message and a stream of responses keeps its guard span open, and current while
each response is produced, until the stream ends, fails or is cancelled: the handler's model calls are children of
the guard span in one trace, on the sync server and on ``grpc.aio``. (grpc runs each call in a contextvars context
of its own, so a context left attached could not reach another call here: test_guard_stream checks the steps.)"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tests._support.telemetry import Delta, span_exporter
from tests.observability._scope import GUARD, assert_inner_under_guard, guard, inner_work, spans_by_name
from tests.validation._helpers import extract

from autoglm_runtime.errors import WorkerError
from autoglm_runtime.validation.grpc import AsyncValidationInterceptor, ValidationInterceptor

SERVICE = "test.Stream"
REQUEST = b'{"prompt": "hi", "max_tokens": 2}'
REFUSED = b'{"prompt": "' + b"x" * 100 + b'", "max_tokens": 2}'  # 102 tokens of 50: E0513 (no rewriter)
WORDS = ("inner-0", "inner-1", "inner-2")


def rejections() -> Delta:
    return Delta(
        ("autoglm_guard_rejections_total", {"code": "E0103", "surface": "grpc"}),
        ("autoglm_guard_rejections_total", {"code": "E0513", "surface": "grpc"}),
    )


def no_rejection() -> dict[str, float]:
    return {
        "autoglm_guard_rejections_total{code=E0103,surface=grpc}": 0.0,
        "autoglm_guard_rejections_total{code=E0513,surface=grpc}": 0.0,
    }


def unsendable(response: bytes) -> bytes:
    """A response serializer failing on the second response: grpc's sending fails, outside the handler's code."""
    if response == WORDS[1].encode():
        raise ValueError("cannot serialize this response")
    return response


def guard_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == GUARD]


def wait_for_guard_span(exporter: InMemorySpanExporter) -> None:
    """Poll until the exporter holds an ended guard span (a cancelled call's span ends on the server's side)."""
    deadline = time.monotonic() + 30
    while not guard_spans(exporter):
        assert time.monotonic() < deadline, "the guard span never ended"
        time.sleep(0.01)


def assert_under_own_span(spans: tuple[ReadableSpan, ...]) -> None:
    """The handler's own span is under the guard span, and the work of every response under the handler's span."""
    assert_inner_under_guard(spans, "handler")
    named = spans_by_name(spans)
    for name in WORDS:
        parent = named[name].parent
        assert parent is not None, name
        assert parent.span_id == named["handler"].context.span_id, name


def assert_after_the_stream(spans: tuple[ReadableSpan, ...]) -> None:
    """The guard span ended after the last response's work did (an ordering of timestamps, not a duration)."""
    outer = assert_inner_under_guard(spans, *WORDS)
    assert outer.end_time is not None
    assert all(outer.end_time >= (span.end_time or 0) for span in spans)


@pytest.fixture(autouse=True)
def no_detach_failure(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No context is detached in another one than it was attached in (OpenTelemetry logs and swallows that)."""
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        yield
    assert [record.getMessage() for record in caplog.records if record.name == "opentelemetry.context"] == []


class SyncServer:
    """A real ``grpc.server`` with unary-stream handlers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[bytes] = []

        def words(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            self.ran.append(request)
            for name in WORDS:
                inner_work(name)
                yield name.encode()

        def own(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            with trace.get_tracer("test").start_as_current_span("handler"):  # held across the handler's yields
                yield from words(request, context)

        def fail(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            inner_work()
            yield b"first"
            raise WorkerError("the model's worker died")

        def hang(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            inner_work()
            yield b"first"
            self.release.wait(60)
            yield b"second"

        interceptor = ValidationInterceptor(context_guard=guard(), extractor=extract)
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
        streams = {"Words": words, "Own": own, "Fail": fail, "Hang": hang}
        handlers = {name: grpc.unary_stream_rpc_method_handler(fn) for name, fn in streams.items()}
        handlers["Unsendable"] = grpc.unary_stream_rpc_method_handler(words, response_serializer=unsendable)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")


@pytest.fixture
def sync_server() -> Iterator[tuple[SyncServer, grpc.Channel]]:
    server = SyncServer()
    server.server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, channel
    finally:
        server.release.set()
        server.server.stop(None).wait()


def test_a_sync_streamed_handler_runs_inside_its_guard_span(sync_server: tuple[SyncServer, grpc.Channel]) -> None:
    exporter = span_exporter()
    _, channel = sync_server
    assert list(channel.unary_stream(f"/{SERVICE}/Words")(REQUEST, timeout=10)) == [w.encode() for w in WORDS]
    assert_after_the_stream(exporter.get_finished_spans())
    assert len(guard_spans(exporter)) == 1


def test_a_sync_handler_s_own_span_stays_current_across_its_responses(
    sync_server: tuple[SyncServer, grpc.Channel],
) -> None:
    exporter = span_exporter()
    _, channel = sync_server
    assert list(channel.unary_stream(f"/{SERVICE}/Own")(REQUEST, timeout=10)) == [w.encode() for w in WORDS]
    assert_under_own_span(exporter.get_finished_spans())


def test_a_sync_stream_failing_half_way_ends_its_span_without_a_rejection(
    sync_server: tuple[SyncServer, grpc.Channel],
) -> None:
    exporter = span_exporter()
    _, channel = sync_server
    moved = rejections()
    call = channel.unary_stream(f"/{SERVICE}/Fail")(REQUEST, timeout=10)
    assert next(call) == b"first"
    with pytest.raises(grpc.RpcError) as failed:
        next(call)
    assert failed.value.code() is grpc.StatusCode.UNKNOWN
    assert_inner_under_guard(exporter.get_finished_spans())  # ended, status UNSET
    assert moved.moved() == no_rejection()


@pytest.mark.parametrize("end", ["cancel", "deadline"])
def test_a_sync_stream_stopped_by_its_client_ends_its_span(
    sync_server: tuple[SyncServer, grpc.Channel], end: str
) -> None:
    exporter = span_exporter()
    _, channel = sync_server
    moved = rejections()
    call = channel.unary_stream(f"/{SERVICE}/Hang")(REQUEST, timeout=10 if end == "cancel" else 1)
    assert next(call) == b"first"
    if end == "cancel":
        call.cancel()
    with pytest.raises(grpc.RpcError) as stopped:
        next(call)
    assert stopped.value.code() is (grpc.StatusCode.CANCELLED if end == "cancel" else grpc.StatusCode.DEADLINE_EXCEEDED)
    wait_for_guard_span(exporter)  # while the handler still waits: the call's end ended the span
    assert_inner_under_guard(exporter.get_finished_spans())
    assert moved.moved() == no_rejection()


def test_a_sync_stream_grpc_fails_to_send_ends_its_span(sync_server: tuple[SyncServer, grpc.Channel]) -> None:
    exporter = span_exporter()
    _, channel = sync_server
    call = channel.unary_stream(f"/{SERVICE}/Unsendable")(REQUEST, timeout=10)
    assert next(call) == WORDS[0].encode()
    with pytest.raises(grpc.RpcError) as failed:
        next(call)
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    wait_for_guard_span(exporter)  # grpc stopped iterating: the call's end ended the span
    assert_inner_under_guard(exporter.get_finished_spans(), *WORDS[:2])


def test_a_refused_sync_stream_never_runs_its_handler(sync_server: tuple[SyncServer, grpc.Channel]) -> None:
    exporter = span_exporter()
    server, channel = sync_server
    with pytest.raises(grpc.RpcError) as refused:
        list(channel.unary_stream(f"/{SERVICE}/Words")(REFUSED, timeout=10))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert server.ran == []
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {}).get("error.type") == "E0513"


async def words(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for name in WORDS:
        await asyncio.sleep(0)
        inner_work(name)
        yield name.encode()


async def write_words(request: bytes, context: grpc.aio.ServicerContext) -> None:
    for name in WORDS:
        inner_work(name)
        await context.write(name.encode())


async def own(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    with trace.get_tracer("test").start_as_current_span("handler"):  # held across the handler's yields
        async for response in words(request, context):
            yield response


async def write_own(request: bytes, context: grpc.aio.ServicerContext) -> None:
    with trace.get_tracer("test").start_as_current_span("handler"):
        await write_words(request, context)


async def fail(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    inner_work()
    yield b"first"
    raise WorkerError("the model's worker died")


async def hang(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    inner_work()
    yield b"first"
    await asyncio.Event().wait()  # until the call is cancelled
    yield b"second"


def run_aio(scenario: Callable[[grpc.aio.Channel], Awaitable[Any]]) -> Any:
    """Run ``scenario`` against a real ``grpc.aio`` server holding the handlers above."""

    async def main() -> Any:
        server = grpc.aio.server(interceptors=[AsyncValidationInterceptor(context_guard=guard(), extractor=extract)])
        streams = {"Words": words, "Write": write_words, "Own": own, "WriteOwn": write_own, "Fail": fail, "Hang": hang}
        handlers = {name: grpc.unary_stream_rpc_method_handler(fn) for name, fn in streams.items()}
        handlers["Unsendable"] = grpc.unary_stream_rpc_method_handler(words, response_serializer=unsendable)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await scenario(channel)
        finally:
            await server.stop(None)

    return asyncio.run(main())


def aio_responses(method: str) -> list[bytes]:
    """All the responses of one call of ``method`` on the ``grpc.aio`` server."""

    async def scenario(channel: grpc.aio.Channel) -> list[bytes]:
        return [response async for response in channel.unary_stream(f"/{SERVICE}/{method}")(REQUEST, timeout=10)]

    return run_aio(scenario)  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", ["Words", "Write"])
def test_an_aio_streamed_handler_runs_inside_its_guard_span(method: str) -> None:
    exporter = span_exporter()
    assert aio_responses(method) == [w.encode() for w in WORDS]
    assert_after_the_stream(exporter.get_finished_spans())
    assert len(guard_spans(exporter)) == 1


@pytest.mark.parametrize("method", ["Own", "WriteOwn"])
def test_an_aio_handler_s_own_span_stays_current_across_its_responses(method: str) -> None:
    exporter = span_exporter()
    assert aio_responses(method) == [w.encode() for w in WORDS]
    assert_under_own_span(exporter.get_finished_spans())


def test_an_aio_stream_failing_half_way_ends_its_span_without_a_rejection() -> None:
    exporter = span_exporter()
    moved = rejections()

    async def scenario(channel: grpc.aio.Channel) -> grpc.StatusCode:
        call = channel.unary_stream(f"/{SERVICE}/Fail")(REQUEST, timeout=10)
        assert await call.read() == b"first"
        with pytest.raises(grpc.RpcError) as failed:
            await call.read()
        return failed.value.code()  # type: ignore[no-any-return]

    assert run_aio(scenario) is grpc.StatusCode.UNKNOWN
    assert_inner_under_guard(exporter.get_finished_spans())
    assert moved.moved() == no_rejection()


@pytest.mark.parametrize("end", ["cancel", "deadline"])
def test_an_aio_stream_stopped_by_its_client_ends_its_span(end: str) -> None:
    exporter = span_exporter()
    moved = rejections()

    async def scenario(channel: grpc.aio.Channel) -> None:
        call = channel.unary_stream(f"/{SERVICE}/Hang")(REQUEST, timeout=10 if end == "cancel" else 1)
        assert await call.read() == b"first"
        if end == "cancel":
            call.cancel()
        else:
            with pytest.raises(grpc.RpcError) as stopped:
                await call.read()
            assert stopped.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 30
        while not guard_spans(exporter):  # the server ends it when it learns of the call's end
            assert time.monotonic() < deadline, "the guard span never ended"
            await asyncio.sleep(0.01)
        assert_inner_under_guard(exporter.get_finished_spans())

    run_aio(scenario)
    assert moved.moved() == no_rejection()


def test_an_aio_stream_grpc_fails_to_send_ends_its_span() -> None:
    exporter = span_exporter()

    async def scenario(channel: grpc.aio.Channel) -> grpc.StatusCode:
        call = channel.unary_stream(f"/{SERVICE}/Unsendable")(REQUEST, timeout=10)
        assert await call.read() == WORDS[0].encode()
        with pytest.raises(grpc.RpcError) as failed:
            await call.read()
        deadline = time.monotonic() + 30
        while not guard_spans(exporter):  # the handler's generator was left at its yield: the call's end ends it
            assert time.monotonic() < deadline, "the guard span never ended"
            await asyncio.sleep(0.01)
        return failed.value.code()  # type: ignore[no-any-return]

    assert run_aio(scenario) is grpc.StatusCode.UNKNOWN
    assert_inner_under_guard(exporter.get_finished_spans(), *WORDS[:2])


def test_a_refused_aio_stream_never_runs_its_handler() -> None:
    exporter = span_exporter()

    async def scenario(channel: grpc.aio.Channel) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as refused:
            await channel.unary_stream(f"/{SERVICE}/Words")(REFUSED, timeout=10).read()
        return refused.value.code()  # type: ignore[no-any-return]

    assert run_aio(scenario) is grpc.StatusCode.INVALID_ARGUMENT
    (span,) = exporter.get_finished_spans()  # no inner span: the handler never ran
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {}).get("error.type") == "E0513"
