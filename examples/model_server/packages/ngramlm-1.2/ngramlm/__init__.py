"""ngramlm 1.2: a small n-gram language model on numpy, trained on a text when it is built.

The example's two models use it, each in its own environment: one with numpy 1.26, one with numpy 2. It runs
in the model worker, so it imports numpy and the standard library only. Counts are kept per context as numpy
arrays; generation backs off to shorter contexts (down to single tokens) where a context was never seen, and
samples with ``temperature`` (``0``: the most frequent next token) from a seeded ``numpy.random.Generator``.
:class:`Served` is the model a server loads: it says on stdout when each request starts and how it ended (1.1).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np

__version__ = "1.2"

#: The token that ends a line of the training text: generating it ends the completion ("stop").
END = "\n"
_WORDS = re.compile(r"\w+|[^\w\s]")
_ATTACHED = frozenset(".,;:!?)'\"")


class NGramLM:
    """An n-gram model of ``unit`` tokens ("word" or "char") over ``text``, counting contexts of up to
    ``order - 1`` tokens."""

    def __init__(self, text: str, *, unit: str = "word", order: int = 3) -> None:
        if unit not in ("word", "char"):
            raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        self.unit = unit
        self.order = order
        lines = [self.tokens(line) for line in text.splitlines() if line.strip()]
        self.vocabulary: list[str] = sorted({token for line in lines for token in line} | {END})
        index = {token: number for number, token in enumerate(self.vocabulary)}
        counts: dict[tuple[int, ...], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for line in lines:
            ids = [index[token] for token in line] + [index[END]]
            for position, token in enumerate(ids):
                for size in range(order):
                    if position - size < 0:
                        break
                    counts[tuple(ids[position - size : position])][token] += 1
        # One (next token ids, counts) pair of arrays per context seen.
        self._table = {
            context: (np.array(list(nexts), dtype=np.int64), np.array(list(nexts.values()), dtype=np.float64))
            for context, nexts in counts.items()
        }
        self._index = index
        self.trained_tokens = sum(len(line) + 1 for line in lines)

    def tokens(self, text: str) -> list[str]:
        """``text`` split into this model's tokens (words and punctuation, or characters)."""
        return list(text) if self.unit == "char" else _WORDS.findall(text)

    def info(self) -> dict[str, Any]:
        """What the model is: its unit, order, vocabulary size, and the numpy it runs on."""
        return {
            "unit": self.unit,
            "order": self.order,
            "vocabulary": len(self.vocabulary),
            "trained_tokens": self.trained_tokens,
            "numpy": np.__version__,
        }

    def generate(
        self, prompt: str, max_tokens: int = 16, *, temperature: float = 1.0, seed: int | None = None
    ) -> Iterator[str]:
        """Yield up to ``max_tokens`` tokens continuing ``prompt``, each as the text it adds; stops early at the
        end of a line (the model's stop token)."""
        rng = np.random.default_rng(seed)
        context = [self._index[token] for token in self.tokens(prompt) if token in self._index]
        end = self._index[END]
        for _ in range(max_tokens):
            nexts, weights = self._distribution(context)
            if temperature <= 0:
                chosen = int(nexts[int(np.argmax(weights))])
            else:
                # counts ** (1 / temperature), divided by the largest's: in logs, so a tiny temperature cannot
                # overflow to inf (1.2)
                scaled = np.exp((np.log(weights) - np.log(weights.max())) / temperature)
                chosen = int(rng.choice(nexts, p=scaled / scaled.sum()))
            if chosen == end:
                return
            context.append(chosen)
            yield self._text(self.vocabulary[chosen])

    def complete(
        self, prompt: str, max_tokens: int = 16, *, temperature: float = 1.0, seed: int | None = None
    ) -> dict[str, Any]:
        """The whole completion at once: ``{"text", "tokens", "finish_reason"}`` ("length" when ``max_tokens``
        tokens were generated, else "stop")."""
        tokens = list(self.generate(prompt, max_tokens, temperature=temperature, seed=seed))
        return {
            "text": "".join(tokens),
            "tokens": tokens,
            "finish_reason": "length" if len(tokens) == max_tokens else "stop",
        }

    def _distribution(self, context: list[int]) -> tuple[Any, Any]:
        for size in range(min(self.order - 1, len(context)), -1, -1):
            found = self._table.get(tuple(context[len(context) - size :]))
            if found is not None:
                return found
        raise AssertionError("the empty context is always counted")  # pragma: no cover

    def _text(self, token: str) -> str:
        if self.unit == "char" or token in _ATTACHED:
            return token
        return f" {token}"


class Served:
    """An :class:`NGramLM` answering a server's requests, each named by the ``request_id`` the server gives.

    Every request says on stdout when it starts and how it ended, as inference servers log their requests:
    ``request <id> finished: 8 tokens (length)``, or ``request <id> aborted after 3 tokens: the stream was
    closed before the end`` when the consumer closed :meth:`generate`'s generator early (a client that went
    away). A model worker forwards these lines into the server's log, tagged with the model's name.
    """

    def __init__(self, lm: NGramLM) -> None:
        self.lm = lm

    def info(self) -> dict[str, Any]:
        """:meth:`NGramLM.info`."""
        return self.lm.info()

    def generate(
        self,
        prompt: str,
        max_tokens: int = 16,
        *,
        temperature: float = 1.0,
        seed: int | None = None,
        request_id: str = "-",
    ) -> Iterator[str]:
        """:meth:`NGramLM.generate`, reporting the request's start and end."""
        _say(f"request {request_id} started: up to {max_tokens} tokens")
        count = 0
        try:
            for token in self.lm.generate(prompt, max_tokens, temperature=temperature, seed=seed):
                count += 1
                yield token
        except GeneratorExit:
            _say(f"request {request_id} aborted after {count} tokens: the stream was closed before the end")
            raise
        except BaseException as exc:
            _say(f"request {request_id} failed after {count} tokens: {type(exc).__name__}: {exc}")
            raise
        _say(f"request {request_id} finished: {count} tokens ({'length' if count == max_tokens else 'stop'})")

    def complete(
        self,
        prompt: str,
        max_tokens: int = 16,
        *,
        temperature: float = 1.0,
        seed: int | None = None,
        request_id: str = "-",
    ) -> dict[str, Any]:
        """:meth:`NGramLM.complete` (``{"text", "tokens", "finish_reason"}``), reporting the request's start and end."""
        tokens = list(self.generate(prompt, max_tokens, temperature=temperature, seed=seed, request_id=request_id))
        return {
            "text": "".join(tokens),
            "tokens": tokens,
            "finish_reason": "length" if len(tokens) == max_tokens else "stop",
        }


def _say(line: str) -> None:
    # Flushed at once: the worker's stdout is a pipe, and a line held in a buffer would reach the log late.
    print(line, file=sys.stdout, flush=True)
