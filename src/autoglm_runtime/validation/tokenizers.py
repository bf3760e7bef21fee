"""The tokenizer shape the guards count with, and adapters for the tokenizers models ship with.

A guard must count tokens with the model's own tokenizer, loaded from local files: nothing here downloads.
Three adapters cover the usual cases::

    tok = HFTokenizer.from_file("/models/llm/tokenizer.json")        # Hugging Face `tokenizers`
    tok = TiktokenTokenizer.from_file("/models/llm/ranks.tiktoken", pat_str=PATTERN)
    tok = CallableTokenizer(my_encode, decode=my_decode)              # any str -> list[int]

The libraries are imported when an adapter is built, so importing this module needs neither installed.

``max_token_chars`` is the most characters of input one token can stand for, when that is knowable *soundly*;
the context-window guard uses it for a pre-check that rejects absurd input without tokenizing. A wrong bound would
reject input that fits, so adapters only report one when it is proven: tiktoken (every byte of input is in some
token), and Hugging Face BPE tokenizers whose normalizer, pre-tokenizer and model never drop or fuse text (byte-level
with or without an NFC normalizer, Metaspace/SentencePiece-style with byte fallback; the proof is in
:mod:`autoglm_runtime.validation._token_bounds`). WordPiece, WordLevel, Unigram and tokenizers that strip text
report ``None``. For many of those ``HFTokenizer.word_counter`` proves a lower bound instead (each word costs at
least one token; the proof is in :mod:`autoglm_runtime.validation._word_bounds`), and the guard rejects a text with
more words than tokens left without tokenizing it. Behind normalizers that bound cannot see through (SentencePiece's
``Precompiled``, ``Replace``), ``HFTokenizer.normalized_word_counter`` counts the words of the tokenizer's own
normalization of a start of the text (:mod:`autoglm_runtime.validation._normalized_words`); otherwise the guard
relies on early-exit counting.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from autoglm_runtime.errors import UsageError
from autoglm_runtime.validation._normalized_words import EitherBound, NormalizedWordCounter, normalized_word_counter
from autoglm_runtime.validation._token_bounds import max_token_chars
from autoglm_runtime.validation._word_bounds import WordBound, WordCounter, word_counter

__all__ = [
    "BatchTokenizer",
    "CallableTokenizer",
    "HFTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "load_tiktoken_ranks",
]


@runtime_checkable
class Tokenizer(Protocol):
    """What the guards need from a tokenizer: token ids for a text, text for token ids, and a sound bound.

    ``encode`` must not change any state shared with other users of the tokenizer (truncation, padding).
    ``decode`` is only called when the guard truncates; an adapter without one raises :class:`UsageError`.
    """

    @property
    def max_token_chars(self) -> int | None:
        """The most input characters one token can cover, or ``None`` when no sound bound is known."""

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` as the model would see them."""

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (used to produce the truncated input)."""


@runtime_checkable
class BatchTokenizer(Tokenizer, Protocol):
    """A :class:`Tokenizer` that also encodes many texts in one call (the guards use it for many small pieces)."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text, as :meth:`encode` would give them."""


