"""Model manifests (``model.toml``) and requirements files.

A model directory holds ``model.toml``::

    [model]
    name = "sentiment-v1"
    entrypoint = "sentiment_model:load"      # module:callable returning the model object
    requirements = ["conflictlib==1.0", "numpy>=1.24,<2", "-r extra-requirements.txt"]
    python = ">=3.10"                        # optional

A requirements entry ``-r FILE`` (relative to the model directory) includes a requirements file. The optional
``[serving]`` table (how the isolated loader serves the model) is checked here too, so check-deps refuses a
manifest the loader would refuse. Every problem in a manifest is collected and reported at once, naming the file
and the field.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from autoglm_runtime.deps.specifiers import wheel_pin
from autoglm_runtime.errors import ManifestError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SERVING_DEFAULTS",
    "ModelManifest",
    "load_manifest",
    "parse_requirement_lines",
    "parse_requirements_file",
    "serving_problems",
]

MANIFEST_NAME = "model.toml"
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # fullmatch: `$` lets a final newline by
#: The ``[serving]`` fields and their defaults (``autoglm_runtime.isolation.workers.serving.ServingOptions``).
SERVING_DEFAULTS: Mapping[str, Any] = {"replicas": 1, "concurrency": "serial", "max_inflight": 1, "max_queue": 64}
_CONCURRENCY = ("serial", "threads", "async")
_ENTRYPOINT_RE = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*")


@dataclass(frozen=True)
class ModelManifest:
    """A parsed model manifest. ``requirements`` has every ``-r`` include expanded."""

    name: str
    entrypoint: str
    requirements: tuple[Requirement, ...]
    python: SpecifierSet | None
    directory: Path
    source: Path
    #: Files pulled in by ``-r`` entries, in the order read (their content belongs in an env's identity).
    included_files: tuple[Path, ...] = field(default=())
    #: The lines of ``-c`` constraints files: as pip applies them, they add no requirement but limit the
    #: versions of whatever is installed with the model.
    constraints: tuple[Requirement, ...] = field(default=())

    @property
    def module(self) -> str:
        """The module part of the entrypoint."""
        return self.entrypoint.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        """The callable part of the entrypoint."""
        return self.entrypoint.split(":", 1)[1]


def serving_problems(table: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, problem)`` for every problem of a ``[serving]`` table (absent fields take their defaults)."""
    problems: list[tuple[str, str]] = []
    known = tuple(SERVING_DEFAULTS)
    for key in sorted(set(table) - set(known)):
        problems.append((key, f"unknown field; expected one of {', '.join(known)}"))
    for key, low in (("replicas", 1), ("max_inflight", 1), ("max_queue", 0)):
        value = table.get(key, SERVING_DEFAULTS[key])
        if type(value) is not int or value < low:
            problems.append((key, f"must be a whole number >= {low}, got {value!r}"))
    concurrency = table.get("concurrency", SERVING_DEFAULTS["concurrency"])
    if concurrency not in _CONCURRENCY:
        problems.append(("concurrency", f"must be one of {', '.join(map(repr, _CONCURRENCY))}, got {concurrency!r}"))
    elif concurrency == "serial" and table.get("max_inflight", 1) != 1 and not problems:
        problems.append(
            (
                "max_inflight",
                f"{table['max_inflight']} calls at once need concurrency = 'threads' (a thread-safe model) or 'async' "
                "(an async model); a serial model runs one call at a time",
            )
        )
    return problems


class _Problems:
    """Collects every problem in one file, then raises them together."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            raise ManifestError(f"{self.source}: {self.items[0]}")
        listed = "; ".join(self.items)
        raise ManifestError(f"{self.source} has {len(self.items)} problems: {listed}")


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Requirements-file lines with comments stripped and backslash continuations joined."""
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            yield start, line
    if pending.strip():
        yield start, pending.strip()


#: pip's global options of a requirements file: they choose where packages come from, not which, so
#: the checks accept and ignore them (with or without a value).
_GLOBAL_OPTIONS = {
    "-i": True, "--index-url": True, "--extra-index-url": True, "--no-index": False, "-f": True,
    "--find-links": True, "--pre": False, "--prefer-binary": False, "--only-binary": True, "--no-binary": True,
    "--trusted-host": True, "--use-feature": True, "--require-hashes": False,
}  # fmt: skip
#: pip's per-requirement options (``uv pip compile --generate-hashes`` writes ``--hash``); dropped.
_PER_REQUIREMENT = re.compile(r"\s--(?:hash|config-settings|global-option|install-option)(?:[=\s]\S+)")
_EGG_RE = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")


