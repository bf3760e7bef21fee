"""The process backend: one worker process per loaded model, supervised by :class:`WorkerProcess`.

The worker is ``_scripts/worker_main.py`` run by the model environment's interpreter in isolated mode (``-I``), in a
session of its own, talking over a private socketpair with length-prefixed JSON frames. Its stdout and
stderr are forwarded to the ``autoglm_runtime.isolation.workers.process`` logger, tagged with the model name.

Promises:

* a call's timeout bounds all of it: waiting for an earlier call to the same model, waiting for a
  restarted worker's handshake or backoff, sending the arguments and reading the result;
* a call past its timeout raises :class:`ModelTimeoutError` (E0305). If the worker was running the call,
  its process group is killed and a fresh worker is started at once (its handshake is awaited by the next
  call); if the time ran out before the call reached the worker (an earlier call still running, a restart
  still loading), the worker is left alone;
* a worker that dies (signal, segfault, ``sys.exit``) fails the call in flight with :class:`WorkerError`
  (E0103) naming the model and the exit status; the next call restarts it after an exponential backoff;
* after more than ``max_restarts`` failures in a row (deaths and timeouts alike) without one successful
  call, the worker is given up on (state ``failed``) and every call raises at once;
* a reply the host cannot decode raises :class:`ModelCallError` (E0105); the worker keeps running;
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
from typing import Any, Literal, TypedDict

from autoglm_runtime.errors import (
    BackendUnsupportedError,
    IsolationError,
    ModelLoadError,
    ModelTimeoutError,
    UsageError,
    WorkerError,
)
from autoglm_runtime.isolation._scripts import protocol as _protocol
from autoglm_runtime.isolation.workers import _replies
from autoglm_runtime.isolation.workers._output import OutputPump, describe_exit
from autoglm_runtime.isolation.workers._restarts import RestartPolicy
from autoglm_runtime.isolation.workers._state import Step, WorkerView, decide, phase_of

__all__ = ["WORKER_SCRIPT", "WorkerHealth", "WorkerProcess", "WorkerSpec", "WorkerState"]

WORKER_SCRIPT = Path(__file__).resolve().parent.parent / "_scripts" / "worker_main.py"
WorkerState = Literal["starting", "ready", "restarting", "dead", "failed"]
_log = logging.getLogger("autoglm_runtime.isolation.workers.process")


class WorkerHealth(TypedDict):
    """What :meth:`WorkerProcess.health` returns: a ``dict`` at run time (JSON-ready), typed for mypy.

    * ``state`` (:data:`WorkerState`): ``"starting"``, ``"ready"``, ``"restarting"``, ``"dead"`` (died,
      restarts on the next call; also after ``close()``) or ``"failed"`` (gave up after ``max_restarts``).
    * ``pid`` (int or None): the worker process's id while one runs, else ``None``.
    * ``restarts`` (int): how many times the worker was started again after its first start.
    * ``last_exit`` (str or None): how the last failure ended, e.g. ``"killed by signal 9 (SIGKILL)"``.
    * ``backend`` (str): ``"process"`` or ``"subinterp"``.
    * ``failures`` (int): failures (deaths, timeouts) in a row since the last successful call.
    """

    state: WorkerState
    pid: int | None
    restarts: int
    last_exit: str | None
    backend: Literal["process", "subinterp"]
    failures: int


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
        self._restarts = RestartPolicy(max_restarts, backoff, max_backoff)
        self._logger = logger or _log
        self._call_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: _protocol.FrameReader | None = None
        self._pump: OutputPump | None = None
        self._state: WorkerState = "starting"
        self._awaiting_hello = False
        self._hello_deadline = 0.0
        self._spawns = 0
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
        """Run ``model.<method>(*args, **kwargs)`` in the worker and return its (JSON-shaped) result.

        ``timeout`` (s; ``None`` waits for ever) bounds the whole call, including the wait for an earlier
        call to this model and for a restarting worker. Raises :class:`ModelTimeoutError` (E0305) past it,
        :class:`WorkerError` (E0103) when the worker died or was given up on, :class:`ModelCallError` (E0105)
        when the model raised or answered something the host cannot decode, :class:`UsageError` for
        arguments that cannot be sent.
        """
        if timeout is not None and not timeout > 0:
            raise UsageError(
                f"timeout of {self.spec.name}.{method}() must be a positive number of seconds, got {timeout!r}"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        call_id = next(self._ids)
        try:
            frame = _protocol.encode({"id": call_id, "method": method, "args": list(args), "kwargs": kwargs})
        except (TypeError, ValueError, _protocol.FrameError) as exc:
            raise UsageError(f"arguments of {self.spec.name}.{method}() cannot be sent to its worker: {exc}") from exc
        if not self._call_lock.acquire(timeout=-1 if deadline is None else max(deadline - time.monotonic(), 0.0)):
            raise ModelTimeoutError(
                f"model '{self.spec.name}' did not answer {method}() within {_seconds(timeout)}: the call waited all "
                "that time for an earlier call to the same model to finish (a worker serves one call at a time); "
                "the worker was not restarted: raise the timeout, or load the model under a second name for "
                "parallel calls"
            )
        try:
            return self._call_locked(method, call_id, frame, timeout, deadline)
        finally:
            self._call_lock.release()

    def _call_locked(
        self, method: str, call_id: int, frame: bytes, timeout: float | None, deadline: float | None
    ) -> Any:
        self._ensure_running(method, timeout, deadline)
        reader = self._reader
        if reader is None or self._closing.is_set():  # close() ran since _ensure_running returned
            raise WorkerError(f"model '{self.spec.name}' was closed; load it again to use it")
        if deadline is not None and deadline <= time.monotonic():
            raise ModelTimeoutError(
                f"model '{self.spec.name}' did not answer {method}() within {_seconds(timeout)}: the time ran out "
                "before the call reached the worker (waiting for an earlier call or a restart); the worker was "
                "not restarted"
            )
        try:
            reader.send(frame, deadline)
            reply = reader.read(deadline)
        except TimeoutError:
            raise self._timed_out(method, timeout) from None
        except _protocol.DecodeError as exc:
            raise _replies.undecodable_reply(self.spec.name, method, exc) from None
        except (_protocol.FrameError, OSError) as exc:
            raise self._died_during(method) from exc
        try:
            result = _replies.result_of(self.spec.name, method, call_id, reply)
        except _replies.ReplyMismatch as exc:
            raise self._protocol_violation(str(exc), method) from None
        self._restarts.succeeded()
        return result

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
            )

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
            try:
                parent, child = socket.socketpair()
            except OSError as exc:
                raise WorkerError(f"model '{self.spec.name}' worker could not start: {exc}") from exc
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
            self._hello_deadline = time.monotonic() + self._start_timeout
            self._state = "starting" if self._spawns == 1 else "restarting"
            self._logger.info(
                "model %s worker started (pid %d, %s backend)", self.spec.name, proc.pid, self.spec.backend
            )

    def _await_hello(
        self, method: str | None = None, timeout: float | None = None, deadline: float | None = None
    ) -> Mapping[str, Any]:
        """Wait for the handshake, until ``start_timeout`` after the spawn or the call's ``deadline``."""
        reader, proc = self._reader, self._proc
        assert reader is not None
        assert proc is not None
        call_bound = deadline is not None and deadline < self._hello_deadline
        try:
            hello = reader.read(deadline if call_bound else self._hello_deadline)
        except TimeoutError:
            if call_bound:  # the worker may be merely slow to load: leave it loading for the next call
                raise ModelTimeoutError(
                    f"model '{self.spec.name}' did not answer {method}() within {_seconds(timeout)}: its restarted "
                    f"worker (pid {proc.pid}) is still loading the model; it was left loading and a later call "
                    "uses it once it is ready (raise the timeout to wait for it)"
                ) from None
            self._stop_process()
            self._count_failure(f"did not load within {self._start_timeout:g} s")
            raise WorkerError(
                f"model '{self.spec.name}' worker (pid {proc.pid}) did not finish loading within "
                f"{self._start_timeout:g} s; it was killed"
            ) from None
        except _protocol.DecodeError as exc:
            raise self._protocol_violation(f"sent a handshake the host cannot decode ({exc})", None) from None
        except (_protocol.FrameError, OSError) as exc:
            raise self._died_during(None) from exc
        self._awaiting_hello = False
        try:
            self.hello = _replies.hello_of(self.spec.name, self.spec.entrypoint, hello)
        except _replies.ReplyMismatch as exc:
            raise self._protocol_violation(str(exc), None) from None
        except IsolationError:
            self._stop_process()
            raise
        self._set_state("ready")
        return self.hello

    def _ensure_running(self, method: str, timeout: float | None, deadline: float | None) -> None:
        """Until the worker can take the call: look at it, decide (``_workerstate``), act, look again."""
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
                    self._count_failure(f"failed to load: {exc.message.splitlines()[0]}")
                except WorkerError:
                    pass  # recorded as a death; the next look decides between a restart and giving up
            elif step is Step.RESTART:
                self._stop_process()
                self._spawn()
            elif step is Step.BACK_OFF:
                self._closing.wait(action.wait)
            elif step is Step.TIME_OUT:
                if not self._closing.wait(action.wait):
                    raise ModelTimeoutError(
                        f"model '{self.spec.name}' did not answer {method}() within {_seconds(timeout)}: its "
                        f"worker is restarting after a backoff of {self._restarts.delay():g} s (last failure: "
                        f"{self._restarts.last_failure}); it was not started yet: call again later"
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
            left = None if deadline is None else deadline - time.monotonic()
            return WorkerView(phase, self._restarts.exhausted, self._restarts.wait(), left)

    def _count_failure(self, description: str) -> None:
        with self._state_lock:
            self._restarts.record(description)
            if self._state != "failed":
                self._state = "dead"

    def _record_death(self, proc: subprocess.Popen[bytes]) -> None:
        with self._state_lock:
            if self._recorded_death is proc:
                return
            self._recorded_death = proc
            self._count_failure(describe_exit(proc.wait()))
            self._awaiting_hello = False
            self._logger.warning(
                "model %s worker (pid %d) %s",
                self.spec.name,
                proc.pid,
                self._restarts.last_failure,
                extra={"error_code": WorkerError.code, "model": self.spec.name},
            )

    def _died_during(self, method: str | None) -> WorkerError:
        """The error for a worker whose socket broke during ``method`` (``None``: during its handshake)."""
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
            f"model '{self.spec.name}' worker (pid {proc.pid}) died {what}: {self._restarts.last_failure}; "
            f"{self._restarts.next_step(method is not None)}"
        )
        if tail:
            message += "; last stderr lines:\n" + "\n".join(tail)
        self._close_socket()
        return WorkerError(message)

    def _timed_out(self, method: str, timeout: float | None) -> ModelTimeoutError:
        """Kill the worker running the late call, count it as a failure, and restart it unless given up on."""
        self._logger.warning(
            "model %s: %s() timed out after %s; killing its worker",
            self.spec.name,
            method,
            _seconds(timeout),
            extra={"error_code": ModelTimeoutError.code, "model": self.spec.name},
        )
        self._stop_process(grace=0.0)
        message = (
            f"model '{self.spec.name}' did not answer {method}() within {_seconds(timeout)}; its worker was killed"
        )
        with self._state_lock:
            self._count_failure(f"timed out in {method}() after {_seconds(timeout)}")
            if self._restarts.exhausted:
                self._state = "failed"
                return ModelTimeoutError(f"{message}; {self._restarts.no_more_restarts()}")
        try:
            self._spawn()
        except WorkerError:
            self._set_state("dead")
        return ModelTimeoutError(f"{message} and is restarting: raise the timeout if the model is merely slow")

    def _protocol_violation(self, what: str, method: str | None) -> WorkerError:
        """Stop a worker that broke the protocol during ``method`` (``None``: its handshake); counted as a death."""
        pid = self._proc.pid if self._proc is not None else None
        self._stop_process(grace=0.0)
        self._count_failure("broke the protocol")
        then = self._restarts.next_step(method is not None)
        return WorkerError(f"model '{self.spec.name}' worker (pid {pid}) {what}; it was stopped: {then}")

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
            if proc is not None and proc is not self._stopped:
                self._stopped = proc
                if grace > 0:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=grace)  # it exits by itself once its socket closes
                self._kill(proc)  # also reaps anything it started in its process group
                proc.wait()
                self._recorded_death = proc  # a stop we chose is not a crash
            if pump is not None:
                pump.join(5)
            self._awaiting_hello = False


def _seconds(timeout: float | None) -> str:
    return "no time limit" if timeout is None else f"{timeout:g} s"
