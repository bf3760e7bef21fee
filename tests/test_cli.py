"""The command line's shared conventions: version, help, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests._support.stdout import REASONS, cannot_write, run_with_stdout

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


def test_the_env_command_says_what_its_subcommands_do(capsys: pytest.CaptureFixture[str]) -> None:
    # It said "build and inspect": there is no inspecting subcommand, and gc, which removes environments, went
    # unmentioned.
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = " ".join(capsys.readouterr().out.split())
    assert "env build model environments (env build) and remove unused ones (env gc) " in listed


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "prog", "message"),
    [
        (["check-deps", "--pln"], "autoglm-runtime check-deps", "unrecognized arguments: --pln"),
        (["config", "get"], "autoglm-runtime config get", "the following arguments are required: key"),
        (["env", "build"], "autoglm-runtime env build", "the following arguments are required: PATH"),
        # A stray argument is refused by the subcommand it was given to, with its usage: before, the top
        # parser's ("autoglm-runtime [-h] [--version] COMMAND ..."), none of the options it was meant to be.
        (["config", "dump", "--jsn"], "autoglm-runtime config dump", "unrecognized arguments: --jsn"),
        (["env", "build", "m", "--bogus"], "autoglm-runtime env build", "unrecognized arguments: --bogus"),
        (["--bogus"], "autoglm-runtime", "unrecognized arguments: --bogus"),
    ],
)
def test_a_refused_command_line_is_coded_e0001_like_every_other_usage_error(
    argv: list[str], prog: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {prog} [-h]")
    assert err.endswith(f"\n{prog}: error E0001: {message}\n")


@pytest.mark.parametrize("module", ["autoglm_runtime", "autoglm_runtime.cli"])
def test_console_entry_point_runs_as_a_module(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "Config sync, isolated model loading and input validation" in done.stdout


@pytest.fixture
def small_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real virtual environment with one distribution; its checker caches go under ``tmp_path``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the commands' stdout is block-buffered, as usual
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    info = site / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: absent>=1\n")
    return venv / "bin" / "python"


COMMANDS = {
    "console script": [str(Path(sys.executable).with_name("autoglm-runtime"))],
    "python -m": [sys.executable, "-m", "autoglm_runtime"],
    "python -m cli": [sys.executable, "-m", "autoglm_runtime.cli"],
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_check_deps_output_redirected_to_a_file_is_whole(command: list[str], small_env: Path, tmp_path: Path) -> None:
    # check-deps ends its process without the interpreter's shutdown: its output must be flushed first (a file
    # is block-buffered, so this fails if anything is left in the buffer).
    out = tmp_path / "report.json"
    with out.open("wb") as fh:
        done = subprocess.run([*command, "check-deps", "--python", str(small_env), "--json"], stdout=fh, check=False)
    assert done.returncode == 1
    report = json.loads(out.read_text())
    assert [finding["kind"] for finding in report["findings"]] == ["missing"]


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_reader_gone_away_ends_check_deps_with_120_and_no_traceback(command: list[str], small_env: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: the first write fails with EPIPE
    try:
        done = subprocess.run(
            [*command, "check-deps", "--python", str(small_env)], stdout=write, stderr=subprocess.PIPE, check=False
        )
    finally:
        os.close(write)
    assert done.returncode == 120
    assert done.stderr == b""


# What a test runner's in-process mode does with a console script (pytest-console-scripts' default): run the
# script's code in this interpreter, under a fresh ``__main__`` namespace, and catch its SystemExit.
IN_PROCESS = """
import gc, sys
script = sys.argv[1]
sys.argv = [script, *sys.argv[2:]]
try:
    exec(compile(open(script).read(), script, "exec"), {"__name__": "__main__"})
except SystemExit as exc:
    print(f"\\ncaller goes on: exit {exc.code}, gc enabled {gc.isenabled()}")
