"""The command line's shared conventions: version, help, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoglm_runtime import __version__
from autoglm_runtime.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"autoglm-runtime {__version__}\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: autoglm-runtime")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_console_entry_point_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autoglm_runtime", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "Config sync, isolated model loading and input validation" in done.stdout
