"""Model-call metrics and spans, and the loader's worker metrics, from a real worker process in a real env."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.isolation._helpers import in_background, pid_in
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest
from tests._support.telemetry import Delta, promtool_check_metrics, span_exporter

from autoglm_runtime.errors import ModelCallError, ModelOverloadedError, ModelTimeoutError, WorkerError
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.observability import ModelMetrics
from autoglm_runtime.testing import wait_until

pytestmark = pytest.mark.slow

MODEL = """
import os, threading

class Model:
    def echo(self, value):
        return value
    def fail(self):
        raise ValueError("bad input")
    def hang(self, marker):
        open(marker, "w").write(str(os.getpid()))
        threading.Event().wait()
    def wait_for(self, path):
        while not os.path.exists(path):
            threading.Event().wait(0.005)
        return path
    def count(self, n):
        yield from range(n)
    def endless(self):
        i = 0
        while True:
            yield i
            i += 1
    def broken(self):
        yield 1
        raise ValueError("bad chunk")

def load():
    return Model()
"""

OUTCOMES = ("ok", "E0105", "E0305", "E0103")


@pytest.fixture
def loader(wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process", backoff=0.01) as loader:
        yield loader


def test_calls_count_by_outcome_and_restarts_show_in_the_worker_metrics(
    loader: ModelLoader, make_model: Any, tmp_path: Path
) -> None:
    model = loader.load(make_model("telemetry", MODEL))
    registry = CollectorRegistry()
    exporter = span_exporter()
    moved = Delta(
        *[("autoglm_worker_calls_total", {"model": "telemetry", "outcome": o}) for o in OUTCOMES],
        ("autoglm_worker_call_duration_seconds_count", {"model": "telemetry"}),
    )
    with ModelMetrics(loader, registry=registry):

        def worker(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"model": "telemetry", **labels})

        assert worker("autoglm_worker_up", replica="0") == 1.0
        assert worker("autoglm_worker_starts_total", reason="initial") == 1.0
        assert worker("autoglm_worker_starts_total", reason="crash") == 0.0
        assert model.call("echo", 1, timeout=30) == 1
        with pytest.raises(ModelCallError):
            model.call("fail", timeout=30)
        with pytest.raises(ModelTimeoutError):
            model.call("hang", str(tmp_path / "first"), timeout=0.5)
        assert model.call("echo", 2, timeout=30) == 2  # restarted the worker the timeout killed
        outcome: list[BaseException] = []

        def hang() -> None:
            try:
                model.call("hang", str(tmp_path / "second"), timeout=60)
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=hang, name="test-caller")
        caller.start()
        os.kill(pid_in(tmp_path / "second"), signal.SIGKILL)
        caller.join(30)
        assert [type(e) for e in outcome] == [WorkerError]
        assert worker("autoglm_worker_up", replica="0") == 0.0  # dead until the next call restarts it
        assert model.call("echo", 3, timeout=30) == 3
        assert worker("autoglm_worker_up", replica="0") == 1.0
        assert worker("autoglm_worker_starts_total", reason="timeout") == 1.0  # the hang past its timeout
        assert worker("autoglm_worker_starts_total", reason="crash") == 1.0  # the SIGKILL
    assert moved.moved() == {
        "autoglm_worker_calls_total{model=telemetry,outcome=ok}": 3.0,
        "autoglm_worker_calls_total{model=telemetry,outcome=E0105}": 1.0,
        "autoglm_worker_calls_total{model=telemetry,outcome=E0305}": 1.0,
        "autoglm_worker_calls_total{model=telemetry,outcome=E0103}": 1.0,
        "autoglm_worker_call_duration_seconds_count{model=telemetry}": 6.0,
    }
    assert registry.get_sample_value("autoglm_worker_up", {"model": "telemetry", "replica": "0"}) is None  # stopped
    spans = [s for s in exporter.get_finished_spans() if s.name == "autoglm.model.call"]
    assert [(s.attributes or {}).get("error.type") for s in spans] == [None, "E0105", "E0305", None, "E0103", None]
    assert [s.status.status_code for s in spans][:2] == [StatusCode.UNSET, StatusCode.ERROR]
    assert dict(spans[1].attributes or {}) == {
        "autoglm.model.name": "telemetry",
        "autoglm.model.method": "fail",
        "error.type": "E0105",
    }


def test_worker_starts_count_the_processes_started_not_the_failures(
    wheelhouse: Path, env_root: Path, make_model: Any, tmp_path: Path
) -> None:
    """A crashed worker restarts on the next call, and one given up on never does: each restart is counted when
    its process starts, under the reason of the failure it followed, and initial plus restarts is how many
    worker processes were started."""
    with ModelLoader(
        env_root, wheelhouse=wheelhouse, offline=True, backend="process", backoff=0.01, max_restarts=1
    ) as loader:
        model = loader.load(make_model("starts", MODEL))
        registry = CollectorRegistry()

        def starts() -> dict[str, float | None]:
            reasons = ("initial", "crash", "oom", "timeout", "heartbeat")
            return {
                r: registry.get_sample_value("autoglm_worker_starts_total", {"model": "starts", "reason": r})
                for r in reasons
            }

        def killed() -> None:
            pid = model.health()["pid"]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: model.health()["state"] == "dead", 30, "the killed worker to be seen dead")

        none = {"oom": 0.0, "timeout": 0.0, "heartbeat": 0.0}
        with ModelMetrics(loader, registry=registry):
            killed()
            assert starts() == {"initial": 1.0, "crash": 0.0, **none}  # not restarted yet: no call since
            assert model.health()["restarts"] == 0
            assert model.call("echo", 1, timeout=30) == 1
            assert starts() == {"initial": 1.0, "crash": 1.0, **none}
            killed()
            marker = tmp_path / "hanging"
            thread, outcome = in_background(model.call, "hang", str(marker), timeout=60)  # restarts it
            os.kill(pid_in(marker), signal.SIGKILL)  # the second failure in a row: more than max_restarts=1
            thread.join(30)
            assert [type(e) for e in outcome] == [WorkerError]
            with pytest.raises(WorkerError, match="gave up after 1 restarts"):
                model.call("echo", 2, timeout=30)
            health = model.health()
            assert (health["state"], health["restarts"]) == ("failed", 2)
            assert starts() == {"initial": 1.0, "crash": 2.0, **none}  # three deaths, two restarts


def test_an_acall_its_caller_cancels_counts_as_cancelled_not_as_an_error(
    loader: ModelLoader, make_model: Any, tmp_path: Path
) -> None:
    model = loader.load(make_model("cancelled-call", MODEL))
    exporter = span_exporter()
    moved = Delta(
        *[("autoglm_worker_calls_total", {"model": "cancelled-call", "outcome": o}) for o in ("cancelled", "error")],
    )

    async def cancel_while_running() -> None:
        task = asyncio.create_task(model.acall("hang", str(tmp_path / "running"), timeout=60))
        while not (tmp_path / "running").exists():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_running())
    assert moved.moved() == {
        "autoglm_worker_calls_total{model=cancelled-call,outcome=cancelled}": 1.0,
        "autoglm_worker_calls_total{model=cancelled-call,outcome=error}": 0.0,
    }
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "autoglm.model.call"]
    assert span.status.status_code == StatusCode.UNSET  # not a failure, as a stream closed early is not one
    assert dict(span.attributes or {}) == {
        "autoglm.model.name": "cancelled-call",
        "autoglm.model.method": "hang",
        "autoglm.model.call.cancelled": True,
    }


STREAM_OUTCOMES = ("ok", "cancelled", "E0106", "E0105")


def test_streams_count_by_outcome_with_a_span_each(loader: ModelLoader, make_model: Any) -> None:
    """Completed, early-closed, failed and overloaded streams, blocking and async: each counted once, under its
    outcome, timed, and traced by an ``autoglm.model.stream`` span that ends with the stream."""
    model = loader.load(make_model("streams", MODEL), max_inflight=1, max_queue=0)
    exporter = span_exporter()
    moved = Delta(
        *[("autoglm_worker_calls_total", {"model": "streams", "outcome": o}) for o in STREAM_OUTCOMES],
        ("autoglm_worker_call_duration_seconds_count", {"model": "streams"}),
    )
    assert list(model.stream("count", 3, timeout=30)) == [0, 1, 2]  # ok
    with model.stream("endless", timeout=30) as endless:  # closed early: cancelled
        assert next(endless) == 0
        with pytest.raises(ModelOverloadedError):  # the one replica is busy with `endless`, no queue
            model.stream("count", 1, timeout=30)

        async def overloaded() -> None:
            with pytest.raises(ModelOverloadedError):
                async for _ in model.astream("count", 1, timeout=30):
                    pass

        asyncio.run(overloaded())
        assert next(endless) == 1
    _freed(model)  # closed early: the replica is the stream's until the worker has closed its generator
    with pytest.raises(ModelCallError):  # the generator raised after its first chunk
        list(model.stream("broken", timeout=30))

    async def consume() -> list[int]:
        chunks = [chunk async for chunk in model.astream("count", 2, timeout=30)]  # ok
        async with model.astream("endless", timeout=30) as endless:  # closed early: cancelled
            chunks.append(await endless.__anext__())
        return chunks

    assert asyncio.run(consume()) == [0, 1, 0]
    _freed(model)
    dropped = model.stream("endless", timeout=30)
    assert next(dropped) == 0
    del dropped  # never closed: dropping it stops it, and frees the replica once the worker closed the generator
    _freed(model)
    assert model.call("echo", 7, timeout=30) == 7
    assert moved.moved() == {
        "autoglm_worker_calls_total{model=streams,outcome=ok}": 3.0,  # two streams and the echo call
        "autoglm_worker_calls_total{model=streams,outcome=cancelled}": 3.0,
        "autoglm_worker_calls_total{model=streams,outcome=E0106}": 2.0,
        "autoglm_worker_calls_total{model=streams,outcome=E0105}": 1.0,
        "autoglm_worker_call_duration_seconds_count{model=streams}": 9.0,
    }
    spans = [s for s in exporter.get_finished_spans() if s.name == "autoglm.model.stream"]
    seen = [
        (
            (s.attributes or {}).get("autoglm.model.method"),
            (s.attributes or {}).get("error.type"),
            s.status.status_code,
            (s.attributes or {}).get("autoglm.model.stream.chunks"),
            (s.attributes or {}).get("autoglm.model.stream.cancelled"),
        )
        for s in sorted(spans, key=lambda s: s.start_time or 0)
    ]
    assert seen == [
        ("count", None, StatusCode.UNSET, 3, None),
        ("endless", None, StatusCode.UNSET, 2, True),
        ("count", "E0106", StatusCode.ERROR, 0, None),
        ("count", "E0106", StatusCode.ERROR, 0, None),
        ("broken", "E0105", StatusCode.ERROR, 1, None),
        ("count", None, StatusCode.UNSET, 2, None),
        ("endless", None, StatusCode.UNSET, 1, True),
        ("endless", None, StatusCode.UNSET, 1, True),
    ]


def _freed(model: Any) -> None:
    """Wait until the worker has closed the generator of the stream just closed early, and its place is free."""
    wait_until(lambda: model.health()["inflight"] == 0, 30, "the closed stream's generator to be closed in the worker")


def test_in_flight_and_queued_calls_are_gauges_read_at_scrape_time(
    loader: ModelLoader, make_model: Any, tmp_path: Path
) -> None:
    model = loader.load(make_model("load-gauges", MODEL), replicas=1, max_inflight=1, max_queue=3)
    registry = CollectorRegistry()

    def gauges() -> dict[str, float | None]:
        names = ("inflight", "queued", "replicas", "max_inflight", "max_queue")
        return {n: registry.get_sample_value(f"autoglm_worker_{n}", {"model": "load-gauges"}) for n in names}

    go = tmp_path / "go"
    with ModelMetrics(loader, registry=registry):
        assert gauges() == {"inflight": 0.0, "queued": 0.0, "replicas": 1.0, "max_inflight": 1.0, "max_queue": 3.0}
        callers = [in_background(model.call, "wait_for", str(go), timeout=60) for _ in range(3)]
        wait_until(lambda: (gauges()["inflight"], gauges()["queued"]) == (1.0, 2.0), 30, "1 call to run, 2 to queue")
        assert gauges() == {"inflight": 1.0, "queued": 2.0, "replicas": 1.0, "max_inflight": 1.0, "max_queue": 3.0}
        exposition = generate_latest(registry).decode()
        go.write_text("1")
        for thread, _ in callers:
            thread.join(60)
        assert [out for _, out in callers] == [[str(go)]] * 3
        assert gauges() == {"inflight": 0.0, "queued": 0.0, "replicas": 1.0, "max_inflight": 1.0, "max_queue": 3.0}
    assert promtool_check_metrics(exposition) == (0, "")
