"""A three-server ensemble: stopping the leader under a reading client; members stop and start one by one."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, SessionExpiredError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from autoglm_runtime.testing.ensemble import ZooKeeperEnsemble
from autoglm_runtime.testing.session import StateWatcher


@pytest.fixture
def ensemble(zk_ensemble: ZooKeeperEnsemble) -> Iterator[ZooKeeperEnsemble]:
    """The module's ensemble, every member running again after the test whatever it stopped."""
    try:
        yield zk_ensemble
    finally:
        zk_ensemble.start()


def _client(hosts: str) -> KazooClient:
    client = KazooClient(hosts=hosts, timeout=15.0)
    client.start(timeout=30)
    return client


class _Reader:
    """Reads one node in a loop on its own thread and remembers every value it saw."""

    def __init__(self, client: KazooClient, path: str) -> None:
        self.client = client
        self.path = path
        self.seen: list[bytes] = []
        self.changed = threading.Condition()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ensemble-reader", daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                data, _ = self.client.get(self.path)
            except (ConnectionLoss, SessionExpiredError):
                data = None
            if data is not None:
                with self.changed:
                    self.seen.append(bytes(data))
                    self.changed.notify_all()
            self.done.wait(0.02)  # read cadence, not a wait for anything to settle

    def wait_for(self, value: bytes, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: value in self.seen, timeout)


def test_reader_survives_leader_stop_and_sees_later_writes(ensemble: ZooKeeperEnsemble) -> None:
    writer = _client(ensemble.hosts)
    reader_client = _client(ensemble.hosts)
    reader = _Reader(reader_client, "/ensemble/value")
    try:
        writer.ensure_path("/ensemble/value")
        writer.set("/ensemble/value", b"before")
        reader.thread.start()
        assert reader.wait_for(b"before", timeout=15)

        with StateWatcher(reader_client) as states:
            leader = ensemble.wait_for_leader()
            ensemble.servers[leader].stop()
            states.wait_for(KazooState.SUSPENDED, timeout=15)
            states.wait_for(KazooState.CONNECTED, timeout=30)

        # the writer may still be reconnecting: retry on connection loss until it is back
        KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5, deadline=30)(writer.set, "/ensemble/value", b"after")
        assert reader.wait_for(b"after", timeout=30)
        assert ensemble.wait_for_leader() != leader
    finally:
        reader.done.set()
        reader.thread.join(10)
        for client in (writer, reader_client):
            client.stop()
            client.close()


def test_members_stop_and_start_one_by_one(ensemble: ZooKeeperEnsemble) -> None:
    follower = next(i for i, mode in enumerate(ensemble.modes()) if mode == "follower")
    member = ensemble.servers[follower]

    member.stop()
    assert ensemble.modes()[follower] is None
    ensemble.wait_for_leader()
    assert sorted(m or "" for i, m in enumerate(ensemble.modes()) if i != follower) == ["follower", "leader"]
    member.start()

    assert ensemble.modes()[follower] in {"leader", "follower"}
    assert sorted(m or "" for m in ensemble.modes()) == ["follower", "follower", "leader"]
