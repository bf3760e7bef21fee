"""A loaded model: its replicas behind one handle, called, streamed or awaited (see docs/isolation.md).

>>> for chunk in model.stream("generate", "Once upon", timeout=30):   # doctest: +SKIP
...     print(chunk, end="")
>>> await model.acall("predict", {"text": "hi"}, timeout=5)             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from time import perf_counter
from typing import Any

from autoglm_runtime.deps.manifest import ModelManifest
from autoglm_runtime.isolation._observed import ObservedAsyncStream, ObservedStream
from autoglm_runtime.isolation.envs.build import BuiltEnvironment
from autoglm_runtime.isolation.workers.pool import ReplicaPool
from autoglm_runtime.isolation.workers.process import WorkerHealth
from autoglm_runtime.isolation.workers.serving import ServingOptions
from autoglm_runtime.isolation.workers.streams import AsyncModelStream, ModelStream
from autoglm_runtime.observability import ModelCall, ModelStreamCall
from autoglm_runtime.observability._events import ModelCallMetrics
from autoglm_runtime.observability._tracing import spans_off

__all__ = ["LoadedModel", "ModelHealth"]

_ORDER = ("ready", "restarting", "starting", "dead", "failed")


class ModelHealth(WorkerHealth):
    """What :meth:`LoadedModel.health` returns (and :meth:`ModelLoader.health` maps by model name).

    A ``dict`` at run time, JSON-ready: ``json.dumps(loader.health())`` works as is. The keys of
    :class:`~autoglm_runtime.isolation.workers.process.WorkerHealth`, summed over the replicas (``state``
    is the best replica's: ``ready`` while one serves; ``pid`` and ``backend`` are the first replica's;
    ``last_exit`` the latest failure's), plus:

    * ``env`` (str): the key of the model's environment (the directory name under ``env_root``);
    * ``replicas`` (list): each replica's own health;
    * ``queued`` (int): calls waiting for a free replica;
    * ``max_inflight`` (int), ``max_queue`` (int), ``concurrency`` (str): how the model is served.
    """

    env: str
    replicas: list[WorkerHealth]
    queued: int
    max_inflight: int
    max_queue: int
    concurrency: str


class LoadedModel:
    """A handle on one loaded model; calls run in its workers (``replicas`` of them), in its own environment."""

    def __init__(  # noqa: PLR0917
        self,
        manifest: ModelManifest,
        environment: BuiltEnvironment,
        pool: ReplicaPool,
        serving: ServingOptions,
        default_timeout: float | None,
        on_close: Callable[[LoadedModel], None],
    ) -> None:
        self.manifest = manifest
        self.environment = environment
        self.serving = serving
        self._pool = pool
        self._default_timeout = default_timeout
        self._on_close = on_close
        self._metrics = ModelCallMetrics(manifest.name)

    @property
    def name(self) -> str:
        """The model's name from its manifest."""
        return self.manifest.name

    @property
    def backend(self) -> str:
        """The backend actually in use: ``"process"`` or ``"subinterp"``."""
        return self._pool.workers[0].spec.backend

    @property
    def versions(self) -> Mapping[str, Mapping[str, str]]:
        """From the worker's handshake: distribution -> ``{"version", "location"}`` for what it imported."""
        return self._pool.workers[0].versions

    def _timeout(self, timeout: float | None) -> float | None:
        return self._default_timeout if timeout is None else timeout

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``model.<method>(*args, **kwargs)`` in a worker; ``timeout`` (s) defaults to the loader's.

        Arguments and results are JSON values, bytes/bytearray/memoryview and numpy arrays (docs/isolation.md).
        Raises :class:`ModelTimeoutError` (E0305) past the timeout (the worker is restarted),
        :class:`WorkerError` (E0103) when the worker died or crash-loops, :class:`ModelCallError` (E0105) when
        the model raised, :class:`ModelOverloadedError` (E0106) when every replica is busy and the queue full.
        """
        if not spans_off():
            with ModelCall(self.manifest.name, method):  # counted by outcome, timed and traced (docs/operations.md)
                return self._pool.call(method, args, kwargs, self._timeout(timeout))
        started = perf_counter()  # no span to start: counted and timed as a ModelCall counts them, at less cost
        try:
            result = self._pool.call(method, args, kwargs, self._default_timeout if timeout is None else timeout)
        except BaseException as exc:
            self._metrics.record(started, exc)
            raise
        self._metrics.record(started, None)
        return result

    async def acall(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """:meth:`call` for event loops: awaits the answer without blocking the loop or holding a thread."""
        with ModelCall(self.manifest.name, method):
            return await self._pool.acall(method, args, kwargs, self._timeout(timeout))

    def stream(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> ModelStream:
        """The chunks of ``model.<method>(...)``, a generator (or async generator) method, as they are yielded.

        ``timeout`` bounds the wait for each chunk (idle timeout; E0305 and a restart past it). Close the
        stream (or leave its ``with`` block) to stop early: the generator is closed in the worker. Counted, timed
        and traced from here to its end, like :meth:`call` (outcome ``cancelled`` when stopped early).
        """
        event = ModelStreamCall(self.manifest.name, method)
        try:
            with event.opening():  # the request frame is built now: it carries the stream span's context
                inner = self._pool.stream(method, args, kwargs, self._timeout(timeout))
        except BaseException as exc:  # refused (E0106) or the worker could not be reached
            event.end(exc)
            raise
        return ObservedStream(inner, event)

    def astream(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> AsyncModelStream:
        """:meth:`stream` for ``async for chunk in model.astream(...)``; ``aclose()`` it to stop early."""
        event = ModelStreamCall(self.manifest.name, method)
        try:
            inner = self._pool.astream(method, args, kwargs, self._timeout(timeout))  # reaches a worker on first use
        except BaseException as exc:  # a bad timeout
            event.end(exc)
            raise
        return ObservedAsyncStream(inner, event)

    def health(self) -> ModelHealth:
        """The replicas' real state and the model's environment: a new :class:`ModelHealth` dict."""
        replicas = self._pool.health()
        exits = [r["last_exit"] for r in replicas if r["last_exit"] is not None]
        return ModelHealth(
            state=min((r["state"] for r in replicas), key=_ORDER.index),
            pid=replicas[0]["pid"],
            restarts=sum(r["restarts"] for r in replicas),
            last_exit=exits[-1] if exits else None,
            backend=replicas[0]["backend"],
            failures=max(r["failures"] for r in replicas),
            restart_reasons=_summed(replica["restart_reasons"] for replica in replicas),
            restarted_after=_summed(replica["restarted_after"] for replica in replicas),
            inflight=sum(r["inflight"] for r in replicas),
            env=self.environment.key,
            replicas=replicas,
            queued=self._pool.queued,
            max_inflight=self.serving.max_inflight,
            max_queue=self.serving.max_queue,
            concurrency=self.serving.concurrency,
        )

    def close(self, drain_timeout: float | None = None) -> None:
        """Stop this model's workers and forget it in its loader (idempotent; a newer model loaded under the
        same name is not affected). With ``drain_timeout`` (s), new calls are refused at once while calls in
        flight and queued get that long to finish first."""
        self._pool.close(drain_timeout)
        self._on_close(self)

    def __repr__(self) -> str:
        return f"<LoadedModel {self.name!r} backend={self.backend} env={self.environment.key}>"


def _summed(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The replicas' counts by reason, added up."""
    total: dict[str, int] = {}
    for replica in counts:
        for reason, count in replica.items():
            total[reason] = total.get(reason, 0) + count
    return total
