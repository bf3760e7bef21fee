"""The [serving] table of model.toml and load()'s overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoglm_runtime.errors import ManifestError
from autoglm_runtime.isolation.workers.serving import ServingOptions, read_serving


def _manifest(tmp_path: Path, serving: str) -> Path:
    path = tmp_path / "model.toml"
    path.write_text(f'[model]\nname = "m"\nentrypoint = "m:load"\n{serving}', encoding="utf-8")
    return path


def test_defaults_without_a_table(tmp_path: Path) -> None:
    assert read_serving(_manifest(tmp_path, "")) == ServingOptions(1, "serial", 1, 64)


def test_a_full_table(tmp_path: Path) -> None:
    table = '[serving]\nreplicas = 3\nconcurrency = "async"\nmax_inflight = 8\nmax_queue = 0\n'
    assert read_serving(_manifest(tmp_path, table)) == ServingOptions(3, "async", 8, 0)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _manifest(tmp_path, '[serving]\nreplicas = "2"\nmax_inflight = 0\nmax_queue = -1\nconcurrency = 1\n')
    with pytest.raises(ManifestError) as info:
        read_serving(path)
    assert info.value.message == (
        f"{path}: serving.replicas: must be a whole number >= 1, got '2'; serving.max_inflight: must be a whole "
        "number >= 1, got 0; serving.max_queue: must be a whole number >= 0, got -1; serving.concurrency: must be "
        "one of 'serial', 'threads', 'async', got 1"
    )


def test_serving_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text('serving = 3\n[model]\nname = "m"\nentrypoint = "m:load"\n', encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        read_serving(path)
    assert info.value.message == f"{path}: serving must be a table ([serving]), got 3"


def test_overrides_are_checked_like_the_table() -> None:
    options = ServingOptions().with_overrides("load('m')", replicas=2, concurrency="threads", max_inflight=None)
    assert options == ServingOptions(2, "threads", 1, 64)
    with pytest.raises(ManifestError) as info:
        ServingOptions().with_overrides("load('m')", max_inflight=4)
    assert info.value.message == (
        "load('m'): serving.max_inflight: 4 calls at once need concurrency = 'threads' (a thread-safe model) or "
        "'async' (an async model); a serial model runs one call at a time"
    )
