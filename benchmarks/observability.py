"""Observability benchmark: what metrics and tracing add to each request.

Run: .venv/bin/python benchmarks/observability.py [--sections 2,4]   (all four sections by default)

Settings, interleaved in short runs in one process (the SDK's module switches are flipped here; see ``RUN``):

* off: as without the extras: no metric, no span;
* metrics: prometheus_client counters and the duration histogram;
* tracing 1%: metrics and our spans, on an OpenTelemetry SDK provider sampling 1% of traces
  (``ParentBased(TraceIdRatioBased(0.01))``, a common production set-up), batch processor; no span around the
  request, so our guard span is the root of its trace and pays for the trace's ids and sampling decision;
* tracing 100%: every span recorded and handed to the batch processor;
* in a traced server: each request inside a SERVER span the benchmark starts on the same provider (what an HTTP
  server's OpenTelemetry instrumentation does; its span is the trace's root), with our spans off (metrics only)
  and on. "ours on" is compared with "ours off": the server's own span is paid by any traced server.

The exporter drops the spans, so only the SDK's own cost is measured. Each table ends with what one span costs at
100%: each of ours (the request's cost with ours on, less with ours off, over our spans in a request) beside the
server's own root span (the SDK's span alone, no code of ours). Printed:

1. guard only: one ASGI request through ValidationMiddleware (body read, decode check, extraction, counting with a
   byte-level BPE tokenizer trained here) to a small app, called directly (no HTTP server, so the guard's share is
   as large as it gets): CPU per request (process time, median: it includes the batch processor's thread) for a
   50-, a 1,000- and an 8,000-token prompt, each setting's ratio to its peer (target <= 1.03x);
2. the example server's whole request (``examples/model_server``'s app called directly, its models in real
   workers): wall time and host CPU per request, same ratios;
3. what one LoadedModel.call and one LoadedModel.stream pay for their metrics, span and the traceparent put in the
   request frame, in microseconds;
4. as users see it: the example server served by uvicorn on 127.0.0.1 in a process of its own (started by this
   script with ``--serve``), driven over one keep-alive connection by httpx; the setting travels in a request
   header and the server switches to it before the request (and opens the SERVER span for the traced-server
   settings). Printed: the client's wall time per request and the server process's CPU per request (the CPU
   between the starts of consecutive requests, read in the server: its HTTP parsing and writing, the app, the
   batch processor's thread; not the model worker's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from autoglm_runtime.observability import ModelCall, ModelStreamCall, _events, _tracing
from autoglm_runtime.observability._metrics import event_metrics
from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer, ValidationMiddleware
from validation import build_tokenizer  # benchmarks/validation.py (this script's directory is on sys.path)

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("off", "metrics", "tracing 1%", "tracing 100%")
#: A traced server: each request inside a SERVER span the benchmark starts (what an HTTP server's OpenTelemetry
#: instrumentation does) on the same provider; with our spans off (metrics on) and on.
IN_SERVER = ("server 1%, ours off", "server 1%, ours on", "server 100%, ours off", "server 100%, ours on")
TRACERS: dict[str, Any] = {}
SERVER_TRACERS: dict[str, Any] = {}
FLUSHES: dict[str, Callable[[], object]] = {}


class Dropping(SpanExporter):
    """Exports nothing: the batch processor's work is measured, not an exporter's network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def use(setting: str) -> None:
    """Switch this process's instrumentation to ``setting``."""
    _events.event_metrics = (lambda: None) if setting == "off" else event_metrics  # type: ignore[assignment]
    _tracing.TRACING_AVAILABLE = setting in TRACERS
    _tracing._TRACER = TRACERS.get(setting)


