"""A sound lower bound on a tokenizer's token count from the words of its *own normalization* of a text's start,
for normalizers the structural word bound (:mod:`autoglm_runtime.validation._word_bounds`) cannot see through.

SentencePiece's ``Precompiled`` charsmap (T5, ALBERT, XLNet, DeBERTa) is opaque, and ``Replace`` can rewrite what a
word is made of. Rather than prove what they do to every character, the guard lets the tokenizer's own Rust
normalizer rewrite a start of the text and counts the words of the result, which is exactly what the pre-tokenizer
will see. Words of any script count (Greek, Arabic, emoji, whatever the normalizer leaves). Two things need a proof:
that the normalization of a start is a start of the normalization of the whole text, and that each word of it costs
a token. :func:`normalized_word_counter` returns a counter only when both apply.

**The cut.** A start ``A = text[:i]`` is cut at a *junction*: ``text[i]`` is a junction space, ``text[i-1]`` and
``text[i+1]`` are *fixed* characters, and ``text[i-2]`` is fixed, or the same space after a fixed ``text[i-3]``.
The fixed characters ``W`` are the ASCII graphic ones, the letters and symbols of a few scripts (Latin, Greek,
Cyrillic, Armenian, Hebrew, Arabic, kana, CJK ideographs, Hangul syllables; see ``_RANGES``) and emoji faces, that
every normalizer step maps to themselves when alone between spaces (asked of the installed ``tokenizers`` when the
counter is built), minus the characters of ``Replace`` string patterns. None is a mark, a joiner, a Prepend
character (those are U+0600-U+0605, U+06DD and others outside these ranges) or the second half of a canonical
composition (the tests check all four). The junction spaces are the ``White_Space`` characters (a space, a
no-break space, an en or ideographic space, a tab, ...: starters that compose with nothing, graphemes of their own
between fixed characters), each kept while every step maps what it has become to one of them.

**Claim 1: ``N(text) = N(A) + B`` for some ``B``.** By steps; each keeps ``A`` ending in ``x = text[i-1]`` and the
rest starting with (the image of) the junction space, and the steps before a ``Precompiled`` keep the window
``text[i-3:i+2]`` as it is:

* ``NFC``/``NFD``/``NFKC``/``NFKD``: a junction space is a starter that composes with nothing, and no ``W``
  character is a composition's second half, so nothing composes or reorders across the cut.
* ``Lowercase``, ``BertNormalizer``, ``Nmt``, ``StripAccents``: character by character (``tokenizers`` lowercases
  each character alone, with no final-sigma context; ``BertNormalizer`` strips accents after ``NFD``, see above).
  ``W`` holds no mark or control character, and no ideograph a ``BertNormalizer`` pads with spaces (it does not
  map those to themselves).
* ``Strip`` removes whitespace at the ends only, and ``A`` ends in ``x``; ``Prepend`` adds at the start only.
* ``Replace`` with a string pattern: it holds no ``W`` character and not the junction space's image (else that
  space is no junction), so no match holds ``x``, the space or any window character, and none crosses the cut.
  ``Replace`` with a regex of the form ``" {n,}"``/``" +"``/``"\\s{n,}"``/``"\\s+"`` (``n >= 1``) matches only
  whitespace, so never ``x``; the window's spaces are lone, so it leaves them alone (``n >= 2``) or writes what it
  writes (kept as a junction only when that is a space).
* ``Precompiled`` (at most one): it rewrites grapheme by grapheme. ``text[i-2]`` is no Prepend character, and
  ``x``, the space and ``text[i+1]`` are neither marks nor joiners, so ``x`` and the space are graphemes of their
  own, mapped to themselves, and the grapheme boundary at ``i`` is where it is in the whole text.

**Claim 2: each word of ``N(A)`` costs its own token.** A *word* is a maximal run of characters the pre-tokenizer
keeps and does not split at. The separators are what the pre-tokenizer splits at: the Unicode ``White_Space``
characters for ``WhitespaceSplit``, ``Whitespace`` and ``BertPreTokenizer`` (they split there and drop them), the
space and its replacement for a splitting ``Metaspace``, a ``CharDelimiterSplit`` delimiter, ASCII punctuation for
``Punctuation`` with ``Removed`` (which also removes non-ASCII punctuation, so non-ASCII characters are then not
counted: deleting a character from the count can only merge words). Other allowed steps (``Digits``, a ``Split``
that does not remove) only split. ``UnicodeScripts`` is not allowed: it drops the leading run of what it gives no
script (a space, private-use and unassigned code points, letters newer than its tables such as U+0560). So each word
of ``N(A)`` lies inside one pre-token of ``N(A) + B`` (the last one may go on into ``B``), and two words never share
one. The model writes each non-empty pre-token as at least one token (the model conditions of the word bound). A
text tokenized as it is (``whole=True``) with no raw added token is counted from its whole normalization; a start
is only cut at junctions (``Replace("ab", "")`` deletes the ``a`` ending ``"q a"`` once a ``b`` follows).

**Added tokens.** Raw ones (``normalized=False``) are matched on the text first and each piece is normalized alone:
``A`` is cut before the first place any of their contents occurs, so ``A`` starts the first piece (an ``lstrip``
token swallows only whitespace, and ``A`` ends in ``x``). Normalized ones are matched on the normalized piece; their
content must hold no separator, so a match lies inside one word: a word it covers still costs the match's token, and
the rest of a word it cuts is a pre-token of its own. One that strips (``lstrip``/``rstrip``) swallows the spaces
next to it, so the pre-tokenizer must split at every ``White_Space`` character (else it swallows a tab word).

**A longer text** starting with ``A`` has ``N(A)`` as a start too (claim 1 for any continuation), so the bound holds
for the text and any text it starts. Counting reads growing starts, stopping once past what is needed or after
:data:`GIVE_UP_CHARS_PER_WORD` characters per token still to prove (normalizing costs more than counting raw words).
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from autoglm_runtime.validation._word_bounds import WordBound, model_covers_words, summed_least_tokens

__all__ = [
    "GIVE_UP_CHARS_PER_WORD",
    "WHITE_SPACE",
    "EitherBound",
    "NormalizedWordCounter",
    "normalized_word_counter",
]

#: Rust's ``char::is_whitespace``: the Unicode ``White_Space`` property.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
#: Characters read per token still to prove before giving up: text with longer words is left to the exact count.
GIVE_UP_CHARS_PER_WORD = 16
_FIRST_CHUNK = 4_096
_LOOKBACK = 1_024
#: Letters of scripts whose letters are graphemes of their own next to each other and never a composition's second
#: half (Latin, Greek, Cyrillic, Armenian, Hebrew, Arabic, kana, CJK ideographs, Hangul syllables), and emoji faces.
_RANGES = ((0xC0, 0x250), (0x370, 0x588), (0x5D0, 0x5EB), (0x620, 0x64B), (0x3041, 0x30FB), (0x4E00, 0xA000))
_CANDIDATES = [chr(c) for c in range(0x21, 0x7F)] + [
    chr(c)
    for low, high in (*_RANGES, (0xAC00, 0xD7A4), (0x1F600, 0x1F650))
    for c in range(low, high)
    if unicodedata.category(chr(c))[0] in "LS" or c >= 0xAC00
]
_PROBED = frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Nmt", "BertNormalizer", "Precompiled"})
_JUNCTIONS = WHITE_SPACE
#: Normalizer steps asked at most (ALBERT has seven).
_MAX_STEPS = 16
_SPACE_RUN = re.compile(r"( |\\s)(?:\{(\d+),(\d*)\}|(\+))")


class NormalizedWordCounter:
    """Counts the words of the tokenizer's own normalization of a text's start (see the module docstring).

    ``normalizer`` is the tokenizer's normalizer (``None`` for none), ``fixed`` the characters a cut may lie between,
    ``separators`` the characters the pre-tokenizer splits at, ``count_non_ascii`` whether every non-ASCII character
    it does not split at is kept, ``raw_added`` the contents of the added tokens matched before normalizing.
    """

    __slots__ = ("_delete", "_fixed", "_junctions", "_multi", "_normalizer", "_raw_added", "_separators", "_table")

    def __init__(
        self,
        normalizer: Any,
        fixed: str,
        separators: str,
        *,
        junctions: str = " ",
        count_non_ascii: bool = True,
        raw_added: Sequence[str] = (),
    ) -> None:
        self._normalizer = normalizer
        self._fixed = frozenset(fixed)
        self._junctions = "".join(sorted(set(junctions)))
        self._separators = "".join(sorted(set(separators)))
        multi: dict[bytes, list[bytes]] = {}
        for char in self._separators:
            if not char.isascii():
                multi.setdefault(char.encode()[:1], []).append(char.encode())
        # Grouped by lead byte: text without the lead (most text) is scanned once for it, not once per separator.
        self._multi = tuple((lead, tuple(group)) for lead, group in sorted(multi.items()))
        firsts: dict[str, list[str]] = {}
        for content in raw_added:
            if content:
                firsts.setdefault(content[0], []).append(content)
        # Grouped by first character: a text without it is searched once, not once per token (T5 has a hundred).
        self._raw_added = tuple((first, tuple(group)) for first, group in sorted(firsts.items()))
        table = bytearray(b"a" * 128 + b"\0" * 64 + (b"a" if count_non_ascii else b"\0") * 64)
        for char in self._separators:
            if char.isascii():
                table[ord(char)] = ord(" ")
        self._table = bytes(table)
        self._delete = bytes(range(0x80, 0xC0)) if count_non_ascii else bytes(range(0x80, 0x100))

    @property
    def separators(self) -> str:
        """The characters the pre-tokenizer splits words at."""
        return self._separators

    @property
    def fixed(self) -> str:
        """The characters a cut of the text may lie between."""
        return "".join(sorted(self._fixed))

    @property
    def raw_added(self) -> tuple[str, ...]:
        """The contents of the added tokens matched before normalizing: a start is cut before the first one."""
        return tuple(content for _, group in self._raw_added for content in group)

    @property
    def junctions(self) -> str:
        """The spaces a cut of the text may lie before."""
        return self._junctions

    def __repr__(self) -> str:
        return f"NormalizedWordCounter(separators={self._separators!r}, fixed={len(self._fixed)} characters)"

    def least_tokens(self, text: str, enough: int, *, whole: bool = False) -> int:
        """A lower bound on the tokens of any text starting with ``text`` (of ``text`` itself with ``whole``);
        stops counting once past ``enough``."""
        limit = min(len(text), max(_FIRST_CHUNK, GIVE_UP_CHARS_PER_WORD * (enough + 1)))
        whole = whole and limit == len(text)
        for first, group in self._raw_added:
            if text.find(first, 0, limit) < 0:
                continue
            for content in group:
                found = text.find(content, 0, limit + len(content) - 1)
                if found >= 0:
                    limit, whole = found, False
        # Five characters per token still to prove: a word and its space, with room for a cut that falls short.
        size = max(_FIRST_CHUNK, 5 * (enough + 1))
        count = 0
        while count <= enough:
            if whole and size >= limit:
                return max(count, self._words(text))
            end = self._junction(text, min(size, limit))
            if end is not None:
                count = max(count, self._words(text[:end]))
            if size >= limit:
                break
            size *= 2
        return count

    def least_tokens_of(self, texts: Sequence[str], enough: int, *, whole: bool = False) -> int:
        """:meth:`least_tokens` summed over ``texts``, stopping once past ``enough``."""
        return summed_least_tokens(self, texts, enough, whole=whole)

    def _junction(self, text: str, target: int) -> int | None:
        """A cut ``i <= target`` near ``target`` (see the module docstring), or ``None``."""
        fixed, low, best = self._fixed, max(target - _LOOKBACK, 3), None
        for junction in self._junctions:
            position = target
            while (index := text.rfind(junction, low, position)) >= 0:
                if (
                    index + 1 < len(text)
                    and text[index - 1] in fixed
                    and text[index + 1] in fixed
                    and (text[index - 2] in fixed or (text[index - 2] == junction and text[index - 3] in fixed))
                ):
                    best = max(best or 0, index)
                    low = index + 1
                    break
                position = index
        return best

    def _words(self, start: str) -> int:
        try:
            normal = start if self._normalizer is None else self._normalizer.normalize_str(start)
        except Exception:  # text the tokenizer cannot take (a lone surrogate): nothing is proven
            return 0
        data = normal.encode("utf-8", "surrogatepass")
        if not data.isascii():
            for lead, group in self._multi:
                if lead in data:
                    for separator in group:
                        data = data.replace(separator, b" ")
        data = data.translate(self._table, self._delete)
        return data.count(b" a") + data.startswith(b"a")


class EitherBound:
    """The larger of two proven lower bounds, the second asked only when the first does not pass ``enough``."""

    __slots__ = ("first", "second")

    def __init__(self, first: WordBound, second: WordBound) -> None:
        self.first, self.second = first, second

    def least_tokens(self, text: str, enough: int, *, whole: bool = False) -> int:
        least = self.first.least_tokens(text, enough, whole=whole)
        return least if least > enough else max(least, self.second.least_tokens(text, enough, whole=whole))

    def least_tokens_of(self, texts: Sequence[str], enough: int, *, whole: bool = False) -> int:
        return summed_least_tokens(self, texts, enough, whole=whole)


def _flatten(spec: Mapping[str, Any] | None, key: str) -> list[Mapping[str, Any]]:
    if spec is None:
        return []
    if spec.get("type") == "Sequence":
        return [step for inner in spec.get(key) or () for step in _flatten(inner, key)]
    return [spec]


def _normalizer_of(spec: Mapping[str, Any]) -> Any:
    import tokenizers  # imported with the tokenizer this counter is built for

    model = {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}
    return tokenizers.Tokenizer.from_str(json.dumps({"version": "1.0", "normalizer": spec, "model": model})).normalizer


def _space_run(pattern: str, content: Any, char: str) -> str | None:
    """What a regex ``Replace`` makes of a lone ``char`` between fixed characters, when it matches only runs of
    whitespace; ``None`` when it is not in the proof."""
    match = _SPACE_RUN.fullmatch(pattern)
    if match is None or not isinstance(content, str):
        return None
    least = 1 if match.group(4) else int(match.group(2))
    if least < 1:
        return None
    matched = char == " " or match.group(1) == "\\s"
    return content if matched and least == 1 else char


def _kept(normalizer: Any, chars: list[str]) -> list[str]:
    """The ``chars`` the normalizer maps to themselves, each alone between spaces (a space composes with nothing and
    is a grapheme of its own); asked in halves wherever some character's image holds a space."""
    probed = normalizer.normalize_str(" ".join(chars)).split(" ")
    if len(probed) == len(chars):
        return [char for char, image in zip(chars, probed, strict=True) if image == char]
    if len(chars) == 1:
        return []
    half = len(chars) // 2
    return _kept(normalizer, chars[:half]) + _kept(normalizer, chars[half:])


