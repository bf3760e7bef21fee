"""A stream inherited by a forked child (a prefork server's worker, multiprocessing's "fork") belongs to its parent:
the child's copy, dropped or closed, sends nothing on the socket both share, and reading it is a coded error."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import signal
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from autoglm_runtime.errors import UsageError
from autoglm_runtime.isolation import ModelLoader

pytestmark = pytest.mark.slow

#: More chunks than the worker may run ahead of its consumer (32): the parent's stream is live in the worker,
#: waiting for the parent's credit, while the child drops its copy.
CHUNKS = 200

_MODELS = itertools.count()

MODEL = """
class Model:
    def count(self, n):
        for i in range(n):
            yield i

    def echo(self, value):
        return value

def load():
    return Model()
"""


@pytest.fixture
def model(loader: ModelLoader, make_model: Any) -> Iterator[Any]:
    # One per test: a failing test's stream, left running, must not hold the next test's worker.
    loaded = loader.load(make_model(f"fork-streams-{next(_MODELS)}", MODEL))
    yield loaded
    loaded.close()


def _close(stream: Any, how: str) -> list[Any]:
    """Close ``stream`` as ``how`` says; what it yields afterwards."""
    if how == "close":
        stream.close()
    else:
        with stream:
            pass
    return list(stream)


def _in_child(holder: list[Any], how: str, read: bool) -> dict[str, Any]:
    """What a forked child sees of its copy of the parent's stream, ``holder``'s one item: it reads it if ``read``,
    closes it (``close`` and ``with``) and drops it (at once, or in a cycle the garbage collector finds: ``cycle``).
    """
    seen: dict[str, Any] = {}
    if read:
        try:
            seen["read"] = next(holder[0])
        except UsageError as exc:
            seen["read"] = str(exc)
    if how in ("close", "with"):
        seen["after close"] = _close(holder[0], how)
    stream = holder.pop()  # the child's only reference
    gone = weakref.ref(stream)
    if how == "cycle":
        cycle: list[Any] = [stream]
        cycle.append(cycle)  # only the garbage collector finds the stream dropped
        del cycle
    del stream
    gc.collect()
    seen["dropped"] = gone() is None
    return seen


def _reap(pid: int, timeout: float) -> int:
    """The child's wait status; a child still running after ``timeout`` s (hung in its drop) is killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child {pid} did not finish within {timeout} s")


def _fork_and_reap(holder: list[Any], how: str, read: bool) -> tuple[int, dict[str, Any]]:
    """Fork; the child runs :func:`_in_child` on its copy of ``holder`` (the parent's stream in a list: no other
    reference keeps the child's copy alive). The child's pid and what it saw."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(_in_child(holder, how, read)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    assert _reap(pid, 60) == 0
    with os.fdopen(read_end) as child:
        return pid, json.loads(child.read())


def _runs_to_its_end(model: Any, chunks: Any) -> None:
    assert list(chunks) == list(range(1, CHUNKS))
    assert model.health()["inflight"] == 0
    assert model.call("echo", "next", timeout=60) == "next"  # the worker is free for the next call


@pytest.mark.parametrize("how", ["drop", "cycle", "close", "with"])
def test_a_forked_child_dropping_or_closing_its_copy_leaves_the_parents_stream_running(model: Any, how: str) -> None:
    holder = [model.stream("count", CHUNKS, timeout=60)]
    first = next(holder[0])  # the generator runs in the worker, waiting for credit from the parent
    assert first == 0
    _, seen = _fork_and_reap(holder, how, read=False)
    assert seen == ({"after close": [], "dropped": True} if how in ("close", "with") else {"dropped": True})
    _runs_to_its_end(model, holder[0])


def test_reading_a_forked_childs_copy_is_a_coded_error(model: Any) -> None:
    holder = [model.stream("count", CHUNKS, timeout=60)]
    first = next(holder[0])
    assert first == 0
    child, seen = _fork_and_reap(holder, "drop", read=True)
    parent, name = os.getpid(), model.name
    assert seen == {
        "read": f"E0001: the stream of count() on model '{name}' was opened by process {parent} and cannot be read "
        f"in process {child}, a fork of it: its chunks go to process {parent}; open streams in the process that "
        "reads them",
        "dropped": True,
    }
    _runs_to_its_end(model, holder[0])


def test_a_forked_child_dropping_its_copy_of_an_async_stream_leaves_the_parents_running(model: Any) -> None:
    async def consume() -> list[Any]:
        holder = [model.astream("count", CHUNKS, timeout=60)]
        first = await holder[0].__anext__()
        assert first == 0
        _, seen = _fork_and_reap(holder, "drop", read=False)  # (the child never returns to the loop)
        assert seen == {"dropped": True}
        return [chunk async for chunk in holder[0]]

    assert asyncio.run(consume()) == list(range(1, CHUNKS))
    assert model.health()["inflight"] == 0
    assert model.call("echo", "next", timeout=60) == "next"
