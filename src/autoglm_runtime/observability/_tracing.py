"""Spans on the OpenTelemetry API, when it is installed (the ``tracing`` extra); nothing at all when it is not.

The SDK never configures a tracer provider: spans go wherever the application's provider sends them. While it
set none, no span is started at all (the API would only hand back a non-recording copy of the current span).
A failed operation's span gets status ERROR and ``error.type`` set
to the E-code; the exception itself is not added as a span event, because the SDK logs it once with its code,
and that log line carries the span's ``trace_id`` and ``span_id`` (see :mod:`autoglm_runtime.logging`).

Spans follow the sampling decision of the trace they join: under a parent span whose trace is not sampled, none
is started while the application's sampler is the SDK's ``ParentBased`` with its default for such parents (it would
drop the span anyway, after paying for the ids and the decision), and the parent stays current, so log lines and the
worker's ``traceparent`` keep its ids. Any other sampler is asked, as for every other span.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autoglm_runtime.errors import AutoGLMRuntimeError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

try:
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace

    #: Whether ``opentelemetry-api`` is importable.
    TRACING_AVAILABLE = True
    # While the global provider is one of these, the API's proxy tracer starts only non-recording spans.
    _NO_SPANS: tuple[type, ...] = (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)
except ImportError:  # the tracing extra is not installed
    TRACING_AVAILABLE = False

__all__ = [
    "ERROR_TYPE",
    "TRACING_AVAILABLE",
    "attach",
    "current_ids",
    "detach",
    "end_span",
    "fail_span",
    "record_span",
    "spans_off",
    "start_detached",
    "start_span",
    "traceparent",
    "tracer",
]

#: The semantic-conventions attribute holding the failure's class: here always an E-code.
ERROR_TYPE = "error.type"
_SCOPE = "autoglm_runtime"


def _version() -> str | None:
    try:
        return importlib.metadata.version("autoglm-runtime")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return None


_VERSION = _version()
# Made once: get_tracer costs as much as a span. Before the application sets its provider this is the API's proxy
# tracer, which switches to the provider's own tracer once there is one.
_TRACER: Tracer | None = _trace.get_tracer(_SCOPE, _VERSION) if TRACING_AVAILABLE else None


def tracer() -> Tracer | None:
    """The SDK's tracer (following the global provider, even one set later), or ``None`` without the API."""
    return _TRACER


# The tracer last found to start no span while the API's global provider was still unset ([None]: none yet).
_quiet: list[object] = [None]
_UNSET = object()


def _no_provider() -> bool:
    """Whether every span :data:`_TRACER` starts now is a non-recording copy of the current span: it is the API's
    proxy (or no-op) tracer and the application has set no provider (or the API's no-op one). Starting one then
    changes nothing a caller, a log line or the worker can see: the current span already carries those ids and
    flags. Asked per span, so a provider set later is followed at once.

    The answer for a tracer is remembered while the API's global provider stays unset (the same tracer, no
    provider: the same answer), which spares a model call the API's lookup (an environment read per call); a
    provider named only by ``OTEL_PYTHON_TRACER_PROVIDER`` is read from the environment on the first span.
    """
    tracer = _TRACER
    unset = getattr(_trace, "_TRACER_PROVIDER", _UNSET) is None  # (an API without that global: always asked)
    if unset and tracer is _quiet[0]:
        return True
    if isinstance(tracer, _trace.NoOpTracer):
        quiet = True
    else:
        quiet = isinstance(tracer, _trace.ProxyTracer) and isinstance(_trace.get_tracer_provider(), _NO_SPANS)
    if quiet and unset and getattr(_trace, "_TRACER_PROVIDER", _UNSET) is None:
        _quiet[0] = tracer
    return quiet


def spans_off() -> bool:
    """Whether no span is started now (no API, or no provider to record it): a model call then only counts."""
    return not TRACING_AVAILABLE or _TRACER is None or _no_provider()


def _in_unsampled_trace() -> bool:
    """Whether the current span belongs to a trace its root (or the caller upstream) decided not to sample, and
    the application's sampler is known to drop every span under such a parent."""
    parent = _trace.get_current_span().get_span_context()
    return parent.is_valid and not parent.trace_flags.sampled and _drops_unsampled_children(parent.is_remote)


