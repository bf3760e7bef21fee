"""The normalized word bound on real tokenizers built here: SentencePiece-style ``Precompiled`` normalizers (a real
``nmt_nfkc`` charsmap from a SentencePiece model trained on the spot) and ``Replace`` normalizers.

The bound never passes the real token count, for a text or any start of it, on adversarial text cut with tiny
chunks so that every cut rule is exercised; the facts the proof takes from ``tokenizers`` (which characters its
pre-tokenizers split at and drop) are checked over every code point; each excluded structure has a text on which
the bound would overshoot; and the guard rejects an overflow of such a tokenizer without tokenizing.
"""

from __future__ import annotations

import json
import string
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.validation._spm import nmt_nfkc_charsmap
from tests.validation.test_word_bounds import PIECES, adversarial_text, unigram
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from autoglm_runtime.errors import ContextWindowExceededError
from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer, IncompleteInput, OpenAIExtractor
from autoglm_runtime.validation import _normalized_words as normalized_words
from autoglm_runtime.validation._normalized_words import (
    WHITE_SPACE,
    NormalizedWordCounter,
    fixed_characters,
    normalized_word_counter,
    word_separators,
)


def precompiled() -> Any:
    return normalizers.Precompiled(nmt_nfkc_charsmap())


def t5_precompiled() -> Tokenizer:
    """T5's structure: Precompiled, extra spaces folded, WhitespaceSplit then Metaspace; ``</s>`` matched raw."""
    tok = unigram(
        normalizers.Sequence([precompiled(), normalizers.Replace(Regex(" {2,}"), " ")]),
        pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]),
    )
    tok.add_special_tokens(["</s>", "<extra_id_0>"])
    return tok


def albert_like() -> Tokenizer:
    """ALBERT's: quotes replaced, accents stripped, lowercased, Precompiled, extra spaces folded; Metaspace."""
    steps = [
        normalizers.Replace("``", '"'),
        normalizers.Replace("''", '"'),
        normalizers.NFKD(),
        normalizers.StripAccents(),
        normalizers.Lowercase(),
        precompiled(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ]
    tok = unigram(normalizers.Sequence(steps), pre_tokenizers.Metaspace(prepend_scheme="always"))
    tok.add_tokens([AddedToken("[MASK]", normalized=True)])
    return tok


def spm_converted() -> Tokenizer:
    """transformers' SpmConverter: Precompiled, right strip, space runs to the metaspace; Metaspace (first only)."""
    steps = [precompiled(), normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "\u2581")]
    return unigram(normalizers.Sequence(steps), pre_tokenizers.Metaspace(prepend_scheme="first"))


def wordpiece_behind_replace() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=8))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace("-", " - "), normalizers.Replace("ab", ""), normalizers.NFC(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]"], show_progress=False)
    tok.train_from_iterator(["the quick-brown fox jumps over the lazy dog"] * 20, trainer)
    return tok


def bpe_behind_space_runs() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"\s+"), " "), normalizers.NFKC()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("removed")]
    )
    trainer = trainers.BpeTrainer(vocab_size=150, special_tokens=["<unk>"], show_progress=False)
    tok.train_from_iterator(["the quick brown fox, jumps over the lazy dog!"] * 20, trainer)
    return tok


