"""What the host logs about a call on a thread that is not the caller's carries that call's trace ids.

A worker that dies during an async call is noticed by the connection's reader thread, a call abandoned past its
timeout is killed by the watch thread, and an async call's timeout kills its worker on an executor thread: none
ran in the caller's context, so their log lines had no trace id.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.isolation._helpers import log_line
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from tests._support.telemetry import span_exporter

from autoglm_runtime.errors import ModelTimeoutError, WorkerError
from autoglm_runtime.isolation import LoadedModel, ModelLoader

pytestmark = pytest.mark.slow

MODEL = """
import os, threading

class Model:
    def exit(self):
        os._exit(3)

    def wait(self, marker):
        open(marker, "w").write("running")
        threading.Event().wait(600)

def load():
    return Model()
"""


@pytest.fixture
def model(loader: ModelLoader, make_model: Any, request: pytest.FixtureRequest) -> Iterator[LoadedModel]:
    loaded = loader.load(make_model(request.node.name.removeprefix("test_")[:40], MODEL))
    try:
        yield loaded
    finally:
        loaded.close()


def _ids(spans: tuple[ReadableSpan, ...]) -> tuple[str, str]:
    (span,) = [span for span in spans if span.name == "autoglm.model.call"]
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def _logged_ids(call: Coroutine[Any, Any, Any], worker_log: io.StringIO, text: str) -> tuple[Any, ...]:
    """Run ``call`` in a request span: the error code and ids of the log line holding ``text``, then its model
    call span's ids."""
    exporter = span_exporter()

    async def request() -> None:
        with trace.get_tracer("test").start_as_current_span("request"):
            await call

    asyncio.run(request())
    line = log_line(worker_log, text)
    return line["error_code"], line["trace_id"], line["span_id"], *_ids(exporter.get_finished_spans())


def test_a_worker_dying_during_an_async_call_is_logged_with_the_calls_ids(
    model: LoadedModel, worker_log: io.StringIO
) -> None:
    async def dies() -> None:
        with pytest.raises(WorkerError):
            await model.acall("exit", timeout=60)

    code, trace_id, span_id, *call_ids = _logged_ids(dies(), worker_log, "exited with status 3")
    assert (code, trace_id, span_id) == ("E0103", *call_ids)


def test_killing_the_worker_of_a_call_abandoned_past_its_timeout_is_logged_with_the_calls_ids(
    model: LoadedModel, worker_log: io.StringIO, tmp_path: Path
) -> None:
    marker = tmp_path / "running"

    async def abandoned() -> None:
        task = asyncio.create_task(model.acall("wait", str(marker), timeout=1))
        while not marker.exists():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    logged = _logged_ids(abandoned(), worker_log, "after its caller had gone; killing its worker")
    code, trace_id, span_id, *call_ids = logged
    assert (code, trace_id, span_id) == ("E0305", *call_ids)


def test_killing_the_worker_of_an_async_call_past_its_timeout_is_logged_with_the_calls_ids(
    model: LoadedModel, worker_log: io.StringIO, tmp_path: Path
) -> None:
    # Off the loop, on an executor thread: run_in_executor does not carry the caller's context there (to_thread does).
    async def late() -> None:
        with pytest.raises(ModelTimeoutError):
            await model.acall("wait", str(tmp_path / "running"), timeout=0.5)

    code, trace_id, span_id, *call_ids = _logged_ids(late(), worker_log, "wait() timed out after 0.5 s; killing")
    assert (code, trace_id, span_id) == ("E0305", *call_ids)
