"""Reaping the live gauges of an ended process loses no file of a new process given the same pid meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.observability.test_processes import run

#: A process writing gauge ``argv[2]`` (mode liveall) at ``argv[3]`` under the pid ``argv[1]`` (its own if "0"),
#: and again at one more when a line comes on stdin; it prints its pid, then "again", and ends with its stdin.
GAUGE = textwrap.dedent(
    """
    import os, sys
    from prometheus_client import Gauge, values
    if sys.argv[1] != "0":  # (a process given the pid of one that ended)
        values.ValueClass = values.MultiProcessValue(lambda: int(sys.argv[1]))
    gauge = Gauge(sys.argv[2], "a gauge", registry=None, multiprocess_mode="liveall")
    gauge.set(float(sys.argv[3]))
    print(os.getpid(), flush=True)
    if sys.stdin.readline():
        gauge.set(float(sys.argv[3]) + 1)
        print("again", flush=True)
    sys.stdin.read()
    """
)

#: Reaps as a live process's exporter does, where the pid of the process ``ended`` goes to a new one (a GAUGE
#: "reused" at 7) right after the reaper found it ended (``when="found"``: the new process opens the file then) or
#: as it removes its file (``when="removing"``); prints the files of that pid left, how often the reaper asked
#: whether it runs, and the gauges exported once the new process wrote 8.
REAP = """
    import json, os, subprocess, sys
    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.multiprocess import MultiProcessCollector
    from autoglm_runtime.observability._dead_processes import _running, reap_dead_processes

    Gauge("own", "a gauge", registry=None, multiprocess_mode="liveall").set(1)  # (the reaper's own file)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    ended, when, gauge = {ended}, {when!r}, {gauge!r}
    checks, new = [], []

    def running(pid):
        if pid != ended:
            return _running(pid)
        checks.append(pid)
        if not new and len(checks) == (1 if when == "found" else 2):
            new.append(subprocess.Popen(
                [sys.executable, "-c", gauge, str(ended), "reused", "7"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            ))
            new[0].stdout.readline()  # (its gauge is written)
            return len(checks) == 2  # (the first check found the pid ended: the new process came after it)
        return bool(new) and new[0].poll() is None

    reap_dead_processes(directory, set(), running)
    new[0].stdin.write("\\n")
    new[0].stdin.flush()
    new[0].stdout.readline()
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    gauges = sorted(
        [s.name, s.labels["pid"] == str(ended), s.value]
        for family in registry.collect() for s in family.samples if s.name != "own"
    )
    new[0].communicate("")
    files = sorted(name for name in os.listdir(directory) if str(ended) in name)
    print(json.dumps([files, len(checks), gauges]))
"""


def _ended(metrics: Path) -> int:
    """The pid of a process that wrote gauge "ended" at 1 into ``metrics`` and ended."""
    result = subprocess.run(
        [sys.executable, "-c", GAUGE, "0", "ended", "1"],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
    )
    return int(result.stdout.split()[0])


@pytest.mark.skipif(os.name != "posix", reason="the reaper asks whether a pid runs on POSIX only")
@pytest.mark.parametrize(
    ("when", "exported"),
    [
        # It opened the ended process's file (its name is the pid's) and writes there: the file stays, with the
        # ended one's last value as well (prometheus_client's own limit when a pid is reused), as before the reap.
        ("found", [["ended", True, 1.0], ["reused", True, 8.0]]),
        # It made a file of its own (the ended one's was moved aside): that one stays, the ended one's goes.
        ("removing", [["reused", True, 8.0]]),
    ],
)
def test_a_pid_reused_while_its_ended_process_is_reaped_keeps_the_new_process_gauges(
    tmp_path: Path, when: str, exported: list[list[object]]
) -> None:
    # The reaper found the pid ended, then removed the files named by it: a new process given the pid in between
    # had opened the file and wrote its gauges into a removed one, missing from the exposition as long as it ran.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    ended = _ended(metrics)
    code = REAP.format(ended=ended, when=when, gauge=GAUGE)
    files, checks, gauges = run(code, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})  # type: ignore[misc]
    assert files == [f"gauge_liveall_{ended}.db"]  # (and nothing left aside)
    assert checks == 2
    assert gauges == exported


def _chattr(flag: str, path: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


def test_a_file_that_cannot_be_moved_aside_is_logged_under_its_own_name(tmp_path: Path) -> None:
    # A directory the server may no longer change (immutable here: root may write anywhere else): the ended
    # process's file stays where it was, and is logged once by its own name, not by the one it was to be moved to.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    ended = _ended(metrics)
    code = """
        import io, json, os, sys
        from prometheus_client import Gauge
        from autoglm_runtime.logging import configure_json_logging
        from autoglm_runtime.observability._dead_processes import reap_dead_processes

        stream = io.StringIO()
        configure_json_logging("WARNING", stream=stream)
        Gauge("own", "a gauge", registry=None, multiprocess_mode="liveall").set(1)
        print("ready", flush=True)
        sys.stdin.readline()  # (the directory is immutable now)
        unreaped = set()
        for _ in range(2):
            reap_dead_processes(os.environ["PROMETHEUS_MULTIPROC_DIR"], unreaped)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        print(json.dumps([sorted(unreaped), [[line["error_code"], line["message"]] for line in lines]]))
    """
    reaper = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
    )
    try:
        assert reaper.stdout is not None
        assert reaper.stdout.readline() == "ready\n"
        if not _chattr("+i", metrics):
            pytest.skip("chattr +i is not available here (no e2fsprogs, a file system without it, no capability)")
        out, _ = reaper.communicate("\n", timeout=120)
        files = sorted(os.listdir(metrics))
    finally:
        _chattr("-i", metrics)
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()
    assert reaper.returncode == 0
    unreaped, logged = json.loads(out)
    assert unreaped == [ended]
    path = metrics / f"gauge_liveall_{ended}.db"
    assert logged == [
        [
            "E0004",
            f"the live gauges of process {ended}, which ended, cannot be removed from {metrics} ([Errno 1] Operation "
            f"not permitted: '{path}'): its last values stay in the exposition; make the directory writable by "
            f"this server, or remove {metrics}/gauge_live*_{ended}.db",
        ]
    ]
    assert path.name in files
    assert not [name for name in files if "reaping" in name]


#: Reaps as REAP does, but the process of pid ``argv[1]`` is found ended whether it runs or not, and this reaper stops
#: right after it moved that process's file aside (printing "aside") until it is killed there.
KILLED_REAPER = """
    import os, sys
    from prometheus_client import Gauge
    from autoglm_runtime.observability._dead_processes import _running, reap_dead_processes

    Gauge("own", "a gauge", registry=None, multiprocess_mode="liveall").set(1)
    target, checks = int(sys.argv[1]), []

    def running(pid):
        if pid != target:
            return _running(pid)
        checks.append(pid)
        if len(checks) == 2:  # (asked again: the file is aside)
            print("aside", flush=True)
            sys.stdin.read()
        return False

    reap_dead_processes(os.environ["PROMETHEUS_MULTIPROC_DIR"], set(), running)
"""

#: A later reap by a process of the same server (its own gauges written), with nothing injected.
LATER_REAP = """
    import os
    from prometheus_client import Gauge
    from autoglm_runtime.observability._dead_processes import reap_dead_processes

    Gauge("own", "a gauge", registry=None, multiprocess_mode="liveall").set(1)
    reap_dead_processes(os.environ["PROMETHEUS_MULTIPROC_DIR"], set())
    print("[]")
"""


def _exported(metrics: Path) -> list[list[object]]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics))
    return sorted(
        [sample.name, int(sample.labels["pid"]), sample.value]
        for family in registry.collect()
        for sample in family.samples
        if sample.name != "own"
    )


@pytest.mark.skipif(os.name != "posix", reason="the reaper asks whether a pid runs on POSIX only")
@pytest.mark.parametrize("target", ["ended", "live"])
def test_a_file_left_aside_by_a_reaper_killed_mid_reap_is_settled_by_a_later_reap(tmp_path: Path, target: str) -> None:
    # A reaper killed between moving a file aside and putting it back or removing it left `*.db.reaping-<pid>` in
    # the directory for good; a live process's gauges moved aside with it were missing from every scrape after.
    # Now a later reap removes it (its process ended) or puts it back (its process runs), once that reaper is gone.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    live = None
    if target == "ended":
        pid = _ended(metrics)
    else:  # (a process that runs, found ended by a reaper mistaken about it)
        live = subprocess.Popen(
            [sys.executable, "-c", GAUGE, "0", "live", "7"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
    try:
        if live is not None:
            assert live.stdout is not None
            pid = int(live.stdout.readline())
        reaper = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(KILLED_REAPER), str(pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert reaper.stdout is not None
            assert reaper.stdout.readline() == "aside\n"
            aside = f"gauge_liveall_{pid}.db.reaping-{reaper.pid}"
            assert run(LATER_REAP, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}) == []
            # (while its reaper runs, the file is that reaper's to settle)
            assert sorted(name for name in os.listdir(metrics) if str(pid) in name) == [aside]
        finally:
            reaper.kill()
            reaper.wait()
        assert sorted(name for name in os.listdir(metrics) if str(pid) in name) == [aside]
        assert run(LATER_REAP, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}) == []
        files = sorted(name for name in os.listdir(metrics) if str(pid) in name)
        if live is None:
            assert files == []
            assert _exported(metrics) == []
        else:
            assert files == [f"gauge_liveall_{pid}.db"]
            assert live.stdin is not None
            live.stdin.write("\n")
            live.stdin.flush()
            assert live.stdout.readline() == "again\n"  # (it writes to the file put back)
            assert _exported(metrics) == [["live", pid, 8.0]]
    finally:
        if live is not None:
            live.communicate("")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_during_a_reap_reaps_too(tmp_path: Path) -> None:
    # Reaps take turns under a lock (a file aside under this process's pid is then none of its reaps'): a child
    # forked while a thread of the parent held it would wait for it for ever at its first reap.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    ended = _ended(metrics)
    code = """
        import json, os, signal, time
        from prometheus_client import Gauge
        from autoglm_runtime.observability import _dead_processes

        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        with _dead_processes._reaping:  # (as a thread of this process reaping at the fork)
            child = os.fork()
            if child == 0:
                Gauge("own", "a gauge", registry=None, multiprocess_mode="liveall").set(1)
                _dead_processes.reap_dead_processes(directory, set())
                os._exit(0)
            deadline = time.monotonic() + 60  # (a child that hangs is killed, not left behind)
            while not os.waitpid(child, os.WNOHANG)[0]:
                if time.monotonic() > deadline:
                    os.kill(child, signal.SIGKILL)
                    os.waitpid(child, 0)
                    print(json.dumps(["hung", []]))
                    raise SystemExit(0)
                time.sleep(0.05)
        print(json.dumps(["reaped", sorted(os.listdir(directory))]))
    """
    state, files = run(code, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})  # type: ignore[misc]
    assert state == "reaped"
    assert f"gauge_liveall_{ended}.db" not in files
