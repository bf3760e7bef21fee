"""Loading models isolated from each other: one environment per requirement set, one worker per model.

>>> from autoglm_runtime.isolation import ModelLoader
>>> with ModelLoader(env_root="/var/lib/autoglm/envs", wheelhouse="wheels/", offline=True) as loader:  # doctest: +SKIP
...     a = loader.load("models/a")     # conflictlib==1.0
...     b = loader.load("models/b")     # conflictlib==2.0, side by side
...     a.call("predict", {"text": "hi"}, timeout=5.0)

``load`` builds (or reuses) the model's environment, checks it with check-deps after a build, starts a
worker with the environment's interpreter and waits for its handshake. ``close`` stops every worker; no
child process survives it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from autoglm_runtime.errors import BackendUnsupportedError, UsageError
from autoglm_runtime.isolation.envbuild import BuildProgress, Environment, EnvironmentBuilder, Installer
from autoglm_runtime.isolation.manifest import ModelManifest, load_manifest
from autoglm_runtime.isolation.subinterp import Backend, resolve_backend
from autoglm_runtime.isolation.worker import WorkerProcess, WorkerSpec

__all__ = ["LoadedModel", "ModelLoader"]

_log = logging.getLogger("autoglm_runtime.isolation.loader")


class LoadedModel:
    """A handle on one loaded model; calls run in its worker, in its own environment."""

    def __init__(
        self,
        manifest: ModelManifest,
        environment: Environment,
        worker: WorkerProcess,
        default_timeout: float | None,
        on_close: Callable[[str], None],
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
        worker died or crash-loops, :class:`ModelCallError` when the model raised.
        """
        effective = self._default_timeout if timeout is None else timeout
        return self._worker.call(method, *args, timeout=effective, **kwargs)

    def health(self) -> dict[str, Any]:
        """``state`` (starting|ready|restarting|dead|failed), ``pid``, ``restarts``, ``last_exit``, and more."""
        return {**self._worker.health(), "env": self.environment.key}

    def close(self) -> None:
        """Stop this model's worker and forget it in its loader."""
        self._worker.close()
        self._on_close(self.name)

    def __repr__(self) -> str:
        return f"<LoadedModel {self.name!r} backend={self.backend} env={self.environment.key}>"


class ModelLoader:
    """Loads models into per-requirement-set environments and supervises their workers.

    ``env_root`` holds the environments; ``wheelhouse`` (a directory of wheels) and ``offline`` choose where
    packages come from (``offline=True`` with a wheelhouse installs with ``--no-index --find-links``);
    ``index_url`` overrides the index. ``python`` is the interpreter environments are built for (the running
    one by default). ``backend`` is ``"process"``, ``"subinterp"`` or ``"auto"`` (subinterpreters where the
    environment's interpreter supports them, else -- and whenever a model refuses them -- processes).
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
        default_timeout: float | None = None,
        start_timeout: float = 120.0,
        max_restarts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        if backend not in ("auto", "process", "subinterp"):
            raise UsageError(f"backend must be 'auto', 'process' or 'subinterp', got {backend!r}")
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
        ``backend="subinterp"`` cannot run it.
        """
        manifest = (
            path_or_manifest if isinstance(path_or_manifest, ModelManifest) else load_manifest(Path(path_or_manifest))
        )
        with self._lock:
            self._check_open()
            if manifest.name in self._models or manifest.name in self._loading:
                raise UsageError(f"a model named '{manifest.name}' is already loaded; close it first")
            self._loading.add(manifest.name)
        try:
            environment = self.builder.ensure(manifest)
            worker = self._start_worker(manifest, environment, backend or self.backend)
            model = LoadedModel(manifest, environment, worker, self._default_timeout, self._forget)
            with self._lock:
                try:
                    self._check_open()
                except UsageError:
                    worker.close()
                    raise
                self._models[manifest.name] = model
        finally:
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

    def _start_worker(self, manifest: ModelManifest, environment: Environment, requested: Backend) -> WorkerProcess:
        first = resolve_backend(requested, environment.interpreter)
        spec = WorkerSpec(manifest.name, str(environment.python), str(manifest.directory), manifest.entrypoint, first)
        worker = WorkerProcess(spec, **self._worker_options)
        try:
            worker.start()
        except BackendUnsupportedError as exc:
            if requested != "auto":
                raise
            _log.info(
                "model %s refuses subinterpreters (%s); falling back to the process backend",
                manifest.name,
                exc.message,
                extra={"error_code": exc.code, "model": manifest.name},
            )
            worker = WorkerProcess(
                WorkerSpec(spec.name, spec.python, spec.model_dir, spec.entrypoint, "process"), **self._worker_options
            )
            worker.start()
        return worker

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this ModelLoader is closed; create a new one to load models")

    def _forget(self, name: str) -> None:
        with self._lock:
            self._models.pop(name, None)

    def health(self) -> dict[str, dict[str, Any]]:
        """Each loaded model's :meth:`LoadedModel.health`, by name."""
        return {name: model.health() for name, model in self.models.items()}

    def close(self) -> None:
        """Stop every worker (idempotent); afterwards no child process of this loader is alive."""
        with self._lock:
            self._closed = True
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model._worker.close()

    def __enter__(self) -> ModelLoader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
