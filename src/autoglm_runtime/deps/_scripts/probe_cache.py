"""The probe's per-metadata-directory cache: stdlib only, used by ``probe.py`` when given ``--cache FILE``.

An entry is ``{metadata_dir: [stamp, description, trusted]}``; the stamp (:func:`stamp`) changes whenever the
description could, so a cached description is used only while it is still true (:func:`holds`). Keys that
start with ``@`` (never an absolute path) hold what else a warm probe need not compute again: file-ownership
decisions (``scan.OWNERSHIP_KEY``), the interpreter's marker environment (``probe.FACTS_KEY``), the last output
(``probe.OUTPUT_KEY``) and what decides the interpreter's path (``path_stamp.PATH_KEY``).
"""

from __future__ import annotations

import marshal
import os
import sys

STAMPED = ("METADATA", "PKG-INFO", "RECORD", "requires.txt", "top_level.txt", "direct_url.json")
#: Bumped whenever an entry's form changes: a cache file of another format is an empty cache.
CACHE_FORMAT = 5
#: How much older than the stamp a directory's mtime must be for :func:`holds` to trust it without a
#: listing: file systems keep timestamps at a coarse granularity (up to 2 s on FAT), so an entry added just
#: after a listing could leave the directory's mtime unchanged.
TRUST_MARGIN_NS = 2_000_000_000
#: marshal's format may change between Python versions: a file is read only by the version that wrote it.
_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _format() -> list[object]:
    """What a cache file must have been written by: this format, this Python version, and these scripts
    (their names, mtimes and sizes: an upgraded probe may describe distributions differently)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with os.scandir(here) as entries:
        code = sorted([e.name, e.stat().st_mtime_ns, e.stat().st_size] for e in entries if e.name.endswith(".py"))
    return [CACHE_FORMAT, _VERSION, code]


def stamp(meta_dir: str, now_ns: int) -> tuple[list[object] | None, bool]:
    """What changes whenever a description of ``meta_dir`` could, and whether :func:`holds` may trust it.

    The stamp is the directory's mtime and each :data:`STAMPED` file's mtime and size (``None`` for one that
    is absent): a file rewritten in place changes its own mtime; one added, removed or renamed changes the
    directory's. ``now_ns`` is the current wall clock in nanoseconds.
    """
    try:
        st = os.stat(meta_dir)
        with os.scandir(meta_dir) as entries:  # one listing, then a stat only of the files that exist
            found = {e.name: e.stat() for e in entries if e.name in STAMPED}
    except OSError:
        return None, False
    out: list[object] = [st.st_mtime_ns]
    out += [[found[n].st_mtime_ns, found[n].st_size] if n in found else None for n in STAMPED]
    return out, st.st_mtime_ns < now_ns - TRUST_MARGIN_NS


def holds(meta_dir: str, cached: object) -> bool:
    """Whether the trusted stamp ``cached`` is still ``meta_dir``'s, looking only at what it lists.

    A stamp is trusted when its directory was already old when it was taken: then an unchanged directory
    mtime proves no file was added, removed or renamed, so one ``stat`` per file the stamp lists suffices,
    without a listing.
    """
    if not isinstance(cached, list) or len(cached) != len(STAMPED) + 1:
        return False
    try:
        if os.stat(meta_dir).st_mtime_ns != cached[0]:
            return False
        for name, value in zip(STAMPED, cached[1:]):  # noqa: B905 (the probe runs on Python 3.7)
            if value is not None:
                st = os.stat(os.path.join(meta_dir, name))
                if [st.st_mtime_ns, st.st_size] != value:
                    return False
    except OSError:
        return False
    return True


def load_cache(path: str) -> dict[str, object]:
    """The cache file's entries; a missing, unreadable or other-format file is an empty cache.

    The file is in :mod:`marshal` form: read without importing ``json`` (and ``re`` with it), which a probe
    whose every entry holds never needs. It is private to the interpreter that wrote it (one file per
    interpreter path); a file from another Python version is a format mismatch, read as empty.
    """
    try:
        with open(path, "rb") as fh:
            data = marshal.loads(fh.read())
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    try:
        expected = _format()
    except OSError:
        return {}
    if not isinstance(data, dict) or data.get("format") != expected:
        return {}
    dists = data.get("dists")
    return dict(dists) if isinstance(dists, dict) else {}


def save_cache(path: str, cache: dict[str, object]) -> None:
    """Write the cache atomically (a concurrent reader sees the old file or the new one, never a part)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(marshal.dumps({"format": _format(), "dists": cache}))
        os.replace(tmp, path)
    except (OSError, ValueError):  # ValueError: a value marshal cannot write
        pass  # a cache that cannot be written only costs speed
