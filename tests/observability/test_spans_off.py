"""Whether a model call starts a span: remembered per tracer while no provider is set, and followed when it changes."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from autoglm_runtime.observability import _tracing


def test_a_no_op_tracer_starts_no_span_and_the_answer_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = trace.NoOpTracer()
    monkeypatch.setattr(_tracing, "_TRACER", quiet)
    monkeypatch.setattr(_tracing, "_quiet", [None])
    assert _tracing.spans_off()
    if getattr(trace, "_TRACER_PROVIDER", None) is None:  # (a test before may have set the session's provider)
        assert _tracing._quiet == [quiet]
    assert _tracing.spans_off()


def test_another_tracer_is_asked_again_not_taken_for_the_remembered_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tracing, "_TRACER", trace.NoOpTracer())
    assert _tracing.spans_off()
    provider = TracerProvider()
    monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
    assert not _tracing.spans_off()
    provider.shutdown()


def test_the_proxy_tracer_follows_a_provider_set_after_it_was_found_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = trace.ProxyTracer("autoglm_runtime")
    monkeypatch.setattr(_tracing, "_TRACER", proxy)
    monkeypatch.setattr(_tracing, "_quiet", [None])
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    assert _tracing.spans_off()
    assert _tracing._quiet[0] is proxy
    provider = TracerProvider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)  # what set_tracer_provider sets
    assert not _tracing.spans_off()
    provider.shutdown()
