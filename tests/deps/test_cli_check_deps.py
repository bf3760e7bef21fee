"""The check-deps command: paths, pseudo-models, usage errors and exit codes, a lean import path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests._support.processes import processes_matching

from autoglm_runtime.cli import main
from autoglm_runtime.cli.check_deps import load_target
from autoglm_runtime.deps.probe import probe_environment
from autoglm_runtime.errors import UsageError
from autoglm_runtime.testing import fail_in_ci_else_skip


def _model(root: Path, name: str, requirements: list[str]) -> Path:
    directory = root / name
    directory.mkdir()
    reqs = ", ".join(f'"{r}"' for r in requirements)
    (directory / "model.toml").write_text(f'[model]\nname = "{name}"\nentrypoint = "m:load"\nrequirements = [{reqs}]\n')
    return directory


def test_paths_are_model_dirs_manifests_or_requirements_files(tmp_path: Path) -> None:
    a = _model(tmp_path, "a", ["numpy<2"])
    assert load_target(a).name == "a"
    assert load_target(a / "model.toml").name == "a"
    reqs = tmp_path / "serving.txt"
    reqs.write_text("numpy>=2\n-r more.txt\n")
    (tmp_path / "more.txt").write_text("six\n")
    pseudo = load_target(reqs)
    assert (pseudo.name, [str(r) for r in pseudo.requirements]) == ("serving.txt", ["numpy>=2", "six"])
    assert pseudo.included_files == (reqs.resolve(), (tmp_path / "more.txt").resolve())


def test_cross_model_conflict_exits_1_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _model(tmp_path, "a", ["zz-not-installed-lib<2"])
    b = _model(tmp_path, "b", ["zz-not-installed-lib>=2"])
    assert main(["check-deps", str(a), str(b), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [(f["kind"], f["models"]) for f in out["findings"] if f["models"]] == [
        ("cross-model", ["a", "b"]),
        ("missing", ["a"]),
        ("missing", ["b"]),
    ]
    assert out["findings"][0]["message"] == (
        "model 'b' needs zz-not-installed-lib>=2 but model 'a' needs zz-not-installed-lib<2: they cannot share one "
        "environment; load them isolated"
    )
    assert out["environment"]["python"] == sys.executable


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-deps", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: {tmp_path / 'absent'}: no such file or directory; PATH must be a model "
        "directory, a model.toml or a requirements file\n"
    )
    (tmp_path / "empty").mkdir()
    assert main(["check-deps", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0102: {tmp_path / 'empty' / 'model.toml'}: no such manifest; a model directory "
        "must hold model.toml\n"
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("numpy >>> 2\n")
    assert main(["check-deps", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"autoglm-runtime: error E0102: {bad}: line 1: 'numpy >>> 2' is not")
    a = _model(tmp_path, "a", [])
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.toml").write_text((a / "model.toml").read_text())
    assert main(["check-deps", str(a), str(other)]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: model name 'a' is used by both {a / 'model.toml'} and "
        f"{other / 'model.toml'}; names must be unique\n"
    )
    for twice in ([str(a), str(a)], [str(a), str(a / "model.toml")]):
        assert main(["check-deps", *twice]) == 2
        assert capsys.readouterr().err == (
            f"autoglm-runtime: error E0001: model 'a' ({a / 'model.toml'}) is given twice: give each model once\n"
        )


def test_a_bare_interpreter_name_not_on_path_is_said_not_found_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.chdir(tmp_path)
    said = (
        "E0001: interpreter python3.99 was not found on PATH; pass a Python executable (a path, or a name on PATH) "
        "to --python"
    )
    for spelling in (["--python", "python3.99"], ["--python=python3.99", "--no-cache"], ["--pyth", "python3.99"]):
        assert main(["check-deps", *spelling]) == 2
        assert capsys.readouterr().err == f"autoglm-runtime: error {said}\n"
    assert main(["check-deps", "--python", "python3.99", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == said
    with pytest.raises(UsageError) as info:
        probe_environment("python3.99")
    assert str(info.value) == said
    assert main(["check-deps", "--python", "./python3.99"]) == 2  # a path: said as before, made absolute
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: interpreter {tmp_path / 'python3.99'} does not exist; pass a Python "
        "executable to --python\n"
    )


def test_an_interpreter_that_fails_the_probe_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'not json'\n")
    fake.chmod(0o755)
    assert main(["check-deps", "--python", str(fake)]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: interpreter {fake} answered the probe with something that is not its "
        "description: the probe's output mark is missing\n"
    )
    # A wrapper that is not Python (a pyenv shim for a version not selected) says what is wrong first; a
    # traceback says it last.
    shim = "pyenv: python2: command not found\n\nThe python2 command exists in these Python versions:\n  2.7.18\n"
    crash = 'Traceback (most recent call last):\n  File "<probe>", line 1\nMemoryError: out of memory\n'
    # What CPython prints when it cannot start (PYTHONHOME naming no standard library), abridged.
    fatal = (
        "Python path configuration:\n  PYTHONHOME = '/nonexistent'\n  sys.path = [\n  ]\nFatal Python error: "
        "init_fs_encoding: failed to get the Python codec of the filesystem encoding\nPython runtime state: core "
        "initialized\nModuleNotFoundError: No module named 'encodings'\n\nCurrent thread 0x7f (most recent call "
        "first):\n  <no Python frame>\n"
    )
    for name, stderr, status, said in [
        ("failing", "boom\n", 3, "boom"),
        ("shim", shim, 127, "pyenv: python2: command not found"),
        ("crashing", crash, 1, "MemoryError: out of memory"),
        (
            "unstartable",
            fatal,
            1,
            "Fatal Python error: init_fs_encoding: failed to get the Python codec of the filesystem encoding",
        ),
    ]:
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{stderr}EOF\nexit {status}\n")
        script.chmod(0o755)
        assert main(["check-deps", "--python", str(script)]) == 2
        assert capsys.readouterr().err == (
            f"autoglm-runtime: error E0001: interpreter {script} failed to run the probe (exit {status}): {said}\n"
        )


def test_registering_the_command_does_not_import_the_checker() -> None:
    code = (
        "import argparse, sys\n"
        "from autoglm_runtime.cli import check_deps\n"
        "check_deps.register(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('packaging', 'autoglm_runtime.deps'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_the_probe_script_is_found_without_importing_deps() -> None:
    from autoglm_runtime.cli.check_deps import PROBE_SCRIPT
    from autoglm_runtime.deps._scripts import probe as _probe

    assert Path(_probe.__file__).resolve() == Path(PROBE_SCRIPT)


def test_a_usage_error_leaves_no_probe_process_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pidfile = tmp_path / "pid"
    slow = tmp_path / "slow-python"
    marker = f"59.{os.getpid()}{time.monotonic_ns() % 10**6}"  # a sleep argument no other process has
    slow.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep {marker}\n")
    slow.chmod(0o755)
    assert main(["check-deps", str(tmp_path / "absent"), "--python", str(slow)]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    # A probe left running would write its pid within the deadline and still be alive; a killed one is gone
    # (killed before it wrote the pid, or reaped after).
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and not (pidfile.exists() and pidfile.read_text().strip()):
        time.sleep(0.02)
    if pidfile.exists() and pidfile.read_text().strip():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pidfile.read_text()), 0)
    # Whether or not it got as far as writing its pid, no process may still run the fake interpreter's sleep.
    assert processes_matching(marker.encode()) == []
    assert processes_matching(str(slow).encode()) == []


OLD_PYTHONS = {v: Path(f"/root/.pyenv/versions/{v}/bin/python") for v in ("2.7.18", "3.6.15")}


def test_a_venv_directory_names_its_interpreter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    assert main(["check-deps", "--python", str(venv)]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: {venv} is a directory, not an interpreter; pass its interpreter: "
        f"--python {venv / 'bin' / 'python'}\n"
    )


@pytest.mark.parametrize("version", sorted(OLD_PYTHONS))
def test_an_interpreter_too_old_for_the_probe_is_named_with_its_version(
    version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    python = OLD_PYTHONS[version]
    if not python.exists():
        fail_in_ci_else_skip(f"needs {python} (Python {version}): install it with 'pyenv install {version}'")
    assert main(["check-deps", "--python", str(python)]) == 2
    short = ".".join(version.split(".")[:2])
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: interpreter {python} is Python {short}; check-deps checks environments of "
        "Python 3.7 or newer: pass a newer interpreter to --python\n"
    )


def test_a_pth_file_that_prints_does_not_garble_the_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "noisy.pth").write_text("import sys; print('hello from a .pth file'); print('{')\n")
    assert main(["check-deps", "--python", str(venv / "bin" / "python"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["environment"]["python"] == str(venv / "bin" / "python")


def usage_error(message: str) -> dict[str, object]:
    """The JSON object check-deps --json prints on stdout for a usage error saying ``message``."""
    return {"format": 1, "code": "E0001", "ok": False, "exit_code": 2, "error": f"E0001: {message}"}


def test_json_usage_errors_are_json_on_stdout_and_python_is_absolute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["check-deps", str(tmp_path / "absent"), "--json"]) == 2
    out = capsys.readouterr()
    assert json.loads(out.out) == usage_error(
        f"{tmp_path / 'absent'}: no such file or directory; PATH must be a model directory, a model.toml or a "
        "requirements file"
    )
    assert out.err.startswith("autoglm-runtime: error E0001: ")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mypython").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    main(["check-deps", "--python", "mypython", "--json"])
    assert json.loads(capsys.readouterr().out)["environment"]["python"] == str(bindir / "mypython")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--json", "--bogus"], "unrecognized arguments: --bogus"),
        (["--json", "--python"], "argument --python: expected one argument"),
        (["--find-links", "--json"], "argument --find-links: expected one argument"),
    ],
)
def test_a_command_line_argparse_refuses_is_json_on_stdout_with_json(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check-deps", *argv])
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    assert json.loads(out.out) == usage_error(message)
    assert out.err.endswith(f"error E0001: {message}\n")  # argparse's own usage and message, as without --json
    assert out.err.startswith("usage: autoglm-runtime")


def test_a_refused_command_line_without_json_prints_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check-deps", "--bogus"])
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.endswith("error E0001: unrecognized arguments: --bogus\n")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--json"],
        ["--python", "/x/python", "--json", "--no-cache"],
        ["--python=/x/python", "--plan", "--python", "/y/python"],  # the last --python wins
        ["--python=", "--resolve", "--offline", "--json", "--json"],
    ],
)
def test_plain_command_lines_are_read_without_argparse_exactly_as_argparse_reads_them(argv: list[str]) -> None:
    from autoglm_runtime.cli import build_parser
    from autoglm_runtime.cli.check_deps import plain_arguments

    parsed = vars(build_parser(only="check-deps").parse_args(["check-deps", *argv]))
    parsed.pop("command")
    plain = plain_arguments(argv, argv=argv)
    assert plain is not None
    assert vars(plain) == {**parsed, "argv": argv}


@pytest.mark.parametrize(
    "argv",
    [["model-dir"], ["--pyth", "/x"], ["--python"], ["--python", "--json"], ["--why", "numpy"], ["-h"], ["--", "x"]],
)
def test_other_command_lines_are_left_to_argparse(argv: list[str]) -> None:
    from autoglm_runtime.cli.check_deps import plain_arguments

    assert plain_arguments(argv) is None


def test_the_plain_reading_knows_every_option_of_the_parser() -> None:
    from autoglm_runtime.cli import build_parser
    from autoglm_runtime.cli.check_deps import DEFAULTS

    parsed = vars(build_parser(only="check-deps").parse_args(["check-deps"]))
    assert {k: v for k, v in parsed.items() if k not in ("command", "func")} == DEFAULTS


def test_a_plain_check_imports_neither_argparse_nor_shutil(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from autoglm_runtime.cli import main\n"
        "code = main(['check-deps', '--python', sys.executable, '--json', '--no-cache'])\n"
        "print(sorted(m for m in ('argparse', 'shutil') if m in sys.modules), code)\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.splitlines()[-1] in ("[] 0", "[] 1")
