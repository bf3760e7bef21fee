"""The worker scripts on the oldest interpreter a model environment may use (Python 3.8, pyenv's): a real worker
loads, answers calls with JSON and binary payloads, and streams."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.isolation.conftest import MakeModel

from autoglm_runtime.errors import ModelCallError
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.testing import fail_in_ci_else_skip

PY38 = Path("/root/.pyenv/versions/3.8.18/bin/python3.8")

MODEL = """
import sys


class Model:
    def version(self):
        return list(sys.version_info[:2])

    def echo(self, value):
        return value

    def looped(self):
        value = {"k": []}
        value["k"].append(value)
        return value

    def count(self, n):
        for i in range(n):
            yield {"i": i, "raw": bytes([i])}


def load():
    return Model()
"""


@pytest.fixture(scope="module")
def python() -> Path:
    if not PY38.exists():
        fail_in_ci_else_skip(f"needs the pyenv interpreter {PY38}: install it with 'pyenv install 3.8.18'")
    return PY38


@pytest.fixture(scope="module")
def loader(wheelhouse: Path, env_root: Path, python: Path) -> Iterator[ModelLoader]:
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process", python=python) as loader:
        yield loader


def test_a_worker_on_python_38_calls_and_streams(loader: ModelLoader, make_model: MakeModel) -> None:
    model = loader.load(make_model("oldest", MODEL))
    assert model.call("version") == [3, 8]
    assert sys.version_info[:2] != (3, 8)  # the host is newer: the worker scripts themselves run on 3.8
    value = {"text": "héllo", "n": [1, 2.5, None, True], "raw": b"\x00\xff" * 600, "buf": bytearray(b"ab")}
    assert model.call("echo", value) == value
    assert list(model.stream("count", 3)) == [{"i": i, "raw": bytes([i])} for i in range(3)]


def test_a_result_containing_itself_is_a_coded_error_on_python_38(loader: ModelLoader, make_model: MakeModel) -> None:
    # The worker's encoder has no circular check: the loop must still end as the model's error, not kill the worker.
    model = loader.load(make_model("oldest-looped", MODEL))
    with pytest.raises(ModelCallError) as info:
        model.call("looped")
    assert info.value.code == "E0105"
    assert str(info.value.message) == (
        "model 'oldest-looped' raised ValueError: the value is nested too deeply (or contains itself) to be sent to "
        "or from a model in looped()"
    )
    assert model.call("echo", [1]) == [1]