def _shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters: a message never echoes a whole file."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _option(text: str) -> tuple[str, str]:
    """``("--name", "value")`` of an option line (``--name=value``, ``--name value`` or ``-xvalue``)."""
    if text.startswith("--"):
        name, sep, value = text.partition("=")
        if not sep:
            name, _, value = text.partition(" ")
        return name.strip(), value.strip()
    if len(text) > 2 and not text[2].isspace():
        return text[:2], text[2:].strip()
    return text[:2], text[2:].strip()


def _editable(target: str, base: Path) -> str | None:
    """The distribution name of an ``-e`` target: ``#egg=NAME`` of a URL, or a local project's name."""
    egg = _EGG_RE.search(target)
    if egg:
        return egg.group(1)
    pyproject = base / target / "pyproject.toml"
    try:
        with pyproject.open("rb") as fh:
            name = tomllib.load(fh).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return name if isinstance(name, str) else None


def parse_requirement_lines(
    lines: Iterable[tuple[str, str]],
    base: Path,
    problems: _Problems,
    included: list[Path],
    _stack: tuple[Path, ...] = (),
    constraints: list[Requirement] | None = None,
) -> list[Requirement]:
    """Parse ``(where, text)`` pairs as pip reads requirements files; ``-r``/``-c FILE`` relative to ``base``.

    What pip accepts is accepted: ``-r``/``-c`` includes (a constraints file adds no requirement; its lines
    go to ``constraints`` when given), index and binary options (ignored), per-requirement ``--hash`` options (dropped),
    ``-e`` targets with ``#egg=NAME`` or a local project with a ``pyproject.toml`` name, and wheel paths
    or URLs (``name==version`` from the file name).
    """
    out: list[Requirement] = []
    for where, raw in lines:
        text = _PER_REQUIREMENT.sub("", " " + raw).strip()
        if not text:
            continue
        if text.startswith("-"):
            name, value = _option(text)
            if name in ("-r", "--requirement", "-c", "--constraint"):
                nested = _include(
                    where, value, base, problems, included=included, stack=_stack, constraints=constraints
                )
                if name in ("-r", "--requirement"):
                    out.extend(nested)
                else:
                    _add_constraints(nested, where, value, problems, constraints)
            elif name in ("-e", "--editable"):
                project = _editable(value, base)
                if project is not None:
                    out.append(Requirement(project))
            elif name not in _GLOBAL_OPTIONS:
                problems.add(where, f"option {name!r} is not one pip accepts in a requirements file")
            continue
        # pip splits a marker off a path at ';', off a URL (which may hold a ';') at '; '
        location, semi, marker = text.partition("; " if "://" in text else ";")
        location = location.strip()
        wheel = wheel_pin(location) if " " not in location else None
        if wheel is not None:
            try:
                out.append(Requirement(f"{wheel[0]}=={wheel[1]}" + (f"; {marker.strip()}" if semi else "")))
            except InvalidRequirement as exc:
                reason = str(exc).splitlines()[0]
                problems.add(where, f"{_shown(text)} names no valid version {wheel[1]!r} or marker ({reason[:120]})")
            continue
        try:
            out.append(Requirement(text))
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            problems.add(where, f"{_shown(text)} is not a valid PEP 508 requirement ({reason[:120]})")
    return out


def _add_constraints(
    found: list[Requirement], where: str, file: str, problems: _Problems, constraints: list[Requirement] | None
) -> None:
    """Add the lines of the constraints file ``file`` to ``constraints`` (when given); one with extras is a
    problem: pip's install fails on it and uv's drops the extras, so it would mean one thing here and another
    (or nothing) to the installer."""
    for req in found:
        if req.extras:
            plain = Requirement(str(req))
            plain.extras = set()
            problems.add(
                where,
                f"constraint {str(req)!r} in {file.strip()} has extras [{','.join(sorted(req.extras))}]: pip refuses "
                f"extras in constraints ('Constraints cannot have extras') and uv ignores them; write {str(plain)!r} "
                "(a requirement may ask for the extras)",
            )
        elif constraints is not None:
            constraints.append(req)


def _include(
    where: str,
    target: str,
    base: Path,
    problems: _Problems,
    *,
    included: list[Path],
    stack: tuple[Path, ...],
    constraints: list[Requirement] | None,
) -> list[Requirement]:
    path = (base / target.strip()).resolve()
    if path in stack:
        problems.add(where, f"'-r {target.strip()}' includes itself through {path}")
        return []
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.add(where, f"cannot read included requirements file {path}: {exc.strerror}")
        return []
    included.append(path)
    nested = ((f"{path}:{n}", line) for n, line in _logical_lines(content))
    return parse_requirement_lines(nested, path.parent, problems, included, (*stack, path), constraints)


