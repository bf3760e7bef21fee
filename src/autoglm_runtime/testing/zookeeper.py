"""A real ZooKeeper for tests, the way Curator's TestingServer gives one to Java tests.

:func:`start_zookeeper` starts a server on a free loopback port and hands it back started; its
``hosts`` is the connect string. Where the server comes from is the backend:

``container``
    the ``zookeeper`` image through testcontainers, when a Docker engine answers a ping;
``local``
    ZooKeeper's java process, from an Apache tarball at ``ZOOKEEPER_HOME`` or Debian's ``zookeeper``
    package (``/usr/share/java/zookeeper.jar``);
``external``
    a server or ensemble someone else runs, named by ``AUTOGLM_ZK_HOSTS`` (cannot be stopped).

``AUTOGLM_ZK_BACKEND=auto|container|local|external`` chooses (default ``auto``: those three in that
order); the server's ``backend`` attribute and an INFO log line say which one was used::

    from kazoo.client import KazooClient
    from autoglm_runtime.testing.zookeeper import start_zookeeper

    with start_zookeeper() as server:
        client = KazooClient(hosts=server.hosts)
        client.start()
        client.create("/app/key", b"value", makepath=True)
        client.stop()
        server.restart()  # same port, same data

Also here: :class:`ZooKeeperEnsemble` (three local servers), :class:`FaultProxy` (cut, refuse, delay
connections, or lose one request's answer) and :func:`expire_session` (force a client's session to expire).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

from autoglm_runtime.errors import AutoGLMRuntimeError
from autoglm_runtime.testing._common import (
    INSTALL_HINT,
    ZooKeeperHarnessError,
    ZooKeeperUnavailableError,
)
from autoglm_runtime.testing._container import start_container_server
from autoglm_runtime.testing._local import find_local_installation
from autoglm_runtime.testing._server import (
    DEFAULT_START_TIMEOUT,
    ExternalZooKeeperServer,
    LocalZooKeeperServer,
    ZooKeeperServer,
)
from autoglm_runtime.testing.ensemble import ZooKeeperEnsemble, start_ensemble
from autoglm_runtime.testing.proxy import FaultProxy
from autoglm_runtime.testing.session import expire_session

__all__ = [
    "BACKENDS",
    "INSTALL_HINT",
    "FaultProxy",
    "ZooKeeperEnsemble",
    "ZooKeeperHarnessError",
    "ZooKeeperServer",
    "ZooKeeperUnavailableError",
    "backend_order",
    "expire_session",
    "fail_in_ci_else_skip",
    "in_ci",
    "skip_or_fail",
    "start_ensemble",
    "start_zookeeper",
]

log = logging.getLogger(__name__)

#: The backends ``auto`` tries, in order.
BACKENDS: tuple[str, ...] = ("container", "local", "external")

_Starter = Callable[[Path | None, float, Mapping[str, str]], ZooKeeperServer]


def backend_order(backend: str | None = None, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The backends to try: ``backend`` if given, else ``AUTOGLM_ZK_BACKEND``, else ``auto`` (all, in order).

    >>> backend_order("auto")
    ('container', 'local', 'external')
    >>> backend_order(None, {"AUTOGLM_ZK_BACKEND": "local"})
    ('local',)
    """
    env = os.environ if env is None else env
    choice = (backend or env.get("AUTOGLM_ZK_BACKEND") or "auto").strip().lower()
    if choice == "auto":
        return BACKENDS
    if choice in BACKENDS:
        return (choice,)
    raise ZooKeeperHarnessError(
        f"The ZooKeeper backend must be one of auto, container, local or external, not {choice!r}; "
        "set AUTOGLM_ZK_BACKEND or the backend argument to one of those."
    )


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """True when ``CI`` is set to a true value: fixtures then fail instead of skipping when ZooKeeper is missing."""
    env = os.environ if env is None else env
    return env.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def skip_or_fail(exc: BaseException, env: Mapping[str, str] | None = None) -> NoReturn:
    """In a pytest fixture, end a test that needs ZooKeeper when none could start: fail under CI, else skip.

    The message carries ``exc``'s (which says how to install ZooKeeper), so a skip is never silent::

        try:
            server = start_zookeeper()
        except ZooKeeperUnavailableError as exc:
            skip_or_fail(exc)
    """
    reason = exc.message if isinstance(exc, AutoGLMRuntimeError) else str(exc)
    fail_in_ci_else_skip(f"This test needs a real ZooKeeper and none could start. {reason}", env)


