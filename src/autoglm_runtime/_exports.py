"""Public names that live in private modules say the package they are exported from.

A class defined in ``validation/_openai.py`` and exported by ``autoglm_runtime.validation`` should print,
pickle-describe and appear in tracebacks and docs as ``autoglm_runtime.validation.OpenAIExtractor``, not under
a module users must not import (httpx does the same for every exported name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def publish(package: str, namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Set ``__module__`` to ``package`` for each of ``names`` defined in a private module below it."""
    for name in names:
        obj = namespace[name]
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith(package + "."):
            continue
        if any(part.startswith("_") for part in module[len(package) + 1 :].split(".")):
            try:
                obj.__module__ = package
            except (AttributeError, TypeError):  # pragma: no cover - a value whose module cannot be set
                continue
