"""Spans follow their trace's sampling decision: the SDK's sampler is asked only where the trace starts.

Each test runs the guards and the model-call instrumentation on an SDK provider of its own, whose sampler counts
the decisions it is asked for; spans go to an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.validation._helpers import char_tok

from autoglm_runtime.errors import ContextWindowExceededError, WorkerError
from autoglm_runtime.logging import configure_json_logging
from autoglm_runtime.observability import ModelCall, ModelStreamCall, _tracing
from autoglm_runtime.validation import ContextWindowGuard, ValidationMiddleware, guarded

TRACE_ID, SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331


class Counting(Sampler):
    """``inner``, counting the decisions asked of it."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.asked = 0

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.asked += 1
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"Counting{{{self.inner.get_description()}}}"


class CountingParentBased(ParentBased):
    """The SDK's default sampler shape, ``ParentBased(root)``, counting the decisions asked of it. (Wrapped in
    :class:`Counting`, it would be a sampler of unknown behaviour, which the SDK always asks.)"""

    def __init__(self, root: Sampler) -> None:
        super().__init__(root)
        self.asked = 0

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.asked += 1
        return super().should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)


Tracing = Callable[[Sampler], tuple[InMemorySpanExporter, Counting | CountingParentBased]]


@pytest.fixture
def tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracing]:
    providers: list[TracerProvider] = []

    def use(sampler: Sampler) -> tuple[InMemorySpanExporter, Counting | CountingParentBased]:
        counting = sampler if isinstance(sampler, CountingParentBased) else Counting(sampler)
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=counting)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
        return exporter, counting

    yield use
    for provider in providers:
        provider.shutdown()


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_json_logging(logging.WARNING, stream=stream, logger="autoglm_runtime")
    yield stream
    logging.getLogger("autoglm_runtime").removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(text) for text in stream.getvalue().splitlines()]


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"received": await request.json()})


def requests(*, truncate: bool) -> list[int]:
    """A passed and a refused (or truncated) request through the ASGI guard: their status codes."""
    guard = ContextWindowGuard(char_tok(), 50, truncate_on_overflow=truncate, message_tokens=0)
    app = ValidationMiddleware(Starlette(routes=[Route("/v1/completions", echo, methods=["POST"])]),
                               context_guard=guard)  # fmt: skip

    async def send() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            bodies = ({"prompt": "hello", "max_tokens": 5}, {"prompt": "x" * 100, "max_tokens": 5})
            return [(await client.post("/v1/completions", json=body)).status_code for body in bodies]

    return asyncio.run(send())


@guarded(ContextWindowGuard(char_tok(), 20, message_tokens=0))
def generate(prompt: str, max_tokens: int = 2) -> str:
    return prompt


def failed_call(sent: list[str | None]) -> None:
    with ModelCall("m", "predict"):
        sent.append(_tracing.traceparent())
        raise WorkerError("the worker of model m died")


def model_calls() -> list[str | None]:
    """A call, a failed call and a stream's opening: the traceparent each would send to its worker."""
    sent: list[str | None] = []
    with ModelCall("m", "predict"):
        sent.append(_tracing.traceparent())
        logging.getLogger("autoglm_runtime.tests").warning("inside the call")
    with pytest.raises(WorkerError):
        failed_call(sent)
    stream = ModelStreamCall("m", "words")
    with stream.opening():
        sent.append(_tracing.traceparent())
    stream.end()
    return sent


def everything() -> list[str | None]:
    assert requests(truncate=False) == [200, 400]
    assert requests(truncate=True) == [200, 200]
    assert generate("hi") == "hi"
    with pytest.raises(ContextWindowExceededError):
        generate("hi", max_tokens=50)
    return model_calls()


def unsampled_parent() -> trace.Span:
    context = trace.SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    return trace.NonRecordingSpan(context)


def test_under_an_unsampled_parent_no_span_is_started_and_the_parent_stays_current(
    tracing: Tracing, log: io.StringIO
) -> None:
    exporter, sampler = tracing(CountingParentBased(ALWAYS_ON))
    with trace.use_span(unsampled_parent()):
        sent = everything()
    assert sampler.asked == 0  # the SDK was not even asked: the trace's decision was made upstream
    assert exporter.get_finished_spans() == ()
    parent = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-00"
    assert sent == [parent, parent, parent]
    ids = [(line.get("error_code"), line["trace_id"], line["span_id"]) for line in lines(log)]
    assert ids == [(code, f"{TRACE_ID:032x}", f"{SPAN_ID:016x}") for code in ("E0513", "E0514", None)]


