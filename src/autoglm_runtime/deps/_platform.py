"""``unsupported-wheel`` findings: distributions installed from a wheel built for another interpreter or platform.

``pip check`` (since 23.3) and ``uv pip check`` report a distribution whose ``WHEEL`` tags are all outside the
tags the interpreter supports: a ``cp312`` extension in a Python 3.11 environment (a copied or reused
site-packages) does not import. The supported tags are ``packaging``'s for the target: its CPython version and
ABI (``sys.abiflags``), and the platform tags of the interpreter running the check, which the target shares when it
reports the same OS and machine type, pointer width and C library. Otherwise (another implementation, another
platform, a 32-bit interpreter on a 64-bit kernel, musl against glibc) the tags are not judged: the running
interpreter's would be wrong for it.
"""

from __future__ import annotations

import functools

from autoglm_runtime.deps.distributions import ProbedEnvironment
from autoglm_runtime.deps.findings import Finding

__all__ = ["unsupported_wheels"]

#: Tags every Python 3 interpreter supports: most pure wheels carry one of them (then ``packaging.tags``,
#: whose import costs a few milliseconds, is not needed).
_UNIVERSAL = frozenset({"py3-none-any", "py2.py3-none-any"})


def unsupported_wheels(env: ProbedEnvironment) -> list[Finding]:
    """An ``unsupported-wheel`` finding for each distribution whose wheel tags the interpreter supports none of."""
    candidates = [d for d in env.winners.values() if d.wheel_tags and _UNIVERSAL.isdisjoint(d.wheel_tags)]
    supported = _supported(env) if candidates else None
    if supported is None:
        return []
    from packaging.tags import parse_tag

    findings = []
    for dist in sorted(candidates, key=lambda d: d.key):
        try:
            tags = frozenset().union(*(parse_tag(t) for t in dist.wheel_tags))
        except ValueError:  # a Tag line that is no tag: not judged
            continue
        if tags.isdisjoint(supported):
            built = ", ".join(dist.wheel_tags)
            findings.append(
                Finding(
                    kind="unsupported-wheel",
                    packages=(dist.key,),
                    message=f"{dist.label} was built for another interpreter or platform ({built}); {env.python} "
                    f"(CPython {env.python_version}) supports none of its tags, so it cannot be imported",
                    hint=f"reinstall it for this interpreter: pip install --force-reinstall --no-deps "
                    f"'{dist.name}=={dist.version}'",
                    details={"wheel_tags": list(dist.wheel_tags)},
                )
            )
    return findings


def _supported(env: ProbedEnvironment) -> frozenset[object] | None:
    """The tags ``env``'s interpreter supports, or ``None`` when they cannot be told from here."""
    import platform
    import sys

    from autoglm_runtime.deps._scripts.markers import binary_platform

    markers = env.markers
    same_machine = markers.get("sys_platform") == sys.platform and markers.get("platform_machine") == platform.machine()
    # The machine is the kernel's: a 32-bit or musl interpreter on it supports other platform tags than ours.
    same_machine = same_machine and env.binary_platform == tuple(binary_platform())
    if env.abiflags is None or markers.get("implementation_name") != "cpython" or not same_machine:
        return None
    try:
        major, minor = (int(p) for p in markers["python_version"].split("."))
    except (KeyError, ValueError):
        return None
    return _tags(major, minor, env.abiflags)


@functools.lru_cache(maxsize=8)
def _tags(major: int, minor: int, abiflags: str) -> frozenset[object]:
    """CPython ``major.minor``'s tags with ``abiflags`` on this machine's platforms (``packaging.tags.sys_tags``
    for that interpreter)."""
    from packaging import tags

    platforms = list(tags.platform_tags())
    version = (major, minor)
    interpreter = f"cp{major}{minor}"
    abis = [f"{interpreter}{abiflags}"]
    if "d" in abiflags and version >= (3, 8):  # a debug build loads normal extension modules too, as packaging says
        abis.append(f"{interpreter}{abiflags.replace('d', '')}")
    cpython = tags.cpython_tags(version, abis, platforms)
    return frozenset([*cpython, *tags.compatible_tags(version, interpreter, platforms)])
