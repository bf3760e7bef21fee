"""The builder's installer runner (never outlives its call), credential scrubbing and argument checks."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autoglm_runtime.cli import main
from autoglm_runtime.deps.manifest import ModelManifest
from autoglm_runtime.errors import EnvironmentBuildError, UsageError
from autoglm_runtime.isolation.envs._installer import Scrubber, run_streaming
from autoglm_runtime.isolation.envs.build import EnvironmentBuilder

# Prints its pid and a grandchild's, then waits "forever": an installer stuck on a build.
STUCK = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("pids", os.getpid(), child.pid, flush=True)
    time.sleep(600)
    """
)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still running at the deadline (SIGKILL is delivered asynchronously to a grandchild)."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


def _pids(lines: list[str]) -> list[int]:
    return [int(p) for p in next(line for line in lines if line.startswith("pids")).split()[1:]]


def test_output_lines_and_exit_status() -> None:
    lines: list[str] = []
    code = "import sys; print('one'); print('two\\r'); sys.stdout.write('last'); sys.exit(3)"
    assert run_streaming([sys.executable, "-c", code], os.environ, None, lines.append) == 3
    assert lines == ["one", "two", "last"]


def test_a_raising_callback_leaves_no_process_behind() -> None:
    lines: list[str] = []

    def interrupt(line: str) -> None:
        lines.append(line)
        raise KeyboardInterrupt  # what Ctrl-C in a progress callback looks like

    with pytest.raises(KeyboardInterrupt):
        run_streaming([sys.executable, "-c", STUCK], os.environ, None, interrupt)
    assert _wait_gone(_pids(lines)) == []


def test_the_deadline_kills_the_command_and_what_it_started() -> None:
    lines: list[str] = []
    # A shell (it starts in milliseconds even on a loaded machine, where a Python child can take over a second to
    # say its pids) and the sleep it started.
    stuck = ["/bin/sh", "-c", "sleep 600 & echo pids $$ $!; wait"]
    status = run_streaming(stuck, os.environ, time.monotonic() + 2.0, lines.append)
    assert status is None
    assert _wait_gone(_pids(lines)) == []


def _manifest(tmp_path: Path) -> ModelManifest:
    return ModelManifest("m", "m:load", (), None, tmp_path, tmp_path / "model.toml", ())


def test_build_timeout_is_an_environment_build_error_with_the_last_lines(tmp_path: Path) -> None:
    builder = EnvironmentBuilder(tmp_path / "envs", installer="pip", build_timeout=1.0)
    # A shell starts in milliseconds even on a loaded machine, so its line is out well before the timeout.
    argv = ["/bin/sh", "-c", "echo resolving; exec sleep 600"]
    with pytest.raises(EnvironmentBuildError) as info:
        builder._run("k", 2, "install", argv, _manifest(tmp_path), deadline=time.monotonic() + 1.0)
    assert info.value.message == (
        "building the environment for model 'm' failed: `sh -c echo resolving; exec sleep 600` did not finish "
        "within the build timeout of 1 s and was killed; nothing was left behind. Raise build_timeout if the build "
        "is just slow. Last lines:\nresolving"
    )


def test_installer_output_never_shows_index_credentials(tmp_path: Path) -> None:
    url = "https://build:s3cr%2Fet@pypi.example/simple"
    scrub = Scrubber(url)
    assert scrub(f"Looking in indexes: {url}") == "Looking in indexes: https://****@pypi.example/simple"
    assert scrub("401 for user build with password s3cr/et") == "401 for user build with password ****"
    assert scrub("fetching https://other:pw@mirror/x") == "fetching https://****@mirror/x"
    events: list[str] = []
    builder = EnvironmentBuilder(
        tmp_path / "envs", index_url=url, installer="pip", progress=lambda e: events.append(e.message)
    )
    builder._run("k", 2, "install", [sys.executable, "-c", f"print({url!r})"], _manifest(tmp_path), deadline=None)
    assert events == ["https://****@pypi.example/simple"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"python": "{tmp}/no-python"},
            "interpreter {tmp}/no-python does not exist (No such file or directory); give the path of an existing "
            "Python executable",
        ),
        ({"wheelhouse": "{tmp}/no-wheels"}, "wheelhouse {tmp}/no-wheels does not exist; give a directory of wheels"),
        ({"wheelhouse": "{tmp}/file"}, "wheelhouse {tmp}/file is not a directory; give a directory of wheels"),
        (
            {"root": "{tmp}/file/envs"},
            "environment root {tmp}/file/envs cannot be created: Not a directory; give a directory that can be "
            "created and written",
        ),
        (
            {"root": "{tmp}/file"},
            "environment root {tmp}/file cannot be created: it is not a directory; give a directory that can be "
            "created and written",
        ),
        (
            {"root": "/proc/autoglm-nope/envs"},
            "environment root /proc/autoglm-nope/envs cannot be created: No such file or directory; give a directory "
            "that can be created and written",
        ),
        ({"build_timeout": 0}, "build_timeout must be a positive number of seconds or None, got 0"),
    ],
)
def test_unusable_arguments_are_usage_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    (tmp_path / "file").write_text("")
    given = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kwargs.items()}
    root = given.pop("root", tmp_path / "envs")
    with pytest.raises(UsageError) as info:
        EnvironmentBuilder(root, **given)  # type: ignore[arg-type]
    assert info.value.message == message.format(tmp=tmp_path)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "--python",
            "interpreter {path} does not exist (No such file or directory); give the path of an existing Python "
            "executable",
        ),
        ("--wheelhouse", "wheelhouse {path} does not exist; give a directory of wheels"),
    ],
)
def test_env_build_with_a_missing_path_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.toml").write_text('[model]\nname = "m"\nentrypoint = "m:load"\nrequirements = []\n')
    missing = tmp_path / "missing"
    code = main(["env", "build", str(model), "--env-root", str(tmp_path / "envs"), option, str(missing)])
    assert (code, capsys.readouterr()) == (2, ("", f"autoglm-runtime: error E0001: {message.format(path=missing)}\n"))


def test_an_env_root_that_went_away_is_a_build_error(tmp_path: Path) -> None:
    root = tmp_path / "envs"
    builder = EnvironmentBuilder(root, installer="pip")
    root.rmdir()
    root.write_text("")  # replaced by a file after the builder was made
    manifest = _manifest(tmp_path)
    key = builder.key_for(manifest)
    with pytest.raises(EnvironmentBuildError) as info:
        builder.ensure(manifest)
    assert info.value.message == (
        f"the lock file {root}/.{key}.lock of environment {key} cannot be opened: Not a directory; check that {root} "
        "is a writable directory, then load the model again"
    )