"""


def test_check_deps_run_in_process_by_a_test_runner_returns_to_it(small_env: Path) -> None:
    # Ending the process at once is for the command's own process only: run inside another program's, the
    # program goes on (with its garbage collector on).
    script = COMMANDS["console script"][0]
    done = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, script, "check-deps", "--python", str(small_env)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.endswith("\ncaller goes on: exit 1, gc enabled True\n"), done.stdout + done.stderr
    assert "missing" in done.stdout


@pytest.mark.parametrize("stdout", REASONS)
@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_check_deps_output_that_cannot_be_written_is_a_coded_error_and_exit_120(
    command: list[str], json_flag: list[str], stdout: str, small_env: Path
) -> None:
    # The first run stores its report before writing it; the second replays the stored report (another write).
    for _ in range(2):
        done = run_with_stdout(stdout, [*command, "check-deps", "--python", str(small_env), *json_flag])
        assert (done.returncode, done.stderr) == (120, cannot_write("the report", stdout))


@pytest.mark.parametrize("stdout", REASONS)
def test_an_error_whose_json_cannot_be_written_keeps_its_own_line(stdout: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    done = run_with_stdout(stdout, [*COMMANDS["console script"], "check-deps", "--json", str(missing)])
    assert done.returncode == 120
    assert done.stderr == (
        f"autoglm-runtime: error E0001: {missing}: no such file or directory; PATH must be a model directory, a "
        "model.toml or a requirements file\n" + cannot_write("the error as JSON", stdout)
    )


@pytest.mark.parametrize("stdout", REASONS)
@pytest.mark.parametrize(("argv", "what"), [(["--help"], "the help"), (["--version"], "the version")])
def test_help_and_version_that_cannot_be_written_are_coded_errors(argv: list[str], what: str, stdout: str) -> None:
    done = run_with_stdout(stdout, [*COMMANDS["python -m"], *argv])
    assert (done.returncode, done.stderr) == (120, cannot_write(what, stdout))


@pytest.mark.parametrize("stdout", REASONS)
def test_config_commands_whose_output_cannot_be_written_are_coded_errors(stdout: str, tmp_path: Path) -> None:
    config = [*COMMANDS["console script"], "config"]
    target = ["--hosts", f"file://{tmp_path}", "--root", "/app"]
    subprocess.run([*config, "set", "limits/rpm", "100", *target], check=True)
    cases = [
        (["set", "limits/burst", "5", "--json"], "the confirmation of setting 'limits/burst' (the value is set)"),
        (["set", "limits/rpm", "150"], "the confirmation of setting 'limits/rpm' (the value is set)"),
        (["get", "limits/rpm"], "the value of 'limits/rpm'"),
        (["get", "limits/rpm", "--json"], "the value of 'limits/rpm'"),
        (["dump"], "the 2 values under /app"),
        (["dump", "--json"], "the 2 values under /app"),
        (["delete", "limits/burst", "--json"], "the confirmation of deleting 'limits/burst' (the key is deleted)"),
    ]
    for argv, what in cases:
        done = run_with_stdout(stdout, [*config, *argv, *target])
        assert (done.returncode, done.stderr) == (120, cannot_write(what, stdout)), argv
    assert not (tmp_path / "app" / "limits" / "burst").exists()  # set, then deleted: both done all the same


def test_config_watch_ends_at_the_first_change_it_cannot_write(tmp_path: Path) -> None:
    config = [*COMMANDS["console script"], "config"]
    target = ["--hosts", f"file://{tmp_path}", "--root", "/app"]
    subprocess.run([*config, "set", "limits/rpm", "100", *target], check=True)
    with open("/dev/full", "w") as full:
        watch = subprocess.Popen([*config, "watch", *target], stdout=full, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stderr is not None
        assert watch.stderr.readline() == f"watching /app/ on file://{tmp_path}\n"
        subprocess.run([*config, "set", "limits/rpm", "200", *target], check=True)
        assert watch.wait(60) == 120
        assert watch.stderr.read() == cannot_write("the change of 'limits/rpm'", "full")
    finally:
        watch.kill()
        watch.wait()
        if watch.stderr is not None:
            watch.stderr.close()
