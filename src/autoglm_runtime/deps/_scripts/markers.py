"""The PEP 508 marker environment of the running interpreter, as ``packaging`` computes it: stdlib only.

Runs inside the checked interpreter (see ``probe.py``). :mod:`platform` gives these values, but its import
brings ``re``, which costs the probe more than the rest of its start; on CPython on Linux every value comes
unchanged from ``os.uname()`` and ``sys``, so they are read there (a test compares the two on every
interpreter it finds).
"""

from __future__ import annotations

import os
import sys

__all__ = ["binary_platform", "marker_environment", "python_version"]


def marker_environment() -> dict[str, str]:
    """The PEP 508 marker environment of the running interpreter (as ``packaging`` computes it)."""
    fast = _uname_markers()
    if fast is not None:
        return fast
    return _platform_markers()


def _platform_markers() -> dict[str, str]:
    """:func:`marker_environment` as ``packaging`` computes it, with :mod:`platform`."""
    import platform  # here: its import brings re, which the probe otherwise never needs

    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": _implementation_version(),
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


def _implementation_version() -> str:
    """``sys.implementation.version`` as PEP 508's ``implementation_version`` writes it ("3.13.0", "3.14.0a1")."""
    impl = sys.implementation.version
    text = f"{impl.major}.{impl.minor}.{impl.micro}"
    if impl.releaselevel != "final":
        text += impl.releaselevel[0] + str(impl.serial)
    return text


def python_version() -> str:
    """``platform.python_version()``, without importing :mod:`platform` where that is plain to see."""
    fast = _cpython_version()
    if fast is not None:
        return fast
    import platform

    return platform.python_version()


def _cpython_version() -> str | None:
    """What ``platform.python_version()`` gives on CPython with a plain ``sys.version`` ("3.11.7 (main, ...)":
    the leading version, ``.0`` added to a two-part one), else ``None``: another implementation, or a
    ``sys.version`` of another form (a free-threading or vendor build), which :mod:`platform` parses."""
    head, space, rest = sys.version.partition(" ")
    if sys.implementation.name != "cpython" or not space or not rest.startswith("("):
        return None
    if not head or not head.isascii() or not all(c.isalnum() or c in "._+" for c in head):
        return None
    if any(name in sys.version for name in ("IronPython", "PyPy", "Brython")):
        return None  # names platform looks for before it takes a version for CPython's
    return head + ".0" if head.count(".") == 1 else head


def _uname_markers() -> dict[str, str] | None:
    """:func:`_platform_markers` from ``os.uname()`` and ``sys`` alone, on CPython on Linux, where
    :mod:`platform` takes its answers from them unchanged (``"unknown"`` read as empty); ``None`` elsewhere."""
    version = _cpython_version()
    if version is None or sys.platform != "linux" or not hasattr(os, "uname"):
        return None
    uname = ["" if value == "unknown" else value for value in os.uname()]
    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": _implementation_version(),
        "os_name": os.name,
        "platform_machine": uname[4],
        "platform_release": uname[2],
        "platform_system": uname[0],
        "platform_version": uname[3],
        "python_full_version": version,
        "platform_python_implementation": "CPython",
        "python_version": ".".join(version.split(".")[:2]),
        "sys_platform": sys.platform,
    }


def binary_platform() -> list[object]:
    """``[pointer bits, C library]`` of the running interpreter: what its platform tags depend on beyond
    ``os.uname()``'s machine, which is the kernel's (a 32-bit interpreter on a 64-bit kernel says ``x86_64``
    but loads only ``i686`` extension modules; a musl one loads ``musllinux`` ones). The C library is
    ``"glibc 2.36"`` as glibc names itself, or ``""`` for any other (musl, macOS, Windows)."""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or a C library without that name (musl)
        libc = ""
    return [64 if sys.maxsize > 2**32 else 32, libc]
