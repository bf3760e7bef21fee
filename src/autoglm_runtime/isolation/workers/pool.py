"""The replicas of one model behind one bounded queue: least-loaded dispatch, overload, heartbeats, drain.

Promises:

* a call goes to the replica with the fewest calls in flight that runs fewer than ``max_inflight``; when every
  replica is full it waits in a FIFO queue (its timeout counts), and when ``max_queue`` calls already wait it
  is refused at once with :class:`ModelOverloadedError` (E0106, HTTP 503 with ``Retry-After``, gRPC
  ``RESOURCE_EXHAUSTED``); nothing unbounded. Its ``retry_after`` is whole seconds, from the queue ahead, the
  replicas, how long recent calls held a replica and how long the calls holding one still have to run, within
  ``[retry_after, max_retry_after]`` (see ``_retry.py``);
* replicas fail independently: a crash fails only the calls in flight on that replica, and a replica given up on
  takes no calls while another serves (they wait for it instead);
* one heartbeat thread per model (``autoglm-model-<name>-heartbeat``) pings every ready replica every
  ``heartbeat_interval`` s and restarts one whose ping went unanswered ``heartbeat_timeout`` s;
* a stream whose consumer leaves a chunk unread for ``unread_timeout`` s (up to twice that) is closed and its
  place given back (the consumer's next read raises E0305), its worker killed and restarted should the model's
  current step not return within ``unread_timeout`` s more (see ``_unread.py``);
* :meth:`ReplicaPool.close` refuses new calls, lets calls in flight and queued finish until ``drain_timeout``,
  then stops every replica: no process or thread is left.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from autoglm_runtime.errors import ModelOverloadedError, ModelTimeoutError, WorkerError
from autoglm_runtime.isolation.workers import _forks, calls, streams
from autoglm_runtime.isolation.workers._connection import Connection
from autoglm_runtime.isolation.workers._retry import HeldTime, retry_after
from autoglm_runtime.isolation.workers._state import Heartbeat, heartbeat_step
from autoglm_runtime.isolation.workers.process import WorkerHealth, WorkerProcess
from autoglm_runtime.isolation.workers.streams import AsyncModelStream, ModelStream

__all__ = ["ReplicaPool"]


class _Waiter:
    """A call waiting in the queue; :meth:`grant` hands it a replica (under the pool's lock)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.worker: WorkerProcess | None = None
        self.error: BaseException | None = None
        self.event = threading.Event()
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None

    def wake(self) -> None:
        self.event.set()
        if self.loop is not None and self.future is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits any more
                self.loop.call_soon_threadsafe(_settle, self.future)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Heartbeat:
    """The pings of one replica: when the last was sent, and since when one waits for its answer."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.conn: Connection | None = None
        self.last_ping = 0.0
        self.unanswered_since: float | None = None

    def tick(self, now: float, interval: float, timeout: float) -> None:
        conn = self.worker.ready_connection()
        if conn is not self.conn:  # a new worker process (or none): start afresh
            self.conn, self.unanswered_since = conn, None
        if conn is None or conn.inflight:  # between calls only: a hung call is its timeout's to catch
            self.unanswered_since = None
            return
        if self.unanswered_since is not None and conn.last_pong >= self.unanswered_since:
            self.unanswered_since = None  # answered
        step = heartbeat_step(now, self.last_ping, self.unanswered_since, interval, timeout)
        if step is Heartbeat.PING:
            self.last_ping = now
            if self.unanswered_since is None:
                self.unanswered_since = now
            conn.ping(int(now * 1000))
        elif step is Heartbeat.HUNG and self.unanswered_since is not None:
            silent = f"answered no heartbeat for {now - self.unanswered_since:.1f} s (limit {timeout:g} s)"
            self.unanswered_since = None
            self.worker.restart_hung(conn, silent)


class ReplicaPool:
    """Started workers of one model (its replicas), served as one; thread-safe."""

    def __init__(
        self,
        name: str,
        workers: Sequence[WorkerProcess],
        *,
        max_inflight: int = 1,
        max_queue: int = 64,
        heartbeat_interval: float | None = 5.0,
        heartbeat_timeout: float = 30.0,
        retry_after: float = 1.0,
        max_retry_after: float = 60.0,
        unread_timeout: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.workers = tuple(workers)
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self._heartbeat = (heartbeat_interval, heartbeat_timeout)
        self._retry_after = (retry_after, max_retry_after)
        self._held = HeldTime()
        self._unread = unread_timeout
        self._timer = timer
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._load = dict.fromkeys(self.workers, 0)
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._closing = False
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _forks.track(self)

    def forget_parent(self) -> None:
        """(In a forked child, see :mod:`._forks`; its workers forgot theirs first) the parent's calls in flight and
        queued are the parent's: the child starts with none, and with a heartbeat thread of its own."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._load = dict.fromkeys(self.workers, 0)
        self._waiters = collections.deque()
        self._held.forget_holders()
        stopped = self._stop.is_set()
        self._stop = threading.Event()
        beating, self._thread = self._thread is not None, None
        if stopped:
            self._stop.set()
        elif beating:
            self.start()

    def start(self) -> None:
        """Start the heartbeat thread (the workers are started already)."""
        if self._heartbeat[0] is not None and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name=f"autoglm-model-{self.name}-heartbeat", daemon=True)
            self._thread.start()

    # --- calls ----------------------------------------------------------------------------------------

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None) -> Any:
        calls.check_timeout(self.name, method, timeout)
        now = self._timer()
        deadline = None if timeout is None else now + timeout
        with self._lock:  # a free replica, taken at once (as _pick would); anything else goes the general way
            worker = None if self._closing else self._least_loaded()
            if worker is not None:
                self._load[worker] += 1
                token = self._held.take(now)
        if worker is None:
            worker = self._acquire(method, timeout, deadline)
            token = self._taken()
        try:
            return calls.call(worker, method, args, kwargs, timeout, deadline)
        finally:
            self._release(worker, token)

    async def acall(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None) -> Any:
        calls.check_timeout(self.name, method, timeout)
        deadline = None if timeout is None else self._timer() + timeout
        worker = await self._aacquire(method, timeout, deadline)
        # Released once the worker is done with the call: after a cancel, when its answer comes (see calls.acall)
        return await calls.acall(worker, method, args, kwargs, timeout, deadline, self._releaser(worker))

    def stream(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None) -> ModelStream:
        calls.check_timeout(self.name, method, timeout)
        deadline = None if timeout is None else self._timer() + timeout
        worker = self._acquire(method, timeout, deadline)
        # (streams.stream releases the replica once the worker is done with the stream, also when it raises)
        return streams.stream(worker, method, args, kwargs, timeout, self._releaser(worker), self._unread)

    def astream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> AsyncModelStream:
        calls.check_timeout(self.name, method, timeout)

        async def opener() -> Any:
            deadline = None if timeout is None else self._timer() + timeout
            worker = await self._aacquire(method, timeout, deadline)
            return await streams.open_astream(
                worker, method, args, kwargs, timeout, self._releaser(worker), self._unread
            )

        return AsyncModelStream(opener)

    # --- health and close -----------------------------------------------------------------------------

    def health(self) -> list[WorkerHealth]:
        """Each replica's :meth:`WorkerProcess.health`, in replica order."""
        return [worker.health() for worker in self.workers]

    @property
    def queued(self) -> int:
        """Calls waiting in the queue now."""
        with self._lock:
            return len(self._waiters)

    def close(self, drain_timeout: float | None = None, grace: float = 5.0) -> None:
        """Refuse new calls; wait up to ``drain_timeout`` s (``None``: not at all) for calls in flight and queued
        to finish; then stop the heartbeat and every replica (calls still running fail with E0103)."""
        with self._lock:
            self._closing = True
            if drain_timeout is not None:
                end = self._timer() + drain_timeout
                while self._waiters or any(self._load.values()):
                    left = end - self._timer()
                    if left <= 0:
                        break
                    self._idle.wait(left)
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            waiter.error = WorkerError(f"model '{self.name}' was closed while a call waited in its queue")
            waiter.wake()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)
        for worker in self.workers:
            worker.close(grace)
        with self._lock:
            self._closed = True

    # --- internals ------------------------------------------------------------------------------------

    def _releaser(self, worker: WorkerProcess) -> Callable[[], None]:
        token = self._taken()
        return lambda: self._release(worker, token)

    def _taken(self) -> int:
        """(A call just took its place) the token its release gives to :class:`HeldTime`."""
        now = self._timer()
        with self._lock:
            return self._held.take(now)

    def _pick(self, method: str, loop: asyncio.AbstractEventLoop | None) -> WorkerProcess | _Waiter:
        with self._lock:
            if self._closed:
                raise WorkerError(f"model '{self.name}' was closed; load it again to use it")
            if self._closing:
                raise WorkerError(f"model '{self.name}' is closing; {method}() was refused")
            worker = self._least_loaded()
            if worker is not None:
                self._load[worker] += 1
                return worker
            if len(self._waiters) >= self.max_queue:
                least, most = self._retry_after
                places = len(self._serving()) * self.max_inflight
                now = self._timer()
                wait = retry_after(
                    queued=len(self._waiters),
                    places=places,
                    held=self._held.typical(now),
                    ages=self._held.ages(now),
                    least=least,
                    most=most,
                )
                raise ModelOverloadedError(
                    f"model '{self.name}' is overloaded: its {len(self.workers)} replica(s) each run "
                    f"max_inflight={self.max_inflight} calls and {len(self._waiters)} more wait in its queue "
                    f"(max_queue={self.max_queue}); {method}() was refused without running: retry after "
                    f"{wait} s, or raise replicas, max_inflight or max_queue in its [serving] table",
                    retry_after=wait,
                )
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
            return waiter

    def _least_loaded(self) -> WorkerProcess | None:
        """(Under the lock) the replica with the fewest calls below ``max_inflight`` among those not given up; while
        one is not, a call waits for it rather than fail on a given-up one (when all are, a call fails at once)."""
        if len(self.workers) == 1:  # (no other replica to prefer)
            only = self.workers[0]
            return only if self._load[only] < self.max_inflight else None
        best: WorkerProcess | None = None
        fewest = self.max_inflight
        for worker in self._serving():
            load = self._load[worker]
            if load < fewest:
                best, fewest = worker, load
        return best

    def _serving(self) -> Sequence[WorkerProcess]:
        """The replicas not given up, or all of them when every one is (its calls then fail at once, saying so)."""
        live = [worker for worker in self.workers if not worker.given_up]
        return live or self.workers

    def _granted(self, waiter: _Waiter, method: str, timeout: float | None) -> WorkerProcess:
        """The replica a waiter got; on a timeout its place in the queue (or its replica) is given back."""
        with self._lock:
            worker, error = waiter.worker, waiter.error
            if worker is None and error is None:
                self._waiters.remove(waiter)
        if error is not None:
            raise error
        if worker is None:
            raise ModelTimeoutError(
                f"model '{self.name}' did not answer {method}() within {calls.seconds(timeout)}: the call waited all "
                f"that time in the queue for one of its {len(self.workers)} replica(s) (max_inflight="
                f"{self.max_inflight}); no worker was restarted: raise the timeout or add replicas"
            )
        return worker

    def _acquire(self, method: str, timeout: float | None, deadline: float | None) -> WorkerProcess:
        picked = self._pick(method, None)
        if isinstance(picked, WorkerProcess):
            return picked
        picked.event.wait(None if deadline is None else max(deadline - self._timer(), 0.0))
        return self._granted(picked, method, timeout)

    async def _aacquire(self, method: str, timeout: float | None, deadline: float | None) -> WorkerProcess:
        picked = self._pick(method, asyncio.get_running_loop())
        if isinstance(picked, WorkerProcess):
            return picked
        assert picked.future is not None
        try:
            left = None if deadline is None else max(deadline - self._timer(), 0.0)
            await asyncio.wait_for(asyncio.shield(picked.future), left)
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            with self._lock:
                granted = picked.worker
                if granted is None:
                    self._waiters.remove(picked)
            if granted is not None:
                self._release(granted)
            raise
        return self._granted(picked, method, timeout)

    def _release(self, worker: WorkerProcess, token: int | None = None) -> None:
        """Give ``worker``'s place back; ``token``: :meth:`_taken`'s for the call (its time counts in
        :class:`HeldTime`), ``None`` for a place its call never used (its caller gave up first)."""
        now = None if token is None else self._timer()
        with self._lock:
            if now is not None and token is not None:
                self._held.give(token, now)
            # The freed place goes straight to the first waiter (its load stays), unless it is a given-up replica's
            # while another serves: the waiter is that one's, as soon as it frees a place.
            if self._waiters and (len(self.workers) == 1 or worker in self._serving()):
                waiter = self._waiters.popleft()
                waiter.worker = worker
                waiter.wake()
                return
            self._load[worker] -= 1
            if self._closing:  # close() drains: it waits for the last call
                self._idle.notify_all()

    def _beat(self) -> None:
        interval, timeout = self._heartbeat
        assert interval is not None
        beats = [_Heartbeat(worker) for worker in self.workers]
        while not self._stop.wait(interval / 4):
            for beat in beats:
                if self._stop.is_set():
                    return
                try:
                    beat.tick(self._timer(), interval, timeout)
                except Exception:  # a failed restart is recorded on the worker; the next call reports it
                    continue
