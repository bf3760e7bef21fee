"""Every distribution on an interpreter's path, as the probe reports them: stdlib only, run inside the probe.

Walks the path in import-precedence order, describes each metadata directory (:mod:`metadata`, or its entry in
the per-directory cache of :mod:`probe_cache` while that still holds), then decides file ownership where
distributions of one directory overlap (:mod:`ownership`): which copy of a distribution is on disk, and which
of two distributions claiming one import name installed the files that are there.
"""

from __future__ import annotations

import os

#: Recomputed every run (they depend on other distributions' files), so never taken from the cache.
_PER_RUN = ("record_matches", "clashes", "namespaces", "same_files")


def _canonical(name: object) -> str:
    """PEP 503 normalised name (``re.sub(r"[-_.]+", "-", name).lower()``), without importing ``re``."""
    text = str(name).replace("_", "-").replace(".", "-")
    while "--" in text:
        text = text.replace("--", "-")
    return text.lower()


def _describe_cached(
    location: str,
    entry: str,
    cache: dict[str, object] | None,
    fresh: dict[str, object],
    now_ns: int,
    *,
    misses: list[str] | None = None,
) -> tuple[dict[str, object], str | None]:
    """:func:`metadata.describe`, or its cached result while the directory's stamp holds (RECORD then unread).

    ``metadata`` (and with it ``re`` and ``json``) is imported only when a directory must be read.
    """
    if cache is None:
        from . import metadata

        return metadata.describe(location, entry)
    from . import probe_cache

    meta_dir = os.path.join(location, entry)
    hit = cache.get(meta_dir)
    if not (isinstance(hit, list) and len(hit) == 3 and isinstance(hit[1], dict)):
        hit = None
    if hit is not None and hit[2] is True and probe_cache.holds(meta_dir, hit[0]):
        stamp, trusted = hit[0], True
    else:
        stamp, trusted = probe_cache.stamp(meta_dir, now_ns)
        if hit is not None and (stamp is None or stamp != hit[0]):
            hit = None
    if hit is not None:
        dist = {**hit[1], "record_matches": None, "clashes": {}, "namespaces": []}  # per-run values, never cached
        if trusted is hit[2]:
            fresh[meta_dir] = hit
        else:  # now old enough to trust: a new entry, so the cache is written again
            fresh[meta_dir] = [stamp, hit[1], trusted]
            if misses is not None:
                misses.append(meta_dir)
        return dist, None
    from . import metadata

    dist, record = metadata.describe(location, entry)
    if stamp is not None:
        fresh[meta_dir] = [stamp, {k: v for k, v in dist.items() if k not in _PER_RUN}, trusted]
    if misses is not None:
        misses.append(meta_dir)
    return dist, record


