"""check-deps' last answer for an environment, printed again while nothing it was computed from changed.

The report of ``check-deps --python PY`` without model paths is a function of three things only: what the
probe printed (every distribution's metadata, the file-ownership decisions, ``sys.path``, the marker
environment), the options that shape the output, and the code that computes it (this package, ``deps/``,
``errors.py`` and ``packaging``). The entry stores all three exactly - the probe's output as text, not a
hash - beside the probe's own cache; a run whose three match prints the stored output and exit code, without
importing ``packaging`` or the checker. Any difference is a miss and the run computes the report afresh.

The entry is in :mod:`marshal` form, like the probe's cache: read without importing ``json`` (and ``re``
with it), which a run that prints the stored report needs for nothing else. Its key holds ``sys.version``,
so only the Python that wrote it uses it; another's bytes are a miss, never an error.
"""

from __future__ import annotations

import marshal
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = 2
#: The package directory; the stamp covers its root, cli/ and deps/ (and deps/_scripts/).
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stamp_dir(directory: str) -> list[list[object]]:
    try:
        with os.scandir(directory) as entries:
            found = [(e.name, e.stat()) for e in entries if e.name.endswith(".py")]
    except OSError:
        return []
    return sorted([name, st.st_mtime_ns, st.st_size, st.st_ino] for name, st in found)


def code_stamp() -> dict[str, list[list[object]]]:
    """Name, mtime, size and inode of every source file the report is computed by (packaging's included)."""
    from importlib.machinery import PathFinder  # finds packaging without importing it

    dirs = [_PACKAGE, os.path.join(_PACKAGE, "cli"), os.path.join(_PACKAGE, "deps")]
    dirs.append(os.path.join(_PACKAGE, "deps", "_scripts"))
    spec = PathFinder.find_spec("packaging")
    if spec is not None and spec.submodule_search_locations:
        dirs += list(spec.submodule_search_locations)
    return {d: _stamp_dir(d) for d in dirs}


def entry_path(probe_cache: str) -> str:
    """The report entry kept beside the probe cache file ``probe_cache``."""
    return probe_cache[: -len(".json")] + ".report" if probe_cache.endswith(".json") else probe_cache + ".report"


def load(path: str, key: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored entry if it was made with ``key`` (same options and code; any key for ``None``), else ``None``."""
    try:
        with open(path, "rb") as fh:
            entry = marshal.loads(fh.read())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None
    if key is not None and entry.get("key") != key:
        return None
    if not isinstance(entry.get("probe"), str) or not isinstance(entry.get("output"), str):
        return None
    if not isinstance(entry.get("exit_code"), int):
        return None
    return entry


def store(path: str, key: dict[str, Any], probe: str, exit_code: int, output: str) -> None:
    """Write the entry atomically; one that cannot be written only costs the next run its speed."""
    entry = {"format": FORMAT, "key": key, "probe": probe, "exit_code": exit_code, "output": output}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(marshal.dumps(entry))
        os.replace(tmp, path)
    except (OSError, ValueError):  # ValueError: a value marshal cannot write
        import contextlib

        with contextlib.suppress(OSError):
            os.unlink(tmp)
