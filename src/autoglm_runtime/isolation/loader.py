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

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from packaging.specifiers import SpecifierSet

from autoglm_runtime.deps.manifest import ModelManifest, load_manifest
from autoglm_runtime.deps.planning import ModelRequirements, Plan, plan_groups
from autoglm_runtime.errors import BackendUnsupportedError, EnvironmentBuildError, IsolationError, UsageError
from autoglm_runtime.isolation.envs._use import EnvironmentHold, hold_environment
from autoglm_runtime.isolation.envs.build import BuildProgress, BuiltEnvironment, EnvironmentBuilder, Installer
from autoglm_runtime.isolation.workers.process import WorkerHealth, WorkerProcess, WorkerSpec
from autoglm_runtime.isolation.workers.subinterp import Backend, resolve_backend
from autoglm_runtime.observability import ModelCall

__all__ = ["LoadedModel", "ModelHealth", "ModelLoader"]

_log = logging.getLogger("autoglm_runtime.isolation.loader")


class ModelHealth(WorkerHealth):
    """What :meth:`LoadedModel.health` returns (and :meth:`ModelLoader.health` maps by model name).

    A ``dict`` at run time, JSON-ready: ``json.dumps(loader.health())`` works as is. The keys of
    :class:`~autoglm_runtime.isolation.workers.process.WorkerHealth` (``state``, ``pid``, ``restarts``,
    ``last_exit``, ``backend``, ``failures``) plus:

    * ``env`` (str): the key of the model's environment (the directory name under ``env_root``).
    """

    env: str


