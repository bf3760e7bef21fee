"""ConfigMetrics and ModelMetrics in one process: several exporters of one kind share a registry."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests._support.telemetry import promtool_check_metrics

from autoglm_runtime import ConfigClient
from autoglm_runtime.observability import ConfigMetrics


def test_one_config_metrics_per_client_on_one_registry_make_one_valid_exposition(tmp_path: Path) -> None:
    # Each exporter yielded its own copy of every family: a second HELP line for the same metric, which makes
    # Prometheus (and promtool) refuse the whole scrape.
    for root, keys in (("a", 1), ("b", 2)):
        (tmp_path / root).mkdir()
        for key in range(keys):
            (tmp_path / root / f"k{key}").write_text("1")
    registry = CollectorRegistry()

    def keys() -> dict[str, float]:
        text = generate_latest(registry).decode()
        assert promtool_check_metrics(text) == (0, "")
        families = [f for f in text_string_to_metric_families(text) if f.name == "autoglm_config_keys"]
        return {s.labels["root"]: s.value for f in families for s in f.samples}

    with (
        ConfigClient(f"file://{tmp_path}", "/a") as a,
        ConfigClient(f"file://{tmp_path}", "/b") as b,
        ConfigMetrics(a, registry=registry),
    ):
        with ConfigMetrics(b, registry=registry):
            assert keys() == {"/a": 1.0, "/b": 2.0}
        assert keys() == {"/a": 1.0}
    assert keys() == {}
