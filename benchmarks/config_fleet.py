"""The fleet benchmark and the get() stall test, run by ``benchmarks/config_sync.py`` (sections 5 and 6).

5. N clients (ConfigClient with its persistent watch, ConfigClient with per-node watches, then the same number
   of kazoo TreeCaches) in several worker processes follow
   one tree on one real ZooKeeper server, each through a fault proxy of its process. Four outages: a
   reconnect (connections cut, session kept) and a session expiry, each with nothing changed and with 5% of
   the keys changed meanwhile. Per outage: server packets (mntr zk_packets_received) until the fleet
   converged and the server went quiet, the time until every client converged; and the server's watch
   count (mntr zk_watch_count) with the fleet loaded, extrapolated to 1,000 clients.
6. get() stall: a reader thread calls get() every 1 ms on a 100k-key cache while 100 keys/s change and the
   snapshot writer writes (debounce 0.2 s): the longest gap between two get() calls, with the incremental
   writer and with the whole-tree encoding it replaced (write_snapshot of every entry) as the peer, and the
   same loop without a writer (the machine's own scheduling floor).
7. Memory per key (tracemalloc, everything a started client holds) for a loaded tree of small JSON values:
   ConfigClient without and with a snapshot file, kazoo TreeCache, and a plain dict of the decoded values.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import tempfile
import threading
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.recipe.cache import TreeCache, TreeEvent

from autoglm_runtime.config import ConfigClient, SnapshotEntry, SyncTuning, ZooKeeperConnection, write_snapshot
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.snapshot import SnapshotWriter
from autoglm_runtime.testing import FaultProxy
from autoglm_runtime.testing._common import four_letter_word


def mntr(hosts: str) -> dict[str, int]:
    host, port = hosts.split(",", maxsplit=1)[0].rsplit(":", 1)
    reply = None
    for _ in range(20):  # a busy server may not answer a four-letter word at once
        reply = four_letter_word(host, int(port), "mntr", timeout=5.0)
        if reply:
            break
        time.sleep(0.5)
    if not reply:
        raise RuntimeError(f"ZooKeeper at {hosts} did not answer mntr")
    out = {}
    for line in reply.splitlines():
        name, _, value = line.partition("\t")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


# --- worker processes --------------------------------------------------------------------------------


def _worker(kind: str, count: int, server: str, root: str, conn: Any) -> None:
    host, port = server.rsplit(":", 1)
    proxy = FaultProxy(host, int(port)).start()
    clients: list[Any] = []
    kazoos: list[KazooClient] = []
    settings = ZooKeeperConnection(session_timeout=20.0, reconnect_max_delay=0.5)
    for _ in range(count):
        if kind != "treecache":
            made: list[KazooClient] = []

            def new_session(made: list[KazooClient] = made) -> KazooClient:
                # The first is the client's own; later ones are its short catch-up sessions after a gap.
                made.append(settings.kazoo_client(proxy.hosts))
                return made[-1]

            mode = "per_node" if kind == "config-per-node" else "auto"
            client = ConfigClient(
                proxy.hosts, root, ttl=3600.0, client_factory=new_session, tuning=SyncTuning(watch_mode=mode)
            )
            kazoos.append(made[0])
            client.start(timeout=300)
            clients.append(client)
        else:
            kazoo = settings.kazoo_client(proxy.hosts)
            kazoos.append(kazoo)
            kazoo.start(timeout=60)
            ready = threading.Event()
            cache = TreeCache(kazoo, root)
            cache.listen(lambda e, r=ready: r.set() if e.event_type == TreeEvent.INITIALIZED else None)
            cache.start()
            ready.wait(300)
            clients.append(cache)
    conn.send("loaded")
    while True:
        command, arg = conn.recv()
        if command == "cut":
            proxy.refuse()
            proxy.cut()
        elif command == "expire":
            for kazoo in kazoos:
                if kazoo.client_id is not None:
                    twin = KazooClient(hosts=server, client_id=kazoo.client_id)
                    twin.start(timeout=10)
                    twin.stop()
                    twin.close()
        elif command == "restore":
            proxy.restore()
        elif command == "wait":
            expected: dict[str, Any] = arg
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not all(_converged(kind, c, root, expected) for c in clients):
                time.sleep(0.01)
            conn.send(time.monotonic())
        elif command == "stop":
            for client in clients:
                client.stop() if kind != "treecache" else client.close()
            for kazoo in kazoos if kind == "treecache" else []:
                kazoo.stop()
                kazoo.close()
            proxy.stop()
            conn.send("stopped")
            return


def _converged(kind: str, client: Any, root: str, expected: dict[str, Any]) -> bool:
    if kind != "treecache":
        health = client.health()
        if not health["connected"] or health["stale_seconds"] > 0:
            return False
        return all(client.get(key) == value for key, value in expected.items())
    if not client._client.connected:
        return False
    for key, value in expected.items():
        data = client.get_data(f"{root}/{key}")
        if data is None or data.data != str(value).encode():
            return False
    return True


class Fleet:
    """``n`` clients of ``kind`` ("config" or "treecache") in ``processes`` worker processes."""

    def __init__(self, kind: str, n: int, server: str, root: str, processes: int = 4) -> None:
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        for share in (s for s in shares if s):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(kind, share, server, root, theirs), daemon=True)
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)
        for pipe in self.pipes:
            assert pipe.recv() == "loaded"

    def all(self, command: str, arg: Any = None) -> list[Any]:
        for pipe in self.pipes:
            pipe.send((command, arg))
        return [pipe.recv() for pipe in self.pipes] if command in ("wait", "stop") else []

    def stop(self) -> None:
        self.all("stop")
        for proc in self.procs:
            proc.join(30)


def _quiet(server: str, pings: int) -> int:
    """Wait until the server's packet count grows by no more than ``pings`` in 0.5 s; returns the count."""
    last = mntr(server)["zk_packets_received"]
    while True:
        time.sleep(0.5)
        now = mntr(server)["zk_packets_received"]
        if now - last <= pings:
            return now
        last = now


