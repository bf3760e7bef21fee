"""Real workers on the small-call fast paths: a lone call that reads its own reply, liveness without a system call
(a worker that died idle is found by the failed write), the lean path of calls that start no span, the encoder each
thread keeps."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from integration.isolation._helpers import log_line
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests._support.telemetry import Delta

from autoglm_runtime.errors import AutoGLMRuntimeError, ModelCallError
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.observability import _tracing
from autoglm_runtime.testing import wait_until

pytestmark = pytest.mark.slow

MODEL = """
import contextlib
import os
import conflictlib

class Model:
    def echo(self, value):
        return value

    def pid(self):
        return os.getpid()

    def fail(self):
        raise ValueError("bad input: 42")

def load():
    return Model()
"""


@pytest.fixture
def model(loader: ModelLoader, make_model: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    loaded = loader.load(make_model(f"fast-{request.node.name[5:40]}".replace("_", "-"), MODEL))
    yield loaded
    loaded.close()


def _exited(pid: int) -> bool:
    """Exited, all its threads too, and not reaped (``WNOWAIT``): the host has not looked at it since it died. (A
    zombie in ``/proc`` is not enough: its other threads may still be exiting, and until they are gone it holds
    its socket open and no ``wait`` reports it.)"""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def test_a_worker_that_died_while_idle_is_restarted_by_the_next_call(model: Any) -> None:
    pid = model.call("pid", timeout=30)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _exited(pid), 30, f"worker {pid} to die")
    assert model.call("pid", timeout=30) != pid  # not "died during pid()": the call never reached the dead one
    health = model.health()
    assert (health["state"], health["restarts"], health["last_exit"]) == ("ready", 1, "killed by signal 9 (SIGKILL)")


def test_lone_calls_one_after_another_get_their_own_results_and_errors(model: Any) -> None:
    for i in range(50):
        assert model.call("echo", {"i": i, "data": bytes([i]) * i}, timeout=30) == {"i": i, "data": bytes([i]) * i}
    with pytest.raises(ModelCallError, match="raised ValueError: bad input: 42 in fail"):
        model.call("fail", timeout=30)
    assert model.call("echo", [b"after", bytearray(b"error")], timeout=30) == [b"after", bytearray(b"error")]
    assert model.health()["inflight"] == 0


def test_callers_on_many_threads_each_get_their_own_result(model: Any) -> None:
    results: dict[int, list[Any]] = {}

    def caller(n: int) -> None:
        results[n] = [model.call("echo", [n, i, bytes([n]) * 3], timeout=60) for i in range(40)]

    threads = [threading.Thread(target=caller, args=(n,), name=f"test-caller-{n}") for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [[n, i, bytes([n]) * 3] for i in range(40)] for n in range(6)}


def test_a_bytearray_argument_can_grow_after_the_call(model: Any) -> None:
    value = bytearray(b"abc")
    assert model.call("echo", value, timeout=30) == bytearray(b"abc")
    value.extend(b"d")  # BufferError if the host's kept encoder still held a view of it
    assert model.call("echo", value, timeout=30) == bytearray(b"abcd")


SLOW_MODEL = """
import os, threading

class Model:
    def echo(self, value):
        return value

    def pid(self):
        return os.getpid()

    def fail(self):
        raise ValueError("bad input: 42")

    def hang(self):
        threading.Event().wait()

def load():
    return Model()
