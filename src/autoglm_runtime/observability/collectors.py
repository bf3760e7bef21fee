"""Metrics read from ``health()`` at scrape time: :class:`ConfigMetrics` and :class:`ModelMetrics`.

In one process they are prometheus_client collectors: every scrape calls ``health()`` once, and nothing runs in
between (``ConfigClient.get()`` stays a dict read). In prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set; a prefork server) the scrape reads files the processes wrote and never calls
a collector, so instead a thread per exporter copies ``health()`` into those files every ``interval`` seconds:
values are then up to ``interval`` old; the worker gauges carry a ``pid`` label (mode ``liveall``), the config
gauges are one series per root, merged over the live processes (see ``_samples``); the gauges of a process that
ended leave at the next copy any process makes::

    from autoglm_runtime.observability import ConfigMetrics, ModelMetrics

    with ConfigMetrics(config_client), ModelMetrics(loader):
        serve()   # expose prometheus_client's registry at /metrics
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol

from autoglm_runtime._fork import after_fork_in_child
from autoglm_runtime.errors import UsageError
from autoglm_runtime.observability._dead_processes import NOT_EXPORTED, reap_dead_processes
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

_log = logging.getLogger("autoglm_runtime.observability")


class ConfigSource(Protocol):
    """What :class:`ConfigMetrics` reads: a :class:`~autoglm_runtime.config.ConfigClient` is one."""

    root: str

    def health(self) -> Mapping[str, Any]: ...


class ModelSource(Protocol):
    """What :class:`ModelMetrics` reads: a :class:`~autoglm_runtime.isolation.ModelLoader` is one."""

    def health(self) -> Mapping[str, Mapping[str, Any]]: ...


def multiprocess_mode() -> bool:
    """Whether prometheus_client runs in multiprocess mode here: ``PROMETHEUS_MULTIPROC_DIR`` was set when it was
    first imported (it chooses then, once), or the application set its own multiprocess value class."""
    if not METRICS_AVAILABLE:
        return False
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


class _Mirrored:
    """What this process's exporters copied into the multiprocess files, shared by all of them, and the lock they
    copy under (:meth:`_HealthExporter.mirror` is public and the thread calls it too).

    One metric object per name: prometheus_client's file-backed values cache their number per object, so two
    objects of one series would overwrite each other's writes. One last count per source (a client, a loader)
    and counter series: an exporter made again for the same source (after another stopped) adds only what is
    new, not the whole count again, and one for a new source on the same root adds all of that source's count,
    however far past the old one's it already is."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: dict[str, Any] = {}
        self.last: dict[int, dict[tuple[str, tuple[str, ...]], float]] = {}  # by id() of a live source

    def last_counts(self, source: object) -> dict[tuple[str, tuple[str, ...]], float] | None:
        """The last counts copied from ``source``, kept while it lives; ``None`` for a source that cannot be
        weakly referenced (its exporter keeps its own)."""
        counts = self.last.get(id(source))
        if counts is None:
            try:
                weakref.finalize(source, self.last.pop, id(source), None)  # (before its id can be reused)
            except TypeError:
                return None
            counts = self.last[id(source)] = {}
        return counts


_mirrored = _Mirrored()


@after_fork_in_child
def _forget_parent() -> None:
    """In a forked child: its files are its own (empty), and the parent's lock may have been held at the fork."""
    global _mirrored
    _mirrored = _Mirrored()


