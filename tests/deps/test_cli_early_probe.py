"""check-deps starts its probe before parsing its arguments: used when it fits them, killed when not."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests._support.processes import processes_matching

from autoglm_runtime.cli import build_parser, main
from autoglm_runtime.cli._early_probe import ProbeProcess, cache_path, guess
from autoglm_runtime.cli.check_deps import run


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], (None, False)),
        (["--python", "/x/python"], ("/x/python", False)),
        (["--python=/x/python", "--no-cache"], ("/x/python", True)),
        (["--python", "/a", "--json", "--python", "/b"], ("/b", False)),  # the last wins, as in argparse
        (["--pyth", "/x/python"], (None, False)),  # abbreviations are left to argparse
        (["--python"], (None, False)),
        (["--python", "--json"], (None, False)),  # argparse refuses this; nothing to start
        (["model", "--", "--python", "/x/python", "--no-cache"], (None, False)),  # after --: paths
        (["--why", "numpy", "--python", "/x/python"], ("/x/python", False)),
    ],
)
def test_the_guess_reads_only_plain_spellings(argv: list[str], expected: tuple[str | None, bool]) -> None:
    assert guess(argv) == expected


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An interpreter that logs each start to a file, then runs a real virtual environment's Python."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    log = tmp_path / "starts.log"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\necho start >> {log}\nexec {venv / "bin" / "python"} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


@pytest.mark.parametrize(
    "spelling",
    [["--python", "{}"], ["--python={}"], ["--pyth", "{}"], ["--python", "{}", "--no-cache"]],
)
def test_the_interpreter_is_started_once_per_check(
    spelling: list[str], counted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wrapper, log = counted
    argv = ["check-deps", "--json", *(part.format(wrapper) for part in spelling)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["environment"]["python"] == str(wrapper)
    assert log.read_text() == "start\n"


def _slow_interpreter(tmp_path: Path) -> tuple[Path, str]:
    marker = f"59.{os.getpid()}{time.monotonic_ns() % 10**6}"  # a sleep argument no other process has
    slow = tmp_path / "slow-python"
    slow.write_text(f"#!/bin/sh\nexec sleep {marker}\n")
    slow.chmod(0o755)
    return slow, marker


def _poll(marker: str, running: bool) -> list[int]:
    """The processes running the marked sleep, once they are there (``running``) or gone, or at a deadline."""
    deadline = time.monotonic() + 5.0
    while bool(processes_matching(marker.encode())) != running and time.monotonic() < deadline:
        time.sleep(0.02)
    return processes_matching(marker.encode())


def test_a_probe_started_for_other_arguments_is_killed_and_not_used(
    counted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrapper, log = counted
    slow, marker = _slow_interpreter(tmp_path)
    early = ProbeProcess(str(slow), cache_path(str(slow)))
    assert early.error is None
    assert _poll(marker, running=True) != []
    parser = build_parser(only="check-deps")
    args = parser.parse_args(
        ["check-deps", "--python", str(wrapper), "--json"], namespace=argparse.Namespace(prestarted=early)
    )
    assert run(args) == 0
    assert json.loads(capsys.readouterr().out)["environment"]["python"] == str(wrapper)
    assert log.read_text() == "start\n"
    assert _poll(marker, running=False) == []


def test_a_probe_that_does_not_finish_in_time_is_killed(tmp_path: Path) -> None:
    slow, marker = _slow_interpreter(tmp_path)
    probe = ProbeProcess(str(slow), None)
    ticks = iter([0.0, 0.0, 10.0])  # the deadline passes at the second look: no real waiting
    with pytest.raises(subprocess.TimeoutExpired):
        probe.communicate(5.0, clock=lambda: next(ticks))
    assert processes_matching(marker.encode()) == []
    probe.kill()  # again: a no-op


def test_an_interpreter_that_cannot_start_is_an_error_kept_for_later(tmp_path: Path) -> None:
    probe = ProbeProcess(str(tmp_path / "absent"), None)
    assert isinstance(probe.error, FileNotFoundError)
    probe.kill()


def test_the_command_waits_for_the_probe_as_long_as_the_probe_module_says() -> None:
    from autoglm_runtime.cli import check_deps
    from autoglm_runtime.deps import probe

    assert check_deps.PROBE_TIMEOUT == probe.PROBE_TIMEOUT


def test_a_changed_environment_is_checked_in_full_on_the_probe_already_run(
    counted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wrapper, log = counted
    argv = ["check-deps", "--python", str(wrapper), "--json"]
    assert main(argv) == 0
    assert main(argv) == 0  # the stored report, printed again before argparse is imported
    assert capsys.readouterr().out.count('"findings": []') == 2
    site = next((wrapper.parent / "venv" / "lib").glob("python3*/site-packages"))
    egg = site / "eggy-1.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: eggy\nVersion: 1.0\n")
    (egg / "requires.txt").write_text("zz-not-installed>=1\n")
    assert main(argv) == 1
    (finding,) = json.loads(capsys.readouterr().out)["findings"]
    assert finding["message"] == "eggy 1.0 requires zz-not-installed>=1, but zz-not-installed is not installed"
    assert log.read_text() == "start\n" * 3  # one probe per run, the third one's answer used by the full check
