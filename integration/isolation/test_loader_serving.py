"""Real workers serving real traffic: binary payloads, streams, concurrency, replicas, overload, heartbeats, drain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integration.isolation._helpers import in_background, pid_in
from tests.isolation.workers._helpers import exact

from autoglm_runtime.errors import ManifestError, ModelCallError, ModelOverloadedError, ModelTimeoutError, WorkerError
from autoglm_runtime.isolation import ModelLoader

pytestmark = pytest.mark.slow

MODEL = """
import os, sys, threading, time

def _wait_for(path, limit=60.0):
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path + " never appeared")
        time.sleep(0.005)

class Model:
    def __init__(self):
        self.barrier = None
        self.lock = threading.Lock()

    def echo(self, value):
        return value

    def pid(self):
        return os.getpid()

    def describe(self, value):
        return {"type": type(value).__module__ + "." + type(value).__name__, "numpy": "numpy" in sys.modules,
                "dtype": getattr(getattr(value, "dtype", None), "str", getattr(value, "dtype", None)),
                "shape": list(getattr(value, "shape", ())),
                "data": bytes(memoryview(value.data).cast("B")) if hasattr(value, "data") else None}

    def block(self, directory, key):
        # say "I am running" (one file per call), then wait until the test says "go"
        partial = os.path.join(directory, "partial-" + str(key))
        open(partial, "w").write(str(os.getpid()))
        os.replace(partial, os.path.join(directory, "running-" + str(key)))  # the test reads it once it exists
        _wait_for(os.path.join(directory, "go"))
        return [key, os.getpid()]

    def meet(self, parties, key):
        with self.lock:
            if self.barrier is None:
                self.barrier = threading.Barrier(parties, timeout=60)
        self.barrier.wait()  # only returns once `parties` calls run at the same time
        return key

    def generate(self, directory, count):
        try:
            for i in range(count):
                yield {"i": i, "pid": os.getpid()}
                if i == 0:  # the host must get the first chunk before the generator goes on
                    _wait_for(os.path.join(directory, "first-seen"))
        finally:
            open(os.path.join(directory, "closed"), "w").write("1")

    def endless(self, directory):
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            open(os.path.join(directory, "closed"), "w").write("1")

    def stall(self, directory):
        yield "first"
        open(os.path.join(directory, "stalled"), "w").write(str(os.getpid()))
        threading.Event().wait()

    def not_a_generator(self):
        return 1

def load():
    return Model()
"""

ASYNC_MODEL = """
import asyncio, os