class CallableTokenizer:
    """Adapts any ``encode(str) -> list[int]`` callable (and optionally a ``decode``) to :class:`Tokenizer`.

    >>> tok = CallableTokenizer(lambda text: [ord(c) for c in text], decode=lambda ids: "".join(map(chr, ids)),
    ...                         max_token_chars=1)
    >>> tok.encode("hi")
    [104, 105]
    """

    def __init__(
        self,
        encode: Callable[[str], Sequence[int]],
        *,
        decode: Callable[[Sequence[int]], str] | None = None,
        max_token_chars: int | None = None,
    ) -> None:
        if max_token_chars is not None and max_token_chars < 1:
            raise UsageError(f"max_token_chars must be at least 1 or None, got {max_token_chars}")
        self._encode = encode
        self._decode = decode
        self._max_token_chars = max_token_chars

    @property
    def max_token_chars(self) -> int | None:
        return self._max_token_chars

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        if self._decode is None:
            raise UsageError("this CallableTokenizer has no decode function, so it cannot produce truncated text")
        return self._decode(ids)


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer``, usually loaded from a local ``tokenizer.json``.

    A tokenizer that comes with truncation or padding enabled would make counts lie (it cuts silently), and
    turning those off on an instance others use would change their results (vLLM PR #30264). So the adapter
    works on a private copy whenever either is set and never touches the caller's instance.

    >>> tok = HFTokenizer.from_file("tokenizer.json")  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Any, *, add_special_tokens: bool = True) -> None:
        if tokenizer.truncation is not None or tokenizer.padding is not None:
            tokenizer = type(tokenizer).from_str(tokenizer.to_str())
            tokenizer.no_truncation()
            tokenizer.no_padding()
        self._tok = tokenizer
        self._add_special_tokens = add_special_tokens
        spec = json.loads(tokenizer.to_str())
        self._max_token_chars = max_token_chars(spec)
        self._word_counter = word_counter(spec)
        self._normalized_word_counter = normalized_word_counter(spec, tokenizer.normalizer)

    @classmethod
    def from_file(cls, path: str | Path, *, add_special_tokens: bool = True) -> HFTokenizer:
        """Load ``tokenizer.json`` from a local path, or from a model directory holding one, as
        :meth:`ChatTemplate.from_file` takes one (no hub look-up, no download)."""
        try:  # optional dependency: imported only when used
            import tokenizers
        except ImportError as exc:
            raise UsageError(
                "HFTokenizer needs tokenizers: pip install 'autoglm-runtime[tokenizers]' (tokenizers>=0.15)"
            ) from exc
        if Path(path).is_dir():
            if not (Path(path) / "tokenizer.json").is_file():
                raise UsageError(
                    f"the directory {str(path)!r} holds no tokenizer.json: give the model's tokenizer.json, or the "
                    "directory holding it"
                )
            path = Path(path) / "tokenizer.json"
        try:
            tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:
            raise UsageError(f"cannot load the tokenizer file {str(path)!r}: {exc}") from exc
        return cls(tok, add_special_tokens=add_special_tokens)

    @property
    def max_token_chars(self) -> int | None:
        return self._max_token_chars

    @property
    def word_counter(self) -> WordCounter | None:
        """A proven lower bound on the tokens from the words of a text, for tokenizers with no ``max_token_chars``
        (WordPiece, WordLevel, Unigram behind the normalizers and pre-tokenizers of
        :mod:`autoglm_runtime.validation._word_bounds`); ``None`` when the proof does not apply."""
        return self._word_counter

    @property
    def normalized_word_counter(self) -> NormalizedWordCounter | None:
        """A proven lower bound on the tokens from the words of the tokenizer's own normalization of a text's start,
        for normalizers the word counter cannot see through (SentencePiece's ``Precompiled``, ``Replace``; the proof
        is in :mod:`autoglm_runtime.validation._normalized_words`); ``None`` when the proof does not apply."""
        return self._normalized_word_counter

    @property
    def word_bound(self) -> WordBound | None:
        """What the guard proves overflows with when there is no ``max_token_chars``: the word counter, then the
        normalized word counter for text the first does not prove enough of; ``None`` when neither applies."""
        first, second = self._word_counter, self._normalized_word_counter
        if first is not None and second is not None:
            return EitherBound(first, second)
        return first if first is not None else second

    def encode(self, text: str) -> list[int]:
        # The batch "fast" path skips offset tracking, which counting does not need.
        # ``ids`` builds a new list on each access, so it is returned as it is.
        return self._tok.encode_batch_fast([text], add_special_tokens=self._add_special_tokens)[0].ids  # type: ignore[no-any-return]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tok.encode_batch_fast(list(texts), add_special_tokens=self._add_special_tokens)
        return [encoding.ids for encoding in encodings]

    def without_special_tokens(self) -> HFTokenizer:
        """The same tokenizer counting without the special tokens it adds (for text a chat template rendered)."""
        if not self._add_special_tokens:
            return self
        plain = HFTokenizer.__new__(HFTokenizer)
        plain._tok, plain._add_special_tokens, plain._max_token_chars = self._tok, False, self._max_token_chars
        plain._word_counter = self._word_counter
        plain._normalized_word_counter = self._normalized_word_counter
        return plain

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))


def load_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken BPE ranks file (``base64-token rank`` per line) from a local path.

    tiktoken's own loader caches files in a shared directory and also accepts URLs; this one only reads.
    """
    ranks: dict[bytes, int] = {}
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the tiktoken ranks file {str(path)!r}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as exc:
            raise UsageError(
                f"line {number} of the tiktoken ranks file {str(path)!r} is not 'base64-token rank': {exc}"
            ) from exc
    if not ranks:
        raise UsageError(f"the tiktoken ranks file {str(path)!r} holds no tokens")
    return ranks


class TiktokenTokenizer:
    """A ``tiktoken.Encoding``; special-token text in the input is counted as ordinary text by default.

    tiktoken raises on special-token text unless told otherwise; a guard must count, not crash, so
    ``disallowed_special`` defaults to none.

    >>> tok = TiktokenTokenizer.from_file("ranks.tiktoken", pat_str=r"\\S+|\\s+")  # doctest: +SKIP
    """

    def __init__(
        self,
        encoding: Any,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = (),
    ) -> None:
        self._enc = encoding
        self._allowed = allowed_special
        self._disallowed = disallowed_special
        longest = max((len(token) for token in encoding.token_byte_values()), default=1)
        if allowed_special:
            longest = max([longest, *(len(s) for s in encoding.special_tokens_set)])
        self._max_token_chars = max(longest, 1)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        pat_str: str,
        special_tokens: dict[str, int] | None = None,
        name: str | None = None,
    ) -> TiktokenTokenizer:
        """Build an encoding from a local ranks file and the model's split pattern (no download)."""
        try:  # optional dependency: imported only when used
            import tiktoken
        except ImportError as exc:
            raise UsageError(
                "TiktokenTokenizer needs tiktoken: pip install 'autoglm-runtime[tiktoken]' (tiktoken>=0.5)"
            ) from exc

        ranks = load_tiktoken_ranks(path)
        encoding = tiktoken.Encoding(
            name or Path(path).stem,
            pat_str=pat_str,
            mergeable_ranks=ranks,
            special_tokens=dict(special_tokens or {}),
        )
        return cls(encoding)

    @property
    def max_token_chars(self) -> int | None:
        # Every token is a byte string from the ranks and every character is at least one byte.
        return self._max_token_chars

    def encode(self, text: str) -> list[int]:
        return list(self._enc.encode(text, allowed_special=self._allowed, disallowed_special=self._disallowed))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._enc.decode(list(ids)))
