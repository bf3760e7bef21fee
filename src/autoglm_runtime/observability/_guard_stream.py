"""A guard span kept open while the responses to its request are produced, after the guard's block ended."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any

from autoglm_runtime.errors import AutoGLMRuntimeError
from autoglm_runtime.observability import _tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from autoglm_runtime.observability._events import GuardCheck

__all__ = ["GuardStream"]


class GuardStream:
    """A guard span kept open while the responses to its request are produced (from :meth:`GuardCheck.hand_over`).

    The span is current while each response is produced, never in between: each step attaches and detaches it in
    the thread or task running that step, so a stream its server abandons half-way (a cancelled call) leaves
    nothing attached in the thread or task that iterated it. What the handler's code made current in one step (its
    own span, held across its yields) is current again in the next, as it would be without the guard.

    :meth:`end` ends the span once, whoever calls it first: the stream's end or failure (the wrappers below), or the
    server's callback at the call's end, which hears of a cancelled call whose stream the server just stopped
    iterating::

        responses = stream.responses(handler(request, context))   # a server iterates it later
        context.add_callback(stream.end)
    """

    __slots__ = ("_check", "_inside", "_open", "_span")

    def __init__(self, check: GuardCheck, span: Span) -> None:
        self._check = check
        self._span = span
        self._open = [span]  # emptied by the first end(): list.pop is atomic, so two threads cannot both end it
        self._inside: object = None  # the context the last step left current (None before the first step)

    def enter(self) -> object:
        """Make the span current (with what the previous step left current); the token for :meth:`leave`."""
        inside = self._inside
        return _tracing.attach(self._span) if inside is None else _tracing.attach_context(inside)

    def leave(self, token: object) -> None:
        """Undo :meth:`enter` (in the thread or task that entered), keeping what the step left current for the next."""
        if token is not None:
            self._inside = _tracing.current_context()
        _tracing.detach(token)

    def end(self, error: BaseException | None = None) -> None:
        """The stream ended: exhausted (no argument), failed with ``error`` (taken as the check's block takes an
        exception: after the verdict nothing is counted and the status stays UNSET), or cancelled."""
        try:
            span = self._open.pop()
        except IndexError:
            return
        if isinstance(error, AutoGLMRuntimeError):
            self._check.reject(error)
        span.end()

    def responses(self, responses: Iterator[Any]) -> Iterator[Any]:
        """``responses``, each produced with the span current; the span ends when they end or fail."""
        return _Responses(responses, self)

    async def aresponses(self, responses: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """``responses`` (an async iterator), each produced with the span current; the span ends when they end,
        fail or are closed."""
        try:
            while True:
                token = self.enter()
                try:
                    response = await responses.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    self.leave(token)
                yield response
        except BaseException as exc:  # (cancelled, closed: GeneratorExit)
            self.end(exc)
            raise
        self.end()

    async def run(self, work: Awaitable[Any]) -> Any:
        """Await ``work`` (a handler that writes its responses itself) with the span current, then end the span."""
        try:
            token = self.enter()
            try:
                result = await work
            finally:
                self.leave(token)
        except BaseException as exc:
            self.end(exc)
            raise
        self.end()
        return result


class _Responses:
    """A class, not a generator: nothing runs when the server drops it unfinished (a generator's close would)."""

    __slots__ = ("_responses", "_stream")

    def __init__(self, responses: Iterator[Any], stream: GuardStream) -> None:
        self._responses = responses
        self._stream = stream

    def __iter__(self) -> _Responses:
        return self

    def __next__(self) -> Any:
        stream = self._stream
        try:
            token = stream.enter()
            try:
                return next(self._responses)
            finally:
                stream.leave(token)
        except StopIteration:
            stream.end()
            raise
        except BaseException as exc:
            stream.end(exc)
            raise
