"""The identity of a model environment: a hash of everything that decides what gets installed.

Two models share an environment exactly when their keys are equal. The key covers:

* the requirements, normalised: PEP 503 names, sorted extras, canonical specifiers (sorted, versions as
  written by ``packaging``), the marker text, sorted and de-duplicated, so ``Foo_Bar >=1.0,<2`` and
  ``foo-bar<2,>=1.0`` give one key;
* the interpreter: implementation, ``major.minor.micro``, ``sys.implementation.cache_tag``, ABI flags and the
  platform tag, read from the interpreter that will run the environment;
* where packages come from: a hash of the wheelhouse's content (each file's name and SHA-256), or the
  index URL, and whether the build is offline;
* the content of every ``-r`` file the manifest included (a changed file means a new environment).

>>> key = environment_key(manifest, interpreter_info(sys.executable), source_identity(None, None, False))
... # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from autoglm_runtime.deps.manifest import ModelManifest
from autoglm_runtime.errors import EnvironmentBuildError, UsageError

__all__ = [
    "KEY_LENGTH",
    "InterpreterInfo",
    "environment_key",
    "interpreter_info",
    "normalise_requirement",
    "normalise_requirements",
    "redact_url",
    "source_identity",
    "wheelhouse_identity",
]

#: Hex digits of the key used as the environment's directory name.
KEY_LENGTH = 24
#: Bumped when the layout of an environment changes, so old environments are not reused by mistake.
_LAYOUT = "autoglm-env/1"
_WHEELHOUSE_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2")

_PROBE = (
    "import json, sys, sysconfig; print(json.dumps({"
    "'implementation': sys.implementation.name, "
    "'version': '%d.%d.%d' % sys.version_info[:3], "
    "'cache_tag': sys.implementation.cache_tag, "
    "'abiflags': getattr(sys, 'abiflags', ''), "
    "'platform': sysconfig.get_platform(), "
    "'executable': sys.executable}))"
)


@dataclass(frozen=True)
class InterpreterInfo:
    """What of an interpreter decides which wheels fit it."""

    implementation: str
    version: str
    cache_tag: str
    abiflags: str
    platform: str
    executable: str

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """``(3, 13, 0)`` for ``"3.13.0"``."""
        return tuple(int(part) for part in self.version.split("."))

    def identity(self) -> str:
        """The parts that belong in an environment key (not the path: a moved interpreter is the same one)."""
        return f"{self.implementation}|{self.version}|{self.cache_tag}|{self.abiflags}|{self.platform}"


_INFO_CACHE: dict[tuple[str, int, int], InterpreterInfo] = {}


def interpreter_info(python: str | os.PathLike[str]) -> InterpreterInfo:
    """Describe the interpreter at ``python``; the running one is read in-process, others by running them.

    Answers are cached per path, modification time and size, so reuse costs a ``stat``. Raises
    :class:`UsageError` (E0001) when ``python`` does not exist or does not run as a Python interpreter.
    """
    path = os.fspath(python)
    advice = "give the path of an existing Python executable"
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise UsageError(f"interpreter {path} does not exist ({exc.strerror}); {advice}") from exc
    cache_key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
    cached = _INFO_CACHE.get(cache_key)
    if cached is not None:
        return cached
    info: InterpreterInfo | None
    if os.path.realpath(path) == os.path.realpath(sys.executable):
        info = InterpreterInfo(
            implementation=sys.implementation.name,
            version="{}.{}.{}".format(*sys.version_info[:3]),
            cache_tag=sys.implementation.cache_tag or "",
            abiflags=getattr(sys, "abiflags", ""),
            platform=sysconfig.get_platform(),
            executable=path,
        )
    else:
        try:
            done = subprocess.run(
                [path, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise UsageError(f"interpreter {path} did not describe itself within 60 s; {advice}") from exc
        except OSError as exc:
            raise UsageError(f"interpreter {path} cannot be run ({exc.strerror or exc}); {advice}") from exc
        try:
            data = json.loads(done.stdout) if done.returncode == 0 else None
            info = InterpreterInfo(**{**data, "executable": path}) if isinstance(data, dict) else None
        except (ValueError, TypeError):
            info = None
        if info is None:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise UsageError(f"interpreter {path} failed to describe itself ({last}); {advice}")
    _INFO_CACHE[cache_key] = info
    return info


def normalise_requirement(requirement: Requirement) -> str:
    """One requirement in canonical text: ``Foo_Bar[b,a] >= 1.0, <2`` becomes ``foo-bar[a,b]<2,>=1.0``."""
    text = str(canonicalize_name(requirement.name))
    if requirement.extras:
        text += "[" + ",".join(sorted(canonicalize_name(e) for e in requirement.extras)) + "]"
    if requirement.url:
        text += f" @ {requirement.url}"
    else:
        text += ",".join(sorted(str(spec) for spec in requirement.specifier))
    if requirement.marker is not None:
        text += f"; {requirement.marker}"
    return text


def normalise_requirements(requirements: Iterable[Requirement]) -> list[str]:
    """Every requirement normalised, sorted and de-duplicated."""
    return sorted({normalise_requirement(r) for r in requirements})


def redact_url(url: str) -> str:
    """``url`` without its user information: ``https://user:token@host/simple`` -> ``https://****@host/simple``."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="****@" + parts.netloc.rpartition("@")[2]))


