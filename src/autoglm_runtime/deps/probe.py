"""An interpreter's installed distributions, as the dependency checks see them.

:func:`probe_environment` runs :mod:`autoglm_runtime.deps._scripts.probe` in the target interpreter (one
``python -I`` subprocess) or, for the running interpreter, in-process; it then parses the metadata with
``packaging``. Metadata that does not parse is kept as an error on the distribution, never raised.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps.specifiers import satisfies

if TYPE_CHECKING:
    from pathlib import Path

    from autoglm_runtime.errors import UsageError

__all__ = [
    "InstalledDist",
    "ProbedEnvironment",
    "canonical",
    "finish_probe",
    "launch_error",
    "probe_command",
    "probe_environment",
    "probe_payload",
]

PROBE_TIMEOUT = 120.0
#: The oldest interpreter the probe script runs on.
MIN_PYTHON = (3, 7)
_VERSION_SCRIPT = "import sys; sys.stdout.write('%d.%d' % sys.version_info[:2])"  # Python 2 runs it too
_CANON_RE = re.compile(r"[-_.]+")


def canonical(name: str) -> str:
    """PEP 503 normalised name (``Foo.Bar_baz`` -> ``foo-bar-baz``)."""
    return _CANON_RE.sub("-", name).lower()


@dataclass
class InstalledDist:
    """One ``.dist-info`` / ``.egg-info`` found on the path; ``errors`` hold metadata that did not parse."""

    name: str
    version: str
    location: str
    metadata_dir: str
    requires: list[Requirement] = field(default_factory=list)
    requires_python: SpecifierSet | None = None
    provides_extra: frozenset[str] = frozenset()
    #: top-level import name -> [RECORD path, RECORD hash] of the file that makes it importable
    modules: dict[str, list[str | None]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Invalid metadata that pip ignores (an invalid ``Requires-Python``, taken as any Python): reported as
    #: informational ``invalid-metadata``, never failing the check.
    ignored: list[str] = field(default_factory=list)
    #: The ``Tag`` lines of a wheel's ``WHEEL`` file (``cp312-cp312-manylinux_2_17_x86_64``), as written.
    wheel_tags: tuple[str, ...] = ()
    #: The project directory of an editable install, else ``None``.
    editable: str | None = None
    #: For a copy sharing its directory with another copy: whether its RECORD matches the files on disk.
    record_matches: bool | None = None
    #: Import name -> whether this distribution's files are on disk, for names whose files differ from
    #: those of another distribution in the same directory.
    clashes: dict[str, bool] = field(default_factory=dict)
    #: Import names, claimed in several path entries too, whose ``__init__.py`` in this distribution's
    #: directory declares a namespace (pkgutil ``extend_path``, ``pkg_resources.declare_namespace``).
    namespaces: frozenset[str] = frozenset()
    #: Metadata directories of the other copies in this directory that describe the same files (Debian's
    #: ``.dist-info`` beside its ``.egg-info``): one distribution when their versions are one too
    #: (:meth:`same_version`).
    same_files: frozenset[str] = frozenset()

    @functools.cached_property
    def parsed_version(self) -> Version | str:
        """:attr:`version` parsed once for the checks; the text itself when it is not PEP 440 or not in its
        normal form (``1.0.0-RC1``), which ``===`` compares as written."""
        try:
            parsed = Version(self.version)
        except InvalidVersion:
            return self.version
        return parsed if str(parsed) == self.version else self.version

    def same_version(self, other: InstalledDist) -> bool:
        """Whether ``other`` has this version, compared as PEP 440 versions (``1.0`` is ``1.0.0``, ``2.0RC1`` is
        ``2.0rc1``), as ``importlib.metadata``'s consumers (pip, packaging) compare them; text that is not
        PEP 440 is compared as written."""
        try:
            return Version(self.version) == Version(other.version)
        except InvalidVersion:
            return self.version == other.version

    @functools.cached_property
    def key(self) -> str:
        """The PEP 503 normalised name."""
        return canonical(self.name)

    @property
    def label(self) -> str:
        """``name version`` as messages show it."""
        return f"{self.name} {self.version}"


@dataclass
class ProbedEnvironment:
    """What the probe reported: interpreter, marker environment, path and distributions (precedence order)."""

    python: str
    version: str
    markers: dict[str, str]
    path: list[str]
    dists: list[InstalledDist]
    #: The path entries that are the base interpreter's site directories (a virtual environment made with
    #: ``--system-site-packages``); empty elsewhere.
    base_site: frozenset[str] = frozenset()
    #: The interpreter's ``sys.abiflags`` (``""``, ``"t"`` free-threaded, ``"d"`` debug); ``None`` when unknown.
    abiflags: str | None = None
    #: ``(pointer bits, C library)``: ``(64, "glibc 2.36")``, ``(32, "glibc 2.36")`` for a 32-bit interpreter on a
    #: 64-bit kernel, ``(64, "")`` for musl or another C library; ``None`` when unknown.
    binary_platform: tuple[int, str] | None = None
    #: The importable copy of each distribution, by normalised name (see :meth:`copies`).
    winners: dict[str, InstalledDist] = field(init=False)
    _copies: dict[str, list[InstalledDist]] = field(init=False, repr=False)
    #: Names whose importable copy cannot be told (several copies in one directory, none or several
    #: matching the files on disk); their winner is the first listed, as ``importlib.metadata`` takes it.
    undetermined: frozenset[str] = field(init=False)
    #: (id(marker), extra) -> (marker, result): each parsed marker evaluated once per extra (requirements
    #: parsed from one text share their marker object).
    _evaluated: dict[tuple[int, str], tuple[Marker, bool]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _matches: dict[str, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        copies: dict[str, list[InstalledDist]] = {}
        matches: dict[str, bool] = {}  # a copy's metadata directory -> whether it or one the same matches
        for dist in self.dists:
            if not dist.name:
                continue
            found = copies.setdefault(dist.key, [])
            same = (
                next((d for d in found if d.metadata_dir in dist.same_files and d.same_version(dist)), None)
                if dist.same_files
                else None
            )
            if same is not None:  # one distribution with two metadata directories: the first listed stands
                matches[same.metadata_dir] = matches[same.metadata_dir] or bool(dist.record_matches)
                continue
            found.append(dist)
            matches[dist.metadata_dir] = bool(dist.record_matches)
        self._copies = copies
        self.winners = {}
        undetermined = set()
        for key, found in copies.items():
            winner = _pick_copy(found, matches)
            if winner is None:
                undetermined.add(key)
            self.winners[key] = winner or found[0]
        self.undetermined = frozenset(undetermined)
        self._matches = matches

    def copies(self, key: str) -> list[InstalledDist]:
        """Every copy of distribution ``key`` on the path, in precedence order (a metadata directory that is
        the same distribution as one listed before it in its directory is no copy of its own)."""
        return list(self._copies.get(key, ()))

    def pick(self, found: list[InstalledDist]) -> InstalledDist | None:
        """Which of the copies ``found`` (in precedence order) is imported, were they alone on the path:
        :func:`_pick_copy`."""
        return _pick_copy(found, self._matches)

    @property
    def python_version(self) -> str:
        """The interpreter's full version (``3.13.0rc1``), as the probe's marker environment gives it."""
        return self.markers.get("python_full_version", self.version)

    def supports(self, requires_python: SpecifierSet) -> bool:
        """Whether ``requires_python`` admits this interpreter, judged as pip does.

        pip compares ``sys.version_info[:3]`` only, so a 3.13.0rc1 interpreter counts as 3.13.0.
        """
        try:
            release = Version(self.python_version).base_version
        except InvalidVersion:
            release = self.python_version
        return satisfies(requires_python, release)

    def evaluate(self, marker: Marker | None, extra: str = "") -> bool:
        """Evaluate ``marker`` for the target interpreter with ``extra`` (``""`` for no extra)."""
        if marker is None:
            return True
        hit = self._evaluated.get((id(marker), extra))
        if hit is not None and hit[0] is marker:
            return hit[1]
        result = marker.evaluate({**self.markers, "extra": extra})
        self._evaluated[(id(marker), extra)] = (marker, result)
        return result


def _pick_copy(found: list[InstalledDist], matches: dict[str, bool]) -> InstalledDist | None:
    """The copy of ``found`` (copies of one distribution, in precedence order) that is imported: the first,
    unless others share its directory; then the one whose RECORD matches the files on disk (``matches``, by
    metadata directory), ``None`` when not exactly one does."""
    first_dir = [d for d in found if d.location == found[0].location]
    if len(first_dir) == 1:
        return found[0]
    matching = [d for d in first_dir if matches.get(d.metadata_dir)]
    return matching[0] if len(matching) == 1 else None


def _is_pep440(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


@functools.lru_cache(maxsize=16384)
def _requirement(text: str) -> Requirement | str:
    """``text`` parsed, or why it does not parse; cached, as environments repeat requirement lines.

    The result is shared between distributions: callers never mutate it.
    """
    try:
        req = Requirement(text)
        if req.marker is not None:
            req.marker.evaluate({"extra": ""})  # surfaces undefined marker variables now
    except (InvalidRequirement, InvalidMarker, ValueError) as exc:
        return str(exc).splitlines()[0]
    return req


def _parse_dist(raw: dict[str, Any]) -> InstalledDist:
    where = str(raw.get("metadata_dir"))
    errors = [str(e) for e in raw.get("errors", [])]
    name = str(raw.get("name") or "")
    version = str(raw.get("version") or "")
    dist = InstalledDist(name, version, str(raw.get("location")), where, errors=errors)
    label = f"{name} {version}".strip() or where
    if version and isinstance(dist.parsed_version, str) and not _is_pep440(version):
        errors.append(f"{label} has an invalid version {version!r} (not PEP 440)")
    for text in raw.get("requires", []):
        parsed = _requirement(str(text))
        if isinstance(parsed, str):
            errors.append(f"{label} has an invalid requirement {text!r} ({parsed})")
            continue
        dist.requires.append(parsed)
    python = raw.get("requires_python")
    if python:
        try:
            dist.requires_python = SpecifierSet(python)
        except InvalidSpecifier:  # pip warns and takes any Python (BaseDistribution.requires_python)
            dist.ignored.append(f"{label} has an invalid Requires-Python {python!r}")
    dist.provides_extra = frozenset(canonical(e) for e in raw.get("provides_extra", []))
    dist.modules = dict(raw.get("modules", {}))
    editable = raw.get("editable")
    dist.editable = str(editable) if editable else None
    matches = raw.get("record_matches")
    dist.record_matches = bool(matches) if matches is not None else None
    dist.clashes = {str(k): bool(v) for k, v in (raw.get("clashes") or {}).items()}
    dist.namespaces = frozenset(str(m) for m in raw.get("namespaces") or ())
    dist.same_files = frozenset(str(m) for m in raw.get("same_files") or ())
    dist.wheel_tags = tuple(str(t) for t in raw.get("wheel_tags") or ())
    return dist


def parse_probe(data: dict[str, Any], python: str) -> ProbedEnvironment:
    """Build an :class:`ProbedEnvironment` from the probe's JSON object."""
    return ProbedEnvironment(
        python=python,
        version=str(data["version"]),
        markers={str(k): str(v) for k, v in data["markers"].items()},
        path=[str(p) for p in data["path"]],
        dists=[_parse_dist(raw) for raw in data["distributions"]],
        base_site=frozenset(str(p) for p in data.get("base_site") or ()),
        abiflags=None if data.get("abiflags") is None else str(data["abiflags"]),
        binary_platform=_binary_platform(data.get("binary_platform")),
    )


