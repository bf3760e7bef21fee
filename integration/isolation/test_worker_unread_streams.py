"""A stream its consumer keeps but stops reading (neither closed nor dropped) does not hold its replica for ever: the
place goes back as soon as the worker is done with the stream, read or not."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

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
