"""The line the example server prints after Ctrl-C, ``stopped: ...``, from what the stop really ended: a real loader
and real worker processes, one model loaded (one of its replicas dead before the stop), one loading at Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.testing import wait_until
from examples.model_server.started import WORKERS_LOGGER, Started

#: A model whose load() says it runs (a file named after its pid) and waits for a file ``go`` in its directory.
MODEL = """
import os, time

HERE = os.path.dirname(os.path.abspath(__file__))

class Model:
    def ping(self):
        return "pong"

def load():
    open(os.path.join(HERE, f"loading-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(HERE, "go")):
        time.sleep(0.01)
    return Model()
"""


def _model(base: Path, name: str, replicas: int) -> Path:
    directory = base / name
    directory.mkdir()
    (directory / "model.toml").write_text(
        f'[model]\nname = "{name}"\nentrypoint = "gated:load"\nrequirements = []\n\n[serving]\nreplicas = {replicas}\n'
    )
    (directory / "gated.py").write_text(MODEL)
    return directory


def _loader(tmp_path: Path) -> ModelLoader:
    return ModelLoader(tmp_path / "envs", offline=True, backend="process", heartbeat_interval=None)


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=WORKERS_LOGGER)  # as the server logs


@pytest.fixture
def ctrl_c() -> Iterator[threading.Event]:
    """SIGINT handled as the server's first Ctrl-C is: the stop begins (the event is set), then the main thread
    unwinds from wherever it is with KeyboardInterrupt."""
    stopping = threading.Event()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield stopping
    finally:
        signal.signal(signal.SIGINT, previous)


def _press_ctrl_c_once_loading(directory: Path) -> threading.Thread:
    def press() -> None:
        wait_until(lambda: any(directory.glob("loading-*")), 60, f"{directory.name}'s first worker to load")
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=press, name="test-ctrl-c")
    thread.start()
    return thread


def test_the_stopped_line_counts_the_workers_the_stop_ended_those_of_a_load_under_way_too(
    tmp_path: Path, ctrl_c: threading.Event
) -> None:
    # Before: it said "stopped: 2 model workers (aaa-served 2)": the replica dead before the stop counted as stopped,
    # and the worker of the model still loading, which the stop did end, was left out.
    served = _model(tmp_path, "aaa-served", replicas=2)
    (served / "go").touch()
    loading = _model(tmp_path, "zzz-loading", replicas=2)
    started = Started()
    presser: threading.Thread | None = None
    with (  # noqa: PT012 - the stop unwinds all of it, as the server's ExitStack does
        pytest.raises(KeyboardInterrupt),
        started.counting_stops(ctrl_c.is_set),
        _loader(tmp_path) as loader,
    ):
        model = loader.load(served)
        started.models.append(model)
        assert model.call("ping", timeout=60) == "pong"
        dead = model.health()["replicas"][1]["pid"]
        assert dead is not None
        os.kill(dead, signal.SIGKILL)  # a replica that is not running when the stop comes: nothing to stop
        wait_until(lambda: model.health()["replicas"][1]["pid"] is None, 30, "the killed replica to be seen dead")
        presser = _press_ctrl_c_once_loading(loading)
        loader.load(loading)
    assert presser is not None
    presser.join()
    assert [path.name for path in loading.glob("loading-*")] != []
    assert started.stopped_line() == "stopped: 2 model workers (aaa-served 1, zzz-loading 1 mid-load)"
    assert [replica["pid"] for replica in model.health()["replicas"]] == [None, None]


def test_nothing_stopped_before_the_stop_counts(tmp_path: Path) -> None:
    # A worker stopped while the server serves (a load given up, a kill before a restart) is not the stop's doing.
    served = _model(tmp_path, "served", replicas=1)
    (served / "go").touch()
    started = Started()
    stopping = threading.Event()
    with started.counting_stops(stopping.is_set), _loader(tmp_path) as loader:
        loader.load(served).close()  # stopped before the stop began
        started.models.append(loader.load(served))
        stopping.set()
    assert started.stopped_line() == "stopped: 1 model worker (served 1)"
    assert Started().stopped_line() is None
