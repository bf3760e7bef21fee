"""Sound characters-per-token bounds, per tokenizer family, on real tokenizers built here (nothing downloaded).

Each bounded family is checked three ways: the constants of the proof are recomputed over all of Unicode with the
installed ``tokenizers``' own normalizers, hypothesis feeds adversarial text (composing marks, NFC-expanding
characters, Hangul jamo, emoji, CJK, long runs) and the bound must hold on every one, and a guard whose window is
exactly the text's token count must accept it. Each unbounded family has a counterexample text.
"""

from __future__ import annotations

import json
import math
import unicodedata
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer
from autoglm_runtime.validation._token_bounds import (
    COMPOSING_RATIOS,
    byte_level_alphabet,
    max_token_chars,
    normalizer_ratios,
)

# Qwen2's split pattern: contractions, letter runs with one leading non-letter, single digits, punctuation, newlines.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The worst cases of the proof: U+01D5 is "U" plus two marks under NFC; U+1F82 is four characters under NFD.
WORST_BYTES, WORST_CHARS = "U\u0308\u0304", "\u03b1\u0313\u0300\u0345"
PIECES = [
    WORST_BYTES,
    WORST_CHARS,
    "\u1100\u1161\u11a8",  # Hangul jamo composing into one syllable
    "\u0391\u0313\u0342\u0345",  # Greek capital with three marks
    "\ufb2c",  # NFC expands it to three characters
    "\U0001d160",  # a musical symbol NFC expands to three
    "\uff76\uff9e",  # halfwidth kana plus voiced mark: one character under NFKC
    "\ufdfa",  # NFKC expands it to 18 characters
    "\u0301",
    "e\u0301",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\U0001f600",
    "漢字",
    "Ǖ",
    " ",
    "\n",
    "\t",
    "ab",
    "<|im_start|>",
    "<|im_end|>",
]
CORPUS = [
    "the quick brown fox jumps over the lazy dog, hello world 12345",
    "Ǖ" * 32,  # the longest token (64 bytes) tiles a run of the NFC worst case
    "ǕǕǕǕ " * 20,
    " " * 64,
    "漢字漢字漢字 " * 10,
    "\U0001f600" * 16,
    "ἂἂἂἂἂἂ " * 10,
    "각각각각 " * 10,
] * 10


def _train(normalizer: Any, pre_tokenizer: Any, *, byte_level: bool, vocab_size: int = 600, **model: Any) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    if model:
        spec = json.loads(tok.to_str())
        vocab = spec["model"]["vocab"]
        for name in [*(f"<0x{b:02X}>" for b in range(256)), "<unk>"]:
            vocab.setdefault(name, len(vocab))
        spec["model"].update(model)
        tok = Tokenizer.from_str(json.dumps(spec))
    return tok


