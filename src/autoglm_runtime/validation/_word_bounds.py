"""A sound lower bound on a tokenizer's token count from the words of a text, for tokenizers with no
characters-per-token bound (WordPiece, WordLevel, Unigram, BPE behind text-dropping normalizers).

Without a bound on the characters one token covers, proving that a text overflows the window means finding more
than ``tokens_left`` tokens in it. Tokenizing that many costs several times the parse of a body that is one huge
string. For the tokenizers below, counting *words* proves it far more cheaply: each word costs at least one token.
:func:`word_counter` returns a :class:`WordCounter` only when the proof applies to every part of the tokenizer
(normalizer, pre-tokenizer, model, added tokens), and ``None`` otherwise.

**Definitions.** The *separators* ``S`` are whitespace characters the pre-tokenizer is proven to split at:
``" \\t\\n\\r"`` and the no-break space U+00A0 after ``BertPreTokenizer``, ``Whitespace`` or ``WhitespaceSplit``
(they split at any Unicode whitespace, and no allowed normalizer makes U+00A0 anything but whitespace), ``" "``
after a splitting ``Metaspace``, the delimiter of ``CharDelimiterSplit`` when it is one of these. A *word* of the
raw text is a maximal run of non-separators. The *sure* characters ``U`` are the ASCII graphic characters (``!``
to ``~``) minus those a
pre-tokenizer step removes (ASCII punctuation under ``Punctuation`` with ``Removed``, an ASCII delimiter of
``CharDelimiterSplit`` in either case), plus, when no pre-tokenizer step removes anything but whitespace, the
letters of U+00C0-U+02BF (Latin-1 letters, Latin Extended-A and -B, IPA, modifier letters) and U+0400-U+047F
(Cyrillic): every character whose UTF-8 form starts with one of the bytes ``C3``-``CA``, ``D0``, ``D1``. The bound
is the number of words holding at least one sure character, plus, behind a ``BertNormalizer`` with
``handle_chinese_chars`` and a pre-tokenizer splitting at spaces, one for each CJK ideograph of U+5000-U+9FFF
(UTF-8 lead bytes ``E5``-``E9``): that normalizer puts spaces around each (they are in its Chinese ranges), no
other allowed normalizer changes them or removes a space between words, so each is a pre-token of its own.

**Claim.** ``len(encode(text)) >= `` that number, and the same holds for any text that starts with ``text``.

1. *Normalizers keep separators and sure characters.* The allowed ones are ``NFC``, ``NFD``, ``NFKC``, ``NFKD``,
   ``Lowercase``, ``StripAccents``, ``Strip``, ``Nmt``, ``BertNormalizer`` and ``Prepend``, alone or in a
   ``Sequence``. None maps a sure character to nothing or to whitespace: the normal forms leave ASCII as it is
   except that a following combining mark may compose onto it, giving a letter or symbol that is neither
   whitespace, nor a mark, nor ASCII; the non-ASCII sure characters are starters whose normal forms keep a letter
   (``NFD`` then ``StripAccents`` leaves the ``e`` of ``é``). The tests check every sure character, alone and
   before every combining mark, with the installed ``tokenizers``' own normalizers. ``Lowercase`` maps ASCII
   letters to ASCII letters; ``StripAccents`` and ``BertNormalizer``'s accent stripping remove only marks
   (category Mn); ``clean_text`` and ``Nmt`` remove only control characters and map ``\\t``, ``\\n``, ``\\r`` to a
   space; ``Strip`` removes whitespace at the ends; ``Prepend`` and ``handle_chinese_chars`` only add. No
   separator composes with what follows (a space, tab, line break or no-break space is a starter with no
   composite), so a separator stays whitespace and the image of each raw word stays between the images of its
   separators. ``Replace``, ``Precompiled`` and ``ByteLevel`` are not allowed: they can delete or rewrite sure
   characters and separators in ways the structure does not show.
2. *Pre-tokenizers keep the sure characters and split at every separator.* The allowed steps remove only
   whitespace, ASCII punctuation (``Punctuation`` with ``Removed``) or an ASCII delimiter, and the composites of
   step 1 are none of these. The non-ASCII sure characters count only when nothing but whitespace is removed.
   ``Punctuation``, ``Digits`` and ``Split`` without ``Removed`` only split. A ``Metaspace`` turns spaces into its
   replacement, so later steps are not credited with splitting at spaces. Hence the image of a raw word holding a
   sure character lies in at least one non-empty pre-token of its own, and two such words never share one (a
   separator lies between them, and a split there is never undone).
3. *Each non-empty pre-token yields at least one token.* WordPiece writes a word it cannot spell, or one longer
   than ``max_input_chars_per_word``, as one unknown token (its ``unk_token`` must be in the vocabulary); WordLevel
   writes every word as one token (``unk_token`` in the vocabulary); Unigram covers every character, fusing unknown
   runs into one token (``unk_id`` set); BPE writes unknown characters as their byte tokens (``byte_fallback`` with
   all 256) or as an unknown token, fused or not (``unk_token`` in the vocabulary). Post-processors only add tokens.
4. *Added tokens.* An added token is matched before pre-tokenizing and becomes one token, however much text it
   covers. Its content must hold no separator (matched on raw text) or be ASCII graphic only (matched on normalized
   text), so one match lies inside one word; ``lstrip``/``rstrip`` swallow only whitespace. So a word with a sure
   character keeps a token of its own whether the match covers its sure character or not.
5. *A longer text.* Each word of ``text`` with a sure character lies inside a distinct word of any text that starts
   with ``text``, so the longer text has at least as many such words.

:meth:`WordCounter.least_tokens` counts in C: the text's UTF-8 bytes are translated (separators to a space, sure
characters and the lead bytes above to ``a``, every other byte deleted: deleting can only merge words, so the count
only drops) and the word starts are counted, in growing chunks, stopping once the count passes what is needed, or
after 64 characters per token still to prove, or at once when the first chunk holds no counted word (a start of
the text is bounded too, by step 5; text with longer words, or of other scripts, is left to the other bounds and
the exact count, which then costs no more than before). A word cut by a chunk boundary is
counted twice, so each boundary takes one off.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["WordBound", "WordCounter", "model_covers_words", "summed_least_tokens", "word_counter"]

_WHITESPACE = " \t\n\r"
_NBSP = "\u00a0"
_GRAPHIC = frozenset(chr(code) for code in range(0x21, 0x7F))
_PUNCTUATION = frozenset(string.punctuation)
_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Strip", "Nmt", "BertNormalizer"})
#: UTF-8 lead bytes of U+5000-U+9FFF, CJK ideographs ``BertNormalizer(handle_chinese_chars=True)`` makes words.
CJK_LEADS = bytes(range(0xE5, 0xEA))
#: UTF-8 lead bytes of U+00C0-U+02BF and U+0400-U+047F (the non-ASCII sure characters, see above).
SURE_LEADS = bytes([*range(0xC3, 0xCB), 0xD0, 0xD1])
_FIRST_CHUNK = 4_096
#: Characters read per token still to prove before giving up: text with longer words is left to the exact count.
_GIVE_UP_CHARS_PER_WORD = 64


class WordBound(Protocol):
    """A proven lower bound on the tokens of any text that starts with a given text (what the guard asks of one)."""

    def least_tokens(self, text: str, enough: int, *, whole: bool = False) -> int:
        """A lower bound on the tokens of any text starting with ``text``, or with ``whole`` (the text is tokenized
        as it is) of ``text`` itself; may stop counting once past ``enough``."""

    def least_tokens_of(self, texts: Sequence[str], enough: int, *, whole: bool = False) -> int:
        """:meth:`least_tokens` summed over ``texts``, stopping once past ``enough``."""


class WordCounter:
    """Counts the words of a text that each cost at least one token (see this module's docstring for the proof).

    >>> WordCounter(" ", "ab").least_tokens("a b ba  c a", 10)
    4

    ``sure_leads`` are UTF-8 lead bytes whose characters are all sure (:data:`SURE_LEADS` or a part of it),
    ``word_leads`` lead bytes whose characters are each a word of their own (:data:`CJK_LEADS` or a part of it).
    """

    __slots__ = ("_delete", "_nbsp", "_separators", "_sure", "_sure_leads", "_table", "_word_leads")

    def __init__(self, separators: str, sure: str, sure_leads: bytes = b"", word_leads: bytes = b"") -> None:
        if not separators or not set(separators) <= set(_WHITESPACE + _NBSP) or not set(sure) <= _GRAPHIC:
            raise ValueError("separators must be ASCII whitespace or U+00A0 and sure characters ASCII graphic ones")
        if _NBSP in separators and " " not in separators:
            raise ValueError("U+00A0 is only a separator together with the space it is read as")
        if not set(sure_leads) <= set(SURE_LEADS) or not set(word_leads) <= set(CJK_LEADS):
            raise ValueError("sure lead bytes must be among SURE_LEADS and word lead bytes among CJK_LEADS")
        table = bytearray(range(256))
        for char in set(separators) - {_NBSP}:
            table[ord(char)] = ord(" ")
        for char in sure:
            table[ord(char)] = ord("a")
        for lead in sure_leads:
            table[lead] = ord("a")
        for lead in word_leads:
            table[lead] = ord("c")
        self._separators = "".join(sorted(set(separators)))
        self._sure = "".join(sorted(set(sure)))
        self._nbsp = _NBSP in separators
        self._sure_leads = bytes(sorted(set(sure_leads)))
        self._word_leads = bytes(sorted(set(word_leads)))
        self._table = bytes(table)
        kept = {ord(char) for char in set(separators + sure) - {_NBSP}} | set(sure_leads) | set(word_leads)
        self._delete = bytes(code for code in range(256) if code not in kept)

    @property
    def separators(self) -> str:
        """The characters words are split at."""
        return self._separators

    @property
    def sure(self) -> str:
        """The characters that make a word cost at least one token."""
        return self._sure

    @property
    def sure_leads(self) -> bytes:
        """The UTF-8 lead bytes whose characters make a word cost at least one token."""
        return self._sure_leads

    @property
    def word_leads(self) -> bytes:
        """The UTF-8 lead bytes whose characters are each a word costing at least one token."""
        return self._word_leads

    def __repr__(self) -> str:
        return (
            f"WordCounter(separators={self._separators!r}, sure={self._sure!r}, sure_leads={self._sure_leads!r}, "
            f"word_leads={self._word_leads!r})"
        )

    def least_tokens(self, text: str, enough: int, *, whole: bool = False) -> int:
        """A lower bound on the tokens of any text starting with ``text``; stops counting once past ``enough``
        (``whole`` changes nothing: the bound of a start holds for the text read whole too)."""
        count = boundaries = position = 0
        size = max(_FIRST_CHUNK, 4 * (enough + 1))
        end = min(len(text), max(_FIRST_CHUNK, _GIVE_UP_CHARS_PER_WORD * (enough + 1)))
        while position < end and count - boundaries <= enough:
            # surrogatepass: JSON may carry lone surrogates; their bytes are non-ASCII and deleted like the rest.
            data = text[position : min(position + size, end)].encode("utf-8", "surrogatepass")
            if self._nbsp:
                data = data.replace(b"\xc2\xa0", b" ")
            data = data.translate(self._table, self._delete)
            # A word starts at an "a" after a space, an ideograph or the start; each ideograph is a word.
            count += data.count(b" a") + data.count(b"ca") + data.startswith(b"a") + data.count(b"c")
            position += size
            size *= 2
            boundaries += position < end
            if not count:  # not a word it counts in the first chunk: text of another kind, left to other bounds
                break
        return max(count - boundaries, 0)

    def least_tokens_of(self, texts: Sequence[str], enough: int, *, whole: bool = False) -> int:
        """:meth:`least_tokens` summed over ``texts``, stopping once past ``enough``."""
        return summed_least_tokens(self, texts, enough, whole=whole)


def summed_least_tokens(bound: WordBound, texts: Sequence[str], enough: int, *, whole: bool = False) -> int:
    """``bound.least_tokens`` summed over ``texts``, stopping once past ``enough``."""
    least = 0
    for text in texts:
        least += bound.least_tokens(text, enough - least, whole=whole)
        if least > enough:
            break
    return least


def _normalizer_keeps(spec: Mapping[str, Any] | None) -> bool:
    if spec is None:
        return True
    kind = spec.get("type")
    if kind == "Sequence":
        return all(_normalizer_keeps(step) for step in spec.get("normalizers") or ())
    return kind in _NORMALIZERS or (kind == "Prepend" and isinstance(spec.get("prepend"), str))


def _pre_tokenizer(spec: Mapping[str, Any] | None) -> tuple[set[str], set[str]] | None:
    """``(separators it splits at, sure characters it removes)``, or ``None`` when it is not in the proof."""
    if spec is None:
        return set(), set()
    kind = spec.get("type")
    if kind in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit"):
        return set(_WHITESPACE + _NBSP), set()
    if kind == "Metaspace":
        # Without "split" (tokenizers before 0.19) Metaspace always split at its replacement.
        return ({" "} if spec.get("split", True) else set()), set()
    if kind == "CharDelimiterSplit":
        delimiter = spec.get("delimiter")
        if not isinstance(delimiter, str) or not delimiter.isascii():
            return None
        # Lowercase may turn a sure character into the delimiter, which is then removed.
        return ({delimiter} & set(_WHITESPACE)), {delimiter, delimiter.lower(), delimiter.upper()}
    if kind == "Punctuation":
        return set(), set(_PUNCTUATION) if spec.get("behavior") == "Removed" else set()
    if kind in ("Digits", "Split"):
        return None if spec.get("behavior") == "Removed" else (set(), set())
    if kind == "Sequence":
        separators: set[str] = set()
        removed: set[str] = set()
        spaces_kept = True
        for step in spec.get("pretokenizers") or ():
            found = _pre_tokenizer(step)
            if found is None:
                return None
            step_separators, step_removed = found
            separators |= step_separators if spaces_kept or step.get("type") == "Metaspace" else step_separators - {" "}
            removed |= step_removed
            spaces_kept = spaces_kept and step.get("type") != "Metaspace"
        return separators, removed
    return None


def model_covers_words(model: Mapping[str, Any]) -> bool:
    """Whether the model writes every non-empty pre-token as at least one token (step 3 of the proof)."""
    kind, vocab = model.get("type"), model.get("vocab")
    if kind in ("WordPiece", "WordLevel", "BPE"):
        if not isinstance(vocab, Mapping):
            return False
        if kind == "BPE" and model.get("byte_fallback") and all(f"<0x{b:02X}>" in vocab for b in range(256)):
            return True
        return model.get("unk_token") in vocab
    if kind == "Unigram":
        unk = model.get("unk_id")
        return isinstance(vocab, Sequence) and isinstance(unk, int) and 0 <= unk < len(vocab)
    return False


def word_counter(spec: Mapping[str, Any]) -> WordCounter | None:
    """The :class:`WordCounter` for the tokenizer described by ``spec`` (a parsed ``tokenizer.json``) when the
    proof in this module's docstring applies to it; else ``None``.

    >>> word_counter({"normalizer": {"type": "BertNormalizer"}, "pre_tokenizer": {"type": "BertPreTokenizer"},
    ...               "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0}}}).separators
    '\\t\\n\\r \\xa0'
    """
    if not model_covers_words(spec.get("model") or {}) or not _normalizer_keeps(spec.get("normalizer")):
        return None
    found = _pre_tokenizer(spec.get("pre_tokenizer"))
    if found is None or not found[0]:
        return None
    separators, removed = found
    added: Sequence[Mapping[str, Any]] = spec.get("added_tokens") or ()
    for token in added:
        content = str(token.get("content", ""))
        if token.get("normalized") and not set(content) <= _GRAPHIC:
            return None
        if set(content) & set(_WHITESPACE + _NBSP):
            return None
    # Only whitespace removed: the non-ASCII letters stay (a delimiter or punctuation removal could meet their images).
    leads = b"" if removed else SURE_LEADS
    words = CJK_LEADS if " " in separators and _pads_ideographs(spec.get("normalizer")) else b""
    return WordCounter("".join(separators), "".join(sorted(_GRAPHIC - removed)), leads, words)


def _pads_ideographs(spec: Mapping[str, Any] | None) -> bool:
    """Whether the (allowed) normalizer holds a ``BertNormalizer`` that puts spaces around CJK ideographs."""
    if spec is None:
        return False
    if spec.get("type") == "Sequence":
        return any(_pads_ideographs(step) for step in spec.get("normalizers") or ())
    return spec.get("type") == "BertNormalizer" and spec.get("handle_chinese_chars", True) is not False
