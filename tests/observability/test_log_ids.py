"""JSON log lines take their ids from the active span, else from bind_trace_id; through a queue, as logged."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import queue
from collections.abc import Callable
from typing import Any

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
    assert [(line["message"], line.get("trace_id"), line.get("span_id")) for line in lines] == [
        ("bound", "req-9", None),
        ("in a span", trace_id, span_id),
        ("rejected", trace_id, span_id),
        ("unbound", None, None),
    ]
    # QueueHandler.prepare drops exc_info (merging the traceback into the message): the filter kept the code and
    # the traceback apart.
    assert [line["error_code"] for line in lines] == [None, None, "E0409", None]
    assert ["exception" in line for line in lines] == [False, False, True, False]


def _through_a_queue(log_them: Callable[[logging.Logger], None], *filters: logging.Filter) -> list[dict[str, Any]]:
    """The lines ``log_them`` writes through a QueueHandler (with TraceContextFilter and ``filters`` on it) and a
    QueueListener's JSON handler."""
    stream = io.StringIO()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    to_queue = logging.handlers.QueueHandler(records)
    to_queue.addFilter(TraceContextFilter())
    for extra_filter in filters:
        to_queue.addFilter(extra_filter)
    to_stream = logging.StreamHandler(stream)
    to_stream.setFormatter(JsonFormatter())
    listener = logging.handlers.QueueListener(records, to_stream)
    log = logging.getLogger("autoglm_runtime.test_log_ids.queued")
    log.addHandler(to_queue)
    log.propagate = False
    listener.start()
    try:
        log_them(log)
    finally:
        listener.stop()
        log.removeHandler(to_queue)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _directly(log_them: Callable[[logging.Logger], None]) -> list[dict[str, Any]]:
    stream = io.StringIO()
    log = logging.getLogger("autoglm_runtime.test_log_ids.queued")
    handler = configure_json_logging(logging.INFO, stream=stream, logger=log.name)
    log.propagate = False
    try:
        log_them(log)
    finally:
        log.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _log_a_traceback_and_a_stack(log: logging.Logger) -> None:
    try:
        raise ConfigValueError("key 'a' holds invalid JSON")
    except ConfigValueError:
        log.exception("rejected %s", "models/a", extra={"key": "models/a"})
        log.error("rejected, with the stack", exc_info=True, stack_info=True)
        log.error("a message that ends its line\n", exc_info=True)
    log.warning("only the stack", stack_info=True)
    log.warning("neither")


def test_a_line_through_a_queue_keeps_its_traceback_and_stack_out_of_its_message_as_a_direct_one() -> None:
    queued = _through_a_queue(_log_a_traceback_and_a_stack)
    direct = _directly(_log_a_traceback_and_a_stack)
    for line in queued + direct:
        del line["timestamp"]
        if "stack" in line:  # (the innermost frames differ: the listener's vs the handler's call)
            line["stack"] = line["stack"].splitlines()[0]
    assert queued == direct
    assert [(line["message"], "exception" in line, line.get("stack")) for line in queued] == [
        ("rejected models/a", True, None),
        ("rejected, with the stack", True, "Stack (most recent call last):"),
        ("a message that ends its line\n", True, None),
        ("only the stack", False, "Stack (most recent call last):"),
        ("neither", False, None),
    ]
    traceback = str(queued[0]["exception"])
    assert traceback.startswith("Traceback (most recent call last):\n")
    assert traceback.endswith("autoglm_runtime.errors.ConfigValueError: E0409: key 'a' holds invalid JSON")
    assert [line["error_code"] for line in queued] == ["E0409", "E0409", "E0409", None, None]
    assert queued[0]["key"] == "models/a"


class _Redact(logging.Filter):
    """A filter after TraceContextFilter on the queue handler that rewrites the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = record.getMessage().replace("models/a", "<key>"), None
        return True


def test_a_message_rewritten_after_the_filter_keeps_the_rewrite_and_loses_only_the_merged_traceback() -> None:
    (line, *_) = _through_a_queue(_log_a_traceback_and_a_stack, _Redact())
    assert line["message"] == "rejected <key>"
    assert str(line["exception"]).startswith("Traceback (most recent call last):\n")


def test_a_message_whose_arguments_do_not_fit_is_reported_by_the_handler_not_raised_to_the_caller() -> None:
    reported: list[str] = []

    class Reporting(logging.handlers.QueueHandler):
        def handleError(self, record: logging.LogRecord) -> None:
            reported.append(str(record.msg))

    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    to_queue = Reporting(records)
    to_queue.addFilter(TraceContextFilter())
    log = logging.getLogger("autoglm_runtime.test_log_ids.unfit")
    log.addHandler(to_queue)
    log.propagate = False
    try:
        try:
            raise ConfigValueError("key 'a' holds invalid JSON")
        except ConfigValueError:
            log.exception("rejected %s and %s", "models/a")  # noqa: PLE1206 (one argument short, on purpose)
    finally:
        log.removeHandler(to_queue)
    assert reported == ["rejected %s and %s"]
    assert records.empty()
