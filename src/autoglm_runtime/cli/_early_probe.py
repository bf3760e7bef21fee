"""The probe process of ``check-deps --python``, started before the command imports anything heavy.

Most of the wall time of ``autoglm-runtime check-deps --python PY`` is two interpreters starting: this one
and PY running the probe script. :func:`prestart` starts the probe from a first look at the raw arguments,
before argparse, packaging or the checker are imported, so that the two overlap; it needs only ``os``
(``os.posix_spawn``; ``subprocess`` where that is missing). Once argparse has parsed the arguments, the
command uses the process only if it was started for the same interpreter and cache
(:meth:`ProbeProcess.serves`); a wrong guess costs time, never the answer. While the cache shows that
nothing deciding the interpreter's ``sys.path`` changed, no process is started at all: the probe's code
reads the distributions on that path in this process (:func:`start_probe`).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Sequence

#: The probe script, found without importing the deps package (whose import is what the probe overlaps).
PROBE_SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "deps", "_scripts", "probe.py"
)


def absolute(python: str) -> str:
    """``python`` as an absolute path (a bare name is looked up on ``PATH``), as reports show it."""
    found = None
    if os.sep not in python:
        import shutil  # only for bare names

        found = shutil.which(python)
    return os.path.abspath(found or python)


def cache_path(python: str) -> str:
    """Where the probe of ``python`` keeps its per-distribution cache (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    import zlib  # zlib, not hashlib: this runs before the probe starts, and hashlib's import costs more

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = zlib.crc32(python.encode("utf-8", "surrogateescape"))
    readable = "".join(c if c.isalnum() or c in "._-" else "_" for c in python)[-80:]
    return os.path.join(root, "autoglm-runtime", "check-deps", f"{readable}-{digest:08x}.json")


def guess(argv: Sequence[str]) -> tuple[str | None, bool]:
    """``(--python value, --no-cache given)`` as far as a plain reading of check-deps' arguments tells.

    Only the spelled-out ``--python X`` / ``--python=X`` count (the last one wins, as in argparse); nothing
    after ``--``. Abbreviations and other forms argparse accepts are left to it.
    """
    python: str | None = None
    no_cache = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg == "--python" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            python = argv[i + 1]
            i += 1
        elif arg.startswith("--python="):
            python = arg[len("--python=") :]
        elif arg == "--no-cache":
            no_cache = True
        i += 1
    return python, no_cache


class ProbeProcess:
    """The probe script running in ``python``; a launch failure is kept in :attr:`error`, not raised.

    ``answer`` is what the probe prints when that is already known (:func:`start_probe`): then no process
    is started and :meth:`communicate` gives it with exit code 0.
    """

    def __init__(self, python: str, cache: str | None, *, answer: str | None = None) -> None:
        self.python = python
        self.cache = cache
        self.error: OSError | None = None
        self._pid: int | None = None
        self._fds: list[int] = []
        self._popen: subprocess.Popen[bytes] | None = None
        self._outcome: tuple[int, str, str] | Exception | None = None
        if answer is not None:
            self._outcome = (0, answer, "")
            return
        command = [python, "-I", PROBE_SCRIPT, *(["--cache", cache] if cache else [])]
        try:
            if hasattr(os, "posix_spawn"):
                self._spawn(command)
            else:  # pragma: no cover - Windows
                import subprocess

                self._popen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            self.error = exc

    def _spawn(self, command: list[str]) -> None:
        out_r, out_w = os.pipe()  # not inheritable: only the dup2'd ends reach the child
        err_r, err_w = os.pipe()
        _widen(out_w)
        try:
            actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
            self._pid = os.posix_spawn(command[0], command, os.environ, file_actions=actions)
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self._fds = [out_r, err_r]

    def serves(self, python: str, cache: str | None) -> bool:
        """Whether this process probes ``python`` with ``cache``: what the parsed arguments ask for."""
        return (self.python, self.cache) == (python, cache)

    def communicate(self, timeout: float, clock: Callable[[], float] | None = None) -> tuple[int, str, str]:
        """Wait for the probe: ``(exit code, stdout, stderr)``, text with universal newlines.

        Raises :class:`subprocess.TimeoutExpired` (after killing the probe) when it runs longer than ``timeout``.
        A second call gives the first one's outcome again.
        """
        if self._outcome is None:
            try:
                self._outcome = self._communicate(timeout, clock)
            except Exception as exc:
                self._outcome = exc
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome

    def _communicate(self, timeout: float, clock: Callable[[], float] | None) -> tuple[int, str, str]:
        if self._popen is not None:  # pragma: no cover - Windows
            out, err = self._popen.communicate(timeout=timeout)
            return self._popen.returncode, _text(out), _text(err)
        import select
        import time

        now = clock or time.monotonic
        deadline = now() + timeout
        chunks: dict[int, list[bytes]] = {fd: [] for fd in self._fds}
        poller = select.poll()
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        pending = set(self._fds)
        while pending:
            remaining = deadline - now()
            if remaining <= 0:
                self.kill()
                import subprocess

                raise subprocess.TimeoutExpired([self.python, "-I", PROBE_SCRIPT], timeout)
            for fd, _ in poller.poll(remaining * 1000):
                data = os.read(fd, 1 << 16)
                if data:
                    chunks[fd].append(data)
                else:
                    poller.unregister(fd)
                    pending.discard(fd)
        out, err = (b"".join(chunks[fd]) for fd in self._fds)
        self._close()
        assert self._pid is not None
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        return os.waitstatus_to_exitcode(status), _text(out), _text(err)

    def kill(self) -> None:
        """Stop the probe if it still runs, and reap it; safe to call at any time, more than once."""
        if self._popen is not None:  # pragma: no cover - Windows
            if self._popen.poll() is None:
                self._popen.kill()
                self._popen.communicate()
            return
        self._close()
        if self._pid is not None:
            import signal

            os.kill(self._pid, signal.SIGKILL)  # not yet reaped, so the pid is still this child's
            os.waitpid(self._pid, 0)
            self._pid = None

    def _close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


#: The pipe the probe writes its output into holds this much (Linux; the default, 64 KiB, is less than the
#: description of an environment of a few hundred distributions).
PIPE_SIZE = 1 << 20


def _widen(fd: int) -> None:
    """Let the pipe ``fd`` hold :data:`PIPE_SIZE` bytes where the system allows it.

    The probe writes its whole output at once and exits, usually while this process is still importing the
    checker: with the default pipe it would block when the pipe is full and only finish (and exit) once this
    process starts reading, which puts the rest of its writing and its interpreter's shutdown on the path of
    the command.
    """
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):  # not Linux, Python < 3.10, or over the per-user limit
        pass


