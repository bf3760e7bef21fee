"""GuardStream: a guard span handed over to a stream of responses is current while each response is produced and
never in between, and ends exactly once, however the stream ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanContext, StatusCode
from tests._support.telemetry import Delta, span_exporter

from autoglm_runtime.errors import WorkerError
from autoglm_runtime.observability import GuardCheck, GuardStream, _tracing


def handed_over() -> GuardStream:
    """A passed check's span, handed over to the stream of its responses."""
    with GuardCheck("grpc") as check:
        check.passed(None)
        check.forward()
        stream = check.hand_over()
    assert stream is not None
    return stream


def current_span_id() -> int | None:
    context = trace.get_current_span().get_span_context()
    return context.span_id if context.is_valid else None


def test_the_span_is_current_while_a_response_is_produced_and_never_in_between() -> None:
    exporter = span_exporter()
    stream = handed_over()
    assert current_span_id() is None  # handing over detached it
    seen: list[int | None] = []

    def produce() -> Iterator[int]:
        for number in range(3):
            seen.append(current_span_id())
            yield number

    responses = stream.responses(produce())
    assert next(responses) == 0
    assert current_span_id() is None  # (a generator holding the span current across its yields would leak it)
    assert next(responses) == 1
    del responses  # abandoned half-way, as a server stops iterating a cancelled call's stream
    assert current_span_id() is None
    assert exporter.get_finished_spans() == ()  # open until the server's callback ends it
    stream.end()
    (span,) = exporter.get_finished_spans()
    assert seen == [span.context.span_id, span.context.span_id]


def test_what_a_step_made_current_is_current_in_the_next_and_never_in_between() -> None:
    exporter = span_exporter()
    stream = handed_over()
    seen: list[int | None] = []

    def produce() -> Iterator[int]:
        with trace.get_tracer("test").start_as_current_span("handler") as own:  # held across its yields
            for number in range(2):
                seen.append(current_span_id())
                yield number
        assert own.get_span_context().span_id == seen[0]
        seen.append(current_span_id())  # after its block: the guard span again

    responses = stream.responses(produce())
    between = []
    for _response in responses:
        between.append(current_span_id())
    assert between == [None, None]
    handler, guard_span = exporter.get_finished_spans()
    assert seen == [handler.context.span_id, handler.context.span_id, guard_span.context.span_id]


def test_the_span_ends_once_however_often_its_end_is_heard(caplog: pytest.LogCaptureFixture) -> None:
    exporter = span_exporter()
    stream = handed_over()
    responses = stream.responses(iter([1]))
    assert list(responses) == [1]  # the end of the responses ends the span
    with caplog.at_level(logging.WARNING):
        stream.end()  # then the server's callback at the call's end
        stream.end(WorkerError("late"))
    assert len(exporter.get_finished_spans()) == 1
    assert caplog.records == []  # (the SDK warns when an ended span is ended again)


def test_a_failure_of_the_responses_ends_the_span_as_after_the_verdict() -> None:
    exporter = span_exporter()
    rejections = Delta(("autoglm_guard_rejections_total", {"code": "E0103", "surface": "grpc"}))
    stream = handed_over()

    def produce() -> Iterator[int]:
        yield 1
        raise WorkerError("the model's worker died")

    responses = stream.responses(produce())
    assert next(responses) == 1
    with pytest.raises(WorkerError):
        next(responses)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert rejections.moved() == {"autoglm_guard_rejections_total{code=E0103,surface=grpc}": 0.0}


def test_async_responses_closed_half_way_end_the_span_and_keep_it_current_only_inside_their_steps() -> None:
    exporter = span_exporter()
    seen: list[int | None] = []

    async def produce() -> AsyncIterator[int]:
        for number in range(3):
            await asyncio.sleep(0)
            seen.append(current_span_id())
            yield number

    async def scenario() -> list[int | None]:
        stream = handed_over()
        responses = stream.aresponses(produce())
        between = []
        async for _response in responses:
            between.append(current_span_id())
            break
        assert exporter.get_finished_spans() == ()
        await responses.aclose()  # type: ignore[attr-defined]
        return between

    assert asyncio.run(scenario()) == [None]
    (span,) = exporter.get_finished_spans()
    assert seen == [span.context.span_id]


def test_work_that_writes_its_responses_runs_with_the_span_current() -> None:
    exporter = span_exporter()
    seen: list[int | None] = []

    async def write() -> str:
        await asyncio.sleep(0)
        seen.append(current_span_id())
        return "written"

    assert asyncio.run(handed_over().run(write())) == "written"
    (span,) = exporter.get_finished_spans()
    assert seen == [span.context.span_id]


def test_a_sampled_out_span_is_current_too_so_the_responses_model_calls_follow_the_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
    stream = handed_over()
    seen: list[tuple[SpanContext, str | None]] = []

    def produce() -> Iterator[None]:
        seen.append((trace.get_current_span().get_span_context(), _tracing.traceparent()))  # a model call's view
        yield None

    next(stream.responses(produce()))
    stream.end()
    ((current, parent),) = seen
    assert current.is_valid
    assert not current.trace_flags.sampled
    assert parent == f"00-{current.trace_id:032x}-{current.span_id:016x}-{current.trace_flags:02x}"
    assert exporter.get_finished_spans() == ()
    provider.shutdown()
