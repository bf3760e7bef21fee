"""A stream its consumer keeps but stops reading (neither closed nor dropped) does not hold its replica for ever: the
place goes back as soon as the worker is done with the stream, read or not, and a stream whose chunk waits unread
for ``unread_timeout`` is closed."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime.errors import ModelTimeoutError
from autoglm_runtime.isolation import ModelLoader

pytestmark = pytest.mark.slow

_MODELS = itertools.count()

MODEL = """
class Model:
    def count(self, n):
        yield from range(n)

    def echo(self, value):
        return value

def load():
    return Model()
"""


@pytest.fixture
def model(loader: ModelLoader, make_model: Any) -> Iterator[Any]:
    loaded = loader.load(make_model(f"unread-{next(_MODELS)}", MODEL))
    yield loaded
    loaded.close()


def test_a_stream_the_worker_ended_gives_its_place_back_before_it_is_read_to_its_end(model: Any) -> None:
    # Before: the place went back only when the consumer read the end, so the next call waited in the queue until
    # its timeout (E0305) although the worker was idle.
    unread = model.stream("count", 5, timeout=None)
    assert next(unread) == 0
    assert model.call("echo", "next", timeout=30) == "next"
    assert (model.health()["inflight"], model.health()["restarts"]) == (0, 0)
    assert list(unread) == [1, 2, 3, 4]  # what it held is still there to read


def test_an_async_stream_the_worker_ended_gives_its_place_back_before_it_is_read_to_its_end(model: Any) -> None:
    async def run() -> list[Any]:
        unread = model.astream("count", 5, timeout=None)
        assert await unread.__anext__() == 0
        assert await model.acall("echo", "next", timeout=30) == "next"
        return [chunk async for chunk in unread]

    assert asyncio.run(run()) == [1, 2, 3, 4]
    assert model.health()["inflight"] == 0


SLOW = """
import time

class Model:
    def count(self, n):
        yield from range(n)

    def late(self, delay):
        time.sleep(delay)  # the consumer waits in next() all that time: it is reading
        yield "late"

    def echo(self, value):
        return value

def load():
    return Model()
"""


@pytest.fixture(scope="module")
def impatient(wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    """A loader closing streams left unread for 0.2 s (up to 0.4 s)."""
    with ModelLoader(
        env_root, wheelhouse=wheelhouse, offline=True, backend="process", heartbeat_interval=None, unread_timeout=0.2
    ) as one:
        yield one


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"waited 60 s for {what}"
        time.sleep(0.01)


def test_a_stream_left_unread_is_closed_and_its_replica_serves_other_calls(
    impatient: ModelLoader, make_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: a stream longer than the worker's window (32 chunks) kept and not read held its replica for ever; with
    # timeout=None nothing bounded it, and calls queued behind it until their own timeout.
    model = impatient.load(make_model(f"unread-{next(_MODELS)}", SLOW))
    kept = model.stream("count", 1000, timeout=None)
    assert next(kept) == 0
    with caplog.at_level("WARNING", logger="autoglm_runtime.isolation.workers.process"):
        _until(lambda: model.health()["inflight"] == 0, "the unread stream to be closed")
    assert model.call("echo", "served", timeout=60) == "served"
    message = (
        f"E0305: the stream of count() on model '{model.name}' was closed after a chunk waited 0.2 s without its "
        "consumer reading it (unread_timeout): its worker closed the generator and serves other calls; read a "
        "stream steadily or close it, or raise unread_timeout"
    )
    for _ in range(2):  # (and again: the stream stays failed)
        with pytest.raises(ModelTimeoutError) as info:
            next(kept)
        assert str(info.value) == message
    assert (model.health()["restarts"], model.health()["failures"]) == (0, 0)  # only the generator was closed
    [record] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert (
        record.getMessage()
        == f"model {model.name}: a chunk of the stream of count() waited 0.2 s unread; closed the stream"
    )
    model.close()


def test_an_async_stream_left_unread_is_closed(impatient: ModelLoader, make_model: Any) -> None:
    model = impatient.load(make_model(f"unread-{next(_MODELS)}", SLOW))

    async def run() -> str:
        kept = model.astream("count", 1000, timeout=None)
        assert await kept.__anext__() == 0
        while model.health()["inflight"]:
            await asyncio.sleep(0.01)
        assert await model.acall("echo", "served", timeout=60) == "served"
        with pytest.raises(ModelTimeoutError) as info:
            await kept.__anext__()
        return str(info.value)

    assert asyncio.run(asyncio.wait_for(run(), 60)).startswith(f"E0305: the stream of count() on model '{model.name}'")
    model.close()


def test_a_consumer_waiting_for_a_slow_chunk_or_reading_every_chunk_is_not_cut_off(
    impatient: ModelLoader, make_model: Any
) -> None:
    model = impatient.load(make_model(f"unread-{next(_MODELS)}", SLOW))
    assert list(model.stream("late", 1.0, timeout=None)) == ["late"]  # five limits long, with the consumer in next()
    assert list(model.stream("count", 2000, timeout=None)) == list(range(2000))
    model.close()


STUCK = """
import threading

class Model:
    def stuck(self):
        yield 0
        yield 1
        threading.Event().wait()  # the step after the unread chunk never returns

    def echo(self, value):
        return value

def load():
    return Model()
"""


def test_a_stream_left_unread_whose_step_never_returns_has_its_worker_killed_not_its_replica_leaked(
    impatient: ModelLoader, make_model: Any, wait_gone: Callable[[int, float], bool], caplog: pytest.LogCaptureFixture
) -> None:
    # Before: closing the unread stream asked the worker to close the generator, which it cannot do while the model's
    # step runs; with timeout=None nothing bounded that wait, so the replica stayed taken (inflight 1) for ever and
    # every later call queued behind it.
    model = impatient.load(make_model(f"unread-{next(_MODELS)}", STUCK))
    pid = model.health()["pid"]
    kept = model.stream("stuck", timeout=None)
    assert next(kept) == 0
    with caplog.at_level("WARNING", logger="autoglm_runtime.isolation.workers.process"):
        _until(lambda: model.health()["inflight"] == 0, "the replica of the stuck, unread stream to be reclaimed")
    assert wait_gone(pid, 60)
    assert model.call("echo", "served", timeout=60) == "served"
    health = model.health()
    assert (health["restarts"], health["restart_reasons"], health["pid"] != pid) == (1, {"timeout": 1}, True)
    with pytest.raises(ModelTimeoutError) as info:
        next(kept)
    assert str(info.value) == (
        f"E0305: model '{model.name}' did not answer stuck() within 0.2 s of closing its stream, which its consumer "
        "had left unread; its worker was killed and is restarting: raise the timeout if the model is merely slow"
    )
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"model {model.name}: a chunk of the stream of stuck() waited 0.2 s unread; closed the stream",
        f"model {model.name}: stuck() timed out after 0.2 s of closing its stream, which its consumer had left unread; "
        "killing its worker",
    ]
    model.close()
    assert wait_gone(health["pid"], 60)
    assert [t.name for t in threading.enumerate() if model.name in t.name] == []
