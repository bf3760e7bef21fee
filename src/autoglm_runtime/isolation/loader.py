"""Loading models isolated from each other: one environment per requirement set, one worker per model.

>>> from autoglm_runtime.isolation import ModelLoader
>>> with ModelLoader(env_root="/var/lib/autoglm/envs", wheelhouse="wheels/", offline=True) as loader:  # doctest: +SKIP
...     a = loader.load("models/a")     # conflictlib==1.0
...     b = loader.load("models/b")     # conflictlib==2.0, side by side
...     a.call("predict", {"text": "hi"}, timeout=5.0)

``load`` builds (or reuses) the model's environment, checks it with check-deps after a build, starts a
worker with the environment's interpreter and waits for its handshake. ``close`` stops every worker, also
those still loading; no worker process survives it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from autoglm_runtime.deps.manifest import ModelManifest, load_manifest
from autoglm_runtime.deps.planning import Plan
from autoglm_runtime.errors import (
    BackendUnsupportedError,
    EnvironmentBuildError,
    IsolationError,
    UsageError,
)
from autoglm_runtime.isolation._groups import SharedEnvironments
from autoglm_runtime.isolation._options import check_loader_options
from autoglm_runtime.isolation.envs._use import EnvironmentHold, hold_environment
from autoglm_runtime.isolation.envs.build import BuildProgress, BuiltEnvironment, EnvironmentBuilder, Installer
from autoglm_runtime.isolation.model import LoadedModel, ModelHealth
from autoglm_runtime.isolation.workers import _forks
from autoglm_runtime.isolation.workers.pool import ReplicaPool
from autoglm_runtime.isolation.workers.process import Concurrency, WorkerProcess, WorkerSpec
from autoglm_runtime.isolation.workers.serving import read_serving
from autoglm_runtime.isolation.workers.subinterp import Backend, resolve_backend

__all__ = ["LoadedModel", "ModelHealth", "ModelLoader"]

_log = logging.getLogger("autoglm_runtime.isolation.loader")


class ModelLoader:
    """Loads models into per-requirement-set environments and supervises their workers.

    ``env_root`` holds the environments; ``wheelhouse`` (a directory of wheels) and ``offline`` choose where
    packages come from (``offline=True`` with a wheelhouse installs with ``--no-index --find-links``);
    ``index_url`` overrides the index. ``python`` is the interpreter environments are built for (the running
    one by default). ``backend`` is ``"process"``, ``"subinterp"`` or ``"auto"`` (subinterpreters where the
    environment's interpreter supports them, else -- and whenever a model fails to load in one -- processes).
    ``default_timeout`` (s) bounds every ``call`` given no timeout of its own (for streams: each chunk);
    ``None`` lets such calls wait for ever. ``heartbeat_interval`` (s; ``None`` turns heartbeats off) and
    ``heartbeat_timeout`` (s) bound how long a hung worker goes unnoticed between calls: it is killed and
    restarted between ``heartbeat_timeout`` and ``heartbeat_timeout + 1.25 * heartbeat_interval`` s after its
    last answer. ``retry_after`` and ``max_retry_after`` (s) bound what :class:`ModelOverloadedError` tells callers to
    wait (whole seconds, never below 1, reckoned from the queue ahead, the replicas, how long recent calls took and
    how long the calls running still have to run).
    ``unread_timeout`` (s; ``None``: never) closes a stream whose consumer left a chunk unread that long, giving its
    replica back (its worker is restarted should the model's current step not return within that time more).
    """

    def __init__(  # noqa: PLR0917 - the documented call takes these six positionally
        self,
        env_root: str | os.PathLike[str],
        wheelhouse: str | os.PathLike[str] | None = None,
        offline: bool = False,
        backend: Backend = "auto",
        python: str | os.PathLike[str] | None = None,
        index_url: str | None = None,
        *,
        installer: Installer = "auto",
        progress: BuildProgress | None = None,
        check: bool = True,
        default_timeout: float | None = 60.0,
        start_timeout: float = 120.0,
        max_restarts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        heartbeat_interval: float | None = 5.0,
        heartbeat_timeout: float = 30.0,
        retry_after: float = 1.0,
        unread_timeout: float | None = 300.0,
        max_retry_after: float = 60.0,
    ) -> None:
        check_loader_options(
            backend=backend,
            default_timeout=default_timeout,
            start_timeout=start_timeout,
            max_restarts=max_restarts,
            backoff=backoff,
            max_backoff=max_backoff,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            retry_after=retry_after,
            unread_timeout=unread_timeout,
            max_retry_after=max_retry_after,
        )
        self.builder = EnvironmentBuilder(
            env_root,
            python=python,
            wheelhouse=wheelhouse,
            offline=offline,
            index_url=index_url,
            installer=installer,
            progress=progress,
            check=check,
        )
        self.backend: Backend = backend
        self._default_timeout = default_timeout
        self._worker_options: dict[str, Any] = {
            "start_timeout": start_timeout,
            "max_restarts": max_restarts,
            "backoff": backoff,
            "max_backoff": max_backoff,
        }
        self._pool_options: dict[str, Any] = {
            "heartbeat_interval": heartbeat_interval,
            "heartbeat_timeout": heartbeat_timeout,
            "retry_after": retry_after,
            "max_retry_after": max_retry_after,
            "unread_timeout": unread_timeout,
        }
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
        self._loading: set[str] = set()
        self._starting: set[WorkerProcess] = set()  # workers of loads in flight: close() stops them too
        self._holds: dict[LoadedModel, EnvironmentHold] = {}  # keeps ``env gc`` off the models' environments
        self._groups = SharedEnvironments(self.builder)
        self._closed = False
        _forks.track(self)

    def forget_parent(self) -> None:
        """(In a forked child, see ``workers/_forks.py``) loads in flight in the parent are the parent's: their
        threads do not run here, and their names are free to load in the child."""
        self._lock = threading.Lock()
        self._groups.forget_parent()
        self._loading.clear()
        self._starting.clear()

    @property
    def models(self) -> Mapping[str, LoadedModel]:
        """The loaded models by name."""
        with self._lock:
            return dict(self._models)

    def load(
        self,
        path_or_manifest: str | os.PathLike[str] | ModelManifest,
        *,
        backend: Backend | None = None,
        replicas: int | None = None,
        max_inflight: int | None = None,
        concurrency: Concurrency | None = None,
        max_queue: int | None = None,
    ) -> LoadedModel:
        """Load a model (a directory with ``model.toml``, a manifest path or a :class:`ModelManifest`).

        ``replicas``, ``max_inflight``, ``concurrency`` and ``max_queue`` override the manifest's ``[serving]``
        table (see :mod:`~autoglm_runtime.isolation.workers.serving`); a bad value raises :class:`ManifestError`.

        Raises :class:`UsageError` when a model of that name is already loaded, :class:`EnvironmentBuildError`
        or :class:`DependencyConflictError` (E0101) when its environment cannot be built or fails the check,
        :class:`ModelLoadError` when its entrypoint fails, :class:`BackendUnsupportedError` (E0104) when
        ``backend="subinterp"`` cannot run it, and :class:`UsageError` when the loader is (or gets) closed
        before the model is loaded.
        """
        manifest = (
            path_or_manifest if isinstance(path_or_manifest, ModelManifest) else load_manifest(Path(path_or_manifest))
        )
        serving = read_serving(manifest.source).with_overrides(
            f"load('{manifest.name}')",
            replicas=replicas,
            max_inflight=max_inflight,
            concurrency=concurrency,
            max_queue=max_queue,
        )
        with self._lock:
            self._check_open()
            if manifest.name in self._models or manifest.name in self._loading:
                raise UsageError(f"a model named '{manifest.name}' is already loaded; close it first")
            self._loading.add(manifest.name)
        hold: EnvironmentHold | None = None
        try:
            environment, hold = self._ensure_held(manifest)
            first = self._start_worker(
                manifest, environment, backend or self.backend, serving.concurrency, serving.max_inflight
            )
            workers = [first]
            try:
                workers += [self._run_worker(first.spec) for _ in range(serving.replicas - 1)]
            except BaseException:
                for worker in workers:
                    worker.close()
                    with self._lock:
                        self._starting.discard(worker)
                raise
            pool = ReplicaPool(
                manifest.name,
                workers,
                max_inflight=serving.max_inflight,
                max_queue=serving.max_queue,
                **self._pool_options,
            )
            model = LoadedModel(manifest, environment, pool, serving, self._default_timeout, self._forget)
            with self._lock:
                self._starting.difference_update(workers)  # in the same step as registering: close() sees them
                registered = not self._closed
                if registered:
                    self._models[manifest.name] = model
                    self._holds[model], hold = hold, None
            if not registered:  # closed after the workers started: close() stopped them, or is stopping them now
                pool.close()
                raise UsageError(_closed_while_loading(manifest.name))
            pool.start()
        finally:
            if hold is not None:
                hold.release()
            with self._lock:
                self._loading.discard(manifest.name)
        _log.info(
            "model %s loaded (env %s, %s backend, pid %s)",
            manifest.name,
            environment.key,
            model.backend,
            model.health()["pid"],
        )
        return model

    def share_environments(self, models: Sequence[str | os.PathLike[str] | ModelManifest]) -> Plan:
        """Opt in to one environment per group of ``models`` whose direct requirements can share one, instead of
        one per requirement set; returns the plan (:func:`~autoglm_runtime.deps.planning.plan_groups`, greedy).

        Each group's environment holds the union of its members' requirements (markers judged for the
        running interpreter), so loading any member builds or reuses the group's environment. Models left out,
        or whose requirements contradict themselves, keep an environment of their own, and so do the members of
        a group whose environment cannot be built (what their requirements pull in clashes): a warning says so.

        >>> plan = loader.share_environments(["models/a", "models/b", "models/c"])   # doctest: +SKIP
        >>> plan.groups                                                             # doctest: +SKIP
        (('a', 'c'), ('b',))
        """
        return self._groups.plan(models)

    def _ensure_held(self, manifest: ModelManifest) -> tuple[BuiltEnvironment, EnvironmentHold]:
        """The model's environment, held in use; built again should a collection remove it meanwhile."""
        for _ in range(3):
            environment = self._groups.ensure(manifest)
            hold = hold_environment(environment.path)
            if hold is not None:
                return environment, hold
        raise EnvironmentBuildError(
            f"the environment of model '{manifest.name}' at {environment.path} was removed three times while it "
            "was being loaded; stop the process that keeps collecting it (autoglm-runtime env gc), then load again"
        )

    def _start_worker(
        self,
        manifest: ModelManifest,
        environment: BuiltEnvironment,
        requested: Backend,
        concurrency: Concurrency,
        max_inflight: int,
    ) -> WorkerProcess:
        first = resolve_backend(requested, environment.interpreter)
        spec = WorkerSpec(
            manifest.name,
            str(environment.python),
            str(manifest.directory),
            manifest.entrypoint,
            first,
            concurrency,
            max_inflight,
        )
        try:
            return self._run_worker(spec)
        except IsolationError as exc:
            if requested != "auto" or first != "subinterp":
                raise
            refusal = exc
        # Under auto, any failure in a subinterpreter (an extension refusing it, a daemon thread, PyO3 or
        # numpy's own guards, or reasons nobody listed yet) earns a second try in a plain process.
        first_line = refusal.message.splitlines()[0]
        _log.warning(
            "model %s failed to load in a subinterpreter (%s); retrying with the process backend",
            manifest.name,
            first_line,
            extra={"error_code": BackendUnsupportedError.code, "model": manifest.name},
        )
        try:
            return self._run_worker(dataclasses.replace(spec, backend="process"))
        except IsolationError as exc:
            note = f"(before that, loading it in a subinterpreter failed too: {refusal.code}: {first_line})"
            raise type(exc)(f"{exc.message}\n{note}") from exc

    def _run_worker(self, spec: WorkerSpec) -> WorkerProcess:
        """A started worker for ``spec``, registered as in flight (the caller unregisters it)."""
        worker = WorkerProcess(spec, **self._worker_options)
        with self._lock:
            self._check_open()
            self._starting.add(worker)
        try:
            worker.start()
        except BaseException as exc:
            with self._lock:
                self._starting.discard(worker)
                closed = self._closed
            if closed and isinstance(exc, IsolationError):  # close() stopped it mid-load
                raise UsageError(_closed_while_loading(spec.name)) from exc
            raise
        return worker

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this ModelLoader is closed; create a new one to load models")

    def _forget(self, model: LoadedModel) -> None:
        with self._lock:
            if self._models.get(model.name) is model:
                del self._models[model.name]
            hold = self._holds.pop(model, None)
        if hold is not None:
            hold.release()

    def health(self) -> dict[str, ModelHealth]:
        """Each loaded model's :meth:`LoadedModel.health`, by name (``{}`` when none is loaded or after
        :meth:`close`). JSON-ready as is."""
        return {name: model.health() for name, model in self.models.items()}

    def close(self, drain_timeout: float | None = None) -> None:
        """Stop every worker, also those of loads in flight (idempotent); afterwards no worker process of this
        loader is alive, and loads in flight raise :class:`UsageError`. With ``drain_timeout`` (s) every model
        first refuses new calls and lets those in flight finish, all within that time."""
        with self._lock:
            self._closed = True
            models = list(self._models.values())
            workers = list(self._starting)
            self._models.clear()
            self._starting.clear()
            holds = list(self._holds.values())
            self._holds.clear()
        draining = [
            threading.Thread(target=model._pool.close, args=(drain_timeout,), name=f"autoglm-model-{model.name}-close")
            for model in models
        ]
        for thread in draining:  # in parallel: one drain deadline for all
            thread.start()
        for worker in workers:
            worker.close()
        for thread in draining:
            thread.join()
        for hold in holds:  # after the workers: none of them runs from an environment a collection may remove
            hold.release()

    def __enter__(self) -> ModelLoader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _closed_while_loading(name: str) -> str:
    return f"model '{name}' was not loaded: the ModelLoader was closed while it was loading"
