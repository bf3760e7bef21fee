"""Describe an interpreter's installed distributions, as JSON, using only the standard library.

``check-deps --python INTERPRETER`` runs this file with ``INTERPRETER -I _probe.py``; it must therefore
import nothing outside the standard library and run on every Python this project supports. The output
is one JSON object::

    {"probe": 2, "executable": ..., "version": "3.11.7", "markers": {...PEP 508 environment...},
     "path": [...sys.path...], "distributions": [{"name", "version", "location", "metadata_dir",
     "requires", "requires_python", "provides_extra", "modules", "editable", "record_matches", "clashes",
     "errors"}, ...]}

``distributions`` is in import-precedence order: ``sys.path`` order, then directory order, the order
``importlib.metadata`` finds them. ``modules`` maps each top-level import name a distribution installs to
``[RECORD path, RECORD hash]`` of the file that makes it importable (``pkg/__init__.py`` or ``mod.py``; a
namespace directory is no name a distribution owns); an editable install (``editable``: its project
directory) owns none. Where distributions of one directory claim one name, ``clashes`` maps it to whether
this distribution's files are the ones on disk, judged on every file they both list with different
hashes (compiled modules included); where copies of one distribution share a directory,
``record_matches`` says whether this copy's RECORD matches the files on disk. ``errors`` lists metadata
that could not be read; the checker turns those into ``invalid-metadata`` findings instead of failing.
Metadata directories named ``~...`` (left by an interrupted pip uninstall) are not distributions.

``INTERPRETER -I -S _probe.py --base`` prints instead what every virtual environment of that interpreter
shares (see :func:`base_facts`); the environment builder caches it and reads a new environment's
distributions in-process with :func:`collect`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import types

PROBE_FORMAT = 2
#: Written before the JSON object, so that output of ``.pth`` files run at start-up can be told apart.
OUTPUT_MARK = "\n@autoglm-runtime-probe@\n"
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


_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
#: What ``email.feedparser`` takes for a header line: a field name and colon, or a continuation.
_FIELD_RE = re.compile(r"[\041-\071\073-\176]*:")


def _headers(text: str) -> dict[str, list[str]]:
    """RFC 822 headers of a METADATA / PKG-INFO file, read exactly as ``importlib.metadata`` reads them.

    ``importlib.metadata`` parses with :mod:`email` (policy ``compat32``): a line starting with a space or
    a tab continues the field before it, even when it holds nothing but whitespace (meson-python and
    hatchling write multi-line ``License`` fields so); only a truly empty line, or a line that is neither a
    field nor a continuation, ends the headers. A value keeps its folded line breaks, as ``get_all`` does.
    """
    out: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in _LINE_RE.findall(text):
        if line[0] in " \t":
            if last is not None:
                last[-1] += line
            continue
        if not _FIELD_RE.match(line):
            break  # an empty line, or the body begins without one
        key, _, value = line.partition(":")
        last = out.setdefault(key.lower(), [])
        last.append(value.lstrip(" \t"))
    return {key: [v.rstrip("\r\n") for v in values] for key, values in out.items()}


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


def _editable_root(meta_dir: str, record: str | None) -> str | None:
    """The project directory of an editable install (PEP 660 ``direct_url.json``), else ``None``."""
    if record is None or "direct_url.json" not in record:
        return None
    try:
        data = json.loads(_read(os.path.join(meta_dir, "direct_url.json")) or "{}")
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    dir_info = data.get("dir_info") if isinstance(data, dict) else None
    if not isinstance(url, str) or not isinstance(dir_info, dict) or dir_info.get("editable") is not True:
        return None
    if not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlsplit

    return os.path.normpath(unquote(urlsplit(url).path))


def _unfold(value: str) -> str:
    """A header value with its folding line breaks removed (RFC 5322 unfolding), then stripped."""
    return re.sub(r"\r?\n(?=[ \t])|\r(?=[ \t])", "", value).strip()


def describe(location: str, entry: str) -> dict[str, object]:
    """Describe one ``.dist-info`` or ``.egg-info`` directory found in ``location``."""
    meta_dir = os.path.join(location, entry)
    egg = entry.endswith(".egg-info")
    errors: list[str] = []
    dist: dict[str, object] = {"name": None, "version": None, "location": location, "metadata_dir": meta_dir}
    headers: dict[str, list[str]] = {}
    meta_name = "PKG-INFO" if egg else "METADATA"
    try:
        text = _read(os.path.join(meta_dir, meta_name)) if os.path.isdir(meta_dir) else _read(meta_dir)
        if text is None:
            errors.append(f"{meta_name} is missing")
        elif not text.strip():
            errors.append(f"{meta_name} is empty")
        else:
            headers = _headers(text)
    except (OSError, ValueError) as exc:
        errors.append(f"{meta_name} cannot be read: {exc}")
    for field in ("name", "version"):
        values = headers.get(field)
        if values and _unfold(values[0]):
            dist[field] = _unfold(values[0])
        elif headers:
            errors.append(f"{meta_name} has no {field.capitalize()} field")
    requires = [_unfold(r) for r in headers.get("requires-dist", [])]
    record: str | None = None
    if os.path.isdir(meta_dir):
        if egg:
            requires = _egg_requires(_read_meta(meta_dir, "requires.txt", errors) or "")
        record = _read_meta(meta_dir, "RECORD", errors)
    python = headers.get("requires-python")
    editable = _editable_root(meta_dir, record)
    dist.update(
        requires=requires,
        requires_python=_unfold(python[0]) if python else None,
        provides_extra=[_unfold(e) for e in headers.get("provides-extra", [])],
        # An editable install's RECORD lists only its hook files: the project's modules are not its files.
        modules={} if editable else _modules(meta_dir, record, location, errors),
        editable=editable,
        record_matches=None,
        clashes={},
        errors=errors,
    )
    if record is not None:
        _RECORDS[meta_dir] = record
    return dist


#: RECORD texts read by :func:`describe`, kept for the few distributions whose files must be compared.
_RECORDS: dict[str, str] = {}


def _canonical(name: object) -> str:
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def _rows(dist: dict[str, object]) -> dict[str, str | None]:
    meta_dir = str(dist["metadata_dir"])
    record = _RECORDS.get(meta_dir)
    if record is None and os.path.isdir(meta_dir):  # described from the cache: read it now
        try:
            record = _read(os.path.join(meta_dir, "RECORD"))
        except (OSError, ValueError):
            record = None
    return _ownership().record_rows(record) if record is not None else {}


def _ownership() -> types.ModuleType:
    return _sibling("ownership")


def _sibling(name: str) -> types.ModuleType:
    """``name.py`` beside this file, loaded by path: the probe runs as a script, not from a package (and the
    checked interpreter may have another autoglm-runtime installed)."""
    module = sys.modules.get(f"_autoglm_probe_{name}")
    if module is None:
        import importlib.util

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"_autoglm_probe_{name}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def _describe_cached(
    location: str, entry: str, cache: dict[str, object] | None, fresh: dict[str, object]
) -> dict[str, object]:
    """:func:`describe`, or its cached result when ``meta_dir``'s stamp is unchanged."""
    if cache is None:
        return describe(location, entry)
    meta_dir = os.path.join(location, entry)
    stamp = _sibling("probe_cache").stamp(meta_dir)
    hit = cache.get(meta_dir)
    if stamp is not None and isinstance(hit, list) and len(hit) == 2 and hit[0] == stamp:
        dist = dict(hit[1])
        dist.update(record_matches=None, clashes={})  # recomputed every run: they depend on other copies
        dist["modules"] = {k: list(v) for k, v in dist["modules"].items()}
    else:
        dist = describe(location, entry)
    if stamp is not None:
        fresh[meta_dir] = [stamp, {k: v for k, v in dist.items() if k not in ("record_matches", "clashes")}]
    return dist


