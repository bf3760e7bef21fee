"""Live limits: the numbers a guard reads at the start of every request.

A guard never caches its limits; it asks its :class:`LimitsSource` once per request and judges the whole request
by that one reading. Two sources exist: :class:`StaticLimits` (constants) and :class:`ConfigLimits`, which reads
keys of a ConfigClient so that a change in ZooKeeper takes effect on the next request, without a restart::

    limits = ConfigLimits(client, prefix="models/llm/", defaults=Limits(context_window=8192))
    guard = ContextWindowGuard(tokenizer, limits)

``ConfigLimits`` calls ``client.get(key, default)`` per request (the client serves it from its local cache, never
from the network), so a new value counts from the first request after the cache has it; listener dispatch delays
do not matter. A value that is not valid (``context_window: "big"``) is logged once as E0409 with the key (never the
value) and the last good value stays in force.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from autoglm_runtime.errors import UsageError
from autoglm_runtime.logging import describe_value, get_logger

__all__ = ["ConfigLimits", "ConfigReader", "Limits", "LimitsSource", "StaticLimits", "TruncationSide"]

log = get_logger(__name__)

TruncationSide = Literal["left", "right"]

_SIDES: tuple[TruncationSide, ...] = ("left", "right")
_ABSENT = object()  # a default no config value can be


@dataclass(frozen=True)
class Limits:
    """One consistent reading of the limits a request is judged by.

    ``truncation_side="left"`` removes the oldest input (the start), keeping the end next to the question.
    """

    context_window: int
    truncate_on_overflow: bool = False
    truncation_side: TruncationSide = "left"

    def __post_init__(self) -> None:
        if isinstance(self.context_window, bool) or not isinstance(self.context_window, int):
            raise UsageError(f"context_window must be an integer, got {self.context_window!r}")
        if self.context_window < 1:
            raise UsageError(f"context_window must be at least 1 token, got {self.context_window}")
        if not isinstance(self.truncate_on_overflow, bool):
            raise UsageError(f"truncate_on_overflow must be true or false, got {self.truncate_on_overflow!r}")
        if self.truncation_side not in _SIDES:
            raise UsageError(f"truncation_side must be 'left' or 'right', got {self.truncation_side!r}")


class LimitsSource(Protocol):
    """Anything that can say which limits apply to the request being judged now."""

    def current(self) -> Limits:
        """The limits for one request; called once per request."""


class ConfigReader(Protocol):
    """The part of ConfigClient's public API that live limits use."""

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key`` (relative to the client's root), or ``default``."""


class StaticLimits:
    """Limits that never change.

    >>> StaticLimits(Limits(context_window=4096)).current().context_window
    4096
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def current(self) -> Limits:
        return self._limits


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a token count")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise ValueError("expected a whole number of tokens")
    if value < 1:
        raise ValueError("expected at least 1 token")
    return value


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("expected true or false")


def _parse_side(value: Any) -> TruncationSide:
    for side in _SIDES:
        if value == side:
            return side
    raise ValueError("expected 'left' or 'right'")


class ConfigLimits:
    """Limits read from ConfigClient keys at every request, falling back to ``defaults`` for absent keys.

    Keys are ``prefix + name`` for the names given (``context_window``, ``truncate_on_overflow``,
    ``truncation_side`` by default). Values may be JSON numbers/booleans or their string forms.
    """

    def __init__(
        self,
        client: ConfigReader,
        *,
        defaults: Limits,
        prefix: str = "",
        context_window_key: str = "context_window",
        truncate_on_overflow_key: str = "truncate_on_overflow",
        truncation_side_key: str = "truncation_side",
    ) -> None:
        self._client = client
        # A prefix without its '/' ("models/llm") names keys nobody wrote; kept to say which ones were meant.
        self._slashed = (
            {
                prefix + name: f"{prefix}/{name}"
                for name in (context_window_key, truncate_on_overflow_key, truncation_side_key)
            }
            if prefix and not prefix.endswith("/")
            else {}
        )
        self._keys = (
            prefix + context_window_key,
            prefix + truncate_on_overflow_key,
            prefix + truncation_side_key,
        )
        names = ("context_window_key", "truncate_on_overflow_key", "truncation_side_key")
        for name, key in zip(names, self._keys, strict=True):
            if key.startswith("/"):  # such a key never exists: a reader gives the default for ever, or refuses it
                given = f"prefix {prefix!r}" if prefix else f"{name}={key!r}"
                raise UsageError(
                    "ConfigLimits reads keys relative to the config client's root, which never start with '/', but "
                    f"{given} gives {key!r}: drop the leading '/' (and the root, which the client adds)"
                )
        self._lock = threading.Lock()
        self._last_raw: tuple[Any, Any, Any] | None = None
        self._last_good = defaults
        self._defaults = defaults
        self._reported: set[tuple[str, str]] = set()
        self._rejected: dict[str, str] = {}  # key -> why its value is refused, as of the last reading
        self._absent: set[str] = set()  # keys whose absence was logged (again when they come back and go)
        self._unloaded: set[str] = set()  # keys read before the client loaded anything (logged once each)

    @property
    def keys(self) -> tuple[str, str, str]:
        """The ConfigClient keys read: context window, truncate flag, truncation side."""
        return self._keys

    def rejected(self) -> dict[str, str]:
        """The keys whose value was refused at the last :meth:`current`, each with why (``{"models/llm/
        context_window": "expected a whole number of tokens"}``): the last good value is in force for them. Empty
        when every value is valid or absent. The reasons never quote the value (it may hold a secret).

        >>> limits.rejected()  # doctest: +SKIP
        {'models/llm/truncate_on_overflow': 'expected true or false'}
        """
        with self._lock:
            return dict(self._rejected)

    def current(self) -> Limits:
        raw = (
            self._client.get(self._keys[0], None),
            self._client.get(self._keys[1], None),
            self._client.get(self._keys[2], None),
        )
        with self._lock:
            if raw == self._last_raw:
                return self._last_good
            self._last_good = self._build(raw)
            self._last_raw = raw
            return self._last_good

    def _build(self, raw: tuple[Any, Any, Any]) -> Limits:
        limits = self._last_good
        fields: tuple[tuple[str, Any, Any], ...] = (
            ("context_window", raw[0], _parse_int),
            ("truncate_on_overflow", raw[1], _parse_bool),
            ("truncation_side", raw[2], _parse_side),
        )
        for key, (field, value, parse) in zip(self._keys, fields, strict=True):
            self._rejected.pop(key, None)
            if value is None:
                default = getattr(self._defaults, field)
                limits = replace(limits, **{field: default})
                self._report_absent(key, field, default)
                continue
            self._absent.discard(key)
            try:
                limits = replace(limits, **{field: parse(value)})
            except ValueError as exc:  # the parsers' reasons never quote the value
                self._rejected[key] = str(exc)
                self._report(key, value, str(exc))
        return limits

    def _report_absent(self, key: str, field: str, default: Any) -> None:
        # Said once per absence: a key named wrongly (a prefix without its '/', a typo) is not silent.
        if key in self._absent:
            return
        root = getattr(self._client, "root", None)
        health = getattr(self._client, "health", None)  # a ConfigClient says whether it has loaded yet
        state = health()["state"] if callable(health) else "running"
        if state in ("new", "starting"):
            # Nothing is loaded yet: "does not exist" would send an operator looking for a typo. Not remembered as
            # absent, so a key still missing once the client has loaded is said then.
            if key not in self._unloaded:
                self._unloaded.add(key)
                log.warning(
                    "config key %r%s is not loaded yet (the config client's state is %r: start() it before requests "
                    "are judged); the default %s=%r is in force",
                    key,
                    f" under {root}" if root else "",
                    state,
                    field,
                    default,
                    extra={"error_code": "E0409", "key": key},
                )
            return
        self._absent.add(key)
        # A key holding null (an empty znode) reads as None too: it exists, and saying otherwise misleads.
        state = "does not exist" if self._client.get(key, _ABSENT) is _ABSENT else "holds null (empty)"
        meant = self._slashed.get(key)
        if state == "does not exist" and meant is not None and self._client.get(meant, _ABSENT) is not _ABSENT:
            log.warning(
                "config key %r does not exist%s, but %r does: end the ConfigLimits prefix with '/' (keys are the "
                "prefix and the name joined as they are); the default %s=%r is in force",
                key,
                f" under {root}" if root else "",
                meant,
                field,
                default,
                extra={"error_code": "E0409", "key": key},
            )
            return
        log.info(
            "config key %r %s%s; the default %s=%r is in force",
            key,
            state,
            f" under {root}" if root else "",
            field,
            default,
            extra={"key": key},
        )

    def _report(self, key: str, value: Any, reason: str) -> None:
        fingerprint = describe_value(value)["sha256"]
        if (key, fingerprint) in self._reported:
            return
        self._reported.add((key, fingerprint))
        log.warning(
            "the value of config key %r is not a valid limit (%s); the last good value stays in force",
            key,
            reason,
            extra={"error_code": "E0409", "key": key, "value": describe_value(value)},
        )
