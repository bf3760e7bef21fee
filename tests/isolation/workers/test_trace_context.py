"""The worker's side of trace propagation (``_scripts/trace_context.py``) and the host's ends of it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tests._support.telemetry import span_exporter

from autoglm_runtime.isolation._scripts import trace_context
from autoglm_runtime.isolation.workers._output import trace_ids
from autoglm_runtime.isolation.workers.process import WorkerProcess, WorkerSpec
from autoglm_runtime.observability._tracing import traceparent
from autoglm_runtime.testing import wait_until

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"00-{TRACE}-{SPAN}-01", (TRACE, SPAN)),
        (f"00-{TRACE}-{SPAN}-00", (TRACE, SPAN)),  # not sampled: the ids still tie the log lines together
        (f"01-{TRACE}-{SPAN}-01", None),  # an unknown version
        (f"00-{TRACE.upper()}-{SPAN}-01", None),
        (f"00-{'0' * 32}-{SPAN}-01", None),  # all-zero ids are invalid
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE}-{SPAN}", None),
        (f"00-{TRACE}-{SPAN}-01-extra", None),
        (f"00-{TRACE}-{SPAN}-01\n", None),  # exact: `$` would accept a trailing newline
        (None, None),
        (42, None),
    ],
)
def test_traceparent_parsing(value: object, expected: tuple[str, str] | None) -> None:
    assert trace_context.parse(value) == expected


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))
def test_every_traceparent_the_host_writes_parses_back(trace_id: int, span_id: int, flags: int) -> None:
    value = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert trace_context.parse(value) == (f"{trace_id:032x}", f"{span_id:016x}")


def test_the_host_writes_the_active_spans_traceparent() -> None:
    span_exporter()
    assert traceparent() is None
    with trace.get_tracer("test").start_as_current_span("outer"):
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        assert traceparent() == carrier["traceparent"]  # what OpenTelemetry's own W3C propagator writes


WORKER = f"""
import importlib.util, logging, sys, threading
spec = importlib.util.spec_from_file_location("_autoglm_trace_context", {trace_context.__file__!r})
tc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tc)
tc.install_logging()
log = logging.getLogger("model")
log.info("below the last resort's level: dropped")
log.warning("before")
with tc.CallScope({{"traceparent": "00-{TRACE}-{SPAN}-01"}}):
    log.warning("inside")
    other = threading.Thread(target=lambda: log.warning("another thread"))
    other.start(); other.join()
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
with tc.CallScope({{"traceparent": "garbage"}}):
    log.warning("bad traceparent")
log.warning("after")
print("opentelemetry" in sys.modules)
"""


def test_in_a_worker_without_opentelemetry_log_records_carry_the_calls_ids() -> None:
    done = subprocess.run([sys.executable, "-I", "-c", WORKER], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "False\n"  # never imported by the worker
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["message"], e.get("trace_id"), e.get("span_id")) for e in lines] == [
        ("before", None, None),
        ("inside", TRACE, SPAN),
        ("another thread", None, None),  # a thread the model starts does not inherit the call's context
        ("failed", TRACE, SPAN),
        ("bad traceparent", None, None),
        ("after", None, None),
    ]
    assert lines[3]["exception"].endswith("ValueError: boom")
    assert {(e["level"], e["module"]) for e in lines} == {("WARNING", "model"), ("ERROR", "model")}


def test_with_opentelemetry_imported_the_call_is_the_parent_of_the_models_spans() -> None:
    exporter = span_exporter()
    with trace_context.CallScope({"traceparent": f"00-{TRACE}-{SPAN}-01"}):
        assert trace_context.current_ids() == (TRACE, SPAN)
        with trace.get_tracer("model").start_as_current_span("model.work") as span:
            own = format(span.get_span_context().span_id, "016x")
            assert trace_context.current_ids() == (TRACE, own)
    assert trace_context.current_ids() is None
    (finished,) = exporter.get_finished_spans()
    assert finished.parent is not None
    assert (finished.context.trace_id, finished.parent.span_id) == (int(TRACE, 16), int(SPAN, 16))


def test_scopes_on_threads_do_not_see_each_other() -> None:
    seen: dict[str, object] = {}
    inside = threading.Event()
    leave = threading.Event()

    def call() -> None:
        with trace_context.CallScope({"traceparent": f"00-{TRACE}-{SPAN}-01"}):
            inside.set()
            leave.wait(30)
            seen["call"] = trace_context.current_ids()

    thread = threading.Thread(target=call, name="test-call")
    thread.start()
    inside.wait(30)
    seen["other"] = trace_context.current_ids()
    leave.set()
    thread.join(30)
    assert seen == {"call": (TRACE, SPAN), "other": None}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (json.dumps({"message": "m", "trace_id": TRACE, "span_id": SPAN}), {"trace_id": TRACE, "span_id": SPAN}),
        (json.dumps({"message": "m", "trace_id": TRACE}), {"trace_id": TRACE}),
        (json.dumps({"message": "m", "trace_id": None}), {}),
        (json.dumps({"message": "m"}), {}),
        ('{"trace_id": not json', {}),
        (json.dumps(["trace_id"]), {}),
        ('plain text mentioning "trace_id"', {}),
    ],
)
def test_the_host_lifts_ids_from_json_lines_only(line: str, expected: dict[str, str]) -> None:
    assert trace_ids(line) == expected


STACK_MODEL = """
import logging

class Model:
    def look_around(self):
        logging.getLogger("model").warning("where am I", stack_info=True)
        return "looked"

def load():
    return Model()
"""


def test_a_real_workers_log_line_carries_the_stack_of_a_record_logged_with_stack_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the worker's JSON line had "exception" but no "stack": stack_info=True was dropped on the way.
    (tmp_path / "stack_model.py").write_text(STACK_MODEL)
    worker = WorkerProcess(WorkerSpec("stacks", sys.executable, str(tmp_path), "stack_model:load"))
    with caplog.at_level("INFO", logger="autoglm_runtime.isolation.workers.process"):
        worker.start()
        try:
            assert worker.call("look_around", timeout=60) == "looked"

            def forwarded() -> list[logging.LogRecord]:
                return [r for r in caplog.records if getattr(r, "stream", None) == "stderr"]

            wait_until(forwarded, 30, "the worker's log line to be forwarded")
        finally:
            worker.close()
    (record,) = forwarded()
    entry = json.loads(record.args[2])  # type: ignore[index]
    assert sorted(entry) == ["level", "message", "module", "stack", "timestamp"]
    assert (entry["level"], entry["module"], entry["message"]) == ("WARNING", "model", "where am I")
    stack = entry["stack"].splitlines()
    assert stack[0] == "Stack (most recent call last):"
    assert stack[-2:] == [
        f'  File "{tmp_path / "stack_model.py"}", line 6, in look_around',
        '    logging.getLogger("model").warning("where am I", stack_info=True)',
    ]
