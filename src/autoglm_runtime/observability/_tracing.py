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
    from opentelemetry.trace import Span, SpanContext, Tracer

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
    "attach_context",
    "current_context",
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


_UNSET = object()
# What each tracer does under the API's global provider: id(tracer) -> (tracer, provider, (quiet, drops a not-sampled
# local parent's children, drops a not-sampled remote parent's children)). Each span then costs a dict read and two
# identity checks instead of the lookups, isinstance checks against the API's abstract classes and sampler
# inspection behind the answer (a sizeable share of what a sampled-out request paid; see
# benchmarks/observability.py). Keyed by id (a tracer need not be hashable), holding the tracer so the id stays its
# own; a few entries, so switching between tracers (tests, the benchmark's settings) does not forget them.
_known: dict[int, tuple[object, object, tuple[bool, bool, bool]]] = {}
_KNOWN_MAX = 8


def _mode(tracer: Tracer) -> tuple[bool, bool, bool]:
    """``(quiet, drops_local, drops_remote)`` for ``tracer`` now: whether every span it starts is a non-recording
    copy of the current span (see :func:`_no_provider`), and whether the application's sampler drops every child
    of a not-sampled local (remote) parent (see :func:`_drops_unsampled_children`).

    Remembered while the API's global provider stays the same object (it is set once; an SDK provider's sampler
    never changes), so a provider set later is followed at once.
    """
    provider = getattr(_trace, "_TRACER_PROVIDER", _UNSET)  # (an API without that global: always asked)
    known = _known.get(id(tracer))
    if known is not None and known[0] is tracer and known[1] is provider and provider is not _UNSET:
        return known[2]
    quiet = _no_provider(tracer)
    mode = (
        quiet,
        not quiet and _drops_unsampled_children(tracer, False),
        not quiet and _drops_unsampled_children(tracer, True),
    )
    if getattr(_trace, "_TRACER_PROVIDER", _UNSET) is provider:  # (not one read from the environment meanwhile)
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        _known[id(tracer)] = (tracer, provider, mode)
    return mode


def _no_provider(tracer: Tracer) -> bool:
    """Whether every span ``tracer`` starts now is a non-recording copy of the current span: it is the API's
    proxy (or no-op) tracer and the application has set no provider (or the API's no-op one). Starting one then
    changes nothing a caller, a log line or the worker can see: the current span already carries those ids and
    flags. A provider named only by ``OTEL_PYTHON_TRACER_PROVIDER`` is read from the environment here.
    """
    if isinstance(tracer, _trace.NoOpTracer):
        return True
    return isinstance(tracer, _trace.ProxyTracer) and isinstance(_trace.get_tracer_provider(), _NO_SPANS)


def spans_off() -> bool:
    """Whether no span is started now (no API, or no provider to record it): a model call then only counts."""
    tracer = _TRACER
    return not TRACING_AVAILABLE or tracer is None or _mode(tracer)[0]


def _in_unsampled_trace(tracer: Tracer) -> bool:
    """Whether the current span belongs to a trace its root (or the caller upstream) decided not to sample, and
    the application's sampler is known to drop every span under such a parent."""
    parent = _span_context(_context.get_current())
    return parent.is_valid and not parent.trace_flags.sampled and _mode(tracer)[2 if parent.is_remote else 1]


