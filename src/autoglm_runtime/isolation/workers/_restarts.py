"""The crash-loop policy of one worker: failures in a row, the backoff before a restart, and giving up."""

from __future__ import annotations

import time
from collections.abc import Callable

from autoglm_runtime.errors import WorkerError

__all__ = ["RestartPolicy"]


class RestartPolicy:
    """Counts a worker's failures in a row -- deaths, timeouts, failed reloads -- since its last good call.

    After the n-th failure in a row a restart waits ``backoff * 2**(n-1)`` s (at most ``max_backoff``);
    after more than ``max_restarts`` failures in a row the worker is given up on. ``timer`` is the clock.

    >>> now = [0.0]
    >>> policy = RestartPolicy(max_restarts=2, backoff=0.1, max_backoff=5.0, timer=lambda: now[0])
    >>> policy.record("exited with status 3"); policy.delay(), policy.wait(), policy.exhausted
    (0.1, 0.1, False)
    """

    def __init__(
        self, max_restarts: int, backoff: float, max_backoff: float, *, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_restarts = max_restarts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.failures = 0
        self.last_failure: str | None = None
        self._failed_at = 0.0
        self._timer = timer

    def record(self, description: str) -> None:
        """One more failure in a row; ``description`` ("killed by signal 9 (SIGKILL)") is kept for messages."""
        self.failures += 1
        self.last_failure = description
        self._failed_at = self._timer()

    def succeeded(self) -> None:
        """A call succeeded: the count starts again."""
        self.failures = 0

    @property
    def exhausted(self) -> bool:
        """True once there were more than ``max_restarts`` failures in a row: no more restarts."""
        return self.failures > self.max_restarts

    def delay(self) -> float:
        """The backoff owed after the current run of failures (s)."""
        return min(self.backoff * 2.0 ** max(self.failures - 1, 0), self.max_backoff)

    def wait(self) -> float:
        """How long (s) until a restart may start; zero or less means now."""
        return self._failed_at + self.delay() - self._timer()

    def next_step(self, during_call: bool) -> str:
        """What a failure's message says happens next: during a handshake, start() gives up on the model."""
        if not during_call:
            return "the model was not loaded: read its stderr, fix it and load it again"
        if self.exhausted:
            return self.no_more_restarts()
        return "the next call restarts it"

    def no_more_restarts(self) -> str:
        return (
            f"it has failed {self.failures} times in a row, more than max_restarts={self.max_restarts}, and "
            "will not be restarted: fix it and load it again"
        )

    def gave_up(self, name: str) -> WorkerError:
        """The error every call to a given-up worker raises."""
        return WorkerError(
            f"model '{name}' failed {self.failures} times in a row (last: {self.last_failure}); gave up after "
            f"{self.max_restarts} restarts: read its stderr in the logs, fix it and load it again"
        )