def test_a_root_the_sampler_drops_records_nothing_and_its_model_calls_still_pass_the_decision_on(
    tracing: Tracing, log: io.StringIO
) -> None:
    exporter, sampler = tracing(ParentBased(ALWAYS_OFF))
    sent = everything()
    assert sampler.asked == 4 + 2 + 3  # each guard check and each model call is a root: its own decision
    assert exporter.get_finished_spans() == ()
    assert all(parent is not None and not int(parent[-2:], 16) & TraceFlags.SAMPLED for parent in sent)
    assert len({parent.split("-")[1] for parent in sent if parent is not None}) == 3  # three traces
    # The guard's sampled-out span is not made current (its lines carry no ids: nothing would show them); the
    # model call's is, for the worker's sake: its lines carry the ids it sends.
    found = [(line.get("error_code"), line.get("trace_id"), line.get("span_id")) for line in lines(log)]
    call = sent[0]
    assert call is not None
    assert found == [("E0513", None, None), ("E0514", None, None), (None, call.split("-")[1], call.split("-")[2])]


def test_a_sampled_trace_records_every_span_with_its_attributes_and_status(tracing: Tracing, log: io.StringIO) -> None:
    exporter, sampler = tracing(ParentBased(TraceIdRatioBased(1.0)))
    sent = everything()
    spans = exporter.get_finished_spans()
    assert sampler.asked == 9
    assert [span.name for span in spans] == [
        *["autoglm.guard.check"] * 6,
        "autoglm.model.call",
        "autoglm.model.call",
        "autoglm.model.stream",
    ]
    guards = [dict(span.attributes or {}) for span in spans[:6]]
    assert guards[1] == {"autoglm.guard.surface": "http", "error.type": "E0513"}
    assert guards[3] == {
        "autoglm.guard.surface": "http",
        "autoglm.guard.input_tokens": 45,
        "autoglm.guard.removed_tokens": 55,
        "autoglm.warning.code": "E0514",
    }
    assert guards[5] == {"autoglm.guard.surface": "decorator", "error.type": "E0513"}
    failed = spans[7]
    assert dict(failed.attributes or {}) == {
        "autoglm.model.name": "m",
        "autoglm.model.method": "predict",
        "error.type": "E0103",
    }
    assert failed.status.description == "E0103: WorkerError"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events == ()
    assert [span.status.status_code for span in spans] == [
        StatusCode.UNSET, StatusCode.ERROR, StatusCode.UNSET, StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR,
        StatusCode.UNSET, StatusCode.ERROR, StatusCode.UNSET,
    ]  # fmt: skip
    calls = spans[6:]
    assert sent == [
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{s.context.trace_flags:02x}" for s in calls if s.context
    ]
    assert all(s.context and s.context.trace_flags.sampled for s in calls)
    logged = [(line["trace_id"], line["span_id"]) for line in lines(log)]
    assert logged == [(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}")
                      for s in (spans[1], spans[3], spans[6]) if s.context]  # fmt: skip


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_ON, ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON), TraceIdRatioBased(1.0)],
    ids=["always-on", "parent-based-keeping-unsampled-remote-parents", "ratio-without-parent"],
)
def test_a_sampler_that_keeps_spans_under_an_unsampled_parent_gets_every_span(
    tracing: Tracing, log: io.StringIO, sampler: Sampler
) -> None:
    # The application's sampler decides, not the parent's flag: these record children of an unsampled parent.
    exporter, _counting = tracing(sampler)
    with trace.use_span(unsampled_parent()):
        sent = everything()
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == [
        *["autoglm.guard.check"] * 6,
        "autoglm.model.call",
        "autoglm.model.call",
        "autoglm.model.stream",
    ]
    assert all(span.context and span.context.trace_id == TRACE_ID for span in spans)
    assert all(span.parent and span.parent.span_id == SPAN_ID for span in spans)
    assert dict(spans[7].attributes or {})["error.type"] == "E0103"
    assert sent == [
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{s.context.trace_flags:02x}"
        for s in spans[6:]
        if s.context
    ]
