"""One trace from the guard to the model's own code: the call frame's traceparent, in real worker processes.

A request span (what an HTTP server's instrumentation makes) holds the guard's check and the model call; the
worker puts that call's ids on the model's log records, which come back to the host's JSON log, and -- when the
model's environment has OpenTelemetry -- makes it the parent of the model's own spans.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.isolation._helpers import log_line
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from tests._support.telemetry import span_exporter
from tests.validation._helpers import char_tok

from autoglm_runtime.isolation import LoadedModel, ModelLoader
from autoglm_runtime.observability import _tracing
from autoglm_runtime.validation import ContextWindowGuard, guarded

pytestmark = pytest.mark.slow

PLAIN = """
import logging

log = logging.getLogger("plain")

class Model:
    def predict(self, prompt):
        log.warning("predicting %d chars", len(prompt))
        return prompt.upper()

    def words(self, prompt):
        for word in prompt.split():
            log.warning("yielding %s", word)
            yield word

def load():
    return Model()
"""

ASYNC = """
import asyncio, logging

log = logging.getLogger("async")

class Model:
    async def predict(self, prompt):
        await asyncio.sleep(0)
        log.warning("awaited %s", prompt)
        return prompt

    async def words(self, prompt):
        for word in prompt.split():
            await asyncio.sleep(0)
            log.warning("async yielding %s", word)
            yield word

def load():
    return Model()
"""

TRACED = """
import logging

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

log = logging.getLogger("traced")

class Model:
    def __init__(self):
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("model")

    def predict(self, prompt):
        with self.tracer.start_as_current_span("model.predict"):
            log.warning("predicting %d chars", len(prompt))
            return prompt.upper()

    def spans(self):
        return [
            {
                "name": span.name,
                "trace_id": format(span.context.trace_id, "032x"),
                "span_id": format(span.context.span_id, "016x"),
                "parent": format(span.parent.span_id, "016x") if span.parent else None,
            }
            for span in self.exporter.get_finished_spans()
        ]

def load():
    return Model()
"""


@pytest.fixture
def loader(otel_wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    with ModelLoader(env_root, wheelhouse=otel_wheelhouse, offline=True, backend="process") as loader:
        yield loader


def _ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def _request(model: LoadedModel, prompt: str) -> tuple[str, dict[str, ReadableSpan]]:
    """``prompt`` through a guard to ``model.predict`` inside a request span: its result and the spans by name."""
    exporter = span_exporter()

    @guarded(ContextWindowGuard(char_tok(), 100, message_tokens=0))
    def generate(prompt: str, max_tokens: int = 2) -> str:
        return str(model.call("predict", prompt, timeout=60))

    with trace.get_tracer("test").start_as_current_span("request"):
        result = generate(prompt)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert sorted(spans) == ["autoglm.guard.check", "autoglm.model.call", "request"]
    return result, spans


def test_the_model_call_span_ids_reach_the_workers_log_lines(
    loader: ModelLoader, make_model: Any, worker_log: io.StringIO
) -> None:
    model = loader.load(make_model("trace-plain", PLAIN))
    result, spans = _request(model, "hello traced world")
    assert result == "HELLO TRACED WORLD"
    trace_id, request_id = _ids(spans["request"])
    _, call_id = _ids(spans["autoglm.model.call"])
    assert {_ids(span)[0] for span in spans.values()} == {trace_id}
    assert spans["autoglm.guard.check"].parent is not None
    assert spans["autoglm.guard.check"].parent.span_id == int(request_id, 16)
    line = log_line(worker_log, "predicting 18 chars")
    assert (line["trace_id"], line["span_id"], line["model"]) == (trace_id, call_id, "trace-plain")

    exporter = span_exporter()
    with trace.get_tracer("test").start_as_current_span("request"):
        assert list(model.stream("words", "one two", timeout=60)) == ["one", "two"]
    streamed = {span.name: span for span in exporter.get_finished_spans()}
    stream_ids = _ids(streamed["autoglm.model.stream"])
    assert _ids(streamed["request"])[0] == stream_ids[0]
    for word in ("one", "two"):
        line = log_line(worker_log, f"yielding {word}")
        assert (line["trace_id"], line["span_id"]) == stream_ids

    exporter = span_exporter()
    model.call("predict", "a root", timeout=60)  # outside any request: the call's own span starts a trace
    (root,) = exporter.get_finished_spans()
    assert _ids(root)[0] not in (trace_id, stream_ids[0])
    line = log_line(worker_log, "predicting 6 chars")
    assert (line["trace_id"], line["span_id"]) == _ids(root)


def test_a_model_with_opentelemetry_makes_its_spans_children_of_the_call(
    loader: ModelLoader, make_model: Any, worker_log: io.StringIO
) -> None:
    requirements = ("opentelemetry-sdk",)
    model = loader.load(make_model("trace-otel", TRACED, requirements=requirements))
    result, spans = _request(model, "in the worker")
    assert result == "IN THE WORKER"
    trace_id, call_id = _ids(spans["autoglm.model.call"])
    assert _ids(spans["request"])[0] == trace_id
    children = model.call("spans", timeout=60)
    assert len(children) == 1
    child = children[0]
    assert (child["name"], child["trace_id"], child["parent"]) == ("model.predict", trace_id, call_id)
    line = log_line(worker_log, "predicting 13 chars")
    assert (line["trace_id"], line["span_id"]) == (trace_id, child["span_id"])


def test_an_async_models_calls_and_streams_log_under_their_own_spans(
    loader: ModelLoader, make_model: Any, worker_log: io.StringIO
) -> None:
    model = loader.load(make_model("trace-async", ASYNC), concurrency="async", max_inflight=4)
    exporter = span_exporter()

    async def request() -> tuple[list[Any], list[str]]:
        with trace.get_tracer("test").start_as_current_span("request"):
            answers = await asyncio.gather(
                model.acall("predict", "first", timeout=60), model.acall("predict", "second", timeout=60)
            )
            words = [word async for word in model.astream("words", "x y", timeout=60)]
        return answers, words

    assert asyncio.run(request()) == (["first", "second"], ["x", "y"])
    spans = exporter.get_finished_spans()
    call_ids = {_ids(span) for span in spans if span.name == "autoglm.model.call"}
    (stream,) = [span for span in spans if span.name == "autoglm.model.stream"]
    lines = [log_line(worker_log, text) for text in ("awaited first", "awaited second", "async yielding x")]
    ids = [(line["trace_id"], line["span_id"]) for line in lines]
    assert len(call_ids) == 2  # concurrent calls on one loop each keep their own span
    assert set(ids[:2]) == call_ids
    assert ids[2] == _ids(stream)


def test_a_call_the_hosts_sampler_drops_makes_the_models_own_spans_follow(
    loader: ModelLoader, make_model: Any, worker_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = loader.load(make_model("trace-dropped", TRACED, requirements=("opentelemetry-sdk",)))
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))  # this host samples no trace it starts
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
    assert model.call("predict", "dropped", timeout=60) == "DROPPED"
    # The call's context went to the worker flagged not sampled: the model's ParentBased sampler drops its span
    # (before, no context went and the model started -- and sampled -- a trace of its own).
    assert model.call("spans", timeout=60) == []
    assert exporter.get_finished_spans() == ()
    line = log_line(worker_log, "predicting 7 chars")
    assert line.get("trace_id") is not None
    provider.shutdown()
