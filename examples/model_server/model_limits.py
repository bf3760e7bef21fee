"""Each model's limits, read live from the config at every request: ``limits/<model>/...``.

``context_window``, ``truncate_on_overflow`` and ``truncation_side`` (``left``, the default, removes the start
of an overlong input, ``right`` its end) are the guard's, read through the SDK's :class:`ConfigLimits`;
``max_output_tokens`` caps the ``max_tokens`` a request may ask of the model; ``tokens_per_second`` paces
streamed responses (at most that many tokens a second per stream; ``0``, the default, sends each token as soon
as the model writes it). A value that is not valid is logged once as E0409 (with the key, never the value) and
the last good value stays; :meth:`ModelLimits.rejected` names the keys refused now, with why (``/health`` shows
them as ``rejected_limits``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation import ConfigLimits, ConfigReader, Limits

log = logging.getLogger("examples.model_server")

LIMITS_PREFIX = "limits/"
DEFAULT_LIMITS = Limits(context_window=64, truncate_on_overflow=False)
DEFAULT_MAX_OUTPUT_TOKENS = 32
DEFAULT_TOKENS_PER_SECOND = 0.0


def limits_prefix(model: str) -> str:
    """Where a model's limits live in the config: ``limits/<model>/``."""
    return f"{LIMITS_PREFIX}{model}/"


@dataclass(frozen=True)
class Reading:
    """One model's limits for one request."""

    guard: Limits
    max_output_tokens: int
    tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND

    def as_dict(self) -> dict[str, Any]:
        return {
            "context_window": self.guard.context_window,
            "truncate_on_overflow": self.guard.truncate_on_overflow,
            "truncation_side": self.guard.truncation_side,
            "max_output_tokens": self.max_output_tokens,
            "tokens_per_second": self.tokens_per_second,
        }


#: What each setting's value must be, as the E0409 warning says it.
_EXPECTED = {
    "output cap": "a whole number of tokens, at least 1",
    "stream pace": "a number of tokens per second, 0 or more; 0 turns pacing off",
}


def _cap(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) >= 1 else None


def _rate(text: str) -> float | None:
    try:
        rate = float(text)
    except ValueError:
        return None
    return rate if math.isfinite(rate) and rate >= 0 else None


class ModelLimits:
    """The live limits of one model: :attr:`guard` for its context-window guard, :meth:`current` for all."""

    def __init__(self, config: ConfigReader, model: str) -> None:
        self.model = model
        self.guard = ConfigLimits(config, prefix=limits_prefix(model), defaults=DEFAULT_LIMITS)
        self.cap_key = f"{limits_prefix(model)}max_output_tokens"
        self.rate_key = f"{limits_prefix(model)}tokens_per_second"
        self._config = config
        self._defaults: dict[str, Any] = {
            self.cap_key: DEFAULT_MAX_OUTPUT_TOKENS,
            self.rate_key: DEFAULT_TOKENS_PER_SECOND,
        }
        self._good = dict(self._defaults)
        self._reported: set[tuple[str, str]] = set()
        self._rejected: dict[str, str] = {}  # key -> why its value is refused, as of its last reading

    def current(self) -> Reading:
        return Reading(self.guard.current(), self._read(self.cap_key, _cap, "output cap"), self.tokens_per_second())

    def rejected(self) -> dict[str, str]:
        """The config keys of this model whose value is refused now, each with why (never the value): the last
        good value is in force for them. Read afresh: call it after :meth:`current`, as ``/health`` does."""
        why = {key: f"not a valid limit ({reason})" for key, reason in self.guard.rejected().items()}
        return dict(sorted({**why, **self._rejected}.items()))

    def refuse_over_cap(self, max_tokens: int) -> None:
        """Raise :class:`InvalidRequestError` (E5010) when ``max_tokens`` asks for more than the output cap."""
        cap = self._read(self.cap_key, _cap, "output cap")
        if max_tokens > cap:
            raise InvalidRequestError(
                f"max_tokens {max_tokens} is more than the output cap of {cap} tokens of model {self.model} "
                f"(config key {self.cap_key}): lower max_tokens",
                param="max_tokens",
            )

    def tokens_per_second(self) -> float:
        """The pace of this model's streams now (``0``: unpaced); read at every token of a paced stream."""
        return float(self._read(self.rate_key, _rate, "stream pace"))

    def _read(self, key: str, parse: Callable[[str], Any | None], what: str) -> Any:
        raw = self._config.get(key, None)
        if raw is None:
            self._rejected.pop(key, None)
            return self._defaults[key]
        text = str(raw).strip()
        value = None if isinstance(raw, bool) else parse(text)
        if value is None:
            self._rejected[key] = f"not a valid {what} (expected {_EXPECTED[what]})"
            if (key, text) not in self._reported:
                self._reported.add((key, text))
                log.warning(
                    "the value of config key %r is not a valid %s (expected %s); the last good value stays in force",
                    key,
                    what,
                    _EXPECTED[what],
                    extra={"error_code": "E0409", "key": key},
                )
            return self._good[key]
        self._rejected.pop(key, None)
        self._good[key] = value
        return value
