"""The example model server, started once for the tests of this folder that talk to it (see ``_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from integration.example._server import Server, load_ngramlm, running_server


@pytest.fixture(scope="package")
def server(zk_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(zk_server.hosts, tmp_path_factory.mktemp("example-state")) as started:
        yield started


@pytest.fixture(scope="package")
def ngramlm() -> ModuleType:
    """The example's n-gram package, imported here from its source (numpy of the test environment)."""
    return load_ngramlm()
