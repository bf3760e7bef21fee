"""Sessions that land on a ZooKeeper server behind what the client already saw (a lagging follower).

A second standalone server with smaller zxids plays the lagging member: a SwitchingProxy sends chosen
connections to it.
"""

from __future__ import annotations

import logging
import re
import threading

import pytest
from integration._helpers import kazoo_session
from integration.config._helpers import Factory, SwitchingProxy, Until, j, kazoo_of
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from autoglm_runtime import ConfigClient
from autoglm_runtime.config import _zxid
from autoglm_runtime.testing._common import four_letter_word
from autoglm_runtime.testing.proxy import FaultProxy
from autoglm_runtime.testing.zookeeper import ZooKeeperServer, expire_session

#: The start of the E0409 line that gives a session up after a long outage.
GIVEN_UP = "config sync has been disconnected from ZooKeeper at "


def test_a_catch_up_session_on_a_server_behind_does_not_hide_a_change(
    zk_root: str,
    zk_server: ZooKeeperServer,
    zk_client: KazooClient,
    zk_restartable: ZooKeeperServer,
    make_client: Factory,
    until: Until,
) -> None:
    """After a reconnect the persistent watch is added again on the (current) server, and the short catch-up
    session asks "what changed since zxid Z?". If that session lands on a member that has not applied the
    change yet, its setWatches fires nothing and the change is never read: the client says it resynced and
    serves the old value until the TTL finds it as drift."""
    zk_client.create(f"{zk_root}/a", j(1))
    zk_client.create(f"{zk_root}/b", j(2))
    with kazoo_session(zk_restartable.hosts) as lagging:
        lagging.create(f"{zk_root}/a", j(1), makepath=True)
        lagging.create(f"{zk_root}/b", j(2))
        behind_zxid = lagging.exists(f"{zk_root}/b").mzxid
    for _ in range(max(0, behind_zxid - zk_client.exists(zk_root).mzxid + 10)):
        zk_client.set(zk_root, b"")  # the lagging server's zxids must stay below the ones the client sees
    proxy = SwitchingProxy(zk_server.host, zk_server.port).start()
    try:
        client = make_client(proxy.hosts, zk_root, session_timeout=10.0)
        client.start(timeout=10)
        assert client.health()["watch_mode"] == "persistent"
        suspended = threading.Event()
        kazoo_of(client).add_listener(lambda state: suspended.set() if state == KazooState.SUSPENDED else None)
        current, behind = (zk_server.host, zk_server.port), (zk_restartable.host, zk_restartable.port)
        proxy.then(current, behind)  # the session reconnects where it lives; the catch-up lands behind
        proxy.refuse()
        proxy.cut()
        assert suspended.wait(20)
        zk_client.set(f"{zk_root}/a", j("while away"))
        proxy.restore()
        until(lambda: client.health()["resyncs"] == 1, what="the resync")
        until(lambda: client.get("a") == "while away", timeout=10, what="the change made while away")
        assert dict(client.snapshot()) == {"a": "while away", "b": 2}
        assert client.health()["resync_reasons"] == {"gap": 1}
        assert client.health()["drift_corrected"] == 0
        client.stop()
    finally:
        proxy.stop()


@pytest.mark.parametrize("watch_mode", ["auto", "per_node"])
def test_a_new_session_behind_the_cache_with_the_same_keys_is_rechecked(
    zk_root: str,
    zk_hosts: str,
    zk_server: ZooKeeperServer,
    zk_client: KazooClient,
    zk_restartable: ZooKeeperServer,
    make_client: Factory,
    until: Until,
    caplog: pytest.LogCaptureFixture,
    watch_mode: str,
) -> None:
    """An ensemble restored from a backup holds the same keys with older values and smaller zxids. A new
    session landing there re-armed its watches relative to a zxid the server never reached: nothing fired,
    no read was needed, so nothing asked whether the server was behind. The client said "resynced" and
    served values the ensemble no longer had, for good (the TTL re-read's smaller zxids count as older)."""
    _with_a_backup_behind(zk_root, zk_client, zk_restartable)
    proxy = SwitchingProxy(zk_server.host, zk_server.port).start()
    try:
        client = make_client(proxy.hosts, zk_root, watch_mode=watch_mode)
        client.start(timeout=10)
        assert client.get("a") == 19
        proxy.then((zk_server.host, zk_server.port), (zk_restartable.host, zk_restartable.port))
        with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
            expire_session(kazoo_of(client), hosts=zk_hosts)
            until(lambda: client.get("a") == "backup", what="the restored ensemble's value")
        messages = [r.getMessage() for r in caplog.records if getattr(r, "error_code", "") == "E0409"]
        assert any(m.startswith("ZooKeeper server is behind the cache") for m in messages)
        assert any(m.startswith("zxid regression: ZooKeeper at") for m in messages)
        client.stop()
    finally:
        proxy.stop()


