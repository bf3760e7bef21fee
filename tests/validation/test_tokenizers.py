"""The tokenizer adapters: one contract suite for every adapter, plus each adapter's own promises."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RawTokenizer

from autoglm_runtime.errors import UsageError
from autoglm_runtime.validation import CallableTokenizer, HFTokenizer, TiktokenTokenizer, Tokenizer
from autoglm_runtime.validation.tokenizers import load_tiktoken_ranks

ADAPTERS = ["hf_wordlevel", "hf_bytelevel", "tiny_tiktoken", "chars"]


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> Tokenizer:
    tok: Tokenizer = request.getfixturevalue(request.param)
    return tok


class TestContract:
    """Every adapter: a Tokenizer, ints out, deterministic, and decode inverts encode on plain text."""

    def test_is_a_tokenizer(self, adapter: Tokenizer) -> None:
        assert isinstance(adapter, Tokenizer)

    def test_encode_gives_ints_deterministically(self, adapter: Tokenizer) -> None:
        ids = adapter.encode("hello world the quick brown fox")
        assert ids
        assert all(type(i) is int for i in ids)
        assert adapter.encode("hello world the quick brown fox") == ids

    def test_decode_inverts_encode(self, adapter: Tokenizer) -> None:
        text = "hello world the quick brown fox"
        assert adapter.decode(adapter.encode(text)) == text

    def test_bound_is_sound_when_given(self, adapter: Tokenizer) -> None:
        bound = adapter.max_token_chars
        if bound is None:
            return
        for text in ["hello world", "x" * 300, "ünïcödé 漢字 🙂 " * 10, " " * 200]:
            assert len(text) <= bound * len(adapter.encode(text))


def test_hf_max_token_chars_is_the_longest_byte_level_entry(hf_bytelevel: HFTokenizer, tokenizer_dir: Path) -> None:
    raw = RawTokenizer.from_file(str(tokenizer_dir / "bytelevel.json"))
    assert hf_bytelevel.max_token_chars == max(len(token) for token in raw.get_vocab())


def test_hf_wordlevel_has_no_sound_bound(hf_wordlevel: HFTokenizer) -> None:
    # One [UNK] can stand for a word of any length, and whitespace is dropped: no per-token character bound.
    assert hf_wordlevel.max_token_chars is None
    assert len(hf_wordlevel.encode("x" * 5000)) == 1


def test_tiktoken_bound_is_the_longest_token(tiny_tiktoken: TiktokenTokenizer) -> None:
    assert tiny_tiktoken.max_token_chars == len(b" world")
    assert tiny_tiktoken.encode("hello world") == [259, 264]


def test_tiktoken_counts_special_token_text_as_text(tokenizer_dir: Path) -> None:
    tok = TiktokenTokenizer.from_file(
        tokenizer_dir / "tiny.tiktoken", pat_str=r"\S+|\s+", special_tokens={"<|end|>": 1000}
    )
    assert 1000 not in tok.encode("a <|end|> b")
    assert len(tok.encode("a <|end|> b")) == len("a <|end|> b")


def test_hf_adapter_never_changes_a_shared_tokenizers_truncation(tokenizer_dir: Path) -> None:
    shared = RawTokenizer.from_file(str(tokenizer_dir / "wordlevel.json"))
    shared.enable_truncation(max_length=3)
    adapter = HFTokenizer(shared)
    text = "the quick brown fox jumps over the lazy dog"
    assert len(adapter.encode(text)) == 9
    assert shared.truncation is not None
    assert shared.truncation["max_length"] == 3
    assert len(shared.encode(text).ids) == 3


def test_hf_from_file_missing(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        HFTokenizer.from_file(tmp_path / "nope.json")
    assert info.value.message.startswith(f"cannot load the tokenizer file {str(tmp_path / 'nope.json')!r}: ")


def test_hf_from_file_takes_a_model_directory_holding_tokenizer_json(tokenizer_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer.json").write_bytes((tokenizer_dir / "bytelevel.json").read_bytes())
    text = "hello world, ünïcödé"
    from_directory = HFTokenizer.from_file(model)
    assert from_directory.encode(text) == HFTokenizer.from_file(model / "tokenizer.json").encode(text)
    assert from_directory.encode(text) == RawTokenizer.from_file(str(tokenizer_dir / "bytelevel.json")).encode(text).ids
    assert from_directory.max_token_chars == HFTokenizer.from_file(tokenizer_dir / "bytelevel.json").max_token_chars
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError) as info:
        HFTokenizer.from_file(tmp_path / "empty")
    assert str(info.value) == (
        f"E0001: the directory {str(tmp_path / 'empty')!r} holds no tokenizer.json: give the model's tokenizer.json, "
        "or the directory holding it"
    )


def test_ranks_file_with_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(base64.b64encode(b"a") + b" 0\nnot-base64!! 1\n")
    with pytest.raises(UsageError) as info:
        load_tiktoken_ranks(path)
    assert info.value.message.startswith(
        f"line 2 of the tiktoken ranks file {str(path)!r} is not 'base64-token rank': "
    )


def test_empty_ranks_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.tiktoken"
    path.write_bytes(b"\n")
    with pytest.raises(UsageError) as info:
        load_tiktoken_ranks(path)
    assert info.value.message == f"the tiktoken ranks file {str(path)!r} holds no tokens"


def test_callable_without_decode_cannot_truncate() -> None:
    tok = CallableTokenizer(lambda text: [1] * len(text))
    assert tok.encode("abc") == [1, 1, 1]
    assert tok.max_token_chars is None
    with pytest.raises(UsageError) as info:
        tok.decode([1])
    assert info.value.message == "this CallableTokenizer has no decode function, so it cannot produce truncated text"


def test_callable_rejects_a_zero_bound() -> None:
    with pytest.raises(UsageError) as info:
        CallableTokenizer(list, max_token_chars=0)  # type: ignore[arg-type]
    assert info.value.message == "max_token_chars must be at least 1 or None, got 0"
