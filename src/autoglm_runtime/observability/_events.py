"""What the guards and the model calls record about each request: metrics and one span, in one object.

Adapters use them as context managers around the work; an :class:`~autoglm_runtime.errors.AutoGLMRuntimeError`
leaving the block marks it failed (counted under its code, span status ERROR with ``error.type``), any other
exception only ends the span. Without prometheus_client and opentelemetry-api both cost two attribute reads.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, get_args

from autoglm_runtime.errors import AutoGLMRuntimeError, ModelOverloadedError
from autoglm_runtime.observability import _tracing
from autoglm_runtime.observability._guard_stream import GuardStream
from autoglm_runtime.observability._metrics import event_metrics

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from autoglm_runtime.validation.request import GuardResult

__all__ = ["GuardCheck", "ModelCall", "ModelCallMetrics", "ModelStreamCall", "Surface", "expect_rejections"]

#: Where a guard ran: the ASGI middleware, a gRPC interceptor, or the ``guarded`` decorator.
Surface = Literal["http", "grpc", "decorator"]

GUARD_SPAN = "autoglm.guard.check"
MODEL_CALL_SPAN = "autoglm.model.call"
MODEL_STREAM_SPAN = "autoglm.model.stream"
#: The outcome of a stream its consumer stopped early (closed it, left its ``with`` block, dropped it), or of an
#: async call its caller cancelled.
CANCELLED = "cancelled"


def expect_rejections(surface: Surface, *codes: str) -> None:
    """Export the rejection series of ``codes`` on ``surface`` at 0 now, where a guard that may refuse with them is
    set up: a counter series that first appears at 1 hides that refusal from ``increase()`` and ``rate()``, and so
    from the alerting rules (deploy/prometheus) that read it."""
    metrics = event_metrics()
    if metrics is not None:
        for code in codes:
            metrics.guard_rejections.get(code, surface)


class GuardCheck:
    """One request's guard checks on one ``surface``.

    Call :meth:`passed` with the verdict (``None`` when nothing was counted) or :meth:`reject` with the error
    before the block ends, so the duration stops at the verdict and the rejection's log line, written inside the
    block, carries the span's ids.

    A check ``within`` another one (a second guard layer judging the same request inside the first one's block)
    starts no span of its own: its verdict is recorded on the enclosing check's span, so a request has one guard
    span however many layers judge it; the span's ``autoglm.guard.removed_tokens`` is what all its layers removed.
    Its metrics are its own.
    """

    __slots__ = ("_done", "_metrics", "_removed", "_span", "_start", "_within", "surface")

    def __init__(self, surface: Surface, *, within: GuardCheck | None = None) -> None:
        self.surface = surface
        self._metrics = event_metrics()
        self._span: tuple[Span, object] | None = None
        self._start = 0.0
        self._done = False
        self._within = within
        self._removed = 0  # on the check owning the span: the tokens its request's layers removed so far

    def __enter__(self) -> GuardCheck:
        self._start = time.perf_counter()
        if self._within is not None:
            self._span = self._within._span  # recorded on, never ended here
        elif _tracing.TRACING_AVAILABLE:
            self._span = _tracing.start_span(GUARD_SPAN, _SURFACE_ATTRIBUTES[self.surface])
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, AutoGLMRuntimeError):
            self.reject(exc)
        if self._span is not None and self._within is None:
            _tracing.end_span(self._span)

    def _observe(self) -> bool:
        if self._done:
            return False
        self._done = True
        if self._metrics is not None:
            self._metrics.guard_duration.get(self.surface).observe(time.perf_counter() - self._start)
        return True

    def passed(self, result: GuardResult | None) -> None:
        """The request goes on (``result`` is the guard's verdict, if a guard counted it)."""
        if not self._observe() or result is None:
            return
        removed = result.removed_tokens
        if removed and self._metrics is not None:
            self._metrics.guard_truncations.get(self.surface).inc()
            self._metrics.guard_truncated_tokens.get(self.surface).inc(removed)
        # An inner layer judges what an outer one let through: its input is the app's, the removals add up.
        owner = self if self._within is None else self._within
        owner._removed += removed
        if self._span is not None and self._span[0].is_recording():  # (a sampled-out span drops them)
            attributes: dict[str, Any] = {
                "autoglm.guard.input_tokens": result.input_tokens,
                "autoglm.guard.removed_tokens": owner._removed,
            }
            if owner._removed:
                attributes["autoglm.warning.code"] = "E0514"
            self._span[0].set_attributes(attributes)  # one call: the SDK takes the span's lock once

    def reject(self, error: AutoGLMRuntimeError) -> None:
        """The request is refused with ``error`` (counted once, however often this is called)."""
        if not self._observe():
            return
        if self._metrics is not None:
            self._metrics.guard_rejections.get(error.code, self.surface).inc()
        if self._span is not None:
            _tracing.fail_span(self._span[0], error)

    def forward(self) -> None:
        """The request goes on to the app inside this block: make the span current for the rest of it even when
        its trace was sampled out, so what the app does (its model calls, their workers) joins the request's
        trace and follows its sampling decision instead of starting traces of its own."""
        span = self._span
        if span is not None and span[1] is None and self._within is None:
            self._span = (span[0], _tracing.attach(span[0]))

    def hand_over(self) -> GuardStream | None:
        """The request's responses are produced after this block ends (a stream its server iterates later): call
        last in the block, after :meth:`forward`. The span stays open, no longer current here; the stream returned
        makes it current around each step of producing a response and ends it with the stream. ``None`` when
        there is no span to keep (no tracing, or a check ``within`` another one)."""
        span = self._span
        if span is None or self._within is not None:
            return None
        self._span = None
        _tracing.detach(span[1])  # in the context it was attached in; each step attaches it anew
        return GuardStream(self, span[0])


# Made once: the SDK copies a span's attributes, so one mapping per surface serves every span.
_SURFACE_ATTRIBUTES: dict[str, Mapping[str, Any]] = {
    surface: MappingProxyType({"autoglm.guard.surface": surface}) for surface in get_args(Surface)
}


class ModelCall:
    """One call to an isolated model: its outcome (``ok`` or the E-code), its duration and a span."""

    __slots__ = ("_metrics", "_span", "_start", "method", "model")

    def __init__(self, model: str, method: str) -> None:
        self.model = model
        self.method = method
        self._metrics = event_metrics()
        self._span: tuple[Span, object] | None = None
        self._start = 0.0

    def __enter__(self) -> ModelCall:
        self._start = time.perf_counter()
        if _tracing.TRACING_AVAILABLE:  # (without the API, not even the attributes are built)
            attributes: dict[str, Any] = {"autoglm.model.name": self.model, "autoglm.model.method": self.method}
            self._span = _tracing.start_span(MODEL_CALL_SPAN, attributes, propagate=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        if span is not None:
            if isinstance(exc, AutoGLMRuntimeError):
                _tracing.fail_span(span[0], exc)
            elif exc is not None and _cancelled(exc) and span[0].is_recording():
                span[0].set_attribute("autoglm.model.call.cancelled", True)
        metrics = self._metrics
        if metrics is not None:
            metrics.model_call_duration.get(self.model).observe(time.perf_counter() - self._start)
            metrics.model_calls.get(self.model, _outcome(exc)).inc()
        if span is not None:
            _tracing.end_span(span)


class ModelCallMetrics:
    """The metrics of one model's calls, for a path that starts no span (see ``spans_off``): what a
    :class:`ModelCall` records, with the series of its commonest outcome (``ok``) looked up once. The ``ok`` and
    ``E0106`` series are exported at 0 from its creation (the model's load).

    >>> metrics = ModelCallMetrics("a"); started = time.perf_counter()   # doctest: +SKIP
    >>> metrics.record(started, None)   # or the error the call raised  # doctest: +SKIP
    """

    __slots__ = ("_duration", "_metrics", "_ok", "model")

    def __init__(self, model: str) -> None:
        self.model = model
        self._metrics = event_metrics()
        self._duration: Any = None
        self._ok: Any = None
        if self._metrics is not None:
            # Exported at 0 from the load on, as the alerting rules read them: a series that first appears at 1
            # hides that call from increase() and rate() (AutoGLMModelOverloaded would miss the first refusals).
            self._ok = self._metrics.model_calls.get(model, "ok")
            self._metrics.model_calls.get(model, ModelOverloadedError.code)

    def record(self, started: float, error: BaseException | None) -> None:
        """Count a call that began at ``started`` (``time.perf_counter()``) and ended now, with ``error`` or not."""
        metrics = self._metrics
        if metrics is None:
            return
        elapsed = time.perf_counter() - started
        if self._duration is None:
            self._duration = metrics.model_call_duration.get(self.model)
        self._duration.observe(elapsed)
        if error is not None:
            metrics.model_calls.get(self.model, _outcome(error)).inc()
            return
        if self._ok is None:
            self._ok = metrics.model_calls.get(self.model, "ok")
        self._ok.inc()


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, AutoGLMRuntimeError):
        return error.code
    return CANCELLED if _cancelled(error) else "error"


def _cancelled(error: BaseException) -> bool:
    """Whether ``error`` is asyncio's cancellation (its caller stopped waiting): not a failure of the call."""
    asyncio = sys.modules.get("asyncio")  # (not imported for this: without asyncio there is no such error)
    return asyncio is not None and isinstance(error, asyncio.CancelledError)


class ModelStreamCall:
    """One stream from an isolated model, from its start to its end: counted and timed like a :class:`ModelCall`
    once it ends (``ok``, the E-code, or ``cancelled`` when its consumer stopped early), with a span open meanwhile.

    The span is not made current (a stream outlives the block that opened it): wrap the opening of the stream in
    :meth:`opening`, so its request carries the span's trace context; call :meth:`end` once it ends.
    """

    __slots__ = ("_ended", "_metrics", "_span", "_start", "chunks", "method", "model")

    def __init__(self, model: str, method: str) -> None:
        self.model = model
        self.method = method
        self.chunks = 0
        self._metrics = event_metrics()
        self._start = time.perf_counter()
        attributes: dict[str, Any] = {"autoglm.model.name": model, "autoglm.model.method": method}
        self._span = _tracing.start_detached(MODEL_STREAM_SPAN, attributes)
        self._ended = False

    def opening(self) -> _Opening:
        """A ``with`` block in which the stream's span is the current one."""
        return _Opening(self._span)

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` was called."""
        return self._ended

    def end(self, error: BaseException | None = None, *, cancelled: bool = False) -> None:
        """The stream ended: exhausted (no argument), failed with ``error``, or stopped early by its consumer
        (``cancelled``). Only the first call counts."""
        if self._ended:
            return
        self._ended = True
        outcome = CANCELLED if cancelled and error is None else _outcome(error)
        if self._metrics is not None:
            self._metrics.model_call_duration.get(self.model).observe(time.perf_counter() - self._start)
            self._metrics.model_calls.get(self.model, outcome).inc()
        span = self._span
        if span is not None:
            if span.is_recording():
                span.set_attribute("autoglm.model.stream.chunks", self.chunks)
                if outcome == CANCELLED:
                    span.set_attribute("autoglm.model.stream.cancelled", True)
            if isinstance(error, AutoGLMRuntimeError):
                _tracing.fail_span(span, error)
            span.end()


class _Opening:
    __slots__ = ("_span", "_token")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> None:
        self._token = _tracing.attach(self._span)

    def __exit__(self, *exc_info: object) -> None:
        _tracing.detach(self._token)
