"""Small tokenizers built on the spot from in-memory corpora: nothing is downloaded."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from tests.validation._helpers import char_tok
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from autoglm_runtime.validation import CallableTokenizer, HFTokenizer, TiktokenTokenizer

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello tokenizer, hello guard",
    "a context window holds input tokens and output tokens",
    "never truncate silently; say how many tokens were removed",
] * 20

TIKTOKEN_PATTERN = r"""'s|'t| ?\w+| ?[^\s\w]+|\s+(?!\S)|\s+"""
TIKTOKEN_MERGES = [b"he", b"ll", b"llo", b"hello", b" w", b"or", b" wor", b"ld", b" world"]


def _train_wordlevel(path: Path) -> None:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["[UNK]"], show_progress=False))
    tok.save(str(path))


def _train_bytelevel(path: Path) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path))


def write_ranks(path: Path) -> None:
    """A tiktoken ranks file: every single byte, then a few merges that spell "hello" and " world"."""
    ranks = [bytes([i]) for i in range(256)] + TIKTOKEN_MERGES
    path.write_bytes(b"".join(base64.b64encode(token) + b" %d\n" % rank for rank, token in enumerate(ranks)))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizers")
    _train_wordlevel(directory / "wordlevel.json")
    _train_bytelevel(directory / "bytelevel.json")
    write_ranks(directory / "tiny.tiktoken")
    return directory


@pytest.fixture(scope="session")
def hf_wordlevel(tokenizer_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizer_dir / "wordlevel.json")


@pytest.fixture(scope="session")
def hf_bytelevel(tokenizer_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizer_dir / "bytelevel.json")


@pytest.fixture(scope="session")
def tiny_tiktoken(tokenizer_dir: Path) -> TiktokenTokenizer:
    return TiktokenTokenizer.from_file(tokenizer_dir / "tiny.tiktoken", pat_str=TIKTOKEN_PATTERN)


@pytest.fixture
def chars() -> CallableTokenizer:
    return char_tok(max_token_chars=1)