def qwen2_like() -> Tokenizer:
    split = pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated")
    tok = _train(
        normalizers.NFC(),
        pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        byte_level=True,
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return tok


def nfkc_byte_level() -> Tokenizer:
    return _train(normalizers.NFKC(), pre_tokenizers.ByteLevel(add_prefix_space=True), byte_level=True)


def llama2_like() -> Tokenizer:
    """SentencePiece-style BPE as older Llama 2 / Mistral tokenizer.json files have it: byte fallback, fused unk."""
    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    return _train(normalizer, None, byte_level=False, byte_fallback=True, unk_token="<unk>", fuse_unk=True)


def metaspace_like() -> Tokenizer:
    """The newer conversion: no normalizer, a Metaspace pre-tokenizer, NFC added for good measure."""
    return _train(
        normalizers.NFC(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        byte_level=False,
        byte_fallback=True,
        unk_token="<unk>",
        fuse_unk=True,
    )


BOUNDED = {
    "qwen2-like": qwen2_like,
    "nfkc-byte-level": nfkc_byte_level,
    "llama2-like": llama2_like,
    "metaspace-like": metaspace_like,
}


@pytest.fixture(scope="module", params=sorted(BOUNDED))
def bounded(request: pytest.FixtureRequest) -> HFTokenizer:
    return HFTokenizer(BOUNDED[request.param]())


def _least_units_per_char(decompose: Any, compose: Any) -> dict[str, tuple[Fraction, str]]:
    """The least ``units(o) / len(X(o))`` over every code point ``o`` that is its own normal form, per unit."""
    chars = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF and cp != 0x0A]
    # A newline blocks reordering and composition, so one call normalizes every character on its own.
    stable = compose("\n".join(chars)).split("\n")
    decomposed = decompose("\n".join(chars)).split("\n")
    assert len(stable) == len(decomposed) == len(chars)
    longest, most_bytes = (1, ""), (1, 1, "")  # (length, char) and (bytes, length, char) of the worst ratio
    for char, normal, parts in zip(chars, stable, decomposed, strict=True):
        if normal != char:
            continue  # never in a normalized output
        size, width = len(parts), len(char.encode())
        if size > longest[0]:
            longest = (size, char)
        if width * most_bytes[1] < most_bytes[0] * size:
            most_bytes = (width, size, char)
    return {
        "chars": (Fraction(1, longest[0]), longest[1]),
        "bytes": (Fraction(most_bytes[0], most_bytes[1]), most_bytes[2]),
    }


@pytest.mark.parametrize("form", ["NFC", "NFKC"])
@pytest.mark.parametrize("source", ["tokenizers", "unicodedata"])
def test_composing_ratios_hold_over_all_of_unicode(form: str, source: str) -> None:
    decomposing = form.replace("C", "D")
    if source == "tokenizers":
        compose = getattr(normalizers, form)().normalize_str
        decompose = getattr(normalizers, decomposing)().normalize_str
    else:

        def compose(text: str) -> str:
            return unicodedata.normalize(form, text)  # type: ignore[arg-type]

        def decompose(text: str) -> str:
            return unicodedata.normalize(decomposing, text)  # type: ignore[arg-type]

    # The least ratios equal the constants, and the witnesses are the worst cases named in the proof.
    assert _least_units_per_char(decompose, compose) == {
        "chars": (COMPOSING_RATIOS[0], "\u1f82"),
        "bytes": (COMPOSING_RATIOS[1], "\u01d5"),
    }


def test_byte_level_alphabet_is_the_tokenizers_one() -> None:
    assert sorted(byte_level_alphabet()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert len(set(byte_level_alphabet())) == 256


def test_bounds_of_the_families() -> None:
    def longest(tok: Tokenizer) -> int:
        return max(len(token) for token in tok.get_vocab(with_added_tokens=False))

    qwen2 = qwen2_like()
    assert HFTokenizer(qwen2).max_token_chars == max(math.ceil(longest(qwen2) * 3 / 2), len("<|endoftext|>"))
    nfkc = nfkc_byte_level()
    assert HFTokenizer(nfkc).max_token_chars == math.ceil(longest(nfkc) * 3 / 2)
    for build in (llama2_like, metaspace_like):
        tok = build()
        assert HFTokenizer(tok).max_token_chars == (4 if build is metaspace_like else 1) * longest(tok)


def test_nfc_needs_its_factor() -> None:
    """The NFC bound is tight: the longest token's length alone (right without a normalizer) would be wrong."""
    tok = HFTokenizer(qwen2_like())
    text = WORST_BYTES * 32 * 100
    plain_bound = max(len(token) for token in qwen2_like().get_vocab(with_added_tokens=False))
    assert len(tok.encode(text)) < math.ceil(len(text) / plain_bound)
    assert tok.max_token_chars is not None
    assert len(tok.encode(text)) >= math.ceil(len(text) / tok.max_token_chars)


adversarial_text = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.tuples(st.sampled_from(PIECES), st.integers(1, 400)).map(lambda pair: pair[0] * pair[1]),
        st.text(max_size=20),
        st.text(st.characters(categories=["Mn", "Mc", "Me"]), max_size=20),
    ),
    max_size=12,
).map("".join)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(text=adversarial_text)
def test_bound_holds_on_adversarial_text(bounded: HFTokenizer, text: str) -> None:
    bound = bounded.max_token_chars
    assert bound is not None
    ids = bounded.encode(text)
    assert len(ids) >= math.ceil(len(text) / bound)
    # The guard's pre-check never rejects text that fits exactly.
    guard = ContextWindowGuard(bounded, max(len(ids), 1))
    assert guard.check(text).input_tokens == len(ids)