NORMALIZED = {
    "t5-precompiled": t5_precompiled,
    "albert-like": albert_like,
    "spm-converted": spm_converted,
    "wordpiece-behind-replace": wordpiece_behind_replace,
    "bpe-behind-space-runs": bpe_behind_space_runs,
}
# Around a cut: Prepend characters, marks and joiners a grapheme would swallow, quotes a Replace rewrites.
NEAR_CUTS = [
    "\u2002",
    "\u3000",
    "\r\n",
    "\t",
    "\u0600",
    "\u0600a",
    "\u0301",
    " \u0301",
    "a\u0301",
    "\u200d",
    "``",
    "''",
    "-",
    "ab",
    "ba",
    "Σ",
    "I\u0307",
]
long_text = st.lists(
    st.one_of(
        adversarial_text,
        st.sampled_from(NEAR_CUTS + PIECES),
        st.lists(st.sampled_from(["a", "b", "é", " ", "\u00a0", "  ", "-", "\u0600", "\u0301", "Σ"]), max_size=40).map(
            "".join
        ),
    ),
    max_size=12,
).map("".join)


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starts of a few characters, so that short texts are cut (the rules are the same at any size)."""
    monkeypatch.setattr(normalized_words, "_FIRST_CHUNK", 4)
    monkeypatch.setattr(normalized_words, "_LOOKBACK", 8)


@pytest.fixture(scope="module", params=sorted(NORMALIZED))
def counted(request: pytest.FixtureRequest) -> HFTokenizer:
    return HFTokenizer(NORMALIZED[request.param]())


def test_every_family_has_a_normalized_counter_and_no_other_bound(counted: HFTokenizer) -> None:
    assert counted.max_token_chars is None
    assert counted.word_counter is None
    assert counted.normalized_word_counter is not None
    assert counted.word_bound is counted.normalized_word_counter


def test_the_counters_of_the_families() -> None:
    t5 = HFTokenizer(t5_precompiled()).normalized_word_counter
    assert t5 is not None
    assert t5.separators == "".join(sorted(WHITE_SPACE + "\u2581"))
    assert t5.junctions == "".join(sorted(WHITE_SPACE))  # the charsmap maps each to a space
    assert t5.raw_added == ("<unk>", "</s>", "<extra_id_0>")  # the trainer adds its special token
    assert set(string.ascii_letters + string.digits) <= set(t5.fixed)
    albert = HFTokenizer(albert_like()).normalized_word_counter
    assert albert is not None
    assert albert.separators == " \u2581"
    assert not set("`'" + string.ascii_uppercase + "\u00e9") & set(albert.fixed)  # replaced, lowercased, stripped
    wordpiece = HFTokenizer(wordpiece_behind_replace()).normalized_word_counter
    assert wordpiece is not None
    assert not set("-abAB") & set(wordpiece.fixed)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(text=long_text, cut=st.integers(0, 10_000), enough=st.integers(0, 40))
def test_bound_holds_on_adversarial_text(counted: HFTokenizer, text: str, cut: int, enough: int) -> None:
    counter = counted.normalized_word_counter
    assert counter is not None
    tokens = len(counted.encode(text))
    assert counter.least_tokens(text, 10**9) <= tokens
    assert counter.least_tokens(text[: cut % (len(text) + 1)], 10**9) <= tokens  # a start of the text
    assert counter.least_tokens(text, enough) <= tokens
    # Claim 1 and 2 at every cut the counter would take, before any raw added token.
    found = [text.find(content) for content in counter.raw_added]
    before = min((index for index in found if index >= 0), default=len(text))
    for end in range(4, before + 1):
        cut = counter._junction(text, end)
        if cut is not None:
            assert counter._words(text[:cut]) <= tokens, (text[:cut], cut)
    guard = ContextWindowGuard(counted, max(tokens, 1))
    assert guard.check(text).input_tokens == tokens


@pytest.mark.parametrize("name", sorted(NORMALIZED))
def test_bound_counts_words_of_any_script(name: str) -> None:
    tok = HFTokenizer(NORMALIZED[name]())
    counter = tok.normalized_word_counter
    assert counter is not None
    spaced = ("ab\u00a0" * 3_000, "ab\u2002" * 3_000, "\u6f22\u3000" * 3_000, "ab\t" * 3_000)
    for text in ("ab " * 3_000, "y " * 3_000, "\u03b1\u03b2 \u03b3 " * 2_000, "x\u0301 b " * 900, *spaced):
        least = counter.least_tokens(text, 10**9)
        assert least <= len(tok.encode(text)), (name, text[:10])
    if name != "bpe-behind-space-runs":  # that one removes punctuation, so it counts no non-ASCII character
        assert counter.least_tokens("\u03b1\u03b2 \u03b3 " * 2_000, 10**9) >= 3_000  # Greek words count


def test_the_separators_are_what_the_pre_tokenizers_split_at_and_drop() -> None:
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    for step in (pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Whitespace(), pre_tokenizers.BertPreTokenizer()):
        kept = {char for piece, _ in step.pre_tokenize_str(everything) for char in piece}
        assert set(everything) - kept == set(WHITE_SPACE), step
    punctuation = pre_tokenizers.Punctuation("removed")
    for char in string.punctuation:
        assert [piece for piece, _ in punctuation.pre_tokenize_str(f"a{char}b")] == ["a", "b"], char
    metaspace = pre_tokenizers.Metaspace(prepend_scheme="never")
    assert [piece for piece, _ in metaspace.pre_tokenize_str("a b\u2581c\u00a0d")] == ["a", "\u2581b", "\u2581c\u00a0d"]


def test_fixed_characters_stay_between_spaces_after_any_character() -> None:
    """Claim 1 for the composing steps: a fixed character is never a composition's second half, nor changed by
    what comes before it, and a space after it stays."""
    before = ["a", "e", "\u0600", "\u0301", "\u1100", "\u0b47", " ", "Σ", "\u00a0"]
    steps = [normalizers.NFC(), normalizers.NFKC(), normalizers.NFD(), normalizers.NFKD(), precompiled()]
    for step in steps:
        spec = {"type": "Sequence", "normalizers": [json.loads(step.__getstate__())]}
        found = fixed_characters(spec)
        assert found is not None
        fixed, junctions = found
        for junction in set(junctions) & set(" \u00a0\u2002\u3000\t"):
            text = "".join(f"{prev}{char}{junction}" for prev in before for char in fixed)
            out, image = step.normalize_str(text), step.normalize_str(junction)
            kept = {out[index - 1] for index, found_char in enumerate(out) if found_char == image and index}
            assert set(fixed) <= kept, (step, junction, sorted(set(fixed) - kept)[:5])


class TestNotInTheProof:
    """Each excluded structure, with a text where the bound would pass the real token count."""

    def test_a_regex_replace_across_a_cut(self) -> None:
        tok = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
        tok.normalizer = normalizers.Replace(Regex("a b c"), "abc")
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        assert HFTokenizer(tok).normalized_word_counter is None
        forced = NormalizedWordCounter(tok.normalizer, "abc", " ")
        assert forced.least_tokens("c a b c", 10) == 3  # cut after "c a b"
        assert len(tok.encode("c a b c").ids) == 2

    def test_a_replace_of_the_space(self) -> None:
        spec = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
        found = fixed_characters(spec)
        assert found is not None
        assert found[1] == "".join(sorted(set(WHITE_SPACE) - {" "}))  # other spaces are still cuts
        joined = {"type": "Replace", "pattern": {"String": " "}, "content": ""}
        every = {"type": "Sequence", "normalizers": [normalizers_nfkc := {"type": "NFKC"}, joined]}
        assert normalizers_nfkc
        found = fixed_characters(every)
        assert found is not None
        assert "\u00a0" not in found[1]  # NFKC makes it a space, which the Replace removes
        assert "\u3000" not in found[1]

    def test_two_precompiled(self) -> None:
        step = json.loads(precompiled().__getstate__())
        assert fixed_characters({"type": "Sequence", "normalizers": [step, step]}) is None

    def test_a_normalizer_that_cannot_be_rebuilt_gets_no_bound(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(spec: Any) -> Any:
            raise ValueError(f"cannot rebuild {spec['type']}")

        monkeypatch.setattr(normalized_words, "_normalizer_of", refuse)
        tok = HFTokenizer(t5_precompiled())  # loads all the same
        assert tok.normalized_word_counter is None
        assert normalized_word_counter(json.loads(t5_precompiled().to_str()), None) is None

    def test_metaspace_that_does_not_split(self) -> None:
        assert word_separators({"type": "Metaspace", "split": False}) is None

    def test_a_split_that_removes(self) -> None:
        assert word_separators({"type": "Split", "pattern": {"String": "a"}, "behavior": "Removed"}) is None

    def test_a_normalized_added_token_across_words(self) -> None:
        tok = albert_like()
        tok.add_tokens([AddedToken("a b", normalized=True)])
        assert HFTokenizer(tok).normalized_word_counter is None
        assert len(tok.encode("a b").ids) <= 2

    def test_a_normalized_added_token_whose_normal_form_spans_words(self) -> None:
        tok = unigram(normalizers.NFKC(), pre_tokenizers.Metaspace())
        tok.add_tokens([AddedToken("a\u00a0b", normalized=True)])
        assert HFTokenizer(tok).normalized_word_counter is None
        assert len(tok.encode("a b").ids) == 1  # two words, one added token

    def test_a_raw_added_token_across_words_is_cut_before(self) -> None:
        tok = t5_precompiled()
        tok.add_tokens([AddedToken("q r", normalized=False)])
        counter = HFTokenizer(tok).normalized_word_counter
        assert counter is not None
        text = "ab cd " + "q r " * 3_000
        assert len(tok.encode(text).ids) < 3_100
        assert counter.least_tokens(text, 10**9) <= 2

    def test_punctuation_removal_counts_no_non_ascii_character(self) -> None:
        tok = HFTokenizer(bpe_behind_space_runs())
        counter = tok.normalized_word_counter
        assert counter is not None
        assert tok.encode("\u00bf \u00a1 \u00bf") == []
        assert counter.least_tokens("\u00bf \u00a1 \u00bf", 10) == 0


class _CountingCalls(HFTokenizer):
    """The real tokenizer, noting how many characters it was asked to encode."""

    chars = 0

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        _CountingCalls.chars += sum(map(len, texts))
        return super().encode_batch(texts)


class TestGuard:
    @pytest.mark.parametrize("name", ["t5-precompiled", "albert-like", "wordpiece-behind-replace"])
    def test_rejects_huge_texts_without_tokenizing(self, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(normalized_words, "_FIRST_CHUNK", 4_096)
        monkeypatch.setattr(normalized_words, "_LOOKBACK", 1_024)
        tok = _CountingCalls(NORMALIZED[name]())
        _CountingCalls.chars = 0
        guard = ContextWindowGuard(tok, 8192)
        spaced = ("cd\u00a0" * 1_000_000, "cd\u2002" * 1_000_000, "\u6f22\u5b57\u3000" * 1_000_000)
        for text in ("cd " * 1_000_000, "y " * 1_000_000, "\u03b1\u03b2\u03b3 " * 500_000, *spaced):
            with pytest.raises(ContextWindowExceededError, match="you requested at least"):
                guard.check(text, max_output_tokens=100)
        assert _CountingCalls.chars == 0

    def test_text_that_fits_is_counted_exactly(self) -> None:
        tok = HFTokenizer(t5_precompiled())
        text = "hello world " * 2_000
        tokens = len(tok.encode(text))
        assert ContextWindowGuard(tok, tokens).check(text).input_tokens == tokens
        with pytest.raises(ContextWindowExceededError, match=f"you requested {tokens + 1} tokens"):
            ContextWindowGuard(tok, tokens).check(text, max_output_tokens=1)

    def test_unicode_words_under_a_word_counter(self) -> None:
        """A tokenizer with both counters proves with the second what the first does not count (Greek words)."""
        tok = _CountingCalls(unigram(normalizers.NFKC(), pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit()])))
        assert tok.word_counter is not None
        assert tok.normalized_word_counter is not None
        _CountingCalls.chars = 0
        with pytest.raises(ContextWindowExceededError):
            ContextWindowGuard(tok, 8192).check("\u03b1\u03b2\u03b3 " * 500_000)
        assert _CountingCalls.chars == 0


def test_no_fixed_character_is_a_mark() -> None:
    found = fixed_characters({"type": "NFKC"})
    assert found is not None
    for char in found[0]:
        assert unicodedata.category(char)[0] in "LNPS", char


def test_no_candidate_is_a_second_half_or_a_prepend_character() -> None:
    """Claim 1's facts about ``W``'s candidates: never the second half of a canonical composition, never a mark, and
    none is a Prepend character (the Prepend characters of Unicode 15, the latest this claim was checked against)."""
    seconds = set()
    for code in range(sys.maxunicode + 1):
        parts = unicodedata.decomposition(chr(code)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            seconds.add(chr(int(parts[1], 16)))
    prepend = {*map(chr, [*range(0x600, 0x606), 0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0xD4E, 0x110BD, 0x110CD])}
    candidates = set(normalized_words._CANDIDATES)
    assert not candidates & seconds
    assert not candidates & prepend
    assert all(unicodedata.category(char)[0] in "LNPS" for char in candidates)


def test_lowercase_maps_each_character_alone() -> None:
    """Claim 1 relies on it: no final-sigma context, so a cut never changes how a sigma before it is lowercased."""
    for step in (normalizers.Lowercase(), normalizers.BertNormalizer()):
        assert step.normalize_str("\u0391\u03a3") == "\u03b1\u03c3"
        assert step.normalize_str("\u0391\u03a3 \u0391") == "\u03b1\u03c3 \u03b1"


class TestFoundInReview:
    """Counterexamples to the bound found in review: each is excluded from it or counted as it really is."""

    def test_unicode_scripts_drops_spaces_and_code_points_it_has_no_script_for(self) -> None:
        # It drops the leading run of what it calls "Any": a space, private-use, unassigned and newer letters (the
        # Armenian U+0560 is one), so a word of them costs no token.
        tok = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.UnicodeScripts()])
        text = "\u0560 \ue000 " * 40_000
        assert tok.encode(text).ids == []
        wrapped = HFTokenizer(tok)
        assert wrapped.normalized_word_counter is None
        assert ContextWindowGuard(wrapped, 10).check(text, max_output_tokens=10).input_tokens == 0

    @pytest.mark.parametrize(("strip", "unit"), [("lstrip", "\t \t \t <tok>"), ("rstrip", "<tok> \t \t \t")])
    def test_a_normalized_added_token_stripping_spaces_the_pre_tokenizer_keeps(self, strip: str, unit: str) -> None:
        # Metaspace splits at spaces only: a tab is part of a word, yet the token swallows it with the spaces.
        tok = unigram(None, pre_tokenizers.Metaspace())
        tok.add_tokens([AddedToken("<tok>", normalized=True, **{strip: True})])
        text = unit * 20_000
        tokens = len(tok.encode(text).ids)
        assert tokens == 20_000
        wrapped = HFTokenizer(tok)
        assert wrapped.normalized_word_counter is None
        assert ContextWindowGuard(wrapped, tokens + 10).check(text, max_output_tokens=10).input_tokens == tokens

    def test_a_start_is_not_counted_as_a_whole_text(self) -> None:
        # "q a" may go on as "q ab", which the Replace makes "q ": one token.
        tok = HFTokenizer(wordpiece_behind_replace())
        assert len(tok.encode("q ab")) == 1
        counter = tok.normalized_word_counter
        assert counter is not None
        assert counter.least_tokens("q a", 10) <= 1
        assert ContextWindowGuard(tok, 100).least_tokens(["q a"], 10) <= 1
        assert counter.least_tokens("q a", 10, whole=True) == 2  # read whole, "q a" is two tokens

    def test_a_normalizer_of_very_many_steps_is_not_asked(self) -> None:
        """Asking each step costs about 0.1 s at load: hundreds of steps get no bound rather than a slow load."""
        assert fixed_characters({"type": "Sequence", "normalizers": [{"type": "NFC"}] * 16}) is not None
        assert fixed_characters({"type": "Sequence", "normalizers": [{"type": "NFC"}] * 17}) is None

    def test_a_long_tool_definition_that_fits_is_not_rejected_from_its_start(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The guard judges a long tool definition from its first characters (a start, not the whole text): its
        words are counted only up to a junction, never as if the text ended there."""
        monkeypatch.setattr(normalized_words, "_FIRST_CHUNK", 4_096)  # a start this short was read whole
        tok = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
        tok.normalizer = normalizers.Replace(" x" * 12, "")
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        guard = ContextWindowGuard(HFTokenizer(tok), 100, message_tokens=0)
        limit = guard.text_limit()
        assert limit is not None
        empty = json.dumps([{"type": "function", "function": {"name": "f", "description": ""}}])
        filler = limit + 1 - empty.index('""') - 1 - 16  # the start ends inside the run of " x" the Replace deletes
        description = ("y" * 59 + " ") * (filler // 60) + "y" * (filler % 60) + " x" * 12 + " " + "z" * 40
        tools = [{"type": "function", "function": {"name": "f", "description": description}}]
        assert len(tok.encode(json.dumps(tools)).ids) == 33
        body = {"messages": [{"role": "user", "content": "hi"}], "tools": tools, "max_tokens": 66}
        extracted = OpenAIExtractor().extract(body, max_text_chars=limit)
        assert extracted.partial == frozenset({1})
        with pytest.raises(IncompleteInput):  # the start proves nothing: the caller judges the whole text
            guard.judge(extracted.guard_input())
        assert guard.judge(OpenAIExtractor().extract(body).guard_input()).input_tokens == 34
