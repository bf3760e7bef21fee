"""What a start of the example server started that outlives a request (model workers, a local ZooKeeper), and the
line that says, after Ctrl-C or SIGTERM, that they are stopped.

Filled as the start goes; read once everything is closed, from what the parts did and their own state (the
worker processes the stop ended, as the loader logs each, ``model m worker stopped (pid 12)``; whether the
ZooKeeper process runs), so the line says what is true rather than what was meant to happen: a model still loading
at Ctrl-C has its started workers counted, a replica that was not running (dead, given up) is not.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from autoglm_runtime.isolation import LoadedModel
from examples.model_server.store import ConfigStore

#: Where the loader logs each worker process it starts and stops.
WORKERS_LOGGER = "autoglm_runtime.isolation.workers.process"


class WorkerStops(logging.Handler):
    """Counts, by model, the worker processes stopped while ``stopping()`` is true: the loader's INFO lines
    ``model m worker stopped (pid 12)`` (``extra={"model", "pid"}``), one per process it stopped while it ran."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stopping: Callable[[], bool] = lambda: True
        self.stopped: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:  # (under the handler's lock: loader.close stops on threads)
        model, pid = getattr(record, "model", None), getattr(record, "pid", None)
        if not isinstance(model, str) or not isinstance(pid, int) or not self.stopping():
            return
        if record.getMessage() == f"model {model} worker stopped (pid {pid})":
            self.stopped[model] += 1


@dataclass
class Started:
    """The models loaded so far, the config store opened (with its local ZooKeeper, if one was started) and the
    worker processes stopped once the server stops (see :meth:`counting_stops`)."""

    models: list[LoadedModel] = field(default_factory=list)
    store: ConfigStore | None = None
    stops: WorkerStops = field(default_factory=WorkerStops)

    @contextlib.contextmanager
    def counting_stops(self, stopping: Callable[[], bool]) -> Iterator[None]:
        """Within it, count the worker processes stopped while ``stopping()`` is true (the server stops): also
        those a load interrupted by Ctrl-C stops itself. (The workers' logger must let INFO through: the server
        logs at INFO.)"""
        self.stops.stopping = stopping
        logger = logging.getLogger(WORKERS_LOGGER)
        logger.addHandler(self.stops)
        try:
            yield
        finally:
            logger.removeHandler(self.stops)

    def stopped_line(self) -> str | None:
        """``stopped: 3 model workers (chars-numpy2 1, words-numpy1 2) and the local ZooKeeper at HOSTS (...)``
        (``words-numpy1 1 mid-load`` for a model whose load the stop interrupted), naming anything still running
        instead; None when nothing was stopped."""
        stopped: list[str] = []
        loaded = {model.name: model.health()["replicas"] for model in self.models}
        counts = dict(self.stops.stopped)
        total = sum(counts.values())
        if total:
            each = ", ".join(
                f"{name} {count}" + ("" if name in loaded else " mid-load") for name, count in sorted(counts.items())
            )
            stopped.append(f"{total} model worker{'s' if total != 1 else ''} ({each})")
        running = [
            f"model {name} worker pid {replica['pid']}"
            for name, replicas in sorted(loaded.items())
            for replica in replicas
            if replica["pid"] is not None
        ]
        zookeeper = self.store.zookeeper if self.store is not None else None
        if zookeeper is not None and self.store is not None:
            where = f"the local ZooKeeper at {zookeeper.hosts}"
            if zookeeper.running:
                running.append(where)
            else:
                stopped.append(f"{where} (its data stays in {self.store.data})")
        if running:
            return f"still running after the stop: {', '.join(running)}"
        return f"stopped: {' and '.join(stopped)}" if stopped else None