async def serve(setting: str, request: Callable[[], Awaitable[None]]) -> None:
    """``request`` under ``setting``, inside a SERVER span for the traced-server settings."""
    server = SERVER_TRACERS.get(setting)
    if server is None:
        await request()
        return
    with server.start_as_current_span("POST /v1/completions", kind=SpanKind.SERVER):
        await request()


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    result = scope["state"]["guard_result"]
    payload = json.dumps({"usage": {"prompt_tokens": result.input_tokens}}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


def prompt_of(raw: Any, words: list[str], tokens: int, rng: random.Random) -> str:
    text = " ".join(rng.choices(words[:8000], k=tokens * 2))
    return str(raw.decode(raw.encode(text).ids[:tokens]))


#: Requests in a row under one setting; the first of each run is not counted. A request pays for what the one before
#: it left (the caches its code evicted, its garbage): counted only after one of its own setting, each setting is
#: measured as a server running only it would see it. (Alternating single requests in a fixed cycle charged each
#: setting for its fixed predecessor's traces instead.)
RUN = 4


def counted(requests: int) -> int:
    """How many requests of each setting are counted when ``requests`` are asked for (whole runs)."""
    return -(-requests // (RUN - 1)) * (RUN - 1)


async def alternate(request: Callable[[], Awaitable[None]], requests: int) -> dict[str, tuple[float, float]]:
    """Median wall time and CPU (process time) of ``request`` per setting, the settings alternating in short runs
    (:data:`RUN`; rotated: no setting always goes first)."""
    settings = SETTINGS + IN_SERVER
    walls: dict[str, list[float]] = {setting: [] for setting in settings}
    cpus: dict[str, list[float]] = {setting: [] for setting in settings}
    for i in range(counted(requests) // (RUN - 1)):
        turn = i % len(settings)
        for setting in settings[turn:] + settings[:turn]:
            use(setting)
            for kept in (False, *(True,) * (RUN - 1)):
                wall, cpu = time.perf_counter(), time.process_time()
                await serve(setting, request)
                if kept:
                    cpus[setting].append(time.process_time() - cpu)
                    walls[setting].append(time.perf_counter() - wall)
    return {s: (statistics.median(walls[s]), statistics.median(cpus[s])) for s in settings}


async def measure(guarded: ValidationMiddleware, body: bytes, requests: int) -> dict[str, float]:
    """Median CPU of one request through the guard alone, per setting."""
    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    medians = await alternate(lambda: guarded(dict(scope), receive, send), requests)
    return {setting: cpu for setting, (_, cpu) in medians.items()}


def model_call_cost(rounds: int = 200_000, batch: int = 256) -> dict[str, tuple[float, float]]:
    """Microseconds a call's and a stream's telemetry add, per setting (the call itself is not run): the span,
    the metrics and the traceparent of the request frame. The provider is flushed every ``batch`` rounds, inside
    the timing: a loop this tight outruns the batch processor (its queue fills and drops spans, which no server
    at a few thousand calls a second sees), and the export's CPU belongs to tracing."""
    costs: dict[str, tuple[float, float]] = {}
    for setting in SETTINGS:
        use(setting)
        flush = FLUSHES.get(setting, lambda: None)
        start = time.perf_counter()
        for _ in range(rounds // batch):
            for _ in range(batch):
                with ModelCall("bench", "predict"):
                    _tracing.traceparent()
            flush()
        call = (time.perf_counter() - start) / (rounds // batch * batch) * 1e6
        start = time.perf_counter()
        for _ in range(rounds // batch):
            for _ in range(batch):
                stream = ModelStreamCall("bench", "generate")
                with stream.opening():
                    _tracing.traceparent()
                stream.end()
            flush()
        costs[setting] = (call, (time.perf_counter() - start) / (rounds // batch * batch) * 1e6)
    return costs


def example_app(stack: contextlib.ExitStack) -> Any:
    """The example server's ASGI app (``examples/model_server``) as ``bash scripts/serve`` builds it, its config in a
    file:// directory: both n-gram models loaded in their own environments and workers (built on the first run, in
    ``.autoglm/bench-observability``; the numpy wheels come from ``.autoglm/example/wheels``, fetched once)."""
    sys.path.insert(0, str(REPO))  # examples/ is not installed
    from autoglm_runtime import ConfigClient
    from autoglm_runtime.config import SyncTuning
    from autoglm_runtime.deps import load_manifest
    from autoglm_runtime.isolation import ModelLoader
    from autoglm_runtime.validation import ChatTemplate
    from examples.model_server.app import create_app
    from examples.model_server.assets import MODELS, fill_wheelhouse
    from examples.model_server.assets import build_tokenizer as build_example_tokenizer
    from examples.model_server.store import open_store, seed

    state = REPO / ".autoglm" / "bench-observability"
    state.mkdir(parents=True, exist_ok=True)
    manifests = [load_manifest(model) for model in sorted(MODELS.iterdir())]
    wheelhouse = fill_wheelhouse(REPO / ".autoglm" / "example" / "wheels", manifests)
    tokenizer_file = state / "tokenizer.json"
    if not tokenizer_file.exists():
        build_example_tokenizer(tokenizer_file)
    templates = {m.name: ChatTemplate.from_file(m.directory / "tokenizer_config.json") for m in manifests}
    store = open_store(zk=None, choice="file", state=state, stack=stack)
    seed(store.hosts, "/bench", [m.name for m in manifests], reset=True)
    config = ConfigClient(store.hosts, "/bench", tuning=SyncTuning(poll_interval=0.2))
    config.start(timeout=15)
    stack.callback(config.stop)
    loader = stack.enter_context(ModelLoader(state / "envs", wheelhouse=wheelhouse, offline=True))
    for manifest in manifests:
        loader.load(manifest)
    return create_app(
        config=config, loader=loader, tokenizer=HFTokenizer.from_file(tokenizer_file), templates=templates
    )


async def measure_full(app: Any, body: bytes, requests: int) -> dict[str, tuple[float, float]]:
    """Median wall time and host CPU of one /v1/completions request to the example's app, per setting."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
    }  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    medians = await alternate(lambda: app(dict(scope), receive, send), requests)
    assert set(statuses) == {200}, f"the example server answered {sorted(set(statuses))}"
    return medians


def report(medians: dict[str, float], spans: int, unit: str = "us", scale: float = 1e6) -> None:
    """Each setting against its peer: the untraced ones against off, our spans in a traced server against the
    same server with ours off; then, at 100%, what each of our ``spans`` per request costs beside the server's
    own root span (one span of the SDK, no code of ours)."""
    for setting in SETTINGS:
        ratio = medians[setting] / medians["off"]
        target = "" if setting == "off" else "   (target <= 1.03x)"
        print(f"    {setting:<22} {medians[setting] * scale:9.1f} {unit}   {ratio:6.3f}x{target}")
    print("    in a traced server (each request inside a SERVER span on the same provider, ours off = metrics only):")
    for setting in IN_SERVER:
        peer = setting.replace("ours on", "ours off")
        ratio = f"{medians[setting] / medians[peer]:6.3f}x   (target <= 1.03x)" if setting != peer else ""
        print(f"    {setting:<22} {medians[setting] * scale:9.1f} {unit}   {ratio}")
    # For scale: what the SDK charges for one root span of the server's own (no span of ours), against off.
    roots = "   ".join(
        f"{rate} {medians[f'server {rate}, ours off'] / medians['off']:6.3f}x" for rate in ("1%", "100%")
    )
    print(f"    the server's own root span alone (server X%, ours off, against off): {roots}")
    ours = (medians["server 100%, ours on"] - medians["server 100%, ours off"]) / spans * scale
    server = (medians["server 100%, ours off"] - medians["off"]) * scale

    def cost(value: float) -> str:  # a difference of medians below zero is noise larger than the cost
        return f"{value:6.1f} {unit}" if value > 0 else "within noise"

    mine = f"each of ours ({spans} a request) {cost(ours)}"
    print(f"    per span at 100%: {mine}, the server's own root span {cost(server)}")


#: Our spans in one request of the example server: the guard check's (one for both guard layers) and the model call's.
SPANS = 2

SETTING_HEADER = "x-bench-setting"
CPU_HEADER = "x-bench-cpu"


class Switching:
    """The served app, switched to the setting each request names (the requests come one at a time); each response
    says the server process's CPU time when its request arrived."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cpu = time.process_time()
        setting = dict(scope["headers"]).get(SETTING_HEADER.encode(), b"off").decode()
        use(setting)

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (CPU_HEADER.encode(), repr(cpu).encode())]
            await send(message)

        await serve(setting, lambda: self.app(scope, receive, stamped))


def serve_example(port: int) -> None:
    """The ``--serve`` child: the example server under uvicorn on 127.0.0.1:``port``, until SIGINT."""
    import uvicorn

    with contextlib.ExitStack() as stack:
        app = Switching(example_app(stack))
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises the SIGINT again once it has shut down
            uvicorn.Server(config).run()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure_served(body: bytes, requests: int) -> dict[str, tuple[float, float]]:
    """Median wall time (client) and server CPU of one /v1/completions request over HTTP, per setting."""
    import httpx

    port = _free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], cwd=REPO)
    settings = SETTINGS + IN_SERVER
    walls: dict[str, list[float]] = {setting: [] for setting in settings}
    cpus: dict[str, list[float]] = {setting: [] for setting in settings}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 600
            while True:  # the server builds its models' environments on its first run
                if server.poll() is not None:
                    raise SystemExit(f"the benchmark's server exited with {server.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("the benchmark's server did not answer /health within 600 s")
                time.sleep(0.2)
            headers = {setting: {"content-type": "application/json", SETTING_HEADER: setting} for setting in settings}
            previous: tuple[str, float, bool] | None = None  # (setting, server CPU at its arrival, kept)
            for i in range(counted(requests) // (RUN - 1) + 10):  # the first 10 rounds warm up
                turn = i % len(settings)
                for setting in settings[turn:] + settings[:turn]:
                    for kept in (False, *(i >= 10,) * (RUN - 1)):  # (see RUN)
                        start = time.perf_counter()
                        response = client.post("/v1/completions", content=body, headers=headers[setting])
                        wall = time.perf_counter() - start
                        assert response.status_code == 200, response.text
                        cpu = float(response.headers[CPU_HEADER])
                        if kept:
                            walls[setting].append(wall)
                        if previous is not None and previous[2]:
                            cpus[previous[0]].append(cpu - previous[1])
                        previous = (setting, cpu, kept)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {s: (statistics.median(walls[s]), statistics.median(cpus[s])) for s in settings}


def tracer_providers() -> dict[str, TracerProvider]:
    """The settings' providers (a 1% and a 100% one), filling :data:`TRACERS`, :data:`SERVER_TRACERS` and
    :data:`FLUSHES`."""
    providers = {
        "1%": TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01))),
        "100%": TracerProvider(),
    }
    for rate, provider in providers.items():
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
        TRACERS[f"tracing {rate}"] = TRACERS[f"server {rate}, ours on"] = provider.get_tracer("autoglm_runtime")
        server = provider.get_tracer("server")
        SERVER_TRACERS[f"server {rate}, ours off"] = SERVER_TRACERS[f"server {rate}, ours on"] = server
        FLUSHES[f"tracing {rate}"] = provider.force_flush
    return providers


def main() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    providers = tracer_providers()
    if sys.argv[1:2] == ["--serve"]:
        serve_example(int(sys.argv[2]))
        return
    sections = {1, 2, 3, 4}
    if sys.argv[1:2] == ["--sections"]:
        sections = {int(part) for part in sys.argv[2].split(",")}
    if 1 in sections:
        guard_only()
    if sections & {2, 4}:
        body = example_sections(sections)
    if 3 in sections:
        costs = model_call_cost()
        print("3. LoadedModel.call / .stream: what metrics, span and traceparent add (the call itself is not run)")
        for setting in SETTINGS:
            call, stream = costs[setting]
            print(f"    {setting:<22} call {call:7.2f} us   stream {stream:7.2f} us")
    if 4 in sections:
        print(
            "4. The example server under uvicorn (its own process, 127.0.0.1), driven over one keep-alive connection by"
        )
        print(f"   httpx; the same /v1/completions request, the settings alternating in runs of {RUN} requests")
        served = measure_served(body, 1500)
        print(f"  wall time at the client (median of {counted(1500)})")
        report({setting: wall for setting, (wall, _) in served.items()}, spans=SPANS)
        print(f"  server process CPU (median of {counted(1500)}; the model worker's CPU is not in it)")
        report({setting: cpu for setting, (_, cpu) in served.items()}, spans=SPANS)
    for provider in providers.values():
        provider.shutdown()


def guard_only() -> None:
    """Section 1."""
    rng = random.Random(7)
    raw, words = build_tokenizer(rng)
    guarded = ValidationMiddleware(app, context_guard=ContextWindowGuard(HFTokenizer(raw), 16_384))
    print(f"tokenizer: byte-level BPE, vocab {raw.get_vocab_size()}; requests called directly on the ASGI app")
    print(f"1. Guard only: CPU per request (process time, median; the settings alternate in runs of {RUN} requests)")
    with guarded:
        for tokens, requests in ((50, 2000), (1000, 1000), (8000, 200)):
            body = json.dumps({"prompt": prompt_of(raw, words, tokens, rng), "max_tokens": 256}).encode()
            asyncio.run(measure(guarded, body, 20))  # warm up
            print(f"  {tokens}-token prompt (median of {counted(requests)})")
            report(asyncio.run(measure(guarded, body, requests)), spans=1)


def example_sections(sections: set[int]) -> bytes:
    """Section 2 (when asked for); returns the example request's body, which section 4 sends too."""
    prompt = " ".join((REPO / "examples" / "model_server" / "corpus.txt").read_text().split()[:12])
    body = json.dumps({"model": "words-numpy1", "prompt": prompt, "max_tokens": 16, "temperature": 0}).encode()
    if 2 not in sections:
        return body
    print("2. The example server's whole /v1/completions request (its app called directly: both guard layers,")
    print("   routing, a real call to the words-numpy1 worker; ~30 tokens in, 16 out), per request")
    with contextlib.ExitStack() as stack:
        example = example_app(stack)
        asyncio.run(measure_full(example, body, 10))  # warm up
        full = asyncio.run(measure_full(example, body, 1000))
    print(f"  wall time (median of {counted(1000)})")
    report({setting: wall for setting, (wall, _) in full.items()}, spans=SPANS)
    print(f"  host CPU (median of {counted(1000)}; the worker's CPU is not in it)")
    report({setting: cpu for setting, (_, cpu) in full.items()}, spans=SPANS)
    return body


if __name__ == "__main__":
    main()
