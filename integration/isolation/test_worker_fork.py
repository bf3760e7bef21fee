"""A forked child (a prefork server's worker, multiprocessing's "fork") leaves its parent's workers alone: its calls go
to workers of its own, closing its copy of the loader stops only those, and a stream it inherited belongs to its
parent: the child's copy, dropped or closed, sends nothing on the socket both share, and reading it is a coded
error."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime.errors import UsageError
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.testing import wait_until

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

    def pid(self):
        import os

        return os.getpid()

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
    return _forked(lambda: _in_child(holder, how, read))


def _forked(run: Callable[[], dict[str, Any]], meanwhile: Callable[[], None] = lambda: None) -> tuple[int, Any]:
    """Fork; the child runs ``run`` while the parent runs ``meanwhile``. The child's pid and what ``run`` returned."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            try:
                seen = run()
            except BaseException as exc:
                seen = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    meanwhile()
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


@pytest.mark.parametrize("how", ["close", "with"])
def test_a_forked_child_closes_its_copy_even_when_a_parent_thread_held_the_streams_lock_at_the_fork(
    model: Any, how: str
) -> None:
    # Before: the child's close() took the stream's lock before seeing the stream was its parent's; a thread of the
    # parent that held it at the fork (the reader thread giving the stream's place back, the watch thread giving
    # up an unread stream) does not exist in the child, so the child hung in close() for ever.
    holder = [model.stream("count", CHUNKS, timeout=60)]
    assert next(holder[0]) == 0
    lock = holder[0]._inner._state._release_lock  # (only a held lock at the fork shows it; no thread holds it long)
    held, forked = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            forked.wait(60)

    holder_thread = threading.Thread(target=hold, name="test-holds-the-stream-lock")
    holder_thread.start()
    held.wait(60)
    try:
        _, seen = _forked(lambda: _in_child(holder, how, read=False), forked.set)
    finally:
        forked.set()
        holder_thread.join()
    assert seen == {"after close": [], "dropped": True}
    _runs_to_its_end(model, holder[0])


def test_a_fork_returns_in_the_child_when_a_parent_thread_held_a_workers_output_pipe_at_the_fork(model: Any) -> None:
    # Before: the child's at-fork handler closed its copies of each worker's stdout and stderr through the buffered
    # readers Popen made, whose close() takes the reader's lock. A thread of the parent holding it at the fork (the
    # output pump closing them as the worker exits) left it locked in the child: os.fork() never returned there.
    # Here a thread blocked reading the pipe holds whatever lock reading it takes, for as long as the test needs.
    worker = model._pool.workers[0]
    pipe = worker._pump._pipes[0]  # (only a lock held at the fork shows it; no thread holds it long)
    reader = threading.Thread(target=pipe.read, args=(1,), name="test-reads-the-worker-stdout", daemon=True)
    reader.start()
    wait_until(lambda: _reading(reader, pipe.fileno()), 30, "the reader to block reading the pipe")
    _, seen = _forked(lambda: {"forked": True})
    assert seen == {"forked": True}
    model.close()  # (the worker's exit ends the read: end of file)
    reader.join(30)
    assert not reader.is_alive()


def _reading(thread: threading.Thread, fd: int) -> bool:
    """True while ``thread`` is blocked in a read(2) of ``fd`` (Linux x86-64: system call 0)."""
    try:
        fields = Path(f"/proc/self/task/{thread.native_id}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == "0" and int(fields[1], 16) == fd


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


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_forked_child_calls_workers_of_its_own_while_the_parent_calls_its_own(model: Any) -> None:
    # Before: the child's calls went over the parent's socket, under the same ids as the parent's: each process read
    # the other's replies, and both timed out and killed the parent's worker.
    ours = model.call("pid", timeout=60)

    def child() -> dict[str, Any]:
        before = model.health()
        echoed = [model.call("echo", f"child {i}", timeout=60) for i in range(100)]
        worker = model.call("pid", timeout=60)
        return {
            "state before": before["state"],
            "pid before": before["pid"],
            "echoed": echoed == [f"child {i}" for i in range(100)],
            "own worker": worker != ours and _parent_of(worker) == os.getpid(),
            "restarts": model.health()["restarts"],
        }

    def parent() -> None:
        expected = [f"parent {i}" for i in range(100)]
        assert [model.call("echo", f"parent {i}", timeout=60) for i in range(100)] == expected

    _, seen = _forked(child, parent)
    assert seen == {"state before": "dead", "pid before": None, "echoed": True, "own worker": True, "restarts": 0}
    health = model.health()
    assert (health["pid"], health["restarts"], health["failures"]) == (ours, 0, 0)
    assert model.call("pid", timeout=60) == ours


def test_a_forked_child_closing_its_loader_stops_only_its_own_workers(
    model: Any, loader: ModelLoader, wait_gone: Callable[[int, float], bool]
) -> None:
    # Before: the child's close() shut the parent's socket down and killed the parent's worker's process group.
    ours = model.call("pid", timeout=60)

    def child() -> dict[str, Any]:
        worker = model.call("pid", timeout=60)
        loader.close()
        return {"worker": worker, "gone": wait_gone(worker, 30), "state": model.health()["state"]}

    _, seen = _forked(child)
    assert seen["worker"] != ours
    assert (seen["gone"], seen["state"]) == (True, "dead")
    assert model.call("pid", timeout=60) == ours
    assert (model.health()["restarts"], model.health()["state"]) == (0, "ready")


ORPHANING_PARENT = """
import json, os, sys, time
from autoglm_runtime.isolation import ModelLoader

env_root, wheelhouse, model_dir = sys.argv[1:]
loader = ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process", heartbeat_interval=None)
worker = loader.load(model_dir).call("pid", timeout=60)
child = os.fork()
if child == 0:
    time.sleep(120)  # lives on, holding whatever it inherited
    os._exit(0)
print(json.dumps([worker, child]), flush=True)
time.sleep(120)
"""


def test_the_parents_workers_exit_with_it_while_a_forked_child_lives(
    model: Any, env_root: Path, wheelhouse: Path, tmp_path: Path, wait_gone: Callable[[int, float], bool]
) -> None:
    # Before: the child's copy of the parent's socket kept the worker from seeing its host go; it ran on until the
    # child exited.
    script = tmp_path / "parent.py"
    script.write_text(ORPHANING_PARENT, encoding="utf-8")
    directory = str(model.manifest.directory)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(env_root), str(wheelhouse), directory], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        worker, child = json.loads(parent.stdout.readline())
        parent.kill()  # the host dies without closing anything
        parent.wait()
        try:
            assert wait_gone(worker, 20)
            assert not wait_gone(child, 0)  # (the child still runs)
        finally:
            os.kill(child, signal.SIGKILL)
    finally:
        parent.kill()
        parent.wait()
