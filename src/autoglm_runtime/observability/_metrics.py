"""The event metrics (counters and histograms moved where things happen), on prometheus_client's default registry.

Created on first use, once per process; without ``prometheus-client`` (the ``metrics`` extra) every recorder is a
no-op. Counters and histograms work unchanged in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set before the first import of prometheus_client), so these need nothing else in a prefork server.
"""

from __future__ import annotations

import threading
from typing import Any

try:
    import prometheus_client as _prom

    #: Whether ``prometheus-client`` is importable.
    METRICS_AVAILABLE = True
except ImportError:  # the metrics extra is not installed
    METRICS_AVAILABLE = False

__all__ = ["METRICS_AVAILABLE", "EventMetrics", "event_metrics"]


_GUARD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Children:
    """A metric's labelled children by label values: ``metric.labels()`` takes a lock and builds a key per call."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def get(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class EventMetrics:
    """The guards' and model calls' metrics (see docs/operations.md for the list)."""

    def __init__(self, registry: Any) -> None:
        self.guard_rejections = _Children(
            _prom.Counter(
                "autoglm_guard_rejections",
                "Requests a guard rejected, by error code and surface (http, grpc, decorator).",
                ["code", "surface"],
                registry=registry,
            )
        )
        self.guard_truncations = _Children(
            _prom.Counter(
                "autoglm_guard_truncations",
                "Requests a guard truncated to fit the context window (warning E0514).",
                ["surface"],
                registry=registry,
            )
        )
        self.guard_truncated_tokens = _Children(
            _prom.Counter(
                "autoglm_guard_truncated_tokens",
                "Input tokens removed by truncation.",
                ["surface"],
                registry=registry,
            )
        )
        self.guard_duration = _Children(
            _prom.Histogram(
                "autoglm_guard_check_duration_seconds",
                "Time from the start of a request's guard checks to their verdict (on HTTP it includes reading "
                "the body).",
                ["surface"],
                buckets=_GUARD_BUCKETS,
                registry=registry,
            )
        )
        self.model_calls = _Children(
            _prom.Counter(
                "autoglm_worker_calls",
                "Calls to isolated models, by model and outcome (ok, or the error code).",
                ["model", "outcome"],
                registry=registry,
            )
        )
        self.model_call_duration = _Children(
            _prom.Histogram(
                "autoglm_worker_call_duration_seconds",
                "Duration of calls to isolated models, whatever their outcome, as the caller saw it.",
                ["model"],
                buckets=_CALL_BUCKETS,
                registry=registry,
            )
        )


_lock = threading.Lock()
_metrics: EventMetrics | None = None


def event_metrics() -> EventMetrics | None:
    """The process's event metrics on the default registry (created on first call), or ``None`` without
    prometheus_client."""
    global _metrics
    if _metrics is not None or not METRICS_AVAILABLE:
        return _metrics
    with _lock:
        if _metrics is None:
            _metrics = EventMetrics(_prom.REGISTRY)
    return _metrics
