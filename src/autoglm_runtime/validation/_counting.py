"""How a guard counts tokens: short pieces in one batch call (each distinct text once), long ones in chunks cut at
whitespace with an early exit once the count proves the budget exceeded, and proven lower bounds from characters or
words that need no tokenizing. :class:`~autoglm_runtime.validation.ContextWindowGuard` judges requests with it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, cast

from autoglm_runtime.errors import ContextWindowExceededError, InputDecodeError, UsageError
from autoglm_runtime.validation._overflow import overflow_error
from autoglm_runtime.validation.tokenizers import BatchTokenizer, Tokenizer

if TYPE_CHECKING:
    from autoglm_runtime.validation._word_bounds import WordBound
    from autoglm_runtime.validation.request import GuardInput, Segment

__all__ = ["BOUNDARY_SLACK", "TokenCounter"]

#: Tokens a chunk cut may add compared with tokenizing across it (merges split, a prefix space added).
BOUNDARY_SLACK = 8

_MIN_CHUNK_CHARS = 16_384
_CUT_LOOKBACK = 1_024
#: Characters of short pieces tokenized in one batch call before the running total is compared with the budget.
_BATCH_CHARS = 65_536
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


class TokenCounter:
    """The counting half of :class:`~autoglm_runtime.validation.ContextWindowGuard`: its tokenizer, its sound
    characters-per-token bound (``None`` for none) and its word bound (``None`` for none)."""

    tokenizer: Tokenizer
    max_chars_per_token: int | None
    word_counter: WordBound | None

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
        if at_least > budget:  # token ids alone are counted exactly
            raise overflow_error(at_least + fixed, output, window, request, at_least=chars > 0)

    def least_tokens(self, texts: Sequence[str], enough: int) -> int:
        """A proven lower bound on the tokens of texts that begin with ``texts``, working no harder than it takes
        to pass ``enough``.

        Each text may be only the start of a longer one. With a sound ``max_chars_per_token`` the bound is their
        length over it; without one, each start is counted with early exit, less one cut's slack (the whole text
        holds at least its start's tokens, less what one cut can split).

        >>> from autoglm_runtime.validation import CallableTokenizer, ContextWindowGuard
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

        if running > budget:  # exact when the input is token ids alone
            raise over(running, exact=all(isinstance(s, tuple) for s in segments))
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
