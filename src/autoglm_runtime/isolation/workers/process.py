"""The process backend: one worker process per replica of a model, supervised by :class:`WorkerProcess`.

The worker is ``_scripts/worker_main.py`` run by the model environment's interpreter in isolated mode (``-I``), in a
session of its own, talking over a private socketpair (frames of JSON plus raw buffers, calls multiplexed by
id: see ``_scripts/protocol.py`` and ``_scripts/dispatch.py``). Its stdout and stderr are forwarded to the
``autoglm_runtime.isolation.workers.process`` logger, tagged with the model name. Calls, streams and their
timeouts live in :mod:`~autoglm_runtime.isolation.workers.calls`; this module is what they (and the pool's
heartbeats and health) see of the process, whose spawns, deaths and restarts live in :mod:`._lifecycle`.

Promises:

* the worker is (re)started lazily by the call that finds it down, after an exponential backoff; a call's
  timeout bounds that wait too, and a call that runs out of time before reaching the worker leaves it alone;
* a worker that dies (signal, segfault, ``sys.exit``) fails exactly the calls in flight on it with
  :class:`WorkerError` (E0103) naming the model, the call and the exit status (OOM kills said where the
  kernel tells); a call or stream past its timeout kills it (E0305) and a fresh one starts at once;
* after more than ``max_restarts`` failures in a row without one successful call the worker is given up on
  (state ``failed``) and every call raises at once;
* :meth:`WorkerProcess.restart_hung` kills and restarts a worker its model's heartbeat found silent;
* :meth:`WorkerProcess.health` polls the real process; :meth:`WorkerProcess.close` leaves no process, thread or
  socket behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from autoglm_runtime.errors import ModelTimeoutError, WorkerError
from autoglm_runtime.isolation.workers._connection import Connection
from autoglm_runtime.isolation.workers._lifecycle import WorkerLifecycle, seconds
from autoglm_runtime.isolation.workers.spec import (
    WORKER_SCRIPT,
    Concurrency,
    WorkerHealth,
    WorkerSpec,
    WorkerState,
)

__all__ = ["WORKER_SCRIPT", "Concurrency", "WorkerHealth", "WorkerProcess", "WorkerSpec", "WorkerState"]

_WAITID = getattr(os, "waitid", None)
_EXIT_WAIT = 1.0  # how long a worker that closed its socket gets to be seen exiting (it takes microseconds)
_EXITED = getattr(os, "WEXITED", 0) | getattr(os, "WNOHANG", 0) | getattr(os, "WNOWAIT", 0)


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` has not exited, as ``proc.poll() is None`` says, but without reaping it: one ``waitid``
    with ``WNOWAIT`` (Popen's own locking and bookkeeping cost more than the system call, on every call);
    ``proc.poll()`` once it has exited, so that it is reaped and its status recorded as before."""
    if proc.returncode is not None:
        return False
    if _WAITID is not None and _EXITED:
        try:
            if _WAITID(os.P_PID, proc.pid, _EXITED) is None:
                return True
        except ChildProcessError:  # reaped meanwhile by another thread's poll() or wait()
            pass
    return proc.poll() is None


