"""Metrics (Prometheus) and traces (OpenTelemetry) for the config sync, the guards and the model workers.

Both are optional: with neither ``autoglm-runtime[metrics]`` (prometheus-client) nor ``autoglm-runtime[tracing]``
(opentelemetry-api) installed, nothing is recorded and nothing is imported. With them, the guards and model calls
record as they go (on prometheus_client's default registry; spans on the application's tracer provider), and the
config client's and the loader's health is exported at scrape time by :class:`ConfigMetrics` and
:class:`ModelMetrics`. The metric and span lists are in docs/operations.md::

    from prometheus_client import make_asgi_app
    from autoglm_runtime.observability import ConfigMetrics

    with ConfigMetrics(config_client):
        app = Router([Mount("/metrics", make_asgi_app()), ...])
"""

from __future__ import annotations

from autoglm_runtime._exports import publish as _publish
from autoglm_runtime.observability._events import GuardCheck, ModelCall, ModelStreamCall, Surface
from autoglm_runtime.observability._guard_stream import GuardStream
from autoglm_runtime.observability._metrics import METRICS_AVAILABLE as _METRICS
from autoglm_runtime.observability._tracing import TRACING_AVAILABLE as _TRACING
from autoglm_runtime.observability._tracing import current_ids
from autoglm_runtime.observability.collectors import (
    ConfigMetrics,
    ConfigSource,
    ModelMetrics,
    ModelSource,
    multiprocess_mode,
)

__all__ = [
    "ConfigMetrics",
    "ConfigSource",
    "GuardCheck",
    "GuardStream",
    "ModelCall",
    "ModelMetrics",
    "ModelSource",
    "ModelStreamCall",
    "Surface",
    "current_ids",
    "metrics_available",
    "multiprocess_mode",
    "tracing_available",
]


def metrics_available() -> bool:
    """Whether prometheus-client (the ``metrics`` extra) is installed: without it nothing is counted."""
    return _METRICS


def tracing_available() -> bool:
    """Whether opentelemetry-api (the ``tracing`` extra) is installed: without it no span is made."""
    return _TRACING


_publish(__name__, globals(), __all__)
