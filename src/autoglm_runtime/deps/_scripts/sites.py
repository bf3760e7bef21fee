"""Which ``sys.path`` entries belong to the base interpreter of a virtual environment: stdlib only, run in the probe.

A virtual environment made with ``--system-site-packages`` has its own site-packages first on the path and the
base interpreter's site directories after it: a distribution the environment installs over one of the base's
shadows it by design (pip and uv install it there for that). The checks need to tell those layers apart, so the
probe reports the base's site directories as they stand on the path (:func:`base_site`).
"""

from __future__ import annotations

import os
import sys


def _key(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def base_site(path: list[str]) -> list[str]:
    """The entries of ``path`` (absolute, as the probe reports locations) that are the base interpreter's site
    directories, or directories a ``.pth`` file in one of those adds; empty outside a virtual environment.

    The base's site directories are ``site.getsitepackages`` of ``sys.base_prefix`` and ``sys.base_exec_prefix``:
    the interpreter's own rules, Debian's ``dist-packages`` layout included (``/usr/local/lib/python3.11/
    dist-packages``, ``/usr/lib/python3/dist-packages``). Only a ``--system-site-packages`` environment has them
    on its path.
    """
    if sys.prefix == sys.base_prefix and sys.exec_prefix == sys.base_exec_prefix:
        return []  # not a virtual environment: no base apart from the interpreter itself
    import site

    getsitepackages = getattr(site, "getsitepackages", None)  # absent from old virtualenv's own site.py
    if getsitepackages is None:
        return []
    on_path = {_key(p or os.curdir): os.path.abspath(p or os.curdir) for p in path}
    found: dict[str, str] = {}
    for sitedir in getsitepackages([sys.base_prefix, sys.base_exec_prefix]):
        key = _key(sitedir)
        if key not in on_path or key in found:
            continue
        found[key] = on_path[key]
        for target in _pth_lines(on_path[key]):  # as site.addpackage reads a .pth file: a line is a directory
            target_key = _key(target)
            if target_key in on_path:
                found.setdefault(target_key, on_path[target_key])
    return [p for k, p in on_path.items() if k in found]  # in path order


def _pth_lines(sitedir: str) -> list[str]:
    """The directories the ``.pth`` files of ``sitedir`` name (lines that run code or are comments skipped)."""
    try:
        names = sorted(n for n in os.listdir(sitedir) if n.endswith(".pth") and not n.startswith("."))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            with open(os.path.join(sitedir, name), "rb") as fh:
                lines = fh.read().decode("utf-8-sig", "replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.strip() and not line.startswith(("#", "import ", "import\t")):
                out.append(os.path.join(sitedir, line.rstrip()))
    return out
