"""conflictlib 2.0: an incompatible release (``shorten`` now takes a ``unit`` and counts characters)."""

__version__ = "2.0"


def shorten(text: str, limit: int, *, unit: str) -> str:
    """Keep the first ``limit`` characters (``unit="chars"``) or words (``unit="words"``)."""
    if unit == "chars":
        return text[:limit]
    if unit == "words":
        return " ".join(text.split()[:limit])
    raise ValueError(f"unit must be 'chars' or 'words', got {unit!r}")
