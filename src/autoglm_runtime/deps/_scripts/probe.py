"""Describe an interpreter's installed distributions, as JSON, using only the standard library.

``check-deps --python INTERPRETER`` runs this file with ``INTERPRETER -I _probe.py``; it must therefore
import nothing outside the standard library and run on every Python this project supports. The output
is one JSON object::

    {"probe": 1, "executable": ..., "version": "3.11.7", "markers": {...PEP 508 environment...},
     "path": [...sys.path...], "distributions": [{"name", "version", "location", "metadata_dir",
     "requires", "requires_python", "provides_extra", "modules", "errors"}, ...]}

``distributions`` is in import-precedence order: ``sys.path`` order, then directory order, the order
``importlib.metadata`` finds them, so the first of a name is the copy that imports. ``modules`` maps each
top-level import name a distribution installs to ``[RECORD path, RECORD hash]`` of the file that makes it
importable (``pkg/__init__.py`` or ``mod.py``; a namespace directory is no name a distribution owns). For a
name claimed by several distributions in one directory, a third item, the hash of the file actually on
disk, tells whose file won. ``errors`` lists metadata that could not be
read; the checker turns those into ``invalid-metadata`` findings instead of failing.

``INTERPRETER -I -S _probe.py --base`` prints instead what every virtual environment of that interpreter
shares (see :func:`base_facts`); the environment builder caches it and reads a new environment's
distributions in-process with :func:`collect`.
"""

from __future__ import annotations

import json
import os
import platform
import sys

PROBE_FORMAT = 1
#: The prefix :func:`base_facts` passes to ``site.getsitepackages``; a real prefix replaces it.
PREFIX_PLACEHOLDER = "/@autoglm-venv-prefix@"
_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def marker_environment() -> dict[str, str]:
    """The PEP 508 marker environment of the running interpreter (as ``packaging`` computes it)."""
    impl = sys.implementation.version
    impl_version = f"{impl.major}.{impl.minor}.{impl.micro}"
    if impl.releaselevel != "final":
        impl_version += impl.releaselevel[0] + str(impl.serial)
    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": impl_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def _headers(text: str) -> dict[str, list[str]]:
    """RFC 822 style headers of a METADATA / PKG-INFO file (the body after the blank line is skipped)."""
    out: dict[str, list[str]] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            break
        if line[0] in " \t" and last is not None:
            out[last][-1] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        out.setdefault(last, []).append(value.strip())
    return out


def _egg_requires(text: str) -> list[str]:
    """``requires.txt`` of an egg-info directory, converted to Requires-Dist strings."""
    out: list[str] = []
    marker = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            extra, _, env = line[1:-1].partition(":")
            parts = []
            if env.strip():
                parts.append(f"({env.strip()})")
            if extra.strip():
                parts.append(f'extra == "{extra.strip()}"')
            marker = " and ".join(parts)
            continue
        out.append(f"{line}; {marker}" if marker else line)
    return out


def _top_name(path: str) -> tuple[str, bool] | None:
    """The import name a RECORD path makes importable, and whether it is the package's marker file."""
    parts = path.replace("\\", "/").split("/")
    if len(parts) == 1:
        name = parts[0]
        if name.endswith(".pth") or not name.endswith(_MODULE_SUFFIXES):
            return None
        return name.split(".", 1)[0], True
    if len(parts) == 2 and parts[1] == "__init__.py":
        return parts[0], True
    return None


def _modules(meta_dir: str, record: str | None, location: str, errors: list[str]) -> dict[str, list[str | None]]:
    """Top-level import names with their marker file and RECORD hash (from RECORD, else top_level.txt)."""
    out: dict[str, list[str | None]] = {}
    if record is not None:
        for line in record.splitlines():
            path, _, rest = line.partition(",")
            found = _top_name(path.strip().strip('"'))
            if found is None:
                continue
            name, _ = found
            if not name.isidentifier() or name.startswith("__editable__"):
                continue
            digest = rest.split(",", 1)[0] or None
            out.setdefault(name, [path.strip().strip('"'), digest])
        return out
    text = _read_meta(meta_dir, "top_level.txt", errors)
    for name in (n.strip() for n in (text or "").splitlines()):
        if not name:
            continue
        for rel in (f"{name}/__init__.py", f"{name}.py"):
            if os.path.exists(os.path.join(location, rel)):
                out[name] = [rel, None]
                break
    return out


