"""Building one virtual environment per environment key, atomically and at most once.

``EnvironmentBuilder.ensure(manifest)`` returns the environment for the manifest's requirements:

* if ``<root>/<key>/autoglm-env.json`` exists it is returned at once (the key computation and a ``stat``;
  the directory only ever appears complete);
* otherwise the builder takes an exclusive ``fcntl`` lock on ``<root>/.<key>.lock`` (``_keylock.py``: two
  processes asking for one key build it once, the second waits, then finds it built), builds in a temporary
  directory ``<root>/.build-<key>-*`` with uv (or ``python -m venv`` and pip when uv is missing), checks it
  with check-deps, and renames it to ``<root>/<key>``;
* a failed build or check removes its temporary directory and lock file and raises
  :class:`EnvironmentBuildError` (with the installer's last lines) or :class:`DependencyConflictError` (with
  the check's findings); environments already built are never touched. An installer that runs past
  ``build_timeout`` is killed (with every process it started) and the build fails the same way;
* ``<root>/<key>`` without ``autoglm-env.json`` (a deletion that was interrupted) is removed, under the
  lock, and built again.

Arguments the builder cannot use (an interpreter or wheelhouse that does not exist, an ``env_root`` that
cannot be created or written) raise :class:`UsageError` (E0001) from the constructor.

Progress is reported as :class:`BuildEvent` values to an optional callback and as log lines on the
``autoglm_runtime.isolation.envs.build`` logger. POSIX only (``fcntl``).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from autoglm_runtime.deps.check import check_probed
from autoglm_runtime.deps.manifest import ModelManifest
from autoglm_runtime.deps.probe import interpreter_path
from autoglm_runtime.errors import DependencyConflictError, EnvironmentBuildError, UsageError
from autoglm_runtime.isolation.envs._fastprobe import FactsProbe, probe_venv
from autoglm_runtime.isolation.envs._installer import Scrubber, remove_path, run_streaming, usable_root
from autoglm_runtime.isolation.envs._keylock import key_lock
from autoglm_runtime.isolation.envs._use import METADATA_NAME, touch
from autoglm_runtime.isolation.envs.key import (
    InterpreterInfo,
    environment_key,
    interpreter_info,
    normalise_requirements,
    source_identity,
)

__all__ = [
    "DEFAULT_BUILD_TIMEOUT",
    "METADATA_NAME",
    "BuildEvent",
    "BuildProgress",
    "BuiltEnvironment",
    "EnvironmentBuilder",
    "find_uv",
]

Installer = Literal["auto", "uv", "pip"]
Phase = Literal["wait", "venv", "install", "check", "done"]
_TOTAL_STEPS = 4
#: Default limit (s) of one build's installer commands together.
DEFAULT_BUILD_TIMEOUT = 1800.0
_log = logging.getLogger("autoglm_runtime.isolation.envs.build")


@dataclass(frozen=True)
class BuiltEnvironment:
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

    ``build_timeout`` limits one build's installer commands together (seconds, ``None`` for no limit);
    ``lock_timeout`` how long to wait for another process building the same key. Raises
    :class:`UsageError` for arguments that cannot work (see the module docstring).

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
        build_timeout: float | None = DEFAULT_BUILD_TIMEOUT,
    ) -> None:
        if installer not in ("auto", "uv", "pip"):
            raise UsageError(f"installer must be 'auto', 'uv' or 'pip', got {installer!r}")
        if build_timeout is not None and not build_timeout > 0:
            raise UsageError(f"build_timeout must be a positive number of seconds or None, got {build_timeout!r}")
        self.root = Path(root).absolute()
        # A bare name (python3.12) is looked up on PATH, as check-deps --python does; a path is made absolute.
        self.python = interpreter_path(os.fspath(python)) if python is not None else os.path.abspath(sys.executable)
        if python is not None and os.sep not in os.fspath(python) and not os.path.exists(self.python):
            raise UsageError(
                f"interpreter {os.fspath(python)} was not found on PATH; give the path of a Python executable, or "
                "a name on PATH"
            )
        self.wheelhouse = Path(wheelhouse).absolute() if wheelhouse is not None else None
        self.offline = offline
        self.index_url = index_url
        self.progress = progress
        self.check = check
        self.lock_timeout = lock_timeout
        self.build_timeout = build_timeout
        self._scrub = Scrubber(index_url)
        uv = find_uv() if installer in ("auto", "uv") else None
        if installer == "uv" and uv is None:
            raise UsageError("installer='uv' was asked for but no uv binary was found; pip install uv")
        self.uv = uv
        if self.wheelhouse is not None and not self.wheelhouse.is_dir():
            what = "is not a directory" if self.wheelhouse.exists() else "does not exist"
            raise UsageError(f"wheelhouse {self.wheelhouse} {what}; give a directory of wheels")
        interpreter_info(self.python)  # a missing or broken interpreter is a usage error now, not at the first load
        usable_root(self.root)

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

    def ensure(self, manifest: ModelManifest) -> BuiltEnvironment:
        """The environment for ``manifest``: reused when it exists, else built (once, even across processes)."""
        info = self.interpreter()
        if manifest.python is not None and not manifest.python.contains(info.version, prereleases=True):
            raise DependencyConflictError(
                f"model '{manifest.name}' needs Python {manifest.python} but the environment interpreter "
                f"{self.python} is {info.version}: give an interpreter that fits (ModelLoader(python=...), or --python "
                "for env build)"
            )
        key = self.key_for(manifest)
        final = self.path_for(key)
        if (final / METADATA_NAME).is_file():
            touch(final)  # its last use, which ``env gc`` reads
            return BuiltEnvironment(key, final, _bin(final), info, created=False)
        waiting = "another process is building this environment; waiting for it"
        with key_lock(self.root, key, self.lock_timeout, lambda: self._emit(key, 0, "wait", waiting)):
            if (final / METADATA_NAME).is_file():  # another process built it while we waited
                self._emit(key, 4, "done", f"environment {key} was built by another process; reusing it")
                return BuiltEnvironment(key, final, _bin(final), info, created=False)
            self._build(manifest, key, final, info)
        return BuiltEnvironment(key, final, _bin(final), info, created=True)

    def _emit(self, key: str, step: int, phase: Phase, message: str) -> None:
        event = BuildEvent(key, step, _TOTAL_STEPS, phase, message)
        _log.info("env %s [%d/%d %s] %s", key, step, _TOTAL_STEPS, phase, message, extra={"env_key": key})
        if self.progress is not None:
            self.progress(event)

    def _build(self, manifest: ModelManifest, key: str, final: Path, info: InterpreterInfo) -> None:
        started = time.monotonic()
        deadline = None if self.build_timeout is None else started + self.build_timeout
        doing = "removing directories left by an earlier build"
        workdir: Path | None = None
        facts: FactsProbe | None = None
        try:
            for stale in [*self.root.glob(f".build-{key}-*"), *self.root.glob(f".stale-{key}-*")]:
                remove_path(stale)  # left by a builder that was killed; we hold the lock
            if os.path.lexists(final):
                doing = f"removing {final}, which has no {METADATA_NAME}"
                self._remove_incomplete(key, final)
            doing = f"creating a temporary directory in {self.root}"
            workdir = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=self.root))
            venv = workdir / "venv"
            tool = "uv" if self.uv is not None else "venv+pip"
            self._emit(key, 1, "venv", f"creating a {info.version} environment with {tool} for model '{manifest.name}'")
            doing = "writing the requirements file"
            reqs = workdir / "requirements.txt"
            reqs.write_text("".join(f"{r}\n" for r in manifest.requirements), encoding="utf-8")
            constraints = workdir / "constraints.txt" if manifest.constraints else None
            if constraints is not None:  # the manifest's -c files, applied as pip applies them
                constraints.write_text("".join(f"{r}\n" for r in manifest.constraints), encoding="utf-8")
            for argv in self._commands(venv, reqs, bool(manifest.requirements), constraints):
                phase: Phase = "venv" if "venv" in argv[:4] else "install"
                self._run(key, 1 if phase == "venv" else 2, phase, argv, manifest, deadline=deadline)
                if phase == "venv" and self.check:  # what the check needs of the interpreter, learnt meanwhile
                    facts = FactsProbe(_bin(venv))
            doing = "pointing the environment's scripts at its final path"
            self._relocate(venv, final)
            metadata = {
                "key": key,
                "model": manifest.name,
                "requirements": normalise_requirements(manifest.requirements),
                "interpreter": info.identity(),
                "source": source_identity(self.wheelhouse, self.index_url, self.offline, redact=True),
                "installer": tool,
            }
            if self.check:
                self._emit(key, 3, "check", "checking the environment with check-deps")
                self._check(manifest, venv, facts)
            doing = f"writing {METADATA_NAME}"
            (venv / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
            doing = f"renaming the environment to {final}"
            os.rename(venv, final)
        except OSError as exc:
            raise EnvironmentBuildError(
                f"building the environment {key} for model '{manifest.name}' failed while {doing}: "
                f"{exc.strerror or exc}; nothing was left behind. Check that {self.root} is writable and has free "
                "space, then load the model again"
            ) from exc
        finally:
            if facts is not None:
                facts.close()
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
        self._emit(key, 4, "done", f"environment {key} ready in {time.monotonic() - started:.1f} s at {final}")

    def _remove_incomplete(self, key: str, final: Path) -> None:
        """Move aside and delete ``final``: it exists without its metadata, so it is not a finished build."""
        _log.warning(
            "environment directory %s has no %s (a deletion or a copy that did not finish); removing it and "
            "building the environment again",
            final,
            METADATA_NAME,
            extra={"error_code": "E0101", "env_key": key},
        )
        aside = Path(tempfile.mkdtemp(prefix=f".stale-{key}-", dir=self.root)) / "env"
        os.rename(final, aside)  # one atomic step: <root>/<key> never holds a half-removed tree
        remove_path(aside.parent)

    def _commands(self, venv: Path, reqs: Path, install: bool, constraints: Path | None = None) -> list[list[str]]:
        """The installer's commands; ``constraints``, a constraints file, limits the install."""
        source: list[str] = ["-c", str(constraints)] if constraints is not None else []
        if self.wheelhouse is not None:
            source += ["--find-links", str(self.wheelhouse)]
        if self.index_url is not None:
            source += ["--index-url", self.index_url]
        elif self.offline and self.wheelhouse is not None:
            source += ["--no-index"]
        if self.uv is not None:
            flags = ["--no-config", "--no-python-downloads"] + (["--offline"] if self.offline else [])
            # --quiet: its "Activate with: source <temporary path>" would reach the build's log; errors still do.
            commands = [[self.uv, "venv", "--quiet", *flags, "--python", self.python, str(venv)]]
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

    def _run(
        self, key: str, step: int, phase: Phase, argv: Sequence[str], manifest: ModelManifest, *, deadline: float | None
    ) -> None:
        """Run one installer command, streaming its output as events; it never outlives this call."""
        tail: collections.deque[str] = collections.deque(maxlen=15)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        command = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv[:3]))

        def line(text: str) -> None:
            text = self._scrub(text)
            if text:
                tail.append(text)
                self._emit(key, step, phase, text)

        try:
            status = run_streaming(argv, env, deadline, line)
        except OSError as exc:
            raise EnvironmentBuildError(
                f"building the environment for model '{manifest.name}' failed: `{command}` could not be started: "
                f"{exc.strerror or exc}; nothing was left behind"
            ) from exc
        last = "\n".join(tail) or "(no output)"
        if status is None:
            raise EnvironmentBuildError(
                f"building the environment for model '{manifest.name}' failed: `{command}` did not finish within "
                f"the build timeout of {self.build_timeout:g} s and was killed; nothing was left behind. Raise "
                f"build_timeout if the build is just slow. Last lines:\n{last}"
            )
        if status != 0:
            raise EnvironmentBuildError(
                f"building the environment for model '{manifest.name}' failed: `{command}` exited with status "
                f"{status}; nothing was left behind. Last lines:\n{last}"
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
