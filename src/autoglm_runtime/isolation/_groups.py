"""Environments shared by groups of models (:meth:`ModelLoader.share_environments`), and the environment a model
gets: its group's when it is in one, else (or should the group's fail to build) its own."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from packaging.specifiers import SpecifierSet

from autoglm_runtime.deps.manifest import ModelManifest, load_manifest
from autoglm_runtime.deps.planning import ModelRequirements, Plan, plan_groups
from autoglm_runtime.errors import DependencyConflictError, EnvironmentBuildError
from autoglm_runtime.isolation.envs.build import BuiltEnvironment, EnvironmentBuilder

__all__ = ["SharedEnvironments"]

_log = logging.getLogger("autoglm_runtime.isolation.loader")  # (the loader's: what it logs is about its loads)


class SharedEnvironments:
    """Which models share an environment, and the environment of each model; thread-safe."""

    def __init__(self, builder: EnvironmentBuilder) -> None:
        self._builder = builder
        self._lock = threading.Lock()
        self._shared: dict[str, ModelManifest] = {}  # model name -> the manifest of its group's environment
        self._trying: dict[str, threading.Lock] = {}  # group name -> held by the member trying its environment

    def forget_parent(self) -> None:
        """(In a forked child, called by the loader's) locks a thread of the parent may have held at the fork are
        made afresh."""
        self._lock = threading.Lock()
        self._trying = {}

    def plan(self, models: Sequence[str | os.PathLike[str] | ModelManifest]) -> Plan:
        """Group ``models`` whose direct requirements can share one environment (see
        :meth:`ModelLoader.share_environments`); from now on their loads use their group's environment."""
        manifests = [m if isinstance(m, ModelManifest) else load_manifest(Path(m)) for m in models]
        plan = plan_groups([ModelRequirements(m.name, m.requirements, m.python, m.constraints) for m in manifests])
        by_name = {m.name: m for m in manifests}
        shared: dict[str, ModelManifest] = {}
        for group in plan.groups:
            members = [by_name[n] for n in group]
            if len(members) > 1:
                merged = _group_manifest(members)
                shared.update(dict.fromkeys(group, merged))
        with self._lock:
            self._shared.update(shared)
        return plan

    def ensure(self, manifest: ModelManifest) -> BuiltEnvironment:
        """The model's environment: its group's when it shares one, else (or should that fail) its own."""
        with self._lock:
            group = self._shared.get(manifest.name)
            trying = None if group is None else self._trying.setdefault(group.name, threading.Lock())
        if group is None or trying is None:
            return self._builder.ensure(manifest)
        with trying:  # members loaded at once try the group's environment one at a time: a failure is built once
            with self._lock:
                still_shared = self._shared.get(manifest.name) is group
            if still_shared:
                try:
                    return self._builder.ensure(group)
                except (EnvironmentBuildError, DependencyConflictError) as exc:
                    self._unshare(group, manifest.name, exc)
        return self._builder.ensure(manifest)

    def _unshare(self, group: ModelManifest, name: str, exc: EnvironmentBuildError | DependencyConflictError) -> None:
        """The environment of ``group`` cannot be built: each member gets its own (one warning for the group)."""
        # The plan judges direct requirements only: what they pull in may still clash (a dependency of one member
        # pinning what another pins otherwise). Sharing saves disk; it must not cost the model.
        with self._lock:
            for member in [member for member, shared in self._shared.items() if shared is group]:
                del self._shared[member]
        _log.warning(
            "models %s cannot share one environment (%s); each gets an environment of its own",
            group.name.replace("+", ", "),
            exc.message.splitlines()[0],
            extra={"error_code": exc.code, "model": name},
        )


def _group_manifest(members: Sequence[ModelManifest]) -> ModelManifest:
    """The manifest a group's environment is built from: every member's requirements and constraints, once each."""
    requirements = tuple(dict.fromkeys(r for m in members for r in m.requirements))
    pythons = [str(m.python) for m in members if m.python is not None]
    return replace(
        members[0],
        name="+".join(sorted(m.name for m in members)),
        requirements=requirements,
        python=SpecifierSet(",".join(pythons)) if pythons else None,
        included_files=tuple(dict.fromkeys(p for m in members for p in m.included_files)),
        constraints=tuple(dict.fromkeys(c for m in members for c in m.constraints)),
    )
