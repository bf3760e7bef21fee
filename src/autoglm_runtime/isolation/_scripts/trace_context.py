"""The caller's trace inside the worker: each call's ``traceparent`` on the model's log records, and as the parent
context of the model's own OpenTelemetry spans.

STDLIB ONLY (loaded by path by ``worker_main.py``, like ``protocol.py``). OpenTelemetry is used only when the model
imported it itself (``opentelemetry.trace`` is in ``sys.modules``): the worker never imports it, so neither its
start-up time nor the handshake's list of imported distributions changes.

* :class:`CallScope` wraps each call (and each stream's whole iteration): the call's W3C ``traceparent`` (sent by
  the host when a span was active) is the current one inside it;
* :func:`install_logging` stamps ``trace_id`` and ``span_id`` on every log record (``None`` outside a traced call;
  a model's own format may use ``%(trace_id)s``), and makes logging's last resort -- what prints the warnings of a
  model that configured no logging -- write JSON lines carrying those ids (and a record's traceback and stack as
  ``exception`` and ``stack``), which the host forwards with the ids.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

#: ``version-trace_id-parent_id-flags``: version 00, lowercase hex (https://www.w3.org/TR/trace-context/).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16
_PARENT: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("autoglm_parent", default=None)


def parse(traceparent: object) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of a valid version-00 ``traceparent``, else ``None`` (a bad one is ignored)."""
    if not isinstance(traceparent, str):
        return None
    match = _TRACEPARENT.fullmatch(traceparent)  # (not match with `$`, which also accepts a trailing newline)
    if match is None:
        return None
    trace_id, span_id = match.group(1, 2)
    if trace_id == _NO_TRACE or span_id == _NO_SPAN:  # (all-zero ids are invalid)
        return None
    return trace_id, span_id


def current_ids() -> tuple[str, str] | None:
    """The active span's ids when the model uses OpenTelemetry, else the current call's parent's, else ``None``."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is not None:
        try:
            context = otel.get_current_span().get_span_context()
            if context.is_valid:
                return format(context.trace_id, "032x"), format(context.span_id, "016x")
        except Exception:  # a broken or partial install: fall back to the call's own ids
            pass
    return _PARENT.get()


def _attach_otel(traceparent: str) -> object:
    """Make ``traceparent`` OpenTelemetry's current context, if the model uses OpenTelemetry (a detach token)."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    try:
        from opentelemetry import context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        return context.attach(TraceContextTextMapPropagator().extract({"traceparent": traceparent}))
    except Exception:  # tracing must never fail a call
        return None


def _detach_otel(token: object) -> None:
    if token is None:
        return
    try:
        from opentelemetry import context

        context.detach(token)  # type: ignore[arg-type]
    except Exception:  # tracing must never fail a call
        pass


class CallScope:
    """``with CallScope(message):`` runs a call under the trace context its message carries (if any)."""

    __slots__ = ("_otel", "_token", "_traceparent")

    def __init__(self, message: dict[str, Any]) -> None:
        self._traceparent = message.get("traceparent")
        self._token: contextvars.Token[tuple[str, str] | None] | None = None
        self._otel: object = None

    def __enter__(self) -> None:
        ids = parse(self._traceparent)
        if ids is not None:
            self._token = _PARENT.set(ids)
            self._otel = _attach_otel(str(self._traceparent))

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _detach_otel(self._otel)
            _PARENT.reset(self._token)


class JsonLines(logging.Formatter):
    """One JSON object per record: ``level``, ``timestamp``, ``module``, ``message``, and when known ``trace_id``,
    ``span_id``, ``exception`` (a logged exception's traceback) and ``stack`` (``stack_info=True``), as the host's
    ``autoglm_runtime.logging.JsonFormatter`` writes them."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "level": record.levelname,
            "timestamp": f"{stamp}.{int(record.msecs):03d}Z",
            "module": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class _LastResort(logging.Handler):
    """logging's last resort (WARNING and up, to whatever ``sys.stderr`` is now), as JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def install_logging() -> None:
    """Stamp the ids on every log record from now on, and make the last resort handler write JSON lines."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ids = current_ids()
        record.trace_id, record.span_id = ids if ids is not None else (None, None)
        return record

    logging.setLogRecordFactory(factory)
    last_resort = _LastResort(logging.WARNING)
    last_resort.setFormatter(JsonLines())
    logging.lastResort = last_resort