"""

OUTCOMES = ("ok", "E0105", "E0305", "E0103")


def _calls_moved(name: str) -> Delta:
    return Delta(
        *[("autoglm_worker_calls_total", {"model": name, "outcome": o}) for o in OUTCOMES],
        ("autoglm_worker_call_duration_seconds_count", {"model": name}),
    )


def _counts(moved: Delta, name: str) -> list[float]:
    changes = moved.moved()
    return [changes[f"autoglm_worker_calls_total{{model={name},outcome={o}}}"] for o in OUTCOMES] + [
        changes[f"autoglm_worker_call_duration_seconds_count{{model={name}}}"]
    ]


def _run_sequence(model: Any) -> list[Any]:
    """Results and errors of lone calls: plain values, binary ones, a model error, a timeout, a call after it."""
    seen: list[Any] = [
        model.call("echo", b"x" * 1024, timeout=30),
        model.call("echo", {"i": 1, "data": [b"a", bytearray(b"b")]}, timeout=30),
        model.call("echo", value=[1, "two", None], timeout=30),
    ]
    for method, timeout in (("fail", 30.0), ("hang", 0.5)):
        with pytest.raises(AutoGLMRuntimeError) as info:
            model.call(method, timeout=timeout)
        seen.append((info.value.code, str(info.value).split(";")[0]))
    seen.append(model.call("echo", b"after the timeout", timeout=60))  # on the restarted worker
    return seen


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans on: the model-call tracer of an SDK provider recording into memory (calls take the traced path)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "_TRACER", provider.get_tracer("autoglm_runtime"))
    yield exporter
    provider.shutdown()


def test_lone_calls_without_spans_answer_fail_and_count_exactly_as_traced_calls_do(
    loader: ModelLoader, make_model: Any, monkeypatch: pytest.MonkeyPatch, recording: InMemorySpanExporter
) -> None:
    name = "fast-compare"
    model = loader.load(make_model(name, SLOW_MODEL))
    try:
        moved = _calls_moved(name)
        traced = _run_sequence(model)
        assert _counts(moved, name) == [4, 1, 1, 0, 6]
        assert len(recording.get_finished_spans()) == 6

        recording.clear()
        monkeypatch.setattr(_tracing, "_TRACER", trace.NoOpTracer())  # no span: the lean path
        moved = _calls_moved(name)
        lean = _run_sequence(model)
        assert _counts(moved, name) == [4, 1, 1, 0, 6]
        assert recording.get_finished_spans() == ()
        assert lean == traced
        assert lean[3][0] == "E0105"
        assert lean[4] == ("E0305", f"E0305: model '{name}' did not answer hang() within 0.5 s")
        assert model.health()["restart_reasons"] == {"timeout": 2}
    finally:
        model.close()


def test_a_worker_killed_while_idle_is_restarted_by_a_lone_call_counted_once_as_ok(
    loader: ModelLoader, make_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tracing, "_TRACER", trace.NoOpTracer())
    name = "fast-killed-idle"
    model = loader.load(make_model(name, SLOW_MODEL))
    try:
        for _ in range(3):
            pid = model.call("pid", timeout=30)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: _exited(pid), 30, f"worker {pid} to die")
            moved = _calls_moved(name)
            assert model.call("echo", b"x" * 1024, timeout=30) == b"x" * 1024
            assert _counts(moved, name) == [1, 0, 0, 0, 1]
        health = model.health()
        assert (health["state"], health["restarts"], health["inflight"]) == ("ready", 3, 0)
        assert health["last_exit"] == "killed by signal 9 (SIGKILL)"
    finally:
        model.close()


def test_lone_calls_beside_concurrent_callers_each_get_their_own_result_and_count_once(
    loader: ModelLoader, make_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tracing, "_TRACER", trace.NoOpTracer())
    name = "fast-beside"
    model = loader.load(make_model(name, SLOW_MODEL))
    try:
        moved = _calls_moved(name)
        results: dict[int, list[Any]] = {}

        def caller(n: int) -> None:
            results[n] = [model.call("echo", [n, i, bytes([n]) * 3], timeout=60) for i in range(30)]

        alone = [model.call("echo", bytes([i]) * 100, timeout=60) for i in range(20)]  # lone, nothing else runs
        threads = [threading.Thread(target=caller, args=(n,), name=f"test-caller-{n}") for n in range(4)]
        for thread in threads:
            thread.start()
        beside = [model.call("echo", {"main": i}, timeout=60) for i in range(30)]  # while the others call
        for thread in threads:
            thread.join()
        assert alone == [bytes([i]) * 100 for i in range(20)]
        assert beside == [{"main": i} for i in range(30)]
        assert results == {n: [[n, i, bytes([n]) * 3] for i in range(30)] for n in range(4)}
        assert _counts(moved, name) == [170, 0, 0, 0, 170]
        assert model.health()["inflight"] == 0
    finally:
        model.close()


BLOB_MODEL = """
class Model:
    def echo(self, value):
        return value

    def kind(self, value):
        return [type(value).__name__, len(value)]

    def upper(self, value):
        return value.upper()

    def fail(self, value):
        raise ValueError(f"bad blob of {len(value)} bytes")

def load():
    return Model()