def parse_requirements_file(
    path: Path | str, constraints: list[Requirement] | None = None
) -> tuple[list[Requirement], list[Path]]:
    """Parse a requirements file; returns the requirements and the files it includes (itself first).

    The lines of its ``-c`` constraints files are added to ``constraints`` when given.
    """
    source = Path(path).resolve()
    problems = _Problems(source)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source}: cannot read requirements file: {exc}") from exc
    included = [source]
    lines = ((f"line {n}", line) for n, line in _logical_lines(text))
    reqs = parse_requirement_lines(lines, source.parent, problems, included, (source,), constraints)
    problems.raise_if_any()
    return reqs, included


def _check_serving(serving: Any, problems: _Problems) -> None:
    if not isinstance(serving, dict):
        problems.add("serving", f"must be a table ([serving]), got {serving!r}")
        return
    for key, what in serving_problems(serving):
        problems.add(f"serving.{key}", what)


def _read_toml(source: Path) -> dict[str, Any]:
    try:
        with source.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except FileNotFoundError as exc:
        raise ManifestError(f"{source}: no such manifest; a model directory must hold {MANIFEST_NAME}") from exc
    except OSError as exc:
        raise ManifestError(f"{source}: cannot read manifest: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{source}: not valid TOML: {exc}") from exc


def load_manifest(path: Path | str) -> ModelManifest:
    """Load a model manifest from a model directory or a ``model.toml`` path.

    >>> m = load_manifest("models/a")            # doctest: +SKIP
    >>> m.name, [str(r) for r in m.requirements] # doctest: +SKIP
    ('a', ['conflictlib==1.0'])
    """
    given = Path(path)
    source = (given / MANIFEST_NAME if given.is_dir() else given).resolve()
    data = _read_toml(source)
    problems = _Problems(source)
    table = data.get("model")
    if not isinstance(table, dict):
        problems.add("[model]", "missing table; the manifest needs a [model] table with name and entrypoint")
        problems.raise_if_any()
        raise AssertionError("unreachable")

    known = {"name", "entrypoint", "requirements", "python"}
    for key in sorted(set(table) - known):
        problems.add(f"model.{key}", f"unknown field; expected one of {', '.join(sorted(known))}")

    name = table.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        problems.add("model.name", f"must be a name of letters, digits, '.', '_' or '-', got {name!r}")
    entrypoint = table.get("entrypoint")
    if not isinstance(entrypoint, str) or not _ENTRYPOINT_RE.fullmatch(entrypoint):
        problems.add("model.entrypoint", f"must look like 'module:callable', got {entrypoint!r}")

    raw_reqs = table.get("requirements", [])
    included: list[Path] = []
    requirements: list[Requirement] = []
    constraints: list[Requirement] = []
    if not isinstance(raw_reqs, list):
        problems.add("model.requirements", f"must be a list of PEP 508 strings, got {raw_reqs!r}")
    else:

        def lines(items: list[Any]) -> Iterator[tuple[str, str]]:
            for i, raw in enumerate(items):  # each bad item named alone, in order, not the whole list quoted
                if isinstance(raw, str):
                    yield f"model.requirements[{i}]", raw.strip()
                else:
                    problems.add(f"model.requirements[{i}]", f"must be a PEP 508 string, got {raw!r}")

        requirements = parse_requirement_lines(
            lines(raw_reqs), source.parent, problems, included, (source,), constraints
        )

    python: SpecifierSet | None = None
    raw_python = table.get("python")
    if raw_python is not None:
        if not isinstance(raw_python, str):
            problems.add("model.python", f"must be a version specifier string such as '>=3.10', got {raw_python!r}")
        else:
            try:
                python = SpecifierSet(raw_python)
            except InvalidSpecifier:
                problems.add("model.python", f"{raw_python!r} is not a valid version specifier")

    _check_serving(data.get("serving", {}), problems)  # so check-deps refuses what the loader would refuse
    problems.raise_if_any()
    assert isinstance(name, str)
    assert isinstance(entrypoint, str)
    return ModelManifest(
        name=name,
        entrypoint=entrypoint,
        requirements=tuple(requirements),
        python=python,
        directory=source.parent,
        source=source,
        included_files=tuple(included),
        constraints=tuple(constraints),
    )
