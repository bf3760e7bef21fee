"""In other interpreters: without the extras nothing is recorded, and prometheus_client's multiprocess mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run(code: str, env: dict[str, str] | None = None) -> object:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_without_the_extras_the_guards_work_and_the_exporters_say_what_to_install() -> None:
    out = run(
        """
        import json, sys
        sys.modules["prometheus_client"] = None  # as if neither extra were installed
        sys.modules["opentelemetry"] = None
        from autoglm_runtime.errors import AutoGLMRuntimeError
        from autoglm_runtime.observability import ConfigMetrics, metrics_available, tracing_available
        from autoglm_runtime.validation import CallableTokenizer, ContextWindowGuard, guarded

        @guarded(ContextWindowGuard(CallableTokenizer(lambda t: list(t.encode())), 10, message_tokens=0))
        def generate(prompt, max_tokens=1):
            return prompt

        try:
            generate("x" * 50)
        except AutoGLMRuntimeError as exc:
            rejected = exc.code
        try:
            ConfigMetrics(object())
        except AutoGLMRuntimeError as exc:
            refused = exc.message
        loaded = sorted(m for m in sys.modules if m.startswith(("prometheus_client.", "opentelemetry.")))
        print(json.dumps([metrics_available(), tracing_available(), generate("ok"), rejected, refused, loaded]))
        """
    )
    assert out == [
        False,
        False,
        "ok",
        "E0513",
        "metrics need prometheus-client: install autoglm-runtime[metrics] (or pip install prometheus-client)",
        [],
    ]


def test_multiprocess_mode_mirrors_health_into_the_shared_files(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "p").mkdir(parents=True)
    (config / "p" / "a").write_text("1")
    (config / "p" / "b").write_text("{bad")
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = f"""
        import json, os, threading
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from autoglm_runtime import ConfigClient
        from autoglm_runtime.observability import ConfigMetrics
        from autoglm_runtime.validation import CallableTokenizer, ContextWindowGuard, guarded

        @guarded(ContextWindowGuard(CallableTokenizer(lambda t: list(t.encode())), 10, message_tokens=0))
        def generate(prompt, max_tokens=1):
            return prompt

        with ConfigClient("file://{config}", "/p") as client:
            exporter = ConfigMetrics(client, interval=60)
            exporter.start()
            generate("ok")
            exporter.stop()  # mirrors once more
            threads = [t.name for t in threading.enumerate() if t.name.startswith("autoglm-metrics")]
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        values = {{
            s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in registry.collect() for s in family.samples
            if s.name.startswith(("autoglm_config_keys", "autoglm_config_updates_rejected_total",
                                  "autoglm_config_drift_corrected_total",
                                  "autoglm_guard_check_duration_seconds_count"))
        }}
        print(json.dumps([threads, values, os.getpid()]))
    """
    threads, values, pid = run(code, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})  # type: ignore[misc]
    assert threads == []  # stop() ended the mirror thread
    assert values == {
        # Gauges carry the writing process's pid (mode liveall); counters are summed over processes.
        f'autoglm_config_keys{{"pid": "{pid}", "root": "/p"}}': 1.0,
        'autoglm_config_updates_rejected_total{"code": "E0409", "reason": "decode", "root": "/p"}': 1.0,
        'autoglm_config_updates_rejected_total{"code": "E0409", "reason": "validator", "root": "/p"}': 0.0,
        # Counters still at 0 are in the files too: the alert rules' increase() needs them before the first event.
        'autoglm_config_drift_corrected_total{"root": "/p"}': 0.0,
        'autoglm_guard_check_duration_seconds_count{"surface": "decorator"}': 1.0,
    }


def test_no_span_is_started_until_the_application_sets_a_provider_and_then_every_call_has_one() -> None:
    out = run(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from autoglm_runtime.observability import ModelCall, _tracing

        proxy = _tracing.tracer()
        started = []
        real_start = proxy.start_span
        proxy.start_span = lambda *a, **k: started.append(a[0]) or real_start(*a, **k)
        with ModelCall("m", "echo"):
            before = _tracing.current_ids()
        unset = list(started)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with ModelCall("m", "echo"):
            inside = _tracing.current_ids()
        spans = exporter.get_finished_spans()
        print(json.dumps({
            "unset": unset, "before": before, "started": started, "inside": inside is not None,
            "spans": [(s.name, dict(s.attributes)) for s in spans],
        }))
        """
    )
    assert out == {
        "unset": [],
        "before": None,
        "started": ["autoglm.model.call"],
        "inside": True,
        "spans": [["autoglm.model.call", {"autoglm.model.name": "m", "autoglm.model.method": "echo"}]],
    }
