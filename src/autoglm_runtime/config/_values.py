"""Turning raw data into cached values: decode, validate, then offer to the cache.

A codec error (any exception the codec raises) or a validator rejection keeps the last good value, logs
E0409 with the key and the reason (never the value), counts in ``health()["rejected"]`` and remembers
the refused version so the same bad data is not decoded and reported again.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from autoglm_runtime.config._frozen import freeze
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.codec import Codec, decode_value
from autoglm_runtime.config.dispatcher import ConfigChange
from autoglm_runtime.config.health import RejectReason, SyncStatus
from autoglm_runtime.logging import describe_value

__all__ = ["Validator", "ValuePipeline"]

log = logging.getLogger("autoglm_runtime.config")


class Validator(Protocol):
    """Checks a decoded value before it replaces the cached one.

    Raise an exception (its message is the reason logged) or return ``False`` to reject; any other
    return value accepts. Example::

        def validator(key: str, value: object) -> None:
            if key.endswith("context_window") and not (isinstance(value, int) and value > 0):
                raise ValueError("context_window must be a positive integer")
    """

    def __call__(self, key: str, value: Any, /) -> object: ...


class _Refused(ValueError):
    """A refusal and why: the codec could not decode the data, or the validator refused the value."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


class ValuePipeline:
    """Decodes and validates data for one client, then offers it to the cache."""

    def __init__(self, *, cache: ConfigCache, codec: Codec, validator: Validator | None, status: SyncStatus) -> None:
        self._cache = cache
        self._codec = codec
        self._validator = validator
        self._status = status

    def check(self, key: str, data: bytes) -> Any:
        """Decode and validate ``data`` for ``key``; raises ``ValueError`` with the reason on refusal (whatever
        exception the codec or the validator raised)."""
        try:
            # Frozen once here: every reader and listener shares the value, and get() stays one dict read.
            value = freeze(decode_value(self._codec, data))
        except ValueError as exc:
            raise _Refused("decode", f"the {self._codec.name} codec cannot decode it: {exc}") from exc
        except Exception as exc:  # RecursionError from deep JSON, a custom codec's TypeError...: still a refusal
            message = f"the {self._codec.name} codec cannot decode it: {type(exc).__name__}: {exc}"
            raise _Refused("decode", message) from exc
        if self._validator is not None:
            try:
                verdict = self._validator(key, value)
            except Exception as exc:
                raise _Refused("validator", f"the validator rejected it: {type(exc).__name__}: {exc}") from exc
            if verdict is False:
                raise _Refused("validator", "the validator rejected it: it returned False")
        return value

    def ingest(self, key: str, data: bytes, *, czxid: int, mzxid: int, seq: int) -> ConfigChange | None:
        """Apply ``data`` read at ``(czxid, mzxid)`` if it is newer and valid; returns the change applied."""
        if self._cache.known(key, czxid, mzxid, seq):
            return None
        try:
            value = self.check(key, data)
        except _Refused as exc:
            if not self._cache.reject(key, czxid, mzxid):
                return None  # a late read of a version older than one refused already: reported then
            log.warning(
                "config update for %r rejected, keeping the last good value: %s",
                key,
                exc,
                extra={
                    "error_code": "E0409",
                    "key": key,
                    "reason": str(exc),
                    "version": mzxid,
                    "value": describe_value(data),
                },
            )
            # Counted after logging, so whoever sees the count can also see the log line.
            self._status.reject(exc.reason)
            return None
        return self._cache.offer(key, value, data, czxid=czxid, mzxid=mzxid, seq=seq)
