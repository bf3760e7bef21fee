"""ConfigMetrics on a real ZooKeeper: what health() counts reaches Prometheus, and a resync is one span."""

from __future__ import annotations

import time
from typing import Any

import pytest
from integration.config._helpers import Factory, Until, j, kazoo_of
from kazoo.client import KazooClient
from prometheus_client import CollectorRegistry
from tests._support.telemetry import span_exporter

from autoglm_runtime.observability import ConfigMetrics
from autoglm_runtime.testing.zookeeper import expire_session


def refuse_marked(key: str, value: Any) -> bool:
    return value != "refused"


@pytest.mark.zk_container
def test_rejections_resyncs_and_the_sync_timestamp_reach_the_registry(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/a", j(1))
    zk_client.create(f"{zk_root}/b", j(2))
    client = make_client(zk_hosts, zk_root, validator=refuse_marked)
    before_start = time.time()
    client.start(timeout=10)
    registry = CollectorRegistry()
    exporter = span_exporter()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"root": zk_root, **labels})

    with ConfigMetrics(client, registry=registry):
        assert value("autoglm_config_keys") == 2.0
        assert value("autoglm_config_connected") == 1.0
        assert value("autoglm_config_following") == 1.0
        assert value("autoglm_config_state", state="running") == 1.0
        assert value("autoglm_config_state", state="stopped") == 0.0
        assert value("autoglm_config_source", source="zookeeper") == 1.0
        synced = value("autoglm_config_last_sync_timestamp_seconds")
        assert synced is not None
        assert before_start <= synced <= time.time()
        zk_client.set(f"{zk_root}/a", b"{not json")
        zk_client.set(f"{zk_root}/b", j("refused"))
        until(lambda: client.health()["rejected"] == 2, what="both updates rejected")
        assert value("autoglm_config_updates_rejected_total", code="E0409", reason="decode") == 1.0
        assert value("autoglm_config_updates_rejected_total", code="E0409", reason="validator") == 1.0
        assert value("autoglm_config_resyncs_total", reason="session_expired") == 0.0
        assert value("autoglm_config_watch_mode", mode="persistent") == 1.0
        assert value("autoglm_config_root_missing") == 0.0
        expire_session(kazoo_of(client), hosts=zk_hosts)
        until(lambda: client.health()["resyncs"] == 1, what="the resync after expiry")
        assert value("autoglm_config_resyncs_total", reason="session_expired") == 1.0
        assert value("autoglm_config_drift_corrected_total") == 0.0
        client.stop()
        assert value("autoglm_config_state", state="stopped") == 1.0
        assert value("autoglm_config_connected") == 0.0
        assert value("autoglm_config_following") == 0.0
    assert value("autoglm_config_keys") is None  # unregistered
    (resync,) = [span for span in exporter.get_finished_spans() if span.name == "autoglm.config.resync"]
    assert dict(resync.attributes or {}) == {
        "autoglm.config.root": zk_root,
        "autoglm.config.resync.reason": "session_expired",
    }
    assert resync.start_time is not None
    assert resync.end_time is not None
    assert resync.start_time < resync.end_time  # from the session loss to the end of the resync