def _binary_platform(raw: object) -> tuple[int, str] | None:
    if isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], int) and isinstance(raw[1], str):
        return raw[0], raw[1]
    return None


def interpreter_path(python: str | Path) -> str:
    """``python`` as an absolute path (a bare name is looked up on ``PATH``), as reports show it."""
    text = os.fspath(python)
    found = None
    if os.sep not in text:
        import shutil  # only for a bare name: shutil's import (bz2, lzma) is a part of check-deps' start-up

        found = shutil.which(text)
    return os.path.abspath(found or text)


def probe_command(python: str | Path) -> list[str]:
    """The command that runs the probe in ``python``, isolated (``-I``: no user site, no environment vars)."""
    return [str(python), "-I", os.path.normpath(_probe.__file__)]


def _directory_error(exe: str) -> UsageError:
    from pathlib import Path  # here: only an error needs it

    from autoglm_runtime.errors import UsageError

    for candidate in (Path(exe) / "bin" / "python", Path(exe) / "Scripts" / "python.exe"):
        if candidate.exists():
            return UsageError(f"{exe} is a directory, not an interpreter; pass its interpreter: --python {candidate}")
    return UsageError(f"{exe} is a directory, not an interpreter; pass a Python executable to --python")


def launch_error(python: str | Path, exc: OSError | subprocess.TimeoutExpired, given: str | None = None) -> UsageError:
    """The usage error for an interpreter (``given`` as ``python``) that could not be started or did not answer."""
    from autoglm_runtime.errors import UsageError  # here: a check that runs never loads the registry

    exe = str(python)
    if isinstance(exc, subprocess.TimeoutExpired):
        return UsageError(f"interpreter {exe} did not answer the probe within {PROBE_TIMEOUT:.0f} s")
    if os.path.isdir(exe):
        return _directory_error(exe)
    if isinstance(exc, FileNotFoundError) and given is not None and os.sep not in given:
        # A bare name was looked for on PATH: ``exe`` (made absolute in the working directory) is only where it is not.
        return UsageError(
            f"interpreter {given} was not found on PATH; pass a Python executable (a path, or a name on PATH) "
            "to --python"
        )
    if isinstance(exc, FileNotFoundError):
        return UsageError(f"interpreter {exe} does not exist; pass a Python executable to --python")
    if isinstance(exc, PermissionError):
        return UsageError(f"interpreter {exe} cannot be run (permission denied); pass a Python executable")
    return UsageError(f"interpreter {exe} cannot be run: {exc}; pass a Python executable to --python")


