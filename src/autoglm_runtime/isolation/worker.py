"""The process backend: one worker process per loaded model, supervised by :class:`WorkerProcess`.

The worker is ``_worker_main.py`` run by the model environment's interpreter in isolated mode (``-I``), in a
session of its own, talking over a private socketpair with length-prefixed JSON frames. Its stdout and
stderr are forwarded to the ``autoglm_runtime.isolation.worker`` logger, tagged with the model name.

Promises:

* a call past its timeout raises :class:`ModelTimeoutError` (E0305); the worker's process group is killed
  and a fresh worker is started at once (its handshake is awaited by the next call);
* a worker that dies (signal, segfault, ``sys.exit``) fails the call in flight with :class:`WorkerError`
  (E0103) naming the model and the exit status; the next call restarts it after an exponential backoff;
  after ``max_restarts`` failures in a row without one successful call, the worker is given up on
  (state ``failed``) and every call raises at once;
* :meth:`WorkerProcess.health` polls the real process: a dead worker is never reported ``ready``;
* :meth:`WorkerProcess.close` leaves no process, thread or socket behind.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from autoglm_runtime.errors import (
    BackendUnsupportedError,
    ModelCallError,
    ModelLoadError,
    ModelTimeoutError,
    UsageError,
    WorkerError,
)
from autoglm_runtime.isolation import _protocol
from autoglm_runtime.isolation._output import OutputPump, describe_exit

__all__ = ["WORKER_SCRIPT", "WorkerProcess", "WorkerSpec", "WorkerState"]

WORKER_SCRIPT = Path(__file__).with_name("_worker_main.py")
WorkerState = Literal["starting", "ready", "restarting", "dead", "failed"]
_log = logging.getLogger("autoglm_runtime.isolation.worker")


@dataclass(frozen=True)
class WorkerSpec:
    """What to run: the model, the interpreter of its environment, and the backend inside the process."""

    name: str
    python: str
    model_dir: str
    entrypoint: str
    backend: Literal["process", "subinterp"] = "process"


class WorkerProcess:
    """Supervises the worker of one model; thread-safe, calls are served one at a time.

    >>> worker = WorkerProcess(WorkerSpec("a", "/envs/k/bin/python", "models/a", "a_model:load"))  # doctest: +SKIP
    >>> worker.start(); worker.call("predict", {"text": "hi"}, timeout=5.0)                      # doctest: +SKIP
    """

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        start_timeout: float = 120.0,
        max_restarts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.spec = spec
        self._start_timeout = start_timeout
        self._max_restarts = max_restarts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._logger = logger or _log
        self._call_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: _protocol.FrameReader | None = None
        self._pump: OutputPump | None = None
        self._state: WorkerState = "starting"
        self._awaiting_hello = False
        self._spawns = 0
        self._failures = 0  # deaths since the last successful call
        self._died_at = 0.0
        self._last_exit: str | None = None
        self._recorded_death: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self.hello: Mapping[str, Any] = {}

    # --- public ---------------------------------------------------------------------------------------

    def start(self) -> Mapping[str, Any]:
        """Start the worker and wait for its handshake; returns the ``hello`` message.

        Raises :class:`ModelLoadError` (the entrypoint failed), :class:`BackendUnsupportedError` (the
        subinterpreter backend was refused) or :class:`WorkerError` (the process died or never answered).
        """
        with self._call_lock:
            self._spawn()
            try:
                return self._await_hello()
            except BaseException:
                self._set_state("failed")
                self._stop_process()
                raise

    @property
    def versions(self) -> Mapping[str, Mapping[str, str]]:
        """Distributions the model actually imported: name -> ``{"version", "location"}``."""
        versions: Mapping[str, Mapping[str, str]] = self.hello.get("versions", {})
        return versions

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``model.<method>(*args, **kwargs)`` in the worker and return its (JSON-shaped) result."""
        if timeout is not None and not timeout > 0:
            raise UsageError(
                f"timeout of {self.spec.name}.{method}() must be a positive number of seconds, got {timeout!r}"
            )
        call_id = next(self._ids)
        try:
            frame = _protocol.encode({"id": call_id, "method": method, "args": list(args), "kwargs": kwargs})
        except (TypeError, ValueError, _protocol.FrameError) as exc:
            raise UsageError(f"arguments of {self.spec.name}.{method}() cannot be sent to its worker: {exc}") from exc
        with self._call_lock:
            self._ensure_running()
            sock, reader = self._sock, self._reader
            assert sock is not None
            assert reader is not None
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                sock.sendall(frame)
                reply = reader.read(deadline)
            except TimeoutError:
                self._restart_after_timeout(method, timeout)
                raise ModelTimeoutError(
                    f"model '{self.spec.name}' did not answer {method}() within {timeout:g} s; its worker was "
                    "killed and is restarting: raise the timeout if the model is merely slow"
                ) from None
            except (_protocol.FrameError, OSError) as exc:
                raise self._died_during(method) from exc
            if reply.get("id") != call_id:
                self._stop_process(grace=0.0)
                raise WorkerError(
                    f"model '{self.spec.name}' worker answered call {reply.get('id')!r} instead of {call_id}; "
                    "it was stopped and the next call restarts it"
                )
            if reply.get("ok"):
                self._failures = 0
                return reply.get("result")
            error = reply.get("error") or {}
            summary = f"{error.get('type', 'Exception')}: {error.get('message', '')}"
            if error.get("unsupported"):
                raise BackendUnsupportedError(
                    f"model '{self.spec.name}' cannot run in a subinterpreter: {summary}; use backend='process'"
                )
            raise ModelCallError(
                f"model '{self.spec.name}' raised {summary} in {method}()",
                remote_type=str(error.get("type", "")),
                remote_traceback=str(error.get("traceback", "")),
            )

    def health(self) -> dict[str, Any]:
        """The worker's real state: ``state``, ``pid``, ``restarts``, ``last_exit``, ``backend``, ``failures``."""
        with self._state_lock:
            proc = self._proc
            if proc is not None and proc.poll() is not None and self._state in ("ready", "starting", "restarting"):
                self._record_death(proc)
            return {
                "state": self._state,
                "pid": proc.pid if proc is not None and proc.returncode is None else None,
                "restarts": max(self._spawns - 1, 0),
                "last_exit": self._last_exit,
                "backend": self.spec.backend,
                "failures": self._failures,
            }

    def close(self, grace: float = 5.0) -> None:
        """Stop the worker: close its socket (it exits by itself), kill its process group after ``grace`` s."""
        self._closing.set()
        with self._state_lock:
            self._stop_process(grace)
            self._state = "dead"

    # --- internals ------------------------------------------------------------------------------------

    def _set_state(self, state: WorkerState) -> None:
        with self._state_lock:
            self._state = state

    def _spawn(self) -> None:
        with self._state_lock:
            if self._closing.is_set():
                raise WorkerError(f"model '{self.spec.name}' was closed; load it again to use it")
            parent, child = socket.socketpair()
            argv = [self.spec.python, "-I", str(WORKER_SCRIPT), "--fd", str(child.fileno()), "--name", self.spec.name]
            argv += ["--model-dir", self.spec.model_dir, "--entrypoint", self.spec.entrypoint]
            argv += ["--backend", self.spec.backend]
            try:
                proc = subprocess.Popen(
                    argv,
                    pass_fds=(child.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=self.spec.model_dir,
                    start_new_session=True,  # its own process group: killing it kills whatever it started
                )
            except OSError as exc:
                parent.close()
                raise WorkerError(f"model '{self.spec.name}' worker could not start: {exc}") from exc
            finally:
                child.close()
            assert proc.stdout is not None
            assert proc.stderr is not None
            self._pump = OutputPump(self.spec.name, proc.pid, proc.stdout, proc.stderr, self._logger)
            self._pump.start()
            self._proc, self._sock, self._reader = proc, parent, _protocol.FrameReader(parent)
            self._spawns += 1
            self._awaiting_hello = True
            self._state = "starting" if self._spawns == 1 else "restarting"
            self._logger.info(
                "model %s worker started (pid %d, %s backend)", self.spec.name, proc.pid, self.spec.backend
            )

    def _await_hello(self) -> Mapping[str, Any]:
        reader, proc = self._reader, self._proc
        assert reader is not None
        assert proc is not None
        try:
            hello: dict[str, Any] = reader.read(time.monotonic() + self._start_timeout)
        except TimeoutError:
            self._stop_process()
            self._count_failure(f"did not load within {self._start_timeout:g} s")
            raise WorkerError(
                f"model '{self.spec.name}' worker (pid {proc.pid}) did not finish loading within "
                f"{self._start_timeout:g} s; it was killed"
            ) from None
        except (_protocol.FrameError, OSError) as exc:
            raise self._died_during(None) from exc
        self._awaiting_hello = False
        if not hello.get("ok"):
            error = hello.get("error") or {}
            summary = f"{error.get('type', 'Exception')}: {error.get('message', '')}"
            self._stop_process()
            if error.get("unsupported"):
                raise BackendUnsupportedError(
                    f"model '{self.spec.name}' cannot run in a subinterpreter: {summary}; use backend='process' "
                    "(or 'auto', which falls back to it)"
                )
            last = str(error.get("traceback", "")).strip().splitlines()[-3:]
            raise ModelLoadError(
                f"model '{self.spec.name}' failed to load its entrypoint {self.spec.entrypoint}: {summary}"
                + ("\n" + "\n".join(last) if last else "")
            )
        self.hello = hello
        self._set_state("ready")
        return hello

    def _ensure_running(self) -> None:
        while True:
            with self._state_lock:
                if self._closing.is_set():
                    raise WorkerError(f"model '{self.spec.name}' was closed; load it again to use it")
                if self._state == "failed":
                    raise self._crash_loop_error()
                proc = self._proc
                if proc is not None and proc.poll() is not None:
                    self._record_death(proc)
            if self._state == "ready" and not self._awaiting_hello:
                return
            if self._awaiting_hello and self._proc is not None and self._proc.returncode is None:
                try:
                    self._await_hello()
                    return
                except (ModelLoadError, BackendUnsupportedError) as exc:
                    self._count_failure(f"failed to load: {exc.message.splitlines()[0]}")
                except WorkerError:
                    pass  # recorded as a death; the loop decides between a restart and giving up
                continue
            if self._failures > self._max_restarts:
                self._set_state("failed")
                self._stop_process()
                raise self._crash_loop_error()
            delay = min(self._backoff * 2 ** max(self._failures - 1, 0), self._max_backoff)
            wait = self._died_at + delay - time.monotonic()
            if wait > 0 and self._closing.wait(wait):
                continue
            self._stop_process()
            self._spawn()

    def _crash_loop_error(self) -> WorkerError:
        return WorkerError(
            f"model '{self.spec.name}' failed {self._failures} times in a row (last: {self._last_exit}); "
            f"gave up after {self._max_restarts} restarts: read its stderr in the logs, fix it and load it again"
        )

    def _count_failure(self, description: str) -> None:
        with self._state_lock:
            self._failures += 1
            self._died_at = time.monotonic()
            self._last_exit = description
            if self._state != "failed":
                self._state = "dead"

    def _record_death(self, proc: subprocess.Popen[bytes]) -> None:
        with self._state_lock:
            if self._recorded_death is proc:
                return
            self._recorded_death = proc
            returncode = proc.wait()
            self._last_exit = describe_exit(returncode)
            self._failures += 1
            self._died_at = time.monotonic()
            self._awaiting_hello = False
            if self._state != "failed":
                self._state = "dead"
            self._logger.warning(
                "model %s worker (pid %d) %s",
                self.spec.name,
                proc.pid,
                self._last_exit,
                extra={"error_code": WorkerError.code, "model": self.spec.name},
            )

    def _died_during(self, method: str | None) -> WorkerError:
        proc = self._proc
        assert proc is not None
        if self._closing.is_set():
            self._stop_process()
            return WorkerError(f"model '{self.spec.name}' was closed while {method or 'loading'} was running")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it closed the socket but lives on: it is of no use any more
            self._kill(proc)
        self._record_death(proc)
        if self._pump is not None:
            self._pump.join(5)
        tail = self._pump.stderr_tail[-5:] if self._pump is not None else []
        what = f"during {method}()" if method else "before its handshake"
        message = (
            f"model '{self.spec.name}' worker (pid {proc.pid}) died {what}: {self._last_exit}; "
            "the next call restarts it"
        )
        if tail:
            message += "; last stderr lines:\n" + "\n".join(tail)
        self._close_socket()
        return WorkerError(message)

    def _restart_after_timeout(self, method: str, timeout: float | None) -> None:
        self._logger.warning(
            "model %s: %s() timed out after %s s; restarting its worker",
            self.spec.name,
            method,
            timeout,
            extra={"error_code": ModelTimeoutError.code, "model": self.spec.name},
        )
        self._stop_process(grace=0.0)
        try:
            self._spawn()
        except WorkerError:
            self._set_state("dead")

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            if proc.poll() is None:
                proc.kill()

    def _close_socket(self) -> None:
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a call blocked in recv() on this socket
            sock.close()

    def _stop_process(self, grace: float = 5.0) -> None:
        with self._state_lock:
            proc, pump = self._proc, self._pump
            self._close_socket()
            if proc is not None:
                if grace > 0:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=grace)  # it exits by itself once its socket closes
                self._kill(proc)  # also reaps anything it started in its process group
                proc.wait()
                self._recorded_death = proc  # a stop we chose is not a crash
            if pump is not None:
                pump.join(5)
            self._awaiting_hello = False
