"""JSON-lines logs with error codes and trace ids, and the rule that config values never reach a log.

The library only attaches a ``NullHandler`` to the ``autoglm_runtime`` logger; an application opts in::

    from autoglm_runtime.logging import configure_json_logging, bind_trace_id
    configure_json_logging(level="INFO")
    with bind_trace_id("req-42"):
        log.warning("drift corrected", extra={"error_code": "E0409", "key": "models/a"})

Every line is one JSON object with ``level``, ``timestamp`` (UTC, RFC 3339), ``module``, ``error_code``,
``message``, ``trace_id`` and ``span_id`` when known, ``request_id`` inside :class:`RequestIdMiddleware`, every
``extra`` field, and ``exception`` (a logged exception's traceback) and ``stack`` (``stack_info=True``) when there
is one. The ids come from the active OpenTelemetry span when there is one (with opentelemetry-api installed), else
``trace_id`` from :func:`bind_trace_id`, so one id ties a request's log lines to its trace.

The formatter reads those ids from the context it runs in. Behind a ``logging.handlers.QueueHandler`` it runs on
the ``QueueListener``'s thread instead of the request's, so put a :class:`TraceContextFilter` on the queue handler:
it captures the ids (and the error code of a logged SDK exception) where the record is logged, and they travel
with the record through the queue; it also keeps the traceback and stack apart from the message, which the queue
handler merges, so a line through the queue reads as one written directly.

In an ASGI server, :class:`RequestIdMiddleware` binds each request's ``X-Request-Id`` (or a new id) this way and
sends it back in the response's ``x-request-id`` header, so a guard's rejection line names the request.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import datetime, timezone
from typing import IO, Any

from autoglm_runtime._library_logging import install_null_handler
from autoglm_runtime.errors import AutoGLMRuntimeError, UsageError
from autoglm_runtime.observability._tracing import current_ids

install_null_handler()

__all__ = [
    "JsonFormatter",
    "RequestIdMiddleware",
    "TraceContextFilter",
    "bind_trace_id",
    "configure_json_logging",
    "current_request_id",
    "current_trace_id",
    "describe_value",
    "get_logger",
]

_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("autoglm_trace_id", default=None)
# The id RequestIdMiddleware gave the request: its lines' ``request_id`` field, whatever span is active.
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("autoglm_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName", "error_code"}
)


def get_logger(name: str) -> logging.Logger:
    """The logger for an SDK module (``name`` is the module's ``__name__``)."""
    return logging.getLogger(name)


def current_trace_id() -> str | None:
    """The trace id of this context: the active OpenTelemetry span's (32 hex digits), else the one bound with
    :func:`bind_trace_id`, else ``None``."""
    ids = current_ids()
    return ids[0] if ids is not None else _trace_id.get()


def current_request_id() -> str | None:
    """The id :class:`RequestIdMiddleware` gave the request this context handles (what its log lines carry as
    ``request_id`` and the response's ``x-request-id``), else ``None``."""
    return _request_id.get()


@contextlib.contextmanager
def bind_trace_id(trace_id: str) -> Iterator[None]:
    """Bind ``trace_id`` to every log line written in this context (thread or asyncio task)."""
    token = _trace_id.set(trace_id)
    try:
        yield
    finally:
        _trace_id.reset(token)


def describe_value(value: Any) -> dict[str, Any]:
    """What may be logged about a config value: its size and a short hash, never its content.

    >>> describe_value(b"secret")
    {'size': 6, 'sha256': '2bb80d537b1d'}
    """
    if value is None:
        data = b""
    elif isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    else:
        data = json.dumps(value, sort_keys=True, default=repr).encode("utf-8", "surrogatepass")
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()[:12]}


# Where TraceContextFilter leaves the ids of the context a record was logged in: (trace_id, span_id, request_id),
# any of them None.
_CAPTURED = "_autoglm_ids"
# Where it leaves, for a record with a traceback or a stack, (message, traceback, stack) as they were before a
# QueueHandler's prepare merged the last two into the first (and dropped exc_info and stack_info).
_DETACHED = "_autoglm_detached"
# The formatter QueueHandler.prepare formats with when it has none: the traceback it merges is this one's.
_PLAIN = logging.Formatter()


def _context_ids() -> tuple[str | None, str | None, str | None]:
    ids = current_ids()
    trace_id, span_id = ids if ids is not None else (_trace_id.get(), None)
    return trace_id, span_id, _request_id.get()


