"""Where the example's config lives: the ZooKeeper given by --zk, a local ZooKeeper, or a file:// directory.

The local stores keep their data in the state directory, so the limits an operator set survive a restart;
the defaults are written only where a key is missing, or everywhere with ``reset``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from autoglm_runtime import ConfigClient
from autoglm_runtime.config import SyncTuning
from autoglm_runtime.errors import ConfigUnavailableError, UsageError
from autoglm_runtime.testing import ZooKeeperServer, ZooKeeperUnavailableError, start_zookeeper
from examples.model_server.model_limits import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_OUTPUT_TOKENS,
    DEFAULT_TOKENS_PER_SECOND,
    limits_prefix,
)

log = logging.getLogger("examples.model_server")


def defaults(models: Iterable[str]) -> dict[str, bytes]:
    """The default limits of each model, by config key (``limits/<model>/context_window`` ...)."""
    values = {
        "context_window": str(DEFAULT_LIMITS.context_window).encode(),
        "truncate_on_overflow": b"false",
        "truncation_side": json.dumps(DEFAULT_LIMITS.truncation_side).encode(),  # JSON text: "left"
        "max_output_tokens": str(DEFAULT_MAX_OUTPUT_TOKENS).encode(),
        "tokens_per_second": f"{DEFAULT_TOKENS_PER_SECOND:g}".encode(),
    }
    return {f"{limits_prefix(model)}{key}": value for model in models for key, value in values.items()}


@dataclass(frozen=True)
class ConfigStore:
    """The hosts string the server follows, what it is (for the banner), and where its data lives;
    ``zookeeper`` is the local ZooKeeper started for it, if one was."""

    hosts: str
    description: str
    data: str
    zookeeper: ZooKeeperServer | None = None


#: What gets a ZooKeeper to follow when none is installed: said with the reason none could start.
NO_ZOOKEEPER_HINT = (
    "to follow ZooKeeper, install it (Debian/Ubuntu: apt-get install zookeeper; elsewhere an Apache ZooKeeper "
    "tarball with ZOOKEEPER_HOME set to it) and start again, or give a running one with --zk HOSTS (or "
    "AUTOGLM_ZK_HOSTS)"
)


def _why_not(exc: ZooKeeperUnavailableError) -> str:
    """Why the local ZooKeeper could not start, without the test harness's advice (a Docker engine does
    nothing for this server: it only starts an installed ZooKeeper)."""
    reason = exc.reasons.get("local", exc.message).rstrip(".")
    # "The local backend ..." reads on inside the sentence as "the local backend ..."; "ZOOKEEPER_HOME" stays.
    return reason[:1].lower() + reason[1:] if reason[1:2].islower() else reason


@contextlib.contextmanager
def _harness_info_quiet() -> Iterator[None]:
    """The harness's INFO lines speak of a test server; the example says what its ZooKeeper is itself."""
    harness = logging.getLogger("autoglm_runtime.testing")
    level = harness.level
    harness.setLevel(logging.WARNING)
    try:
        yield
    finally:
        harness.setLevel(level)


def open_store(
    *, zk: str | None, choice: str, state: Path, stack: contextlib.ExitStack, env: Mapping[str, str] | None = None
) -> ConfigStore:
    """The config store to follow; a local ZooKeeper started here is stopped when ``stack`` closes.

    ``env`` is where to look for a ZooKeeper installation (default: the process environment).
    """
    if zk:
        return ConfigStore(zk, "ZooKeeper given by --zk / AUTOGLM_ZK_HOSTS", f"that ZooKeeper ({zk})")
    if choice in ("auto", "zookeeper"):
        data = state / "zookeeper"
        try:
            with _harness_info_quiet():
                server = stack.enter_context(start_zookeeper("local", data_dir=data, env=env))
        except ZooKeeperUnavailableError as exc:
            if choice == "zookeeper":
                raise UsageError(
                    f"--config-store zookeeper needs a local ZooKeeper, and none could start ({_why_not(exc)}): "
                    f"{NO_ZOOKEEPER_HINT}; or use --config-store file"
                ) from exc
            log.warning(
                "no local ZooKeeper could start (%s), so the config is a file:// directory, %s: %s; "
                "--config-store file chooses the directory without this warning",
                _why_not(exc),
                state / "config",
                NO_ZOOKEEPER_HINT,
            )
        else:
            log.info("a local ZooKeeper for this example serves at %s (data in %s)", server.hosts, data)
            what = "a local ZooKeeper for this example (it runs while the server does)"
            return ConfigStore(server.hosts, what, str(data), server)
    directory = state / "config"
    directory.mkdir(parents=True, exist_ok=True)
    why = "no ZooKeeper installed" if choice == "auto" else "--config-store file"
    return ConfigStore(f"file://{directory}", f"a file:// config directory ({why})", str(directory))


