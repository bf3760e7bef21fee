"""The process backend: one worker process per replica of a model, supervised by :class:`WorkerProcess`.

The worker is ``_scripts/worker_main.py`` run by the model environment's interpreter in isolated mode (``-I``), in a
session of its own, talking over a private socketpair (frames of JSON plus raw buffers, calls multiplexed by
id: see ``_scripts/protocol.py`` and ``_scripts/dispatch.py``). Its stdout and stderr are forwarded to the
``autoglm_runtime.isolation.workers.process`` logger, tagged with the model name. Calls, streams and their
timeouts live in :mod:`~autoglm_runtime.isolation.workers.calls`; this module owns the process.

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

import collections
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
from autoglm_runtime.isolation.workers import _replies
from autoglm_runtime.isolation.workers._connection import Connection
from autoglm_runtime.isolation.workers._output import OutputPump, describe_exit, exit_reason, oom_kill_count
from autoglm_runtime.isolation.workers._restarts import RestartPolicy
from autoglm_runtime.isolation.workers._state import Step, WorkerView, decide, phase_of
from autoglm_runtime.isolation.workers.spec import (
    WORKER_SCRIPT,
    Concurrency,
    WorkerHealth,
    WorkerSpec,
    WorkerState,
    kill_group,
    launch,
)

__all__ = ["WORKER_SCRIPT", "Concurrency", "WorkerHealth", "WorkerProcess", "WorkerSpec", "WorkerState"]

_log = logging.getLogger("autoglm_runtime.isolation.workers.process")


class WorkerProcess:
    """Supervises one worker process of a model; thread-safe.

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
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._start_timeout = start_timeout
        self._restarts = RestartPolicy(max_restarts, backoff, max_backoff, timer=timer)
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
        self._spawns = 0
        self._oom_at_spawn: int | None = None
        self._recorded: set[int] = set()  # pids whose death was recorded (a stop we chose is not one)
        self._stopped: set[int] = set()  # pids whose process group was killed
        self._reasons: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)
        self.hello: Mapping[str, Any] = {}

    # --- public ---------------------------------------------------------------------------------------

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

    def ready_connection(self) -> Connection | None:
        """The connection to a ready worker, without waiting; ``None`` when it must be (re)started first."""
        with self._state_lock:
            proc, conn = self._proc, self._conn
            if self._state == "ready" and conn is not None and proc is not None and proc.poll() is None:
                return conn
        return None

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
            _seconds(timeout),
            what,
            extra={"error_code": ModelTimeoutError.code, "model": self.spec.name},
        )
        within = f"within {_seconds(timeout)}{what}"
        message = f"model '{self.spec.name}' did not answer {method}() {within}; its worker was killed"
        with self._lifecycle:
            if conn is not self._conn:  # another call killed it already (and maybe restarted it)
                return ModelTimeoutError(message)
            late = f"another call, {method}(), timed out after {_seconds(timeout)}"
            self._kill_and_restart(conn, late, f"timed out in {method}() after {_seconds(timeout)}", "timeout")
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
                restarts=max(self._spawns - 1, 0),
                last_exit=self._restarts.last_failure,
                backend=self.spec.backend,
                failures=self._restarts.failures,
                restart_reasons=dict(self._reasons),
                inflight=self.inflight,
            )

    def close(self, grace: float = 5.0) -> None:
        """Stop the worker: close its socket (it exits by itself), kill its process group after ``grace`` s."""
        self._closing.set()
        self._stop_process(
            grace, lambda method: WorkerError(f"model '{self.spec.name}' was closed while {method}() was running")
        )
        self._set_state("dead")

    # --- internals ------------------------------------------------------------------------------------

    def _set_state(self, state: WorkerState) -> None:
        with self._state_lock:
            self._state = state

    def late(self, method: str, timeout: float | None, waiting: str) -> ModelTimeoutError:
        """The error of a call whose time ran out ``waiting`` (for a restart, in a queue): the worker is left alone."""
        return ModelTimeoutError(
            f"model '{self.spec.name}' did not answer {method}() within {_seconds(timeout)}: the time ran out "
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
            self._oom_at_spawn = oom_kill_count()
            self._spawns += 1
            self._awaiting_hello = True
            self._hello_deadline = self._timer() + self._start_timeout
            self._state = "starting" if self._spawns == 1 else "restarting"
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
                    f"model '{self.spec.name}' did not answer {method}() within {_seconds(timeout)}: its restarted "
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

    def _count_failure(self, description: str, reason: str) -> None:
        with self._state_lock:
            self._restarts.record(description)
            self._reasons[reason] += 1
            if self._state != "failed":
                self._state = "dead"

    def _record_death(self, proc: subprocess.Popen[bytes]) -> None:
        with self._state_lock:
            if proc.pid in self._recorded or proc.pid in self._stopped:
                return
            self._recorded.add(proc.pid)
            code = proc.wait()
            now_oom = oom_kill_count()
            oom = now_oom is not None and self._oom_at_spawn is not None and now_oom > self._oom_at_spawn
            self._count_failure(describe_exit(code, oom=oom), exit_reason(code, oom=oom))
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
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it closed the socket but lives on: it is of no use any more
            kill_group(proc)
        self._record_death(proc)
        pump = self._pump
        if pump is not None:
            pump.join(5)
        tail = pump.stderr_tail[-5:] if pump is not None else []
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
            self._count_failure(description, reason)
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
            stopping = proc is not None and proc.pid not in self._stopped
            if proc is not None:
                self._stopped.add(proc.pid)  # a stop we chose is not a crash
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
        if pump is not None:
            pump.join(5)


def _seconds(timeout: float | None) -> str:
    return "no time limit" if timeout is None else f"{timeout:g} s"
