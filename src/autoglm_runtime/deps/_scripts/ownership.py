"""Whose files are on disk, for distributions that share a directory: stdlib only, run inside the probe.

The probe (``probe.py``, run by path in the checked interpreter) loads this file by path only when copies of
one distribution, or distributions claiming one import name, share a directory. Decisions rest on file
ownership: every file their RECORDs list with different hashes (or only some list) is hashed on disk, and
a distribution's files are "on disk" when each such file it lists with a hash matches.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing's own flag costs the import of typing, in a script that must start fast
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def record_rows(record: str) -> dict[str, str | None]:
    """RECORD as ``{path: hash}`` (``None`` for a file listed without a hash); quoted paths unquoted."""
    out: dict[str, str | None] = {}
    if '"' in record:
        import csv  # only for a RECORD that quotes a path: csv's import brings re

        rows: Iterable[list[str]] = csv.reader(record.splitlines())
    else:  # without quotes, csv reads each line as the line split at its commas
        rows = (line.split(",") for line in record.splitlines() if line)
    for row in rows:
        if row:
            out[row[0]] = (row[1] if len(row) > 1 else "") or None
    return out


def owned(rows: dict[str, str | None], name: str) -> dict[str, str | None]:
    """The RECORD rows that belong to import name ``name``: its package directory, or a module file."""
    prefix = name + "/"
    return {
        path: digest
        for path, digest in rows.items()
        if path.startswith(prefix)
        or ("/" not in path and path.split(".", 1)[0] == name and path.endswith(_MODULE_SUFFIXES))
    }


def _sha256() -> Callable[[bytes], Any]:
    """SHA-256 from CPython's own small module where there is one: ``hashlib`` loads OpenSSL first, which
    costs the probe more than hashing the few contested files does."""
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found]  # Python 3.7 to 3.11
        except ImportError:
            from hashlib import sha256  # elsewhere (PyPy, a build without them)
    return sha256  # type: ignore[no-any-return]


def file_hash(path: str) -> str | None:
    """``sha256=<urlsafe base64, unpadded>`` of the file ``path``, as RECORD gives it; ``None`` when unreadable."""
    from binascii import b2a_base64  # not base64, whose import brings re

    try:
        with open(path, "rb") as fh:
            digest = _sha256()(fh.read()).digest()
    except OSError:
        return None
    text = b2a_base64(digest, newline=False).rstrip(b"=").translate(bytes.maketrans(b"+/", b"-_"))
    return "sha256=" + text.decode("ascii")


def file_stat(path: str) -> list[int] | None:
    """``[mtime_ns, size, inode]`` of ``path``, ``None`` when it cannot be read: what a decision rests on."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def _matches_disk(
    location: str,
    files: dict[str, str | None],
    paths: set[str],
    disk: dict[str, str | None],
    stats: dict[str, list[int] | None] | None,
) -> bool:
    """Whether each of ``paths`` that ``files`` lists is on disk with the hash ``files`` gives it.

    ``stats`` (when given) receives each hashed file's :func:`file_stat`, taken before it is read: a file
    changed after that shows as changed.
    """
    for path in paths & set(files):
        if files[path] is None:
            continue  # listed without a hash (RECORD itself, byte code): proves nothing
        if path not in disk:
            full = os.path.join(location, path)
            if stats is not None:
                stats[path] = file_stat(full)
            disk[path] = file_hash(full)
        if disk[path] != files[path]:
            return False
    return True


def _differing(copies: list[dict[str, str | None]]) -> set[str]:
    """Paths that the file lists do not all give with one hash (listed by some only, or hashed apart)."""
    paths = set().union(*copies)
    return {p for p in paths if len({c.get(p, "<absent>") for c in copies}) > 1}


def _declares_namespace(location: str, path: str, stats: dict[str, list[int] | None] | None) -> bool:
    """Whether the package ``__init__.py`` at ``path`` (in ``location``) declares a namespace that several
    distributions share (pkgutil's ``extend_path`` or ``pkg_resources.declare_namespace``, which the packaging
    guide has each of them ship): then their own modules, beside it in one directory, all import whichever
    spelling of it is on disk. ``stats`` receives its :func:`file_stat`, taken before it is read."""
    full = os.path.join(location, path)
    if stats is not None:
        stats[path] = file_stat(full)
    try:
        with open(full, "rb") as fh:
            text = fh.read()
    except OSError:
        return False
    return b"extend_path(" in text or b"declare_namespace(" in text