def test_a_session_every_server_refuses_is_given_up_for_a_new_one(
    zk_root: str,
    zk_server: ZooKeeperServer,
    zk_client: KazooClient,
    zk_restartable: ZooKeeperServer,
    make_client: Factory,
    until: Until,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ensemble at the client's address is replaced by one restored from a backup (smaller zxids). ZooKeeper
    refuses to take back a session that saw a larger zxid ("client must try another server") and kazoo retries
    that session for ever: the client stayed disconnected and stale for good, until its process restarted."""
    _with_a_backup_behind(zk_root, zk_client, zk_restartable)
    proxy = SwitchingProxy(zk_server.host, zk_server.port).start()
    try:
        client = make_client(proxy.hosts, zk_root)  # session_timeout 4 s
        client.start(timeout=10)
        assert client.get("a") == 19
        proxy.then((zk_restartable.host, zk_restartable.port))
        with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
            proxy.cut()
            until(lambda: client.get("a") == "backup", timeout=40, what="the restored ensemble's value")
        until(lambda: client.health()["connected"] and client.health()["stale_seconds"] == 0.0, what="fresh again")
        messages = [r.getMessage() for r in caplog.records if getattr(r, "error_code", "") == "E0409"]
        # What the client met: servers that take the connection and close it at once.
        [given_up] = [m for m in messages if m.startswith(GIVEN_UP)]
        assert re.fullmatch(
            rf"{GIVEN_UP}{re.escape(proxy.hosts)} for \d+ s, longer than its session can live \(session timeout 4 s\): "
            r"servers took (\d+) of "
            r"its \1 connection attempts but the session resumed on none: ZooKeeper closes such a connection at once "
            r"when restored from a backup, for a session that saw newer zxids \(it logs 'client must try another "
            r"server'\), and while it has no quorum \(it logs 'ZooKeeperServer not running', and takes sessions again "
            r"once its quorum is back\); opening a new session",
            given_up,
        ), given_up
        assert any(m.startswith("zxid regression: ZooKeeper at") for m in messages)
        client.stop()
    finally:
        proxy.stop()


def test_a_session_given_up_during_a_partition_says_no_server_answered(
    zk_root: str,
    zk_client: KazooClient,
    zk_proxy: FaultProxy,
    make_client: Factory,
    until: Until,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing answers at the client's address (a partition, the ensemble down): the session is given up all the
    same, and the E0409 line blamed a restore from a backup that never happened, sending the operator after the
    wrong cause. It says that no attempt reached a server."""
    # After 2 s, not 8: half the session timeout the factory's clients ask for (4 s), which the server grants.
    monkeypatch.setattr(_zxid, "GIVE_UP_AFTER_SESSIONS", 0.5)
    zk_client.create(f"{zk_root}/a", j(1))
    client = make_client(zk_proxy.hosts, zk_root)
    client.start(timeout=10)

    def given_up() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(GIVEN_UP)]

    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        zk_proxy.stop()  # nothing listens at the address any more: the kernel refuses every attempt
        until(given_up, what="the session given up")
        zk_proxy.start()  # the same address again
        zk_client.set(f"{zk_root}/a", j(2))
        until(lambda: client.get("a") == 2, what="the change made after the partition")
    [message] = given_up()
    assert re.fullmatch(
        rf"{GIVEN_UP}{re.escape(zk_proxy.hosts)} for \d+ s, longer than its session can live \(session timeout 4 s\): "
        r"none of its \d+ "
        r"connection attempts reached a server \(last: \[Errno 111\] Connection refused\): a network partition, "
        r"the ensemble down or a wrong address; a new session is opened as soon as a server answers",
        message,
    ), message
    client.stop()


def _granted(server: ZooKeeperServer, requested: float) -> float:
    """The session timeout ``server`` grants a client asking for ``requested`` s: clamped to its bounds."""
    reply = four_letter_word(server.host, server.port, "conf")
    assert reply is not None, "the server did not answer conf"
    bounds = dict(line.split("=", 1) for line in reply.splitlines() if "=" in line)
    low, high = int(bounds["minSessionTimeout"]) / 1000, int(bounds["maxSessionTimeout"]) / 1000
    return min(max(requested, low), high)


@pytest.mark.parametrize("requested", [1.5, 0.5])
def test_a_session_is_given_up_after_the_timeout_its_own_client_uses(
    requested: float,
    zk_root: str,
    zk_server: ZooKeeperServer,
    zk_client: KazooClient,
    zk_proxy: FaultProxy,
    until: Until,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The give-up delay was two of the ConfigClient's ``session_timeout`` option (10 s by default) whatever the
    session: a ``client_factory`` whose clients ask for a short session waited 20 s all the same, and so did one
    the server granted another timeout. It is two of the timeout the server granted (asking for 0.5 s, the
    server's ``minSessionTimeout`` of 1 s), and the line says which."""
    zk_client.create(f"{zk_root}/a", j(1))
    retry = KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5)
    client = ConfigClient(
        zk_proxy.hosts,
        zk_root,
        client_factory=lambda: KazooClient(hosts=zk_proxy.hosts, timeout=requested, connection_retry=retry),
    )
    client.start(timeout=10)
    granted = _granted(zk_server, requested)

    def given_up() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(GIVEN_UP)]

    try:
        with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
            zk_proxy.stop()
            until(given_up, timeout=40, what="the session given up")  # a hang guard: the line says the timeout used
            zk_proxy.start()
            zk_client.set(f"{zk_root}/a", j(2))
            until(lambda: client.get("a") == 2, what="the change made after the partition")
    finally:
        client.stop()
    [message] = given_up()
    assert f"longer than its session can live (session timeout {granted:g} s): none of its" in message, message


def _with_a_backup_behind(root: str, live: KazooClient, backup_server: ZooKeeperServer) -> None:
    """``root``/a holds 19 on the live server (after 20 writes) and "backup" on ``backup_server``, at smaller zxids:
    an ensemble restored from a backup, as a client of the live one finds it."""
    with kazoo_session(backup_server.hosts) as backup:
        backup.create(f"{root}/a", j("backup"), makepath=True)
    live.create(f"{root}/a", j(0))
    for i in range(1, 20):
        live.set(f"{root}/a", j(i))
