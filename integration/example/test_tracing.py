"""One trace per request through the example server: one guard span (however many guard layers judge the
request) over the request's model call, whose ``traceparent`` takes the same trace to the worker.

The example's app (both guard layers, routing, its two models in real workers) is built in this process on the
harness's ZooKeeper, so an in-memory exporter on the global tracer provider sees every span it makes; requests go
through httpx's ASGI transport. (The example's models log nothing and do not use OpenTelemetry, so the worker's side
of the trace -- its log lines and the model's own spans under the call -- is tested in
integration/isolation/test_worker_tracing.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration.example._server import DEFAULT_WHEELS, WORDS
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from tests._support.telemetry import span_exporter

from autoglm_runtime import ConfigClient
from autoglm_runtime.deps import load_manifest
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.validation import ChatTemplate, HFTokenizer
from examples.model_server.app import create_app
from examples.model_server.assets import MODELS, build_tokenizer, fill_wheelhouse
from examples.model_server.store import seed

pytestmark = pytest.mark.slow

CHARS = "chars-numpy2"


@pytest.fixture(scope="module")
def example_app(zk_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The example server's ASGI app, as ``bash scripts/serve`` builds it, in this process."""
    state: Path = tmp_path_factory.mktemp("example-tracing")
    manifests = [load_manifest(model) for model in sorted(MODELS.iterdir())]
    wheelhouse = fill_wheelhouse(DEFAULT_WHEELS, manifests)
    build_tokenizer(state / "tokenizer.json")
    templates = {m.name: ChatTemplate.from_file(m.directory / "tokenizer_config.json") for m in manifests}
    root = "/example-tracing"
    seed(zk_server.hosts, root, [m.name for m in manifests], reset=True)
    with contextlib.ExitStack() as stack:
        config = ConfigClient(zk_server.hosts, root)
        config.start(timeout=30)
        stack.callback(config.stop)
        loader = stack.enter_context(ModelLoader(state / "envs", wheelhouse=wheelhouse, offline=True))
        for manifest in manifests:
            loader.load(manifest)
        tokenizer = HFTokenizer.from_file(state / "tokenizer.json")
        yield create_app(config=config, loader=loader, tokenizer=tokenizer, templates=templates)


def _post(app: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://example", timeout=60) as client:
            response = await client.post(path, json=body)
            await response.aread()
            return response

    return asyncio.run(send())


def _traces(spans: tuple[ReadableSpan, ...]) -> dict[int, list[ReadableSpan]]:
    traces: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        assert span.context is not None
        traces.setdefault(span.context.trace_id, []).append(span)
    return traces


def test_each_request_is_one_trace_with_one_guard_span_over_its_model_calls(example_app: Any) -> None:
    exporter = span_exporter()
    prompt = "the quick brown fox jumps over the lazy dog"
    answered = [
        _post(example_app, "/v1/completions", {"model": WORDS, "prompt": prompt, "max_tokens": 4}),
        _post(example_app, "/v1/chat/completions",
              {"model": CHARS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
        _post(example_app, "/v1/completions", {"model": WORDS, "prompt": prompt, "max_tokens": 4, "stream": True}),
    ]  # fmt: skip
    assert [response.status_code for response in answered] == [200, 200, 200]
    traces = _traces(exporter.get_finished_spans())
    assert sorted(sorted(span.name for span in spans) for spans in traces.values()) == [
        ["autoglm.guard.check", "autoglm.model.call"],
        ["autoglm.guard.check", "autoglm.model.call"],
        ["autoglm.guard.check", "autoglm.model.stream"],
    ]
    for spans in traces.values():
        guard, model = sorted(spans, key=lambda span: span.name)
        assert guard.parent is None  # no server span here: the guard's is the request's root
        assert guard.context is not None
        assert model.parent is not None
        assert model.parent.span_id == guard.context.span_id
        assert guard.end_time is not None
        assert model.end_time is not None
        assert guard.end_time >= model.end_time  # it covers the app's work
        attributes = dict(guard.attributes or {})
        # The per-model guard's verdict, recorded on the one span of the request.
        assert attributes["autoglm.guard.surface"] == "http"
        assert attributes["autoglm.guard.removed_tokens"] == 0
        assert attributes["autoglm.guard.input_tokens"] > 0
        assert guard.status.status_code is StatusCode.UNSET


def test_a_request_the_model_guard_refuses_is_one_failed_guard_span(example_app: Any) -> None:
    exporter = span_exporter()
    refused = _post(example_app, "/v1/completions", {"model": WORDS, "prompt": "word " * 400, "max_tokens": 4})
    assert refused.status_code == 400
    assert refused.headers["x-autoglm-error-code"] == "E0513"
    (guard,) = exporter.get_finished_spans()
    assert guard.name == "autoglm.guard.check"
    assert dict(guard.attributes or {}) == {"autoglm.guard.surface": "http", "error.type": "E0513"}
    assert (guard.status.status_code, guard.status.description) == (
        StatusCode.ERROR,
        "E0513: ContextWindowExceededError",
    )


def test_inside_a_server_span_the_guard_span_is_its_child_and_the_model_calls_parent(example_app: Any) -> None:
    # What an HTTP server's OpenTelemetry instrumentation makes: a span around the request, the trace's root.
    exporter = span_exporter()
    with trace.get_tracer("test").start_as_current_span("POST /v1/completions"):
        response = _post(example_app, "/v1/completions", {"model": WORDS, "prompt": "the fox", "max_tokens": 2})
    assert response.status_code == 200
    finished = exporter.get_finished_spans()
    names = ["POST /v1/completions", "autoglm.guard.check", "autoglm.model.call"]
    assert sorted(span.name for span in finished) == names
    spans = {span.name: span for span in finished}
    assert len({span.context.trace_id for span in spans.values() if span.context}) == 1
    server, guard, call = spans["POST /v1/completions"], spans["autoglm.guard.check"], spans["autoglm.model.call"]
    assert guard.parent is not None
    assert server.context is not None
    assert guard.parent.span_id == server.context.span_id
    assert call.parent is not None
    assert guard.context is not None
    assert call.parent.span_id == guard.context.span_id
