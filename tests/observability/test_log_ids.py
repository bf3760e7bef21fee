"""JSON log lines take their ids from the active span, else from bind_trace_id; through a queue, as logged."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import queue

from opentelemetry import trace
from tests._support.telemetry import span_exporter

from autoglm_runtime.errors import ConfigValueError
from autoglm_runtime.logging import (
    JsonFormatter,
    TraceContextFilter,
    bind_trace_id,
    configure_json_logging,
    current_trace_id,
)


def test_the_active_span_wins_over_the_bound_id_and_the_bound_id_serves_without_one() -> None:
    span_exporter()  # installs the SDK provider: spans get real ids
    stream = io.StringIO()
    log = logging.getLogger("autoglm_runtime.test_log_ids")
    handler = configure_json_logging(logging.INFO, stream=stream, logger=log.name)
    try:
        with bind_trace_id("req-7"):
            log.info("outside")
            outside = current_trace_id()
            with trace.get_tracer("test").start_as_current_span("inside") as span:
                log.info("inside")
                inside = current_trace_id()
        log.info("unbound")
    finally:
        log.removeHandler(handler)
    context = span.get_span_context()
    trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["message"], line.get("trace_id"), line.get("span_id")) for line in lines] == [
        ("outside", "req-7", None),
        ("inside", trace_id, span_id),
        ("unbound", None, None),
    ]
    assert (outside, inside, current_trace_id()) == ("req-7", trace_id, None)


def test_ids_captured_by_the_filter_survive_a_queue_to_the_listener_thread() -> None:
    span_exporter()
    stream = io.StringIO()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    to_queue = logging.handlers.QueueHandler(records)
    to_queue.addFilter(TraceContextFilter())
    to_stream = logging.StreamHandler(stream)
    to_stream.setFormatter(JsonFormatter())
    listener = logging.handlers.QueueListener(records, to_stream)
    log = logging.getLogger("autoglm_runtime.test_log_ids.queued")
    log.addHandler(to_queue)
    log.propagate = False
    listener.start()
    try:
        with bind_trace_id("req-9"):
            log.warning("bound")
            with trace.get_tracer("test").start_as_current_span("inside") as span:
                log.warning("in a span")
                try:
                    raise ConfigValueError("key 'a' holds invalid JSON")
                except ConfigValueError:
                    log.exception("rejected")
        log.warning("unbound")
    finally:
        listener.stop()
        log.removeHandler(to_queue)
    context = span.get_span_context()
    trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["message"].splitlines()[0], line.get("trace_id"), line.get("span_id")) for line in lines] == [
        ("bound", "req-9", None),
        ("in a span", trace_id, span_id),
        ("rejected", trace_id, span_id),
        ("unbound", None, None),
    ]
    # QueueHandler.prepare drops exc_info (merging the traceback into the message): the filter kept the code.
    assert [line["error_code"] for line in lines] == [None, None, "E0409", None]
