"""Metrics read from ``health()`` at scrape time: :class:`ConfigMetrics` and :class:`ModelMetrics`.

In one process they are prometheus_client collectors: every scrape calls ``health()`` once, and nothing runs in
between (``ConfigClient.get()`` stays a dict read). In prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set; a prefork server) the scrape reads files the processes wrote and never calls
a collector, so instead a thread per exporter copies ``health()`` into those files every ``interval`` seconds:
values are then up to ``interval`` old, and each gauge carries a ``pid`` label (mode ``liveall``)::

    from autoglm_runtime.observability import ConfigMetrics, ModelMetrics

    with ConfigMetrics(config_client), ModelMetrics(loader):
        serve()   # expose prometheus_client's registry at /metrics
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol

from autoglm_runtime.errors import UsageError
from autoglm_runtime.observability._metrics import METRICS_AVAILABLE
from autoglm_runtime.observability._samples import (
    CONFIG_FAMILIES,
    WORKER_FAMILIES,
    Family,
    Sample,
    config_samples,
    worker_samples,
)

__all__ = ["ConfigMetrics", "ConfigSource", "ModelMetrics", "ModelSource", "multiprocess_mode"]


class ConfigSource(Protocol):
    """What :class:`ConfigMetrics` reads: a :class:`~autoglm_runtime.config.ConfigClient` is one."""

    root: str

    def health(self) -> Mapping[str, Any]: ...


class ModelSource(Protocol):
    """What :class:`ModelMetrics` reads: a :class:`~autoglm_runtime.isolation.ModelLoader` is one."""

    def health(self) -> Mapping[str, Mapping[str, Any]]: ...


def multiprocess_mode() -> bool:
    """Whether prometheus_client runs in multiprocess mode here (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _HealthExporter:
    """Turns samples from a ``health()`` reader into metrics: a collector, or a mirror thread in multiprocess mode."""

    _families: tuple[Family, ...]
    _thread_name: str

    def __init__(self, read: Callable[[], list[Sample]], registry: Any, interval: float, multiprocess: bool | None):
        if not METRICS_AVAILABLE:
            raise UsageError(
                "metrics need prometheus-client: install autoglm-runtime[metrics] (or pip install prometheus-client)"
            )
        if interval <= 0:
            raise UsageError(f"interval must be a positive number of seconds, got {interval}")
        self._read = read
        import prometheus_client

        self._registry = registry if registry is not None else prometheus_client.REGISTRY
        self._interval = interval
        self._multiprocess = multiprocess_mode() if multiprocess is None else multiprocess
        self._lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mirrored: dict[str, Any] = {}
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}

    # --- single process: a collector -------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """The metric families, read now (prometheus_client calls this on every scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        built: dict[str, Any] = {}
        for family in self._families:
            kind = GaugeMetricFamily if family.kind == "gauge" else CounterMetricFamily
            built[family.name] = kind(family.name, family.documentation, labels=family.labels)
        for name, labels, value in self._read():
            built[name].add_metric(labels, value)
        yield from built.values()

    def describe(self) -> list[Any]:
        """Nothing: registering never calls :meth:`collect` (which may be slow before start)."""
        return []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Register with the registry, or in multiprocess mode start the mirror thread (idempotent)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if not self._multiprocess:
                self._registry.register(self)
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._mirror_loop, name=self._thread_name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Unregister, or mirror one last time and stop the thread. Idempotent."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            thread, self._thread = self._thread, None
            if not self._multiprocess:
                self._registry.unregister(self)
        if thread is not None:
            self._stop.set()
            thread.join()

    def __enter__(self) -> _HealthExporter:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- multiprocess: a thread copying health() into the processes' files ------------------------

    def mirror(self) -> None:
        """Copy ``health()`` into the multiprocess metrics once (the thread does this every ``interval``)."""
        for name, labels, value in self._read():
            metric = self._metric(name)
            if metric is None:
                continue
            if name in self._gauges:
                metric.labels(*labels).set(value)
                continue
            key = (name, labels)
            previous = self._last.get(key, 0.0)
            # A smaller count is a new client or worker counting from zero again: all of it is new.
            delta = value - previous if value >= previous else value
            self._last[key] = value
            # The child is made even at 0: it writes the series into the file, so a counter the rules take an
            # increase() of exists before its first event here too, as on the default registry.
            child = metric.labels(*labels)
            if delta > 0:
                child.inc(delta)

    @property
    def _gauges(self) -> frozenset[str]:
        return frozenset(f.name for f in self._families if f.kind == "gauge")

    def _metric(self, name: str) -> Any:
        import prometheus_client as prom

        metric = self._mirrored.get(name)
        if metric is None:
            family = next((f for f in self._families if f.name == name), None)
            if family is None:
                return None
            if family.kind == "gauge":
                metric = prom.Gauge(
                    name, family.documentation, family.labels, registry=None, multiprocess_mode="liveall"
                )
            else:
                metric = prom.Counter(name, family.documentation, family.labels, registry=None)
            self._mirrored[name] = metric
        return metric

    def _mirror_loop(self) -> None:
        while True:
            self.mirror()
            if self._stop.wait(self._interval):
                self.mirror()
                return


class ConfigMetrics(_HealthExporter):
    """A :class:`~autoglm_runtime.config.ConfigClient`'s health as Prometheus metrics, labelled with its root.

    ``registry`` defaults to prometheus_client's; ``multiprocess`` defaults to :func:`multiprocess_mode`;
    ``interval`` (s) paces the mirror thread of multiprocess mode. :meth:`start` / :meth:`stop`, or ``with``.
    """

    _families = CONFIG_FAMILIES
    _thread_name = "autoglm-metrics-config"

    def __init__(
        self, client: ConfigSource, *, registry: Any = None, interval: float = 5.0, multiprocess: bool | None = None
    ) -> None:
        self.client = client
        super().__init__(lambda: config_samples(client.root, client.health()), registry, interval, multiprocess)

    def __enter__(self) -> ConfigMetrics:
        self.start()
        return self


class ModelMetrics(_HealthExporter):
    """A :class:`~autoglm_runtime.isolation.ModelLoader`'s workers as Prometheus metrics (up, starts).

    Call counts and durations need no exporter: :meth:`LoadedModel.call` records them as it goes.
    """

    _families = WORKER_FAMILIES
    _thread_name = "autoglm-metrics-workers"

    def __init__(
        self, loader: ModelSource, *, registry: Any = None, interval: float = 5.0, multiprocess: bool | None = None
    ) -> None:
        self.loader = loader
        super().__init__(lambda: worker_samples(loader.health()), registry, interval, multiprocess)

    def __enter__(self) -> ModelMetrics:
        self.start()
        return self