class _HealthExporter:
    """Turns samples from a ``health()`` reader into metrics: a collector, or a mirror thread in multiprocess mode."""

    _families: tuple[Family, ...]
    _thread_name: str

    def __init__(
        self,
        source: object,
        read: Callable[[], list[Sample]],
        registry: Any,
        interval: float,
        multiprocess: bool | None,
    ):
        if not METRICS_AVAILABLE:
            raise UsageError(
                "metrics need prometheus-client: install autoglm-runtime[metrics] (or pip install prometheus-client)"
            )
        if interval <= 0:
            raise UsageError(f"interval must be a positive number of seconds, got {interval}")
        self._source = source
        self._read = read
        self._own_last: dict[tuple[str, tuple[str, ...]], float] = {}  # (a source without weak references)
        import prometheus_client

        self._registry = registry if registry is not None else prometheus_client.REGISTRY
        self._interval = interval
        self._multiprocess = multiprocess_mode() if multiprocess is None else multiprocess
        self._lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: set[tuple[str, tuple[str, ...]]] = set()  # the series the last mirror wrote
        self._unreaped: set[int] = set()  # ended processes whose files could not be removed (logged once each)
        self._failure: str | None = None  # how the thread's last mirror failed (logged once while it repeats)

    # --- single process: a collector -------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """This exporter's metric families, read now (on a registry, the families of every exporter of its kind
        started there are collected together, each once, on every scrape)."""
        return _families(self._families, [self._read])

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Register with the registry, or in multiprocess mode start the mirror thread (idempotent)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if not self._multiprocess:
                _Shared.join(self)
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
                _Shared.leave(self)
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
        """Copy ``health()`` into the multiprocess metrics once (the thread does this every ``interval``), and
        take the gauges of processes that ended out of the exposition (see ``_dead_processes``)."""
        with _mirrored.lock:
            self._mirror()
            directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            if self._written and directory:
                reap_dead_processes(directory, self._unreaped)

    def _mirror(self) -> None:
        written: set[tuple[str, tuple[str, ...]]] = set()
        last = _mirrored.last_counts(self._source)
        if last is None:
            last = self._own_last
        for name, labels, value in self._read():
            metric = self._metric(name)
            if metric is None:
                continue
            key = (name, labels)
            written.add(key)
            if name in self._gauges:
                metric.labels(*labels).set(value)
                continue
            previous = last.get(key, 0.0)
            # A smaller count is a new client or worker counting from zero again: all of it is new.
            delta = value - previous if value >= previous else value
            last[key] = value
            # The series is written at 0 too (making the child does): one appearing at its first increment
            # would hide that increment from increase() and rate(), and so from the alerting rules.
            child = metric.labels(*labels)
            if delta > 0:
                child.inc(delta)
        # A series gone from health() (a model closed) leaves a single process's exposition; a file cannot drop
        # it, so a gauge becomes NaN (no rule compares it true) and a counter keeps its count, counting anew
        # from zero if the series comes back (the model loaded again).
        for key in self._written - written:
            name, labels = key
            if name in self._gauges:
                self._metric(name).labels(*labels).set(math.nan)
            else:
                last.pop(key, None)
        self._written = written

    @property
    def _gauges(self) -> frozenset[str]:
        return frozenset(f.name for f in self._families if f.kind == "gauge")

    def _metric(self, name: str) -> Any:
        import prometheus_client as prom

        metric = _mirrored.metrics.get(name)
        if metric is None:
            family = next((f for f in self._families if f.name == name), None)
            if family is None:
                return None
            if family.kind == "gauge":
                metric = prom.Gauge(
                    name,
                    family.documentation,
                    family.labels,
                    registry=None,
                    multiprocess_mode=family.multiprocess_mode,
                )
            else:
                metric = prom.Counter(name, family.documentation, family.labels, registry=None)
            _mirrored.metrics[name] = metric
        return metric

    def _mirror_loop(self) -> None:
        while True:
            self._mirror_logged()
            if self._stop.wait(self._interval):
                self._mirror_logged()
                return

    def _mirror_logged(self) -> None:
        """:meth:`mirror` on the thread: a failure is logged (once while it repeats) and the next one tries again."""
        try:
            self.mirror()
        except Exception as exc:  # (health() or a file failing once must not end the exports for good)
            failure = f"{type(exc).__name__}: {exc}"
            if failure != self._failure:
                _log.exception(
                    "%s could not copy health() into the multiprocess metrics files; it tries again every %g s",
                    type(self).__name__,
                    self._interval,
                    extra={"error_code": NOT_EXPORTED},
                )
            self._failure = failure
        else:
            self._failure = None


def _families(families: tuple[Family, ...], reads: list[Callable[[], list[Sample]]]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    built: dict[str, Any] = {}
    for family in families:
        kind = GaugeMetricFamily if family.kind == "gauge" else CounterMetricFamily
        built[family.name] = kind(family.name, family.documentation, labels=family.labels)
    for read in reads:
        for name, labels, value in read():
            built[name].add_metric(labels, value)
    yield from built.values()


class _Shared:
    """The collector of one registry for the started exporters of one kind: each family once, holding the samples
    of all of them (one per client or loader, told apart by their labels). An exporter's own families would repeat
    each metric's HELP line, which makes Prometheus refuse the whole scrape."""

    _lock = threading.Lock()
    _by_key: dict[tuple[int, type], _Shared] = {}  # (id(registry), exporter class); the entry holds the registry

    def __init__(self, registry: Any, families: tuple[Family, ...]) -> None:
        self.registry = registry
        self.families = families
        self.members: list[_HealthExporter] = []

    @classmethod
    def join(cls, exporter: _HealthExporter) -> None:
        key = (id(exporter._registry), type(exporter))
        with cls._lock:
            shared = cls._by_key.get(key)
            if shared is None:
                shared = cls._by_key[key] = _Shared(exporter._registry, exporter._families)
                exporter._registry.register(shared)
            shared.members.append(exporter)

    @classmethod
    def leave(cls, exporter: _HealthExporter) -> None:
        key = (id(exporter._registry), type(exporter))
        with cls._lock:
            shared = cls._by_key.get(key)
            if shared is None or exporter not in shared.members:
                return
            shared.members.remove(exporter)
            if not shared.members:
                del cls._by_key[key]
                shared.registry.unregister(shared)

    def collect(self) -> Iterator[Any]:
        with self._lock:
            reads = [member._read for member in self.members]
        return _families(self.families, reads)

    def describe(self) -> list[Any]:
        """Nothing: registering never calls :meth:`collect` (which may be slow before start)."""
        return []


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
        super().__init__(client, lambda: config_samples(client.root, client.health()), registry, interval, multiprocess)

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
        super().__init__(loader, lambda: worker_samples(loader.health()), registry, interval, multiprocess)

    def __enter__(self) -> ModelMetrics:
        self.start()
        return self
