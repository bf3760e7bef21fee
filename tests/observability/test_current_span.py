"""The span this module made current last is remembered with its context; any other current context is read."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from autoglm_runtime.observability import _tracing


def _header(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def test_a_context_made_current_by_others_is_read_not_taken_for_the_remembered_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
    guard = _tracing.start_span("guard")
    assert guard is not None
    ours = guard[0].get_span_context()
    assert _tracing.traceparent() == _header(ours)
    # The application makes a span of its own current (not through this module): its ids, not the remembered ones.
    theirs = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(theirs)):
        assert _tracing.traceparent() == _header(theirs)
        call = _tracing.start_span("call")
        assert call is not None
        assert call[0].parent == theirs  # type: ignore[attr-defined]
        _tracing.end_span(call)
        assert _tracing.traceparent() == _header(theirs)
    assert _tracing.traceparent() == _header(ours)  # the remembered context is current again
    _tracing.end_span(guard)
    assert _tracing.traceparent() is None
    assert [span.name for span in exporter.get_finished_spans()] == ["call", "guard"]
    provider.shutdown()


def test_contexts_read_in_turn_each_give_their_own_span(monkeypatch: pytest.MonkeyPatch) -> None:
    # A read context and its header are remembered for the next read: a server's spans (sampled out, so no span
    # of ours starts under them) made current one after another, and again, must each give their own ids.
    provider = TracerProvider()
    monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
    first = SpanContext(0x1111, 0x2222, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    second = SpanContext(0x3333, 0x4444, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    for context in (first, second, first, first, second):
        with trace.use_span(NonRecordingSpan(context)):
            assert _tracing.start_span("guard") is None  # sampled out: the server's span stays current
            assert _tracing.traceparent() == _header(context)
            assert _tracing.current_ids() == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
            assert _tracing.traceparent() == _header(context)
        assert _tracing.traceparent() is None
    provider.shutdown()
