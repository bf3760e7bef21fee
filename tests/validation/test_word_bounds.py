"""Sound word lower bounds for tokenizers with no characters-per-token bound, on real tokenizers built here.

Each family with a word bound is checked on adversarial text from hypothesis (words of punctuation, combining
marks, control and format characters, spaces the pre-tokenizer does not split at, added-token text, long runs): the
bound never passes the real token count, neither for the text nor for any start of it. The normalizer steps of the
proof are checked against every combining mark with the installed ``tokenizers``' own normalizers. Each excluded
structure has a text on which counting words would overshoot.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from autoglm_runtime.errors import ContextWindowExceededError
from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer
from autoglm_runtime.validation._word_bounds import CJK_LEADS, SURE_LEADS, WordCounter, word_counter

CORPUS = [
    "the quick brown fox jumps over the lazy dog, hello world 12345 !!",
    "Ünïcödé wörds, naïve café; 漢字 テスト \U0001f600 --- ... ???",
    "don't stop: e-mail (x+y)=z [a] {b} <c> 'q' \"r\"",
] * 20
MARKS = [
    chr(c)
    for c in range(sys.maxunicode + 1)
    if unicodedata.combining(chr(c)) or unicodedata.category(chr(c)) in ("Mn", "Me")
]
PIECES = [
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\u00a0",  # no-break space: not a separator the bound relies on
    "\u3000",
    "\u200b",
    "\u2581",
    "\x00",
    "\x07",
    "\ufffd",
    "a",
    "Z",
    "9",
    "!",
    "-",
    "'",
    ".",
    "a\u0301",
    "<\u0338",  # NFC composes it into one symbol
    "\u0301",
    "漢",
    "\U0001f600",
    "[MASK]",
    "[CLS]",
    "<extra>",
    "word",
    "\u00e9",  # sure characters outside ASCII: Latin-1 and Latin Extended letters, IPA, modifier letters, Cyrillic
    "\u00d7",
    "\u0130",  # Lowercase makes it two characters
    "\u0149",  # NFKC makes it a modifier letter and "n"
    "\u01c5",
    "\u02b0",
    "\u02bc",
    "\u0416",
    "\u0400\u0301",
    "\u5b57\u6f22\u9fff",  # ideographs a BertNormalizer makes words of
    "\u4e00\u4dc0\uf900",  # and some it does not (or that this bound does not count)
    "x" * 150,  # longer than WordPiece's max_input_chars_per_word
]
adversarial_text = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.tuples(st.sampled_from(PIECES), st.integers(1, 60)).map(lambda pair: pair[0] * pair[1]),
        st.text(max_size=12),
        st.text(st.characters(categories=["Mn", "Me", "Cc", "Cf", "Zs", "P"]), max_size=12),
        st.sampled_from(MARKS[:: max(len(MARKS) // 200, 1)]),
    ),
    max_size=30,
).map("".join)


def _wordpiece(normalizer: Any, pre_tokenizer: Any, **options: Any) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", **options))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]", "[CLS]", "[SEP]"], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def bert_like() -> Tokenizer:
    tok = _wordpiece(normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer())
    special = [(name, tok.token_to_id(name)) for name in ("[CLS]", "[SEP]")]
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=special)
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True)])
    tok.add_tokens([AddedToken("<extra>", normalized=True)])
    return tok


def wordpiece_short_words() -> Tokenizer:
    steps = [normalizers.NFKC(), normalizers.StripAccents(), normalizers.Lowercase(), normalizers.Strip()]
    splitting = [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation("removed"), pre_tokenizers.Digits()]
    return _wordpiece(normalizers.Sequence(steps), pre_tokenizers.Sequence(splitting), max_input_chars_per_word=5)


def wordlevel() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Nmt()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(vocab_size=40, special_tokens=["<unk>"], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def unigram(normalizer: Any, pre_tokenizer: Any) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.UnigramTrainer(vocab_size=120, unk_token="<unk>", special_tokens=["<unk>"], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def t5_like() -> Tokenizer:
    """Metaspace splitting at spaces, behind NFKC (T5's Precompiled charsmap is not in the proof)."""
    return unigram(normalizers.NFKC(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"))


def unigram_split_then_metaspace() -> Tokenizer:
    normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Prepend("x")])
    return unigram(normalizer, pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]))