def seed(
    hosts: str,
    root: str,
    models: Iterable[str],
    *,
    reset: bool,
    timeout: float = 15,
    give_up_when_refused: bool = False,
) -> None:
    """Write the ``models``' default limits where they are missing (all of them with ``reset``); other values
    stay. A ZooKeeper not reached within ``timeout`` seconds is E0409 (:class:`ConfigUnavailableError`); with
    ``give_up_when_refused``, so is one whose every host refuses the connection, at once (a server with a
    snapshot to serve need not wait out the timeout for it).

    A connection lost in the middle resumes where it stopped once kazoo reconnects (each write is a
    create-if-absent, or a set with ``reset``: doing one twice is harmless); a write still not done ``timeout``
    seconds after its first try is E0409 too, naming how many of the values were written."""
    wanted = defaults(models)
    if hosts.startswith("file://"):
        base = Path(hosts[len("file://") :]) / root.strip("/")
        for key, value in wanted.items():
            path = base / key
            path.parent.mkdir(parents=True, exist_ok=True)
            if reset or not path.exists():
                tmp = path.with_name(f".{path.name}.tmp")  # the poller ignores dot files; the rename is atomic
                tmp.write_bytes(value)
                tmp.replace(path)
        return
    from kazoo.client import KazooClient
    from kazoo.exceptions import KazooException, NodeExistsError, OperationTimeoutError
    from kazoo.handlers.threading import KazooTimeoutError
    from kazoo.retry import KazooRetry, RetryFailedError

    from autoglm_runtime.config._kazoolog import OutageLog
    from autoglm_runtime.config.settings import all_refused

    if give_up_when_refused and all_refused(hosts):
        raise ConfigUnavailableError(
            f"ZooKeeper at {hosts} refuses connections (nothing listens there), so the default limits under {root} "
            "could not be written: check --zk and that ZooKeeper runs there"
        )

    # kazoo's own warnings (one per failed connection attempt) coded E0409 and said once, as the ConfigClient's.
    zk = KazooClient(hosts=hosts, logger=OutageLog(hosts), connection_retry={"max_tries": -1, "max_delay": 1.0})
    # A write cut by a connection loss (or a session expiry) is tried again until it answers, for up to timeout s.
    retry = KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0, deadline=timeout, ignore_expire=True)
    tries = [0]

    def put(node: str, value: bytes) -> None:
        tries[0] += 1
        # Waited for with a timeout: kazoo holds a request made while it reconnects until it is connected again.
        try:
            try:
                zk.create_async(node, value, makepath=True).get(timeout=timeout)
            except NodeExistsError:  # set before, or by the try the connection loss cut short
                if reset:
                    zk.set_async(node, value).get(timeout=timeout)
        except KazooTimeoutError as exc:
            raise OperationTimeoutError(f"no answer within {timeout:g} s") from exc

    written = 0
    try:
        zk.start(timeout=timeout)
        for key, value in wanted.items():
            retry(put, f"{root}/{key}", value)
            written += 1
        if tries[0] > len(wanted):
            log.info(
                "the connection to ZooKeeper at %s was lost while the default limits were written; resumed and "
                "wrote all %d",
                hosts,
                len(wanted),
                extra={"hosts": hosts, "root": root, "tries": tries[0]},
            )
    except RetryFailedError as exc:
        raise ConfigUnavailableError(
            f"ZooKeeper at {hosts} lost the connection while the default limits under {root} were written and did "
            f"not answer again within {timeout:g} s ({written} of {len(wanted)} confirmed written): check --zk and "
            "that ZooKeeper runs there"
        ) from exc
    except KazooTimeoutError as exc:
        raise ConfigUnavailableError(
            f"ZooKeeper at {hosts} could not be reached within {timeout:g} s to write the default limits under "
            f"{root}: check --zk and that ZooKeeper runs there"
        ) from exc
    except KazooException as exc:
        raise ConfigUnavailableError(
            f"ZooKeeper at {hosts} could not take the default limits under {root} ({type(exc).__name__}): "
            "check --zk and that the server runs"
        ) from exc
    finally:
        zk.stop()
        zk.close()


def start_config(store: ConfigStore, root: str, models: Iterable[str], *, state: Path, reset: bool) -> ConfigClient:
    """Seed the defaults, then start following the store; the caller stops the client.

    A ZooKeeper store keeps a snapshot in ``state`` (``config.snapshot``): a restart while ZooKeeper is down (or
    unreachable) serves that last-known-good config, stale and disconnected in ``/health``, and catches up once
    ZooKeeper answers (the defaults are not written then: the snapshot came from a start that wrote them). The
    first start has no snapshot, so there it is E0409, as a ``--reset`` that cannot write is.
    """
    names = list(models)
    snapshot = None if store.hosts.startswith("file://") else state / "config.snapshot"
    fallback = snapshot is not None and snapshot.exists() and not reset
    timeout = 15.0
    try:
        seed(store.hosts, root, names, reset=reset, give_up_when_refused=fallback)
    except ConfigUnavailableError as exc:
        from kazoo.exceptions import KazooException
        from kazoo.retry import RetryFailedError

        # Only a ZooKeeper that cannot be reached is waited out on the snapshot: one that answered and refused
        # the write (its KazooException is the cause) is an error to fix now. A connection that went away in the
        # middle and did not come back (RetryFailedError) is one that cannot be reached.
        refused = isinstance(exc.__cause__, KazooException) and not isinstance(exc.__cause__, RetryFailedError)
        if not fallback or refused:
            raise
        log.warning(
            "%s; serving the last-known-good config from the snapshot %s until ZooKeeper answers",
            exc.message,
            snapshot,
            extra={"error_code": "E0409", "hosts": store.hosts, "root": root, "path": str(snapshot)},
        )
        timeout = 2.0  # ZooKeeper was just given its chance; the client keeps connecting in the background
    config = ConfigClient(store.hosts, root, snapshot_path=snapshot, tuning=SyncTuning(poll_interval=0.2))
    config.start(timeout=timeout)
    return config
