"""What the tracer does (starts spans at all, drops children of unsampled parents): found once per tracer and
global provider, and followed when either changes."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from autoglm_runtime.observability import _tracing


def test_a_no_op_tracer_starts_no_span_and_the_answer_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = trace.NoOpTracer()
    monkeypatch.setattr(_tracing, "_TRACER", quiet)
    monkeypatch.setattr(_tracing, "_known", {})
    assert _tracing.spans_off()
    provider = getattr(trace, "_TRACER_PROVIDER", _tracing._UNSET)
    assert _tracing._known == {id(quiet): (quiet, provider, (True, False, False))}
    assert _tracing.spans_off()


def test_another_tracer_is_asked_again_not_taken_for_the_remembered_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tracing, "_TRACER", trace.NoOpTracer())
    assert _tracing.spans_off()
    provider = TracerProvider()
    monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
    assert not _tracing.spans_off()
    provider.shutdown()


def test_the_proxy_tracer_follows_a_provider_set_after_it_was_found_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = trace.ProxyTracer("autoglm_runtime")
    monkeypatch.setattr(_tracing, "_TRACER", proxy)
    monkeypatch.setattr(_tracing, "_known", {})
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    assert _tracing.spans_off()
    assert _tracing._known == {id(proxy): (proxy, None, (True, False, False))}
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)  # what set_tracer_provider sets
    assert not _tracing.spans_off()
    assert _tracing._mode(proxy) == (False, True, False)  # the new provider's sampler, read through the proxy
    provider.shutdown()


@pytest.mark.parametrize(
    ("sampler", "drops"),
    [
        (ParentBased(ALWAYS_ON), (True, True)),
        (ParentBased(ALWAYS_ON, local_parent_not_sampled=ALWAYS_ON), (False, True)),
        (ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON), (True, False)),
        (ALWAYS_ON, (False, False)),
        (ALWAYS_OFF, (False, False)),
    ],
)
def test_each_tracer_is_known_by_its_own_sampler(
    monkeypatch: pytest.MonkeyPatch, sampler: ParentBased, drops: tuple[bool, bool]
) -> None:
    other = TracerProvider(sampler=ParentBased(ALWAYS_ON, local_parent_not_sampled=ALWAYS_ON))
    monkeypatch.setattr(_tracing, "_TRACER", other.get_tracer("autoglm_runtime"))
    assert _tracing._mode(_tracing._TRACER) == (False, False, True)  # remembered: the next tracer must not reuse it
    provider = TracerProvider(sampler=sampler)
    tracer = provider.get_tracer("autoglm_runtime")
    monkeypatch.setattr(_tracing, "_TRACER", tracer)
    assert _tracing._mode(tracer) == (False, *drops)
    assert _tracing._mode(tracer) == (False, *drops)
    provider.shutdown()
    other.shutdown()


class _Unhashable(trace.NoOpTracer):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashable)

    __hash__ = None  # type: ignore[assignment]


def test_an_unhashable_tracer_is_remembered_too(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = _Unhashable()
    monkeypatch.setattr(_tracing, "_TRACER", tracer)
    monkeypatch.setattr(_tracing, "_known", {})
    assert _tracing.spans_off()
    assert _tracing._known[id(tracer)][0] is tracer


def test_switching_between_tracers_keeps_what_each_does_and_stays_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tracing, "_known", {})
    providers = [TracerProvider(sampler=ParentBased(ALWAYS_ON)) for _ in range(_tracing._KNOWN_MAX + 3)]
    tracers = [provider.get_tracer("autoglm_runtime") for provider in providers]
    for _ in range(2):
        for tracer in tracers[:2]:
            assert _tracing._mode(tracer) == (False, True, True)
    assert set(_tracing._known) == {id(tracers[0]), id(tracers[1])}  # both kept while switching
    for tracer in tracers:
        assert _tracing._mode(tracer) == (False, True, True)
        assert len(_tracing._known) <= _tracing._KNOWN_MAX
    for provider in providers:
        provider.shutdown()
