"""What both gRPC interceptors do, free of grpc itself: judge a call's metadata and each of its request messages,
and tally the messages truncated for the call's trailing metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autoglm_runtime.errors import INPUT_TRUNCATED, AutoGLMRuntimeError, InvalidRequestError
from autoglm_runtime.validation._required import is_empty, no_input
from autoglm_runtime.validation.asgi import TRUNCATED_TOKENS_HEADER, WARNING_CODE_HEADER
from autoglm_runtime.validation.context_window import ContextWindowGuard, GuardInput, GuardResult
from autoglm_runtime.validation.decode import DecodeGuard
from autoglm_runtime.validation.headers import HeaderTokenGuard

__all__ = ["TRUNCATED_MESSAGES_HEADER", "Extractor", "Guards", "Rewriter", "Tally", "call_plugin"]

TRUNCATED_MESSAGES_HEADER = "x-autoglm-truncated-messages"

Extractor = Callable[[Any], "GuardInput | str | None"]
Rewriter = Callable[[Any, GuardResult], Any]


class Tally:
    """The messages one call has had judged, and which of them were truncated by how many tokens."""

    def __init__(self) -> None:
        self.seen = 0
        self.cuts: list[tuple[int, int]] = []
        #: The guard's verdict on the message judged last (``None``: nothing was counted).
        self.verdict: GuardResult | None = None

    def trailing(self) -> tuple[tuple[str, str], ...]:
        total = sum(removed for _, removed in self.cuts)
        return (
            (TRUNCATED_TOKENS_HEADER, str(total)),
            (TRUNCATED_MESSAGES_HEADER, ",".join(f"{index}:{removed}" for index, removed in self.cuts)),
            (WARNING_CODE_HEADER, INPUT_TRUNCATED),
        )


def call_plugin(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except AutoGLMRuntimeError:
        raise
    except Exception as exc:
        # A plug-in that chokes on a request is the request's problem to the client, and must stay coded.
        raise InvalidRequestError(
            f"the server's {what} failed on this request ({type(exc).__name__}: {exc}): check the request fields"
        ) from exc


class Guards:
    """What both interceptors do, free of any server flavour: judge metadata, judge one request message."""

    def __init__(
        self,
        header_guard: HeaderTokenGuard | None,
        context_guard: ContextWindowGuard | None,
        extractor: Extractor | None,
        rewriter: Rewriter | None,
        decode_guard: DecodeGuard | None,
        *,
        require_input: bool = False,
    ) -> None:
        self.header_guard = header_guard
        self.context_guard = context_guard
        self.extractor = extractor
        self.rewriter = rewriter
        self.decode_guard = decode_guard or DecodeGuard()
        self.require_input = require_input

    def metadata_error(self, details: Any) -> AutoGLMRuntimeError | None:
        if self.header_guard is None:
            return None
        try:
            self.header_guard.check((item.key, item.value) for item in details.invocation_metadata or ())
        except AutoGLMRuntimeError as exc:
            return exc
        return None

    def judge(self, request: Any, tally: Tally) -> Any:
        """The request to pass on (``tally`` records a truncation); raises our coded errors."""
        assert self.extractor is not None
        number = tally.seen
        tally.seen += 1
        tally.verdict = None
        extracted = call_plugin("extractor", self.extractor, request)
        if extracted is None:
            return request
        if isinstance(extracted, str):
            extracted = GuardInput(extracted)
        if not isinstance(extracted, GuardInput):
            raise InvalidRequestError(
                f"the server's extractor returned {type(extracted).__name__}, not a GuardInput, a string or None, "
                "for this request: check the request fields"
            )
        segments = extracted.segments
        pieces = [segments] if isinstance(segments, str) else segments if isinstance(segments, Sequence) else []
        for segment in pieces:
            if isinstance(segment, str):
                self.decode_guard.check_text(segment, param=extracted.param)
        if self.require_input and is_empty(extracted):
            raise no_input(extracted.param)
        if self.context_guard is None:
            return request
        result = self.context_guard.judge(extracted, allow_truncation=self.rewriter is not None)
        tally.verdict = result
        if not result.truncated or self.rewriter is None:
            return request
        tally.cuts.append((number, result.removed_tokens))
        rewritten = call_plugin("rewriter", self.rewriter, request, result)
        if not isinstance(rewritten, type(request)):
            # The handler would fail on it with a bare UNKNOWN (a None, a str where a message is expected).
            raise InvalidRequestError(
                f"the server's rewriter returned {type(rewritten).__name__}, not a {type(request).__name__} like the "
                "request, for this request: check the request fields"
            )
        return rewritten
