"""Building one virtual environment per environment key, atomically and at most once.

``EnvironmentBuilder.ensure(manifest)`` returns the environment for the manifest's requirements:

* if ``<root>/<key>`` exists it is returned at once (a ``stat``; the directory only ever appears complete);
* otherwise the builder takes an exclusive ``fcntl`` lock on ``<root>/.<key>.lock`` (so two processes
  asking for one key build it once: the second waits, then finds it built), builds in a temporary
  directory ``<root>/.build-<key>-*`` with uv (or ``python -m venv`` and pip when uv is missing), checks it
  with check-deps, and renames it to ``<root>/<key>``;
* a failed build or check removes its temporary directory and lock file and raises
  :class:`EnvironmentBuildError` (with the installer's last lines) or :class:`DependencyConflictError` (with
  the check's findings); environments already built are never touched.

Progress is reported as :class:`BuildEvent` values to an optional callback and as log lines on the
``autoglm_runtime.isolation.envbuild`` logger. POSIX only (``fcntl``).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from autoglm_runtime.errors import DependencyConflictError, EnvironmentBuildError, UsageError
from autoglm_runtime.isolation._venvprobe import FactsProbe, probe_venv
from autoglm_runtime.isolation.check import check_probed
from autoglm_runtime.isolation.envkey import (
    InterpreterInfo,
    environment_key,
    interpreter_info,
    normalise_requirements,
    source_identity,
)
from autoglm_runtime.isolation.manifest import ModelManifest

__all__ = ["METADATA_NAME", "BuildEvent", "BuildProgress", "Environment", "EnvironmentBuilder", "find_uv"]

METADATA_NAME = "autoglm-env.json"
Installer = Literal["auto", "uv", "pip"]
Phase = Literal["wait", "venv", "install", "check", "done"]
_TOTAL_STEPS = 4
_log = logging.getLogger("autoglm_runtime.isolation.envbuild")


@dataclass(frozen=True)
class Environment:
    """A built environment. ``created`` is true when this call built it (false: it was reused)."""

    key: str
    path: Path
    python: Path
    interpreter: InterpreterInfo
    created: bool


@dataclass(frozen=True)
class BuildEvent:
    """One step of a build: ``step`` of ``total`` (0 while waiting for the lock), a phase and a message."""

    key: str
    step: int
    total: int
    phase: Phase
    message: str


class BuildProgress(Protocol):
    """Receives build events (the CLI draws its progress bar from them)."""

    def __call__(self, event: BuildEvent) -> None: ...


def find_uv() -> str | None:
    """The uv binary: the one of the ``uv`` package from PyPI when installed, else ``uv`` on ``PATH``."""
    with contextlib.suppress(ImportError, FileNotFoundError, AttributeError):
        found: str = importlib.import_module("uv").find_uv_bin()
        return found
    return shutil.which("uv")


def _bin(venv: Path) -> Path:
    return venv / "bin" / "python"


class EnvironmentBuilder:
    """Builds and reuses model environments under ``root``.

    >>> builder = EnvironmentBuilder("/var/lib/autoglm/envs", wheelhouse="wheels/", offline=True)  # doctest: +SKIP
    >>> env = builder.ensure(load_manifest("models/a")); env.python                               # doctest: +SKIP
    PosixPath('/var/lib/autoglm/envs/3f2a.../bin/python')
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        python: str | os.PathLike[str] | None = None,
        wheelhouse: str | os.PathLike[str] | None = None,
        offline: bool = False,
        index_url: str | None = None,
        installer: Installer = "auto",
        progress: BuildProgress | None = None,
        check: bool = True,
        lock_timeout: float = 3600.0,
    ) -> None:
        if installer not in ("auto", "uv", "pip"):
            raise UsageError(f"installer must be 'auto', 'uv' or 'pip', got {installer!r}")
        self.root = Path(root).absolute()
        self.python = os.path.abspath(os.fspath(python) if python is not None else sys.executable)
        self.wheelhouse = Path(wheelhouse).absolute() if wheelhouse is not None else None
        self.offline = offline
        self.index_url = index_url
        self.progress = progress
        self.check = check
        self.lock_timeout = lock_timeout
        uv = find_uv() if installer in ("auto", "uv") else None
        if installer == "uv" and uv is None:
            raise UsageError("installer='uv' was asked for but no uv binary was found; pip install uv")
        self.uv = uv
        self.root.mkdir(parents=True, exist_ok=True)

    # --- keys -----------------------------------------------------------------------------------------

    def interpreter(self) -> InterpreterInfo:
        """The interpreter environments are built for."""
        return interpreter_info(self.python)

    def key_for(self, manifest: ModelManifest) -> str:
        """The environment key of ``manifest`` for this builder's interpreter and package source."""
        source = source_identity(self.wheelhouse, self.index_url, self.offline)
        return environment_key(manifest, self.interpreter(), source)

    def path_for(self, key: str) -> Path:
        """Where the environment of ``key`` lives once built."""
        return self.root / key

    # --- building -------------------------------------------------------------------------------------

    def ensure(self, manifest: ModelManifest) -> Environment:
        """The environment for ``manifest``: reused when it exists, else built (once, even across processes)."""
        info = self.interpreter()
        if manifest.python is not None and not manifest.python.contains(info.version, prereleases=True):
            raise DependencyConflictError(
                f"model '{manifest.name}' needs Python {manifest.python} but the environment interpreter "
                f"{self.python} is {info.version}; pass python= an interpreter that fits"
            )
        key = self.key_for(manifest)
        final = self.path_for(key)
        if (final / METADATA_NAME).is_file():
            return Environment(key, final, _bin(final), info, created=False)
        with self._lock(key):
            if (final / METADATA_NAME).is_file():  # another process built it while we waited
                self._emit(key, 4, "done", f"environment {key} was built by another process; reusing it")
                return Environment(key, final, _bin(final), info, created=False)
            self._build(manifest, key, final, info)
        return Environment(key, final, _bin(final), info, created=True)

    def _emit(self, key: str, step: int, phase: Phase, message: str) -> None:
        event = BuildEvent(key, step, _TOTAL_STEPS, phase, message)
        _log.info("env %s [%d/%d %s] %s", key, step, _TOTAL_STEPS, phase, message, extra={"env_key": key})
        if self.progress is not None:
            self.progress(event)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        path = self.root / f".{key}.lock"
        deadline = time.monotonic() + self.lock_timeout
        waiting = False
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not waiting:
                    self._emit(key, 0, "wait", "another process is building this environment; waiting for it")
                    waiting = True
                if time.monotonic() > deadline:
                    raise EnvironmentBuildError(
                        f"gave up waiting {self.lock_timeout:g} s for the lock {path}: another build of "
                        f"environment {key} still runs; remove the lock file if no build runs"
                    ) from None
                time.sleep(0.02)
                continue
            # The holder unlinks the file before unlocking; a lock on an unlinked file protects nothing.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)

    def _build(self, manifest: ModelManifest, key: str, final: Path, info: InterpreterInfo) -> None:
        for stale in self.root.glob(f".build-{key}-*"):  # left by a builder that was killed; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=self.root))
        facts: FactsProbe | None = None
        try:
            venv = workdir / "venv"
            tool = "uv" if self.uv is not None else "venv+pip"
            self._emit(key, 1, "venv", f"creating a {info.version} environment with {tool} for model '{manifest.name}'")
            reqs = workdir / "requirements.txt"
            reqs.write_text("".join(f"{r}\n" for r in manifest.requirements), encoding="utf-8")
            for argv in self._commands(venv, reqs, bool(manifest.requirements)):
                phase: Phase = "venv" if "venv" in argv[:4] else "install"
                self._run(key, 1 if phase == "venv" else 2, phase, argv, manifest)
                if phase == "venv" and self.check:  # what the check needs of the interpreter, learnt meanwhile
                    facts = FactsProbe(_bin(venv))
            self._relocate(venv, final)
            metadata = {
                "key": key,
                "model": manifest.name,
                "requirements": normalise_requirements(manifest.requirements),
                "interpreter": info.identity(),
                "source": source_identity(self.wheelhouse, self.index_url, self.offline),
                "installer": tool,
            }
            if self.check:
                self._emit(key, 3, "check", "checking the environment with check-deps")
                self._check(manifest, venv, facts)
            (venv / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
            os.rename(venv, final)
        finally:
            if facts is not None:
                facts.close()
            shutil.rmtree(workdir, ignore_errors=True)
        self._emit(key, 4, "done", f"environment {key} ready in {time.monotonic() - started:.1f} s at {final}")

    def _commands(self, venv: Path, reqs: Path, install: bool) -> list[list[str]]:
        source: list[str] = []
        if self.wheelhouse is not None:
            source += ["--find-links", str(self.wheelhouse)]
        if self.index_url is not None:
            source += ["--index-url", self.index_url]
        elif self.offline and self.wheelhouse is not None:
            source += ["--no-index"]
        if self.uv is not None:
            flags = ["--no-config", "--no-python-downloads"] + (["--offline"] if self.offline else [])
            commands = [[self.uv, "venv", *flags, "--python", self.python, str(venv)]]
            if install:
                commands.append(
                    [self.uv, "pip", "install", *flags, "--python", str(_bin(venv)), *source, "-r", str(reqs)]
                )
            return commands
        commands = [[self.python, "-m", "venv", str(venv)]]
        if install:
            pip = [str(_bin(venv)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
            if self.offline and self.wheelhouse is None:
                pip.append("--no-index")
            commands.append([*pip, *source, "-r", str(reqs)])
        return commands

    def _run(self, key: str, step: int, phase: Phase, argv: Sequence[str], manifest: ModelManifest) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=15)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
            )
        except OSError as exc:
            raise EnvironmentBuildError(f"building the environment for model '{manifest.name}' failed: {exc}") from exc
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    tail.append(line)
                    self._emit(key, step, phase, line)
        status = proc.wait()
        if status != 0:
            command = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv[:3]))
            raise EnvironmentBuildError(
                f"building the environment for model '{manifest.name}' failed: `{command}` exited with status "
                f"{status}; nothing was left behind. Last lines:\n" + "\n".join(tail)
            )

    @staticmethod
    def _relocate(venv: Path, final: Path) -> None:
        """Point scripts written for the temporary path at the final one (console-script shebangs, activate)."""
        old, new = str(venv).encode(), str(final).encode()
        candidates = [venv / "pyvenv.cfg", *(venv / "bin").iterdir()]
        for path in candidates:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
                continue
            data = path.read_bytes()
            if old in data:
                path.write_bytes(data.replace(old, new))

    def _check(self, manifest: ModelManifest, venv: Path, facts: FactsProbe | None) -> None:
        # Equal to check_environment(python=<venv python>); the interpreter's part is probed once and cached.
        report = check_probed(probe_venv(_bin(venv), facts), [manifest])
        if not report.ok:
            raise DependencyConflictError(
                f"the environment built for model '{manifest.name}' fails check-deps; it was not kept:\n"
                + report.render()
            )
