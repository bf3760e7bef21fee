"""A sound characters-per-token bound for a Hugging Face tokenizer, derived from its ``tokenizer.json`` structure.

The guard's pre-check rejects text of ``c`` characters without tokenizing when ``ceil(c / K)`` tokens already
exceed the room left, so ``K`` must be a true upper bound on the input characters one token stands for: a ``K``
that is too small rejects requests that fit. :func:`max_token_chars` returns such a ``K`` only when the proof below
applies to every part of the tokenizer (normalizer, pre-tokenizer, model, added tokens), and ``None`` otherwise.

**Families with a bound.** A BPE model whose pre-tokenizer keeps every character (``ByteLevel``, ``Metaspace``,
``Split``/``Punctuation`` without the ``Removed`` behaviour, ``Digits``, or a ``Sequence`` of these) and whose
normalizer is absent or built from ``NFC``, ``NFD``, ``NFKC``, ``NFKD``, ``Lowercase``, ``Prepend`` and string
``Replace`` with a non-empty replacement. Qwen2 (``NFC`` + ``Split`` + ``ByteLevel``), GPT-2 and Llama 3 (byte-level,
no normalizer) and Llama 2 / Mistral (``Metaspace`` or ``Prepend`` + ``Replace``, BPE with byte fallback) are all
in it. The model's *units* are bytes of the normalized text when a ``ByteLevel`` pre-tokenizer maps each byte to one
character, else characters of the normalized text.

Proof, for one run of text between added tokens (each piece is bounded alone; bounds of pieces add up):

1. *The normalizer does not shrink the text much.* Let ``r`` be the least number of units it can produce per input
   character. ``NFD``/``NFKD`` decompose every character into one or more, and ``Lowercase`` maps each character
   to one or more, so ``r = 1`` for them. For ``NFC`` and ``NFKC`` (``X`` = ``NFD`` or ``NFKD``): every character
   ``o`` of a normalized output is itself normalized, ``X(normalized(s)) = X(s)``, and ``X`` of a string is the
   characters' own decompositions, reordered. So ``len(s) <= len(X(s)) = sum(len(X(o)))`` over the output's
   characters, and units out per character in are at least ``min(units(o) / len(X(o)))`` over the characters ``o``
   that are their own normal form. Over all of Unicode that minimum is 2/3 in bytes (U+01D5, two bytes, is
   ``U`` + two marks) and 1/4 in characters (U+1F82 decomposes into four); tests/validation/test_token_bounds.py
   recomputes both over every code point with the installed ``tokenizers``' own normalizers and with
   :mod:`unicodedata`. ``Prepend`` only adds; ``Replace`` turns ``p`` characters into ``q`` (``r = min(1, q/p)``).
   A sequence multiplies the character ratios and ends with the last step's unit ratio.
2. *Pre-tokenizing loses nothing.* The kept pre-tokenizers only split, or replace a space with one character and
   prepend one (``Metaspace``); ``ByteLevel`` maps each byte to exactly one character. Splits only add tokens.
3. *Every unit is covered by a token, and no token covers more than ``L`` units.* BPE writes each pre-token as
   vocabulary entries; an entry stands for at most ``len(entry)`` units (``L`` is the longest entry, and a
   ``##``-style prefix only makes entries look longer). A unit BPE cannot spell becomes its own byte tokens
   (``byte_fallback`` with all 256 ``<0xNN>`` entries), its own unknown token (``unk_token`` without
   ``fuse_unk``), or, in byte-level models, cannot occur because all 256 byte characters are in the vocabulary.
   Otherwise BPE silently drops it (or fuses a run of them into one token), and there is no bound.
4. Hence ``tokens >= units / L >= r * characters / L`` and ``K = ceil(L / r)`` is sound. An added token matched
   before normalization covers ``len(content)`` input characters, so ``K`` is at least that; one matched after
   normalization covers ``units(content)`` units, so ``L`` is at least that. An added token with ``lstrip`` or
   ``rstrip`` swallows any run of whitespace next to it: no bound then.

**Families without one** (the guard then counts with early exit, see ``context_window``): WordPiece turns a word
longer than ``max_input_chars_per_word`` into one unknown token, and its BERT pre-tokenizer drops whitespace;
WordLevel maps any unknown word to one token; Unigram fuses runs of unknown characters and SentencePiece's
``Precompiled`` normalizer collapses whitespace; ``Strip``, ``StripAccents``, ``BertNormalizer``, ``Nmt`` and regex
``Replace`` can delete characters; ``Whitespace``-style pre-tokenizers drop spaces. For each, some text has more
characters per token than any fixed number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

__all__ = ["COMPOSING_RATIOS", "byte_level_alphabet", "max_token_chars", "normalizer_ratios", "pre_tokenizer_keeps_all"]

#: ``(characters, bytes)`` of output per input character at least, for the composing normal forms (see above).
COMPOSING_RATIOS = (Fraction(1, 4), Fraction(2, 3))
_ONE = (Fraction(1), Fraction(1))
_KEEPS_ALL_SPLITS = frozenset({"Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"})


def byte_level_alphabet() -> list[str]:
    """The 256 characters a ``ByteLevel`` pre-tokenizer writes, one per byte value (GPT-2's printable mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def normalizer_ratios(spec: Mapping[str, Any] | None) -> tuple[Fraction, Fraction] | None:
    """``(characters, bytes)`` out per character in, at least; ``None`` for a normalizer that can delete text."""
    if spec is None:
        return _ONE
    kind = spec.get("type")
    if kind in ("NFC", "NFKC"):
        return COMPOSING_RATIOS
    if kind in ("NFD", "NFKD", "Lowercase", "Prepend"):
        return _ONE
    if kind == "Replace":
        pattern, content = spec.get("pattern") or {}, spec.get("content")
        if set(pattern) != {"String"} or not isinstance(content, str) or not content or not pattern["String"]:
            return None
        width = len(pattern["String"])
        return min(Fraction(1), Fraction(len(content), width)), min(Fraction(1), Fraction(len(content.encode()), width))
    if kind == "Sequence":
        chars, last_bytes = Fraction(1), Fraction(1)
        for step in spec.get("normalizers") or ():
            ratios = normalizer_ratios(step)
            if ratios is None:
                return None
            # Bytes after this step: at least its byte ratio times the characters before it.
            last_bytes = chars * ratios[1]
            chars *= ratios[0]
        return chars, max(chars, last_bytes)
    return None


def pre_tokenizer_keeps_all(spec: Mapping[str, Any] | None) -> tuple[bool, bool]:
    """``(keeps every character, maps bytes to characters)`` for a pre-tokenizer."""
    if spec is None:
        return True, False
    kind = spec.get("type")
    if kind == "ByteLevel":
        return True, True
    if kind in ("Metaspace", "Digits"):
        return True, False
    if kind in ("Split", "Punctuation"):
        return spec.get("behavior", "Isolated") in _KEEPS_ALL_SPLITS, False
    if kind == "Sequence":
        keeps, byte_level = True, False
        for step in spec.get("pretokenizers") or ():
            step_keeps, step_bytes = pre_tokenizer_keeps_all(step)
            keeps, byte_level = keeps and step_keeps, byte_level or step_bytes
        return keeps, byte_level
    return False, False


def _covers_every_unit(model: Mapping[str, Any], vocab: Mapping[str, int], *, byte_level: bool) -> bool:
    """Whether BPE writes every unit of its input as some token (never drops one, never fuses a run into one)."""
    if model.get("byte_fallback") and all(f"<0x{b:02X}>" in vocab for b in range(256)):
        return True
    unk = model.get("unk_token")
    if unk is not None and unk in vocab and not model.get("fuse_unk"):
        return True
    plain = not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")
    return byte_level and plain and all(char in vocab for char in byte_level_alphabet())


def max_token_chars(spec: Mapping[str, Any]) -> int | None:
    """The most input characters one token of the tokenizer described by ``spec`` (a parsed ``tokenizer.json``)
    can stand for, when the proof in this module's docstring applies; else ``None``.

    >>> vocab = {c: i for i, c in enumerate(byte_level_alphabet())} | {"ĠÅ": 256}
    >>> max_token_chars({"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "ByteLevel"},
    ...                  "model": {"type": "BPE", "vocab": vocab}, "added_tokens": []})
    3
    """
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "BPE" or not isinstance(vocab, Mapping):
        return None
    ratios = normalizer_ratios(spec.get("normalizer"))
    keeps, byte_level = pre_tokenizer_keeps_all(spec.get("pre_tokenizer"))
    if ratios is None or not keeps or not _covers_every_unit(model, vocab, byte_level=byte_level):
        return None
    ratio = ratios[1] if byte_level else ratios[0]
    longest = max((len(token) for token in vocab), default=1)
    raw_longest = 1
    added: Sequence[Mapping[str, Any]] = spec.get("added_tokens") or ()
    for token in added:
        content = str(token.get("content", ""))
        if token.get("lstrip") or token.get("rstrip"):
            return None
        if token.get("normalized"):
            longest = max(longest, len(content.encode()) if byte_level else len(content))
        else:
            raw_longest = max(raw_longest, len(content))
    return max(math.ceil(max(longest, 1) / ratio), raw_longest)