def _text(data: bytes) -> str:
    # As subprocess's text mode gives it, but never failing on bytes a .pth file printed.
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def _described_here(python: str, cache: str) -> str | None:
    """What the probe of ``python`` would print, read in this process while its path is known unchanged.

    The probe's own modules do the work (``probe.cached_output``), imported from their files under a package
    name of their own: importing them as ``autoglm_runtime.deps._scripts`` would import the deps package,
    and with it ``packaging``.
    """
    name = "_autoglm_probe"  # the name probe.py gives itself when run as a script
    if name not in sys.modules:
        package = type(sys)(name)
        package.__path__ = [os.path.dirname(PROBE_SCRIPT)]
        sys.modules[name] = package
    __import__(f"{name}.probe")
    probe = sys.modules[f"{name}.probe"]
    text: str | None = probe.cached_output(cache, here=python)
    return None if text is None else probe.OUTPUT_MARK + text


def start_probe(python: str, cache: str | None) -> ProbeProcess:
    """The probe of ``python`` (absolute) with the cache file ``cache``: started, or answered in this process.

    With a cache whose record shows that nothing deciding ``python``'s ``sys.path`` changed since its last
    probe (:mod:`autoglm_runtime.deps._scripts.path_stamp`), the distributions on that path are read here,
    by the probe's own code: the same answer without starting the interpreter.
    """
    if cache is not None:
        text = _described_here(python, cache)
        if text is not None:
            return ProbeProcess(python, cache, answer=text)
    return ProbeProcess(python, cache)


def prestart(argv: Sequence[str]) -> ProbeProcess | None:
    """Start the probe that ``check-deps`` with ``argv`` (its arguments) will most likely ask for."""
    python, no_cache = guess(argv)
    if python is None:
        return None
    python = absolute(python)
    return start_probe(python, None if no_cache else cache_path(python))
