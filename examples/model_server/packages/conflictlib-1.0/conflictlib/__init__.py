"""conflictlib 1.0: the API model summarizer-v1 was written against (``shorten(text, n)`` keeps words)."""

__version__ = "1.0"


def shorten(text: str, limit: int) -> str:
    """Keep the first ``limit`` words."""
    return " ".join(text.split()[:limit])
