"""Reading what the SDK recorded: Prometheus samples on the default registry, spans through an in-memory exporter.

OpenTelemetry lets a process set its tracer provider once, so :func:`span_exporter` installs one SDK provider with
an in-memory exporter for the whole test session and hands back the same exporter to every caller.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from autoglm_runtime.testing import fail_in_ci_else_skip

_lock = threading.Lock()
_exporter: InMemorySpanExporter | None = None


def span_exporter() -> InMemorySpanExporter:
    """The session's in-memory span exporter (installed as the global provider's on first call), cleared."""
    global _exporter
    with _lock:
        if _exporter is None:
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            _exporter = exporter
        _exporter.clear()
        return _exporter


def sample(name: str, **labels: str) -> float:
    """The current value of one sample on prometheus_client's default registry (0.0 when it does not exist)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Several samples, read at creation; :meth:`moved` says how much each changed since.

    >>> moved = Delta(("autoglm_guard_rejections_total", {"code": "E0513", "surface": "http"}))
    """

    def __init__(self, *series: tuple[str, dict[str, str]]) -> None:
        self._series = series
        self._before = [sample(name, **labels) for name, labels in series]

    def moved(self) -> dict[str, float]:
        """``"name{k=v,...}" -> change`` for every series given, zero changes included."""
        out: dict[str, float] = {}
        for (name, labels), before in zip(self._series, self._before, strict=True):
            key = name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
            out[key] = sample(name, **labels) - before
        return out


def promtool_check_metrics(exposition: str) -> tuple[int, str]:
    """``promtool check metrics`` on a text exposition: its exit status and output (``(0, "")`` when clean)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        fail_in_ci_else_skip("promtool is not installed: 'apt-get install prometheus' (scripts/test does it as root)")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60, check=False
    )
    return check.returncode, check.stdout + check.stderr