class WorkerProcess(WorkerLifecycle):
    """Supervises one worker process of a model; thread-safe.

    >>> worker = WorkerProcess(WorkerSpec("a", "/envs/k/bin/python", "models/a", "a_model:load"))  # doctest: +SKIP
    >>> worker.start(); worker.call("predict", {"text": "hi"}, timeout=5.0)                      # doctest: +SKIP
    """

    def start(self) -> Mapping[str, Any]:
        """Start the worker and wait for its handshake; returns the ``hello`` message.

        Raises :class:`ModelLoadError` (the entrypoint failed), :class:`BackendUnsupportedError` (the
        subinterpreter backend was refused) or :class:`WorkerError` (the process died or never answered).
        """
        with self._lifecycle:
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
        """Run ``model.<method>(*args, **kwargs)`` in the worker: see :func:`~.calls.call`."""
        from autoglm_runtime.isolation.workers import calls

        return calls.call(self, method, args, kwargs, timeout)

    @property
    def given_up(self) -> bool:
        """True once the worker failed more than ``max_restarts`` times in a row (state ``failed``)."""
        return self._state == "failed"

    def next_id(self) -> int:
        return next(self._ids)

    @property
    def inflight(self) -> int:
        conn = self._conn
        return conn.inflight if conn is not None else 0

    def ready_connection(self, look: bool = True) -> Connection | None:
        """The connection to a ready worker, without waiting; ``None`` when it must be (re)started first.

        ``look=False`` trusts the recorded state without asking the system about the process (a blocking call:
        a worker that died since is found when its request cannot be written, see :meth:`await_exit`)."""
        with self._state_lock:
            proc, conn = self._proc, self._conn
            if self._state == "ready" and conn is not None and proc is not None and (not look or _alive(proc)):
                return conn
        return None

    def await_exit(self, conn: Connection, deadline: float | None) -> None:
        """The worker behind ``conn`` closed its end of the socket, so it is exiting: wait (briefly, within
        ``deadline``) until its exit can be seen, so that the next look at it finds it dead and restarts it."""
        with self._state_lock:
            proc = self._proc if self._conn is conn else None
        if proc is None:
            return
        wait = _EXIT_WAIT if deadline is None else min(_EXIT_WAIT, max(deadline - self._timer(), 0.0))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)

    def connection(self, method: str, timeout: float | None, deadline: float | None) -> Connection:
        """The connection to a ready worker, (re)starting it as needed within ``deadline``.

        Raises :class:`ModelTimeoutError` when the time runs out first (the worker is left alone),
        :class:`WorkerError` when it was closed or given up on.
        """
        conn = self.ready_connection()
        if conn is not None:
            return conn
        wait = -1.0 if deadline is None else max(deadline - self._timer(), 0.0)
        if not self._lifecycle.acquire(timeout=wait):
            raise self.late(method, timeout, "waiting for the worker to restart")
        try:
            self._ensure_running(method, timeout, deadline)
            conn = self._conn
        finally:
            self._lifecycle.release()
        if conn is None or self._closing.is_set():  # close() ran since _ensure_running returned
            raise WorkerError(f"model '{self.spec.name}' was closed; load it again to use it")
        return conn

    def succeeded(self) -> None:
        """A call got its answer: the run of failures is over."""
        if self._restarts.failures:  # (read without the lock: only ever cleared here)
            with self._state_lock:
                self._restarts.succeeded()

    def timed_out(self, conn: Connection, method: str, timeout: float | None, what: str = "") -> ModelTimeoutError:
        """Kill the worker a late call ran on, count a failure, restart it unless given up on; the error to raise."""
        self._logger.warning(
            "model %s: %s() timed out after %s%s; killing its worker",
            self.spec.name,
            method,
            seconds(timeout),
            what,
            extra={"error_code": ModelTimeoutError.code, "model": self.spec.name},
        )
        within = f"within {seconds(timeout)}{what}"
        message = f"model '{self.spec.name}' did not answer {method}() {within}; its worker was killed"
        with self._lifecycle:
            if conn is not self._conn:  # another call killed it already (and maybe restarted it)
                return ModelTimeoutError(message)
            late = f"another call, {method}(), timed out after {seconds(timeout)}"
            self._kill_and_restart(conn, late, f"timed out in {method}() after {seconds(timeout)}", "timeout")
            if self._state == "failed":
                return ModelTimeoutError(f"{message}; {self._restarts.no_more_restarts()}")
        return ModelTimeoutError(f"{message} and is restarting: raise the timeout if the model is merely slow")

    def restart_hung(self, conn: Connection, silent: str) -> bool:
        """Kill and restart the worker behind ``conn``, which ``silent`` ("answered no heartbeat for 31.0 s ...");
        False when that worker is gone already."""
        with self._lifecycle:
            if conn is not self._conn:
                return False
            self._logger.warning(
                "model %s worker (pid %d) %s; killing it",
                self.spec.name,
                conn.pid,
                silent,
                extra={"error_code": WorkerError.code, "model": self.spec.name},
            )
            self._kill_and_restart(conn, f"it {silent}", silent, "heartbeat")
            return True

    def health(self) -> WorkerHealth:
        """The worker's real state (see :class:`WorkerHealth`), polled from the process: never ``ready`` when dead."""
        with self._state_lock:
            proc = self._proc
            if proc is not None and proc.poll() is not None and self._state in ("ready", "starting", "restarting"):
                self._record_death(proc)
            return WorkerHealth(
                state=self._state,
                pid=proc.pid if proc is not None and proc.returncode is None else None,
                restarts=max(self._failures.spawns - 1, 0),
                last_exit=self._restarts.last_failure,
                backend=self.spec.backend,
                failures=self._restarts.failures,
                restart_reasons=dict(self._failures.reasons),
                restarted_after=dict(self._failures.restarted_after),
                inflight=self.inflight,
            )

    def close(self, grace: float = 5.0) -> None:
        """Stop the worker: close its socket (it exits by itself), kill its process group after ``grace`` s."""
        self._closing.set()
        self._stop_process(
            grace, lambda method: WorkerError(f"model '{self.spec.name}' was closed while {method}() was running")
        )
        self._set_state("dead")