def _python_version(exe: str) -> tuple[int, int] | None:
    """The ``(major, minor)`` of an interpreter that failed the probe, asked in a way every Python answers."""
    try:
        done = subprocess.run([exe, "-c", _VERSION_SCRIPT], capture_output=True, text=True, timeout=30, check=False)
        major, minor = done.stdout.strip().split(".")
        return int(major), int(minor)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def finish_probe(python: str | Path, returncode: int, stdout: str, stderr: str) -> ProbedEnvironment:
    """Parse what the probe printed; a failed or garbled probe is a :class:`UsageError`.

    Output before the probe's mark (a ``.pth`` file that prints at start-up) is ignored.
    """
    exe = str(python)
    if returncode != 0:
        from autoglm_runtime.errors import UsageError  # here, with the error it raises: see launch_error

        version = _python_version(exe)
        if version is not None and version < MIN_PYTHON:
            oldest = ".".join(map(str, MIN_PYTHON))
            raise UsageError(
                f"interpreter {exe} is Python {version[0]}.{version[1]}; check-deps checks environments of Python "
                f"{oldest} or newer: pass a newer interpreter to --python"
            )
        lines = [line.strip() for line in stderr.splitlines() if line.strip()] or ["no output"]
        # An interpreter that cannot start (a wrong PYTHONHOME) says why in its "Fatal Python error" line, after its
        # path configuration and before a thread dump; a traceback ends with its exception; anything else (a pyenv
        # shim, a wrapper script) says it first.
        fatal = [line for line in lines if line.startswith("Fatal Python error:")]
        said = fatal[0] if fatal else lines[-1] if "Traceback (most recent call last):" in lines else lines[0]
        raise UsageError(f"interpreter {exe} failed to run the probe (exit {returncode}): {said[:300]}")
    try:
        return parse_probe(probe_payload(stdout), exe)
    except (ValueError, KeyError, TypeError, AttributeError, EOFError) as exc:
        from autoglm_runtime.errors import UsageError

        raise UsageError(
            f"interpreter {exe} answered the probe with something that is not its description: {str(exc)[:300]}"
        ) from exc