class LoadedModel:
    """A handle on one loaded model; calls run in its worker, in its own environment."""

    def __init__(
        self,
        manifest: ModelManifest,
        environment: BuiltEnvironment,
        worker: WorkerProcess,
        default_timeout: float | None,
        on_close: Callable[[LoadedModel], None],
    ) -> None:
        self.manifest = manifest
        self.environment = environment
        self._worker = worker
        self._default_timeout = default_timeout
        self._on_close = on_close

    @property
    def name(self) -> str:
        """The model's name from its manifest."""
        return self.manifest.name

    @property
    def backend(self) -> str:
        """The backend actually in use: ``"process"`` or ``"subinterp"``."""
        return self._worker.spec.backend

    @property
    def versions(self) -> Mapping[str, Mapping[str, str]]:
        """From the worker's handshake: distribution -> ``{"version", "location"}`` for what it imported."""
        return self._worker.versions

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``model.<method>(*args, **kwargs)`` in the worker; ``timeout`` (s) defaults to the loader's.

        Raises :class:`ModelTimeoutError` (E0305) past the timeout, :class:`WorkerError` (E0103) when the
        worker died or crash-loops, :class:`ModelCallError` when the model raised. Each call is counted in
        ``autoglm_worker_calls_total`` by outcome, timed, and traced as an ``autoglm.model.call`` span.
        """
        effective = self._default_timeout if timeout is None else timeout
        with ModelCall(self.manifest.name, method):
            return self._worker.call(method, *args, timeout=effective, **kwargs)

    def health(self) -> ModelHealth:
        """The worker's real state and the model's environment: a new :class:`ModelHealth` dict.

        ``state`` (starting|ready|restarting|dead|failed), ``pid``, ``restarts``, ``last_exit``,
        ``backend``, ``failures`` and ``env``.
        """
        worker = self._worker.health()
        return ModelHealth(
            state=worker["state"],
            pid=worker["pid"],
            restarts=worker["restarts"],
            last_exit=worker["last_exit"],
            backend=worker["backend"],
            failures=worker["failures"],
            env=self.environment.key,
        )

    def close(self) -> None:
        """Stop this model's worker and forget it in its loader (idempotent; a newer model loaded under the
        same name is not affected)."""
        self._worker.close()
        self._on_close(self)

    def __repr__(self) -> str:
        return f"<LoadedModel {self.name!r} backend={self.backend} env={self.environment.key}>"


class ModelLoader:
    """Loads models into per-requirement-set environments and supervises their workers.

    ``env_root`` holds the environments; ``wheelhouse`` (a directory of wheels) and ``offline`` choose where
    packages come from (``offline=True`` with a wheelhouse installs with ``--no-index --find-links``);
    ``index_url`` overrides the index. ``python`` is the interpreter environments are built for (the running
    one by default). ``backend`` is ``"process"``, ``"subinterp"`` or ``"auto"`` (subinterpreters where the
    environment's interpreter supports them, else -- and whenever a model fails to load in one -- processes).
    ``default_timeout`` (s) bounds every ``call`` given no timeout of its own; ``None`` lets such calls wait
    for ever, and then one call to a hung model blocks every later call to it.
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
    ) -> None:
        if backend not in ("auto", "process", "subinterp"):
            raise UsageError(f"backend must be 'auto', 'process' or 'subinterp', got {backend!r}")
        if default_timeout is not None and not default_timeout > 0:
            raise UsageError(f"default_timeout must be a positive number of seconds or None, got {default_timeout!r}")
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
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
        self._loading: set[str] = set()
        self._starting: set[WorkerProcess] = set()  # workers of loads in flight: close() stops them too
        self._holds: dict[LoadedModel, EnvironmentHold] = {}  # keeps ``env gc`` off the models' environments
        self._shared: dict[str, ModelManifest] = {}  # model name -> the manifest of its group's environment
        self._closed = False

    @property
    def models(self) -> Mapping[str, LoadedModel]:
        """The loaded models by name."""
        with self._lock:
            return dict(self._models)

    def load(
        self, path_or_manifest: str | os.PathLike[str] | ModelManifest, *, backend: Backend | None = None
    ) -> LoadedModel:
        """Load a model (a directory with ``model.toml``, a manifest path or a :class:`ModelManifest`).

        Raises :class:`UsageError` when a model of that name is already loaded, :class:`EnvironmentBuildError`
        or :class:`DependencyConflictError` (E0101) when its environment cannot be built or fails the check,
        :class:`ModelLoadError` when its entrypoint fails, :class:`BackendUnsupportedError` (E0104) when
        ``backend="subinterp"`` cannot run it, and :class:`UsageError` when the loader is (or gets) closed
        before the model is loaded.
        """
        manifest = (
            path_or_manifest if isinstance(path_or_manifest, ModelManifest) else load_manifest(Path(path_or_manifest))
        )
        with self._lock:
            self._check_open()
            if manifest.name in self._models or manifest.name in self._loading:
                raise UsageError(f"a model named '{manifest.name}' is already loaded; close it first")
            self._loading.add(manifest.name)
        hold: EnvironmentHold | None = None
        try:
            environment, hold = self._ensure_held(manifest)
            worker = self._start_worker(manifest, environment, backend or self.backend)
            model = LoadedModel(manifest, environment, worker, self._default_timeout, self._forget)
            with self._lock:
                self._starting.discard(worker)  # in the same step as registering: close() sees it in one place
                registered = not self._closed
                if registered:
                    self._models[manifest.name] = model
                    self._holds[model], hold = hold, None
            if not registered:  # closed after the worker started: close() stopped it, or is stopping it now
                worker.close()
                raise UsageError(_closed_while_loading(manifest.name))
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
        """Opt in to one environment per group of ``models`` that can share one, instead of one per
        requirement set; returns the plan (:func:`~autoglm_runtime.deps.planning.plan_groups`, greedy).

        Each group's environment holds the union of its members' requirements (markers judged for the
        running interpreter), so loading any member builds or reuses the group's environment. Models left out,
        or whose requirements contradict themselves, keep an environment of their own.

        >>> plan = loader.share_environments(["models/a", "models/b", "models/c"])   # doctest: +SKIP
        >>> plan.groups                                                             # doctest: +SKIP
        (('a', 'c'), ('b',))
        """
        manifests = [m if isinstance(m, ModelManifest) else load_manifest(Path(m)) for m in models]
        plan = plan_groups([ModelRequirements(m.name, m.requirements, m.python) for m in manifests])
        by_name = {m.name: m for m in manifests}
        shared: dict[str, ModelManifest] = {}
        for group in plan.groups:
            members = [by_name[n] for n in group]
            if len(members) > 1:
                merged = _group_manifest(members)
                shared.update(dict.fromkeys(group, merged))
        with self._lock:
            self._shared.update(shared)
        return plan

    def _ensure_held(self, manifest: ModelManifest) -> tuple[BuiltEnvironment, EnvironmentHold]:
        """The model's environment, held in use; built again should a collection remove it meanwhile."""
        with self._lock:
            manifest = self._shared.get(manifest.name, manifest)
        for _ in range(3):
            environment = self.builder.ensure(manifest)
            hold = hold_environment(environment.path)
            if hold is not None:
                return environment, hold
        raise EnvironmentBuildError(
            f"the environment of model '{manifest.name}' at {environment.path} was removed three times while it "
            "was being loaded; stop the process that keeps collecting it (autoglm-runtime env gc), then load again"
        )

    def _start_worker(
        self, manifest: ModelManifest, environment: BuiltEnvironment, requested: Backend
    ) -> WorkerProcess:
        first = resolve_backend(requested, environment.interpreter)
        spec = WorkerSpec(manifest.name, str(environment.python), str(manifest.directory), manifest.entrypoint, first)
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
            return self._run_worker(WorkerSpec(spec.name, spec.python, spec.model_dir, spec.entrypoint, "process"))
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

    def close(self) -> None:
        """Stop every worker, also those of loads in flight (idempotent); afterwards no worker process of this
        loader is alive, and loads in flight raise :class:`UsageError`."""
        with self._lock:
            self._closed = True
            workers = [model._worker for model in self._models.values()] + list(self._starting)
            self._models.clear()
            self._starting.clear()
            holds = list(self._holds.values())
            self._holds.clear()
        for worker in workers:
            worker.close()
        for hold in holds:  # after the workers: none of them runs from an environment a collection may remove
            hold.release()

    def __enter__(self) -> ModelLoader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _group_manifest(members: Sequence[ModelManifest]) -> ModelManifest:
    """The manifest a group's environment is built from: every member's requirements, once each."""
    requirements = tuple(dict.fromkeys(r for m in members for r in m.requirements))
    pythons = [str(m.python) for m in members if m.python is not None]
    return replace(
        members[0],
        name="+".join(sorted(m.name for m in members)),
        requirements=requirements,
        python=SpecifierSet(",".join(pythons)) if pythons else None,
        included_files=tuple(dict.fromkeys(p for m in members for p in m.included_files)),
    )


def _closed_while_loading(name: str) -> str:
    return f"model '{name}' was not loaded: the ModelLoader was closed while it was loading"
