"""Validation benchmark: guard overhead on 8k-token prompts, and rejecting a 10 MB prompt.

Run: .venv/bin/python benchmarks/validation.py

Everything is measured against a peer in the same run, on a byte-level BPE tokenizer trained here on a synthetic
corpus (nothing is downloaded):

* overhead: ContextWindowGuard.check on an ~8k-token prompt vs the bare tokenizer encoding the same prompt
  (target: guard <= 1.05x the bare tokenizer);
* 10 MB: time for the guard to reject a 10 MB prompt vs tokenizing it whole (target: >= 100x faster), both with
  the character pre-check (sound bound known) and with only chunked early-exit counting (bound unknown).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from autoglm_runtime.errors import ContextWindowExceededError
from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer

ROUNDS = 41


def build_tokenizer(rng: random.Random) -> tuple[Tokenizer, list[str]]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [
        12,
        9,
        8,
        7.5,
        7,
        6.7,
        6.3,
        6,
        5.9,
        4.2,
        4,
        2.8,
        2.7,
        2.4,
        2.3,
        2.2,
        2,
        1.9,
        1.5,
        1,
        0.8,
        0.2,
        0.2,
        0.1,
        0.1,
        0.1,
    ]
    words = ["".join(rng.choices(letters, weights, k=rng.randint(1, 10))) for _ in range(20_000)]
    corpus = [" ".join(rng.choices(words[:5000], k=60)) + "." for _ in range(4000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    return tok, words


def median_seconds(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(a: Callable[[], object], b: Callable[[], object], rounds: int = ROUNDS) -> tuple[float, float]:
    """Medians of a and b measured alternately, so drift on a shared machine hits both alike."""
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(rounds):
        for fn, bucket in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def rejects(guard: ContextWindowGuard, text: str) -> Callable[[], None]:
    def run() -> None:
        try:
            guard.check(text, max_output_tokens=512)
        except ContextWindowExceededError:
            return
        raise AssertionError("the guard accepted a 10 MB prompt")

    return run


def main() -> None:
    rng = random.Random(7)
    raw, words = build_tokenizer(rng)
    adapter = HFTokenizer(raw)
    prompt_words: list[str] = []
    text = ""
    while len(raw.encode(text).ids) < 8192:
        prompt_words.extend(rng.choices(words[:8000], k=500))
        text = " ".join(prompt_words)
    prompt = raw.decode(raw.encode(text).ids[:8192])
    tokens = len(adapter.encode(prompt))
    print(f"tokenizer: byte-level BPE, vocab {raw.get_vocab_size()}, max_token_chars {adapter.max_token_chars}")
    print(f"prompt: {len(prompt)} characters, {tokens} tokens")

    guard = ContextWindowGuard(adapter, 16_384)
    assert guard.check(prompt, max_output_tokens=512).input_tokens == tokens
    bare, guarded = interleaved(lambda: adapter.encode(prompt), lambda: guard.check(prompt, max_output_tokens=512))
    raw_encode = median_seconds(lambda: raw.encode(prompt).ids)
    print()
    print(f"overhead on an 8k-token prompt (median of {ROUNDS})")
    print(f"  bare tokenizer (adapter.encode)      {bare * 1e3:8.3f} ms")
    print(f"  raw tokenizers.Tokenizer.encode      {raw_encode * 1e3:8.3f} ms")
    print(f"  ContextWindowGuard.check              {guarded * 1e3:8.3f} ms")
    print(f"  ratio guard / bare tokenizer          {guarded / bare:8.3f}x   (target <= 1.05x)")
    print(f"  ratio guard / raw Tokenizer.encode    {guarded / raw_encode:8.3f}x   (the adapter skips offsets)")

    big = (prompt + " ") * (10_000_000 // (len(prompt) + 1) + 1)
    big = big[:10_000_000]
    window = 8192
    with_bound = ContextWindowGuard(adapter, window)
    without_bound = ContextWindowGuard(adapter, window, max_chars_per_token=None)
    reject_bound = median_seconds(rejects(with_bound, big), rounds=21)
    reject_chunked = median_seconds(rejects(without_bound, big), rounds=21)
    start = time.perf_counter()
    whole_tokens = len(adapter.encode(big))
    whole = time.perf_counter() - start
    print()
    print(f"rejecting a 10 MB prompt ({len(big)} characters, {whole_tokens} tokens; window {window})")
    print(f"  tokenize it whole                     {whole * 1e3:10.3f} ms")
    for label, seconds in (("character pre-check", reject_bound), ("chunked early exit only", reject_chunked)):
        print(f"  guard, {label:<30} {seconds * 1e3:10.3f} ms   {whole / seconds:12.0f}x faster")
    print("  (target: >= 100x faster than tokenizing whole)")


if __name__ == "__main__":
    main()