def _exception_code(record: logging.LogRecord) -> str | None:
    exc = record.exc_info[1] if record.exc_info else None
    return exc.code if isinstance(exc, AutoGLMRuntimeError) else None


class TraceContextFilter(logging.Filter):
    """Captures, where a record is logged, what :class:`JsonFormatter` would otherwise read when it formats: the
    trace ids of the caller's context, and the E-code of a logged SDK exception. Never drops a record.

    Needed where formatting happens elsewhere: ``logging.handlers.QueueHandler`` hands records to a
    ``QueueListener`` thread, outside the request's context, and on the way merges a traceback (and a stack) into
    the message and drops ``exc_info``. The filter keeps them apart too, so that the line has its ``message``,
    ``exception`` and ``stack`` fields as when written directly. A handler's filters run in the caller's thread,
    so put this one on the queue handler::

        import logging.handlers, queue
        from autoglm_runtime.logging import JsonFormatter, TraceContextFilter

        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        to_queue = logging.handlers.QueueHandler(records)
        to_queue.addFilter(TraceContextFilter())
        to_stderr = logging.StreamHandler()
        to_stderr.setFormatter(JsonFormatter())
        listener = logging.handlers.QueueListener(records, to_stderr)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _CAPTURED not in record.__dict__:  # (the first handler's filter decides: the record is the same)
            record.__dict__[_CAPTURED] = _context_ids()
            if getattr(record, "error_code", None) is None and (code := _exception_code(record)) is not None:
                record.error_code = code
            if record.exc_info or record.stack_info:
                # (arguments that do not fit the message raise: the handler reports that, as without the filter)
                with contextlib.suppress(Exception):
                    record.__dict__[_DETACHED] = _detached(record)
        return True


def _detached(record: logging.LogRecord) -> tuple[str, str | None, str | None]:
    """What a QueueHandler's prepare is about to merge: the message, the traceback (formatted before, by an earlier
    handler's formatter, else as its own default formatter will) and the stack."""
    traceback = record.exc_text or (_PLAIN.formatException(record.exc_info) if record.exc_info else None)
    return record.getMessage(), traceback, record.stack_info


def _merged(message: str, traceback: str | None, stack: str | None) -> str:
    """The message as ``logging.Formatter.format`` appends a traceback and a stack to it."""
    for part in (traceback, stack):
        if part:
            message = (message if message[-1:] == "\n" else message + "\n") + part
    return message


def _split(merged: str, detached: tuple[str, str | None, str | None]) -> str:
    """The message of a record whose traceback or stack a QueueHandler merged into it, without them: as logged, or
    as a later filter of the queue handler rewrote it (a redaction), when only the merged tail can be cut."""
    message, traceback, stack = detached
    if merged == _merged(message, traceback, stack):
        return message
    tail = _merged("", traceback, stack)
    if tail and merged.endswith(tail):
        return merged[: -len(tail)]
    return merged  # a queue handler with a formatter of its own: what it wrote stays as it wrote it