def bpe_behind_bert_normalizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.BertNormalizer(strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>"], show_progress=False))
    return tok


WORD_BOUNDED = {
    "bert-like": bert_like,
    "wordpiece-short-words": wordpiece_short_words,
    "wordlevel": wordlevel,
    "t5-like": t5_like,
    "unigram-split-then-metaspace": unigram_split_then_metaspace,
    "bpe-behind-bert-normalizer": bpe_behind_bert_normalizer,
}


@pytest.fixture(scope="module", params=sorted(WORD_BOUNDED))
def counted(request: pytest.FixtureRequest) -> HFTokenizer:
    return HFTokenizer(WORD_BOUNDED[request.param]())


def test_every_family_has_a_counter_and_no_character_bound(counted: HFTokenizer) -> None:
    assert counted.max_token_chars is None
    assert counted.word_counter is not None


def test_the_counters_of_the_families() -> None:
    def counter(tok: Tokenizer) -> tuple[str, int]:
        found = HFTokenizer(tok).word_counter
        assert found is not None
        return found.separators, len(found.sure)

    graphic = 0x7F - 0x21
    assert counter(bert_like()) == ("\t\n\r \u00a0", graphic)
    assert HFTokenizer(bert_like()).word_counter.sure_leads == SURE_LEADS  # type: ignore[union-attr]
    assert HFTokenizer(wordpiece_short_words()).word_counter.sure_leads == b""  # type: ignore[union-attr]
    assert HFTokenizer(bert_like()).word_counter.word_leads == CJK_LEADS  # type: ignore[union-attr]
    assert HFTokenizer(t5_like()).word_counter.word_leads == b""  # type: ignore[union-attr]
    assert counter(wordpiece_short_words()) == ("\t\n\r \u00a0", graphic - 32)  # ASCII punctuation is removed
    assert counter(wordlevel()) == ("\t\n\r \u00a0", graphic)
    assert counter(t5_like()) == (" ", graphic)
    assert counter(unigram_split_then_metaspace()) == ("\t\n\r \u00a0", graphic)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(text=adversarial_text, cut=st.integers(0, 10_000))
def test_bound_holds_on_adversarial_text(counted: HFTokenizer, text: str, cut: int) -> None:
    counter = counted.word_counter
    assert counter is not None
    tokens = len(counted.encode(text))
    assert counter.least_tokens(text, 10**9) <= tokens
    assert counter.least_tokens(text[: cut % (len(text) + 1)], 10**9) <= tokens  # a start of the text
    # Early exit stops past ``enough`` and still never overshoots.
    assert counter.least_tokens(text, max(tokens // 2, 0)) <= tokens
    # The guard never rejects text that fits exactly.
    guard = ContextWindowGuard(counted, max(tokens, 1))
    assert guard.check(text).input_tokens == tokens


@pytest.mark.parametrize("name", sorted(WORD_BOUNDED))
def test_bound_holds_on_long_runs_across_chunks(name: str) -> None:
    tok = HFTokenizer(WORD_BOUNDED[name]())
    counter = tok.word_counter
    assert counter is not None
    for text in ("ab " * 20_000, "a" * 4_095 + "aa b " * 3_000, "x\u0301 \u00a0y " * 5_000, "! ?\t" * 9_000):
        assert counter.least_tokens(text, 10**9) <= len(tok.encode(text))


def test_counting_words() -> None:
    counter = WordCounter(" \n", "ab!")
    assert counter.least_tokens("", 5) == 0
    assert counter.least_tokens("  a\nb  !  \u00e9 c \u00a0 ", 10) == 3  # é, c and the no-break space are not sure
    assert counter.least_tokens("a\u0301b\tb", 10) == 1  # a tab is no separator here
    # A word cut by a chunk boundary counts once: 4,096 characters, then "a b".
    assert counter.least_tokens("a" * 4_095 + "aa b", 100) == 2
    # Reading stops after 64 characters per token still to prove (here the first 4,096): a start is bounded too.
    assert counter.least_tokens("a" * 1_000_000 + " a" * 1_000, 10) == 1
    # Early exit: past ``enough`` after the first chunk, the rest is not read.
    assert counter.least_tokens("a " * 100_000, 10) == 2_048  # the first 4,096 characters
    assert counter.least_tokens("\ud800 a", 10) == 1  # a lone surrogate from JSON
    assert WordCounter(" \u00a0", "a").least_tokens("a\u00a0a \u00a0a\u2002a", 10) == 3  # U+2002 is not counted
    ideographs = WordCounter(" ", "a", b"", CJK_LEADS)
    # "ab", two ideographs, "a" and one more; "cd" holds no sure character and U+4E00 is not counted.
    assert ideographs.least_tokens("ab\u6f22\u5b57cd \u4e00 a\u6f22", 10) == 5
    leads = WordCounter(" ", "a", SURE_LEADS)
    assert leads.least_tokens("\u00e9t\u00e9 \u0416 \u6f22 \u00a0 \u0301 \u00e9\u00a0\u0416", 10) == 3


def test_the_normalizers_keep_sure_characters_and_separators() -> None:
    """Step 1 of the proof, against every combining mark, with the installed tokenizers' own normalizers."""
    steps = [
        normalizers.NFC(),
        normalizers.NFD(),
        normalizers.NFKC(),
        normalizers.NFKD(),
        normalizers.Lowercase(),
        normalizers.StripAccents(),
        normalizers.Nmt(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True),
        normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]),
    ]
    non_ascii = [chr(c) for c in range(0xC0, 0x10000) if chr(c).encode(errors="surrogatepass")[0] in SURE_LEADS]
    assert non_ascii == [chr(c) for c in [*range(0xC0, 0x2C0), *range(0x400, 0x480)]]
    for char in non_ascii:
        assert unicodedata.combining(char) == 0, char
        assert unicodedata.category(char)[0] == "L" or char in "\u00d7\u00f7", char
    graphic = [chr(c) for c in range(0x21, 0x7F)] + non_ascii
    for step in steps:
        for mark in ["", *MARKS]:
            for separator in " \t\n\r\u00a0":
                assert step.normalize_str(separator + mark)[:1].isspace(), (step, separator, mark)
            # Each ASCII character with the mark after it, between spaces; composition never crosses a space.
            pieces = step.normalize_str("".join(f" {sure}{mark}" for sure in graphic) + " ").split(" ")
            assert len(pieces) == len(graphic) + 2, (step, mark)
            assert pieces[0] == pieces[-1] == "", (step, mark)
            for sure, piece in zip(graphic, pieces[1:-1], strict=True):
                kept = piece[:1]
                assert kept, (step, sure, mark)
                assert unicodedata.category(kept) not in ("Mn", "Cc", "Cf", "Zs"), (step, sure, mark)
                if sure.isalnum():
                    assert unicodedata.category(kept)[0] in "LN", (step, sure, mark)


def test_bert_normalizer_makes_each_counted_ideograph_a_word() -> None:
    ideographs = [chr(c) for c in range(0x4E00, 0xA000) if chr(c).encode()[0] in CJK_LEADS]
    assert ideographs == [chr(c) for c in range(0x5000, 0xA000)]
    for options in ({}, {"lowercase": False}, {"strip_accents": True}, {"clean_text": False}):
        step = normalizers.BertNormalizer(handle_chinese_chars=True, **options)
        out = step.normalize_str("a" + "a".join(ideographs) + "a")
        assert out.split() == ["a", *(piece for char in ideographs for piece in (char, "a"))]


def _spec(tok: Tokenizer, path: Sequence[str], value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(tok.to_str())
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return spec


class TestNoWordBound:
    """Each excluded structure, with a text where counting words would pass the real token count."""

    def test_a_replace_that_joins_words(self) -> None:
        tok = wordlevel()
        tok.normalizer = normalizers.Replace(" ", "")
        assert HFTokenizer(tok).word_counter is None
        assert len(tok.encode("a b c d").ids) == 1

    def test_metaspace_that_does_not_split(self) -> None:
        vocab = [("<unk>", 0.0), ("▁a▁a▁a▁a", -1.0), ("▁", -5.0), ("a", -5.0)]
        tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(split=False)
        assert HFTokenizer(tok).word_counter is None
        assert len(tok.encode("a a a a").ids) == 1

    def test_a_split_that_removes_words(self) -> None:
        tok = wordlevel()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split("a", behavior="removed")]
        )
        assert HFTokenizer(tok).word_counter is None
        assert tok.encode("a a a a").ids == []

    def test_an_added_token_across_words(self) -> None:
        tok = wordlevel()
        tok.add_tokens(["a b c d"])
        assert HFTokenizer(tok).word_counter is None
        assert len(tok.encode("a b c d").ids) == 1

    def test_a_delimiter_that_lowercase_produces(self) -> None:
        tok = wordlevel()
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.CharDelimiterSplit("x")]
        )
        counter = HFTokenizer(tok).word_counter
        assert counter is not None
        assert "x" not in counter.sure
        assert "X" not in counter.sure
        assert tok.encode("X X X").ids == []
        assert counter.least_tokens("X X X", 10) == 0

    def test_wordpiece_without_its_unknown_token(self) -> None:
        assert word_counter(_spec(bert_like(), ("model", "unk_token"), "<missing>")) is None

    def test_unigram_without_an_unknown_id(self) -> None:
        assert word_counter(_spec(t5_like(), ("model", "unk_id"), None)) is None

    def test_bpe_that_drops_what_it_cannot_spell(self) -> None:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.train_from_iterator(["abc abc"], trainers.BpeTrainer(show_progress=False))
        assert HFTokenizer(tok).word_counter is None
        assert tok.encode("x y z").ids == []

    def test_byte_level_and_precompiled_are_left_to_the_character_bound(self) -> None:
        spec = json.loads(wordlevel().to_str())
        assert word_counter({**spec, "pre_tokenizer": {"type": "ByteLevel"}}) is None
        assert word_counter({**spec, "normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}}) is None


class _CountingCalls(HFTokenizer):
    """The real tokenizer, noting how many characters it was asked to encode."""

    chars = 0

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        _CountingCalls.chars += sum(map(len, texts))
        return super().encode_batch(texts)


class TestGuard:
    def test_rejects_a_huge_text_without_tokenizing(self) -> None:
        tok = _CountingCalls(bert_like())
        _CountingCalls.chars = 0
        guard = ContextWindowGuard(tok, 8192)
        with pytest.raises(ContextWindowExceededError) as caught:
            guard.check("ab " * 1_000_000, max_output_tokens=100)
        assert _CountingCalls.chars == 0
        # The first 32,372 characters (4 per token left) hold 10,791 words, less one for the chunk boundary.
        assert "you requested at least 10890 tokens (at least 10790 in the input" in str(caught.value)

    def test_rejects_accented_words_and_ideographs_without_tokenizing(self) -> None:
        tok = _CountingCalls(bert_like())
        _CountingCalls.chars = 0
        guard = ContextWindowGuard(tok, 8192)
        for text in ("\u00e9t\u00e9 " * 100_000, "\u6f22\u5b57" * 100_000, "ab\u00a0" * 100_000):
            with pytest.raises(ContextWindowExceededError, match="you requested at least"):
                guard.check(text)
        assert _CountingCalls.chars == 0

    def test_word_bound_off_tokenizes(self) -> None:
        tok = _CountingCalls(bert_like())
        _CountingCalls.chars = 0
        with pytest.raises(ContextWindowExceededError):
            ContextWindowGuard(tok, 8192, word_bound=False).check("ab " * 1_000_000, max_output_tokens=100)
        assert _CountingCalls.chars > 8192

    def test_rejects_many_messages_without_tokenizing(self) -> None:
        tok = _CountingCalls(t5_like())
        _CountingCalls.chars = 0
        with pytest.raises(ContextWindowExceededError):
            ContextWindowGuard(tok, 1000).check([f"a b c {i} " * 10 for i in range(1000)])
        assert _CountingCalls.chars == 0

    def test_text_that_fits_is_counted_exactly(self) -> None:
        tok = HFTokenizer(bert_like())
        text = "hello world " * 2_000
        tokens = len(tok.encode(text))
        assert ContextWindowGuard(tok, tokens).check(text).input_tokens == tokens
        with pytest.raises(ContextWindowExceededError, match=f"you requested {tokens + 1} tokens"):
            ContextWindowGuard(tok, tokens).check(text, max_output_tokens=1)

    def test_least_tokens_uses_words(self) -> None:
        guard = ContextWindowGuard(_CountingCalls(wordlevel()), 100)
        _CountingCalls.chars = 0
        assert guard.least_tokens(["a b " * 1_000], 100) > 100
        assert _CountingCalls.chars == 0
