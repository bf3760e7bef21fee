"""The local backend: run ZooKeeper's own java process from a Debian package or an Apache tarball.

Every java process starts in its own process group and is remembered in a module registry; ``stop()``
kills the whole group, an ``atexit`` hook kills whatever is still running when the interpreter exits, and
on Linux the process asks the kernel to kill it should the starting Python process die without cleanup.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from autoglm_runtime.testing._common import ZooKeeperHarnessError, ZooKeeperUnavailableError

__all__ = ["JVM_OPTIONS", "JavaProcess", "LocalInstallation", "find_local_installation", "live_processes"]

log = logging.getLogger(__name__)

DEBIAN_JAR = Path("/usr/share/java/zookeeper.jar")
# Debian's zookeeper.jar names its dependencies in its manifest but no slf4j binding; the simple one (a
# dependency of the package) sends ZooKeeper's warnings to the log file we keep for error messages.
DEBIAN_LOGGER = Path("/usr/share/java/slf4j-simple.jar")

STANDALONE_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
QUORUM_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

JVM_OPTIONS = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",  # start fast; a test server never runs long enough to profit from C2
    "-XX:-UsePerfData",
    "-Djava.net.preferIPv4Stack=true",
    "-Dzookeeper.admin.enableServer=false",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dzookeeper.console.threshold=WARN",
)


@dataclass(frozen=True)
class LocalInstallation:
    """A java executable and the class path of a ZooKeeper installation, and where they were found."""

    java: str
    classpath: tuple[str, ...]
    source: str

    def command(self, main_class: str, config: Path) -> list[str]:
        """The argument vector that runs ``main_class`` with ``config``."""
        return [self.java, *JVM_OPTIONS, "-cp", os.pathsep.join(self.classpath), main_class, str(config)]


def _find_java(env: Mapping[str, str]) -> str | None:
    java_home = env.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home).resolve() / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java", path=env.get("PATH"))
    return None if found is None else os.path.abspath(found)  # a relative PATH entry would break in java's cwd


def _tarball_classpath(home: Path) -> tuple[str, ...]:
    jars = sorted(str(p) for p in (home / "lib").glob("*.jar"))
    jars += sorted(str(p) for p in home.glob("zookeeper-*.jar"))  # 3.4-era tarballs keep the main jar at the top
    if not any(Path(j).name.startswith("zookeeper-") for j in jars):
        return ()
    conf = home / "conf"
    return ((str(conf),) if conf.is_dir() else ()) + tuple(jars)


def find_local_installation(
    env: Mapping[str, str] | None = None, *, debian_jar: Path = DEBIAN_JAR
) -> LocalInstallation:
    """Find java and ZooKeeper: ``ZOOKEEPER_HOME`` (an Apache tarball) first, then Debian's package.

    Every path in the answer is absolute (a relative ``ZOOKEEPER_HOME``, ``JAVA_HOME`` or ``PATH`` entry is
    resolved against the current directory now), because java runs in the server's data folder.

    Raises :class:`ZooKeeperUnavailableError` saying what is missing.
    """
    env = os.environ if env is None else env
    java = _find_java(env)
    if java is None:
        raise ZooKeeperUnavailableError(
            "The local backend needs a java executable, but none was found in JAVA_HOME or on PATH."
        )
    home = env.get("ZOOKEEPER_HOME")
    if home:
        classpath = _tarball_classpath(Path(home).resolve())
        if not classpath:
            raise ZooKeeperUnavailableError(
                f"ZOOKEEPER_HOME is set to {home!r}, but no zookeeper-*.jar was found in it or in its lib folder."
            )
        return LocalInstallation(java, classpath, f"ZOOKEEPER_HOME={home}")
    debian_jar = debian_jar.resolve()
    if debian_jar.is_file():
        classpath = (str(debian_jar),)
        logger = debian_jar.parent / DEBIAN_LOGGER.name
        if logger.is_file():
            classpath += (str(logger),)
        return LocalInstallation(java, classpath, str(debian_jar))
    raise ZooKeeperUnavailableError(
        f"The local backend found no ZooKeeper: ZOOKEEPER_HOME is not set and {debian_jar} does not exist."
    )


_LIVE: set[JavaProcess] = set()
_LIVE_LOCK = threading.Lock()


def live_processes() -> list[JavaProcess]:
    """The harness's java processes that are running now (a test uses it to prove cleanup)."""
    with _LIVE_LOCK:
        return [p for p in _LIVE if p.running]


def _kill_all_at_exit() -> None:
    with _LIVE_LOCK:
        processes = list(_LIVE)
    for process in processes:
        process.stop(grace=1.0)


atexit.register(_kill_all_at_exit)


def _die_with_parent_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` where it exists: the kernel kills java should its parent die.

    ``setpriv`` (util-linux) sets the parent-death signal and then executes java in its place, which
    keeps it, so no Python runs between fork and exec. The kernel ties the signal to the thread that
    started the process, so it is only used from the main thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class JavaProcess:
    """One java process in its own process group, its output appended to ``log_path``."""

    def __init__(self, argv: Sequence[str], *, log_path: Path, cwd: Path, name: str) -> None:
        self.argv = list(argv)
        self.log_path = log_path.resolve()
        self.cwd = cwd.resolve()
        self.name = name
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the java process exists and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id (also the process group id), or None before the first start."""
        return None if self._popen is None else self._popen.pid

    def start(self) -> None:
        """Start the process; raises :class:`ZooKeeperHarnessError` if it cannot be executed."""
        if self.running:
            return
        log_file: IO[bytes] = self.log_path.open("ab")
        try:
            self._popen = subprocess.Popen(
                [*_die_with_parent_prefix(), *self.argv],
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ZooKeeperHarnessError(f"Could not run {self.argv[0]!r} for {self.name}: {exc}.") from exc
        finally:
            log_file.close()
        with _LIVE_LOCK:
            _LIVE.add(self)
        log.debug("started %s as process group %d", self.name, self._popen.pid)

    def stop(self, grace: float = 5.0) -> None:
        """Terminate the whole process group (SIGTERM, then SIGKILL after ``grace`` seconds) and reap it."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            self._signal_group(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(popen.pid, signal.SIGKILL)
                popen.wait()
        # the leader may be gone while a child it spawned lingers in the group
        self._signal_group(popen.pid, signal.SIGKILL)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    @staticmethod
    def _signal_group(pgid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the process wrote, for error messages."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
