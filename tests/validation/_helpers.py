"""Helpers shared by the validation tests."""

from __future__ import annotations

import json

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
    extracted = OpenAIExtractor().extract(DecodeGuard().check_json(request))
    return GuardInput(extracted.segments, extracted.max_output_tokens, extracted.param)


def rewrite(request: bytes, result: GuardResult) -> bytes:
    """A gRPC rewriter putting the guard's truncated prompt back into the request."""
    return json.dumps({**json.loads(request), "prompt": result.text}).encode()
