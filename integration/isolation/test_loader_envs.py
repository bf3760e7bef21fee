"""Real environments: conflicting pins side by side, reuse, building once across processes, failed builds."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from autoglm_runtime.deps import load_manifest
from autoglm_runtime.errors import DependencyConflictError, EnvironmentBuildError
from autoglm_runtime.isolation import EnvironmentBuilder, ModelLoader
from autoglm_runtime.isolation.envs.build import METADATA_NAME
from autoglm_runtime.isolation.envs.gc import collect_garbage
from autoglm_runtime.testing.wheels import build_wheel

pytestmark = pytest.mark.slow

VERSION_MODEL = """
import conflictlib

class Model:
    def version(self):
        return conflictlib.VERSION

def load():
    return Model()
"""


def test_conflicting_pins_load_side_by_side(wheelhouse: Path, env_root: Path, make_model) -> None:
    a_dir = make_model("a", VERSION_MODEL, ["conflictlib==1.0"])
    b_dir = make_model("b", VERSION_MODEL, ["conflictlib==2.0"])
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process") as loader:
        a = loader.load(a_dir)
        b = loader.load(b_dir)
        assert a.call("version", timeout=30) == "1.0"
        assert b.call("version", timeout=30) == "2.0"
        assert a.environment.key != b.environment.key
        assert a.versions["conflictlib"] == {
            "version": "1.0",
            "location": str(
                a.environment.path
                / "lib"
                / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                / "site-packages"
                / "conflictlib"
            ),
        }
        assert b.versions["conflictlib"]["version"] == "2.0"
        assert b.versions["conflictlib"]["location"].startswith(str(b.environment.path) + os.sep)
        assert set(loader.health()) == {"a", "b"}
        assert loader.health()["a"]["state"] == "ready"


def test_second_load_reuses_the_environment(wheelhouse: Path, env_root: Path, make_model) -> None:
    first_dir = make_model("reuse-1", VERSION_MODEL, ["conflictlib==1.0"])
    second_dir = make_model("reuse-2", VERSION_MODEL, ["ConflictLib == 1.0"])  # same set, other spelling
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process") as loader:
        first = loader.load(first_dir)
    before = sorted(p.name for p in env_root.iterdir())
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process") as loader:
        second = loader.load(second_dir)
        assert second.call("version", timeout=30) == "1.0"
    assert first.environment.key == second.environment.key
    assert second.environment.created is False
    assert sorted(p.name for p in env_root.iterdir()) == before
    metadata = json.loads((second.environment.path / METADATA_NAME).read_text())
    assert metadata["requirements"] == ["conflictlib==1.0"]


def test_a_models_constraints_file_limits_its_environment(wheelhouse: Path, env_root: Path, make_model) -> None:
    # pip and uv apply a requirements file's -c lines to what they install: conflictlib 2.0, the newest, is
    # excluded. The builder installed the requirements alone, so the constraint was lost.
    directory = make_model("constrained", VERSION_MODEL, ["conflictlib", "-c constraints.txt"])
    (directory / "constraints.txt").write_text("conflictlib<2\n", encoding="utf-8")
    unconstrained = make_model("unconstrained", VERSION_MODEL, ["conflictlib"])
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process") as loader:
        assert loader.load(directory).call("version", timeout=30) == "1.0"
        assert loader.load(unconstrained).call("version", timeout=30) == "2.0"


BUILD_SCRIPT = """
import sys
from autoglm_runtime.isolation import EnvironmentBuilder
from autoglm_runtime.deps import load_manifest

def progress(event):
    if event.phase == "wait":
        print("waiting", flush=True)