def metadata_dirs(path: list[str]) -> list[tuple[str, str]]:
    """``(location, entry)`` of every metadata directory on ``path``, in import-precedence order."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in path:
        location = os.path.abspath(entry or os.curdir)
        if location in seen:
            continue
        seen.add(location)
        if location.lower().endswith(".egg") and (
            os.path.isfile(location) or os.path.isdir(os.path.join(location, "EGG-INFO"))
        ):
            found.append((location, "EGG-INFO"))  # as importlib.metadata reads an egg (easy_install's, zipped or not)
            continue
        if not os.path.isdir(location):
            continue
        try:
            names = os.listdir(location)
        except OSError:
            continue
        # "~name" directories are what an interrupted pip uninstall leaves: no longer installed.
        found += [(location, n) for n in names if n.endswith((".dist-info", ".egg-info")) and not n.startswith("~")]
    return found


def collect(
    path: list[str], cache: dict[str, object] | None = None, now_ns: int | None = None, misses: list[str] | None = None
) -> list[dict[str, object]]:
    """Every distribution on ``path``, in import-precedence order.

    ``cache`` (``{metadata_dir: [stamp, description, trusted]}`` and file-ownership decisions under
    :data:`OWNERSHIP_KEY` keys, as ``probe_cache.load_cache`` reads it) is used for every metadata directory
    whose stamp holds and every decision whose files are unchanged, and replaced by the entries of this run.
    ``now_ns`` is the wall clock (``time.time_ns()``) the stamps of this run are judged against. ``misses``
    receives what could not be taken from the cache (a metadata directory, a decision); when it stays empty
    and the path lists the same metadata directories, the result is the one the cache's last run had.
    """
    if now_ns is None:
        import time

        now_ns = time.time_ns()
    fresh: dict[str, object] = {}
    records: dict[str, str] = {}
    dists = []
    for location, name in metadata_dirs(path):
        dist, record = _describe_cached(location, name, cache, fresh, now_ns, misses=misses)
        if record is not None:
            records[str(dist["metadata_dir"])] = record
        dists.append(dist)
    dists = _without_editable_leftovers(dists)
    copies: dict[tuple[str, str], list[dict[str, object]]] = {}
    owners: dict[tuple[str, str], list[dict[str, object]]] = {}
    for dist in dists:
        if dist["name"]:
            copies.setdefault((str(dist["location"]), _canonical(dist["name"])), []).append(dist)
        for module in dist["modules"]:  # type: ignore[attr-defined]
            owners.setdefault((str(dist["location"]), module), []).append(dist)
    contested = [("copies", "", g) for g in copies.values() if len(g) > 1]
    contested += [("clash", m, g) for (_, m), g in owners.items() if len(g) > 1]
    spread: dict[str, list[dict[str, object]]] = {}  # packages claimed in several path entries
    for (_, module), group in owners.items():
        spread.setdefault(module, []).extend(group)
    contested += [("spread", m, g) for m, g in spread.items() if len({d["location"] for d in g}) > 1]
    for kind, module, group in contested:
        _decide(kind, module, group, records=records, cache=cache, fresh=fresh, now_ns=now_ns, misses=misses)
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return dists


#: Cache keys of file-ownership decisions start with this (metadata directories' keys are absolute paths).
OWNERSHIP_KEY = "@ownership"


def _decide(
    kind: str,
    module: str,
    group: list[dict[str, object]],
    *,
    records: dict[str, str],
    cache: dict[str, object] | None,
    fresh: dict[str, object],
    now_ns: int,
    misses: list[str] | None,
) -> None:
    """Decide whose files are on disk for ``group`` (copies of one distribution, or claimants of ``module``),
    or take the decision from the cache while it still holds.

    A cached decision holds while every member's metadata stamp is the one it was made with (so their RECORDs
    are unchanged) and every file it read has the same mtime, size and inode. It is cached only when those
    files were old enough to trust their timestamps (as :func:`probe_cache.stamp` judges directories).
    """
    from . import ownership

    meta_dirs = [str(d["metadata_dir"]) for d in group]
    key = "\0".join([OWNERSHIP_KEY, kind, module, *meta_dirs])
    stamps = [(fresh.get(m) or [None])[0] for m in meta_dirs]  # type: ignore[index]
    location = str(group[0]["location"])
    hit = cache.get(key) if cache is not None else None
    if isinstance(hit, list) and _holds(hit, stamps, location):
        for dist, value in zip(group, hit[2]):  # noqa: B905 (the probe runs on Python 3.7)
            _apply(kind, module, dist, value)
        fresh[key] = hit
        return
    if misses is not None:
        misses.append(key)
    stats: dict[str, list[int] | None] = {}

    def rows(dist: dict[str, object]) -> dict[str, str | None]:
        return _rows(dist, records)

    if kind == "copies":
        ownership.decide_copies(group, rows, stats)
    elif kind == "spread":
        ownership.decide_spread(module, group, stats)
    else:
        ownership.decide_clash(module, group, rows, stats)
    from . import probe_cache

    old = all(st is None or st[0] < now_ns - probe_cache.TRUST_MARGIN_NS for st in stats.values())
    if cache is not None and None not in stamps and old:
        fresh[key] = [stamps, stats, [_result(kind, module, d) for d in group]]


def _holds(hit: list[object], stamps: list[object], location: str) -> bool:
    """Whether the cached decision ``hit`` was made on these metadata stamps and these very files."""
    from . import ownership

    if len(hit) != 3 or None in stamps or hit[0] != stamps or not isinstance(hit[1], dict):
        return False
    return all(ownership.file_stat(os.path.join(location, p)) == st for p, st in hit[1].items())


def _result(kind: str, module: str, dist: dict[str, object]) -> object:
    if kind == "copies":
        return [dist["record_matches"], dist.get("same_files")]
    if kind == "spread":
        return module in dist["namespaces"]  # type: ignore[operator]
    return dist["clashes"].get(module)  # type: ignore[attr-defined]


def _apply(kind: str, module: str, dist: dict[str, object], value: object) -> None:
    if kind == "copies":
        dist["record_matches"] = value[0]  # type: ignore[index]
        if value[1]:  # type: ignore[index]
            dist["same_files"] = value[1]  # type: ignore[index]
    elif kind == "spread":
        if value:
            dist["namespaces"].append(module)  # type: ignore[attr-defined]
    elif value is not None:
        dist["clashes"][module] = value  # type: ignore[index]


def _rows(dist: dict[str, object], records: dict[str, str]) -> dict[str, str | None]:
    """RECORD of ``dist`` as ``{path: hash}``: the text read this run, else read now (described from the cache)."""
    from . import ownership

    meta_dir = str(dist["metadata_dir"])
    record = records.get(meta_dir)
    if record is None and os.path.isdir(meta_dir):
        try:
            from . import metadata

            record = metadata._read(os.path.join(meta_dir, "RECORD"))
        except (OSError, ValueError):
            record = None
    return ownership.record_rows(record) if record is not None else {}


def _without_editable_leftovers(dists: list[dict[str, object]]) -> list[dict[str, object]]:
    """Drop the ``.egg-info`` a setuptools build leaves in an editable project (``src/pkg.egg-info``):
    the project's ``.dist-info`` in site-packages is the installed copy, the egg-info only a build artefact.
    """
    roots = {_canonical(d["name"]): str(d["editable"]) for d in dists if d.get("editable") and d["name"]}
    if not roots:
        return dists
    out = []
    for dist in dists:
        root = roots.get(_canonical(dist["name"]))
        meta_dir = str(dist["metadata_dir"])
        if root and meta_dir.endswith(".egg-info") and meta_dir.startswith(root.rstrip(os.sep) + os.sep):
            continue
        out.append(dist)
    return out