def _drops_unsampled_children(tracer: Tracer, remote: bool) -> bool:
    """Whether the sampler behind ``tracer`` is the SDK's ``ParentBased`` with its default (``ALWAYS_OFF``)
    for a not-sampled parent. Any other sampler (``ALWAYS_ON``, ``TraceIdRatioBased``, a ``ParentBased`` told to
    keep such children, one of the application's own) may record the span, so it is asked."""
    sampling = sys.modules.get("opentelemetry.sdk.trace.sampling")
    if sampling is None:  # no SDK sampler exists in this process
        return False
    sampler = getattr(tracer, "sampler", None)
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
    if not TRACING_AVAILABLE or tracer is None:
        return None
    quiet, drops_local, drops_remote = _mode(tracer)
    if quiet:
        return None
    # The current context, read once: the unsampled-parent check, the SDK (parent and sampler) and the new
    # current context all start from it.
    current = _context.get_current()
    if current:  # (an empty context, a request's usual one, holds no parent: the span starts a trace)
        parent = _span_context(current)
        if parent.is_valid and not parent.trace_flags.sampled and (drops_remote if parent.is_remote else drops_local):
            return None
    span = tracer.start_span(name, current, attributes=attributes)
    if not span.is_recording() and not (propagate and span.get_span_context().is_valid):
        # Sampled out and nothing to pass on: log lines keep the parent's ids. Attaching would cost as much.
        return span, None
    return span, _attach(span, current)


# The context this module made current or looked into last, with its span's context: (Context, SpanContext). A
# Context never changes, so while it is still the current one its span is known without the API's lookup (a read
# of the span under its key, checked against the API's abstract Span class): the model call under a guard span and
# the traceparent of its request find their parent here, and under a server's span (sampled out: no span of ours
# starts) the guard's lookup serves the model call and the traceparent. Replaced whole, so threads and tasks
# interleaving only make it miss; it keeps one context (and its span) alive until the next.
_last: tuple[object, SpanContext | None] = (None, None)
# The traceparent of the last span context formatted: (SpanContext, header value); a request's model calls share it.
_last_header: tuple[object, str] = (None, "")


def _span_context(current: Context) -> SpanContext:
    """The context of the span current in ``current`` (invalid when there is none)."""
    global _last
    last = _last
    if last[0] is current and last[1] is not None:
        return last[1]
    span_context = _trace.get_current_span(current).get_span_context()
    _last = (current, span_context)
    return span_context


def _attach(span: Span, current: Context | None = None) -> object:
    """Make ``span`` current (under ``current``, else the current context); the token for ``detach``."""
    global _last
    context = _trace.set_span_in_context(span, current)
    _last = (context, span.get_span_context())
    return _context.attach(context)


def start_detached(name: str, attributes: Mapping[str, Any] | None = None) -> Span | None:
    """Start ``name`` under the current span without making it current (a stream's span outlives the block that
    opened it); :func:`attach` makes it current for a while. ``None`` without the API or in an unsampled trace."""
    tracer = _TRACER
    if not TRACING_AVAILABLE or tracer is None or _mode(tracer)[0] or _in_unsampled_trace(tracer):
        return None
    return tracer.start_span(name, attributes=attributes)


def attach(span: Span | None) -> object:
    """Make ``span`` current until :func:`detach` (a token, ``None`` when nothing was attached); a sampled-out
    span too, so the request opened meanwhile carries its trace, flagged not sampled."""
    if span is None or not span.get_span_context().is_valid:
        return None
    return _attach(span)


def current_context() -> object:
    """The current context, for :func:`attach_context` to make current again later (``None`` without the API)."""
    return _context.get_current() if TRACING_AVAILABLE else None


def attach_context(context: object) -> object:
    """Make ``context`` (from :func:`current_context`) current until :func:`detach`: the token, or ``None``."""
    if context is None:
        return None
    return _context.attach(context)  # type: ignore[arg-type]


def detach(token: object) -> None:
    """Undo :func:`attach` or :func:`attach_context`."""
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
    if not TRACING_AVAILABLE:
        return None
    current = _context.get_current()
    if not current:  # an empty context holds no span (most calls' case)
        return None
    global _last_header
    context = _span_context(current)
    last = _last_header
    if last[0] is context:
        return last[1]
    if not context.is_valid:
        return None
    header = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    _last_header = (context, header)
    return header


def current_ids() -> tuple[str, str] | None:
    """The active span's ``(trace_id, span_id)`` as lowercase hex (32 and 16 digits), or ``None``."""
    if not TRACING_AVAILABLE:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