def _with_model(tok: Tokenizer, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(tok.to_str())
    spec["model"].update(changes)
    return spec


class TestNoSoundBound:
    """Each family without a bound, with a text that has more characters per token than any bound allows."""

    def test_wordpiece_turns_a_long_word_into_one_token(self) -> None:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(special_tokens=["[UNK]"], show_progress=False))
        assert HFTokenizer(tok).max_token_chars is None
        assert len(tok.encode("a" * 10_000).ids) == 1
        assert tok.encode(" " * 10_000).ids == []

    def test_unigram_fuses_unknown_characters(self) -> None:
        tok = Tokenizer(models.Unigram())
        tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(unk_token="<unk>", show_progress=False))
        assert HFTokenizer(tok).max_token_chars is None
        assert len(tok.encode("\u2603" * 10_000).ids) == 1

    def test_added_token_stripping_whitespace(self) -> None:
        tok = _train(None, pre_tokenizers.ByteLevel(), byte_level=True)
        tok.add_special_tokens([AddedToken("<|end|>", rstrip=True, lstrip=True)])
        assert HFTokenizer(tok).max_token_chars is None
        assert len(tok.encode("<|end|>" + " " * 10_000).ids) == 1

    def test_byte_level_missing_bytes_and_no_unknown_token(self) -> None:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel()
        tok.train_from_iterator(["abc abc"], trainers.BpeTrainer(show_progress=False))
        assert HFTokenizer(tok).max_token_chars is None
        assert len(tok.encode("\u2603" * 10_000).ids) == 1  # the prefix space; the snowmen are dropped

    def test_whitespace_dropping_pre_tokenizer_before_byte_level(self) -> None:
        dropping = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel()])
        tok = _train(None, dropping, byte_level=True)
        assert HFTokenizer(tok).max_token_chars is None
        assert tok.encode(" " * 10_000).ids == []

    def test_fused_unknown_without_byte_fallback(self) -> None:
        tok = Tokenizer.from_str(json.dumps(_with_model(llama2_like(), byte_fallback=False)))
        assert HFTokenizer(tok).max_token_chars is None
        assert len(tok.encode("\u2603" * 10_000).ids) <= 2

    def test_normalizer_that_deletes(self) -> None:
        tok = _train(normalizers.Strip(), pre_tokenizers.ByteLevel(), byte_level=True)
        assert HFTokenizer(tok).max_token_chars is None
        assert tok.encode(" " * 10_000).ids == []


@pytest.mark.parametrize(
    ("normalizer", "ratios"),
    [
        (None, (1, 1)),
        ({"type": "Lowercase"}, (1, 1)),
        ({"type": "Replace", "pattern": {"String": "  "}, "content": "▁"}, (Fraction(1, 2), 1)),
        ({"type": "Replace", "pattern": {"Regex": " +"}, "content": " "}, None),
        ({"type": "Replace", "pattern": {"String": " "}, "content": ""}, None),
        ({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "NFC"}]}, (Fraction(1, 16), Fraction(1, 6))),
        ({"type": "StripAccents"}, None),
        ({"type": "Precompiled", "precompiled_charsmap": ""}, None),
    ],
)
def testnormalizer_ratios(normalizer: dict[str, Any] | None, ratios: tuple[int, int] | None) -> None:
    expected = None if ratios is None else (Fraction(ratios[0]), Fraction(ratios[1]))
    assert normalizer_ratios(normalizer) == expected


def test_the_doctest_vocabulary() -> None:
    vocab = {c: i for i, c in enumerate(byte_level_alphabet())} | {"ĠÅ": 256}
    spec: dict[str, Any] = {
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab},
    }
    assert max_token_chars(spec) == 2
    spec["added_tokens"] = [{"content": "<|a-long-special|>", "normalized": False}]
    assert max_token_chars(spec) == len("<|a-long-special|>")
