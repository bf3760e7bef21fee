"""The lifecycle of a model's worker process under :class:`~.process.WorkerProcess`: spawn, handshake, death,
restart and stop, driven by the pure decision in :mod:`._state` ("look -> decide -> act").

:class:`WorkerLifecycle` holds a worker's state and the mechanics; :class:`~.process.WorkerProcess` adds what
calls, heartbeats and health see. The worker's output goes to the ``autoglm_runtime.isolation.workers.process``
logger, with an INFO line when a worker process starts (``model m worker started (pid 12, process backend)``) and
when one still running is stopped (``model m worker stopped (pid 12)``, ``extra={"model", "pid"}``: by ``close()``,
a load given up or interrupted, or a kill before a restart).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from autoglm_runtime.errors import (
    BackendUnsupportedError,
    IsolationError,
    ModelLoadError,
    ModelTimeoutError,
    WorkerError,
)
from autoglm_runtime.isolation._scripts import protocol as _protocol
from autoglm_runtime.isolation.workers import _forks, _replies
from autoglm_runtime.isolation.workers._connection import Connection
from autoglm_runtime.isolation.workers._failures import FailureLog, reap
from autoglm_runtime.isolation.workers._output import OutputPump
from autoglm_runtime.isolation.workers._restarts import RestartPolicy
from autoglm_runtime.isolation.workers._state import Step, WorkerView, decide, phase_of
from autoglm_runtime.isolation.workers.spec import WorkerSpec, WorkerState, kill_group, launch

__all__ = ["WorkerLifecycle", "seconds"]

_log = logging.getLogger("autoglm_runtime.isolation.workers.process")


class WorkerLifecycle:
    """A worker's state and how it starts, dies, restarts and stops (all under its locks); see the module."""

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        start_timeout: float = 120.0,
        max_restarts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        logger: logging.Logger | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._start_timeout = start_timeout
        self._restarts = RestartPolicy(max_restarts, backoff, max_backoff, timer=timer)
        self._failures = FailureLog(self._restarts)
        self._logger = logger or _log
        self._timer = timer
        self._lifecycle = threading.Lock()  # one thread at a time starts, awaits or restarts the worker
        self._state_lock = threading.RLock()
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._pump: OutputPump | None = None
        self._state: WorkerState = "starting"
        self._awaiting_hello = False
        self._hello_deadline = 0.0
        self._ids = itertools.count(1)
        self.hello: Mapping[str, Any] = {}
        _forks.track_worker(self)

    def forget_parent(self) -> None:
        """(In a forked child, see :mod:`._forks`) leave the worker process to the parent: close the child's copies of
        its socket and pipes, and mark it down, so that the child's next call starts a worker of the child's own."""
        self._lifecycle = threading.Lock()
        self._state_lock = threading.RLock()
        closing = self._closing.is_set()
        self._closing = threading.Event()
        conn, pump = self._conn, self._pump
        self._proc = self._conn = self._pump = None  # (a Popen of the parent's: the child cannot wait for it)
        self._awaiting_hello = False
        if conn is not None:
            conn.forget_parent()
        if pump is not None:  # (it holds the process's stdout and stderr)
            pump.forget_parent()
        if closing:
            self._closing.set()
        elif self._state != "failed":  # the child's own worker starts afresh: the parent's failures are the parent's
            policy = self._restarts
            self._restarts = RestartPolicy(policy.max_restarts, policy.backoff, policy.max_backoff, timer=self._timer)
            self._failures = FailureLog(self._restarts)
            self._state = "dead"

    def _set_state(self, state: WorkerState) -> None:
        with self._state_lock:
            self._state = state

    def late(self, method: str, timeout: float | None, waiting: str) -> ModelTimeoutError:
        """The error of a call whose time ran out ``waiting`` (for a restart, in a queue): the worker is left alone."""
        return ModelTimeoutError(
            f"model '{self.spec.name}' did not answer {method}() within {seconds(timeout)}: the time ran out "
            f"{waiting}, before the call reached the worker; the worker was not restarted"
        )

    def _spawn(self) -> None:
        with self._state_lock:
            if self._closing.is_set():
                raise WorkerError(f"model '{self.spec.name}' was closed; load it again to use it")
            spec = self.spec
            proc, parent = launch(spec)
            assert proc.stdout is not None
            assert proc.stderr is not None
            self._pump = OutputPump(spec.name, proc.pid, proc.stdout, proc.stderr, self._logger)
            self._pump.start()
            self._proc = proc
            self._conn = Connection(spec.name, proc.pid, parent, self._on_broken, self._logger, timer=self._timer)
            self._failures.spawned()
            self._awaiting_hello = True
            self._hello_deadline = self._timer() + self._start_timeout
            self._state = "starting" if self._failures.spawns == 1 else "restarting"
            self._logger.info("model %s worker started (pid %d, %s backend)", spec.name, proc.pid, spec.backend)

    def _await_hello(
        self, method: str | None = None, timeout: float | None = None, deadline: float | None = None
    ) -> Mapping[str, Any]:
        """Wait for the handshake, until ``start_timeout`` after the spawn or the call's ``deadline``."""
        conn, proc = self._conn, self._proc
        assert conn is not None
        assert proc is not None
        call_bound = deadline is not None and deadline < self._hello_deadline
        try:
            hello = conn.reader.read(deadline if call_bound else self._hello_deadline)
        except TimeoutError:
            if call_bound:  # the worker may be merely slow to load: leave it loading for the next call
                raise ModelTimeoutError(
                    f"model '{self.spec.name}' did not answer {method}() within {seconds(timeout)}: its restarted "
                    f"worker (pid {proc.pid}) is still loading the model; it was left loading and a later call "
                    "uses it once it is ready (raise the timeout to wait for it)"
                ) from None
            self._stop_process()
            self._count_failure(f"did not load within {self._start_timeout:g} s", "load")
            raise WorkerError(
                f"model '{self.spec.name}' worker (pid {proc.pid}) did not finish loading within "
                f"{self._start_timeout:g} s; it was killed"
            ) from None
        except _protocol.DecodeError as exc:
            raise self._protocol_violation(f"sent a handshake the host cannot decode ({exc})") from None
        except (_protocol.FrameError, OSError) as exc:
            raise self._died_before_hello(proc) from exc
        self._awaiting_hello = False
        try:
            self.hello = _replies.hello_of(self.spec.name, self.spec.entrypoint, hello)
        except _replies.ReplyMismatch as exc:
            raise self._protocol_violation(str(exc)) from None
        except IsolationError:
            self._stop_process()
            raise
        conn.start()
        self._set_state("ready")
        return self.hello

    def _ensure_running(self, method: str, timeout: float | None, deadline: float | None) -> None:
        """Until the worker can take the call: look at it, decide (``_state``), act, look again."""
        while True:
            action = decide(self._look(deadline))
            step = action.step
            if step is Step.SERVE:
                return
            if step is Step.AWAIT_HELLO:
                try:
                    self._await_hello(method, timeout, deadline)
                    return
                except (ModelLoadError, BackendUnsupportedError) as exc:
                    self._count_failure(f"failed to load: {exc.message.splitlines()[0]}", "load")
                except WorkerError:
                    pass  # recorded as a death; the next look decides between a restart and giving up
            elif step is Step.RESTART:
                self._stop_process()
                self._spawn()
            elif step is Step.BACK_OFF:
                self._closing.wait(action.wait)
            elif step is Step.TIME_OUT:
                if not self._closing.wait(action.wait):
                    raise self.late(
                        method,
                        timeout,
                        f"while its worker waits {self._restarts.delay():g} s to restart "
                        f"(last failure: {self._restarts.last_failure})",
                    )
            elif step is Step.GIVE_UP:
                self._set_state("failed")
                self._stop_process()
                raise self._restarts.gave_up(self.spec.name)
            elif step is Step.RAISE_FAILED:
                raise self._restarts.gave_up(self.spec.name)
            else:  # Step.RAISE_CLOSED
                raise WorkerError(f"model '{self.spec.name}' was closed; load it again to use it")

    def _look(self, deadline: float | None) -> WorkerView:
        """The worker as a call finds it; an exit not yet noticed is recorded as a death first."""
        with self._state_lock:
            closing, proc = self._closing.is_set(), self._proc
            if not closing and self._state != "failed" and proc is not None and proc.poll() is not None:
                self._record_death(proc)
            alive = proc is not None and proc.returncode is None
            phase = phase_of(closing=closing, state=self._state, awaiting_hello=self._awaiting_hello, alive=alive)
            left = None if deadline is None else deadline - self._timer()
            return WorkerView(phase, self._restarts.exhausted, self._restarts.wait(), left)

    def _count_failure(self, description: str, reason: str, killed: int | None = None) -> None:
        """One more failure; for a process we ``killed`` (its pid), none if its own death was counted already."""
        with self._state_lock:
            if killed is None:
                self._failures.count(description, reason)
            else:
                self._failures.count_kill(killed, description, reason)
            if self._state != "failed":
                self._state = "dead"

    def _record_death(self, proc: subprocess.Popen[bytes]) -> None:
        with self._state_lock:
            if not self._failures.record_exit(proc):
                return
            if self._state != "failed":
                self._state = "dead"
            self._awaiting_hello = False
            self._logger.warning(
                "model %s worker (pid %d) %s",
                self.spec.name,
                proc.pid,
                self._restarts.last_failure,
                extra={"error_code": WorkerError.code, "model": self.spec.name},
            )

    def _on_broken(self, conn: Connection) -> Callable[[str], BaseException]:
        """On the reader thread: the worker's socket broke. Record how it ended; the error for its calls."""
        with self._state_lock:
            proc = self._proc if self._conn is conn else None
        if proc is None or self._closing.is_set():
            return lambda method: WorkerError(f"model '{self.spec.name}' was closed while {method}() was running")
        what = self._reap(proc, during_call=True)
        return lambda method: WorkerError(
            f"model '{self.spec.name}' worker (pid {proc.pid}) died during {method}(): {what}"
        )

    def _died_before_hello(self, proc: subprocess.Popen[bytes]) -> WorkerError:
        if self._closing.is_set():
            self._stop_process()
            return WorkerError(f"model '{self.spec.name}' was closed while loading was running")
        what = self._reap(proc, during_call=False)
        self._stop_process()
        return WorkerError(f"model '{self.spec.name}' worker (pid {proc.pid}) died before its handshake: {what}")

    def _reap(self, proc: subprocess.Popen[bytes], during_call: bool) -> str:
        """Record the death of a worker whose socket broke: how it ended, what happens next, its last stderr lines."""
        tail = reap(proc, self._pump)
        self._record_death(proc)
        what = f"{self._restarts.last_failure}; {self._restarts.next_step(during_call)}"
        return what + ("; last stderr lines:\n" + "\n".join(tail) if tail else "")

    def _kill_and_restart(self, conn: Connection, why: str, description: str, reason: str) -> None:
        """(Holding the lifecycle lock) kill the worker of ``conn``, failing its other calls; restart it."""
        pid = conn.pid
        self._stop_process(
            0.0,
            lambda method: WorkerError(
                f"model '{self.spec.name}' worker (pid {pid}) was killed while {method}() was running: {why}; "
                f"{self._restarts.next_step(True)}"
            ),
        )
        with self._state_lock:
            self._count_failure(description, reason, killed=pid)
            if self._restarts.exhausted:
                self._state = "failed"
                return
        try:
            self._spawn()
        except WorkerError:
            self._set_state("dead")

    def _protocol_violation(self, what: str) -> WorkerError:
        """Stop a worker that broke the protocol during its handshake; counted as a death."""
        pid = self._proc.pid if self._proc is not None else None
        self._stop_process(grace=0.0)
        self._count_failure("broke the protocol", "protocol")
        return WorkerError(
            f"model '{self.spec.name}' worker (pid {pid}) {what}; it was stopped: {self._restarts.next_step(False)}"
        )

    def _stop_process(self, grace: float = 5.0, reason: Callable[[str], BaseException] | None = None) -> None:
        with self._state_lock:
            proc, pump, conn = self._proc, self._pump, self._conn
            self._conn = None
            self._awaiting_hello = False
            stopping = proc is not None and self._failures.stopping(proc.pid)  # a stop we chose is not a crash
            running = stopping and proc is not None and proc.poll() is None
        if conn is not None:  # outside the state lock: the reader thread it joins may be waiting for that lock
            conn.close(
                reason
                or (
                    lambda method: WorkerError(
                        f"model '{self.spec.name}' worker was stopped while {method}() was running"
                    )
                )
            )
        if proc is not None and stopping:
            if grace > 0:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)  # it exits by itself once its socket closes
            kill_group(proc)  # also reaps anything it started in its process group
            proc.wait()
            if running:  # (not a process that had ended by itself: that is no stop of ours)
                name = self.spec.name
                self._logger.info(
                    "model %s worker stopped (pid %d)", name, proc.pid, extra={"model": name, "pid": proc.pid}
                )
        if pump is not None:
            pump.finish(5)


def seconds(timeout: float | None) -> str:
    return "no time limit" if timeout is None else f"{timeout:g} s"
