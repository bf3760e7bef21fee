"""Removing environments nobody uses any more, without ever touching one in use.

Environment keys change whenever what decides an install changes (requirements, interpreter, wheelhouse
content), and the old ``<root>/<key>`` directories stay behind. Two facts decide what may go:

* **in use**: a :class:`~autoglm_runtime.isolation.ModelLoader` holds a shared ``flock`` on the
  environment's ``autoglm-env.json`` for as long as a model runs from it (:func:`hold_environment`);
  :func:`collect_garbage` takes an exclusive lock without waiting, so a held environment is never removed;
* **last used**: the modification time of ``autoglm-env.json``, set when the environment is built and
  whenever it is asked for again (``EnvironmentBuilder.ensure`` and :func:`hold_environment` touch it).

:func:`collect_garbage` removes every environment that is not in use, not in ``keep`` and unused for at
least ``unused_for`` seconds, plus what killed builders left (``.build-*`` and ``.stale-*`` directories,
``<key>`` directories without metadata, lock files) when no build of that key runs. A removal is one
atomic rename aside, then the delete, so ``<root>/<key>`` never holds a half-removed tree. POSIX only.

>>> report = collect_garbage("/var/lib/autoglm/envs", unused_for=30 * 86400)  # doctest: +SKIP
>>> [entry.key for entry in report.removed]                                  # doctest: +SKIP
['16dfc6441699d5e33141f926']
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from autoglm_runtime.errors import UsageError
from autoglm_runtime.isolation.envs._installer import remove_path
from autoglm_runtime.isolation.envs._use import METADATA_NAME, EnvironmentHold, hold_environment
from autoglm_runtime.isolation.envs.key import KEY_LENGTH

__all__ = ["EnvironmentHold", "GarbageReport", "Removal", "collect_garbage", "hold_environment"]

EnvironmentHold.__module__ = __name__
hold_environment.__module__ = __name__

_KEY = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")
_LEFTOVER = re.compile(rf"\.(build|stale)-([0-9a-f]{{{KEY_LENGTH}}})-.+")
_LOCK = re.compile(rf"\.([0-9a-f]{{{KEY_LENGTH}}})\.lock")


@dataclass(frozen=True)
class Removal:
    """One directory or file :func:`collect_garbage` removed (or, on a dry run, would remove)."""

    key: str
    path: Path
    reason: str


@dataclass
class GarbageReport:
    """What one collection did: ``removed`` entries, and the environments ``kept`` with the reason."""

    removed: list[Removal] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """Try an exclusive flock on ``path`` without waiting: yields False when someone holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _build_running(root: Path, key: str, *, tidy: bool) -> bool:
    """True while a builder holds ``<root>/.<key>.lock`` (it unlinks the file before it lets go); with
    ``tidy``, a lock file nobody holds is removed."""
    lock = root / f".{key}.lock"
    if not lock.exists():
        return False
    with _exclusive(lock) as mine:
        if mine and tidy:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # what a killed builder left; we hold it, as a finishing builder would
        return not mine and lock.exists()


def collect_garbage(
    root: str | os.PathLike[str],
    *,
    keep: Collection[str] = (),
    unused_for: float = 0.0,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
) -> GarbageReport:
    """Remove the environments under ``root`` that are not in use, not in ``keep`` (keys) and were last used
    ``unused_for`` seconds ago or earlier (on ``clock``, wall time: modification times are wall time), and
    what interrupted builds left behind. ``dry_run`` reports without removing.

    Raises :class:`UsageError` (E0001) when ``root`` is not a directory or ``unused_for`` is negative.
    """
    base = Path(root).absolute()
    if not unused_for >= 0:
        raise UsageError(f"unused_for must be a number of seconds >= 0, got {unused_for!r}")
    if not base.is_dir():
        raise UsageError(f"environment root {base} is not a directory; give the --env-root environments live in")
    report = GarbageReport()
    cutoff = clock() - unused_for
    for entry in sorted(base.iterdir()):
        name = entry.name
        leftover = _LEFTOVER.fullmatch(name)
        lock = _LOCK.fullmatch(name)
        if leftover is not None:
            key = leftover.group(2)
            if leftover.group(1) == "stale" or not _build_running(base, key, tidy=not dry_run):
                _remove(report, key, entry, "left by an interrupted build or removal", dry_run)
        elif lock is not None:
            _build_running(base, lock.group(1), tidy=not dry_run)  # removes the lock file nobody holds
        elif _KEY.fullmatch(name) and entry.is_dir() and not entry.is_symlink():
            aside = _consider(report, entry, keep=keep, cutoff=cutoff, dry_run=dry_run)
            if aside is not None:  # deleted once its lock is released: a loader waiting on it learns at once
                with contextlib.suppress(FileNotFoundError):
                    remove_path(aside)
    return report


def _consider(
    report: GarbageReport, entry: Path, *, keep: Collection[str], cutoff: float, dry_run: bool
) -> Path | None:
    """Decide on one ``<root>/<key>``; returns the directory it was moved aside to, for the caller to delete."""
    base, key = entry.parent, entry.name
    metadata = entry / METADATA_NAME
    if not metadata.is_file():
        if not _build_running(base, key, tidy=not dry_run):
            return _move_aside(report, entry, f"no {METADATA_NAME} (an interrupted build or removal)", dry_run)
        return None
    if key in keep:
        report.kept[key] = "kept"
        return None
    with _exclusive(metadata) as mine:
        if not mine:
            report.kept[key] = "in use"
            return None
        try:
            last_used = os.stat(metadata).st_mtime
        except FileNotFoundError:
            return None
        if last_used > cutoff:
            report.kept[key] = f"used {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last_used))}"
            return None
        return _move_aside(report, entry, "not in use", dry_run)  # under our lock: nobody can start using it


def _move_aside(report: GarbageReport, path: Path, reason: str, dry_run: bool) -> Path | None:
    """Rename ``<root>/<key>`` into a ``.stale-<key>-*`` directory: one atomic step, so the key's directory
    never holds a half-removed tree."""
    key = path.name
    if dry_run:
        report.removed.append(Removal(key, path, reason))
        return None
    holder = Path(tempfile.mkdtemp(prefix=f".stale-{key}-", dir=path.parent))
    try:
        os.rename(path, holder / "env")
    except FileNotFoundError:  # someone else removed it meanwhile
        holder.rmdir()
        return None
    report.removed.append(Removal(key, path, reason))
    return holder


def _remove(report: GarbageReport, key: str, path: Path, reason: str, dry_run: bool) -> None:
    if not dry_run:
        try:
            remove_path(path)
        except FileNotFoundError:
            return  # someone else removed it meanwhile
    report.removed.append(Removal(key, path, reason))