def fail_in_ci_else_skip(message: str, env: Mapping[str, str] | None = None) -> NoReturn:
    """End a test whose prerequisite is missing: fail when ``CI`` is true, else skip, with ``message`` either way.

    For anything a CI machine must have (a ZooKeeper, a second interpreter, a package cache): a skip there would
    hide that the test never ran::

        if not PY313.exists():
            fail_in_ci_else_skip(f"needs {PY313}: install it with 'pyenv install 3.13'")
    """
    import pytest  # imported here: only tests call this, and only they may assume pytest

    try:
        if in_ci(env):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    except (pytest.fail.Exception, pytest.skip.Exception) as outcome:
        # usually called in an ``except`` block: the message says it all, a chained traceback adds noise
        raise outcome from None


def _start_container(data_dir: Path | None, start_timeout: float, env: Mapping[str, str]) -> ZooKeeperServer:
    if data_dir is not None:
        raise ZooKeeperUnavailableError("Only the local backend keeps a server's data in a given data_dir.")
    return start_container_server(start_timeout=start_timeout, env=env)


def _start_local(data_dir: Path | None, start_timeout: float, env: Mapping[str, str]) -> ZooKeeperServer:
    server = LocalZooKeeperServer(find_local_installation(env), data_dir=data_dir, start_timeout=start_timeout)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def _start_external(data_dir: Path | None, start_timeout: float, env: Mapping[str, str]) -> ZooKeeperServer:
    if data_dir is not None:
        raise ZooKeeperUnavailableError("Only the local backend keeps a server's data in a given data_dir.")
    hosts = env.get("AUTOGLM_ZK_HOSTS", "").strip()
    if not hosts:
        raise ZooKeeperUnavailableError("The external backend needs AUTOGLM_ZK_HOSTS, which is not set.")
    server = ExternalZooKeeperServer(hosts)
    server.start()
    return server


_STARTERS: dict[str, _Starter] = {
    "container": _start_container,
    "local": _start_local,
    "external": _start_external,
}


def start_zookeeper(
    backend: str | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    start_timeout: float = DEFAULT_START_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> ZooKeeperServer:
    """Start a ZooKeeper server for tests and return it once it serves (``srvr`` answers with a Mode).

    ``backend`` overrides ``AUTOGLM_ZK_BACKEND``. ``data_dir`` keeps the server's data in a folder of
    yours, which is then never deleted (only the local backend can, so ``auto`` goes straight to it);
    by default a temporary folder is used and removed by ``close()``.

    A backend that is not available here is skipped under ``auto``; when none is left,
    :class:`ZooKeeperUnavailableError` says why each failed (its ``reasons`` too, by backend) and how to install
    ZooKeeper. A backend that is available but breaks (java exits at start, no answer in ``start_timeout``
    seconds) raises :class:`ZooKeeperHarnessError` at once rather than hiding the fault behind the next backend.
    """
    env = os.environ if env is None else env
    order = backend_order(backend, env)
    folder = None if data_dir is None else Path(data_dir).resolve()  # relative to the caller's cwd, now
    reasons: dict[str, str] = {}
    for name in order:
        try:
            server = _STARTERS[name](folder, start_timeout, env)
        except ZooKeeperUnavailableError as exc:
            log.debug("ZooKeeper backend %s is not available: %s", name, exc)
            reasons[name] = exc.message
            continue
        log.info("ZooKeeper test server uses the %s backend at %s", name, server.hosts)
        return server
    said = " ".join(f"{name}: {reason}" for name, reason in reasons.items())
    raise ZooKeeperUnavailableError(
        f"No ZooKeeper backend could start (tried {', '.join(order)}). {said} {INSTALL_HINT}", reasons
    )
