"""A toy model built on conflictlib 2.0 (whose shorten() is incompatible with 1.0's)."""

import conflictlib


class Summarizer:
    def complete(self, prompt: str, max_tokens: int = 16) -> dict:
        return {
            "text": conflictlib.shorten(prompt, max_tokens * 4, unit="chars"),
            "conflictlib": conflictlib.__version__,
        }


def load() -> Summarizer:
    return Summarizer()
