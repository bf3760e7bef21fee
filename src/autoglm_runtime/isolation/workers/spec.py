"""What a worker is: its spec, its health record, and how its process is launched and killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

from autoglm_runtime.errors import WorkerError

__all__ = [
    "WORKER_SCRIPT",
    "Concurrency",
    "WorkerHealth",
    "WorkerSpec",
    "WorkerState",
    "kill_group",
    "launch",
]

WORKER_SCRIPT = Path(__file__).resolve().parent.parent / "_scripts" / "worker_main.py"
WorkerState = Literal["starting", "ready", "restarting", "dead", "failed"]
Concurrency = Literal["serial", "threads", "async"]


class WorkerHealth(TypedDict):
    """What :meth:`WorkerProcess.health` returns: a ``dict`` at run time (JSON-ready), typed for mypy.

    * ``state`` (:data:`WorkerState`): ``"starting"``, ``"ready"``, ``"restarting"``, ``"dead"`` (died,
      restarts on the next call; also after ``close()``) or ``"failed"`` (gave up after ``max_restarts``).
    * ``pid`` (int or None): the worker process's id while one runs, else ``None``.
    * ``restarts`` (int): how many times the worker was started again after its first start.
    * ``last_exit`` (str or None): how the last failure ended, e.g. ``"killed by signal 9 (SIGKILL)"``.
    * ``backend`` (str): ``"process"`` or ``"subinterp"``.
    * ``failures`` (int): failures (deaths, timeouts) in a row since the last successful call.
    * ``restart_reasons`` (dict): failures by reason since the start -- ``exit``, ``signal``, ``oom``,
      ``timeout``, ``heartbeat``, ``load`` (a restarted worker failed to load), ``protocol``.
    * ``restarted_after`` (dict): restarts by the reason of the failure each followed (same keys; sums to
      ``restarts``): a crashed worker restarts on the next call, one given up on never does.
    * ``inflight`` (int): calls and streams running on the worker now.
    """

    state: WorkerState
    pid: int | None
    restarts: int
    last_exit: str | None
    backend: Literal["process", "subinterp"]
    failures: int
    restart_reasons: dict[str, int]
    restarted_after: dict[str, int]
    inflight: int


@dataclass(frozen=True)
class WorkerSpec:
    """What to run: the model, the interpreter of its environment, the backend, and how calls run in it."""

    name: str
    python: str
    model_dir: str
    entrypoint: str
    backend: Literal["process", "subinterp"] = "process"
    concurrency: Concurrency = "serial"
    max_inflight: int = 1


def launch(spec: WorkerSpec) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start the worker process of ``spec`` with its end of a new socketpair; the host's end is returned.

    Raises :class:`WorkerError` when the process cannot be started.
    """
    try:
        parent, child = socket.socketpair()
    except OSError as exc:
        raise WorkerError(f"model '{spec.name}' worker could not start: {exc}") from exc
    argv = [spec.python, "-I", str(WORKER_SCRIPT), "--fd", str(child.fileno()), "--name", spec.name]
    argv += ["--model-dir", spec.model_dir, "--entrypoint", spec.entrypoint, "--backend", spec.backend]
    argv += ["--concurrency", spec.concurrency, "--max-inflight", str(spec.max_inflight)]
    try:
        proc = subprocess.Popen(
            argv,
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=spec.model_dir,
            start_new_session=True,  # its own process group: killing it kills whatever it started
        )
    except OSError as exc:
        parent.close()
        raise WorkerError(f"model '{spec.name}' worker could not start: {exc}") from exc
    finally:
        child.close()
    return proc, parent


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group (the worker and whatever it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            proc.kill()