# (path, device, inode, size, mtime, ctime) -> SHA-256 of the content. ctime changes with every write and
# cannot be set back by anyone, so a file whose entry matches still has the content that was hashed.
_DIGEST_CACHE: dict[tuple[str, int, int, int, int, int], str] = {}
_DIGEST_CACHE_SIZE = 4096


def _content_digest(path: str, stat: os.stat_result) -> str:
    cache_key = (path, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    digest = _DIGEST_CACHE.get(cache_key)
    if digest is None:
        content = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                content.update(block)
        if len(_DIGEST_CACHE) >= _DIGEST_CACHE_SIZE:  # entries of replaced files are never asked for again
            _DIGEST_CACHE.clear()
        digest = _DIGEST_CACHE[cache_key] = content.hexdigest()
    return digest


def wheelhouse_identity(wheelhouse: str | os.PathLike[str]) -> str:
    """A SHA-256 over the wheelhouse's package files (``*.whl``, ``*.tar.gz``, ``*.zip``, ``*.tar.bz2``): each
    one's name and the SHA-256 of its content, in name order.

    Only the content counts: a wheelhouse rebuilt or copied with the same files (new modification times)
    has the same identity, and one that gains, loses or changes a file has another. Each file is read once
    per process; later calls cost a ``stat`` per file while it is unchanged. Raises :class:`UsageError`
    when the wheelhouse cannot be read.
    """
    digest = hashlib.sha256()
    try:
        entries = sorted(os.scandir(wheelhouse), key=lambda e: e.name)
        for entry in entries:
            if entry.is_file() and entry.name.endswith(_WHEELHOUSE_SUFFIXES):
                content = _content_digest(os.path.abspath(entry.path), entry.stat())
                digest.update(f"{entry.name}\0{content}\n".encode())
    except OSError as exc:
        raise UsageError(
            f"wheelhouse {os.fspath(wheelhouse)} cannot be read ({exc.strerror}); give a directory of wheels"
        ) from exc
    return digest.hexdigest()


def source_identity(
    wheelhouse: str | os.PathLike[str] | None, index_url: str | None, offline: bool, *, redact: bool = False
) -> str:
    """Where packages come from: the wheelhouse's content (:func:`wheelhouse_identity`), or the index URL.

    A wheelhouse that gains, loses, replaces or rewrites a file gives a new identity, so an environment is
    never reused after the packages it could have been built from changed; one rebuilt with the same files
    keeps its identity, so its environments are reused. Environment keys use the full URL; ``redact=True``
    gives the form that may be written to disk or logged (no credentials). Raises :class:`UsageError` when
    the wheelhouse cannot be read.
    """
    parts = [f"offline={offline}"]
    if wheelhouse is not None:
        parts.append(f"wheelhouse={wheelhouse_identity(wheelhouse)}")
    if index_url is not None:
        url = index_url.rstrip("/")
        parts.append(f"index={redact_url(url) if redact else url}")
    elif wheelhouse is None:
        parts.append("index=default")
    return "|".join(parts)


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise EnvironmentBuildError(f"included requirements file {path} cannot be read: {exc.strerror}") from exc


def environment_key(manifest: ModelManifest, interpreter: InterpreterInfo, source: str) -> str:
    """The hex key naming the environment that ``manifest``'s requirements need on ``interpreter``."""
    material = {
        "layout": _LAYOUT,
        "requirements": normalise_requirements(manifest.requirements),
        "interpreter": interpreter.identity(),
        "source": source,
        "included": sorted(_file_digest(Path(p)) for p in manifest.included_files),
    }
    if manifest.constraints:  # applied since the builder passes them (-c): earlier builds of these ignored them
        material["constraints"] = normalise_requirements(manifest.constraints)
    blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]
