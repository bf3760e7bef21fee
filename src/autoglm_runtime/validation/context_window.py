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
bounded part of it (see :mod:`autoglm_runtime.validation._truncation`). The counting itself lives in
:mod:`autoglm_runtime.validation._counting`; this module judges requests with it.
"""

from __future__ import annotations

import copy
import functools
import operator
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from autoglm_runtime.errors import InvalidRequestError, UsageError
from autoglm_runtime.validation._counting import _BATCH_CHARS, _MIN_CHUNK_CHARS, BOUNDARY_SLACK, TokenCounter, _memo
from autoglm_runtime.validation._message_text import check_roles
from autoglm_runtime.validation._overflow import output_error
from autoglm_runtime.validation._word_bounds import WordBound
from autoglm_runtime.validation.limits import Limits, LimitsSource, StaticLimits, TruncationSide
from autoglm_runtime.validation.request import Chat, GuardInput, GuardResult, Segment, segments_of
from autoglm_runtime.validation.tokenizers import HFTokenizer, Tokenizer

if TYPE_CHECKING:
    from autoglm_runtime.validation.chat_template import ChatTemplate

__all__ = ["BOUNDARY_SLACK", "Chat", "ContextWindowGuard", "GuardInput", "GuardResult", "Segment"]

#: Without a sound bound, a partial text's start holds this many characters per token of the window.
_PARTIAL_CHARS_PER_TOKEN = 16


class ContextWindowGuard(TokenCounter):
    """Rejects (E0513) or, when enabled, truncates (E0514) input that does not fit the context window.

    ``context_window`` is a token count, a :class:`Limits` (constant limits) or a :class:`LimitsSource` read once
    per request (then the limits decide truncation too). ``max_chars_per_token`` overrides the tokenizer's
    ``max_token_chars`` for the pre-check (``None`` turns that character pre-check off). ``word_bound=False``
    stops the guard from using the tokenizer's ``word_bound`` (proven lower bounds from words) when it has no
    character bound. ``default_output_tokens``
    is assumed when a request names no output budget.
    ``chat_template`` renders chat requests as the model will read them; without one, each message costs
    ``message_tokens`` on top of its text (a cautious stand-in for the template's own tokens), and so does the
    reply's start where one is rendered (not for an embedding's chat, nor with ``add_generation_prompt`` false).

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
        """Count ``text`` (a prompt, or a request's segments such as each message's content) against the window.

        The input must leave room for ``max_output_tokens`` (``default_output_tokens`` when ``None``) and nothing
        more: ``check`` counts. :meth:`judge` judges a request as a generating backend runs it (room for at least
        one output token).
        ``allow_truncation=False`` rejects even when the limits enable truncation (for callers that cannot pass
        a truncated input on). Raises :class:`ContextWindowExceededError` or :class:`InputDecodeError`.
        """
        counted = GuardInput(text, max_output_tokens, param, min_output_tokens=0)
        return self._judge_under(counted, self._limits.current(), allow_truncation)

    def judge(self, request: GuardInput, *, allow_truncation: bool = True) -> GuardResult:
        """Judge a whole request described by ``request`` (batch prompts, pinned pieces, chat messages).

        A chat message without a string role is E5010, as OpenAI and vLLM refuse it, however the chat was built
        (:class:`OpenAIExtractor` also holds roles to its ``roles``).
        """
        if request.chat is not None:
            check_roles(request.param or "messages", request.chat.messages, None)
        return self._judge_under(request, self._limits.current(), allow_truncation)

    @functools.cached_property
    def _plain(self) -> ContextWindowGuard:
        """This guard counting text without the tokenizer's special tokens (``GuardInput.add_special_tokens``)."""
        plain = copy.copy(self)
        plain.tokenizer = self.prompt_tokenizer
        return plain

    def _judge_under(self, request: GuardInput, limits: Limits, allow_truncation: bool) -> GuardResult:
        """:meth:`judge` under ``limits`` (the current ones, or the backend's own cut's: see ``_kept``)."""
        if not request.add_special_tokens and request.chat is None and self.prompt_tokenizer is not self.tokenizer:
            return self._plain._judge_under(request, limits, allow_truncation)
        if request.embedding and (request.max_output_tokens, request.min_output_tokens) != (0, 0):
            request = replace(request, max_output_tokens=0, min_output_tokens=0)  # nothing is generated
        output = self.default_output_tokens if request.max_output_tokens is None else request.max_output_tokens
        if isinstance(output, bool) or not isinstance(output, int) or output < 0:
            raise InvalidRequestError(
                f"{request.output_param} must be a non-negative integer, got {output!r:.40}",
                param=request.output_param,
            )
        least = request.min_output_tokens
        if type(least) is not int or least < 0:
            raise InvalidRequestError(
                f"min_output_tokens must be a whole number of at least 0, got {least!r:.40}: fix the extractor that "
                "built the GuardInput"
            )
        if output > limits.context_window:
            raise output_error(output, limits.context_window, request.output_param)
        if request.keep_tokens is not None:
            from autoglm_runtime.validation._kept import judge_kept

            return judge_kept(self, request, output, limits)
        # The backend writes at least this many tokens, whatever the request asks for (vLLM: one).
        output = max(output, least)
        segments = segments_of(request.segments)
        if request.partial:
            from autoglm_runtime.validation._partial import reject_partial

            reject_partial(
                self, request, segments, output, limits, truncating=limits.truncate_on_overflow and allow_truncation
            )
        if not request.batch:
            return self._count_one(request, segments, output, limits, allow_truncation)
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
                results.append(self._count_one(one, [prompt, *shared], output, limits, allow_truncation))
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

    def _count_one(
        self, request: GuardInput, segments: list[Segment], output: int, limits: Limits, allow_truncation: bool
    ) -> GuardResult:
        from autoglm_runtime.validation import _truncation

        budget = limits.context_window - output
        truncating = limits.truncate_on_overflow and allow_truncation
        if request.chat is not None and self.chat_template is not None:
            return _truncation.judge_rendered(self, request, segments, output, limits, truncating=truncating)
        fixed = request.fixed_tokens
        if request.chat is not None:
            # The reply's start is reserved only where the backend renders it: not for an embedding's chat (vLLM's
            # embeddings add no generation prompt unless asked), nor with add_generation_prompt false.
            replies = (request.chat.options or {}).get("add_generation_prompt", not request.embedding)
            fixed += self.message_tokens * (len(request.chat.messages) + bool(replies))
        if truncating and budget - fixed >= 1:
            return _truncation.judge_truncating(self, request, segments, fixed=fixed, output=output, limits=limits)
        self._precheck(
            segments, budget - fixed, fixed=fixed, output=output, window=limits.context_window, request=request
        )
        ids = self.count(segments, budget - fixed, request, fixed=fixed, output=output, window=limits.context_window)
        total = fixed + sum(len(i) for i in ids)
        return GuardResult(total, output, limits.context_window, 0, tuple(segments), tuple(tuple(i) for i in ids))
