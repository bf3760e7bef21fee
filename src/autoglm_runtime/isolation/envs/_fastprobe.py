"""Describe a newly built virtual environment exactly as a probe of its interpreter would, mostly in-process.

A real probe (:func:`~autoglm_runtime.deps.probe.probe_environment`) starts the environment's
interpreter, which costs more than the rest of check-deps together. What needs that interpreter is the
same for every virtual environment of one interpreter: the Python version, the marker environment, the
``sys.path`` entries that exist before ``site`` runs, and where ``site`` looks for site-packages. Those
facts are learnt once (``python -I -S _probe.py --base``) and cached in memory, keyed by the interpreter's
resolved path, modification time and size and the environment's ``home``. :func:`probe_venv` then composes
``sys.path`` as ``site`` does when the environment's interpreter starts isolated (``-I``) and reads the
distributions on it in-process with the probe's own :func:`~autoglm_runtime.deps._scripts.probe.collect`::

    with FactsProbe(venv / "bin" / "python") as facts:   # right after the venv is created
        install_requirements()                          # the facts probe, if one is needed, runs meanwhile
        env = probe_venv(venv / "bin" / "python", facts)

The result equals what a real probe reports. Where that cannot be shown without running the interpreter,
:func:`probe_venv` runs the real probe instead:

* no ``pyvenv.cfg``, or ``include-system-site-packages`` not ``false`` (``site`` reads a missing key as true);
* a ``.pth`` file in a site-packages directory (its lines may add directories to the path or run code);
* a ``sitecustomize`` module on the path, or a path entry that is a file (an archive might hold one):
  ``site`` imports ``sitecustomize`` at start, and it may change the path;
* the facts probe failed (the real probe then says why, or succeeds).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps.distributions import ProbedEnvironment, parse_probe
from autoglm_runtime.deps.probe import PROBE_TIMEOUT, probe_environment

__all__ = ["FactsProbe", "VenvFacts", "describe_venv", "facts_command", "facts_key", "probe_venv"]

FactsKey = tuple[str, int, int, str]
_log = logging.getLogger("autoglm_runtime.isolation.envs.build")


@dataclass(frozen=True)
class VenvFacts:
    """What probes of every virtual environment of one interpreter share (:func:`_probe.base_facts`)."""

    version: str
    markers: dict[str, str]
    #: ``sys.path`` before ``site`` runs, duplicates removed.
    path: tuple[str, ...]
    #: Site-packages directories under :data:`_probe.PREFIX_PLACEHOLDER`, in ``site``'s order.
    site_packages: tuple[str, ...]
    #: ``sys.abiflags`` (``None`` where there is none): with the version, the interpreter's ABI tag.
    abiflags: str | None = None
    #: ``[pointer bits, C library]`` (:func:`~autoglm_runtime.deps._scripts.markers.binary_platform`).
    binary_platform: tuple[object, ...] | None = None


_CACHE: dict[FactsKey, VenvFacts] = {}


@dataclass(frozen=True)
class _VenvConfig:
    prefix: str
    home: str | None
    system_site: str


def _venv_config(python: str) -> _VenvConfig | None:
    """``pyvenv.cfg`` found and read as ``site.venv`` does for ``python``; ``None`` when there is none."""
    exe_dir = os.path.dirname(os.path.abspath(python))
    prefix = os.path.dirname(exe_dir)
    candidates = (os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(prefix, "pyvenv.cfg"))
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        return None
    home: str | None = None
    system_site = "true"
    try:
        with open(found, encoding="utf-8") as fh:
            for line in fh:
                if "=" in line:
                    key, _, value = line.partition("=")
                    key, value = key.strip().lower(), value.strip()
                    if key == "include-system-site-packages":
                        system_site = value.lower()
                    elif key == "home":
                        home = value
    except (OSError, UnicodeDecodeError):
        return None
    return _VenvConfig(prefix, home, system_site)


def facts_key(python: str | os.PathLike[str]) -> FactsKey | None:
    """The cache key of ``python``'s facts, or ``None`` when ``python`` is no virtual environment's.

    The interpreter's resolved path, modification time and size (a reinstalled interpreter is probed
    again), and the ``home`` of ``pyvenv.cfg``, from which the interpreter finds its standard library.
    """
    config = _venv_config(os.fspath(python))
    if config is None or config.home is None:
        return None
    real = os.path.realpath(python)
    try:
        stat = os.stat(real)
    except OSError:
        return None
    return (real, stat.st_mtime_ns, stat.st_size, config.home)


def facts_command(python: str | os.PathLike[str]) -> list[str]:
    """The command printing ``python``'s :class:`VenvFacts`: the probe, isolated and without ``site``."""
    return [os.fspath(python), "-I", "-S", str(Path(_probe.__file__)), "--base"]