def _read(path: str) -> str | None:
    """The UTF-8 text of ``path``, ``None`` when it does not exist; raises ``OSError`` or ``ValueError``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _read_meta(meta_dir: str, name: str, errors: list[str]) -> str | None:
    """A metadata file's text; one that cannot be read or decoded is added to ``errors`` and gives ``None``."""
    try:
        return _read(os.path.join(meta_dir, name))
    except (OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError, or a NUL in the path
        errors.append(f"{name} cannot be read: {exc}")
        return None


def describe(location: str, entry: str) -> dict[str, object]:
    """Describe one ``.dist-info`` or ``.egg-info`` directory found in ``location``."""
    meta_dir = os.path.join(location, entry)
    egg = entry.endswith(".egg-info")
    errors: list[str] = []
    dist: dict[str, object] = {"name": None, "version": None, "location": location, "metadata_dir": meta_dir}
    headers: dict[str, list[str]] = {}
    meta_file = os.path.join(meta_dir, "PKG-INFO" if egg else "METADATA")
    try:
        text = _read(meta_file) if os.path.isdir(meta_dir) else _read(meta_dir)
        if text is None:
            errors.append(f"{os.path.basename(meta_file)} is missing")
        else:
            headers = _headers(text)
    except (OSError, ValueError) as exc:
        errors.append(f"{os.path.basename(meta_file)} cannot be read: {exc}")
    for field in ("name", "version"):
        values = headers.get(field)
        if values:
            dist[field] = values[0]
        elif headers:
            errors.append(f"{os.path.basename(meta_file)} has no {field.capitalize()} field")
    requires = headers.get("requires-dist", [])
    record: str | None = None
    if os.path.isdir(meta_dir):
        if egg:
            requires = _egg_requires(_read_meta(meta_dir, "requires.txt", errors) or "")
        record = _read_meta(meta_dir, "RECORD", errors)
    python = headers.get("requires-python")
    dist.update(
        requires=requires,
        requires_python=python[0] if python else None,
        provides_extra=headers.get("provides-extra", []),
        modules=_modules(meta_dir, record, location, errors),
        errors=errors,
    )
    return dist


def _file_hash(path: str) -> str | None:
    import base64  # only for contested files: most runs never need these two imports
    import hashlib

    try:
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).digest()
    except OSError:
        return None
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def collect(path: list[str]) -> list[dict[str, object]]:
    """Every distribution on ``path``, in import-precedence order."""
    dists: list[dict[str, object]] = []
    seen: set[str] = set()
    for entry in path:
        location = os.path.abspath(entry or os.curdir)
        if location in seen or not os.path.isdir(location):
            continue
        seen.add(location)
        try:
            names = os.listdir(location)
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                dists.append(describe(location, name))
    owners: dict[tuple[str, str], int] = {}
    for dist in dists:
        for module in dist["modules"]:  # type: ignore[attr-defined]
            key = (str(dist["location"]), module)
            owners[key] = owners.get(key, 0) + 1
    for dist in dists:
        modules: dict[str, list[str | None]] = dist["modules"]  # type: ignore[assignment]
        for module, info in modules.items():
            if owners[(str(dist["location"]), module)] > 1 and info[0] is not None:
                info.append(_file_hash(os.path.join(str(dist["location"]), info[0])))
    return dists


def _interpreter() -> dict[str, object]:
    """What every description of the running interpreter starts with."""
    return {
        "probe": PROBE_FORMAT,
        "executable": sys.executable,
        "version": platform.python_version(),
        "markers": marker_environment(),
        "path": list(sys.path),
    }


def probe() -> dict[str, object]:
    """The whole description of the running interpreter."""
    return {**_interpreter(), "distributions": collect(list(sys.path))}


def base_facts() -> dict[str, object]:
    """What a probe of any virtual environment of the running interpreter shares; run with ``-I -S``.

    ``path`` is ``sys.path`` before ``site`` adds anything (duplicates removed, as ``site`` does first);
    ``site_packages`` is ``site.getsitepackages`` for the prefix :data:`PREFIX_PLACEHOLDER`, so the
    interpreter's own rules (``sys.platlibdir``, version, free-threading suffix) name an environment's
    site directories.
    """
    import site  # with -S, importing site adds nothing to sys.path

    site.removeduppaths()
    return {
        **_interpreter(),
        "site_packages": site.getsitepackages([PREFIX_PLACEHOLDER]),
        "no_site": bool(sys.flags.no_site),
    }


if __name__ == "__main__":
    json.dump(base_facts() if sys.argv[1:] == ["--base"] else probe(), sys.stdout)
