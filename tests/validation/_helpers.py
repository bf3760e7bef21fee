"""Helpers shared by the validation tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from autoglm_runtime.validation import CallableTokenizer, DecodeGuard, GuardInput, GuardResult, OpenAIExtractor


def char_tok(*, max_token_chars: int | None = None) -> CallableTokenizer:
    """One token per character: token counts equal character counts, which keeps expected numbers obvious.

    ``max_token_chars=1`` lets the guard's character pre-check use the bound; ``None`` leaves it to counting.
    """
    return CallableTokenizer(
        lambda t: [ord(c) for c in t], decode=lambda ids: "".join(map(chr, ids)), max_token_chars=max_token_chars
    )


def extract(request: bytes) -> GuardInput:
    """A gRPC extractor for OpenAI-style JSON request bytes."""
    # A gRPC message has no HTTP completions default: only the budget it sends counts.
    extracted = OpenAIExtractor(prompt_max_tokens=None).extract(DecodeGuard().check_json(request))
    return GuardInput(extracted.segments, extracted.max_output_tokens, extracted.param)


def rewrite(request: bytes, result: GuardResult) -> bytes:
    """A gRPC rewriter putting the guard's truncated prompt back into the request."""
    return json.dumps({**json.loads(request), "prompt": result.text}).encode()


SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]"]


def write_chat_model(directory: Path, template: Any) -> Path:
    """A model directory with a byte-level BPE tokenizer.json (BOS added) and a tokenizer_config.json holding
    ``template`` as its chat template, the way models ship them; nothing is downloaded."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["hello world, the quick brown fox, one two three"] * 30, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "chat_template": template,
        "bos_token": "<s>",
        # Older configs spell a token as a serialized AddedToken.
        "eos_token": {
            "__type": "AddedToken",
            "content": "</s>",
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        },
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


class Gate:
    """A character tokenizer that holds long inputs until released, so a test can fill the guard pool."""

    max_token_chars = None

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode(self, text: str) -> list[int]:
        if len(text) > 10_000:
            self.entered.set()
            assert self.release.wait(30)
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(map(chr, ids))
