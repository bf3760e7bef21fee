"""An interpreter's installed distributions as the dependency checks see them: :class:`InstalledDist`,
:class:`ProbedEnvironment` (which copy of each distribution is imported, markers evaluated for the target) and
:func:`parse_probe`, which builds one from the description the probe script prints
(:mod:`autoglm_runtime.deps._scripts.probe`; :mod:`autoglm_runtime.deps.probe` runs it). Metadata that does
not parse is kept as an error on the distribution, never raised.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from autoglm_runtime.deps.specifiers import satisfies

__all__ = ["InstalledDist", "ProbedEnvironment", "canonical", "parse_probe"]

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
    seen: set[tuple[object, ...]] = set()
    for text in raw.get("requires", []):
        parsed = _requirement(str(text))
        if isinstance(parsed, str):
            errors.append(f"{label} has an invalid requirement {text!r} ({parsed})")
            continue
        # huggingface_hub 2.4 lists 'fastapi; extra == "all"' twice: one requirement, as for pip check, which
        # keeps requirements in a set (packaging's equality: spacing, quotes and the name's spelling aside).
        same = (canonical(parsed.name), *sorted(parsed.extras), str(parsed.specifier), parsed.url, str(parsed.marker))
        if same in seen:
            continue
        seen.add(same)
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