def _parse_facts(stdout: str) -> VenvFacts | None:
    try:
        data = json.loads(stdout)
        if data["probe"] != _probe.PROBE_FORMAT or data["no_site"] is not True:
            return None
        return VenvFacts(
            version=str(data["version"]),
            markers={str(k): str(v) for k, v in data["markers"].items()},
            path=tuple(str(p) for p in data["path"]),
            site_packages=tuple(str(p) for p in data["site_packages"]),
            abiflags=None if data.get("abiflags") is None else str(data["abiflags"]),
            binary_platform=tuple(data["binary_platform"]) if data.get("binary_platform") else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class FactsProbe:
    """``python``'s :class:`VenvFacts`: from the cache, else from a probe started at once, in the background.

    :meth:`result` waits for the probe; :meth:`close` (or leaving the ``with`` block) ends one still running,
    so no child process outlives its owner.
    """

    def __init__(self, python: str | os.PathLike[str]) -> None:
        self.python = os.fspath(python)
        self.key = facts_key(self.python)
        self._proc: subprocess.Popen[str] | None = None
        if self.key is not None and self.key not in _CACHE:
            try:
                self._proc = subprocess.Popen(
                    facts_command(self.python),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            except OSError as exc:
                self._failed(str(exc))

    def result(self) -> VenvFacts | None:
        """The facts, or ``None`` when ``python`` is no virtual environment's or its probe failed."""
        if self.key is None:
            return None
        proc, self._proc = self._proc, None
        if proc is None:
            return _CACHE.get(self.key)
        try:
            stdout, stderr = proc.communicate(timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self._failed(f"no answer within {PROBE_TIMEOUT:.0f} s")
            return None
        facts = _parse_facts(stdout) if proc.returncode == 0 else None
        if facts is None:
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            self._failed(f"exit status {proc.returncode}: {tail}")
            return None
        _CACHE[self.key] = facts
        return facts

    def _failed(self, reason: str) -> None:
        _log.warning(
            "interpreter %s did not describe itself (%s); probing the environment by running it instead",
            self.python,
            reason,
            extra={"error_code": "E0001"},
        )

    def close(self) -> None:
        """End the probe if it still runs (a build that failed before its check no longer needs it)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    def __enter__(self) -> FactsProbe:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _may_customize(entry: str) -> bool:
    """Whether ``entry`` holds a ``sitecustomize`` module, or is a file (an archive might hold one)."""
    if not os.path.isdir(entry):
        return os.path.exists(entry)
    try:
        return any(name.partition(".")[0] == "sitecustomize" for name in os.listdir(entry))
    except OSError:
        return True


def describe_venv(python: str | os.PathLike[str], facts: VenvFacts) -> ProbedEnvironment | None:
    """``python``'s environment read in-process, equal to a real probe's; ``None`` when that is not shown.

    ``facts`` must be those of ``python``'s interpreter (:func:`facts_key`). The path is composed as
    ``site`` composes it for ``python -I``: ``facts.path``, then each existing site-packages directory of
    the environment's prefix not already on it (the system site-packages are left out: the environment
    excludes them).
    """
    exe = os.fspath(python)
    config = _venv_config(exe)
    if config is None or config.system_site == "true":
        return None
    path = list(facts.path)
    known = {os.path.normcase(os.path.abspath(p)) for p in path}
    marker = _probe.PREFIX_PLACEHOLDER + os.sep
    for template in facts.site_packages:
        if not template.startswith(marker):
            return None
        sitedir = os.path.abspath(os.path.join(config.prefix, template[len(marker) :]))
        if not os.path.isdir(sitedir):
            continue
        if os.path.normcase(sitedir) not in known:
            path.append(sitedir)
            known.add(os.path.normcase(sitedir))
        try:
            names = os.listdir(sitedir)
        except OSError:
            return None
        if any(name.endswith(".pth") and not name.startswith(".") for name in names):
            return None
    if any(_may_customize(entry) for entry in path):
        return None
    data = {
        "version": facts.version,
        "markers": facts.markers,
        "path": path,
        "base_site": [],  # without the system site-packages, no base site directory is on the path
        "abiflags": facts.abiflags,
        "binary_platform": list(facts.binary_platform) if facts.binary_platform else None,
        "distributions": _probe.collect(path),
    }
    return parse_probe(data, exe)


def probe_venv(python: str | os.PathLike[str], pending: FactsProbe | None = None) -> ProbedEnvironment:
    """What :func:`probe_environment` reports for ``python``, read in-process where that is shown equal.

    ``pending`` is a :class:`FactsProbe` started earlier for ``python`` (to overlap its probe with other
    work). Raises :class:`~autoglm_runtime.errors.UsageError` (E0001) as :func:`probe_environment` does.
    """
    exe = os.fspath(python)
    key = facts_key(exe)
    facts = _CACHE.get(key) if key is not None else None
    if key is not None and facts is None:
        facts_probe = pending if pending is not None and pending.key == key else FactsProbe(exe)
        try:
            facts = facts_probe.result()
        finally:
            if facts_probe is not pending:
                facts_probe.close()
    env = describe_venv(exe, facts) if facts is not None else None
    if env is None:
        _log.debug("environment of %s probed by running it: it cannot be described in-process", exe)
        return probe_environment(exe)
    return env
