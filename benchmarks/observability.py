"""Observability benchmark: what metrics and tracing add to each guarded request.

Run: .venv/bin/python benchmarks/observability.py

One ASGI request through ValidationMiddleware (body read, decode check, extraction, counting with a byte-level BPE
tokenizer trained here) to a small app, called directly (no HTTP server, so the guard's share is as large as it
gets). Four settings, interleaved request by request in one process (the SDK's module switches are flipped here):

* off: as without the extras: no metric, no span;
* metrics: prometheus_client counters and the duration histogram;
* tracing 1%: also a span per guard check, on an OpenTelemetry SDK provider sampling 1% of traces
  (``ParentBased(TraceIdRatioBased(0.01))``, a common production set-up), batch processor;
* tracing 100%: every span recorded and handed to the batch processor.

The exporter drops the spans, so only the SDK's own cost is measured. Printed: CPU per request (process time,
median: it includes the batch processor's thread) for a 50-, a 1,000- and an 8,000-token prompt, and the ratio of
each setting to off (target <= 1.03x). Also what one LoadedModel.call and one LoadedModel.stream pay for their
metrics, span and the traceparent put in the request frame, in microseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from autoglm_runtime.observability import ModelCall, ModelStreamCall, _events, _tracing
from autoglm_runtime.observability._metrics import event_metrics
from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer, ValidationMiddleware
from validation import build_tokenizer  # benchmarks/validation.py (this script's directory is on sys.path)

SETTINGS = ("off", "metrics", "tracing 1%", "tracing 100%")
TRACERS: dict[str, Any] = {}


class Dropping(SpanExporter):
    """Exports nothing: the batch processor's work is measured, not an exporter's network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def use(setting: str) -> None:
    """Switch this process's instrumentation to ``setting``."""
    _events.event_metrics = (lambda: None) if setting == "off" else event_metrics  # type: ignore[assignment]
    _tracing.TRACING_AVAILABLE = setting in TRACERS
    _tracing._TRACER = TRACERS.get(setting)


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    result = scope["state"]["guard_result"]
    payload = json.dumps({"usage": {"prompt_tokens": result.input_tokens}}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


def prompt_of(raw: Any, words: list[str], tokens: int, rng: random.Random) -> str:
    text = " ".join(rng.choices(words[:8000], k=tokens * 2))
    return str(raw.decode(raw.encode(text).ids[:tokens]))


async def measure(guarded: ValidationMiddleware, body: bytes, requests: int) -> dict[str, float]:
    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}
    times: dict[str, list[float]] = {setting: [] for setting in SETTINGS}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    for i in range(requests):
        for setting in SETTINGS[i % 4 :] + SETTINGS[: i % 4]:  # rotated: no setting always goes first
            use(setting)
            start = time.process_time()
            await guarded(dict(scope), receive, send)
            times[setting].append(time.process_time() - start)
    return {setting: statistics.median(values) for setting, values in times.items()}


def model_call_cost(rounds: int = 200_000) -> dict[str, tuple[float, float]]:
    """Microseconds a call's and a stream's telemetry add, per setting (the call itself is not run): the span,
    the metrics and the traceparent of the request frame."""
    costs: dict[str, tuple[float, float]] = {}
    for setting in SETTINGS:
        use(setting)
        start = time.perf_counter()
        for _ in range(rounds):
            with ModelCall("bench", "predict"):
                _tracing.traceparent()
        call = (time.perf_counter() - start) / rounds * 1e6
        start = time.perf_counter()
        for _ in range(rounds):
            stream = ModelStreamCall("bench", "generate")
            with stream.opening():
                _tracing.traceparent()
            stream.end()
        costs[setting] = (call, (time.perf_counter() - start) / rounds * 1e6)
    return costs


def main() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    providers = {
        "tracing 1%": TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01))),
        "tracing 100%": TracerProvider(),
    }
    for setting, provider in providers.items():
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
        TRACERS[setting] = provider.get_tracer("autoglm_runtime")
    rng = random.Random(7)
    raw, words = build_tokenizer(rng)
    guarded = ValidationMiddleware(app, context_guard=ContextWindowGuard(HFTokenizer(raw), 16_384))
    print(f"tokenizer: byte-level BPE, vocab {raw.get_vocab_size()}; requests called directly on the ASGI app")
    print("CPU per request (process time, median; the four settings alternate request by request)")
    with guarded:
        for tokens, requests in ((50, 2000), (1000, 1000), (8000, 200)):
            body = json.dumps({"prompt": prompt_of(raw, words, tokens, rng), "max_tokens": 256}).encode()
            asyncio.run(measure(guarded, body, 20))  # warm up
            medians = asyncio.run(measure(guarded, body, requests))
            off = medians["off"]
            print(f"  {tokens}-token prompt (median of {requests})")
            for setting in SETTINGS:
                ratio = medians[setting] / off
                target = "" if setting == "off" else "   (target <= 1.03x)"
                print(f"    {setting:<20} {medians[setting] * 1e6:9.1f} us   {ratio:6.3f}x{target}")
    costs = model_call_cost()
    print("LoadedModel.call / .stream: what metrics, span and traceparent add (a worker round trip takes milliseconds)")
    for setting in SETTINGS:
        call, stream = costs[setting]
        print(f"    {setting:<20} call {call:7.2f} us   stream {stream:7.2f} us")
    for provider in providers.values():
        provider.shutdown()


if __name__ == "__main__":
    main()