def probe_payload(stdout: str) -> Any:
    """The description the probe printed on ``stdout``: its JSON text, or its marshal bytes in base64
    (:data:`~autoglm_runtime.deps._scripts.probe.MARSHAL_MARK`), on the line after its last mark (what
    ``.pth`` files print before the mark, or exit handlers after that line, is not the probe's). Raises
    ``ValueError`` (or ``EOFError``, ``TypeError`` from marshal) for output that is neither.
    """
    _, mark, payload = stdout.rpartition(_probe.MARSHAL_MARK)
    if mark:
        import binascii
        import marshal

        return marshal.loads(binascii.a2b_base64(payload.partition("\n")[0]))
    _, mark, payload = stdout.rpartition(_probe.OUTPUT_MARK)
    if not mark:
        raise ValueError("the probe's output mark is missing")
    import json  # here: a check printed as text never needs it

    return json.loads(payload.partition("\n")[0])


def probe_environment(python: str | Path | None = None) -> ProbedEnvironment:
    """Describe ``python``'s environment (the running interpreter's when ``None``).

    Raises :class:`~autoglm_runtime.errors.UsageError` (E0001) when the interpreter cannot be run or
    does not answer with the probe's description (a directory, Python older than 3.7, not a Python at all).
    """
    if python is None:
        return parse_probe(_probe.probe(), sys.executable)
    exe = interpreter_path(python)
    try:
        done = subprocess.run(probe_command(exe), capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise launch_error(exe, exc, os.fspath(python)) from exc
    return finish_probe(exe, done.returncode, done.stdout, done.stderr)
