"""Real worker processes under what a production server meets: odd exceptions, cancelled callers."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import signal
import threading
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.isolation._helpers import in_background, outcome, pid_in

from autoglm_runtime.errors import ModelCallError, ModelOverloadedError, ModelTimeoutError, WorkerError
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.testing import wait_until

pytestmark = pytest.mark.slow

MODEL = """
import os, subprocess, sys, threading

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")

class Model:
    def pid(self):
        return os.getpid()

    def unprintable(self):
        raise Unprintable()

    def daemon(self):
        return subprocess.Popen(["sleep", "600"], start_new_session=True).pid  # out of the worker's process group

    def wordy(self, size):
        raise ValueError("x" * size)

    def unprintable_chunks(self):
        yield 1
        raise Unprintable()

    def wait(self, marker, release):
        open(marker, "w").write(str(os.getpid()))
        while not os.path.exists(release):
            threading.Event().wait(0.01)
        return "done"

    def exit(self):
        os._exit(3)

    def steps(self, marker, release):
        yield 1
        open(marker, "w").write(str(os.getpid()))  # a long step (a prefill): no chunk, no way to stop it meanwhile
        while not os.path.exists(release):
            threading.Event().wait(0.01)
        yield 2

    def undecodable_chunks(self, closed):
        sys.set_int_max_str_digits(0)  # this worker may print it; the host (default limit) cannot read it
        try:
            yield 1
            yield 10 ** 5000
            while True:
                yield 2
                threading.Event().wait(0.01)
        finally:
            open(closed, "w").write("closed")

    def nap(self, seconds):
        threading.Event().wait(seconds)

    def once_then_exit(self, path):
        open(path, "a").write("ran\\n")
        os._exit(3)

def load():
    return Model()
"""

ASYNC_MODEL = """
class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")

class Model:
    async def unprintable(self):
        raise Unprintable()

def load():
    return Model()
"""


@pytest.fixture(scope="module")
def loader(wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    with ModelLoader(
        env_root, wheelhouse=wheelhouse, offline=True, backend="process", heartbeat_interval=None
    ) as loader:
        yield loader


@pytest.fixture
def load(loader: ModelLoader, make_model: Any, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Loads the test's own model in the module's loader: ``code`` (``MODEL``), with ``serving`` in its manifest."""

    def load(serving: str = "", code: str = MODEL) -> Any:
        return _load(loader, make_model, _named(request), code, serving)

    return load


def _named(request: pytest.FixtureRequest) -> str:
    """A model name of the test's own (its parameters included)."""
    name = request.node.name
    return f"{re.sub(r'[^A-Za-z0-9]+', '-', name)[:40].strip('-')}-{zlib.crc32(name.encode())}"


def _load(loader: ModelLoader, make_model: Any, name: str, code: str, serving: str = "") -> Any:
    directory = make_model(name, code)
    if serving:
        manifest = directory / "model.toml"
        manifest.write_text(manifest.read_text() + f"[serving]\n{serving}\n")
    return loader.load(directory)


UNPRINTABLE = "model '{}' raised Unprintable: <str() of the Unprintable raised RuntimeError> in unprintable()"


@pytest.mark.parametrize("serving", ["", 'concurrency = "threads"\nmax_inflight = 2'], ids=["serial", "threads"])
def test_an_exception_whose_str_raises_is_a_model_call_error_and_the_worker_lives_on(
    load: Callable[..., Any], serving: str
) -> None:
    model = load(serving)
    pid = model.call("pid", timeout=30)
    with pytest.raises(ModelCallError) as info:
        model.call("unprintable", timeout=30)
    assert info.value.message == UNPRINTABLE.format(model.name)
    assert "RuntimeError: no text for you" not in info.value.message
    assert info.value.remote_type == "Unprintable"
    with pytest.raises(ModelCallError) as info:
        list(model.stream("unprintable_chunks", timeout=30))
    assert info.value.message == UNPRINTABLE.format(model.name).replace("unprintable()", "unprintable_chunks()")
    assert model.call("pid", timeout=30) == pid
    assert model.health()["restarts"] == 0
    model.close()


