from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from autoglm_runtime.config.dispatcher import ConfigChange, Dispatcher
from autoglm_runtime.errors import UsageError


def change(key: str, version: int) -> ConfigChange:
    return ConfigChange(key, "updated", version - 1, version, version)


def test_in_order_by_prefix_and_unsubscribe() -> None:
    dispatcher = Dispatcher()
    seen_models: list[ConfigChange] = []
    seen_all: list[ConfigChange] = []
    unsubscribe = dispatcher.subscribe("models/", seen_models.append)
    dispatcher.subscribe("", seen_all.append)
    dispatcher.start()
    try:
        for version in range(1, 51):
            dispatcher.publish(change("models/a", version))
            dispatcher.publish(change("other", version))
        assert dispatcher.wait_idle(10)
        unsubscribe()
        dispatcher.publish(change("models/a", 51))
        assert dispatcher.wait_idle(10)
    finally:
        dispatcher.stop()
    assert [c.version for c in seen_models] == list(range(1, 51))
    assert len(seen_all) == 101


@pytest.mark.parametrize("error", [RuntimeError("boom"), SystemExit(0)])
def test_raising_listener_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture, error: BaseException
) -> None:
    """A listener's sys.exit() (SystemExit, not an Exception) ended the dispatcher thread without a word: no
    listener got any later change, and wait_listeners() timed out for ever."""
    dispatcher = Dispatcher()
    seen: list[ConfigChange] = []

    def bad(_: ConfigChange) -> None:
        raise error

    dispatcher.subscribe("", bad)
    dispatcher.subscribe("", seen.append)
    dispatcher.start()
    try:
        with caplog.at_level(logging.ERROR, logger="autoglm_runtime.config.dispatcher"):
            dispatcher.publish(change("k", 1))
            dispatcher.publish(change("k", 2))
            assert dispatcher.wait_idle(10)
    finally:
        dispatcher.stop()
    assert seen == [change("k", 1), change("k", 2)]
    record = caplog.records[0]
    assert len(caplog.records) == 2
    assert record.getMessage() == "config listener raised; the other listeners still run"
    assert record.error_code == "E0409"  # type: ignore[attr-defined]
    assert record.key == "k"  # type: ignore[attr-defined]


def test_slow_listener_never_blocks_publish() -> None:
    dispatcher = Dispatcher()
    release = threading.Event()
    entered = threading.Event()

    def slow(_: ConfigChange) -> None:
        entered.set()
        release.wait(30)

    dispatcher.subscribe("", slow)
    dispatcher.start()
    try:
        dispatcher.publish(change("k", 1))
        assert entered.wait(10)
        for version in range(2, 1000):
            dispatcher.publish(change("k", version))  # returns although the listener is stuck
        assert not dispatcher.wait_idle(0.01)
    finally:
        release.set()
        dispatcher.stop()


def test_listener_must_be_callable() -> None:
    with pytest.raises(UsageError) as info:
        Dispatcher().subscribe("", 3)  # type: ignore[arg-type]
    assert str(info.value) == (
        "E0001: subscribe('', ...) was given 3 (of type int) as its listener, which is not callable: pass a function "
        "taking one ConfigChange"
    )


def test_no_call_after_unsubscribe_returns_even_for_a_change_already_being_delivered() -> None:
    dispatcher = Dispatcher()
    entered, release = threading.Event(), threading.Event()
    late: list[ConfigChange] = []

    def slow(change: ConfigChange) -> None:
        entered.set()
        release.wait(10)

    dispatcher.subscribe("", slow)
    unsubscribe = dispatcher.subscribe("", late.append)
    dispatcher.start()
    try:
        dispatcher.publish(change("a", 1))
        assert entered.wait(10)  # the change is being delivered: "slow" runs, "late" is next in line
        unsubscribe()
        release.set()
        assert dispatcher.wait_idle(10)
    finally:
        dispatcher.stop()
    assert late == []  # (before: called once more, after its unsubscribe had returned)


def test_unsubscribe_from_another_thread_returns_only_after_the_call_in_progress() -> None:
    dispatcher = Dispatcher()
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def listener(change: ConfigChange) -> None:
        entered.set()
        release.wait(10)
        order.append("call ended")

    unsubscribe = dispatcher.subscribe("", listener)
    dispatcher.start()
    try:
        dispatcher.publish(change("a", 1))
        assert entered.wait(10)
        unsubscriber = threading.Thread(target=lambda: (unsubscribe(), order.append("unsubscribed")))
        unsubscriber.start()
        unsubscriber.join(0.2)  # gives a wrong unsubscribe the time to return first; no assertion on time
        release.set()
        unsubscriber.join(10)
        assert dispatcher.wait_idle(10)
    finally:
        dispatcher.stop()
    assert order == ["call ended", "unsubscribed"]


def test_a_listener_unsubscribing_itself_returns_at_once_and_is_not_called_again() -> None:
    dispatcher = Dispatcher()
    seen: list[int] = []
    handle: list[Callable[[], None]] = []

    def once(change: ConfigChange) -> None:
        seen.append(change.version)
        handle[0]()  # on the dispatcher thread: waiting for its own call to end would deadlock

    handle.append(dispatcher.subscribe("", once))
    dispatcher.start()
    try:
        dispatcher.publish(change("a", 1))
        dispatcher.publish(change("a", 2))
        assert dispatcher.wait_idle(10)
    finally:
        dispatcher.stop()
    assert seen == [1]