def _drops_unsampled_children(remote: bool) -> bool:
    """Whether the sampler behind :data:`_TRACER` is the SDK's ``ParentBased`` with its default (``ALWAYS_OFF``)
    for a not-sampled parent. Any other sampler (``ALWAYS_ON``, ``TraceIdRatioBased``, a ``ParentBased`` told to
    keep such children, one of the application's own) may record the span, so it is asked."""
    sampling = sys.modules.get("opentelemetry.sdk.trace.sampling")
    if sampling is None:  # no SDK sampler exists in this process
        return False
    sampler = getattr(_TRACER, "sampler", None)
    if sampler is None:  # the API's proxy tracer: the global provider's tracer samples
        sampler = getattr(_trace.get_tracer_provider(), "sampler", None)
    if not isinstance(sampler, sampling.ParentBased):
        return False
    delegate = getattr(sampler, "_remote_parent_not_sampled" if remote else "_local_parent_not_sampled", None)
    return delegate is sampling.ALWAYS_OFF


def start_span(
    name: str, attributes: Mapping[str, Any] | None = None, *, propagate: bool = False
) -> tuple[Span, object] | None:
    """Start ``name`` as the current span; returns it with the token :func:`end_span` needs, or ``None`` (no API,
    or an unsampled trace).

    A span its trace's root sampled out is made current only with ``propagate`` (a model call: the worker's
    request then carries the trace, flagged not sampled, so the model's own spans follow the same decision).
    """
    tracer = _TRACER
    if not TRACING_AVAILABLE or tracer is None or _no_provider():
        return None
    # The current context, read once: the unsampled-parent check, the SDK (parent and sampler) and the new
    # current context all start from it.
    current = _context.get_current()
    parent = _trace.get_current_span(current).get_span_context()
    if parent.is_valid and not parent.trace_flags.sampled and _drops_unsampled_children(parent.is_remote):
        return None
    span = tracer.start_span(name, current, attributes=attributes)
    if not span.is_recording() and not (propagate and span.get_span_context().is_valid):
        # Sampled out and nothing to pass on: log lines keep the parent's ids. Attaching would cost as much.
        return span, None
    return span, _context.attach(_trace.set_span_in_context(span, current))


def start_detached(name: str, attributes: Mapping[str, Any] | None = None) -> Span | None:
    """Start ``name`` under the current span without making it current (a stream's span outlives the block that
    opened it); :func:`attach` makes it current for a while. ``None`` without the API or in an unsampled trace."""
    if not TRACING_AVAILABLE or _TRACER is None or _no_provider() or _in_unsampled_trace():
        return None
    return _TRACER.start_span(name, attributes=attributes)


def attach(span: Span | None) -> object:
    """Make ``span`` current until :func:`detach` (a token, ``None`` when nothing was attached); a sampled-out
    span too, so the request opened meanwhile carries its trace, flagged not sampled."""
    if span is None or not span.get_span_context().is_valid:
        return None
    return _context.attach(_trace.set_span_in_context(span))


def detach(token: object) -> None:
    """Undo :func:`attach`."""
    if token is not None:
        _context.detach(token)  # type: ignore[arg-type]


def end_span(started: tuple[Span, object]) -> None:
    """End a span from :func:`start_span` and make its parent current again."""
    span, token = started
    try:
        if token is not None:
            _context.detach(token)  # type: ignore[arg-type]
    finally:
        span.end()


def fail_span(span: Span, error: AutoGLMRuntimeError) -> None:
    """Mark ``span`` failed with ``error``'s code (status ERROR, ``error.type``), without an exception event."""
    if not TRACING_AVAILABLE or not span.is_recording():
        return
    span.set_attribute(ERROR_TYPE, error.code)
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{error.code}: {type(error).__name__}"))


def record_span(
    name: str, *, start_ns: int, end_ns: int, attributes: Mapping[str, Any], context: Context | None = None
) -> None:
    """Record a span of a background operation whose start is only known at its end (a resync)."""
    if not TRACING_AVAILABLE or _TRACER is None:
        return
    span = _TRACER.start_span(
        name, context=context, kind=_trace.SpanKind.INTERNAL, attributes=attributes, start_time=start_ns
    )
    span.end(end_time=max(end_ns, start_ns))


def traceparent() -> str | None:
    """The active span's W3C ``traceparent`` header value (``00-<trace>-<span>-<flags>``), or ``None``.

    What a model call puts in its frame, so the worker's log lines and spans join the caller's trace.
    """
    if not TRACING_AVAILABLE or not _context.get_current():  # an empty context holds no span (most calls' case)
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def current_ids() -> tuple[str, str] | None:
    """The active span's ``(trace_id, span_id)`` as lowercase hex (32 and 16 digits), or ``None``."""
    if not TRACING_AVAILABLE:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
