"""ValuePipeline: any codec or validator failure is a rejection that keeps the last good value."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from autoglm_runtime.config._values import ValuePipeline
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.codec import resolve_codec
from autoglm_runtime.config.health import SyncStatus

from .conftest import FakeClock


class TypeErrorCodec:
    name = "picky"

    def decode(self, data: bytes) -> Any:
        raise TypeError("picky codec refuses everything")

    def encode(self, value: Any) -> bytes:
        return b""


def pipeline(clock: FakeClock, codec: Any) -> tuple[ValuePipeline, ConfigCache, SyncStatus]:
    cache = ConfigCache(ttl=30.0, timer=clock)
    status = SyncStatus(timer=clock)
    return ValuePipeline(cache=cache, codec=codec, validator=None, status=status), cache, status


def test_recursion_error_from_deep_json_is_a_rejection(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    pipe, cache, status = pipeline(clock, resolve_codec("json"))
    pipe.ingest("evil", b"1", czxid=1, mzxid=1, seq=1)
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        assert pipe.ingest("evil", b"[" * 100_000, czxid=1, mzxid=2, seq=2) is None
        assert pipe.ingest("evil", b"[" * 100_000, czxid=1, mzxid=2, seq=3) is None  # same version: once
    assert cache.get("evil") == 1
    assert status.rejected == 1
    (record,) = caplog.records
    assert record.error_code == "E0409"  # type: ignore[attr-defined]
    assert record.getMessage().startswith(
        "config update for 'evil' rejected, keeping the last good value: the json codec cannot decode it: "
        "RecursionError: "
    )


def test_a_custom_codec_raising_type_error_is_a_rejection(clock: FakeClock) -> None:
    pipe, cache, status = pipeline(clock, TypeErrorCodec())
    assert pipe.ingest("k", b"x", czxid=1, mzxid=1, seq=1) is None
    reason = r"^the picky codec cannot decode it: TypeError: picky codec refuses everything$"
    with pytest.raises(ValueError, match=reason):
        pipe.check("k", b"x")
    assert status.rejected == 1
    assert "k" not in cache.values


def test_a_late_read_of_an_older_refused_version_is_not_reported_again(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    pipe, cache, status = pipeline(clock, resolve_codec("json"))
    pipe.ingest("k", b"1", czxid=1, mzxid=1, seq=1)
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        assert pipe.ingest("k", b"{bad", czxid=1, mzxid=2, seq=2) is None
        assert pipe.ingest("k", b"{worse", czxid=1, mzxid=3, seq=3) is None
        assert pipe.ingest("k", b"{bad", czxid=1, mzxid=2, seq=4) is None  # a read sent before v3 came back late
        assert pipe.ingest("k", b"{worse", czxid=1, mzxid=3, seq=5) is None  # the safety net reads v3 again
    assert cache.get("k") == 1
    assert status.rejected == 2  # v2 and v3, each once
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "config update for 'k' rejected, keeping the last good value",
    ] * 2
