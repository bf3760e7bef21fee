"""The config gauges of a prefork server in prometheus_client's multiprocess mode: one series per root, and the
alerting rules fire once for the server, not once per process.

Real processes write their files (each a ConfigMetrics over a client whose ``health()`` the test sets), the scrape
reads them with ``MultiProcessCollector``, and promtool evaluates the rules on what it exported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoglm_runtime.testing import fail_in_ci_else_skip

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "autoglm-alerts.yml"

#: A process of the server: it mirrors a client's health() once, says so, and lives until told to end.
PROCESS = textwrap.dedent(
    """
    import json, sys
    from autoglm_runtime.observability import ConfigMetrics

    class Client:
        root = "/p"
        def health(self):
            return json.loads(sys.argv[1])

    ConfigMetrics(Client(), multiprocess=True).mirror()
    print("mirrored", flush=True)
    sys.stdin.read()
    """
)

#: What each of the three processes' clients says (the differences are what merging is about).
HEALTHS = [
    {
        "state": "running",
        "source": "zookeeper",
        "connected": True,
        "following": True,
        "keys": 5,
        "watch_mode": "persistent",
        "last_confirmed": 1_764_000_000.0,
        "denied": ["/p/x", "/p/y"],
        "root_missing": False,
    },
    {
        "state": "running",
        "source": "zookeeper",
        "connected": False,
        "following": False,
        "keys": 4,
        "watch_mode": "persistent",
        "last_confirmed": 100.0,  # this one is stale
        "denied": [],
        "root_missing": True,
    },
    {
        "state": "failed",
        "source": "snapshot",
        "connected": True,
        "following": False,
        "keys": 3,
        "watch_mode": "per_node",
        "last_confirmed": 1_764_000_100.0,
        "denied": ["/p/x"],
        "root_missing": False,
    },
]


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[dict[str, float]]:
    """The config gauges a scrape exports while three live processes have mirrored ``HEALTHS``: series -> value."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, json.dumps(health)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for health in HEALTHS
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == "mirrored\n"
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics))
        yield {
            sample.name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())) + "}": sample.value
            for family in registry.collect()
            for sample in family.samples
            if family.type == "gauge"
        }
    finally:
        for process in processes:
            process.communicate("", timeout=60)


def test_each_config_gauge_is_one_series_per_root_showing_the_process_worst_off(scraped: dict[str, float]) -> None:
    # Gauges were written with a pid label (mode liveall): AutoGLMConfigDenied and the other alerts fired once per
    # process, and every restart left series behind.
    assert scraped == {
        # the oldest confirmation, 0 while any process is not connected, not following
        'autoglm_config_last_sync_timestamp_seconds{root="/p"}': 100.0,
        'autoglm_config_connected{root="/p"}': 0.0,
        'autoglm_config_following{root="/p"}': 0.0,
        # how many processes are in each state, take their values from each source, follow in each mode
        'autoglm_config_state{root="/p",state="new"}': 0.0,
        'autoglm_config_state{root="/p",state="starting"}': 0.0,
        'autoglm_config_state{root="/p",state="running"}': 2.0,
        'autoglm_config_state{root="/p",state="stopped"}': 0.0,
        'autoglm_config_state{root="/p",state="failed"}': 1.0,
        'autoglm_config_source{root="/p",source="none"}': 0.0,
        'autoglm_config_source{root="/p",source="zookeeper"}': 2.0,
        'autoglm_config_source{root="/p",source="snapshot"}': 1.0,
        'autoglm_config_source{root="/p",source="file"}': 0.0,
        'autoglm_config_watch_mode{mode="persistent",root="/p"}': 2.0,
        'autoglm_config_watch_mode{mode="per_node",root="/p"}': 1.0,
        'autoglm_config_watch_mode{mode="none",root="/p"}': 0.0,
        # the most keys held, the root missing for any process, the most znodes denied
        'autoglm_config_keys{root="/p"}': 5.0,
        'autoglm_config_root_missing{root="/p"}': 1.0,
        'autoglm_config_denied_znodes{root="/p"}': 2.0,
    }


def test_the_config_alerts_fire_once_for_the_server_on_its_multiprocess_exposition(
    scraped: dict[str, float], tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        fail_in_ci_else_skip("promtool is not installed: 'apt-get install prometheus' (scripts/test does it as root)")
    # The scrape as Prometheus stores it (instance "s"), unchanged for 10 minutes.
    series = [
        {"series": name.replace("{", '{instance="s",', 1), "values": f"{value:.0f}x10"}
        for name, value in scraped.items()
    ]

    def alert(summary: str, **labels: str) -> dict[str, object]:
        return {
            "exp_labels": {"severity": "warning", "instance": "s", "root": "/p", **labels},
            "exp_annotations": {"summary": summary},
        }

    expected = [
        (
            "AutoGLMConfigDenied",
            "8m",
            alert(
                "ZooKeeper denies the config client of s reading 2 znode(s) under /p (E0409): check its credentials "
                "and their ACLs"
            ),
        ),
        (
            "AutoGLMConfigNotRunning",
            "5m",
            alert(
                "Config client of s (root /p) is in state failed in 1 process(es), not running: it follows nothing "
                "there",
                state="failed",
            ),
        ),
        (
            "AutoGLMConfigRootMissing",
            "8m",
            alert("Config root /p does not exist on the ZooKeeper of s (E0409): a typo, or it was deleted"),
        ),
        (
            "AutoGLMConfigStale",
            "10m",
            {
                "exp_labels": {"severity": "warning", "instance": "s", "root": "/p"},
                "exp_annotations": {
                    "summary": "Config cache of s (root /p) not confirmed by ZooKeeper for 8m 20s (E0409)",
                    "description": "Readers get last-known-good values. Check the ZooKeeper connection and "
                    "ConfigClient.health() on that server.",
                },
            },
        ),
    ]
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": name, "exp_alerts": [fired]} for name, at, fired in expected
                ],
            }
        ],
    }
    path = tmp_path / "multiprocess.test.yml"
    path.write_text(json.dumps(tests, indent=1))  # (JSON is YAML)
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
