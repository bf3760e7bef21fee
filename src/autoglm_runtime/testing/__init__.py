"""Helpers users may import in their own tests: a real ZooKeeper harness and offline wheel builder.

See :mod:`autoglm_runtime.testing.zookeeper` and ``docs/testing.md``.
"""

from __future__ import annotations

from autoglm_runtime.testing.processes import group_members, is_running, processes_matching
from autoglm_runtime.testing.wheels import build_wheel
from autoglm_runtime.testing.zookeeper import (
    FaultProxy,
    ZooKeeperEnsemble,
    ZooKeeperHarnessError,
    ZooKeeperServer,
    ZooKeeperUnavailableError,
    expire_session,
    fail_in_ci_else_skip,
    start_ensemble,
    start_zookeeper,
)

__all__ = [
    "FaultProxy",
    "ZooKeeperEnsemble",
    "ZooKeeperHarnessError",
    "ZooKeeperServer",
    "ZooKeeperUnavailableError",
    "build_wheel",
    "expire_session",
    "fail_in_ci_else_skip",
    "group_members",
    "is_running",
    "processes_matching",
    "start_ensemble",
    "start_zookeeper",
]