def _metadata_dirs(path: list[str]) -> list[tuple[str, str]]:
    """``(location, entry)`` of every metadata directory on ``path``, in import-precedence order."""
    found: list[tuple[str, str]] = []
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
        # "~name" directories are what an interrupted pip uninstall leaves: no longer installed.
        found += [(location, n) for n in names if n.endswith((".dist-info", ".egg-info")) and not n.startswith("~")]
    return found


def collect(path: list[str], cache: dict[str, object] | None = None) -> list[dict[str, object]]:
    """Every distribution on ``path``, in import-precedence order.

    ``cache`` (``{metadata_dir: [stamp, description]}``, as ``probe_cache.load_cache`` reads it) is used for every
    metadata directory whose stamp is unchanged, and replaced by the entries of this run.
    """
    fresh: dict[str, object] = {}
    _RECORDS.clear()
    dists = [_describe_cached(location, name, cache, fresh) for location, name in _metadata_dirs(path)]
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    dists = _without_editable_leftovers(dists)
    copies: dict[tuple[str, str], list[dict[str, object]]] = {}
    owners: dict[tuple[str, str], list[dict[str, object]]] = {}
    for dist in dists:
        if dist["name"]:
            copies.setdefault((str(dist["location"]), _canonical(dist["name"])), []).append(dist)
        for module in dist["modules"]:  # type: ignore[attr-defined]
            owners.setdefault((str(dist["location"]), module), []).append(dist)
    for group in copies.values():
        if len(group) > 1:
            _ownership().decide_copies(group, _rows)
    for (_, module), group in owners.items():
        if len(group) > 1:
            _ownership().decide_clash(module, group, _rows)
    _RECORDS.clear()
    return dists


def _without_editable_leftovers(dists: list[dict[str, object]]) -> list[dict[str, object]]:
    """Drop the ``.egg-info`` a setuptools build leaves in an editable project (``src/pkg.egg-info``):
    the project's ``.dist-info`` in site-packages is the installed copy, the egg-info only a build artefact.
    """
    roots = {_canonical(d["name"]): str(d["editable"]) for d in dists if d.get("editable") and d["name"]}
    out = []
    for dist in dists:
        root = roots.get(_canonical(dist["name"]))
        meta_dir = str(dist["metadata_dir"])
        if root and meta_dir.endswith(".egg-info") and meta_dir.startswith(root.rstrip(os.sep) + os.sep):
            continue
        out.append(dist)
    return out


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


def _main(argv: list[str]) -> None:
    if argv == ["--base"]:
        sys.stdout.write(json.dumps(base_facts()))
        return
    cache_path = argv[1] if len(argv) == 2 and argv[0] == "--cache" else None
    cache = _sibling("probe_cache").load_cache(cache_path, PROBE_FORMAT) if cache_path else None
    before = dict(cache) if cache is not None else None
    description = {**_interpreter(), "distributions": collect(list(sys.path), cache)}
    sys.stdout.write(OUTPUT_MARK)
    sys.stdout.write(json.dumps(description))  # dumps, not dump: only the one-shot encoder is C code
    sys.stdout.flush()
    if cache_path and cache is not None and cache != before:
        _sibling("probe_cache").save_cache(cache_path, cache, PROBE_FORMAT)


if __name__ == "__main__":
    _main(sys.argv[1:])
