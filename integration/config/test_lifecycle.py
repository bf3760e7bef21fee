"""What health(), get() and subscribe() say across a client's life, against a real ZooKeeper (issue 10)."""

from __future__ import annotations

import json
import threading

import pytest
from integration.config._helpers import Factory, j
from integration.config.conftest import FakeClock
from kazoo.client import KazooClient

from autoglm_runtime.errors import UsageError


def test_health_after_stop_says_stopped_while_zookeeper_moves_on(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, clock: FakeClock
) -> None:
    zk_client.create(f"{zk_root}/models/llm/context_window", j(4096), makepath=True)
    client = make_client(zk_hosts, zk_root)
    assert client.health()["state"] == "new"
    assert (client.health()["connected"], client.health()["source"]) == (False, "none")
    client.start(timeout=10)
    health = client.health()
    assert (health["state"], health["connected"], health["stale_seconds"], health["source"], health["keys"]) == (
        "running",
        True,
        0.0,
        "zookeeper",
        3,  # models, models/llm and models/llm/context_window
    )

    client.stop()
    zk_client.set(f"{zk_root}/models/llm/context_window", j(8192))
    clock.advance(4.0)

    health = client.health()
    assert (health["state"], health["connected"], health["stale_seconds"]) == ("stopped", False, 4.0)
    assert client.get("models/llm/context_window") == 4096  # the last value stays readable, no longer followed
    assert json.loads(json.dumps(health)) == health  # JSON-ready as is
    with pytest.raises(UsageError) as info:
        client.subscribe("models/", lambda change: None)
    assert info.value.message == (
        f"cannot subscribe to 'models/': this ConfigClient (hosts {zk_hosts}, root {zk_root}) was stopped and "
        "delivers no more changes; subscribe on a new, started client"
    )
    with pytest.raises(UsageError):
        client.start()
    assert [t.name for t in threading.enumerate() if t.name.startswith("autoglm-config")] == []

    # A new client sees what ZooKeeper holds now: the old one really stopped following.
    fresh = make_client(zk_hosts, zk_root)
    fresh.start(timeout=10)
    assert fresh.get("models/llm/context_window") == 8192
    clock.advance(1.0)
    assert (client.health()["state"], client.health()["stale_seconds"]) == ("stopped", 5.0)
    assert fresh.health()["stale_seconds"] == 0.0


def test_health_of_a_client_stopped_before_it_started(zk_hosts: str, zk_root: str, make_client: Factory) -> None:
    client = make_client(zk_hosts, zk_root)
    client.stop()
    health = client.health()
    assert (health["state"], health["connected"], health["stale_seconds"], health["keys"]) == (
        "stopped",
        False,
        0.0,
        0,
    )
