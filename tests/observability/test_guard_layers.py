"""Two guard layers on one request (a general middleware in front of a per-model one, as the example server has):
one guard span, which covers the app's work, so the request's model calls are in its trace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import httpx
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests._support.telemetry import Delta
from tests.validation._helpers import char_tok

from autoglm_runtime.observability import GuardCheck, ModelCall, _tracing
from autoglm_runtime.validation import ContextWindowGuard, HeaderTokenGuard, ValidationMiddleware


class Counted(ParentBased):
    """``ParentBased(root)``, counting the decisions asked of it."""

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


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=Counted(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
    yield provider, exporter
    provider.shutdown()


def layered(sent: list[str | None], *, truncate: bool = False) -> ValidationMiddleware:
    """A header guard in front of a context-window guard in front of an app making one model call."""

    async def complete(request: Request) -> JSONResponse:
        body = await request.json()
        with ModelCall("m", "predict"):
            sent.append(_tracing.traceparent())
        return JSONResponse({"prompt": body["prompt"]})

    app = Starlette(routes=[Route("/v1/completions", complete, methods=["POST"])])
    guard = ContextWindowGuard(char_tok(), 50, truncate_on_overflow=truncate, message_tokens=0)
    inner = ValidationMiddleware(app, context_guard=guard, header_guard=None)
    return ValidationMiddleware(inner, header_guard=HeaderTokenGuard(max_length=64))


def post(app: ValidationMiddleware, prompt: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 5}, headers=headers)

    return asyncio.run(send())


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def test_two_layers_make_one_guard_span_over_the_requests_model_call(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    _, exporter = provider
    sent: list[str | None] = []
    assert post(layered(sent), "hello").status_code == 200
    guard, call = sorted(exporter.get_finished_spans(), key=lambda span: span.name)
    assert (guard.name, call.name) == ("autoglm.guard.check", "autoglm.model.call")
    assert guard.parent is None
    assert call.parent is not None
    assert call.parent.span_id == ids(guard)[1]
    assert ids(call)[0] == ids(guard)[0]
    assert call.context is not None
    assert call.context.trace_flags.sampled
    assert sent == [f"00-{ids(call)[0]:032x}-{ids(call)[1]:016x}-{call.context.trace_flags:02x}"]
    assert dict(guard.attributes or {}) == {
        "autoglm.guard.surface": "http",
        "autoglm.guard.input_tokens": 5,
        "autoglm.guard.removed_tokens": 0,
    }  # the inner layer's verdict
    assert guard.end_time is not None
    assert call.end_time is not None
    assert guard.end_time >= call.end_time


def test_the_inner_layers_truncation_and_rejection_land_on_the_one_guard_span(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    _, exporter = provider
    sent: list[str | None] = []
    assert post(layered(sent, truncate=True), "x" * 100).status_code == 200
    assert post(layered(sent), "x" * 100).status_code == 400
    assert post(layered(sent), "hi", headers={"authorization": "y" * 100}).status_code == 431
    _call, truncated, rejected, refused = exporter.get_finished_spans()
    assert [span.name for span in (truncated, rejected, refused)] == ["autoglm.guard.check"] * 3
    assert dict(truncated.attributes or {}) == {
        "autoglm.guard.surface": "http",
        "autoglm.guard.input_tokens": 45,
        "autoglm.guard.removed_tokens": 55,
        "autoglm.warning.code": "E0514",
    }
    assert dict(rejected.attributes or {}) == {"autoglm.guard.surface": "http", "error.type": "E0513"}
    assert (rejected.status.status_code, rejected.status.description) == (
        StatusCode.ERROR,
        "E0513: ContextWindowExceededError",
    )
    assert dict(refused.attributes or {}) == {"autoglm.guard.surface": "http", "error.type": "E0512"}
    assert len(sent) == 1


def test_a_request_its_sampler_drops_is_one_decision_and_its_model_call_follows_it(
    provider: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    dropping = TracerProvider(sampler=Counted(ALWAYS_OFF))
    exporter = InMemorySpanExporter()
    dropping.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "_TRACER", dropping.get_tracer("autoglm_runtime"))
    sent: list[str | None] = []
    assert post(layered(sent), "hello").status_code == 200
    assert post(layered(sent), "again").status_code == 200
    sampler = dropping.sampler
    assert isinstance(sampler, Counted)
    assert sampler.asked == 2  # one per request: neither the inner layer nor the model call starts a trace
    assert exporter.get_finished_spans() == ()
    # The call sends the request's trace on, flagged not sampled, so the model's own spans follow the decision.
    assert all(parent is not None and not int(parent[-2:], 16) & TraceFlags.SAMPLED for parent in sent)
    assert len({parent.split("-")[1] for parent in sent if parent is not None}) == 2
    dropping.shutdown()


def test_a_check_within_another_records_its_verdict_on_the_outer_span_and_never_ends_it(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    _, exporter = provider
    with GuardCheck("http") as outer:
        outer.passed(None)
        with GuardCheck("http", within=outer) as inner:
            inner.passed(None)
        assert exporter.get_finished_spans() == ()
    (span,) = exporter.get_finished_spans()
    assert span.name == "autoglm.guard.check"


def test_an_inner_layer_refusing_headers_on_a_path_it_does_not_judge_records_on_the_one_guard_span(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    # The inner layer judges no body here (paths=()), only headers, more strictly than the outer one.
    _, exporter = provider
    sent: list[str | None] = []

    async def complete(request: Request) -> JSONResponse:
        with ModelCall("m", "predict"):
            sent.append(_tracing.traceparent())
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/completions", complete, methods=["POST"])])
    inner = ValidationMiddleware(app, header_guard=HeaderTokenGuard(max_length=16), paths=())
    outer = ValidationMiddleware(inner, header_guard=HeaderTokenGuard(max_length=64))
    refused = post(outer, "hi", headers={"authorization": "y" * 32})
    assert (refused.status_code, refused.headers["x-autoglm-error-code"]) == (431, "E0512")
    (guard,) = exporter.get_finished_spans()
    assert guard.name == "autoglm.guard.check"
    assert guard.parent is None
    assert dict(guard.attributes or {}) == {"autoglm.guard.surface": "http", "error.type": "E0512"}
    assert (guard.status.status_code, guard.status.description) == (StatusCode.ERROR, "E0512: HeaderTooLongError")
    assert sent == []


def test_a_truncation_by_the_outer_layer_stays_on_the_span_when_the_inner_layer_removes_nothing(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    _, exporter = provider

    async def complete(request: Request) -> JSONResponse:
        return JSONResponse(await request.json())

    app = Starlette(routes=[Route("/v1/completions", complete, methods=["POST"])])
    inner = ValidationMiddleware(app, context_guard=ContextWindowGuard(char_tok(), 80, message_tokens=0))
    narrow = ContextWindowGuard(char_tok(), 50, truncate_on_overflow=True, message_tokens=0)
    outer = ValidationMiddleware(inner, context_guard=narrow)
    truncated = post(outer, "x" * 100)
    assert (truncated.status_code, truncated.headers["x-autoglm-truncated-tokens"]) == (200, "55")
    (guard,) = exporter.get_finished_spans()
    assert dict(guard.attributes or {}) == {
        "autoglm.guard.surface": "http",
        "autoglm.guard.input_tokens": 45,  # what the app was given
        "autoglm.guard.removed_tokens": 55,  # what the request lost, whichever layer cut it
        "autoglm.warning.code": "E0514",
    }


def test_each_layer_counts_its_own_check_and_verdict_once(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    series = [("autoglm_guard_rejections_total", {"code": code, "surface": "http"}) for code in ("E0512", "E0513")]
    moved = Delta(
        *series,
        ("autoglm_guard_truncations_total", {"surface": "http"}),
        ("autoglm_guard_truncated_tokens_total", {"surface": "http"}),
        ("autoglm_guard_check_duration_seconds_count", {"surface": "http"}),
    )
    sent: list[str | None] = []
    assert post(layered(sent), "hello").status_code == 200  # two checks
    assert post(layered(sent, truncate=True), "x" * 100).status_code == 200  # two, the inner one truncating
    assert post(layered(sent), "x" * 100).status_code == 400  # two, the inner one refusing
    assert post(layered(sent), "hi", headers={"authorization": "y" * 100}).status_code == 431  # the outer one
    strict = ValidationMiddleware(layered(sent), header_guard=HeaderTokenGuard(max_length=16), paths=())
    assert post(ValidationMiddleware(strict), "hi", headers={"authorization": "y" * 32}).status_code == 431
    assert moved.moved() == {
        "autoglm_guard_rejections_total{code=E0512,surface=http}": 2.0,
        "autoglm_guard_rejections_total{code=E0513,surface=http}": 1.0,
        "autoglm_guard_truncations_total{surface=http}": 1.0,
        "autoglm_guard_truncated_tokens_total{surface=http}": 55.0,
        "autoglm_guard_check_duration_seconds_count{surface=http}": 9.0,
    }
