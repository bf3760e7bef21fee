"""What the guard-span scope tests share: a guard, a handler's traced work, and the check that it is in the guard's
trace under the guard span."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from tests.validation._helpers import char_tok

from autoglm_runtime.validation import ContextWindowGuard

GUARD = "autoglm.guard.check"


def guard() -> ContextWindowGuard:
    return ContextWindowGuard(char_tok(), 50, message_tokens=0)


def inner_work(name: str = "inner") -> None:
    """What a handler's model call does to the trace: a span under whatever is current."""
    with trace.get_tracer("test").start_as_current_span(name):
        pass


def spans_by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def assert_inner_under_guard(spans: tuple[ReadableSpan, ...], *inner: str) -> ReadableSpan:
    """The guard span (returned) is a root with status UNSET, and each span named in ``inner`` (default:
    ``inner``) is its child in its trace."""
    named = spans_by_name(spans)
    outer = named[GUARD]
    assert outer.parent is None
    assert outer.status.status_code is StatusCode.UNSET
    for name in inner or ("inner",):
        child = named[name]
        assert child.parent is not None
        assert child.context.trace_id == outer.context.trace_id
        assert child.parent.span_id == outer.context.span_id
    return outer
