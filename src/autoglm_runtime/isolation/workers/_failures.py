"""How a model's worker processes ended, and what that counts for: the restart policy's run of failures,
restart reasons for health, and which deaths were ours (a stop we chose is never a crash).

One :class:`FailureLog` per :class:`~autoglm_runtime.isolation.workers.process.WorkerProcess`, used under its
state lock.
"""

from __future__ import annotations

import collections
import subprocess

from autoglm_runtime.isolation.workers._output import OutputPump, describe_exit, exit_reason, oom_kill_count
from autoglm_runtime.isolation.workers._restarts import RestartPolicy
from autoglm_runtime.isolation.workers.spec import kill_group

__all__ = ["FailureLog"]


class FailureLog:
    """The failures of one worker across its processes: each counted once, by reason."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.reasons: collections.Counter[str] = collections.Counter()
        #: Restarts by the reason of the failure each followed (a failure is restarted lazily, or never).
        self.restarted_after: collections.Counter[str] = collections.Counter()
        self._cause: str | None = None  # the reason of the last failure not yet followed by a restart
        self.spawns = 0
        self._oom_at_spawn: int | None = None
        self._recorded: set[int] = set()  # pids whose death was recorded
        self._stopped: set[int] = set()  # pids whose process group we killed

    def spawned(self) -> None:
        """A new process started: the OOM-kill count to compare its end against."""
        self._oom_at_spawn = oom_kill_count()
        if self.spawns:
            self.restarted_after[self._cause or "exit"] += 1
        self._cause = None
        self.spawns += 1

    def stopping(self, pid: int) -> bool:
        """We are stopping ``pid`` (its end is not a crash); False when it was stopped already."""
        if pid in self._stopped:
            return False
        self._stopped.add(pid)
        return True

    def count(self, description: str, reason: str) -> None:
        """One more failure in a row, described for messages and counted under ``reason`` in health."""
        self.policy.record(description)
        self.reasons[reason] += 1
        self._cause = reason

    def count_kill(self, pid: int, description: str, reason: str) -> None:
        """A process we killed for ``reason`` (a timeout, no heartbeat): one failure, unless its own death was counted
        first (it died as we decided to kill it: one failure, not two)."""
        if pid in self._recorded:
            return
        self._recorded.add(pid)
        self.count(description, reason)

    def record_exit(self, proc: subprocess.Popen[bytes]) -> bool:
        """Count how ``proc`` ended (exit status, signal, OOM kill), once, unless we stopped it; True if counted now."""
        if proc.pid in self._recorded or proc.pid in self._stopped:
            return False
        self._recorded.add(proc.pid)
        code = proc.wait()
        now_oom = oom_kill_count()
        oom = now_oom is not None and self._oom_at_spawn is not None and now_oom > self._oom_at_spawn
        self.count(describe_exit(code, oom=oom), exit_reason(code, oom=oom))
        return True


def reap(proc: subprocess.Popen[bytes], pump: OutputPump | None) -> list[str]:
    """Wait for a worker whose socket broke (killing one that lives on without it); its last stderr lines."""
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # it closed the socket but lives on: it is of no use any more
        kill_group(proc)
    if pump is None:
        return []
    pump.finish(5)
    return pump.stderr_tail[-5:]
