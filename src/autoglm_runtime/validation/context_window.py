"""ContextWindowGuard: input tokens plus requested output tokens must fit the model's context window.

The guard counts with the model's own tokenizer and, by default, rejects an overflow with E0513 naming both numbers
and the limit. Truncation happens only when asked for; the guard then cuts the token ids itself (it never flips a
shared tokenizer's truncation setting), logs E0514, and says how many tokens it removed::

    guard = ContextWindowGuard(tokenizer, 8192)
    result = guard.check(prompt, max_output_tokens=256)       # raises ContextWindowExceededError on overflow
    guard = ContextWindowGuard(tokenizer, 8192, truncate_on_overflow=True)
    result = guard.check(prompt, max_output_tokens=256)
    result.removed_tokens, result.text                        # what was cut, and what is left

Absurdly long input never ties up a worker, in two steps:

1. When the tokenizer reports a sound ``max_token_chars`` bound (every token covers at most that many characters),
   input longer than ``tokens_left * max_token_chars`` characters cannot fit and is rejected before tokenizing.
   The bound is deliberately not "one character per token": a byte-level tokenizer can spend up to four tokens on
   one character, so characters are no upper bound on tokens, and the check only ever uses the safe direction.
2. Otherwise long input is tokenized in chunks cut at whitespace, and counting stops as soon as the tokens counted,
   minus a slack of ``BOUNDARY_SLACK`` tokens for each cut (a cut can split what the whole text would merge),
   exceed what is left. Input that turns out to fit is then tokenized whole, so accepted counts are exact.

Truncation needs the exact count of what it removes, so with truncation on the input is tokenized whole; bound
that work with the body limit of the adapter in front (the ASGI middleware's ``max_body_bytes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from autoglm_runtime.errors import (
    INPUT_TRUNCATED,
    ContextWindowExceededError,
    InputDecodeError,
    InvalidRequestError,
    UsageError,
)
from autoglm_runtime.logging import get_logger
from autoglm_runtime.validation.limits import Limits, LimitsSource, StaticLimits, TruncationSide
from autoglm_runtime.validation.tokenizers import Tokenizer

__all__ = ["BOUNDARY_SLACK", "ContextWindowGuard", "GuardInput", "GuardResult", "Segment"]

log = get_logger(__name__)

#: Input pieces a guard counts: text, or token ids the client sent already tokenized.
Segment = str | tuple[int, ...]

#: Tokens a chunk cut may add compared with tokenizing across it (merges split, a prefix space added).
BOUNDARY_SLACK = 8

_MIN_CHUNK_CHARS = 16_384
_CUT_LOOKBACK = 1_024
_FIT_ROUNDS = 8


@dataclass(frozen=True)
class GuardInput:
    """What an adapter's extractor hands a guard: the input, the output budget asked for, the field to blame.

    >>> GuardInput("Tell me a story", max_output_tokens=200, param="prompt")
    GuardInput(segments='Tell me a story', max_output_tokens=200, param='prompt')
    """

    segments: str | Sequence[int] | Sequence[str | Sequence[int]]
    max_output_tokens: int | None = None
    param: str | None = None


@dataclass(frozen=True)
class GuardResult:
    """What the guard let through.

    ``segments`` and ``token_ids`` are the input as it should reach the model (truncated if ``removed_tokens``
    is not zero); ``input_tokens`` is their token count.
    """

    input_tokens: int
    output_tokens: int
    context_window: int
    removed_tokens: int
    segments: tuple[Segment, ...]
    token_ids: tuple[tuple[int, ...], ...]

    @property
    def truncated(self) -> bool:
        """Whether input was removed to make the request fit."""
        return self.removed_tokens > 0

    @property
    def text(self) -> str:
        """The text segments joined (for a single prompt: the prompt as it should reach the model)."""
        return "".join(segment for segment in self.segments if isinstance(segment, str))


def _overflow(
    input_tokens: int, output_tokens: int, window: int, param: str | None, *, at_least: bool
) -> ContextWindowExceededError:
    has = "at least " if at_least else ""
    return ContextWindowExceededError(
        f"the input has {has}{input_tokens} tokens and {output_tokens} output tokens were requested "
        f"({has}{input_tokens + output_tokens} in total), more than the context window of {window} tokens: "
        "shorten the input or lower max_tokens",
        param=param,
    )


def _cut(text: str, target: int) -> int:
    """A cut point at or before ``target``: the start of a whitespace run when one is near, else ``target``."""
    for index in range(target, max(target - _CUT_LOOKBACK, 1), -1):
        if text[index].isspace() and not text[index - 1].isspace():
            return index
    return target


def _segments(text: str | Sequence[int] | Sequence[str | Sequence[int]]) -> list[Segment]:
    if isinstance(text, str):
        return [text]
    items = list(text)
    if items and all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        return [tuple(item for item in items if isinstance(item, int))]
    segments: list[Segment] = []
    for item in items:
        if isinstance(item, str):
            segments.append(item)
        elif isinstance(item, Sequence) and all(isinstance(i, int) and not isinstance(i, bool) for i in item):
            segments.append(tuple(i for i in item if isinstance(i, int)))
        else:
            raise UsageError(f"input segments must be strings or sequences of token ids, got {type(item).__name__}")
    return segments


class ContextWindowGuard:
    """Rejects (E0513) or, when enabled, truncates (E0514) input that does not fit the context window.

    ``context_window`` is a token count or a :class:`LimitsSource` read once per request (then the source decides
    truncation too). ``max_chars_per_token`` overrides the tokenizer's ``max_token_chars`` for the pre-check
    (``None`` turns the pre-check off). ``default_output_tokens`` is assumed when a request names no output budget.

    >>> from autoglm_runtime.validation import CallableTokenizer
    >>> guard = ContextWindowGuard(CallableTokenizer(str.split), 4)
    >>> guard.check("one two three", max_output_tokens=2)
    Traceback (most recent call last):
    ...
    autoglm_runtime.errors.ContextWindowExceededError: E0513: the input has 3 tokens and 2 output tokens were \
