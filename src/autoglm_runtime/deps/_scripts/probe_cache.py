"""The probe's per-metadata-directory cache: stdlib only, loaded by ``probe.py`` when given ``--cache FILE``.

An entry is ``{metadata_dir: [stamp, description]}``; the stamp (:func:`stamp`) changes whenever the
description could, so a cached description is used only while it is still true.
"""

from __future__ import annotations

import json
import os

STAMPED = ("METADATA", "PKG-INFO", "RECORD", "requires.txt", "top_level.txt", "direct_url.json")


def stamp(meta_dir: str) -> list[object] | None:
    """What changes whenever a description of ``meta_dir`` could: the directory's and its files' mtimes and
    sizes (a file rewritten in place changes its own mtime; one added or removed changes the directory's).
    """
    try:
        stamp: list[object] = [os.stat(meta_dir).st_mtime_ns]
        with os.scandir(meta_dir) as entries:  # one listing, then a stat only of the files that exist
            found = {e.name: e.stat() for e in entries if e.name in STAMPED}
    except OSError:
        return None
    stamp += [[found[n].st_mtime_ns, found[n].st_size] if n in found else None for n in STAMPED]
    return stamp


def load_cache(path: str, fmt: int) -> dict[str, object]:
    """The cache file's entries; a missing, unreadable or other-format file is an empty cache."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != fmt or not isinstance(data.get("dists"), dict):
        return {}
    return dict(data["dists"])


def save_cache(path: str, cache: dict[str, object], fmt: int) -> None:
    """Write the cache atomically (a concurrent reader sees the old file or the new one, never a part)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"format": fmt, "dists": cache}))  # the one-shot encoder is C code
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs speed
