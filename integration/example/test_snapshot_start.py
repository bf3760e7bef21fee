"""A production restart during a ZooKeeper outage: the example server starts from its snapshot and catches up.

Two runs of ``bash scripts/serve --zk`` on one state directory: the first follows ZooKeeper and leaves its
snapshot; before the second, ZooKeeper is stopped (connections refused: the fallback is at once) or hidden
behind a proxy that resets every connection (nothing refused: the fallback comes after the 15 s timeout).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from integration.example._server import WORDS, running_server, until

from autoglm_runtime.config import read_snapshot
from autoglm_runtime.testing.proxy import FaultProxy
from autoglm_runtime.testing.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.slow


WINDOW = f"limits/{WORDS}/context_window"


def _records(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _first_run(hosts: str, state: Path, window: int) -> str:
    """Run the server once on a root of its own with its window set to ``window``; returns the root. Its stop
    writes the snapshot of what it last followed."""
    state.mkdir()
    with running_server(hosts, state, root=f"/example-{uuid.uuid4().hex}") as server:
        server.set_config({WINDOW: str(window).encode()})
        until(lambda: server.health()["limits"][WORDS]["context_window"] == window, 30, "the change to be followed")
    assert (
        read_snapshot(state / "config.snapshot", hosts=hosts, root=server.root).entries[WINDOW].data == b"%d" % window
    )
    return server.root


def test_a_restart_while_zookeeper_is_down_serves_the_snapshot_and_catches_up(
    zk_restartable: ZooKeeperServer, tmp_path: Path
) -> None:
    hosts, state = zk_restartable.hosts, tmp_path / "state"
    root = _first_run(hosts, state, 77)
    zk_restartable.stop()

    (state / "server.log").rename(tmp_path / "first.log")
    with running_server(hosts, state, healthy=False, root=root) as server:
        response = server.http.get("/health")
        health = response.json()
        # Serving the last-known-good limits, and saying it is neither connected nor fresh.
        assert (response.status_code, health["status"]) == (503, "degraded")
        config = health["config"]
        assert (config["state"], config["source"], config["connected"], config["following"]) == (
            "running",
            "snapshot",
            False,
            False,
        )
        assert config["stale_seconds"] > 0
        assert health["limits"][WORDS]["context_window"] == 77
        assert {name: m["state"] for name, m in health["models"].items()} == {WORDS: "ready", "chars-numpy2": "ready"}
        warnings = [r for r in _records(server.log) if r.get("error_code") == "E0409"]
        assert [r["message"] for r in warnings if str(r["message"]).startswith(f"ZooKeeper at {hosts} refuses")] == [
            f"ZooKeeper at {hosts} refuses connections (nothing listens there), so the default limits under {root} "
            "could not be written: check --zk and that ZooKeeper runs there; serving the last-known-good config "
            f"from the snapshot {state / 'config.snapshot'} until ZooKeeper answers"
        ]
        served = "ZooKeeper unreachable at start: serving the snapshot"
        assert any(str(r["message"]).startswith(served) for r in warnings)

        zk_restartable.start()
        until(lambda: server.http.get("/health").status_code == 200, 60, "the server to catch up with ZooKeeper")
        assert (server.health()["config"]["source"], server.health()["config"]["following"]) == ("zookeeper", True)
        server.set_config({WINDOW: b"55"})
        until(lambda: server.health()["limits"][WORDS]["context_window"] == 55, 30, "a change after the outage")


def test_a_restart_while_zookeeper_cannot_be_reached_serves_the_snapshot_after_the_timeout(
    zk_proxy: FaultProxy, tmp_path: Path
) -> None:
    hosts, state = zk_proxy.hosts, tmp_path / "state"
    root = _first_run(hosts, state, 66)
    zk_proxy.refuse()  # accepted, then reset: no host refuses outright, so the seed waits out its 15 s

    with running_server(hosts, state, healthy=False, root=root) as server:
        health = server.health()
        assert (health["config"]["source"], health["config"]["connected"]) == ("snapshot", False)
        assert health["limits"][WORDS]["context_window"] == 66
        [warning] = [r for r in _records(server.log) if str(r["message"]).startswith(f"ZooKeeper at {hosts} could")]
        assert (warning["error_code"], warning["message"]) == (
            "E0409",
            f"ZooKeeper at {hosts} could not be reached within 15 s to write the default limits under {root}: check "
            "--zk and that ZooKeeper runs there; serving the last-known-good config from the snapshot "
            f"{state / 'config.snapshot'} until ZooKeeper answers",
        )
        zk_proxy.restore()
        until(lambda: server.http.get("/health").status_code == 200, 60, "the server to catch up with ZooKeeper")
        server.set_config({WINDOW: b"44"})
        until(lambda: server.health()["limits"][WORDS]["context_window"] == 44, 30, "a change after the outage")