def _rfc3339(created: float) -> str:
    stamp = datetime.fromtimestamp(created, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        error_code = getattr(record, "error_code", None)
        if error_code is None:
            error_code = _exception_code(record)
        entry: dict[str, Any] = {
            "level": record.levelname,
            "timestamp": _rfc3339(record.created),
            "module": record.name,
            "error_code": error_code,
            "message": record.getMessage(),
        }
        traceback = self.formatException(record.exc_info) if record.exc_info else None
        stack = self.formatStack(record.stack_info) if record.stack_info else None
        detached = record.__dict__.get(_DETACHED)
        if detached is not None and traceback is None and stack is None:  # (a QueueHandler merged them)
            entry["message"] = _split(entry["message"], detached)
            traceback, stack = detached[1], detached[2]
        # Captured where the record was logged (TraceContextFilter), else this context is the caller's.
        trace_id, span_id, request_id = record.__dict__.get(_CAPTURED) or _context_ids()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        if span_id is not None:
            entry["span_id"] = span_id
        if request_id is not None:  # (RequestIdMiddleware's: the trace_id is a span's while one is active)
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = _jsonable(value)
        if traceback is not None:
            entry["exception"] = traceback
        if stack is not None:
            entry["stack"] = stack
        return json.dumps(entry, ensure_ascii=False)


def configure_json_logging(
    level: int | str = logging.INFO,
    *,
    stream: IO[str] | None = None,
    logger: str = "",
) -> logging.Handler:
    """Send ``logger``'s records (root by default) to ``stream`` as JSON lines; returns the handler.

    Replaces a handler installed by an earlier call, so calling it twice does not double the output.
    """
    target = logging.getLogger(logger)
    for handler in list(target.handlers):
        if getattr(handler, "_autoglm_json", False):
            target.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._autoglm_json = True  # type: ignore[attr-defined]
    target.addHandler(handler)
    target.setLevel(level)
    return handler


# ASGI's shapes, spelled out so that this module needs no ASGI framework (Starlette's types are these).
_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

_HEADER = b"x-request-id"
# Where RequestIdMiddleware marks an exception it logged (with the request's id), so that it is logged once.
_LOGGED = "_autoglm_request_id"
_log = get_logger(__name__)
# What a client's id may hold: visible ASCII, nothing a log line or a header could be split or forged with.
_ID_BYTES = frozenset(range(0x21, 0x7F))


class RequestIdMiddleware:
    """ASGI middleware tying a request's log lines to it: writes its id as their ``request_id`` field (see
    :func:`current_request_id`), binds it as their ``trace_id`` (as :func:`bind_trace_id` does: an active
    OpenTelemetry span's trace id takes precedence there) and sends it back in the response's ``x-request-id`` header.

    The id is the request's ``X-Request-Id`` header, as vLLM's server and OpenAI's API use it (the openai client
    shows the response's as ``response._request_id``, and an error's as ``exc.request_id``), else a new one,
    32 hex digits. A client's id is kept only when it is 1 to ``max_length`` (128; a whole number of at least 1, else
    :class:`~autoglm_runtime.errors.UsageError`) characters of visible ASCII;
    one longer, empty, or holding spaces, control characters or non-ASCII bytes is replaced by a new id, never
    logged or sent back. The response carries one ``x-request-id``: one the app set itself is replaced.
    An exception the app raises is logged once with the id bound (``autoglm_runtime.logging`` logger, ERROR, with
    its traceback), then re-raised to the server, whose own line of it has no id.
    Requests other than HTTP (lifespan, websocket) pass through untouched. An active OpenTelemetry span's ids
    take precedence in the lines' ``trace_id`` and ``span_id``, as for :func:`bind_trace_id`; ``request_id`` stays
    the client's id::

        from autoglm_runtime.logging import RequestIdMiddleware
        app = RequestIdMiddleware(ValidationMiddleware(app, context_guard=guard))
        # or, in FastAPI/Starlette: app.add_middleware(RequestIdMiddleware); Starlette's own ServerErrorMiddleware
        # stays outside it, so its 500 for an unhandled exception has no x-request-id: wrap the app for that
    """

    def __init__(self, app: _ASGIApp, *, max_length: int = 128) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            # (else every client's id would be replaced, or each request sending one would fail with a TypeError)
            raise UsageError(f"max_length must be a whole number of at least 1, got {max_length!r}")
        self.app = app
        self.max_length = max_length

    def request_id(self, given: bytes | None) -> str:
        """The id for a request whose ``X-Request-Id`` header is ``given`` (``None``: none): ``given`` when it
        is acceptable, else a new one."""
        if given is not None and 0 < len(given) <= self.max_length and _ID_BYTES.issuperset(given):
            return given.decode("ascii")
        return uuid.uuid4().hex

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope.get("headers", ()) if name.lower() == _HEADER), None)
        request_id = self.request_id(given)
        header = (_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: _Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(name, value) for name, value in message.get("headers", ()) if name.lower() != _HEADER]
                message = {**message, "headers": [*kept, header]}
            await send(message)

        bound = _request_id.set(request_id)
        try:
            with bind_trace_id(request_id):
                await self._call(scope, receive, send_with_id, request_id)
        finally:
            _request_id.reset(bound)

    async def _call(self, scope: _Scope, receive: _Receive, send: _Send, request_id: str) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            # The server logs what escapes the app too (uvicorn: "Exception in ASGI application"), but after this
            # binding ended: that line has no trace_id. This one, with the id, is written once per exception, also
            # through several of these middlewares.
            if exc.__dict__.get(_LOGGED) is None:
                exc.__dict__[_LOGGED] = request_id
                _log.error(
                    "unhandled exception in the app for %s %s; the server answers 500 (if nothing was sent yet) "
                    "and logs the exception again, without the request id",
                    scope.get("method", "?"),
                    scope.get("path", "?"),
                    exc_info=exc,
                )
            raise