builder = EnvironmentBuilder(sys.argv[1], wheelhouse=sys.argv[2], offline=True, progress=progress)
env = builder.ensure(load_manifest(sys.argv[3]))
print(env.key, env.created, flush=True)
"""


def test_two_processes_build_one_environment_once(wheelhouse: Path, tmp_path: Path, make_model) -> None:
    model = make_model("concurrent", VERSION_MODEL, ["conflictlib==2.0"])
    root = tmp_path / "envs"
    key = EnvironmentBuilder(root, wheelhouse=wheelhouse, offline=True).key_for(load_manifest(model))
    # Hold the key's lock, as a third builder would, until both processes are waiting for it: then they
    # contend for it for certain, instead of the second merely finding the first one's result.
    lock_path = root / f".{key}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    argv = [sys.executable, "-c", BUILD_SCRIPT, str(root), str(wheelhouse), str(model)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "waiting\n"
    finally:
        os.unlink(lock_path)
        os.close(fd)
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    results = sorted(out.split() for out, _ in outputs)
    assert results == [[key, "False"], [key, "True"]]
    assert sorted(p.name for p in root.iterdir()) == [key]


def test_failed_build_leaves_nothing_behind(wheelhouse: Path, tmp_path: Path, make_model) -> None:
    model = load_manifest(make_model("unsatisfiable", VERSION_MODEL, ["conflictlib==9.9"]))
    root = tmp_path / "envs"
    builder = EnvironmentBuilder(root, wheelhouse=wheelhouse, offline=True)
    with pytest.raises(EnvironmentBuildError) as info:
        builder.ensure(model)
    message = info.value.message
    assert message.startswith(
        "building the environment for model 'unsatisfiable' failed: `uv pip install` exited with status 1; "
        "nothing was left behind. Last lines:\n"
    )
    assert "conflictlib==9.9" in message
    assert info.value.code == "E0101"
    assert list(root.iterdir()) == []


def test_failed_build_keeps_good_environments(wheelhouse: Path, tmp_path: Path, make_model) -> None:
    root = tmp_path / "envs"
    builder = EnvironmentBuilder(root, wheelhouse=wheelhouse, offline=True)
    good = builder.ensure(load_manifest(make_model("good", VERSION_MODEL, ["conflictlib==1.0"])))
    with pytest.raises(EnvironmentBuildError):
        builder.ensure(load_manifest(make_model("bad", VERSION_MODEL, ["conflictlib>=3"])))
    assert [p.name for p in root.iterdir()] == [good.key]
    assert (good.path / METADATA_NAME).is_file()


def test_pip_fallback_builds_offline(wheelhouse: Path, tmp_path: Path, make_model) -> None:
    builder = EnvironmentBuilder(tmp_path / "envs", wheelhouse=wheelhouse, offline=True, installer="pip")
    env = builder.ensure(load_manifest(make_model("via-pip", VERSION_MODEL, ["conflictlib==2.0"])))
    done = subprocess.run(
        [str(env.python), "-I", "-c", "import conflictlib; print(conflictlib.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "2.0\n"
    assert builder.uv is None


def test_environment_failing_check_deps_is_not_kept(wheelhouse: Path, tmp_path: Path, make_model) -> None:
    root = tmp_path / "envs"
    builder = EnvironmentBuilder(root, wheelhouse=wheelhouse, offline=True)
    good = builder.ensure(load_manifest(make_model("kept", VERSION_MODEL, ["conflictlib==2.0"])))
    shadowing = load_manifest(make_model("shadowing", VERSION_MODEL, ["conflictlib==1.0", "shadowlib==1.0"]))
    with pytest.raises(DependencyConflictError) as info:
        builder.ensure(shadowing)
    assert info.value.code == "E0101"
    assert info.value.message.startswith(
        "the environment built for model 'shadowing' fails check-deps; it was not kept:\n"
    )
    assert "[shadowed-module] conflictlib 1.0 and shadowlib 1.0 both install the top-level module" in info.value.message
    assert [p.name for p in root.iterdir()] == [good.key]


def test_a_rebuilt_wheelhouse_with_the_same_wheels_reuses_the_environments(
    tmp_path: Path, env_root: Path, make_model
) -> None:
    # What a restart of the example server does: it writes its wheelhouse again, byte for byte the same.
    model = make_model("rebuilt-wheels", VERSION_MODEL, ["conflictlib==2.0"])
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "conflictlib", "2.0", modules={"conflictlib/__init__.py": "VERSION = '2.0'\n"})
    first = EnvironmentBuilder(env_root, wheelhouse=wheels, offline=True).ensure(load_manifest(model))
    wheel = wheels / "conflictlib-2.0-py3-none-any.whl"
    wheel.unlink()
    build_wheel(wheels, "conflictlib", "2.0", modules={"conflictlib/__init__.py": "VERSION = '2.0'\n"})
    os.utime(wheel, ns=(5_000_000_000, 5_000_000_000))

    again = EnvironmentBuilder(env_root, wheelhouse=wheels, offline=True).ensure(load_manifest(model))

    assert (again.key, again.path, again.created) == (first.key, first.path, False)


def test_env_gc_leaves_the_environments_of_loaded_models_alone(tmp_path: Path, wheelhouse: Path, make_model) -> None:
    root = tmp_path / "envs"
    model = make_model("held-by-loader", VERSION_MODEL, ["conflictlib==1.0"])
    with ModelLoader(root, wheelhouse=wheelhouse, offline=True, backend="process") as loader:
        loaded = loader.load(model)
        report = collect_garbage(root)  # unused_for=0: anything not in use would go
        assert (report.removed, report.kept) == ([], {loaded.environment.key: "in use"})
        assert loaded.call("version", timeout=30) == "1.0"
        loaded.close()  # closing the model releases its environment
        assert [r.key for r in collect_garbage(root).removed] == [loaded.environment.key]
    assert list(root.iterdir()) == []


def test_shared_environments_build_one_environment_per_plan_group(wheelhouse: Path, env_root: Path, make_model) -> None:
    a_dir = make_model("share-a", VERSION_MODEL, ["conflictlib==1.0"])
    c_dir = make_model("share-c", VERSION_MODEL, ["conflictlib>=1.0,<2"])
    b_dir = make_model("share-b", VERSION_MODEL, ["conflictlib==2.0"])
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process") as loader:
        plan = loader.share_environments([a_dir, b_dir, c_dir])
        assert plan.groups == (("share-a", "share-c"), ("share-b",))
        a, b, c = loader.load(a_dir), loader.load(b_dir), loader.load(c_dir)
        assert a.environment.key == c.environment.key != b.environment.key
        assert c.environment.created is False  # the group's environment, built for share-a
        assert [m.call("version", timeout=30) for m in (a, b, c)] == ["1.0", "2.0", "1.0"]
    metadata = json.loads((a.environment.path / METADATA_NAME).read_text())
    assert metadata["requirements"] == ["conflictlib<2,>=1.0", "conflictlib==1.0"]


def _unshareable(wheelhouse: Path, tmp_path: Path) -> Path:
    """A wheelhouse with conflictlib 1.0 and 2.0 and needstwo 1.0, which needs conflictlib>=2."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for wheel in wheelhouse.glob("conflictlib-*.whl"):
        (wheels / wheel.name).write_bytes(wheel.read_bytes())
    build_wheel(wheels, "needstwo", "1.0", requires=["conflictlib>=2"])
    return wheels