def fixed_characters(spec: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """``(W, junctions)``: the characters a cut may lie between, and the spaces it may lie before (``White_Space``
    characters every step maps to ``White_Space`` characters), for the normalizer ``spec``; ``None`` when it is not
    in the proof."""
    steps = _flatten(spec, "normalizers")
    # Asking a step costs about 0.1 s: a tokenizer.json of hundreds of steps is left without the bound.
    if len(steps) > _MAX_STEPS or sum(step.get("type") == "Precompiled" for step in steps) > 1:
        return None
    fixed = set(_CANDIDATES)
    images = {junction: junction for junction in _JUNCTIONS}
    for step in steps:
        kind = step.get("type")
        if kind == "Replace":
            pattern, content = step.get("pattern") or {}, step.get("content")
            if isinstance(pattern.get("String"), str) and pattern["String"]:
                fixed -= set(pattern["String"])
                images = {char: image for char, image in images.items() if image not in pattern["String"]}
            elif isinstance(pattern.get("Regex"), str) and _SPACE_RUN.fullmatch(pattern["Regex"]):
                runs = {char: _space_run(pattern["Regex"], content, image) for char, image in images.items()}
                images = {char: image for char, image in runs.items() if image is not None}
            else:
                return None
        elif kind in _PROBED:
            normalizer = _normalizer_of(step)
            images = {char: normalizer.normalize_str(image) for char, image in images.items()}
            fixed = set(_kept(normalizer, sorted(fixed)))
        elif not (kind == "Strip" or (kind == "Prepend" and isinstance(step.get("prepend"), str))):
            return None
        images = {char: image for char, image in images.items() if image in _JUNCTIONS}
    if not fixed or not images:
        return None
    return "".join(sorted(fixed)), "".join(sorted(images))


def word_separators(spec: Mapping[str, Any] | None) -> tuple[str, bool] | None:
    """``(separators, every non-ASCII character it keeps is counted)`` for a pre-tokenizer; ``None`` when it is not
    in the proof (it drops what it does not split at, or does not split)."""
    separators: set[str] = set()
    non_ascii = True
    for step in _flatten(spec, "pretokenizers"):
        kind = step.get("type")
        if kind in ("WhitespaceSplit", "Whitespace", "BertPreTokenizer"):
            separators |= set(WHITE_SPACE)
        elif kind == "Metaspace":
            replacement = step.get("replacement", "\u2581")
            if not step.get("split", True) or not isinstance(replacement, str) or len(replacement) != 1:
                return None
            separators |= {" ", replacement}
        elif kind == "CharDelimiterSplit":
            delimiter = step.get("delimiter")
            if not isinstance(delimiter, str) or len(delimiter) != 1 or not delimiter.isascii():
                return None
            separators.add(delimiter)
        elif kind == "Punctuation":
            if step.get("behavior") == "Removed":
                separators |= set(string.punctuation)
                non_ascii = False
        elif kind == "Split":
            if step.get("behavior") == "Removed":
                return None
        elif kind != "Digits":
            return None
    return ("".join(sorted(separators)), non_ascii) if separators else None


def normalized_word_counter(spec: Mapping[str, Any], normalizer: Any) -> NormalizedWordCounter | None:
    """The :class:`NormalizedWordCounter` for the tokenizer described by ``spec`` (a parsed ``tokenizer.json``)
    whose normalizer object is ``normalizer``, when the proof in this module's docstring applies; else ``None``.

    >>> spec = {"normalizer": {"type": "Replace", "pattern": {"String": "``"}, "content": '"'},
    ...         "pre_tokenizer": {"type": "WhitespaceSplit"},
    ...         "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {"<unk>": 0}}}
    >>> counter = normalized_word_counter(spec, None)
    >>> counter is not None and "`" not in counter.fixed
    True
    """
    if not model_covers_words(spec.get("model") or {}):
        return None
    found = word_separators(spec.get("pre_tokenizer"))
    try:
        characters = None if found is None else fixed_characters(spec.get("normalizer"))  # it asks the normalizer
    except Exception:  # a step this tokenizers version cannot rebuild alone: no bound, never a failed load
        return None
    if characters is None or found is None:
        return None
    fixed, junctions = characters
    separators, non_ascii = found
    raw_added = []
    added: Sequence[Mapping[str, Any]] = spec.get("added_tokens") or ()
    splits_every_space = set(WHITE_SPACE) <= set(separators)
    for token in added:
        content = str(token.get("content", ""))
        if token.get("normalized") and (token.get("lstrip") or token.get("rstrip")) and not splits_every_space:
            return None  # it may swallow a tab or other space the pre-tokenizer counts in a word
        if token.get("normalized"):
            # Matched as the normalizer writes it (tokenizers normalizes the content too), so both forms are asked.
            written = content if normalizer is None else normalizer.normalize_str(content)
            if set(content + written) & set(separators):
                return None
        elif content:
            raw_added.append(content)
    return NormalizedWordCounter(
        normalizer, fixed, separators, junctions=junctions, count_non_ascii=non_ascii, raw_added=raw_added
    )
