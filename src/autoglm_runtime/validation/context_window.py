"""ContextWindowGuard: input tokens plus requested output tokens must fit the model's context window.

The guard counts with the model's own tokenizer (and, when given one, the model's own chat template) and, by
default, rejects an overflow with E0513 in the words OpenAI-compatible clients look for ("This model's maximum
context length is N tokens"). Truncation happens only when asked for; the guard then cuts the token ids itself
(it never flips a shared tokenizer's truncation setting), logs E0514, and says how many tokens it removed::

    guard = ContextWindowGuard(tokenizer, 8192)
    result = guard.check(prompt, max_output_tokens=256)       # raises ContextWindowExceededError on overflow
    guard = ContextWindowGuard(tokenizer, 8192, truncate_on_overflow=True)
    result = guard.check(prompt, max_output_tokens=256)
    result.removed_tokens, result.text                        # what was cut, and what is left

A :class:`GuardInput` describes a whole request: a batch of prompts is judged prompt by prompt, pinned pieces
(system and developer messages, tool definitions, a ``suffix``) are counted but never cut, and a chat's messages
are dropped oldest first when truncating.

Absurdly long input never ties up a worker, in two steps:

1. When the tokenizer reports a sound ``max_token_chars`` bound (every token covers at most that many characters),
   input longer than ``tokens_left * max_token_chars`` characters cannot fit and is rejected before tokenizing.
   The bound is deliberately not "one character per token": a byte-level tokenizer can spend up to four tokens on
   one character, so characters are no upper bound on tokens, and the check only ever uses the safe direction.
   Without such a bound, a tokenizer with a proven ``word_bound`` (WordPiece, WordLevel, Unigram; T5-style
   ``Precompiled`` and ``Replace`` normalizers by the words of their own normalization of a start, see
   ``_word_bounds`` and ``_normalized_words``) still rejects without tokenizing: each word costs a token.
2. Otherwise long input is tokenized in chunks cut at whitespace, and counting stops as soon as the tokens counted,
   minus a slack of ``BOUNDARY_SLACK`` tokens for each cut (a cut can split what the whole text would merge),
   exceed what is left. Input that turns out to fit is then tokenized whole, so accepted counts are exact.

Short pieces are tokenized together in one batch call (identical pieces once), so a body of many small strings
costs one tokenizer call per batch rather than one per string. Truncating a very long piece tokenizes only a
bounded part of it (see :mod:`autoglm_runtime.validation._truncation`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Literal, cast

from autoglm_runtime.errors import ContextWindowExceededError, InputDecodeError, InvalidRequestError, UsageError
from autoglm_runtime.validation._overflow import output_error, overflow_error
from autoglm_runtime.validation._word_bounds import WordBound
from autoglm_runtime.validation.limits import Limits, LimitsSource, StaticLimits, TruncationSide
from autoglm_runtime.validation.request import Chat, GuardInput, GuardResult, Segment, segments_of
from autoglm_runtime.validation.tokenizers import BatchTokenizer, HFTokenizer, Tokenizer

if TYPE_CHECKING:
    from autoglm_runtime.validation.chat_template import ChatTemplate

__all__ = ["BOUNDARY_SLACK", "Chat", "ContextWindowGuard", "GuardInput", "GuardResult", "Segment"]

#: Tokens a chunk cut may add compared with tokenizing across it (merges split, a prefix space added).
BOUNDARY_SLACK = 8

_MIN_CHUNK_CHARS = 16_384
_CUT_LOOKBACK = 1_024
#: Characters of short pieces tokenized in one batch call before the running total is compared with the budget.
_BATCH_CHARS = 65_536
#: Without a sound bound, a partial text's start holds this many characters per token of the window.
_PARTIAL_CHARS_PER_TOKEN = 16
#: Token ids of a batch's prompts, tokenized together ahead of judging them one by one (per call, per thread).
_memo: ContextVar[dict[str, list[int]] | None] = ContextVar("autoglm_guard_memo", default=None)


@functools.lru_cache(maxsize=64)
def _batches(kind: type) -> bool:
    # What isinstance(tok, BatchTokenizer) decides, asked once per tokenizer class rather than per call.
    return callable(getattr(kind, "encode_batch", None))


def _cut(text: str, target: int, after: int = 1) -> int:
    """A cut point in ``(after, target]``: the start of a whitespace run when one is near, else ``target``."""
    for index in range(target, max(target - _CUT_LOOKBACK, after), -1):
        if text[index].isspace() and not text[index - 1].isspace():
            return index
    return target


class ContextWindowGuard:
    """Rejects (E0513) or, when enabled, truncates (E0514) input that does not fit the context window.

    ``context_window`` is a token count, a :class:`Limits` (constant limits) or a :class:`LimitsSource` read once
    per request (then the limits decide truncation too). ``max_chars_per_token`` overrides the tokenizer's
    ``max_token_chars`` for the pre-check (``None`` turns that character pre-check off). ``word_bound=False``
    stops the guard from using the tokenizer's ``word_bound`` (proven lower bounds from words) when it has no
    character bound. ``default_output_tokens``
    is assumed when a request names no output budget.
    ``chat_template`` renders chat requests as the model will read them; without one, each message costs
    ``message_tokens`` on top of its text (a cautious stand-in for the template's own tokens).

    >>> from autoglm_runtime.validation import CallableTokenizer
    >>> guard = ContextWindowGuard(CallableTokenizer(str.split), 4)
    >>> guard.check("one two three", max_output_tokens=2)
    Traceback (most recent call last):
    ...
    autoglm_runtime.errors.ContextWindowExceededError: E0513: This model's maximum context length is 4 tokens. \
However, you requested 5 tokens (3 in the input, 2 in the completion asked for by max_tokens), more than the \
context window of 4 tokens: shorten the input or lower max_tokens
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        context_window: int | Limits | LimitsSource,
        *,
        truncate_on_overflow: bool = False,
        truncation_side: TruncationSide = "left",
        max_chars_per_token: int | Literal["auto"] | None = "auto",
        default_output_tokens: int = 0,
        chat_template: ChatTemplate | None = None,
        message_tokens: int = 4,
        word_bound: bool = True,
    ) -> None:
        if not isinstance(context_window, int | bool) and hasattr(type(context_window), "__index__"):
            # An integer of another type: numpy.int64(8192) read from a model's config.
            context_window = operator.index(context_window)  # type: ignore[arg-type]
        if isinstance(context_window, Limits):  # what a source hands out: those limits, for good
            context_window = StaticLimits(context_window)
        if isinstance(context_window, int):
            self._limits: LimitsSource = StaticLimits(
                Limits(context_window, truncate_on_overflow=truncate_on_overflow, truncation_side=truncation_side)
            )
        elif not callable(getattr(context_window, "current", None)):
            raise UsageError(
                "context_window must be a whole number of tokens, a Limits, or a limits source (StaticLimits, "
                "ConfigLimits), "
                f"got {context_window!r}"
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
        if message_tokens < 0:
            raise UsageError(f"message_tokens must not be negative, got {message_tokens}")
        self.tokenizer = tokenizer
        self.max_chars_per_token: int | None = max_chars_per_token
        self.word_counter: WordBound | None = (
            tokenizer.word_bound if word_bound and isinstance(tokenizer, HFTokenizer) else None
        )
        self.default_output_tokens = default_output_tokens
        self.chat_template = chat_template
        self.message_tokens = message_tokens
        # A rendered chat already holds the special tokens the template writes; vLLM tokenizes it without adding more.
        self.prompt_tokenizer: Tokenizer = (
            tokenizer.without_special_tokens() if isinstance(tokenizer, HFTokenizer) else tokenizer
        )

    @property
    def limits(self) -> Limits:
        """The limits that apply to a request judged now."""
        return self._limits.current()

    def text_limit(self) -> int | None:
        """How many characters of a long piece of text the guard needs to reject it (see ``GuardInput.partial``).

        With a sound ``max_chars_per_token`` no longer text can fit the current window; without one, a start this
        long holds enough tokens to prove an overflow for any usual text. ``None`` with a chat template (it
        decides what the model reads, so the template must see everything).
        """
        if self.chat_template is not None:
            return None
        window = self._limits.current().context_window
        if self.max_chars_per_token is None:
            return _PARTIAL_CHARS_PER_TOKEN * (window + 1)
        return window * self.max_chars_per_token

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
        return self.judge(GuardInput(text, max_output_tokens, param), allow_truncation=allow_truncation)

    def judge(self, request: GuardInput, *, allow_truncation: bool = True) -> GuardResult:
        """Judge a whole request described by ``request`` (batch prompts, pinned pieces, chat messages)."""
        return self._judge_under(request, self._limits.current(), allow_truncation)

    def _judge_under(self, request: GuardInput, limits: Limits, allow_truncation: bool) -> GuardResult:
        """:meth:`judge` under ``limits`` (the current ones, or the backend's own cut's: see ``_kept``)."""
        output = self.default_output_tokens if request.max_output_tokens is None else request.max_output_tokens
        if isinstance(output, bool) or not isinstance(output, int) or output < 0:
            raise InvalidRequestError(
                f"{request.output_param} must be a non-negative integer, got {output!r:.40}",
                param=request.output_param,
            )
        if output > limits.context_window:
            raise output_error(output, limits.context_window, request.output_param)
        if request.keep_tokens is not None:
            from autoglm_runtime.validation._kept import judge_kept

            return judge_kept(self, request, output, limits)
        # The backend writes at least this many tokens, whatever the request asks for (vLLM: one).
        output = max(output, request.min_output_tokens)
        segments = segments_of(request.segments)
        if request.partial:
            from autoglm_runtime.validation._partial import reject_partial

            reject_partial(
                self, request, segments, output, limits, truncating=limits.truncate_on_overflow and allow_truncation
            )
        if not request.batch:
            return self._judge_one(request, segments, output, limits, allow_truncation)
        shared = [segment for index, segment in enumerate(segments) if index in request.pinned]
        prompts = [segment for index, segment in enumerate(segments) if index not in request.pinned]
        results = []
        memo: dict[str, list[int]] = {}
        token = _memo.set(memo)
        try:
            for number, prompt in enumerate(prompts):
                if isinstance(prompt, str) and len(prompt) <= _MIN_CHUNK_CHARS and prompt not in memo:
                    self._prefetch(prompts, number, memo)
                one = replace(
                    request,
                    param=f"{request.param}[{number}]" if request.param else None,
                    pinned=frozenset(range(1, len(shared) + 1)),
                    batch=False,
                )
                results.append(self._judge_one(one, [prompt, *shared], output, limits, allow_truncation))
        finally:
            _memo.reset(token)
        judged = iter(r.segments[0] for r in results)
        return GuardResult(
            sum(r.input_tokens for r in results),
            output,
            limits.context_window,
            sum(r.removed_tokens for r in results),
            tuple(segment if index in request.pinned else next(judged) for index, segment in enumerate(segments)),
            tuple(r.token_ids[0] for r in results),
            batch=tuple(results),
        )

    def _prefetch(self, prompts: Sequence[Segment], start: int, memo: dict[str, list[int]]) -> None:
        """Tokenize the short prompts from ``start`` on, up to about ``_BATCH_CHARS`` characters, in one call."""
        batch: list[str] = []
        chars = 0
        for prompt in prompts[start:]:
            if isinstance(prompt, str) and len(prompt) <= _MIN_CHUNK_CHARS and prompt not in memo:
                batch.append(prompt)
                chars += len(prompt)
                if chars >= _BATCH_CHARS:
                    break
        memo.update(zip(batch, self.encode_many(batch), strict=True))

    def _judge_one(
        self, request: GuardInput, segments: list[Segment], output: int, limits: Limits, allow_truncation: bool
    ) -> GuardResult:
        from autoglm_runtime.validation import _truncation

        budget = limits.context_window - output
        truncating = limits.truncate_on_overflow and allow_truncation
        if request.chat is not None and self.chat_template is not None:
            return _truncation.judge_rendered(self, request, segments, output, limits, truncating=truncating)
        fixed = request.fixed_tokens
        if request.chat is not None:
            fixed += self.message_tokens * len(request.chat.messages) + self.message_tokens
        if truncating and budget - fixed >= 1:
            return _truncation.judge_truncating(self, request, segments, fixed=fixed, output=output, limits=limits)
        self._precheck(
            segments, budget - fixed, fixed=fixed, output=output, window=limits.context_window, request=request
        )
        ids = self.count(segments, budget - fixed, request, fixed=fixed, output=output, window=limits.context_window)
        total = fixed + sum(len(i) for i in ids)
        return GuardResult(total, output, limits.context_window, 0, tuple(segments), tuple(tuple(i) for i in ids))

    def encode(self, text: str, *, tokenizer: Tokenizer | None = None) -> list[int]:
        """``text``'s ids; a tokenizer failure becomes :class:`InputDecodeError` (E5009)."""
        return self.encode_many([text], tokenizer=tokenizer)[0]

    def encode_many(self, texts: Sequence[str], *, tokenizer: Tokenizer | None = None) -> list[list[int]]:
        """The ids of each text, in one batch call when the tokenizer has one, each distinct text once."""
        tok = tokenizer or self.tokenizer
        memo = _memo.get() if tokenizer is None else None
        if memo:
            missing = [text for text in texts if text not in memo]
            if not missing:
                return [memo[text] for text in texts]
            found = dict(zip(missing, self._encode_distinct(missing, tok), strict=True))
            return [memo[text] if text in memo else found[text] for text in texts]
        return self._encode_distinct(texts, tok)

    def _encode_distinct(self, texts: Sequence[str], tok: Tokenizer) -> list[list[int]]:
        unique = list(dict.fromkeys(texts))
        try:
            batching = cast(BatchTokenizer, tok) if _batches(type(tok)) else None
            encoded = batching.encode_batch(unique) if batching else [tok.encode(text) for text in unique]
        except UsageError:
            raise
        except Exception as exc:
            # Tokenizer errors would otherwise surface as 500s; the input is what they object to.
            raise InputDecodeError(
                f"the tokenizer could not encode the input ({type(exc).__name__}): send well-formed text"
            ) from exc
        by_text = dict(zip(unique, encoded, strict=True))
        return [by_text[text] for text in texts]

    def _precheck(
        self, segments: list[Segment], budget: int, *, fixed: int, output: int, window: int, request: GuardInput
    ) -> None:
        per_token = self.max_chars_per_token
        chars = sum(len(s) for s in segments if isinstance(s, str))
        ids = sum(len(s) for s in segments if isinstance(s, tuple))
        if per_token is not None:
            at_least = ids + -(-chars // per_token)
        elif self.word_counter is not None and chars > max(_BATCH_CHARS, 2 * (budget - ids)):
            # Short text is tokenized at once for an exact count; c characters hold at most ceil(c / 2) words.
            at_least = ids + self.least_words([s for s in segments if isinstance(s, str)], budget - ids, whole=True)
        else:
            return
        if at_least > budget:
            raise overflow_error(at_least + fixed, output, window, request, at_least=True)

    def least_tokens(self, texts: Sequence[str], enough: int) -> int:
        """A proven lower bound on the tokens of texts that begin with ``texts``, working no harder than it takes
        to pass ``enough``.

        Each text may be only the start of a longer one. With a sound ``max_chars_per_token`` the bound is their
        length over it; without one, each start is counted with early exit, less one cut's slack (the whole text
        holds at least its start's tokens, less what one cut can split).

        >>> from autoglm_runtime.validation import CallableTokenizer
        >>> ContextWindowGuard(CallableTokenizer(list, max_token_chars=4), 8).least_tokens(["x" * 10], 8)
        3
        """
        if self.max_chars_per_token is not None:
            return -(-sum(map(len, texts)) // self.max_chars_per_token)
        least = self.least_words(texts, enough)
        if least > enough:
            return least
        least = 0
        for text in texts:
            counted, _ = self._count_long(text, enough - least + BOUNDARY_SLACK, None)
            least += max(counted - BOUNDARY_SLACK, 0)
            if least > enough:
                break
        return least

    def least_words(self, texts: Sequence[str], enough: int, *, whole: bool = False) -> int:
        """The words of ``texts`` that each cost at least one token (0 without a ``word_counter``), counted no
        further than it takes to pass ``enough``; a lower bound on the tokens of texts that begin with ``texts``, or
        with ``whole`` (each text is tokenized as it is) of ``texts`` themselves."""
        return 0 if self.word_counter is None else self.word_counter.least_tokens_of(texts, enough, whole=whole)

    def count(
        self,
        segments: Sequence[Segment],
        budget: int,
        request: GuardInput,
        *,
        fixed: int,
        output: int,
        window: int,
        tokenizer: Tokenizer | None = None,
    ) -> list[list[int]]:
        """Each segment's ids, or E0513 as soon as their running total is proven to exceed ``budget``."""
        running = sum(len(s) for s in segments if isinstance(s, tuple))

        def over(counted: int, *, exact: bool) -> ContextWindowExceededError:
            return overflow_error(counted + fixed, output, window, request, at_least=not exact)

        if running > budget:
            raise over(running, exact=False)
        ids: list[list[int] | None] = [list(s) if isinstance(s, tuple) else None for s in segments]
        batch: list[int] = []
        batch_chars = 0
        order = [i for i, s in enumerate(segments) if isinstance(s, str)]
        for position, index in enumerate(order):
            text = segments[index]
            assert isinstance(text, str)
            if len(text) > _MIN_CHUNK_CHARS:
                counted, exact = self._count_long(text, budget - running, tokenizer)
                if exact is None:
                    raise over(running + counted, exact=False)
                ids[index] = exact
                running += counted
            else:
                batch.append(index)
                batch_chars += len(text)
            if batch and (batch_chars >= _BATCH_CHARS or position == len(order) - 1):
                encoded = self.encode_many([segments[i] for i in batch], tokenizer=tokenizer)  # type: ignore[misc]
                for i, e in zip(batch, encoded, strict=True):
                    ids[i] = e
                running += sum(len(e) for e in encoded)
                batch, batch_chars = [], 0
            if running > budget:
                raise over(running, exact=position == len(order) - 1)
        return [i if i is not None else [] for i in ids]

    def _count_long(self, text: str, remaining: int, tokenizer: Tokenizer | None) -> tuple[int, list[int] | None]:
        """``(len(ids), ids)``, or ``(lower_bound, None)`` once chunked counting proved ``remaining`` exceeded."""
        remaining = max(remaining, 0)
        if len(text) > max(_MIN_CHUNK_CHARS, 8 * (remaining + 1)):
            # Far longer than could plausibly fit: count in chunks, each sized from the characters per token seen so
            # far to just reach what is left, so a rejection costs little more than tokenizing the tokens left (text
            # that still fits is counted again whole).
            floor = max(_MIN_CHUNK_CHARS // 4, 1)
            chunk = max(floor, remaining + 1 + 2 * BOUNDARY_SLACK)
            position = counted = cuts = 0
            while position < len(text):
                target = position + chunk
                end = len(text) if target >= len(text) else _cut(text, target, max(position, 1))
                counted += len(self.encode(text[position:end], tokenizer=tokenizer))
                position = end
                cuts += position < len(text)
                lower = counted - BOUNDARY_SLACK * cuts
                if lower > remaining:
                    return lower, None
                # The tokens still to prove, plus the next cut's slack, at the density so far and an eighth more.
                needed = remaining + 1 - lower + BOUNDARY_SLACK
                chunk = max(floor, needed * position * 9 // (8 * max(counted, 1)))
        ids = self.encode(text, tokenizer=tokenizer)
        return len(ids), ids
