"""Pipelined znode reads that arm the watches they need.

Two ways to read a batch, chosen by size:

* a few paths (watch events, small reconciler batches): ``get_async``/``get_children_async`` with our
  watch callback, all issued before any is waited on. The read arms the watch in the same round trip,
  which keeps change propagation as fast as a plain kazoo DataWatch;
* many paths (loads, resyncs): ``multiRead`` requests of up to ``batch_size`` reads, then ``setWatches``
  relative to the last zxid seen *before* the reads were issued. Anything changed after that zxid fires
  its watch at once, so no change between reading and arming is lost; the few spurious firings cost one
  re-read each. Requests are cut by count and by bytes (``MAX_REQUEST_BYTES``: ZooKeeper drops the
  connection of a request over ``jute.maxbuffer``). If a bulk request's connection drops, the next ones
  are half the size; after a second drop in a row the next batch is read the first way.

If the server answers a multiRead with UNIMPLEMENTED or a marshalling error (ZooKeeper before 3.6), the
reader falls back to the first way for good. Any other unexpected failure of the private kazoo calls this
needs (``_call``, ``_data_watchers``) downgrades it once, logged as E0409, to plain reads and full re-reads
(``bulk`` and ``rearm`` False), and :meth:`ZooKeeperReader.self_check` verifies them on the first connect.

Every read carries a sequence number taken under one lock while it is queued: requests of a session are
answered in order, so a larger number means a view at least as new (see ``cache.py``).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Container, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    MarshallingError,
    NoAuthError,
    NoNodeError,
    SessionExpiredError,
    UnimplementedError,
)

from autoglm_runtime.config._results import Interrupted, ReadResult
from autoglm_runtime.config._wire import (
    GET_CHILDREN,
    GET_DATA,
    MAX_REQUEST_BYTES,
    UNKNOWN_DATA_BYTES,
    MultiRead,
    SetWatches,
    Spec,
    kazoo_internals_problems,
    plan_batches,
    same_answers,
    setwatches_chunks,
)
from autoglm_runtime.config.health import SyncStatus

__all__ = ["BULK_MIN", "Spec", "ZooKeeperReader"]

log = logging.getLogger("autoglm_runtime.config")

#: Batches at least this large use multiRead + setWatches.
BULK_MIN = 16
#: The smallest byte budget halving goes down to after drops.
_MIN_REQUEST_BYTES = 16 * 1024
_DROPS = (ConnectionLoss, ConnectionClosedError, SessionExpiredError)


class _Downgrade(Exception):
    """The multiRead path cannot be used with this server or kazoo version; read znodes one by one."""


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
        #: setWatches may be used (re-arming after a reconnect); False after a failed self-check.
        self.rearm = True
        #: Reads arm one-shot watches (per-node watch mode); False under a persistent recursive watch.
        self.watching = True
        #: :meth:`self_check` passed or downgraded (it runs once, on the first connect).
        self.checked = False
        self._bulk_verified = False
        self._max_bytes = MAX_REQUEST_BYTES
        self._bulk_drops = 0
        self._plain_next = False
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        #: The data size each znode had when last read: what its next data read may answer (multiRead plans).
        #: The sync and reconciler threads share it without a lock: each use is one get, set, pop or copy (atomic
        #: on a dict), and a size another thread just changed misplans one batch at worst. Znodes found gone are
        #: forgotten: read missing, removed with their parent (:meth:`forget_size`), or not reached by a full read
        #: (:meth:`keep_sizes`: deleted during an outage, they are never read again).
        self._sizes: dict[str, int] = {}

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def read(self, specs: Sequence[Spec]) -> list[ReadResult]:
        """Read ``specs`` and arm their watches; raises :class:`Interrupted` if the connection drops."""
        if not self.client.connected:
            raise Interrupted
        if self.bulk and len(specs) >= BULK_MIN:
            if not self._plain_next:
                try:
                    return self._read_bulk(specs)
                except _Downgrade:
                    pass
            self._plain_next = False
        return self._read_each(specs)

    def stats(self, paths: Sequence[str]) -> list[tuple[Any, int]]:
        """The stat of each of ``paths`` (None where it does not exist) and the sequence number of its read:
        pipelined ``exists`` requests, which carry no data and arm no watch."""
        if not self.client.connected:
            raise Interrupted
        issued: list[tuple[Any, int]] = []
        with self._lock:
            for path in paths:
                seq = next(self._seq)
                issued.append((self.client.exists_async(path), seq))
        self._status.add("reads", len(paths))
        self._status.add("requests", len(paths))
        out: list[tuple[Any, int]] = []
        for pending, seq in issued:
            stat = self.wait(pending)
            if isinstance(stat, BaseException):
                raise Interrupted from stat  # NoAuth on exists: let the full read say it
            out.append((stat, seq))
        return out

    def start_read(self, path: str, *, children: bool = False) -> tuple[ReadResult, Any]:
        """Issue one data read (and a child-list read if ``children``), arming their watches, without
        waiting; pass the pair to :meth:`finish`."""
        with self._lock:
            result = ReadResult(path, next(self._seq))
            watch = self._watch if self.watching else None
            data = self.client.get_async(path, watch=watch)
            kids = self.client.get_children_async(path, watch=watch) if children else None
        reads = 1 + int(children)
        self._status.add("reads", reads)
        self._status.add("requests", reads)
        return result, (data, kids)

    def finish(self, result: ReadResult, pending: Any) -> ReadResult:
        """Wait for reads started by :meth:`start_read`; raises :class:`Interrupted` on a drop."""
        data, kids = pending
        result.take(self.wait(data), children=False)
        if kids is not None:
            result.take(self.wait(kids), children=True)
        self._learn(result)
        return result

    def forget_size(self, path: str) -> None:
        """``path`` is gone: its size plans no read any more."""
        self._sizes.pop(path, None)

    def keep_sizes(self, paths: Container[str]) -> None:
        """Forget the size of every znode not in ``paths`` (what a full read found)."""
        for path in [p for p in self._sizes.copy() if p not in paths]:
            self._sizes.pop(path, None)

    def _learn(self, result: ReadResult) -> None:
        if result.stat is not None:
            self._sizes[result.path] = result.stat.dataLength
        elif result.missing:
            self._sizes.pop(result.path, None)

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
            watch = self._watch if self.watching else None
            with self._lock:
                for path, want_data, want_children in specs[start : start + self._batch_size]:
                    result = ReadResult(path, next(self._seq))
                    data = self.client.get_async(path, watch=watch) if want_data else None
                    kids = self.client.get_children_async(path, watch=watch) if want_children else None
                    reads += int(want_data) + int(want_children)
                    issued.append((result, data, kids))
            self._status.add("reads", reads)
            self._status.add("requests", reads)
            for result, data, kids in issued:
                if data is not None:
                    result.take(self.wait(data), children=False)
                if kids is not None:
                    result.take(self.wait(kids), children=True)
                self._learn(result)
                out.append(result)
        return out

    def _read_bulk(self, specs: Sequence[Spec]) -> list[ReadResult]:
        if self.watching and not self.client.last_zxid:
            self.wait(self.client.exists_async("/"))  # learn a zxid to arm the watches relative to
        relative = self.client.last_zxid
        issued: list[tuple[list[tuple[ReadResult, bool]], Any]] = []
        reads = 0
        ends = plan_batches(
            specs,
            count=self._batch_size,
            max_bytes=self._max_bytes,
            path_bytes=lambda path: len(self._server_path(path).encode("utf-8")),
            data_bytes=lambda path: self._sizes.get(path, UNKNOWN_DATA_BYTES),
        )
        with self._lock:
            for start, end in zip([0, *ends[:-1]], ends, strict=True):
                plan: list[tuple[ReadResult, bool]] = []
                ops: list[tuple[int, str]] = []
                for path, want_data, want_children in specs[start:end]:
                    result = ReadResult(path, next(self._seq))
                    server = self._server_path(path)
                    if want_data:
                        plan.append((result, False))
                        ops.append((GET_DATA, server))
                    if want_children:
                        plan.append((result, True))
                        ops.append((GET_CHILDREN, server))
                pending = self.client.handler.async_result()
                try:
                    self.client._call(MultiRead(ops), pending)
                except Exception as exc:
                    self._downgrade(f"KazooClient._call failed: {type(exc).__name__}: {exc}")
                    raise _Downgrade from exc
                issued.append((plan, pending))
                reads += len(ops)
        self._status.add("reads", reads)
        self._status.add("requests", len(issued))
        out: list[ReadResult] = []
        for plan, pending in issued:
            answers = self._bulk_answers(pending, len(plan))
            for (result, children), answer in zip(plan, answers, strict=True):
                result.take(answer, children=children)
                if not out or out[-1] is not result:
                    out.append(result)
        for result in out:
            self._learn(result)
        self._bulk_drops = 0
        if self.watching:
            self._arm(out, relative)
        return out

    def _bulk_answers(self, pending: Any, expected: int) -> list[Any]:
        try:
            answers = list(pending.get(timeout=self._op_timeout))
        except (UnimplementedError, MarshallingError) as exc:
            self.bulk = False
            log.info(
                "ZooKeeper does not support multiRead (needs 3.6+: %s); reading znodes one by one",
                type(exc).__name__,
                extra={"hosts": getattr(self.client, "hosts", None)},
            )
            raise _Downgrade from exc
        except (*_DROPS, self.client.handler.timeout_exception) as exc:
            # Maybe the request was too large for the server (jute.maxbuffer): send smaller ones next,
            # and after a second drop in a row read the next batch znode by znode.
            self._bulk_drops += 1
            self._max_bytes = max(_MIN_REQUEST_BYTES, self._max_bytes // 2)
            self._batch_size = max(BULK_MIN, self._batch_size // 2)
            if self._bulk_drops >= 2:
                self._plain_next = True
                self._bulk_drops = 0
            raise Interrupted from exc
        except Exception as exc:
            self._downgrade(f"a multiRead failed: {type(exc).__name__}: {exc}")
            raise _Downgrade from exc
        if len(answers) != expected:
            self._downgrade(f"a multiRead answered {len(answers)} results for {expected} reads")
            raise _Downgrade
        self._bulk_verified = True
        return answers

    def _downgrade(self, reason: str) -> None:
        """Stop using kazoo's private internals for good: plain reads, and full re-reads after reconnects."""
        if self.bulk or self.rearm:
            log.warning(
                "config sync cannot use multiRead/setWatches (%s); reading znodes one by one and re-reading "
                "the whole tree after each reconnect",
                reason,
                extra={"error_code": "E0409", "reason": reason},
            )
        self.bulk = False
        self.rearm = False

    def self_check(self, path: str) -> None:
        """Verify, once, the kazoo internals bulk reads and re-arming rely on; downgrade if any is off.

        Checks that ``KazooClient._call`` exists, that ``_data_watchers``/``_child_watchers`` map paths to
        sets, that ``last_zxid`` is an int, and that a multiRead of ``path`` answers what plain
        ``get``/``get_children`` do. Raises :class:`Interrupted` on a drop (it runs again next time).
        """
        problems = kazoo_internals_problems(self.client)
        if not problems and self.bulk:
            mismatch = self._compare_multiread(path)
            if mismatch:
                problems.append(mismatch)
        if problems:
            self._downgrade("; ".join(problems))
        self.checked = True

    def _compare_multiread(self, path: str) -> str | None:
        server = self._server_path(path)
        for _ in range(3):  # the znode may change between the two reads: try again
            plain = [self.wait(self.client.get_async(path)), self.wait(self.client.get_children_async(path))]
            pending = self.client.handler.async_result()
            try:
                self.client._call(MultiRead([(GET_DATA, server), (GET_CHILDREN, server)]), pending)
                bulk = self._bulk_answers(pending, 2)
            except _Downgrade:
                return None if not self.rearm else "a multiRead of the root failed"
            self._status.add("reads", 4)
            self._status.add("requests", 3)
            if same_answers(plain, bulk):
                return None
        return f"a multiRead of {path} did not answer what get/get_children do"

    def _arm(self, results: Sequence[ReadResult], relative: int) -> None:
        self.arm(
            [r.path for r in results if r.stat is not None],
            [r.path for r in results if r.children is not None],
            relative,
        )

    def arm(
        self, data_paths: Sequence[str], child_paths: Sequence[str], relative: int, exist_paths: Sequence[str] = ()
    ) -> None:
        """Arm our data watch on ``data_paths``, child watch on ``child_paths`` and exists watch on
        ``exist_paths`` (absent znodes) with ``setWatches``.

        The server fires at once every watch whose znode changed after zxid ``relative`` (or vanished), so
        a cache that reflects every change up to ``relative`` misses nothing.
        """
        data = [self._server_path(p) for p in data_paths]
        children = [self._server_path(p) for p in child_paths]
        exist = [self._server_path(p) for p in exist_paths]
        requests: list[Any] = []
        try:
            # Register our callback where kazoo looks for it before the server can fire anything (kazoo
            # keeps exists watches with the data watches).
            for path in data + exist:
                self.client._data_watchers.setdefault(path, set()).add(self._watch)
            for path in children:
                self.client._child_watchers.setdefault(path, set()).add(self._watch)
            with self._lock:
                for data_part, exist_part, children_part in setwatches_chunks(data, exist, children):
                    pending = self.client.handler.async_result()
                    self.client._call(SetWatches(relative, data_part, exist_part, children_part), pending)
                    requests.append(pending)
        except Exception as exc:
            self._downgrade(f"setWatches could not be sent: {type(exc).__name__}: {exc}")
            raise Interrupted from exc
        self._status.add("requests", len(requests))
        for pending in requests:
            try:
                answer = pending.get(timeout=self._op_timeout)
            except (*_DROPS, self.client.handler.timeout_exception) as exc:
                raise Interrupted from exc
            except Exception as exc:
                self._downgrade(f"setWatches failed: {type(exc).__name__}: {exc}")
                raise Interrupted from exc
            if isinstance(answer, BaseException):
                raise Interrupted from answer
