"""What decides an interpreter's ``sys.path``, stamped, so a later run can tell it is unchanged without starting it.

The probe (``probe.py --cache FILE``) records under :data:`PATH_KEY` the description of the interpreter it runs
in (``sys.executable``, ``sys.path``, version and marker environment) together with the stamps of everything
``python -I`` builds that from. While every stamp is unchanged, ``check-deps`` reads the distributions on that
path in its own process with the same scripts (:func:`autoglm_runtime.cli._early_probe.start_probe`), instead
of starting the interpreter only to learn its path again. Stdlib only: it runs inside the probe too.

What is stamped (``[mtime_ns, size, inode, ctime_ns]``, or ``None`` for a path that does not exist; the ctime
changes with what leaves the rest alone: a ``chmod`` that stops the interpreter or hides a ``.pth`` file, a tree
put back with its old mtimes):

* the interpreter binary (after symlinks; only when it is the one running, never a script that started it
  under its own name) and the shared ``libpython`` it loaded: its version and markers;
* the directories of ``sys.executable`` and of its parent, and both ``pyvenv.cfg`` candidates: where the
  interpreter finds its prefix (a ``._pth`` file beside it would change the path too);
* every ``sys.path`` entry and every site-packages directory ``site`` looks at: a directory's mtime changes
  when an entry is added, removed or renamed in it (a new ``.pth`` file, a ``sitecustomize`` module);
* every ``.pth`` file in those site directories, and every directory their lines name (``site`` adds only
  those that exist).

Nothing is recorded, so the interpreter always runs, when that cannot show the path is the same: a ``.pth``
line that runs code (``import ...``), a ``sitecustomize`` or ``usercustomize`` module on the path (imported
or not: one that failed part-way may have changed the path first), a ``site`` without ``getsitepackages``, a
process whose loaded libraries or start time cannot be read (no
``/proc``), or a stamped path changed less than :data:`probe_cache.TRUST_MARGIN_NS` before the process started
(a coarse file-system clock could hide a change made just after; a change made while it started is in the
stamps but not in its ``sys.path``, however long the start-up took). A later run uses the entry only for the
same interpreter after symlinks (never through a wrapper script, whose choice may depend on anything), on the
same kernel (``os.uname()``: the marker environment), with the same dynamic-loader variables
(``LD_LIBRARY_PATH`` and the like, which ``-I`` does not ignore) and with the same Python version
(:func:`probe_cache.load_cache` reads no other's file).
"""

from __future__ import annotations

import os
import sys

from . import probe_cache

#: The probe cache's key for the entry: ``[real executable, [[path, stamp], ...], context, interpreter]``.
PATH_KEY = "@path"
#: Environment variables that ``-I`` does not ignore and that choose which libraries the interpreter loads.
_LOADER_VARIABLES = ("LD_LIBRARY_PATH", "LD_PRELOAD", "DYLD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES")


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in a .pth line, which site skips as no path
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns]


def _pth_targets(sitedir: str) -> tuple[list[str], list[str]] | None:
    """The ``.pth`` files of ``sitedir`` and the paths their lines name; ``None`` when a line runs code."""
    try:
        names = sorted(n for n in os.listdir(sitedir) if n.endswith(".pth"))
    except OSError:
        return [], []
    files, targets = [], []
    for name in names:
        full = os.path.join(sitedir, name)
        files.append(full)
        try:
            with open(full, "rb") as fh:
                # utf-8-sig: Python 3.13+ drops a byte-order mark before it looks for "import" (earlier ones
                # keep it, and take the line as a path: then this only records nothing where it could).
                lines = fh.read().decode("utf-8-sig", "replace").splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith(("import ", "import\t")):
                return None  # site runs it: what it does to the path cannot be stamped
            if line.strip() and not line.startswith("#"):
                targets.append(os.path.join(sitedir, line.rstrip()))
    return files, targets


def _context() -> list[object]:
    """What else the description depends on: the kernel (``os.uname()``: the marker environment) and the
    dynamic loader's variables (the ``libpython`` loaded)."""
    return [list(os.uname()), [os.environ.get(name) for name in _LOADER_VARIABLES]]


def _libraries() -> list[str] | None:
    """The ``libpython`` files this process loaded (none for a static build); ``None`` when unknown."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            maps = fh.read()
    except OSError:
        return None
    found = {line.split(None, 5)[-1] for line in maps.splitlines() if "libpython" in line and "/" in line}
    return sorted(found)


def _started_ns(now_ns: int) -> int | None:
    """When this process started, on the wall clock ``now_ns`` is read from (``None`` when ``/proc`` cannot tell).

    ``sys.path`` was decided then, before anything here is stamped: a change made in between is in the stamps
    but not in the path, so it must count as too new however long the start-up took.
    """
    import time

    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rpartition(b")")[2].split()  # after the command name, which may hold anything
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        hz = os.sysconf("SC_CLK_TCK")
        since_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    tick = 1_000_000_000 // hz
    return now_ns - (since_boot - ticks * tick) - tick  # a tick earlier: starttime is rounded down to one


def record(now_ns: int) -> list[object] | None:
    """The entry for the running interpreter (started ``-I``, with ``site``), or ``None`` when none can be made."""
    if "sitecustomize" in sys.modules or "usercustomize" in sys.modules or sys.flags.no_site:
        return None
    from importlib.machinery import PathFinder

    if any(PathFinder.find_spec(name) is not None for name in ("sitecustomize", "usercustomize")):
        return None  # one that raised part-way is not in sys.modules, but it may have changed sys.path first
    if not hasattr(os, "uname"):
        return None  # Windows: the marker environment comes from the registry, never from a stamp
    import site

    getsitepackages = getattr(site, "getsitepackages", None)
    libraries = _libraries()
    started = _started_ns(now_ns)
    if getsitepackages is None or libraries is None or started is None:
        return None
    real = os.path.realpath(sys.executable)
    if os.path.realpath("/proc/self/exe") != real:
        return None  # started under another name (a wrapper's ``exec -a``): that name does not fix the binary
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    watched = [real, *libraries, exe_dir, os.path.dirname(exe_dir), os.path.dirname(real)]
    watched += [os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(os.path.dirname(exe_dir), "pyvenv.cfg")]
    watched += [os.path.abspath(p or os.curdir) for p in sys.path]
    for sitedir in getsitepackages():
        watched.append(sitedir)
        found = _pth_targets(sitedir)
        if found is None:
            return None
        watched += found[0] + found[1]
    stamps = {path: _stat(path) for path in watched}
    limit = min(now_ns, started) - probe_cache.TRUST_MARGIN_NS
    if any(st is not None and st[0] >= limit for st in stamps.values()):
        return None
    return [real, sorted([p, st] for p, st in stamps.items()), _context()]


def holds(entry: object, python: str) -> bool:
    """Whether ``entry`` (from :func:`record`, plus the interpreter's description) still describes ``python``."""
    if not isinstance(entry, list) or len(entry) != 4 or not isinstance(entry[1], list):
        return False
    described = entry[3]
    if not isinstance(described, dict) or not isinstance(described.get("path"), list):
        return False
    if not hasattr(os, "uname") or os.path.realpath(python) != entry[0] or _context() != entry[2]:
        return False
    return all(isinstance(item, list) and _stat(item[0]) == item[1] for item in entry[1])