class Model:
    async def double(self, value):
        await asyncio.sleep(0)
        return value * 2

    async def count(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

def load():
    return Model()
"""


@pytest.fixture(scope="module")
def loader(wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    with ModelLoader(
        env_root,
        wheelhouse=wheelhouse,
        offline=True,
        backend="process",
        max_restarts=3,
        backoff=0.01,
        heartbeat_interval=0.2,
        heartbeat_timeout=2.0,
    ) as loader:
        yield loader


def _wait(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    event = threading.Event()
    waited = 0.0
    while True:
        value = condition()
        if value:
            return value
        if waited > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        event.wait(0.01)
        waited += 0.01


@pytest.fixture(scope="module")
def echo(loader: ModelLoader, make_model: Any) -> Any:
    return loader.load(make_model("serving-echo", MODEL))


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
BINARY = st.binary(max_size=300_000) | st.binary().map(bytearray) | st.binary().map(memoryview)
ARRAYS = st.builds(
    lambda dtype, values: np.array(values, dtype=dtype),
    st.sampled_from(["<f4", "<f8", "<i8", "u1", "<i2", "?"]),
    st.lists(st.integers(0, 100), max_size=50),
)
VALUES = st.recursive(
    SCALARS | BINARY | ARRAYS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text() | st.just("$b"), children, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(VALUES)
def test_payloads_round_trip_exactly_through_a_real_worker(echo: Any, value: Any) -> None:
    # The model's environment has no numpy: arrays cross it as ArrayValue and come back as numpy arrays.
    assert exact(echo.call("echo", value, timeout=60), value)


def test_numpy_only_on_the_host_side(echo: Any) -> None:
    array = np.arange(6, dtype="<f4").reshape(2, 3)
    seen = echo.call("describe", array, timeout=60)
    assert seen == {
        "type": "_autoglm_scripts.codec.ArrayValue",  # the wire format, a package of a private name in the worker
        "numpy": False,
        "dtype": "<f4",
        "shape": [2, 3],
        "data": array.tobytes(),
    }


def test_numpy_on_both_sides(loader: ModelLoader, make_model: Any, numpy_wheelhouse: Path) -> None:
    code = (
        MODEL
        + "\nimport numpy\ndef make(self):\n    return numpy.arange(6, dtype='<i8').reshape(3, 2)\nModel.make = make\n"
    )
    model = loader.load(make_model("serving-numpy", code, requirements=(f"numpy=={np.__version__}",)))
    try:
        made = model.call("make", timeout=60)
        assert isinstance(made, np.ndarray)
        assert made.tolist() == [[0, 1], [2, 3], [4, 5]]
        seen = model.call("describe", np.ones(3, dtype="<f8"), timeout=60)
        assert (seen["type"], seen["numpy"], seen["dtype"], seen["shape"]) == ("numpy.ndarray", True, "<f8", [3])
        assert seen["data"] == np.ones(3, dtype="<f8").tobytes()
        assert model.versions["numpy"]["version"] == np.__version__
    finally:
        model.close()


def test_stream_yields_the_first_chunk_before_the_generator_ends(echo: Any, tmp_path: Path) -> None:
    with echo.stream("generate", str(tmp_path), 4, timeout=60) as chunks:
        first = next(chunks)
        assert first["i"] == 0
        assert not (tmp_path / "closed").exists()  # the generator is still waiting for us
        (tmp_path / "first-seen").write_text("1")
        assert [chunk["i"] for chunk in chunks] == [1, 2, 3]
    assert (tmp_path / "closed").exists()
    assert echo.health()["inflight"] == 0


def test_closing_a_stream_early_closes_the_generator_and_frees_the_worker(echo: Any, tmp_path: Path) -> None:
    pid = echo.call("pid", timeout=60)
    chunks = echo.stream("endless", str(tmp_path), timeout=60)
    assert [next(chunks) for _ in range(3)] == [0, 1, 2]
    chunks.close()
    _wait((tmp_path / "closed").exists, "the generator's finally block ran in the worker")
    assert echo.call("echo", "next", timeout=60) == "next"  # a serial worker: free again
    assert echo.call("pid", timeout=60) == pid
    assert echo.health()["inflight"] == 0


def test_a_stream_the_garbage_collector_finds_inside_its_connections_critical_section_is_closed_once_it_ends(
    echo: Any, tmp_path: Path
) -> None:
    # The garbage collector may finalize a stream in a reference cycle on a thread inside the connection's
    # critical section (wherever an allocation sets it off): closing there must not wait for that thread itself.
    holder: list[Any] = [echo.stream("endless", str(tmp_path), timeout=60)]
    holder.append(holder)  # a cycle: only the garbage collector finds the stream dropped
    assert next(holder[0]) == 0
    conn = holder[0]._inner._state.conn  # (the pool's stream inside the observed one)
    del holder

    def drop_holding_the_lock() -> None:
        with conn._lock:
            gc.collect()  # __del__ runs here, on a thread holding the connection's lock

    thread = threading.Thread(target=drop_holding_the_lock, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "dropping the stream waited for a lock its own thread holds"
    _wait((tmp_path / "closed").exists, "the generator's finally block ran in the worker")
    assert echo.call("echo", "next", timeout=60) == "next"  # a serial worker: free again
    assert echo.health()["inflight"] == 0


def test_a_stream_of_something_else_is_a_model_call_error(echo: Any) -> None:
    with pytest.raises(ModelCallError) as info:
        list(echo.stream("not_a_generator", timeout=60))
    assert info.value.code == "E0105"
    assert "not_a_generator() returned an int, not a generator: use call()" in str(info.value)


def test_stream_idle_timeout_raises_e0305_and_restarts_the_worker(
    loader: ModelLoader, make_model: Any, tmp_path: Path, wait_gone: Any
) -> None:
    model = loader.load(make_model("serving-idle", MODEL))
    try:
        pid = model.call("pid", timeout=60)
        chunks = model.stream("stall", str(tmp_path), timeout=1.0)
        assert next(chunks) == "first"
        with pytest.raises(ModelTimeoutError) as info:
            next(chunks)
        assert info.value.message == (
            "model 'serving-idle' did not answer stall() within 1 s (waiting for its next chunk); its worker was "
            "killed and is restarting: raise the timeout if the model is merely slow"
        )
        assert wait_gone(pid, 10.0)
        assert model.call("pid", timeout=60) != pid
        assert model.health()["restart_reasons"] == {"timeout": 1}
    finally:
        model.close()


def test_concurrent_calls_on_one_thread_safe_worker(loader: ModelLoader, make_model: Any) -> None:
    model = loader.load(make_model("serving-threads", MODEL), concurrency="threads", max_inflight=4)
    try:
        callers = [in_background(model.call, "meet", 4, f"key-{i}", timeout=60) for i in range(4)]
        for thread, _ in callers:
            thread.join()
        assert [out for _, out in callers] == [[f"key-{i}"] for i in range(4)]
    finally:
        model.close()


def test_replicas_serve_at_the_same_time_least_loaded_first(
    loader: ModelLoader, make_model: Any, tmp_path: Path
) -> None:
    model = loader.load(make_model("serving-replicas", MODEL), replicas=2)
    try:
        pids = {replica["pid"] for replica in model.health()["replicas"]}
        assert len(pids) == 2
        callers = [in_background(model.call, "block", str(tmp_path), i, timeout=60) for i in range(2)]
        _wait(lambda: len(list(tmp_path.glob("running-*"))) == 2, "both calls running")
        running = {int(path.read_text()) for path in tmp_path.glob("running-*")}
        assert running == pids  # one call on each replica, at once
        (tmp_path / "go").write_text("1")
        for thread, _ in callers:
            thread.join()
        assert sorted(out[0][0] for _, out in callers) == [0, 1]
    finally:
        model.close()


def test_overload_is_refused_with_e0106(loader: ModelLoader, make_model: Any, tmp_path: Path) -> None:
    model = loader.load(make_model("serving-overload", MODEL), max_queue=1)
    try:
        running = in_background(model.call, "block", str(tmp_path), "a", timeout=60)
        _wait((tmp_path / "running-a").exists, "the first call running")
        queued = in_background(model.call, "echo", "b", timeout=60)
        _wait(lambda: model.health()["queued"] == 1, "the second call queued")
        with pytest.raises(ModelOverloadedError) as info:
            model.call("echo", "c", timeout=60)
        error = info.value
        assert (error.code, error.http_status, error.grpc_status, error.retry_after) == (
            "E0106",
            503,
            "RESOURCE_EXHAUSTED",
            1.0,
        )
        assert error.message == (
            "model 'serving-overload' is overloaded: its 1 replica(s) each run max_inflight=1 calls and 1 more wait "
            "in its queue (max_queue=1); echo() was refused without running: retry after 1 s, or raise replicas, "
            "max_inflight or max_queue in its [serving] table"
        )
        (tmp_path / "go").write_text("1")
        for thread, _ in (running, queued):
            thread.join()
        assert running[1][0][0] == "a"
        assert queued[1] == ["b"]
    finally:
        model.close()


def test_a_replica_killed_mid_call_fails_only_its_calls(
    loader: ModelLoader, make_model: Any, tmp_path: Path, wait_gone: Any
) -> None:
    model = loader.load(make_model("serving-kill", MODEL), replicas=2)
    try:
        callers = [in_background(model.call, "block", str(tmp_path), i, timeout=60) for i in range(2)]
        _wait(lambda: len(list(tmp_path.glob("running-*"))) == 2, "both calls running")
        victim = int((tmp_path / "running-0").read_text())
        survivor = int((tmp_path / "running-1").read_text())
        os.kill(victim, signal.SIGKILL)
        callers[0][0].join()
        error = callers[0][1][0]
        assert isinstance(error, WorkerError)
        assert error.message == (
            f"model 'serving-kill' worker (pid {victim}) died during block(): killed by signal 9 (SIGKILL); the next "
            "call restarts it"
        )
        assert callers[1][0].is_alive()  # the other replica's call is untouched, still running
        (tmp_path / "go").write_text("1")
        callers[1][0].join()
        assert callers[1][1] == [[1, survivor]]
        assert wait_gone(victim, 10.0)
        assert model.health()["restart_reasons"] == {"signal": 1}
        assert sorted(model.call("echo", i, timeout=60) for i in range(4)) == [0, 1, 2, 3]
    finally:
        model.close()


def test_a_worker_that_stops_answering_heartbeats_is_restarted(
    loader: ModelLoader, make_model: Any, wait_gone: Any
) -> None:
    model = loader.load(make_model("serving-heartbeat", MODEL))
    try:
        pid = model.call("pid", timeout=60)
        os.kill(pid, signal.SIGSTOP)  # hung between calls: alive, but answering nothing
        _wait(lambda: model.health()["restart_reasons"].get("heartbeat") == 1, "a restart for missed heartbeats")
        assert wait_gone(pid, 10.0)
        assert model.call("pid", timeout=60) != pid
        health = model.health()
        assert health["last_exit"] is not None
        assert health["last_exit"].startswith("answered no heartbeat for ")
        assert health["last_exit"].endswith(" s (limit 2 s)")
    finally:
        model.close()


def test_writing_a_large_argument_is_bounded_by_the_call_timeout(
    loader: ModelLoader, make_model: Any, tmp_path: Path, wait_gone: Any
) -> None:
    model = loader.load(make_model("serving-write", MODEL), concurrency="threads", max_inflight=4)
    pid = 0
    try:
        running = in_background(model.call, "block", str(tmp_path), 0, timeout=60)
        pid = pid_in(tmp_path / "running-0")
        os.kill(pid, signal.SIGSTOP)  # alive but reading nothing: a large write to it fills the socket and stalls
        writing = in_background(model.call, "echo", b"w" * (32 << 20), timeout=3)
        writing[0].join(30)
        assert not writing[0].is_alive(), "the write outlived its call's timeout"
        error = writing[1][0]
        assert isinstance(error, ModelTimeoutError)
        assert error.message == (
            "model 'serving-write' did not answer echo() within 3 s (writing its arguments); its worker was killed "
            "and is restarting: raise the timeout if the model is merely slow"
        )
        running[0].join(30)
        killed = running[1][0]
        assert isinstance(killed, WorkerError)
        assert killed.message.startswith(
            f"model 'serving-write' worker (pid {pid}) was killed while block() was running: another call, echo(), "
            "timed out after 3 s; "
        )
        assert wait_gone(pid, 10.0)
        assert model.health()["restart_reasons"] == {"timeout": 1}
        assert model.call("echo", b"after", timeout=60) == b"after"
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # never left stopped, whatever happened above
        model.close()


def test_close_drains_calls_in_flight_then_stops_every_worker(
    loader: ModelLoader, make_model: Any, tmp_path: Path, wait_gone: Any
) -> None:
    model = loader.load(make_model("serving-drain", MODEL), replicas=2)
    pids = [replica["pid"] for replica in model.health()["replicas"]]
    running = in_background(model.call, "block", str(tmp_path), "a", timeout=60)
    _wait((tmp_path / "running-a").exists, "the call running")
    closing = in_background(model.close, drain_timeout=60)
    refused = _wait(lambda: _refused(model), "new calls refused while draining")
    assert refused.message == "model 'serving-drain' is closing; echo() was refused"
    assert closing[0].is_alive()  # still draining: the call in flight has not finished
    (tmp_path / "go").write_text("1")
    running[0].join()
    closing[0].join()
    assert running[1][0][0] == "a"
    assert closing[1] == [None]
    assert all(wait_gone(pid, 10.0) for pid in pids)
    assert "serving-drain" not in loader.models


def _refused(model: Any) -> WorkerError | None:
    try:
        model.call("echo", 1, timeout=60)
    except WorkerError as exc:
        return exc
    return None


def test_async_calls_and_streams_hold_no_thread_per_call(loader: ModelLoader, make_model: Any, tmp_path: Path) -> None:
    model = loader.load(make_model("serving-async", MODEL), concurrency="threads", max_inflight=8)

    async def scenario() -> tuple[list[Any], int, list[int]]:
        before = threading.active_count()
        tasks = [asyncio.ensure_future(model.acall("block", str(tmp_path), i, timeout=60)) for i in range(8)]
        while model.health()["inflight"] < 8:
            await asyncio.sleep(0.01)
        extra_threads = threading.active_count() - before  # eight calls in flight, not one thread more
        (tmp_path / "go").write_text("1")
        results = list(await asyncio.gather(*tasks))
        got: list[int] = []
        stream = model.astream("endless", str(tmp_path), timeout=60)
        async for chunk in stream:
            got.append(chunk)
            if len(got) == 3:
                break
        await stream.aclose()
        return results, extra_threads, got

    try:
        results, extra_threads, got = asyncio.run(scenario())
        assert [result[0] for result in results] == list(range(8))
        assert extra_threads == 0
        assert got == [0, 1, 2]
        _wait((tmp_path / "closed").exists, "the async stream's generator closed in the worker")
    finally:
        model.close()


def test_an_async_model_runs_on_the_workers_event_loop(loader: ModelLoader, make_model: Any) -> None:
    model = loader.load(make_model("serving-asyncmodel", ASYNC_MODEL), concurrency="async", max_inflight=16)

    async def run() -> tuple[list[int], list[int]]:
        doubled = await asyncio.gather(*(model.acall("double", i, timeout=60) for i in range(16)))
        counted = [i async for i in model.astream("count", 5, timeout=60)]
        return list(doubled), counted

    try:
        doubled, counted = asyncio.run(run())
        assert doubled == [2 * i for i in range(16)]
        assert counted == [0, 1, 2, 3, 4]
        assert list(model.stream("count", 3, timeout=60)) == [0, 1, 2]
    finally:
        model.close()


def test_serving_options_are_checked(loader: ModelLoader, make_model: Any) -> None:
    directory = make_model("serving-bad", MODEL)
    with (directory / "model.toml").open("a") as fh:
        fh.write('[serving]\nreplicas = 0\nconcurrency = "fast"\nspeed = 1\n')
    with pytest.raises(ManifestError) as info:
        loader.load(directory)
    assert info.value.message == (
        f"{directory / 'model.toml'} has 3 problems: serving.speed: unknown field; expected one of replicas, "
        "concurrency, "
        "max_inflight, max_queue; serving.replicas: must be a whole number >= 1, got 0; serving.concurrency: must "
        "be one of 'serial', 'threads', 'async', got 'fast'"
    )
    with pytest.raises(ManifestError) as info:
        loader.load(make_model("serving-bad2", MODEL), max_inflight=2)
    assert info.value.message == (
        "load('serving-bad2'): serving.max_inflight: 2 calls at once need concurrency = 'threads' (a thread-safe "
        "model) or 'async' (an async model); a serial model runs one call at a time"
    )


def test_close_leaves_no_process_or_thread(
    wheelhouse: Path, env_root: Path, make_model: Any, tmp_path: Path, no_leaked_children: None
) -> None:
    before = {thread.name for thread in threading.enumerate()}
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process", heartbeat_interval=0.1) as one:
        model = one.load(make_model("serving-close", MODEL), replicas=2, concurrency="threads", max_inflight=2)
        with model.stream("endless", str(tmp_path), timeout=60) as chunks:
            assert next(chunks) == 0
    assert {thread.name for thread in threading.enumerate()} - before == set()