def outage(
    fleet: Fleet, server: str, admin: KazooClient, root: str, keys: list[str], *, expire: bool, share: float
) -> dict[str, float]:
    stamp = time.monotonic_ns()  # new JSON numbers, so both kinds of client compare them the same way
    changed = {key: stamp + i for i, key in enumerate(keys[: int(len(keys) * share)])}
    pings = len(fleet.procs) * 50
    fleet.all("cut")
    # With retries: on a loaded machine the admin session may drop while hundreds of clients reconnect.
    pending = [admin.set_async(f"{root}/{key}", str(value).encode()) for key, value in changed.items()]
    for (key, value), result in zip(changed.items(), pending, strict=True):
        try:
            result.get(timeout=30)
        except Exception:
            admin.retry(admin.set, f"{root}/{key}", str(value).encode())
    admin.retry(admin.sync, root)
    if expire:
        fleet.all("expire")
    before = _quiet(server, pings)
    t0 = time.monotonic()
    fleet.all("restore")
    converged = max(fleet.all("wait", dict(changed)))
    after = _quiet(server, pings)
    return {"packets": after - before, "seconds": converged - t0}


def bench_fleet(server: str, admin: KazooClient, root: str, keys: list[str], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("config", "config-per-node", "treecache"):
        base = mntr(server)["zk_watch_count"]
        fleet = Fleet(kind, n, server, root)
        try:
            watches = mntr(server)["zk_watch_count"] - base
            out[kind] = {"watches": watches}
            for name, expire, share in (
                ("reconnect, nothing changed", False, 0.0),
                ("reconnect, 5% changed", False, 0.05),
                ("expiry, nothing changed", True, 0.0),
                ("expiry, 5% changed", True, 0.05),
            ):
                out[kind][name] = outage(fleet, server, admin, root, keys, expire=expire, share=share)
        finally:
            fleet.stop()
    return out


# --- get() stall -------------------------------------------------------------------------------------


def _max_gap(cache: ConfigCache, stop: threading.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        cache.get("k0")
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        time.sleep(0.001)


def bench_stall(keys: int = 100_000, seconds: float = 5.0) -> dict[str, dict[str, float]]:
    out = {}
    for mode in ("no writer", "incremental", "whole tree"):
        cache = ConfigCache(ttl=3600.0)
        for i in range(keys):
            cache.offer(f"d{i // 100}/k{i}", i, str(i).encode() * 4, czxid=i + 1, mzxid=i + 1, seq=1)
        path = os.path.join(tempfile.mkdtemp(), "s.snapshot")

        def entries(cache: ConfigCache = cache) -> dict[str, SnapshotEntry]:
            return {k: SnapshotEntry(e.data, e.czxid, e.mzxid) for k, e in cache.entries().items()}

        def entry(key: str, cache: ConfigCache = cache) -> SnapshotEntry | None:
            e = cache.entry(key)
            return SnapshotEntry(e.data, e.czxid, e.mzxid) if e is not None else None

        if mode == "no writer":  # the floor: the same loop without snapshots (the machine's own scheduling gaps)

            class Idle(SnapshotWriter):
                def flush(self) -> None:
                    self._dirty.clear()
                    self._pending = False

            writer = Idle(path, hosts="h:1", root="/r", collect=entries, debounce=0.2)
        elif mode == "incremental":
            writer = SnapshotWriter(
                path, hosts="h:1", root="/r", collect=entries, entry=entry, lock=cache.lock, debounce=0.2
            )
        else:

            class Whole(SnapshotWriter):
                def flush(self) -> None:  # what every write did before: encode the whole tree again
                    self._dirty.clear()
                    self._pending = False
                    write_snapshot(self.path, hosts="h:1", root="/r", entries=entries())
                    self.writes += 1

            writer = Whole(path, hosts="h:1", root="/r", collect=entries, debounce=0.2)
        writer.mark_dirty()
        writer.flush()
        writer.start()
        stop, gaps = threading.Event(), []
        reader = threading.Thread(target=_max_gap, args=(cache, stop, gaps), name="bench-get")
        reader.start()
        cpu0, t0, i = time.process_time(), time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            for _ in range(10):
                key = f"d{i % keys // 100}/k{i % keys}"
                i += 1
                cache.offer(key, -i, b"x", czxid=i % keys + 1, mzxid=keys + i, seq=2)
                writer.mark_dirty(key)
            time.sleep(0.1)
        stop.set()
        reader.join()
        writer.stop()
        out[mode] = {
            "max_gap": max(gaps[10:]),
            "over_50ms": sum(1 for g in gaps if g > 0.05),
            "over_10ms": sum(1 for g in gaps if g > 0.011),
            "writes": writer.writes,
            "cpu": (time.process_time() - cpu0) / seconds,
        }
    return out


# --- memory per key ----------------------------------------------------------------------------------


def _traced(build: Any) -> tuple[Any, int]:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    built = build()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return built, used


def bench_memory(server: str, root: str) -> dict[str, float]:
    """Bytes per key of what a started client holds, for the tree under ``root``."""
    out: dict[str, float] = {}
    for name, snapshot in (("ConfigClient", None), ("ConfigClient + snapshot", "snapshot")):
        path = os.path.join(tempfile.mkdtemp(), "s.snapshot") if snapshot else None

        def build(path: str | None = path) -> ConfigClient:
            client = ConfigClient(server, root, snapshot_path=path)
            client.start(timeout=120)
            return client

        client, used = _traced(build)
        keys = client.health()["keys"]
        out[name] = used / keys
        if name == "ConfigClient":
            values, plain = _traced(
                lambda client=client: {k: json.loads(json.dumps(v)) for k, v in client.snapshot().items()}
            )
            out["dict of decoded values"] = plain / max(len(values), 1)
        client.stop()

    def tree() -> tuple[KazooClient, TreeCache]:
        kazoo = KazooClient(hosts=server)
        kazoo.start(timeout=60)
        ready = threading.Event()
        cache = TreeCache(kazoo, root)
        cache.listen(lambda e: ready.set() if e.event_type == TreeEvent.INITIALIZED else None)
        cache.start()
        ready.wait(300)
        return kazoo, cache

    (kazoo, cache), used = _traced(tree)
    out["kazoo TreeCache"] = used / max(keys, 1)
    cache.close()
    kazoo.stop()
    kazoo.close()
    return out
