"""Each model's limits, read live from the config at every request: ``limits/<model>/...``.

``context_window``, ``truncate_on_overflow`` (and ``truncation_side``) are the guard's, read through the SDK's
:class:`ConfigLimits`; ``max_output_tokens`` caps the ``max_tokens`` a request may ask of the model. A value
that is not valid is logged once as E0409 (with the key, never the value) and the last good value stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from autoglm_runtime.validation import ConfigLimits, ConfigReader, Limits

log = logging.getLogger("examples.model_server")

LIMITS_PREFIX = "limits/"
DEFAULT_LIMITS = Limits(context_window=64, truncate_on_overflow=False)
DEFAULT_MAX_OUTPUT_TOKENS = 32


def limits_prefix(model: str) -> str:
    """Where a model's limits live in the config: ``limits/<model>/``."""
    return f"{LIMITS_PREFIX}{model}/"


@dataclass(frozen=True)
class Reading:
    """One model's limits for one request."""

    guard: Limits
    max_output_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "context_window": self.guard.context_window,
            "truncate_on_overflow": self.guard.truncate_on_overflow,
            "max_output_tokens": self.max_output_tokens,
        }


class ModelLimits:
    """The live limits of one model: :attr:`guard` for its context-window guard, :meth:`current` for all."""

    def __init__(self, config: ConfigReader, model: str) -> None:
        self.model = model
        self.guard = ConfigLimits(config, prefix=limits_prefix(model), defaults=DEFAULT_LIMITS)
        self.cap_key = f"{limits_prefix(model)}max_output_tokens"
        self._config = config
        self._cap = DEFAULT_MAX_OUTPUT_TOKENS
        self._reported: set[str] = set()

    def current(self) -> Reading:
        return Reading(self.guard.current(), self._max_output_tokens())

    def _max_output_tokens(self) -> int:
        raw = self._config.get(self.cap_key, None)
        if raw is None:
            return DEFAULT_MAX_OUTPUT_TOKENS
        text = str(raw).strip()
        if isinstance(raw, bool) or not text.isdigit() or int(text) < 1:
            if text not in self._reported:
                self._reported.add(text)
                log.warning(
                    "the value of config key %r is not a valid output cap (expected a whole number of tokens, at "
                    "least 1); the last good value stays in force",
                    self.cap_key,
                    extra={"error_code": "E0409", "key": self.cap_key},
                )
            return self._cap
        self._cap = int(text)
        return self._cap