requested (5 in total), more than the context window of 4 tokens: shorten the input or lower max_tokens
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        context_window: int | LimitsSource,
        *,
        truncate_on_overflow: bool = False,
        truncation_side: TruncationSide = "left",
        max_chars_per_token: int | Literal["auto"] | None = "auto",
        default_output_tokens: int = 0,
    ) -> None:
        if isinstance(context_window, int):
            self._limits: LimitsSource = StaticLimits(
                Limits(context_window, truncate_on_overflow=truncate_on_overflow, truncation_side=truncation_side)
            )
        else:
            if truncate_on_overflow or truncation_side != "left":
                raise UsageError(
                    "truncate_on_overflow and truncation_side come from the limits source when one is given: "
                    "set them there"
                )
            self._limits = context_window
        if max_chars_per_token == "auto":
            max_chars_per_token = tokenizer.max_token_chars
        if max_chars_per_token is not None and max_chars_per_token < 1:
            raise UsageError(f"max_chars_per_token must be at least 1 or None, got {max_chars_per_token}")
        if default_output_tokens < 0:
            raise UsageError(f"default_output_tokens must not be negative, got {default_output_tokens}")
        self.tokenizer = tokenizer
        self.max_chars_per_token: int | None = max_chars_per_token
        self.default_output_tokens = default_output_tokens

    @property
    def limits(self) -> Limits:
        """The limits that apply to a request judged now."""
        return self._limits.current()

    def check(
        self,
        text: str | Sequence[int] | Sequence[str | Sequence[int]],
        *,
        max_output_tokens: int | None = None,
        param: str | None = None,
        allow_truncation: bool = True,
    ) -> GuardResult:
        """Judge one request; ``text`` is a prompt or the request's segments (e.g. each message's content).

        ``allow_truncation=False`` rejects even when the limits enable truncation (for callers that cannot pass
        a truncated input on). Raises :class:`ContextWindowExceededError` or :class:`InputDecodeError`.
        """
        limits = self._limits.current()
        window = limits.context_window
        output = self.default_output_tokens if max_output_tokens is None else max_output_tokens
        if isinstance(output, bool) or not isinstance(output, int) or output < 0:
            raise InvalidRequestError(f"max_tokens must be a non-negative integer, got {output!r}", param="max_tokens")
        budget = window - output
        segments = _segments(text)
        if budget < 0 and not segments:
            # No input to count, yet the output budget alone is over the window.
            raise _overflow(0, output, window, "max_tokens", at_least=False)
        if limits.truncate_on_overflow and allow_truncation and budget >= 1:
            ids = [self._encode_segment(segment) for segment in segments]
            total = sum(len(i) for i in ids)
            if total <= budget:
                return GuardResult(total, output, window, 0, tuple(segments), tuple(tuple(i) for i in ids))
            return self._truncate(segments, ids, budget=budget, output=output, limits=limits)
        self._precheck(segments, budget, output, window, param)
        return self._count(segments, budget, output, window, param)

    def _encode(self, text: str) -> list[int]:
        try:
            return self.tokenizer.encode(text)
        except UsageError:
            raise
        except Exception as exc:
            # Tokenizer errors would otherwise surface as 500s; the input is what they object to.
            raise InputDecodeError(
                f"the tokenizer could not encode the input ({type(exc).__name__}): send well-formed text"
            ) from exc

    def _encode_segment(self, segment: Segment) -> list[int]:
        return list(segment) if isinstance(segment, tuple) else self._encode(segment)

    def _precheck(self, segments: list[Segment], budget: int, output: int, window: int, param: str | None) -> None:
        per_token = self.max_chars_per_token
        if per_token is None:
            return
        chars = sum(len(s) for s in segments if isinstance(s, str))
        fixed = sum(len(s) for s in segments if isinstance(s, tuple))
        at_least = fixed + -(-chars // per_token)
        if at_least > budget:
            raise _overflow(at_least, output, window, param, at_least=True)

    def _count(self, segments: list[Segment], budget: int, output: int, window: int, param: str | None) -> GuardResult:
        all_ids: list[list[int]] = []
        running = 0
        for index, segment in enumerate(segments):
            ids, counted = self._count_segment(segment, budget - running)
            if ids is None or running + counted > budget:
                exact = ids is not None and index == len(segments) - 1
                raise _overflow(running + counted, output, window, param, at_least=not exact)
            running += counted
            all_ids.append(ids)
        return GuardResult(running, output, window, 0, tuple(segments), tuple(tuple(i) for i in all_ids))

    def _count_segment(self, segment: Segment, remaining: int) -> tuple[list[int] | None, int]:
        """``(ids, len(ids))``, or ``(None, lower_bound)`` once chunked counting proved ``remaining`` exceeded."""
        if isinstance(segment, tuple):
            return list(segment), len(segment)
        chunk = max(_MIN_CHUNK_CHARS, 8 * (max(remaining, 0) + 1))
        if len(segment) > chunk:
            position = counted = cuts = 0
            while position < len(segment):
                end = len(segment) if position + chunk >= len(segment) else _cut(segment, position + chunk)
                counted += len(self._encode(segment[position:end]))
                position = end
                cuts += position < len(segment)
                lower = counted - BOUNDARY_SLACK * cuts
                if lower > remaining:
                    return None, lower
        ids = self._encode(segment)
        return ids, len(ids)

    def _truncate(
        self, segments: list[Segment], ids: list[list[int]], *, budget: int, output: int, limits: Limits
    ) -> GuardResult:
        side, window = limits.truncation_side, limits.context_window
        total = sum(len(i) for i in ids)
        to_remove = total - budget
        kept_segments = list(segments)
        kept_ids = [list(i) for i in ids]
        order = range(len(segments)) if side == "left" else range(len(segments) - 1, -1, -1)
        for index in order:
            if to_remove <= 0:
                break
            current = kept_ids[index]
            cut = min(to_remove, len(current))
            keep = current[cut:] if side == "left" else current[: len(current) - cut]
            to_remove -= cut
            if isinstance(segments[index], tuple) or not keep:
                kept_ids[index] = keep
                kept_segments[index] = tuple(keep) if isinstance(segments[index], tuple) else ""
                continue
            kept_segments[index], kept_ids[index] = self._fit_text(keep, side=side, output=output, window=window)
        kept = sum(len(i) for i in kept_ids)
        removed = total - kept
        log.warning(
            "input truncated to fit the context window: %d of %d tokens removed from the %s",
            removed,
            total,
            side,
            extra={
                "error_code": INPUT_TRUNCATED,
                "removed_tokens": removed,
                "input_tokens": kept,
                "output_tokens": output,
                "context_window": window,
            },
        )
        return GuardResult(kept, output, window, removed, tuple(kept_segments), tuple(tuple(i) for i in kept_ids))

    def _fit_text(self, keep: list[int], *, side: TruncationSide, output: int, window: int) -> tuple[str, list[int]]:
        """Text for ``keep`` whose own re-tokenization still fits ``target`` tokens.

        Decoding a cut sequence and tokenizing it again may yield a token or two more (a split merge, a special
        token added back); the model sees the re-tokenized text, so that is what must fit.
        """
        target = len(keep)
        for _ in range(_FIT_ROUNDS):
            try:
                text = self.tokenizer.decode(keep)
            except UsageError:
                raise
            except Exception as exc:
                raise ContextWindowExceededError(
                    f"the input does not fit the context window of {window} tokens with {output} output tokens "
                    f"requested, and truncating it failed: the tokenizer could not decode the kept tokens "
                    f"({type(exc).__name__}): shorten the input",
                ) from exc
            ids = self._encode(text)
            excess = len(ids) - target
            if excess <= 0:
                return text, ids
            keep = keep[excess:] if side == "left" else keep[: len(keep) - excess]
            if not keep:
                return "", []
        raise ContextWindowExceededError(
            f"the input could not be truncated to {target} tokens: after {_FIT_ROUNDS} attempts its re-tokenized "
            f"text was still {len(ids)} tokens with {output} output tokens requested from a context window of "
            f"{window} tokens: shorten the input",
        )
