"""Probe data for unit tests of the checks: an environment described without building one."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from autoglm_runtime.deps.manifest import ModelManifest
from autoglm_runtime.deps.probe import ProbedEnvironment, parse_probe

#: A target that is not the test's own interpreter: Windows, CPython 3.9.1.
WIN39 = {
    "implementation_name": "cpython",
    "implementation_version": "3.9.1",
    "os_name": "nt",
    "platform_machine": "AMD64",
    "platform_release": "10",
    "platform_system": "Windows",
    "platform_version": "10.0.19041",
    "python_full_version": "3.9.1",
    "platform_python_implementation": "CPython",
    "python_version": "3.9",
    "sys_platform": "win32",
}
SITE = "/t/site-packages"


def dist(
    name: str | None,
    version: str | None,
    requires: Iterable[str] = (),
    *,
    location: str = SITE,
    requires_python: str | None = None,
    extras: Iterable[str] = (),
    modules: Mapping[str, Sequence[str | None]] | None = None,
    errors: Iterable[str] = (),
    record_matches: bool | None = None,
    clashes: Mapping[str, bool] | None = None,
    editable: str | None = None,
    metadata_dir: str | None = None,
    same_files: Iterable[str] = (),
    wheel_tags: Iterable[str] = (),
) -> dict[str, Any]:
    """One distribution as the probe describes it."""
    same = {"same_files": list(same_files)} if same_files else {}
    return {
        "name": name,
        "version": version,
        "location": location,
        "metadata_dir": metadata_dir or f"{location}/{name}-{version}.dist-info",
        "requires": list(requires),
        "requires_python": requires_python,
        "provides_extra": list(extras),
        "modules": {k: list(v) for k, v in (modules or {}).items()},
        "errors": list(errors),
        "record_matches": record_matches,
        "clashes": dict(clashes or {}),
        "editable": editable,
        "wheel_tags": list(wheel_tags),
        **same,
    }


def environment(
    *dists: dict[str, Any], markers: Mapping[str, str] = WIN39, base_site: Sequence[str] = ()
) -> ProbedEnvironment:
    data = {
        "probe": 3,
        "version": markers["python_full_version"],
        "markers": dict(markers),
        "path": [SITE, *base_site],
        "base_site": list(base_site),
        "distributions": list(dists),
    }
    return parse_probe(data, "/t/bin/python")


def model(name: str, *requirements: str, python: str | None = None, constraints: Sequence[str] = ()) -> ModelManifest:
    return ModelManifest(
        constraints=tuple(Requirement(c) for c in constraints),
        name=name,
        entrypoint=f"{name}:load",
        requirements=tuple(Requirement(r) for r in requirements),
        python=SpecifierSet(python) if python is not None else None,
        directory=Path(f"/m/{name}"),
        source=Path(f"/m/{name}/model.toml"),
    )


def model_dir(root: Path, name: str, *requirements: str) -> Path:
    """A model directory ``root/name`` whose ``model.toml`` requires ``requirements``."""
    directory = root / name
    directory.mkdir()
    reqs = ", ".join(json.dumps(r) for r in requirements)
    (directory / "model.toml").write_text(f'[model]\nname = "{name}"\nentrypoint = "m:load"\nrequirements = [{reqs}]\n')
    return directory
