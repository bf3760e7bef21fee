"""Pipelined znode reads that arm the watches they need.

Two ways to read a batch, chosen by size:

* a few paths (watch events, small reconciler batches): ``get_async``/``get_children_async`` with our
  watch callback, all issued before any is waited on. The read arms the watch in the same round trip,
  which keeps change propagation as fast as a plain kazoo DataWatch;
* many paths (loads, resyncs): ``multiRead`` requests of up to ``batch_size`` reads, then ``setWatches``
  relative to the last zxid seen *before* the reads were issued. Anything changed after that zxid fires
  its watch at once, so no change between reading and arming is lost; the few spurious firings cost one
  re-read each. If the server does not answer a multiRead (ZooKeeper before 3.6), the reader falls back
  to the first way for good.

Every read carries a sequence number taken under one lock while it is queued: requests of a session are
answered in order, so a larger number means a view at least as new (see ``cache.py``).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoAuthError, NoNodeError

from autoglm_runtime.config._wire import GET_CHILDREN, GET_DATA, MAX_REQUEST_BYTES, MultiRead, SetWatches
from autoglm_runtime.config.health import SyncStatus

__all__ = ["BULK_MIN", "Interrupted", "ReadResult", "ZooKeeperReader"]

log = logging.getLogger("autoglm_runtime.config")

#: Batches at least this large use multiRead + setWatches.
BULK_MIN = 16

Spec = tuple[str, bool, bool]  # path, read data, read children


class Interrupted(Exception):
    """The connection went away (or a read timed out) in the middle of a batch."""


class ReadResult:
    """What one path's read found."""

    __slots__ = ("children", "data", "denied", "missing", "path", "seq", "stat")

    def __init__(self, path: str, seq: int) -> None:
        self.path = path
        self.seq = seq
        self.data: bytes | None = None
        self.stat: Any = None
        self.children: list[str] | None = None
        self.missing = False
        self.denied = False

    def take(self, value: Any, *, children: bool) -> None:
        """Record one answer: a value, or a kazoo exception instance from a multiRead."""
        if isinstance(value, NoNodeError):
            self.missing = True
        elif isinstance(value, NoAuthError):
            self.denied = True
        elif isinstance(value, BaseException):
            raise Interrupted from value
        elif children:
            self.children = value
        else:
            self.data, self.stat = value


