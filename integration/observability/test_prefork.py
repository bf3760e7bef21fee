"""Metrics under a real prefork server (uvicorn --workers 2, prometheus_client's multiprocess mode): counters add
up over the processes, every series is there from the start, config gauges are one series per root over the
processes, and a worker killed and restarted by uvicorn leaves no gauge behind."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integration._helpers import prefork_uvicorn
from prometheus_client.parser import text_string_to_metric_families
from tests._support.telemetry import promtool_check_metrics

from autoglm_runtime.testing import wait_until

pytestmark = pytest.mark.slow

APP = """
import contextlib, os
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from autoglm_runtime import ConfigClient
from autoglm_runtime.errors import AutoGLMRuntimeError
from autoglm_runtime.observability import ConfigMetrics
from autoglm_runtime.validation import CallableTokenizer, ContextWindowGuard, guarded

@guarded(ContextWindowGuard(CallableTokenizer(lambda t: list(t.encode())), 10, message_tokens=0))
def generate(prompt, max_tokens=1):
    return prompt

@contextlib.asynccontextmanager
async def lifespan(app):
    with ConfigClient(os.environ["TEST_CONFIG"], "/p") as client, ConfigMetrics(client, interval=0.1):
        yield

async def metrics(request):
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

async def generate_route(request):
    try:
        generate(request.query_params["prompt"])
    except AutoGLMRuntimeError as exc:
        return PlainTextResponse(exc.code, status_code=400, headers={"x-pid": str(os.getpid())})
    return PlainTextResponse("ok", headers={"x-pid": str(os.getpid())})

app = Starlette(routes=[Route("/metrics", metrics), Route("/generate", generate_route)], lifespan=lifespan)
"""


class Prefork:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], metrics: Path) -> None:
        self.port = port
        self.proc = proc
        self.metrics = metrics
        self.text = ""  # the last scrape's exposition

    def get(self, path: str) -> httpx.Response:
        # A new connection each time, so that either worker may take it.
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", headers={"connection": "close"}, timeout=30)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        # prometheus_client's collector fails (struct.error, a 500) on a file another process is just creating,
        # empty still: a worker starting up. The next scrape reads it.
        answers: list[httpx.Response] = []
        wait_until(lambda: answers.append(self.get("/metrics")) or answers[-1].status_code == 200, 60, "a scrape")
        self.text = answers[-1].text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answers[-1].text)
            for sample in family.samples
        }

    def running(self) -> float | None:
        """The processes whose config client runs, as scraped (the config gauges are merged over the processes)."""
        series = ("autoglm_config_state", frozenset({("root", "/p"), ("state", "running")}))
        return self.scrape().get(series)

    def gauge_pids(self) -> set[int]:
        """The processes whose live gauges' files are in the multiprocess directory (in the exposition)."""
        names = (path.name[: -len(".db")] for path in self.metrics.glob("gauge_live*_*.db"))
        return {int(name.rpartition("_")[2]) for name in names}

    def workers(self) -> set[int]:
        """uvicorn's worker processes now (its other child is multiprocessing's resource tracker)."""
        out = subprocess.run(
            ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return {int(line.split()[0]) for line in out.stdout.splitlines() if "spawn_main" in line}


@pytest.fixture
def prefork(tmp_path: Path) -> Iterator[Prefork]:
    (tmp_path / "config" / "p").mkdir(parents=True)
    (tmp_path / "config" / "p" / "a").write_text("1")
    (tmp_path / "prefork_app.py").write_text(textwrap.dedent(APP))
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    config = f"file://{tmp_path / 'config'}"
    with prefork_uvicorn("prefork_app:app", tmp_path, metrics, TEST_CONFIG=config) as (port, proc):
        server = Prefork(port, proc, metrics)
        wait_until(lambda: server.running() == 2, 60, "both workers to mirror their health")
        yield server


def test_counters_add_up_over_workers_and_a_dead_worker_leaves_no_gauge(prefork: Prefork) -> None:
    rejected = ("autoglm_guard_rejections_total", frozenset({("code", "E0513"), ("surface", "decorator")}))
    passed = ("autoglm_guard_check_duration_seconds_count", frozenset({("surface", "decorator")}))
    drift = ("autoglm_config_drift_corrected_total", frozenset({("root", "/p")}))
    pids: set[str] = set()
    sent = 0
    while len(pids) < 2:  # until both workers served some
        answers = [prefork.get("/generate?prompt=" + "x" * 50), prefork.get("/generate?prompt=ok")]
        assert [a.text for a in answers] == ["E0513", "ok"]
        pids.update(a.headers["x-pid"] for a in answers)
        sent += 1
    before = prefork.scrape()
    assert (before[rejected], before[passed], before[drift]) == (sent, 2 * sent, 0.0)  # drift at 0: exported
    assert {str(p) for p in prefork.gauge_pids()} == pids == {str(p) for p in prefork.workers()}
    # One series per root, no pid: the alert rules fire once for the server, not once per worker.
    assert [labels for name, labels in before if name.startswith("autoglm_config") and "pid" in dict(labels)] == []
    dead = int(next(iter(pids)))
    os.kill(dead, signal.SIGKILL)
    wait_until(lambda: len(prefork.workers()) == 2 and dead not in prefork.workers(), 60, "uvicorn's new worker")
    # Left behind, the dead worker's gauges would count it running still (3).
    wait_until(
        lambda: prefork.gauge_pids() == prefork.workers() and prefork.running() == 2,
        60,
        "the gauges of exactly the live workers",
    )
    after = prefork.scrape()
    assert (after[rejected], after[passed]) == (sent, 2 * sent)  # the dead worker's counts stay in the sums
    assert promtool_check_metrics(prefork.text) == (0, "")
