"""Findings about several copies of one distribution on the path: ``duplicate`` and ``overrides-base``.

A virtual environment made with ``--system-site-packages`` puts its own site-packages before the base
interpreter's site directories (:attr:`~autoglm_runtime.deps.probe.ProbedEnvironment.base_site`): a copy it
installs over one of the base's shadows that copy by design, as pip and uv intend, and is reported as
informational ``overrides-base``. Copies within the environment's own directories, or within the base's, are
``duplicate`` as anywhere else.
"""

from __future__ import annotations

from autoglm_runtime.deps.distributions import InstalledDist, ProbedEnvironment
from autoglm_runtime.deps.findings import Finding

__all__ = ["duplicates"]

#: Where the copies of a ``duplicate`` finding are, by the layer they are in (``None``: the whole path).
_WHERE = {None: "on the path", False: "in the environment", True: "in the base interpreter's site directories"}


def duplicates(env: ProbedEnvironment) -> list[Finding]:
    """``duplicate`` and ``overrides-base`` findings for every distribution with several copies on the path."""
    findings = []
    for key in sorted(env.winners):
        found = env.copies(key)
        if len(found) < 2:
            continue
        used = None if key in env.undetermined else env.winners[key]
        inherited = [d for d in found if d.location in env.base_site]
        own = [d for d in found if d.location not in env.base_site]
        if not inherited or not own or found[0].location in env.base_site:  # one layer, or a base copy first
            findings.append(_duplicate(found, used, None))
            continue
        if len(own) > 1:
            findings.append(_duplicate(own, used, False))
        if len(inherited) > 1:
            findings.append(_duplicate(inherited, env.pick(inherited), True))
        findings.append(_overrides_base(used, own, inherited))
    return findings


def _place(dist: InstalledDist) -> dict[str, str]:
    return {"version": dist.version, "location": dist.location, "metadata_dir": dist.metadata_dir}


def _overrides_base(used: InstalledDist | None, own: list[InstalledDist], inherited: list[InstalledDist]) -> Finding:
    base = "; ".join(f"{d.label} ({d.metadata_dir})" for d in inherited)
    if used is None:
        head = f"{own[0].name} is installed in the environment"
    else:
        head = f"{used.label} ({used.metadata_dir}) is the one imported"
    return Finding(
        kind="overrides-base",
        packages=(own[0].key,),
        message=f"{head}; it overrides the base interpreter's {base}, shadowed by design (the environment "
        "includes the system site-packages)",
        hint=f"nothing to do; uninstall {own[0].name} from the environment to use the base interpreter's copy",
        details={"used": _place(used) if used else None, "shadowed": [_place(d) for d in inherited]},
    )


def _duplicate(found: list[InstalledDist], used: InstalledDist | None, base: bool | None) -> Finding:
    """The ``duplicate`` finding for ``found`` (copies in precedence order), ``used`` the one imported
    (``None``: it cannot be determined); ``base`` says which layer they are all in (``None``: any)."""
    name = (used or found[0]).name
    where = f"installed {len(found)} times {_WHERE[base]}"
    if used is not None:
        same_dir = [d for d in found if d.location == used.location and d is not used]
        other_dirs = [d for d in found if d.location != used.location]
        hidden = "; ".join(f"{d.label} ({d.metadata_dir})" for d in found if d is not used)
        message = f"{name} is {where}: {used.label} ({used.metadata_dir}) is the one imported, shadowing {hidden}"
        details: dict[str, object] = {"used": _place(used), "shadowed": [_place(d) for d in found if d is not used]}
        steps = []
        if same_dir:
            dirs = ", ".join(d.metadata_dir for d in same_dir)
            steps.append(f"delete the stale metadata {'directories' if len(same_dir) > 1 else 'directory'} {dirs}")
        if other_dirs:
            steps.append("uninstall the shadowed copies in other directories or take those directories off the path")
        return Finding(
            kind="duplicate", packages=(found[0].key,), message=message, hint="; ".join(steps), details=details
        )
    candidates = [d for d in found if d.location == found[0].location]
    other_dirs = [d for d in found if d.location != found[0].location]
    listed = " and ".join(f"{d.label} ({d.metadata_dir})" for d in candidates)
    message = (
        f"{name} is {where}: {listed} are in one directory and the files on disk match no single copy's RECORD, "
        "so which copy's files are imported cannot be determined"
    )
    if other_dirs:
        message += "; they shadow " + "; ".join(f"{d.label} ({d.metadata_dir})" for d in other_dirs)
    # pip cannot uninstall a copy whose RECORD is gone, and an unpinned --force-reinstall would upgrade past
    # what the environment pins: delete the stale metadata, then reinstall the same version.
    reinstall = f"pip install --force-reinstall --no-deps '{name}=={found[0].version}'"
    hint = (
        "delete the metadata directories of the copies you do not want, then reinstall the one you keep over "
        f"its files, e.g. {reinstall}"
    )
    details = {
        "used": None,
        "candidates": [_place(d) for d in candidates],
        "shadowed": [_place(d) for d in other_dirs],
    }
    return Finding(kind="duplicate", packages=(found[0].key,), message=message, hint=hint, details=details)