class ZooKeeperReader:
    """Issues reads for the sync thread and the reconciler (thread-safe)."""

    def __init__(
        self,
        *,
        client: KazooClient,
        watch: Callable[[Any], None],
        status: SyncStatus,
        batch_size: int,
        op_timeout: float,
        bulk: bool = True,
    ) -> None:
        self.client = client
        self._watch = watch
        self._status = status
        self._batch_size = max(1, batch_size)
        self._op_timeout = op_timeout
        self.bulk = bulk
        self._bulk_verified = False
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def read(self, specs: Sequence[Spec]) -> list[ReadResult]:
        """Read ``specs`` and arm their watches; raises :class:`Interrupted` if the connection drops."""
        if not self.client.connected:
            raise Interrupted
        if self.bulk and len(specs) >= BULK_MIN:
            return self._read_bulk(specs)
        return self._read_each(specs)

    def start_data_read(self, path: str) -> tuple[ReadResult, Any]:
        """Issue one data read (arming its watch) without waiting; pass the pair to :meth:`finish`."""
        with self._lock:
            result = ReadResult(path, next(self._seq))
            pending = self.client.get_async(path, watch=self._watch)
        self._status.add("reads")
        self._status.add("requests")
        return result, pending

    def finish(self, result: ReadResult, pending: Any) -> ReadResult:
        """Wait for a read started by :meth:`start_data_read`; raises :class:`Interrupted` on a drop."""
        result.take(self.wait(pending), children=False)
        return result

    def _server_path(self, path: str) -> str:
        chroot: str = self.client.chroot
        if not chroot:
            return path
        return chroot if path == "/" else chroot + path

    def wait(self, pending: Any) -> Any:
        """The answer of one kazoo request: its value, or a ``NoNodeError``/``NoAuthError`` instance."""
        try:
            return pending.get(timeout=self._op_timeout)
        except (NoNodeError, NoAuthError) as exc:
            return exc
        except (KazooException, self.client.handler.timeout_exception) as exc:
            raise Interrupted from exc

    def _read_each(self, specs: Sequence[Spec]) -> list[ReadResult]:
        out: list[ReadResult] = []
        for start in range(0, len(specs), self._batch_size):
            issued: list[tuple[ReadResult, Any, Any]] = []
            reads = 0
            with self._lock:
                for path, want_data, want_children in specs[start : start + self._batch_size]:
                    result = ReadResult(path, next(self._seq))
                    data = self.client.get_async(path, watch=self._watch) if want_data else None
                    kids = self.client.get_children_async(path, watch=self._watch) if want_children else None
                    reads += int(want_data) + int(want_children)
                    issued.append((result, data, kids))
            self._status.add("reads", reads)
            self._status.add("requests", reads)
            for result, data, kids in issued:
                if data is not None:
                    result.take(self.wait(data), children=False)
                if kids is not None:
                    result.take(self.wait(kids), children=True)
                out.append(result)
        return out

    def _read_bulk(self, specs: Sequence[Spec]) -> list[ReadResult]:
        if not self.client.last_zxid:
            self.wait(self.client.exists_async("/"))  # learn a zxid to arm the watches relative to
        relative = self.client.last_zxid
        issued: list[tuple[list[tuple[ReadResult, bool]], Any]] = []
        reads = 0
        with self._lock:
            for start in range(0, len(specs), self._batch_size):
                plan: list[tuple[ReadResult, bool]] = []
                ops: list[tuple[int, str]] = []
                for path, want_data, want_children in specs[start : start + self._batch_size]:
                    result = ReadResult(path, next(self._seq))
                    server = self._server_path(path)
                    if want_data:
                        plan.append((result, False))
                        ops.append((GET_DATA, server))
                    if want_children:
                        plan.append((result, True))
                        ops.append((GET_CHILDREN, server))
                pending = self.client.handler.async_result()
                self.client._call(MultiRead(ops), pending)
                issued.append((plan, pending))
                reads += len(ops)
        self._status.add("reads", reads)
        self._status.add("requests", len(issued))
        out: list[ReadResult] = []
        for plan, pending in issued:
            answers = self._bulk_answers(pending)
            for (result, children), answer in zip(plan, answers, strict=True):
                result.take(answer, children=children)
                if not out or out[-1] is not result:
                    out.append(result)
        self._arm(out, relative)
        return out

    def _bulk_answers(self, pending: Any) -> list[Any]:
        try:
            answers = pending.get(timeout=self._op_timeout)
        except (KazooException, self.client.handler.timeout_exception, ValueError) as exc:
            if not self._bulk_verified:
                self.bulk = False
                log.info("ZooKeeper did not answer a multiRead (needs 3.6+); reading znodes one by one")
            raise Interrupted from exc
        self._bulk_verified = True
        return list(answers)

    def _arm(self, results: Sequence[ReadResult], relative: int) -> None:
        self.arm(
            [r.path for r in results if r.stat is not None],
            [r.path for r in results if r.children is not None],
            relative,
        )

    def arm(self, data_paths: Sequence[str], child_paths: Sequence[str], relative: int) -> None:
        """Arm our data watch on ``data_paths`` and child watch on ``child_paths`` with ``setWatches``.

        The server fires at once every watch whose znode changed after zxid ``relative`` (or vanished), so
        a cache that reflects every change up to ``relative`` misses nothing.
        """
        data = [self._server_path(p) for p in data_paths]
        children = [self._server_path(p) for p in child_paths]
        # Register our callback where kazoo looks for it before the server can fire anything.
        for path in data:
            self.client._data_watchers[path].add(self._watch)
        for path in children:
            self.client._child_watchers[path].add(self._watch)
        requests: list[Any] = []
        with self._lock:
            for data_part, children_part in _chunks(data, children):
                pending = self.client.handler.async_result()
                self.client._call(SetWatches(relative, data_part, (), children_part), pending)
                requests.append(pending)
        self._status.add("requests", len(requests))
        for pending in requests:
            answer = self.wait(pending)
            if isinstance(answer, BaseException):
                raise Interrupted from answer


def _chunks(data: list[str], children: list[str]) -> list[tuple[list[str], list[str]]]:
    """Split watch paths into setWatches requests that stay under the packet limit."""
    out: list[tuple[list[str], list[str]]] = []
    current: tuple[list[str], list[str]] = ([], [])
    size = 0
    for index, paths in ((0, data), (1, children)):
        for path in paths:
            cost = len(path.encode("utf-8")) + 4
            if size + cost > MAX_REQUEST_BYTES and (current[0] or current[1]):
                out.append(current)
                current, size = ([], []), 0
            current[index].append(path)
            size += cost
    if current[0] or current[1]:
        out.append(current)
    return out