def decide_spread(
    module: str, group: list[dict[str, object]], stats: dict[str, list[int] | None] | None = None
) -> None:
    """For distributions of several path entries claiming package ``module``: list ``module`` in the
    ``namespaces`` of each whose directory's ``module/__init__.py`` declares a namespace (the first such
    ``__init__.py`` on the path extends the package over the others). ``stats`` receives the
    :func:`file_stat` of each file read, by absolute path."""
    declared: dict[str, bool] = {}
    for dist in group:
        full = os.path.join(str(dist["location"]), module, "__init__.py")
        if full not in declared:
            declared[full] = _declares_namespace("", full, stats)
        if declared[full]:
            dist["namespaces"].append(module)  # type: ignore[attr-defined]


def decide_copies(
    group: list[dict[str, object]],
    rows_of: Callable[[dict[str, object]], dict[str, str | None]],
    stats: dict[str, list[int] | None] | None = None,
) -> None:
    """For copies of one distribution in one directory: whose RECORD matches the files on disk.

    ``stats`` receives the :func:`file_stat` of every file the decision read.
    """
    location = str(group[0]["location"])
    rows = [rows_of(d) for d in group]
    paths = _differing(rows)
    disk: dict[str, str | None] = {}
    for dist, files in zip(group, rows):  # noqa: B905
        dist["record_matches"] = bool(files) and _matches_disk(location, files, paths, disk, stats)
    for i, dist in enumerate(group):
        same = [
            str(o["metadata_dir"]) for j, o in enumerate(group) if j != i and _same_files(dist, rows[i], o, rows[j])
        ]
        if same:
            dist["same_files"] = same


def _installed(dist: dict[str, object], rows: dict[str, str | None]) -> dict[str, str | None]:
    """The hashed RECORD rows of ``dist`` outside its own metadata directory: the files it installed."""
    own = os.path.basename(str(dist["metadata_dir"])) + "/"
    return {p: h for p, h in rows.items() if h is not None and not p.startswith(own)}


def _same_files(
    a: dict[str, object], rows_a: dict[str, str | None], b: dict[str, object], rows_b: dict[str, str | None]
) -> bool:
    """Whether copies ``a`` and ``b`` of one directory describe the same files. Two RECORDs must list the same
    files with the same hashes (byte code aside); a copy without one (an ``.egg-info``, as Debian ships beside
    the ``.dist-info``) must install no top-level name the other does not, each from the same file. Whether
    their versions are one version is judged by the checker, with PEP 440 (``1.0`` is ``1.0.0``), which this
    stdlib-only probe cannot do."""
    if a["version"] is None or b["version"] is None:
        return False
    if rows_a and rows_b:
        return _installed(a, rows_a) == _installed(b, rows_b)
    mods_a, mods_b = a["modules"], b["modules"]
    if rows_a:  # b has no RECORD: its names (from top_level.txt) must be among a's
        mods_a, mods_b = mods_b, mods_a
    elif not rows_b and set(mods_a) != set(mods_b):  # type: ignore[call-overload]
        return False
    return all(
        name in mods_b and mods_b[name][0] == path[0]  # type: ignore[index, operator]
        for name, path in mods_a.items()  # type: ignore[attr-defined]
    )


def decide_clash(
    module: str,
    group: list[dict[str, object]],
    rows_of: Callable[[dict[str, object]], dict[str, str | None]],
    stats: dict[str, list[int] | None] | None = None,
) -> None:
    """For distributions of one directory claiming import name ``module``: do their shared files differ,
    and whose files are on disk? Files both install with one hash (a namespace ``__init__.py``) are no clash.
    ``stats`` receives the :func:`file_stat` of every file the decision read.
    """
    location = str(group[0]["location"])
    files_of = [owned(rows_of(d), module) for d in group]
    if not all(files_of):  # a distribution without RECORD rows for it: its files cannot be compared
        for dist in group:
            dist["clashes"][module] = False  # type: ignore[index]
        return
    shared = {p for i, a in enumerate(files_of) for b in files_of[i + 1 :] for p in set(a) & set(b)}
    paths = shared & _differing(files_of)
    if not paths:
        return
    init = module + "/__init__.py"
    if paths == {init} and _declares_namespace(location, init, stats):
        return  # a namespace's __init__.py, spelled differently by each: every one's own modules import
    disk: dict[str, str | None] = {}
    for dist, files in zip(group, files_of):  # noqa: B905 (the probe runs on Python 3.8)
        dist["clashes"][module] = _matches_disk(location, files, paths, disk, stats)  # type: ignore[index]
