"""Real builds that go wrong: a half-deleted environment, an interrupted installer, credentials in the
index URL, undecodable metadata in a new environment."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from tests._support.processes import processes_matching

from autoglm_runtime.deps import load_manifest
from autoglm_runtime.errors import DependencyConflictError
from autoglm_runtime.isolation import EnvironmentBuilder
from autoglm_runtime.isolation.envs.build import METADATA_NAME, BuildEvent
from autoglm_runtime.testing.wheels import build_wheel

pytestmark = pytest.mark.slow

MakeModel = Callable[..., Path]
MODEL = "def load():\n    return object()\n"


@pytest.fixture(scope="module")
def carrier_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conflictlib 1.0, and ``carrier``, whose wheel also drops the metadata of a distribution ``latin`` into
    site-packages: an egg-info directory with a ``top_level.txt`` in Latin-1 (as a vendored copy may be)."""
    path = tmp_path_factory.mktemp("wheels-failures")
    build_wheel(path, "conflictlib", "1.0", modules={"conflictlib/__init__.py": "VERSION = '1.0'\n"})
    build_wheel(
        path,
        "carrier",
        "1.0",
        modules={
            "carrier/__init__.py": "",
            "latin-1.0.egg-info/PKG-INFO": "Metadata-Version: 1.0\nName: latin\nVersion: 1.0\n",
        },
    )
    wheel = path / "carrier-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "a") as zf:  # bytes build_wheel cannot write: they are not UTF-8
        zf.writestr("latin-1.0.egg-info/top_level.txt", b"caf\xe9\n")
    return path


def test_a_key_directory_without_metadata_is_removed_and_rebuilt(
    carrier_wheelhouse: Path, tmp_path: Path, make_model: MakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "envs"
    builder = EnvironmentBuilder(root, wheelhouse=carrier_wheelhouse, offline=True)
    manifest = load_manifest(make_model("half-deleted", MODEL, ["conflictlib==1.0"]))
    key = builder.key_for(manifest)
    (root / key / "bin").mkdir(parents=True)  # a deletion stopped after autoglm-env.json went
    (root / key / "bin" / "python").write_text("left over")
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.isolation.envs.build"):
        env = builder.ensure(manifest)
    assert env.created
    assert (env.path / METADATA_NAME).is_file()
    assert sorted(p.name for p in root.iterdir()) == [key]
    assert [(r.getMessage(), r.error_code) for r in caplog.records if r.levelno >= logging.WARNING] == [  # type: ignore[attr-defined]
        (
            f"environment directory {root / key} has no {METADATA_NAME} (a deletion or a copy that did not finish); "
            "removing it and building the environment again",
            "E0101",
        )
    ]
    assert not builder.ensure(manifest).created


def test_an_interrupted_build_leaves_no_installer_running(
    carrier_wheelhouse: Path, tmp_path: Path, make_model: MakeModel, no_leaked_children: None
) -> None:
    root = tmp_path / "envs"

    def interrupt(event: BuildEvent) -> None:
        if event.phase == "install":
            raise KeyboardInterrupt  # Ctrl-C, or a progress callback that fails

    builder = EnvironmentBuilder(root, wheelhouse=carrier_wheelhouse, offline=True, installer="pip", progress=interrupt)
    with pytest.raises(KeyboardInterrupt):
        builder.ensure(load_manifest(make_model("interrupted", MODEL, ["conflictlib==1.0"])))
    assert list(root.iterdir()) == []
    # no_leaked_children checks that pip (a child of this process) was killed and reaped


def test_index_credentials_never_reach_the_disk_or_the_log(
    carrier_wheelhouse: Path, tmp_path: Path, make_model: MakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-9f8e7d"
    url = f"https://build:{secret}@127.0.0.1:9/simple"  # never contacted: the build is offline
    builder = EnvironmentBuilder(tmp_path / "envs", wheelhouse=carrier_wheelhouse, offline=True, index_url=url)
    with caplog.at_level(logging.DEBUG):
        env = builder.ensure(load_manifest(make_model("private-index", MODEL, ["conflictlib==1.0"])))
    metadata = json.loads((env.path / METADATA_NAME).read_text())
    assert metadata["source"].endswith("|index=https://****@127.0.0.1:9/simple")
    assert secret not in (env.path / METADATA_NAME).read_text()
    assert secret not in caplog.text


def test_undecodable_metadata_in_a_new_environment_is_a_finding(
    carrier_wheelhouse: Path, tmp_path: Path, make_model: MakeModel
) -> None:
    builder = EnvironmentBuilder(tmp_path / "envs", wheelhouse=carrier_wheelhouse, offline=True)
    with pytest.raises(DependencyConflictError) as info:
        builder.ensure(load_manifest(make_model("carried", MODEL, ["carrier==1.0"])))
    assert info.value.code == "E0101"
    assert info.value.message.startswith(
        "the environment built for model 'carried' fails check-deps; it was not kept:\n"
    )
    assert (
        "top_level.txt cannot be read: 'utf-8' codec can't decode byte 0xe9 in position 3: invalid continuation byte"
        in " ".join(info.value.message.split())
    )
    assert list((tmp_path / "envs").iterdir()) == []


def test_a_uv_build_never_tells_to_activate_its_temporary_directory(
    carrier_wheelhouse: Path, tmp_path: Path, make_model: MakeModel
) -> None:
    # uv venv ended with "Activate with: source <root>/.build-<key>-*/venv/bin/activate", an instruction naming a
    # path that is gone once the build is renamed into place, in every build's log and progress.
    events: list[BuildEvent] = []
    builder = EnvironmentBuilder(
        tmp_path / "envs", wheelhouse=carrier_wheelhouse, offline=True, installer="uv", progress=events.append
    )
    env = builder.ensure(load_manifest(make_model("quiet-venv", MODEL, ["conflictlib==1.0"])))
    assert env.created
    said = [event.message for event in events]
    assert [m for m in said if "Activate with" in m or "activate" in m] == [], said
    assert any("creating a" in m for m in said)


def test_sigterm_to_env_build_stops_its_installer_and_removes_the_unfinished_environment(
    carrier_wheelhouse: Path, tmp_path: Path, make_model: MakeModel
) -> None:
    # SIGTERM (systemd, Kubernetes, timeout) ended the command at once: 'python -m venv' and its pip ran on,
    # orphaned, in a .build-* directory nothing would remove. It now unwinds as Ctrl-C does, and exits 143.
    root = tmp_path / "envs"
    model = make_model("terminated", MODEL, ["conflictlib==1.0"])
    command = [sys.executable, "-m", "autoglm_runtime", "env", "build", str(model), "--env-root", str(root)]
    command += ["--wheelhouse", str(carrier_wheelhouse), "--offline", "--installer", "pip", "--progress", "lines"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as build:
        assert build.stdout is not None
        first = build.stdout.readline()
        assert first.startswith("[1/4 venv] creating"), first
        build.send_signal(signal.SIGTERM)
        rest = build.stdout.read()
        assert build.wait(60) == 143, rest
    assert "Traceback" not in rest
    assert processes_matching(str(root).encode()) == []
    assert list(root.iterdir()) == []