"""


def _blob_sequence(model: Any) -> list[Any]:
    """Lone-blob calls (one bytes argument, or a bytes result) read off their frames without decoding JSON on both
    sides: each arrives as bytes, the model's error as the general path raises it."""
    seen: list[Any] = []
    for size in (0, 1, 1024, 16 * 1024, 16 * 1024 + 1, 200_000):
        blob = bytes(range(256)) * (size // 256) + b"q" * (size % 256)
        echoed = model.call("echo", blob, timeout=30)
        seen.append((type(echoed).__name__, echoed == blob))
        seen.append(model.call("kind", blob, timeout=30))
    upper = model.call("upper", b"abc", timeout=30)
    seen.append((type(upper).__name__, upper))
    with pytest.raises(ModelCallError) as info:
        model.call("fail", b"x" * 1024, timeout=30)
    seen.append((info.value.code, str(info.value).split("\n")[0]))
    return seen


def test_lone_blob_calls_arrive_as_bytes_fail_and_count_as_traced_ones_do(
    loader: ModelLoader, make_model: Any, monkeypatch: pytest.MonkeyPatch, recording: InMemorySpanExporter
) -> None:
    name = "fast-blob"
    model = loader.load(make_model(name, BLOB_MODEL))
    try:
        moved = _calls_moved(name)
        traced = _blob_sequence(model)  # frames carry a traceparent: decoded whole on the worker
        assert _counts(moved, name) == [13, 1, 0, 0, 14]
        monkeypatch.setattr(_tracing, "_TRACER", trace.NoOpTracer())
        moved = _calls_moved(name)
        lean = _blob_sequence(model)
        assert _counts(moved, name) == [13, 1, 0, 0, 14]
        assert lean == traced
        assert lean[:4] == [("bytes", True), ["bytes", 0], ("bytes", True), ["bytes", 1]]
        assert lean[-2] == ("bytes", b"ABC")
        assert lean[-1][0] == "E0105"
        assert "raised ValueError: bad blob of 1024 bytes in fail" in lean[-1][1]
        assert model.health()["inflight"] == 0
    finally:
        model.close()


NOTE_MODEL = """
import logging

log = logging.getLogger("note")

class Model:
    def note(self, blob):
        log.warning("noted %d bytes", len(blob))
        return blob

def load():
    return Model()
"""


def test_a_lean_blob_call_under_a_remote_parent_carries_its_trace_context_to_the_worker(
    loader: ModelLoader, make_model: Any, monkeypatch: pytest.MonkeyPatch, worker_log: io.StringIO
) -> None:
    """No span is started (no provider), but a trace context the caller attached (an upstream traceparent) still
    travels: the worker's log line carries its ids; with nothing attached (or only other context values), none."""
    monkeypatch.setattr(_tracing, "_TRACER", trace.NoOpTracer())
    model = loader.load(make_model("fast-remote-parent", NOTE_MODEL))
    try:
        remote = trace.SpanContext(
            0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, trace.TraceFlags(trace.TraceFlags.SAMPLED)
        )
        with trace.use_span(trace.NonRecordingSpan(remote)):
            assert model.call("note", b"x" * 1001, timeout=30) == b"x" * 1001
        line = log_line(worker_log, "noted 1001 bytes")
        assert (line["trace_id"], line["span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
        assert model.call("note", b"y" * 1002, timeout=30) == b"y" * 1002
        token = otel_context.attach(otel_context.set_value("unrelated", 1))
        try:
            assert model.call("note", b"z" * 1003, timeout=30) == b"z" * 1003
        finally:
            otel_context.detach(token)
        for size in (1002, 1003):
            line = log_line(worker_log, f"noted {size} bytes")
            assert (line.get("trace_id"), line.get("span_id")) == (None, None)
    finally:
        model.close()


FORKING_MODEL = """
import os, signal, subprocess, sys, time

class Model:
    def pid(self):
        return os.getpid()

    def fork_sleeper(self):
        child = os.fork()  # as multiprocessing's "fork" start method does: the child gets every descriptor
        if child == 0:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
            while True:
                time.sleep(3600)
        return child

    def spawn_sleeper(self):  # a program started keeping every descriptor it may inherit
        code = "import time\\nwhile True: time.sleep(3600)"
        return subprocess.Popen([sys.executable, "-c", code], close_fds=False).pid

def load():
    return Model()
"""


@pytest.mark.parametrize("start", ["fork_sleeper", "spawn_sleeper"])
def test_a_worker_killed_while_idle_with_a_child_alive_is_restarted_by_the_next_call(
    loader: ModelLoader, make_model: Any, start: str
) -> None:
    # A forked child holds a copy of every descriptor, a program started with close_fds=False every inheritable
    # one: were the worker's socket among them, a request to the dead worker would be written without error and
    # never answered (the call would wait out its timeout).
    model = loader.load(make_model(f"fast-{start.replace('_', '-')}", FORKING_MODEL))
    child = model.call(start, timeout=30)
    try:
        pid = model.call("pid", timeout=30)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _exited(pid), 30, f"worker {pid} to die")
        assert model.call("pid", timeout=30) != pid
        assert model.health()["last_exit"] == "killed by signal 9 (SIGKILL)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        model.close()


def test_a_worker_loaded_under_a_default_socket_timeout_serves_large_replies(
    loader: ModelLoader, make_model: Any
) -> None:
    # socket.setdefaulttimeout (set by many apps) makes socketpair() non-blocking at the OS level; the worker's end
    # must not stay so (its reads would spin, its large writes fail with BlockingIOError).
    import socket

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        loaded = loader.load(make_model("fast-default-timeout", MODEL))
    finally:
        socket.setdefaulttimeout(previous)
    try:
        payload = os.urandom(8 << 20)
        assert loaded.call("echo", payload, timeout=60) == payload
        assert loaded.call("echo", [payload, b"x"], timeout=60) == [payload, b"x"]
    finally:
        loaded.close()
