"""A warm check-deps reads an unchanged environment in its own process; any change to what decides the
interpreter's path makes it start the interpreter again, and every change gives the new answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime.cli import main
from autoglm_runtime.cli._early_probe import ProbeProcess, _described_here, cache_path
from autoglm_runtime.deps._scripts import path_stamp, probe_cache
from autoglm_runtime.deps.probe import probe_payload
from autoglm_runtime.testing.wheels import build_wheel

MISSING = "extra-dist 1.0 requires zz-not-installed>=1, but zz-not-installed is not installed"


def _install(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)


def _age(root: Path) -> None:
    """Every file and directory under ``root`` (``root`` too) an hour old, symlinks left as they point."""
    an_hour_ago = time.time_ns() - 3600 * 10**9
    for path in [root, *root.rglob("*")]:
        os.utime(path, ns=(an_hour_ago, an_hour_ago), follow_symlinks=False)


@pytest.fixture
def venv(tmp_path: Path) -> tuple[Path, Path]:
    """A real virtual environment with ``app`` (requires lib>=2) and ``lib`` 2.0, old enough to stamp."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next((env / "lib").glob("python3*/site-packages"))
    _install(build_wheel(tmp_path / "w", "app", "1.0", requires=["lib>=2"]), site)
    _install(build_wheel(tmp_path / "w", "lib", "2.0"), site)
    return env / "bin" / "python", site


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The interpreters check-deps starts (each start is real; this only notes it)."""
    started: list[str] = []
    real: Callable[..., int] = os.posix_spawn

    def spawn(path: str, argv: Any, env: Any, **kwargs: Any) -> int:
        started.append(path)
        return real(path, argv, env, **kwargs)

    monkeypatch.setattr(os, "posix_spawn", spawn)
    return started


def _check(python: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    main(["check-deps", "--python", str(python), "--json", *extra])
    return [f["message"] for f in json.loads(capsys.readouterr().out)["findings"]]


def _extra_site(tmp_path: Path) -> Path:
    """A directory holding a distribution that requires something not installed."""
    extra = tmp_path / "extra-site"
    _install(build_wheel(tmp_path / "w", "extra-dist", "1.0", requires=["zz-not-installed>=1"]), extra)
    return extra


def test_an_unchanged_environment_is_read_in_process_as_its_interpreter_reads_it(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site = venv
    _age(python.parent.parent)
    assert _check(python, capsys) == []
    assert spawned == [str(python)]  # the first run learns the path from the interpreter
    assert _check(python, capsys) == []
    assert _check(python, capsys, "--why", "lib") == []  # a new report, on the environment read in-process
    assert spawned == [str(python)]
    # A METADATA rewritten in place leaves the path as it was: read again, still in-process.
    meta = site / "app-1.0.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace("lib>=2", "lib>=3"))
    assert _check(python, capsys) == ["app 1.0 requires lib>=3, but lib 2.0 is installed"]
    assert spawned == [str(python)]
    assert _check(python, capsys, "--no-cache") == ["app 1.0 requires lib>=3, but lib 2.0 is installed"]
    assert spawned == [str(python)] * 2  # --no-cache: the interpreter describes itself afresh
    here = _described_here(str(python), cache_path(str(python)))
    assert here is not None
    done = ProbeProcess(str(python), None).communicate(60.0)
    assert probe_payload(here) == probe_payload(done[1])


def test_a_distribution_added_or_removed_gives_the_new_answer(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    python, site = venv
    _age(python.parent.parent)
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    _install(build_wheel(tmp_path / "w", "extra-dist", "1.0", requires=["zz-not-installed>=1"]), site)
    assert _check(python, capsys) == [MISSING]
    for meta_dir in site.glob("extra_dist-1.0.dist-info"):
        for file in meta_dir.iterdir():
            file.unlink()
        meta_dir.rmdir()
    assert _check(python, capsys) == []
    assert len(spawned) == 3  # the site-packages directory changed twice: its path is learnt again


def test_a_new_pth_file_makes_the_interpreter_describe_its_path_again(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    python, site = venv
    extra = _extra_site(tmp_path)
    _age(python.parent.parent)
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)]
    (site / "zz_extra.pth").write_text(f"{extra}\n")
    assert _check(python, capsys) == [MISSING]
    assert spawned == [str(python)] * 2
    assert _check(python, capsys) == [MISSING]


def test_a_directory_a_pth_file_names_counts_from_when_it_exists(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    python, site = venv
    (site / "zz_later.pth").write_text(f"# added later\n{tmp_path / 'later'}\n")
    _age(python.parent.parent)
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)]
    _extra_site(tmp_path).rename(tmp_path / "later")  # site-packages and the .pth file are untouched
    assert _check(python, capsys) == [MISSING]
    assert spawned == [str(python)] * 2


def test_a_pth_file_that_runs_code_makes_every_run_start_the_interpreter(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site = venv
    (site / "zz_code.pth").write_text("import os\n")
    _age(python.parent.parent)
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)] * 2
    assert path_stamp.PATH_KEY not in probe_cache.load_cache(cache_path(str(python)))


def test_a_sitecustomize_that_fails_part_way_makes_every_run_start_the_interpreter(
    tmp_path: Path, venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site = venv
    extra = _extra_site(tmp_path)
    # It adds a directory to the path, then fails: site reports the error and goes on, with the path changed.
    (site / "sitecustomize.py").write_text(f"import sys\nsys.path.append({str(extra)!r})\nraise RuntimeError('x')\n")
    _age(extra)
    for _ in range(2):  # the first start writes sitecustomize's byte code into site-packages: aged again after it
        _age(python.parent.parent)
        assert _check(python, capsys) == [MISSING]
    assert path_stamp.PATH_KEY not in probe_cache.load_cache(cache_path(str(python)))
    (site / "sitecustomize.py").write_text("raise RuntimeError('x')\n")  # no longer adds the directory
    assert _check(python, capsys) == []
    assert spawned == [str(python)] * 3


def test_an_interpreter_reached_through_a_wrapper_script_always_runs(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    python, _site = venv
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {python} "$@"\n')  # a script may choose another interpreter any time
    wrapper.chmod(0o755)
    _age(python.parent.parent)
    _age(wrapper)
    assert _check(wrapper, capsys) == []
    assert _check(wrapper, capsys) == []
    assert spawned == [str(wrapper)] * 2


def test_another_library_path_makes_the_interpreter_run_again(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    python, _site = venv
    _age(python.parent.parent)
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)]
    monkeypatch.setenv("LD_LIBRARY_PATH", str(python.parent))  # -I ignores PYTHON* variables, not this one
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)] * 2


def test_nothing_is_recorded_while_a_stamped_directory_is_too_new_to_trust(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    python, _site = venv  # just made: a change within the file system's timestamp granularity could hide
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)] * 2
    assert path_stamp.PATH_KEY not in probe_cache.load_cache(cache_path(str(python)))


def test_a_change_made_while_the_interpreter_was_starting_is_never_stamped_as_its_path(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The probe decides its sys.path at start-up and stamps what decided it later. A .pth file added in between
    # is in the stamps but not in the path: it must not be taken as the path's for ever, even when the probe's
    # start-up took longer than the stamps' margin (a loaded machine, a slow disk).
    python, site = venv
    extra = _extra_site(tmp_path)
    _age(python.parent.parent)
    cache = Path(cache_path(str(python)))
    cache.parent.mkdir(parents=True)
    os.mkfifo(cache)  # the probe opens its cache after its path is decided: this holds it there
    probe = ProbeProcess(str(python), str(cache))
    try:
        with open(cache, "wb"):  # returns once the probe opened the cache: its sys.path is decided
            (site / "zz_extra.pth").write_text(f"{extra}\n")
            changed = (site / "zz_extra.pth").stat().st_mtime_ns
            deadline = time.monotonic() + 60
            while time.time_ns() < changed + probe_cache.TRUST_MARGIN_NS + 500_000_000:  # the margin passes
                assert time.monotonic() < deadline
                time.sleep(0.05)
        code, out, _err = probe.communicate(60.0)  # an empty cache: it describes itself and records
    finally:
        probe.kill()
    assert code == 0
    assert str(extra) not in probe_payload(out)["path"]
    assert _check(python, capsys) == [MISSING]  # the interpreter started now has the .pth file's directory
    assert _check(python, capsys) == [MISSING]


def test_an_interpreter_started_under_a_wrapper_scripts_name_always_runs(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `exec -a "$0"` makes the wrapper's path the interpreter's sys.executable: its real path is then the script,
    # which may choose another interpreter next time (from a file, a variable): nothing may be recorded.
    python, _site = venv
    choice = tmp_path / "choice"
    choice.write_text(str(python))
    wrapper = python.parent / "python-wrapped"  # beside pyvenv.cfg: the interpreter it runs is the venv's
    wrapper.write_text(f'#!/bin/bash\nexec -a "$0" "$(cat {choice})" "$@"\n')
    wrapper.chmod(0o755)
    _age(python.parent.parent)
    assert _check(wrapper, capsys) == []
    assert path_stamp.PATH_KEY not in probe_cache.load_cache(cache_path(str(wrapper)))
    assert _check(wrapper, capsys) == []
    assert spawned == [str(wrapper)] * 2


def test_a_pth_line_no_path_can_hold_is_skipped_as_site_skips_it(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # A .pth file that a crash left full of NUL bytes: site ignores the line (no such path), and so must the stamps.
    python, site = venv
    (site / "zz_zeroed.pth").write_bytes(b"\x00" * 16 + b"\n")
    _age(python.parent.parent)
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)]


def test_an_interpreter_that_can_no_longer_run_is_reported_not_read_in_process(
    tmp_path: Path, spawned: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # chmod changes no mtime, size or inode, only the ctime: the interpreter it stops is not "unchanged".
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--copies", "--without-pip", str(env)], check=True)
    spawned.clear()  # Python 3.13's subprocess starts the venv command with posix_spawn too
    python = env / "bin" / "python"
    _age(env)
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)]
    python.chmod(0o644)
    assert main(["check-deps", "--python", str(python)]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: interpreter {python} cannot be run (permission denied); pass a Python "
        "executable\n"
    )


def test_a_pth_line_that_runs_code_after_a_byte_order_mark_makes_every_run_start_the_interpreter(
    venv: tuple[Path, Path], spawned: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Python 3.13 and later read a .pth file as utf-8-sig: this line runs there (earlier ones take it as a path).
    python, site = venv
    (site / "zz_code.pth").write_bytes(b"\xef\xbb\xbfimport os\n")
    _age(python.parent.parent)
    assert _check(python, capsys) == []
    assert _check(python, capsys) == []
    assert spawned == [str(python)] * 2
    assert path_stamp.PATH_KEY not in probe_cache.load_cache(cache_path(str(python)))
