"""Describing a new virtual environment in-process: equal to a real probe, or a real probe where not shown equal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import venv
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps.probe import probe_environment
from autoglm_runtime.errors import UsageError
from autoglm_runtime.isolation.envs import _fastprobe as _venvprobe
from autoglm_runtime.isolation.envs._fastprobe import FactsProbe, describe_venv, facts_command, facts_key, probe_venv
from autoglm_runtime.testing.wheels import build_wheel

SITE = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_venvprobe, "_CACHE", {})


def _install(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)


def _make_venv(path: Path) -> Path:
    """A real virtual environment of the running interpreter (the stdlib ``venv``, no pip), with some wheels."""
    venv.EnvBuilder(symlinks=True, with_pip=False).create(path)
    site = path / SITE
    wheels = path.parent / f"{path.name}-wheels"
    _install(build_wheel(wheels, "Foo.Bar", "1.0", requires=["b>=1"], extras={"x": ["c"]}, requires_python=">=3"), site)
    _install(build_wheel(wheels, "b", "2.0", requires=["c; python_version < '3'"]), site)
    _install(build_wheel(wheels, "one", "1.0", modules={"same/__init__.py": "A = 1\n"}), site)
    _install(build_wheel(wheels, "two", "1.0", modules={"same/__init__.py": "A = 2\n"}), site)
    egg = site / "legacy-2.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: legacy\nVersion: 2.0\n")
    (egg / "requires.txt").write_text("six\n")
    (site / "broken-1.0.dist-info").mkdir()
    return path / "bin" / "python"


@pytest.fixture
def made_venv(tmp_path: Path) -> Path:
    return _make_venv(tmp_path / "env")


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children = task / "children"
        if children.exists():
            pids |= {int(p) for p in children.read_text().split()}
    return pids


def test_in_process_description_equals_a_real_probe(made_venv: Path) -> None:
    facts = FactsProbe(made_venv).result()
    assert facts is not None
    fast = describe_venv(made_venv, facts)
    real = probe_environment(made_venv)
    assert fast is not None
    assert fast == real
    assert fast.python == str(made_venv)
    assert fast.path[-1] == str(made_venv.parent.parent / SITE)
    assert sorted(d.name for d in fast.dists if d.location == fast.path[-1]) == [
        "",
        "Foo.Bar",
        "b",
        "legacy",
        "one",
        "two",
    ]
    assert probe_venv(made_venv) == real


def test_facts_hold_what_site_adds_nothing_to(made_venv: Path) -> None:
    done = subprocess.run(facts_command(made_venv), capture_output=True, text=True, check=True)
    data = json.loads(done.stdout)
    real = probe_environment(made_venv)
    assert data["path"] == real.path[:-1]
    assert data["site_packages"] == [f"{_probe.PREFIX_PLACEHOLDER}/{SITE}"]
    assert (data["version"], data["markers"], data["no_site"]) == (real.version, real.markers, True)


def test_facts_are_probed_once_per_interpreter(tmp_path: Path) -> None:
    first = _make_venv(tmp_path / "first")
    second = _make_venv(tmp_path / "second")
    assert facts_key(first) == facts_key(second) is not None
    probe = FactsProbe(first)
    facts = probe.result()
    again = FactsProbe(second)
    assert again._proc is None  # answered from the cache: no process started
    assert again.result() is facts
    assert probe_venv(second) == probe_environment(second)


def test_facts_key_follows_the_interpreter_file_and_home(tmp_path: Path) -> None:
    target = tmp_path / "python3.99"
    target.write_text("not run\n")
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").symlink_to(target)
    cfg = tmp_path / "env" / "pyvenv.cfg"
    cfg.write_text(f"home = {tmp_path}\ninclude-system-site-packages = false\n")
    python = tmp_path / "env" / "bin" / "python"
    stat = target.stat()
    assert facts_key(python) == (str(target), stat.st_mtime_ns, stat.st_size, str(tmp_path))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert facts_key(python) == (str(target), stat.st_mtime_ns + 1_000_000_000, stat.st_size, str(tmp_path))
    cfg.write_text("home = /elsewhere/bin\n")
    assert facts_key(python) == (str(target), stat.st_mtime_ns + 1_000_000_000, stat.st_size, "/elsewhere/bin")
    cfg.unlink()
    assert facts_key(python) is None


def _with_pth(python: Path) -> None:
    """A ``.pth`` file adds a directory holding a second copy of ``b``: only running ``site`` shows it."""
    site = python.parent.parent / SITE
    extra = python.parent.parent / "extra"
    _install(build_wheel(python.parent.parent / "w2", "b", "3.0"), extra)
    (site / "zz-extra.pth").write_text(f"{extra}\n")


def _with_sitecustomize(python: Path) -> None:
    site = python.parent.parent / SITE
    extra = python.parent.parent / "custom"
    _install(build_wheel(python.parent.parent / "w2", "custom", "1.0"), extra)
    (site / "sitecustomize.py").write_text(f"import sys\nsys.path.append({str(extra)!r})\n")


def _with_system_site(python: Path) -> None:
    cfg = python.parent.parent / "pyvenv.cfg"
    cfg.write_text(
        cfg.read_text().replace("include-system-site-packages = false", "include-system-site-packages = TRUE")
    )


def _without_system_site_key(python: Path) -> None:
    cfg = python.parent.parent / "pyvenv.cfg"
    lines = [line for line in cfg.read_text().splitlines() if not line.startswith("include-system-site-packages")]
    cfg.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("spoil", "extra_path"),
    [
        (_with_pth, "extra"),
        (_with_sitecustomize, "custom"),
        (_with_system_site, None),
        (_without_system_site_key, None),
    ],
    ids=["pth-file", "sitecustomize", "system-site-packages", "no-system-site-key"],
)
def test_what_only_running_site_shows_makes_it_a_real_probe(
    made_venv: Path, spoil: Callable[[Path], None], extra_path: str | None
) -> None:
    spoil(made_venv)
    facts = FactsProbe(made_venv).result()
    assert facts is not None
    assert describe_venv(made_venv, facts) is None
    real = probe_environment(made_venv)
    assert probe_venv(made_venv) == real
    if extra_path is not None:
        assert real.path[-1] == str(made_venv.parent.parent / extra_path)
    else:
        assert len(real.path) > len(facts.path) + 1  # the interpreter's own site-packages are on it


def test_an_interpreter_outside_a_venv_is_probed_for_real() -> None:
    base = os.path.realpath(sys._base_executable)  # type: ignore[attr-defined]
    assert facts_key(base) is None
    assert probe_venv(base) == probe_environment(base)


def test_a_failing_facts_probe_falls_back_to_the_real_probe(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "env" / "bin").mkdir(parents=True)
    python = tmp_path / "env" / "bin" / "python"
    python.write_text("#!/bin/sh\necho 'boom' >&2\nexit 3\n")
    python.chmod(0o755)
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /nowhere\ninclude-system-site-packages = false\n")
    with (
        caplog.at_level(logging.WARNING, logger="autoglm_runtime.isolation.envs.build"),
        pytest.raises(UsageError) as info,
    ):
        probe_venv(python)
    assert info.value.message == f"interpreter {python} failed to run the probe (exit 3): boom"
    assert [(r.getMessage(), getattr(r, "error_code", None)) for r in caplog.records] == [
        (
            f"interpreter {python} did not describe itself (exit status 3: boom); probing the environment "
            "by running it instead",
            "E0001",
        )
    ]
    assert _venvprobe._CACHE == {}


def test_close_ends_a_running_facts_probe(tmp_path: Path) -> None:
    (tmp_path / "env" / "bin").mkdir(parents=True)
    python = tmp_path / "env" / "bin" / "python"
    python.write_text("#!/bin/sh\nexec sleep 60\n")
    python.chmod(0o755)
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /nowhere\ninclude-system-site-packages = false\n")
    before = _children()
    with FactsProbe(python) as probe:
        assert probe._proc is not None
        pid = probe._proc.pid
        assert pid in _children() - before
    assert pid not in _children()
    assert probe.result() is None
