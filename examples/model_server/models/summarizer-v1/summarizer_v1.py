"""A toy model built on conflictlib 1.0: it 'completes' a prompt by echoing its first words."""

import conflictlib


class Summarizer:
    def complete(self, prompt: str, max_tokens: int = 16) -> dict:
        return {
            "text": conflictlib.shorten(prompt, max_tokens),
            "conflictlib": conflictlib.__version__,
        }


def load() -> Summarizer:
    return Summarizer()