def test_an_async_models_exception_whose_str_raises_is_a_model_call_error(load: Callable[..., Any]) -> None:
    model = load('concurrency = "async"', ASYNC_MODEL)
    with pytest.raises(ModelCallError) as info:
        model.call("unprintable", timeout=30)
    assert info.value.message == UNPRINTABLE.format(model.name)
    assert model.health()["restarts"] == 0
    model.close()


def test_an_exception_too_large_for_a_frame_is_reported_cut_and_the_worker_lives_on(load: Callable[..., Any]) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    size = 70 * 1024 * 1024  # more than a frame's JSON may hold (64 MiB)
    with pytest.raises(ModelCallError) as info:
        model.call("wordy", size, timeout=60)
    cut = size - 65536
    assert info.value.message == (
        f"model '{model.name}' raised ValueError: {'x' * 65536}... ({cut} more characters cut) in wordy()"
    )
    assert model.call("pid", timeout=30) == pid
    model.close()


def test_a_cancelled_async_call_keeps_its_place_until_the_worker_answers_it(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    marker, release = tmp_path / "running", tmp_path / "release"

    async def scenario() -> tuple[Any, bool]:
        await _cancel_while_running(model.acall("wait", str(marker), str(release), timeout=60), marker)
        return await _next_call_queued(model, release)  # the worker still runs wait()

    assert asyncio.run(scenario()) == (pid, True)
    _idle_without_restarts(model)


def test_an_abandoned_call_still_running_past_its_timeout_has_its_worker_restarted(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    marker, never = tmp_path / "running", tmp_path / "never"

    asyncio.run(_cancel_while_running(model.acall("wait", str(marker), str(never), timeout=1), marker))
    # Nobody waits for it, but its timeout still holds: the hung worker is killed and restarted, as for a caller
    _restarted_for_a_timeout(model, pid)


def _restarted_for_a_timeout(model: Any, pid: int) -> None:
    assert model.call("pid", timeout=30) != pid
    health = model.health()
    assert (health["restarts"], health["restart_reasons"], health["inflight"]) == (1, {"timeout": 1}, 0)
    model.close()


def test_a_worker_that_dies_as_its_call_times_out_counts_one_failure_not_two(load: Callable[..., Any]) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    worker = model._pool.workers[0]
    conn = worker._conn
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: model.health()["restart_reasons"], 30, "the worker's death to be recorded")
    # The call's timeout fires right after the death was recorded (the race of a worker dying at its deadline):
    # its kill finds a dead process whose end was counted already
    worker.timed_out(conn, "wait", 1.0)
    health = model.health()
    assert (health["failures"], health["restart_reasons"]) == (1, {"signal": 1}), health
    assert model.call("pid", timeout=30) != pid
    assert (model.health()["restarts"], model.health()["failures"]) == (1, 0)
    model.close()


def test_a_chunk_the_host_cannot_decode_fails_the_stream_and_closes_its_generator_in_the_worker(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    closed = tmp_path / "closed"
    with model.stream("undecodable_chunks", str(closed), timeout=30) as chunks:
        assert next(chunks) == 1
        with pytest.raises(ModelCallError) as info:
            next(chunks)
    assert (info.value.code, "cannot decode" in info.value.message) == ("E0105", True)
    # The generator went on in the worker: it is closed there (not left waiting for the host to want more), and
    # the stream kept its place until then, so the next call runs on the same worker without a restart
    wait_until(closed.exists, 30, "the worker to close the generator")
    assert model.call("pid", timeout=30) == pid
    health = model.health()
    assert (health["restarts"], health["failures"], health["inflight"]) == (0, 0, 0)
    model.close()


def test_a_stream_closed_during_a_step_keeps_its_place_until_the_worker_ends_its_generator(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    marker, release = tmp_path / "running", tmp_path / "release"
    _close_during_a_step(model, marker, release, timeout=60)
    # Closed: the worker closes the generator only once the step returns, so the next call waits for it in the queue
    # (not inside the worker, where its timeout would kill the worker)
    waiting, answer = in_background(model.call, "pid", timeout=30)
    queued = outcome(wait_until, lambda: model.health()["queued"] == 1, 10)
    release.write_text("go")
    waiting.join()
    assert (queued, answer) == (None, [pid])
    _idle_without_restarts(model)


def test_an_async_stream_closed_during_a_step_keeps_its_place_until_the_worker_ends_its_generator(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    marker, release = tmp_path / "running", tmp_path / "release"

    async def scenario() -> tuple[Any, bool]:
        async with model.astream("steps", str(marker), str(release), timeout=60) as chunks:
            assert await chunks.__anext__() == 1
            while not marker.exists():
                await asyncio.sleep(0.01)
        return await _next_call_queued(model, release)  # closed: the worker closes the generator after the step

    assert asyncio.run(scenario()) == (pid, True)
    _idle_without_restarts(model)


def _close_during_a_step(model: Any, marker: Path, release: Path, timeout: float) -> None:
    """Read a stream's first chunk, and close it once the model is inside its next step (until ``release``)."""
    with model.stream("steps", str(marker), str(release), timeout=timeout) as chunks:
        assert next(chunks) == 1
        wait_until(marker.exists, 30, "the generator's long step to start")


async def _next_call_queued(model: Any, release: Path) -> tuple[Any, bool]:
    """The next call, made while the worker is still busy with what its caller gave up on: its answer once
    ``release`` lets the worker go, and whether it waited in the queue meanwhile (not inside the worker, where its
    timeout would kill the worker)."""
    second = asyncio.create_task(model.acall("pid", timeout=30))
    loop = asyncio.get_running_loop()
    queued = await loop.run_in_executor(None, outcome, wait_until, lambda: model.health()["queued"] == 1, 10)
    release.write_text("go")
    return await second, queued is None


def _idle_without_restarts(model: Any) -> None:
    health = model.health()
    assert (health["restarts"], health["inflight"], health["queued"]) == (0, 0, 0)
    model.close()


def test_a_call_right_after_a_stream_closed_during_a_step_is_refused_without_a_queue(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load("max_queue = 0")
    pid = model.call("pid", timeout=30)
    marker, release = tmp_path / "running", tmp_path / "release"
    _close_during_a_step(model, marker, release, timeout=60)
    with pytest.raises(ModelOverloadedError):  # the worker is still busy with the step
        model.call("pid", timeout=30)
    release.write_text("go")
    wait_until(lambda: model.health()["inflight"] == 0, 30, "the worker to end the closed stream's generator")
    assert model.call("pid", timeout=30) == pid
    assert model.health()["restarts"] == 0
    model.close()


def test_a_stream_closed_during_a_step_longer_than_its_timeout_has_its_worker_restarted(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    marker, never = tmp_path / "running", tmp_path / "never"
    _close_during_a_step(model, marker, never, timeout=2)
    # Nobody reads it, but its idle timeout still holds: the hung worker is killed and restarted, as for a reader
    _restarted_for_a_timeout(model, pid)


def test_an_abandoned_call_answered_as_its_timer_kills_the_worker_gives_its_place_to_no_call_before_the_kill(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    marker, release = tmp_path / "running", tmp_path / "release"
    marker2, release2 = tmp_path / "running2", tmp_path / "release2"

    class AnswerAsTheTimerFires(logging.Handler):
        """The abandoned call's answer comes between its timer's decision and the kill (which logs first)."""

        def emit(self, record: logging.LogRecord) -> None:
            if "after its caller had gone" not in record.getMessage():
                return
            release.write_text("go")
            # Until the next call runs in the doomed worker, or the answer was read and its place is still held
            _poll(lambda: marker2.exists() or (model.health()["inflight"], model.health()["queued"]) == (0, 1))

    handler = AnswerAsTheTimerFires()
    logger = logging.getLogger("autoglm_runtime.isolation.workers.process")
    logger.addHandler(handler)
    try:

        async def scenario() -> tuple[Any, int]:
            await _cancel_while_running(model.acall("wait", str(marker), str(release), timeout=1), marker)
            second = asyncio.create_task(model.acall("wait", str(marker2), str(release2), timeout=30))
            while model.health()["restarts"] == 0:  # the late abandoned call got its worker killed
                await asyncio.sleep(0.01)
            release2.write_text("go")
            return await asyncio.gather(second, return_exceptions=True), pid_in(marker2)

        answer, ran_in = asyncio.run(scenario())
    finally:
        logger.removeHandler(handler)
    assert (answer, ran_in != pid) == (["done"], True)  # it ran in the restarted worker, not killed in the old one
    health = model.health()
    assert (health["restarts"], health["inflight"], health["queued"]) == (1, 0, 0)
    model.close()


def _poll(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``condition()`` or ``timeout`` s passed, quietly (inside a log handler: no exception may leave)."""
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.001)


def test_cancels_racing_the_answers_leave_every_max_inflight_place_free_and_no_more(
    load: Callable[..., Any], tmp_path: Path
) -> None:
    model = load('concurrency = "threads"\nmax_inflight = 2')
    rng = random.Random(7)

    async def storm() -> None:
        # Each call cancelled at a random moment: in the queue, while running, or as its answer comes
        loop, tasks = asyncio.get_running_loop(), []
        for _ in range(300):
            tasks.append(asyncio.create_task(model.acall("nap", rng.random() * 0.002, timeout=30)))
            loop.call_later(rng.random() * 0.01, tasks[-1].cancel)
            await asyncio.sleep(rng.random() * 0.002)
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(storm())
    wait_until(lambda: model.health()["inflight"] == 0, 30, "the abandoned calls to be answered")
    # Exactly max_inflight places: two calls run at once (none leaked), a third waits in the queue (none extra)
    release = tmp_path / "release"
    running = [
        in_background(model.call, "wait", str(tmp_path / f"running{n}"), str(release), timeout=60) for n in (0, 1)
    ]
    wait_until(lambda: all((tmp_path / f"running{n}").exists() for n in (0, 1)), 30, "two calls to run")
    third = in_background(model.call, "wait", str(tmp_path / "running2"), str(release), timeout=60)
    queued = outcome(wait_until, lambda: model.health()["queued"] == 1, 10)
    release.write_text("go")
    for thread, _ in [*running, third]:
        thread.join()
    assert (queued, [out for _, out in [*running, third]]) == (None, [["done"]] * 3)
    assert model.health()["restarts"] == 0
    model.close()


def test_close_leaves_no_thread_though_a_daemon_the_model_started_holds_its_output(load: Callable[..., Any]) -> None:
    model = load()
    pid = model.call("pid", timeout=30)
    daemon = model.call("daemon", timeout=30)
    try:
        model.close()  # the worker's output pipes stay open in the daemon
        assert [t.name for t in threading.enumerate() if t.name.endswith(f"-{pid}")] == []
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_a_burst_of_calls_to_a_worker_that_died_idle_all_run_on_its_restarted_worker(load: Callable[..., Any]) -> None:
    model = load('concurrency = "threads"\nmax_inflight = 8')
    for _ in range(5):  # the callers race one another to find the death: every order must work
        pid = model.call("pid", timeout=30)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda pid=pid: _exited(pid), 30, f"every thread of worker {pid} to exit")  # its socket is closed
        start = threading.Barrier(8)
        callers = [in_background(_at_once, start, model) for _ in range(8)]
        for thread, _ in callers:
            thread.join()
        answers = [out[0] for _, out in callers]
        assert [type(answer) for answer in answers] == [int] * 8, answers  # none of them reached the dead worker
        assert len(set(answers)) == 1
        assert pid not in answers
    assert model.health()["restarts"] == 5
    model.close()


@pytest.mark.parametrize("others", [0, 1], ids=["alone", "with-another-call-in-flight"])
def test_a_blocking_call_whose_worker_died_after_it_had_the_request_is_not_run_again(
    load: Callable[..., Any], tmp_path: Path, others: int
) -> None:
    model = load('concurrency = "threads"\nmax_inflight = 2')
    marker, never, ran = tmp_path / "running", tmp_path / "never", tmp_path / "ran"
    busy = [in_background(model.call, "wait", str(marker), str(never), timeout=60) for _ in range(others)]
    if others:
        wait_until(marker.exists, 30, "the other call to run")
    # Its request was written in full: the broken connection that follows must fail it, not send it again
    with pytest.raises(WorkerError, match=r"died during once_then_exit\(\): exited with status 3"):
        model.call("once_then_exit", str(ran), timeout=30)
    for thread, out in busy:
        thread.join()
        assert isinstance(out[0], WorkerError)
    assert ran.read_text() == "ran\n"
    assert model.health()["restarts"] == 0  # (restarted by the next call)
    model.close()


def _at_once(start: threading.Barrier, model: Any) -> Any:
    start.wait()
    return model.call("pid", timeout=30)


def _exited(pid: int) -> bool:
    """Whether every thread of process ``pid`` has exited (a zombie's leader is listed until the last one has: the
    process's files, its socket among them, are closed only then)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return threads == [str(pid)] and state == "Z"


async def _cancel_while_running(call: Coroutine[Any, Any, Any], marker: Path) -> None:
    """Run ``call`` in a task and cancel it once the model has written ``marker`` (it is running in the worker)."""
    task = asyncio.create_task(call)
    while not marker.exists():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_calls_wait_for_the_live_replica_not_fail_on_one_given_up(
    wheelhouse: Path, env_root: Path, make_model: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with ModelLoader(
        env_root, wheelhouse=wheelhouse, offline=True, backend="process", heartbeat_interval=None, max_restarts=0
    ) as loader:
        model = _load(loader, make_model, _named(request), MODEL, "replicas = 2")
        with pytest.raises(WorkerError):
            model.call("exit", timeout=30)  # replica 0 dies
        with pytest.raises(WorkerError, match="gave up after 0 restarts"):
            model.call("pid", timeout=30)  # and the next call to it gives it up (max_restarts=0)
        assert [replica["state"] for replica in model.health()["replicas"]] == ["failed", "ready"]
        marker, release = tmp_path / "running", tmp_path / "release"
        busy, first = in_background(model.call, "wait", str(marker), str(release), timeout=30)
        wait_until(marker.exists, 30, "the live replica to be busy")
        waiting, second = in_background(model.call, "pid", timeout=30)
        queued = outcome(wait_until, lambda: model.health()["queued"] == 1, 10)
        release.write_text("go")
        busy.join()
        waiting.join()
        assert (first, queued, second) == (["done"], None, [int(marker.read_text())])


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_stream_past_its_idle_timeout_keeps_its_place_until_its_worker_was_killed(
    load: Callable[..., Any], tmp_path: Path, flavour: str
) -> None:
    # Freed before the kill, the place could go to a queued call sent into the worker about to be killed (E0103).
    model = load()
    pid = model.call("pid", timeout=30)
    marker, release = tmp_path / "running", tmp_path / "never"
    held: list[int] = []

    class AtTheKill(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for its next chunk" in record.getMessage():
                held.append(model.health()["inflight"])

    handler = AtTheKill()
    logger = logging.getLogger("autoglm_runtime.isolation.workers.process")
    logger.addHandler(handler)
    try:
        if flavour == "sync":
            with model.stream("steps", str(marker), str(release), timeout=1) as chunks:
                assert next(chunks) == 1
                with pytest.raises(ModelTimeoutError):
                    next(chunks)
        else:

            async def read() -> None:
                chunks = model.astream("steps", str(marker), str(release), timeout=1)
                assert await chunks.__anext__() == 1
                with pytest.raises(ModelTimeoutError):
                    await chunks.__anext__()
                await chunks.aclose()

            asyncio.run(read())
    finally:
        logger.removeHandler(handler)
    assert held == [1]  # the stream still held its place while its worker was killed
    _restarted_for_a_timeout(model, pid)
