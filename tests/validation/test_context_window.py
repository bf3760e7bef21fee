"""ContextWindowGuard: exact counts and messages, the pre-check, early exit, truncation, live limits."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoglm_runtime.errors import ContextWindowExceededError, InputDecodeError, InvalidRequestError, UsageError
from autoglm_runtime.validation import (
    BOUNDARY_SLACK,
    CallableTokenizer,
    ConfigLimits,
    ContextWindowGuard,
    HFTokenizer,
    Limits,
    StaticLimits,
    TiktokenTokenizer,
    Tokenizer,
)
from autoglm_runtime.validation import _counting as counting

TAIL = "shorten the input or lower max_tokens"


def overflow(n: int, out: int, window: int, *, at_least: bool = False, asked: bool = True) -> str:
    """The E0513 message; ``asked=False``: the request set no output budget (the guard's default counted)."""
    has = "at least " if at_least else ""
    budget = (
        f"{out} in the completion asked for by max_tokens"
        if asked
        else (f"{out} for the completion by default, as the request sets no max_tokens")
    )
    tail = TAIL if asked else "shorten the input" + (", or send a lower max_tokens" if out else "")
    return (
        f"This model's maximum context length is {window} tokens. However, you requested {has}{n + out} tokens "
        f"({has}{n} in the input, {budget}), more than the context window of {window} tokens: {tail}"
    )


class RecordingTokenizer:
    """A real (one token per character) tokenizer that remembers how many characters it was asked to encode."""

    def __init__(self, max_token_chars: int | None = None) -> None:
        self.max_token_chars = max_token_chars
        self.encoded_chars = 0

    def encode(self, text: str) -> list[int]:
        self.encoded_chars += len(text)
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(map(chr, ids))


def test_fitting_input_is_counted_exactly(hf_bytelevel: HFTokenizer) -> None:
    text = "hello world, hello guard"
    result = ContextWindowGuard(hf_bytelevel, 100).check(text, max_output_tokens=10)
    ids = hf_bytelevel.encode(text)
    assert (result.input_tokens, result.output_tokens, result.context_window) == (len(ids), 10, 100)
    assert result.token_ids == (tuple(ids),)
    assert (result.removed_tokens, result.truncated, result.text) == (0, False, text)


def test_exactly_full_window_fits(chars: CallableTokenizer) -> None:
    assert ContextWindowGuard(chars, 10).check("abcdef", max_output_tokens=4).input_tokens == 6


def test_overflow_names_both_numbers_and_the_limit(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 10, max_chars_per_token=None)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("abcdefg", max_output_tokens=4, param="prompt")
    assert info.value.message == overflow(7, 4, 10)
    assert (info.value.code, info.value.http_status, info.value.grpc_status, info.value.param) == (
        "E0513",
        400,
        "INVALID_ARGUMENT",
        "prompt",
    )


def test_default_output_tokens_count_when_none_requested(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 10, default_output_tokens=5, max_chars_per_token=None)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("abcdef")
    # Before: "5 in the completion asked for by max_tokens ...: shorten the input or lower max_tokens", a field
    # the request never sent.
    assert info.value.message == overflow(6, 5, 10, asked=False)


def test_wordlevel_overflow_counts_words(hf_wordlevel: HFTokenizer) -> None:
    guard = ContextWindowGuard(hf_wordlevel, 8)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("the quick brown fox jumps over the lazy dog", max_output_tokens=2)
    assert info.value.message == overflow(9, 2, 8)


def test_tiktoken_counts_merged_tokens(tiny_tiktoken: TiktokenTokenizer) -> None:
    # "hello" and " world" are single tokens; " hello" is a space and "hello".
    assert ContextWindowGuard(tiny_tiktoken, 5).check("hello world hello", max_output_tokens=1).input_tokens == 4


def test_precheck_rejects_without_tokenizing() -> None:
    tok = RecordingTokenizer(max_token_chars=4)
    guard = ContextWindowGuard(tok, 100)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("x" * 1000, max_output_tokens=10)
    # 1000 characters at no more than 4 characters per token are at least 250 tokens.
    assert info.value.message == overflow(250, 10, 100, at_least=True)
    assert tok.encoded_chars == 0


def test_chunked_counting_stops_early_with_a_lower_bound() -> None:
    tok = RecordingTokenizer(max_token_chars=None)
    guard = ContextWindowGuard(tok, 20)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("x" * 1_000_000, max_output_tokens=10)
    first_chunk = counting._MIN_CHUNK_CHARS // 4  # the smallest chunk; no whitespace, so the cut is exact
    assert info.value.message == overflow(first_chunk - BOUNDARY_SLACK, 10, 20, at_least=True)
    assert tok.encoded_chars == first_chunk


def test_a_first_chunk_just_past_what_is_left_settles_a_dense_text() -> None:
    tok = RecordingTokenizer(max_token_chars=None)
    with pytest.raises(ContextWindowExceededError) as info:
        ContextWindowGuard(tok, 20_000).check("x" * 1_000_000, max_output_tokens=0)
    # What is left, one token more, and two cuts' slack: one chunk proves the overflow.
    first_chunk = 20_000 + 1 + 2 * BOUNDARY_SLACK
    assert info.value.message == overflow(first_chunk - BOUNDARY_SLACK, 0, 20_000, at_least=True)
    assert tok.encoded_chars == first_chunk


def test_later_chunks_are_sized_from_the_density_seen() -> None:
    encoded: list[int] = []

    def two_chars_a_token(text: str) -> list[int]:
        encoded.append(len(text))
        return list(range((len(text) + 1) // 2))

    guard = ContextWindowGuard(CallableTokenizer(two_chars_a_token), 10_000, max_chars_per_token=None)
    with pytest.raises(ContextWindowExceededError):
        guard.check("x" * 1_000_000, max_output_tokens=0)
    # Proving 10,001 tokens at two characters a token needs about 20,002 characters; the second chunk is sized for
    # the tokens still missing, so the guard reads only a little more than that (not two chunks of 20,002 each).
    assert len(encoded) == 2
    assert 2 * 10_001 < sum(encoded) < 2 * 10_001 * 1.15


def test_chunks_are_cut_at_the_start_of_a_whitespace_run() -> None:
    text = "abc   defgh"
    assert [counting._cut(text, target) for target in (9, 5, 3, 2)] == [3, 3, 3, 2]
    # A cut never falls at or before the previous one, so counting always moves on.
    assert counting._cut(text, 5, after=3) == 5


def test_long_input_that_fits_is_counted_exactly() -> None:
    tok = RecordingTokenizer(max_token_chars=None)
    text = "y" * 40_000
    result = ContextWindowGuard(tok, 50_000).check(text)
    assert result.input_tokens == 40_000


def test_segments_share_one_budget(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 10, max_chars_per_token=None)
    assert guard.check(["abc", "de"], max_output_tokens=5).input_tokens == 5
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check(["abc", "def"], max_output_tokens=5)
    assert info.value.message == overflow(6, 5, 10)


def test_overflow_in_an_early_segment_reports_a_lower_bound(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 10, max_chars_per_token=None)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check(["abcdefghijkl", "more"], max_output_tokens=0)
    # Short pieces are tokenized in one batch, so the count is exact.
    assert info.value.message == overflow(16, 0, 10)


def test_token_id_segments_are_counted_by_length(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 10)
    assert guard.check([1, 2, 3], max_output_tokens=2).token_ids == ((1, 2, 3),)
    mixed: list[str | list[int]] = ["ab", [7, 8]]
    assert guard.check(mixed).input_tokens == 4


@pytest.mark.parametrize("bound", [4, None])  # the pre-check, and the count without one
def test_token_ids_over_the_window_are_an_exact_count_not_a_lower_bound(bound: int | None) -> None:
    # Token ids are counted by their length: "at least 12" would say the guard does not know.
    guard = ContextWindowGuard(RecordingTokenizer(max_token_chars=bound), 10)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check([list(range(12))], max_output_tokens=2)
    assert info.value.message == overflow(12, 2, 10)
    with pytest.raises(ContextWindowExceededError) as info:  # text beside them is not counted yet
        guard.check([list(range(12)), "x" * 8], max_output_tokens=2)
    assert info.value.message == overflow(12 if bound is None else 14, 2, 10, at_least=True)


def test_truncate_left_keeps_the_end(chars: CallableTokenizer, caplog: pytest.LogCaptureFixture) -> None:
    guard = ContextWindowGuard(chars, 8, truncate_on_overflow=True)
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.validation"):
        result = guard.check("abcdefghij", max_output_tokens=3)
    assert (result.text, result.removed_tokens, result.input_tokens, result.truncated) == ("fghij", 5, 5, True)
    [record] = caplog.records
    assert record.getMessage() == "input truncated to fit the context window: 5 of 10 tokens removed from the left"
    assert (record.error_code, record.removed_tokens, record.context_window) == ("E0514", 5, 8)  # type: ignore[attr-defined]


def test_truncate_right_keeps_the_start(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 8, truncate_on_overflow=True, truncation_side="right")
    result = guard.check("abcdefghij", max_output_tokens=3)
    assert (result.text, result.removed_tokens) == ("abcde", 5)


def test_truncate_across_segments(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 6, truncate_on_overflow=True)
    result = guard.check(["aaaa", "bbbb", "cccc"])
    assert (result.segments, result.removed_tokens) == (("", "bb", "cccc"), 6)
    right = ContextWindowGuard(chars, 6, truncate_on_overflow=True, truncation_side="right")
    mixed: list[str | list[int]] = ["aaaa", "bbbb", [1, 2, 3, 4]]
    assert right.check(mixed).segments == ("aaaa", "bb", ())


def test_truncated_text_retokenizes_within_budget(hf_bytelevel: HFTokenizer) -> None:
    text = "never truncate silently; say how many tokens were removed " * 5
    total = len(hf_bytelevel.encode(text))
    result = ContextWindowGuard(hf_bytelevel, 30, truncate_on_overflow=True).check(text, max_output_tokens=10)
    assert len(hf_bytelevel.encode(result.text)) == result.input_tokens <= 20
    assert result.removed_tokens == total - result.input_tokens
    assert text.endswith(result.text)


def test_truncation_does_not_apply_when_output_alone_overflows(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 8, truncate_on_overflow=True, max_chars_per_token=None)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("abc", max_output_tokens=8)
    assert info.value.message == overflow(3, 8, 8)


def test_truncation_can_be_refused_per_call(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, 8, truncate_on_overflow=True)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("abcdefghij", max_output_tokens=3, allow_truncation=False)
    assert info.value.message == overflow(10, 3, 8, at_least=True)


@pytest.mark.parametrize("bad", [-1, True, "5", 2.5])
def test_bad_output_budget_is_an_invalid_request(chars: CallableTokenizer, bad: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ContextWindowGuard(chars, 8).check("a", max_output_tokens=bad)
    assert info.value.message == f"max_tokens must be a non-negative integer, got {bad!r}"
    assert info.value.code == "E5010"


def test_a_failing_tokenizer_becomes_a_coded_error() -> None:
    def explode(text: str) -> list[int]:
        raise RuntimeError("boom")

    with pytest.raises(InputDecodeError) as info:
        ContextWindowGuard(CallableTokenizer(explode), 8).check("a")
    assert info.value.message == "the tokenizer could not encode the input (RuntimeError): send well-formed text"


def test_a_failing_decode_during_truncation_becomes_a_rejection() -> None:
    def decode(ids: Sequence[int]) -> str:
        raise KeyError(ids[0])

    tokenizer = CallableTokenizer(lambda text: [ord(c) for c in text], decode=decode)
    guard = ContextWindowGuard(tokenizer, 4, truncate_on_overflow=True)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("abcdef", max_output_tokens=1)
    assert info.value.message == (
        "the input does not fit the context window of 4 tokens with 1 output tokens requested, and truncating it "
        "failed: the tokenizer could not decode the kept tokens (KeyError): shorten the input"
    )


def test_a_limits_value_is_taken_as_constant_limits(chars: CallableTokenizer) -> None:
    # Limits is what StaticLimits and ConfigLimits hand out: passing one directly is asking for those limits.
    guard = ContextWindowGuard(chars, Limits(4, truncate_on_overflow=True, truncation_side="right"))
    result = guard.check("abcdef", max_output_tokens=1)
    assert (result.text, result.removed_tokens) == ("abc", 3)
    with pytest.raises(ContextWindowExceededError):
        ContextWindowGuard(chars, Limits(4)).check("abcdef", max_output_tokens=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context_window": 0}, "context_window must be at least 1 token, got 0"),
        ({"context_window": 8, "truncation_side": "middle"}, "truncation_side must be 'left' or 'right', got 'middle'"),
        ({"context_window": 8, "max_chars_per_token": 0}, "max_chars_per_token must be at least 1 or None, got 0"),
        ({"context_window": 8, "default_output_tokens": -1}, "default_output_tokens must not be negative, got -1"),
        # A window read from an environment variable or a float in a settings file: refused here, not by an
        # AttributeError on every request.
        (
            {"context_window": "8192"},
            "context_window must be a whole number of tokens, a Limits, or a limits source (StaticLimits, "
            "ConfigLimits), "
            "got '8192'",
        ),
        (
            {"context_window": 8192.0},
            "context_window must be a whole number of tokens, a Limits, or a limits source (StaticLimits, "
            "ConfigLimits), "
            "got 8192.0",
        ),
        (
            {"context_window": Limits(8), "truncation_side": "right"},
            "truncate_on_overflow and truncation_side come from the limits source when one is given: set them there",
        ),
        (
            {"context_window": StaticLimits(Limits(8)), "truncate_on_overflow": True},
            "truncate_on_overflow and truncation_side come from the limits source when one is given: set them there",
        ),
    ],
)
def test_constructor_errors(chars: CallableTokenizer, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as info:
        ContextWindowGuard(chars, **kwargs)
    assert info.value.message == message


class Index:
    """An integer type that is not int, as numpy.int64 is (a window read from a model's config with numpy)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_an_integer_of_another_type_is_taken_as_its_int(chars: CallableTokenizer) -> None:
    guard = ContextWindowGuard(chars, Index(8))  # type: ignore[arg-type]
    assert guard.limits == Limits(8)
    with pytest.raises(UsageError, match="context_window must be at least 1 token, got 0"):
        ContextWindowGuard(chars, Index(0))  # type: ignore[arg-type]


class DictConfig:
    """The ConfigClient read API over a dict (a unit-test stand-in; integration tests use the real client)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def test_config_limits_take_effect_on_the_next_request(chars: CallableTokenizer) -> None:
    config = DictConfig()
    limits = ConfigLimits(config, prefix="models/llm/", defaults=Limits(10))
    guard = ContextWindowGuard(chars, limits, max_chars_per_token=None)
    assert guard.check("abcdefgh").input_tokens == 8
    config.values["models/llm/context_window"] = 5
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check("abcdefgh")
    assert info.value.message == overflow(8, 0, 5, asked=False)
    config.values["models/llm/truncate_on_overflow"] = "true"
    config.values["models/llm/truncation_side"] = "right"
    assert guard.check("abcdefgh").text == "abcde"
    config.values.clear()
    assert guard.limits == Limits(10)


@pytest.mark.parametrize(("prefix", "key"), [("/models/llm/", "/models/llm/context_window"), ("/", "/context_window")])
def test_a_prefix_with_a_leading_slash_is_refused_instead_of_serving_the_defaults_for_ever(
    prefix: str, key: str
) -> None:
    # Config keys are relative to the client's root and never start with '/': before, such a prefix matched no
    # key, and the defaults stayed in force whatever ZooKeeper said, without a word.
    with pytest.raises(UsageError) as info:
        ConfigLimits(DictConfig(), prefix=prefix, defaults=Limits(10))
    assert info.value.message == (
        f"ConfigLimits reads keys relative to the config client's root, which never start with '/', but prefix "
        f"{prefix!r} gives {key!r}: drop the leading '/' (and the root, which the client adds)"
    )


@pytest.mark.parametrize("name", ["context_window_key", "truncate_on_overflow_key", "truncation_side_key"])
def test_a_key_name_with_a_leading_slash_is_refused_at_construction(name: str) -> None:
    # Only the first key was checked: a later one was read as given, for ever (ConfigClient.get() now refuses it,
    # which failed every request instead of the construction).
    with pytest.raises(UsageError) as info:
        ConfigLimits(DictConfig(), defaults=Limits(10), **{name: "/side"})
    assert info.value.message == (
        f"ConfigLimits reads keys relative to the config client's root, which never start with '/', but "
        f"{name}='/side' gives '/side': drop the leading '/' (and the root, which the client adds)"
    )


def test_an_absent_key_is_said_once_per_absence_so_a_misnamed_one_is_not_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = DictConfig()
    config.values["models/llm/context_window"] = 64
    limits = ConfigLimits(config, prefix="models/llm", defaults=Limits(10))  # no '/': reads models/llmcontext_window
    with caplog.at_level(logging.INFO, logger="autoglm_runtime.validation"):
        assert limits.current() == Limits(10)
        assert limits.current() == Limits(10)
        config.values["models/llmtruncation_side"] = "right"
        assert limits.current() == Limits(10, truncation_side="right")
        del config.values["models/llmtruncation_side"]
        assert limits.current() == Limits(10)
    assert [r.getMessage() for r in caplog.records] == [
        # models/llm/context_window exists: the missing '/' is named (a WARNING; tests/validation/test_limits.py)
        "config key 'models/llmcontext_window' does not exist, but 'models/llm/context_window' does: end the "
        "ConfigLimits prefix with '/' (keys are the prefix and the name joined as they are); the default "
        "context_window=10 is in force",
        "config key 'models/llmtruncate_on_overflow' does not exist; the default truncate_on_overflow=False is in "
        "force",
        "config key 'models/llmtruncation_side' does not exist; the default truncation_side='left' is in force",
        "config key 'models/llmtruncation_side' does not exist; the default truncation_side='left' is in force",
    ]


def test_a_key_holding_null_is_not_said_not_to_exist(caplog: pytest.LogCaptureFixture) -> None:
    # An empty znode (or `config set KEY null`) reads as None, as an absent key does: the log said it did not exist,
    # sending the operator to look for a typo in a key that is there.
    config = DictConfig()
    config.values["models/llm/context_window"] = None
    limits = ConfigLimits(config, prefix="models/llm/", defaults=Limits(10), truncate_on_overflow_key="t")
    with caplog.at_level(logging.INFO, logger="autoglm_runtime.validation"):
        assert limits.current() == Limits(10)
    assert [r.getMessage() for r in caplog.records][:2] == [
        "config key 'models/llm/context_window' holds null (empty); the default context_window=10 is in force",
        "config key 'models/llm/t' does not exist; the default truncate_on_overflow=False is in force",
    ]


def test_invalid_config_value_keeps_last_good_and_logs_once(
    chars: CallableTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    config = DictConfig()
    config.values["context_window"] = "4096"
    limits = ConfigLimits(config, defaults=Limits(10))
    assert limits.current() == Limits(4096)
    config.values["context_window"] = "secret-looking value"
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.validation"):
        assert limits.current() == Limits(4096)
        config.values["truncate_on_overflow"] = 3
        assert limits.current() == Limits(4096)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "the value of config key 'context_window' is not a valid limit (expected a whole number of tokens); "
        "the last good value stays in force",
        "the value of config key 'truncate_on_overflow' is not a valid limit (expected true or false); "
        "the last good value stays in force",
    ]
    assert all(r.error_code == "E0409" for r in caplog.records)  # type: ignore[attr-defined]
    assert "secret-looking" not in caplog.text
    config.values["context_window"] = 0
    assert limits.current().context_window == 4096
    assert limits.keys == ("context_window", "truncate_on_overflow", "truncation_side")


ALPHABET = st.sampled_from([*list("abcdefgh "), "ü", "漢", "🙂", "\n", ".", "hello", " world"])


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(ALPHABET, max_size=400),
    window=st.integers(1, 120),
    output=st.integers(0, 40),
    chunk=st.integers(4, 64),
)
def test_verdicts_are_sound(
    hf_bytelevel: HFTokenizer, tiny_tiktoken: TiktokenTokenizer, pieces: list[str], window: int, output: int, chunk: int
) -> None:
    """Whatever the pre-check and early exit decide, accepted counts are exact and rejections are true.

    Without a bound (``None``) long text goes through chunked counting, with chunks as small as the patch makes them.
    """
    text = "".join(pieces)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(counting, "_MIN_CHUNK_CHARS", chunk)
        toks: tuple[Tokenizer, ...] = (hf_bytelevel, tiny_tiktoken)
        bounds: tuple[Literal["auto"] | None, ...] = ("auto", None)
        for tok, bound in itertools.product(toks, bounds):
            true_count = len(tok.encode(text))
            guard = ContextWindowGuard(tok, window, max_chars_per_token=bound)
            try:
                result = guard.check(text, max_output_tokens=output)
            except ContextWindowExceededError as exc:
                rejection: ContextWindowExceededError | None = exc
            else:
                rejection = None
            if rejection is not None:
                assert true_count + output > window
                message = rejection.message
                if "on its own" in message:
                    assert output > window
                    continue
                claimed = int(message.split("tokens (")[1].removeprefix("at least ").split(" ")[0])
                assert claimed <= true_count if "at least" in message else claimed == true_count
            else:
                assert result.input_tokens == true_count
                assert true_count + output <= window


def test_precheck_lets_borderline_input_through_to_exact_counting() -> None:
    tok = RecordingTokenizer(max_token_chars=4)
    with pytest.raises(ContextWindowExceededError) as info:
        ContextWindowGuard(tok, 100).check("x" * 360, max_output_tokens=10)
    # 360 characters could be 90 tokens, so the pre-check cannot reject; exact counting does.
    assert info.value.message == overflow(360, 10, 100)
    assert tok.encoded_chars == 360


@pytest.mark.parametrize("truncate", [False, True])
def test_an_output_budget_over_the_window_is_rejected_with_no_input(chars: CallableTokenizer, truncate: bool) -> None:
    guard = ContextWindowGuard(chars, 10, truncate_on_overflow=truncate)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.check([], max_output_tokens=11)
    assert info.value.message == (
        "This model's maximum context length is 10 tokens. However, max_tokens asks for 11 output tokens, more than "
        "the context window of 10 tokens on its own: lower max_tokens to at most 10 minus the input's tokens"
    )
    assert info.value.param == "max_tokens"
    assert guard.check([], max_output_tokens=10).input_tokens == 0
