"""Collecting unused environments: what goes, what stays (in use, kept, recently used, builds running)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests._support.stdout import REASONS, cannot_write, run_with_stdout

from autoglm_runtime.cli import main
from autoglm_runtime.errors import UsageError
from autoglm_runtime.isolation.envs.build import METADATA_NAME
from autoglm_runtime.isolation.envs.gc import Removal, collect_garbage, hold_environment

DAY = 86400.0
NOW = 1_900_000_000.0
OLD, NEW, HELD = "a" * 24, "b" * 24, "c" * 24


def _env(root: Path, key: str, last_used: float) -> Path:
    """A finished environment as the builder leaves it: a directory with its metadata written last."""
    path = root / key
    (path / "bin").mkdir(parents=True)
    (path / METADATA_NAME).write_text(f'{{"key": "{key}"}}\n')
    os.utime(path / METADATA_NAME, (last_used, last_used))
    return path


def test_removes_what_nobody_used_for_long_enough_and_keeps_the_rest(tmp_path: Path) -> None:
    old = _env(tmp_path, OLD, NOW - 10 * DAY)
    new = _env(tmp_path, NEW, NOW - 1 * DAY)

    report = collect_garbage(tmp_path, unused_for=7 * DAY, clock=lambda: NOW)

    assert report.removed == [Removal(OLD, old, "not in use")]
    assert not old.exists()
    assert new.is_dir()
    assert list(report.kept) == [NEW]
    assert report.kept[NEW].startswith("used ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [NEW]  # the aside directory went too


def test_a_held_environment_stays_until_it_is_released(tmp_path: Path) -> None:
    held = _env(tmp_path, HELD, NOW - 100 * DAY)
    hold = hold_environment(held)
    assert hold is not None

    report = collect_garbage(tmp_path, clock=lambda: NOW)
    assert (report.removed, report.kept) == ([], {HELD: "in use"})
    assert held.is_dir()

    hold.release()
    assert not hold.held
    assert collect_garbage(tmp_path, clock=lambda: NOW + 1).removed == [Removal(HELD, held, "not in use")]


def test_a_hold_in_another_process_protects_the_environment(tmp_path: Path) -> None:
    held = _env(tmp_path, HELD, NOW - 100 * DAY)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from autoglm_runtime.isolation.envs.gc import hold_environment
        hold = hold_environment(Path(sys.argv[1]))
        print("held" if hold is not None else "missing", flush=True)
        sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(held)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        assert collect_garbage(tmp_path).kept == {HELD: "in use"}
    finally:
        holder.communicate("\n", timeout=30)
    assert [r.key for r in collect_garbage(tmp_path).removed] == [HELD]


def test_holding_records_a_use_and_a_removed_environment_cannot_be_held(tmp_path: Path) -> None:
    env = _env(tmp_path, OLD, 1000.0)
    hold = hold_environment(env)
    assert hold is not None
    assert os.stat(env / METADATA_NAME).st_mtime > 1000.0
    hold.release()

    collect_garbage(tmp_path)
    assert hold_environment(env) is None


def test_keep_names_keys_that_stay_whatever_their_age(tmp_path: Path) -> None:
    _env(tmp_path, OLD, NOW - 100 * DAY)
    report = collect_garbage(tmp_path, keep={OLD}, clock=lambda: NOW)
    assert (report.removed, report.kept) == ([], {OLD: "kept"})


def test_leftovers_of_interrupted_builds_go_unless_a_build_of_that_key_runs(tmp_path: Path) -> None:
    building = tmp_path / f".build-{NEW}-x1"
    killed = tmp_path / f".build-{OLD}-x2"
    stale = tmp_path / f".stale-{OLD}-x3"
    incomplete = tmp_path / HELD  # a <key> directory without its metadata
    for path in (building, killed, stale, incomplete):
        (path / "venv").mkdir(parents=True)
    (tmp_path / f".{OLD}.lock").write_text("")  # left by a killed builder: nobody holds it
    lock = tmp_path / f".{NEW}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a builder of NEW at work
    try:
        report = collect_garbage(tmp_path)
    finally:
        os.close(fd)

    assert sorted((r.key, r.path.name) for r in report.removed) == [
        (OLD, killed.name),
        (OLD, stale.name),
        (HELD, HELD),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{NEW}.lock", building.name]


def test_a_dry_run_reports_and_removes_nothing(tmp_path: Path) -> None:
    old = _env(tmp_path, OLD, NOW - 10 * DAY)
    (tmp_path / f".{OLD}.lock").write_text("")
    report = collect_garbage(tmp_path, unused_for=7 * DAY, dry_run=True, clock=lambda: NOW)
    assert report.removed == [Removal(OLD, old, "not in use")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{OLD}.lock", OLD]


def test_other_files_in_the_root_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "README").write_text("mine")
    assert collect_garbage(tmp_path).removed == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README", "notes"]


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        collect_garbage(tmp_path / "nope")
    assert info.value.message == (
        f"environment root {tmp_path / 'nope'} is not a directory; give the --env-root environments live in"
    )
    with pytest.raises(UsageError) as info:
        collect_garbage(tmp_path, unused_for=-1)
    assert info.value.message == "unused_for must be a number of seconds >= 0, got -1"


def test_env_gc_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _env(tmp_path, OLD, 1000.0)  # long ago
    _env(tmp_path, NEW, 4_000_000_000.0)  # in the future: used "now" whatever the clock says

    assert main(["env", "gc", "--env-root", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"would remove {OLD} {old} (not in use)"
    assert out[1].startswith(f"kept {NEW} (used ")
    assert old.is_dir()

    assert main(["env", "gc", "--env-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"removed {OLD} {old} (not in use)"
    assert not old.exists()

    assert main(["env", "gc", "--env-root", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: environment root {tmp_path / 'nope'} is not a directory; give the --env-root "
        "environments live in\n"
    )


def test_the_cli_names_the_flag_of_a_negative_age(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autoglm_runtime.cli import main

    assert main(["env", "gc", "--env-root", str(tmp_path), "--unused-days", "-3"]) == 2
    assert "--unused-days must be a number of days >= 0, got -3" in capsys.readouterr().err


@pytest.mark.parametrize("stdout", REASONS)
def test_env_gc_whose_list_cannot_be_written_is_a_coded_error_after_the_removal(stdout: str, tmp_path: Path) -> None:
    old = _env(tmp_path, OLD, 1000.0)
    _env(tmp_path, NEW, 4_000_000_000.0)
    done = run_with_stdout(stdout, [sys.executable, "-m", "autoglm_runtime", "env", "gc", "--env-root", str(tmp_path)])
    assert (done.returncode, done.stderr) == (120, cannot_write("the list of 2 environments (1 removed)", stdout))
    assert not old.exists()
