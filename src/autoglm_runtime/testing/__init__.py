"""Helpers users may import in their own tests: a real ZooKeeper harness and offline wheel builder.

See :mod:`autoglm_runtime.testing.zookeeper` and ``docs/testing.md``.
"""

from __future__ import annotations

from autoglm_runtime._exports import publish as _publish
from autoglm_runtime._library_logging import install_null_handler as _install_null_handler
from autoglm_runtime.testing.session import StateWatcher
from autoglm_runtime.testing.waiting import wait_until
from autoglm_runtime.testing.wheels import build_wheel
from autoglm_runtime.testing.zookeeper import (
    FaultProxy,
    ZooKeeperEnsemble,
    ZooKeeperHarnessError,
    ZooKeeperServer,
    ZooKeeperUnavailableError,
    expire_session,
    fail_in_ci_else_skip,
    skip_or_fail,
    start_ensemble,
    start_zookeeper,
)

_install_null_handler()  # a library never configures logging; see autoglm_runtime._library_logging

__all__ = [
    "FaultProxy",
    "StateWatcher",
    "ZooKeeperEnsemble",
    "ZooKeeperHarnessError",
    "ZooKeeperServer",
    "ZooKeeperUnavailableError",
    "build_wheel",
    "expire_session",
    "fail_in_ci_else_skip",
    "skip_or_fail",
    "start_ensemble",
    "start_zookeeper",
    "wait_until",
]

_publish(__name__, globals(), __all__)