def test_a_shared_environment_that_cannot_be_built_leaves_each_model_its_own(
    wheelhouse: Path, tmp_path: Path, make_model, caplog: pytest.LogCaptureFixture
) -> None:
    # The plan judges direct requirements: share-x (conflictlib==1.0) and share-y (needstwo, which pulls in
    # conflictlib>=2) look compatible, and are grouped. Before: loading either failed with the group's E0101
    # install error, though each loads alone.
    wheels = _unshareable(wheelhouse, tmp_path)
    x_dir = make_model("share-x", VERSION_MODEL, ["conflictlib==1.0"])
    y_dir = make_model("share-y", VERSION_MODEL, ["needstwo==1.0"])
    with ModelLoader(tmp_path / "envs", wheelhouse=wheels, offline=True, backend="process") as loader:
        assert loader.share_environments([x_dir, y_dir]).groups == (("share-x", "share-y"),)
        with caplog.at_level("WARNING", logger="autoglm_runtime.isolation.loader"):
            y = loader.load(y_dir)
        x = loader.load(x_dir)
        assert [m.call("version", timeout=30) for m in (x, y)] == ["1.0", "2.0"]
        assert x.environment.key != y.environment.key
    [record] = [r for r in caplog.records if r.name == "autoglm_runtime.isolation.loader"]
    assert record.getMessage().startswith(
        "models share-x, share-y cannot share one environment (building the environment for model "
        "'share-x+share-y' failed: "
    )
    assert record.getMessage().endswith("); each gets an environment of its own")
    assert (record.error_code, record.model) == ("E0101", "share-y")  # type: ignore[attr-defined]


def test_members_of_an_unbuildable_group_loaded_at_once_get_one_warning(
    wheelhouse: Path, tmp_path: Path, make_model, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: each member loading at the same time built the group's environment, failed and warned (one warning
    # per member).
    wheels = _unshareable(wheelhouse, tmp_path)
    members = [
        make_model("once-x", VERSION_MODEL, ["conflictlib==1.0"]),
        make_model("once-y", VERSION_MODEL, ["needstwo"]),
    ]
    with ModelLoader(tmp_path / "envs", wheelhouse=wheels, offline=True, backend="process") as loader:
        assert loader.share_environments(members).groups == (("once-x", "once-y"),)
        start = threading.Barrier(len(members))

        def load(directory: Path) -> str:
            start.wait()
            return str(loader.load(directory).call("version", timeout=30))

        logged = caplog.at_level("WARNING", logger="autoglm_runtime.isolation.loader")
        with logged, ThreadPoolExecutor(len(members)) as pool:
            assert list(pool.map(load, members)) == ["1.0", "2.0"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "autoglm_runtime.isolation.loader"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("models once-x, once-y cannot share one environment (")
