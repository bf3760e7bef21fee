"""How a :class:`~autoglm_runtime.config.ConfigClient` connects and paces itself, grouped in two settings objects.

:class:`ZooKeeperConnection` holds what kazoo's ``KazooClient`` needs (session timeout, reconnect pacing,
credentials, TLS); :class:`SyncTuning` holds how hard the client works (reconciler rate, batch sizes,
snapshot debounce). Both are frozen, so one instance can be shared by every client of a process::

    from autoglm_runtime.config import ConfigClient, SyncTuning, ZooKeeperConnection

    tls = ZooKeeperConnection(use_ssl=True, ca="/etc/zk/ca.pem", certfile="/etc/zk/client.pem")
    config = ConfigClient("zk1:2281", "/autoglm/prod", connection=tls, tuning=SyncTuning(reconcile_rate=50))

A test or an application that needs its own ``KazooClient`` (to choose its handler, watch its states or
expire its session) passes ``client_factory`` instead of ``connection``; see :class:`ConfigClient`. Each client
the factory returns needs a handler of its own: ``KazooClient.stop()`` stops its handler too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from autoglm_runtime.errors import UsageError

if TYPE_CHECKING:
    from kazoo.client import KazooClient

__all__ = ["Auth", "SyncTuning", "ZooKeeperConnection", "normalize_auth"]

#: ``("digest", "user:password")`` or a sequence of ``(scheme, credential)`` pairs.
Auth = tuple[str, str] | Sequence[tuple[str, str]]


def normalize_auth(auth: Auth | None) -> list[tuple[str, str]]:
    """``auth`` as the list of ``(scheme, credential)`` pairs kazoo takes; a coded usage error otherwise."""
    if auth is None:
        return []
    if isinstance(auth, str):
        raise UsageError(
            'auth must be ("digest", "user:password") or a list of (scheme, credential) pairs, not a string'
        )
    if len(auth) == 2 and all(isinstance(part, str) for part in auth):
        return [(str(auth[0]), str(auth[1]))]
    pairs = [tuple(item) for item in auth]
    if not all(len(pair) == 2 and all(isinstance(p, str) for p in pair) for pair in pairs):
        raise UsageError('auth must be ("digest", "user:password") or a list of (scheme, credential) pairs')
    return [(str(p[0]), str(p[1])) for p in pairs]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_hosts(hosts: str) -> None:
    """Refuse a connect string kazoo cannot parse (a bad port, an empty host): kazoo would raise a bare
    ``ValueError`` only when the client starts."""
    if not hosts:
        raise UsageError("config hosts must not be empty: give 'host:port[,host:port...]' or 'file:///dir'")
    if hosts.startswith("file://"):
        return
    from kazoo.hosts import collect_hosts

    try:
        collect_hosts(hosts)
    except ValueError as exc:
        raise UsageError(
            f"config hosts {hosts!r} are not a ZooKeeper connect string ({exc}): give 'host:port[,host:port...]' "
            "or 'file:///dir'"
        ) from exc


def check_root(root: str) -> str:
    """``root`` if it names a znode (absolute, no empty part, no final '/'); a coded usage error otherwise."""
    if not root.startswith("/") or "//" in root or (root != "/" and root.endswith("/")):
        # A root that is absolute already was told to be absolute: say what is wrong with it.
        fix = (
            "; drop the final '/'"
            if root.startswith("/") and root.endswith("/") and "//" not in root
            else "; an empty part ('//') names no znode"
            if "//" in root
            else ""
        )
        raise UsageError(f"config root {root!r} must be an absolute ZooKeeper path such as '/autoglm/prod'{fix}")
    return root


def _positive(name: str, value: object) -> None:
    if not _number(name, value) > 0:
        raise UsageError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class ZooKeeperConnection:
    """Session, reconnect pacing, credentials and TLS of the client's ZooKeeper connection.

    ``session_timeout`` seconds is what the client asks the ensemble for; ``reconnect_max_delay`` caps the
    backoff between connection attempts (the client retries for as long as it runs: ``health()`` says how
    stale it is meanwhile). ``auth`` pairs are sent on every (re)connect. The TLS options are kazoo's
    (``use_ssl``, ``ca``, ``certfile``, ``keyfile``, ``keyfile_password``, ``verify_certs``,
    ``check_hostname``). ``auth`` here and the ``auth`` argument of ``ConfigClient`` add up.
    """

    session_timeout: float = 10.0
    reconnect_max_delay: float = 2.0
    auth: Auth | None = None
    use_ssl: bool = False
    ca: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = field(default=None, repr=False)
    verify_certs: bool = True
    check_hostname: bool = False

    def __post_init__(self) -> None:
        _positive("session_timeout", self.session_timeout)
        _positive("reconnect_max_delay", self.reconnect_max_delay)
        object.__setattr__(self, "auth", tuple(normalize_auth(self.auth)))

    def kazoo_client(self, hosts: str, auth: Auth | None = None) -> KazooClient:
        """A new, unstarted ``KazooClient`` for ``hosts`` as a ConfigClient uses it: it retries forever."""
        from kazoo.client import KazooClient
        from kazoo.retry import KazooRetry

        from autoglm_runtime.config._kazoolog import OutageLog

        retry = KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_jitter=0.3, max_delay=self.reconnect_max_delay)
        options: dict[str, Any] = {
            "auth_data": [*normalize_auth(self.auth), *normalize_auth(auth)],
            "use_ssl": self.use_ssl,
            "ca": self.ca,
            "certfile": self.certfile,
            "keyfile": self.keyfile,
            "keyfile_password": self.keyfile_password,
            "verify_certs": self.verify_certs,
            "check_hostname": self.check_hostname,
        }
        # kazoo logs every failed attempt while ZooKeeper is down: coded and bounded (see _kazoolog).
        options["logger"] = OutageLog(hosts)
        return KazooClient(hosts=hosts, timeout=self.session_timeout, connection_retry=retry, **options)


@dataclass(frozen=True)
class SyncTuning:
    """How hard a client works to stay in sync; the defaults suit a fleet (see ``docs/operations.md``).

    ``reconcile_rate`` (reads/s), ``reconcile_jitter`` (s) and ``reconcile_interval`` (s) pace the TTL
    safety net; ``batch_size`` is the reads per multiRead request or pipelined batch; ``bulk_reads`` loads
    and resyncs with multiRead + setWatches (ZooKeeper 3.6+, falls back by itself); ``snapshot_debounce``
    (s) delays snapshot writes; ``poll_interval`` (s) is how often the ``file://`` backend looks;
    ``watch_mode`` is ``"auto"`` (one persistent recursive watch per client where the server supports it,
    ZooKeeper 3.6+, else a data and a child watch per znode) or ``"per_node"`` (always the latter).
    """

    reconcile_rate: float = 50.0
    reconcile_jitter: float = 1.0
    reconcile_interval: float = 1.0
    snapshot_debounce: float = 1.0
    poll_interval: float = 1.0
    batch_size: int = 500
    bulk_reads: bool = True
    watch_mode: Literal["auto", "per_node"] = "auto"

    def __post_init__(self) -> None:
        if not _number("reconcile_rate", self.reconcile_rate) > 0:
            raise UsageError(f"reconcile_rate must be a positive number of reads per second, got {self.reconcile_rate}")
        _positive("reconcile_interval", self.reconcile_interval)
        _positive("poll_interval", self.poll_interval)
        if (
            _number("reconcile_jitter", self.reconcile_jitter) < 0
            or _number("snapshot_debounce", self.snapshot_debounce) < 0
        ):
            raise UsageError("reconcile_jitter and snapshot_debounce must not be negative")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size!r}")
        if self.watch_mode not in ("auto", "per_node"):
            raise UsageError(f"watch_mode must be 'auto' or 'per_node', got {self.watch_mode!r}")


def all_refused(hosts: str, *, timeout: float = 0.5) -> bool:
    """True if every host of the connect string ``hosts`` refuses a TCP connection right now (nothing
    listens there); a host that answers, times out or cannot be resolved counts as not refusing."""
    import socket

    addresses = [h.strip() for h in hosts.split("/", 1)[0].split(",") if h.strip()]
    for address in addresses:
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "2181")
        try:
            with socket.create_connection((host.strip("[]") or address, int(port)), timeout=timeout):
                return False
        except ConnectionRefusedError:
            continue
        except (OSError, ValueError):
            return False
    return bool(addresses)


def session_factory(
    hosts: str, connection: ZooKeeperConnection, auth: Auth | None, client_factory: Callable[[], KazooClient] | None
) -> Callable[[], KazooClient]:
    """What makes a ConfigClient's sessions (its own, then the short catch-up ones): ``client_factory``'s clients,
    checked, or clients built from ``connection`` and ``auth``.

    A catch-up client sharing the handler of the first (the ConfigClient's own session) is refused: kazoo's
    ``KazooClient.stop()`` stops the handler as well, so closing the catch-up session would stop the main one's
    callbacks and connection for good."""
    if client_factory is None:
        return lambda: connection.kazoo_client(hosts, auth)
    made: list[KazooClient] = []  # the first client made: the ConfigClient's own session

    def new_session() -> KazooClient:
        client = _made_client(client_factory)
        if not made:
            made.append(client)
        elif client.handler is made[0].handler:
            raise UsageError(
                f"client_factory returned a KazooClient sharing its handler ({type(client.handler).__name__} at "
                f"{id(client.handler):#x}) with the config client's own session: KazooClient.stop() stops its "
                "handler, so closing the short catch-up session would stop the config client's too; create a new "
                "handler for each client inside the factory (or leave handler= out)"
            )
        return client

    return new_session


def _made_client(factory: Callable[[], KazooClient]) -> KazooClient:
    """The factory's client, checked: a ConfigClient starts and owns it, so it must be a new, unstarted one."""
    from kazoo.client import KazooClient

    client = factory()
    if not isinstance(client, KazooClient):
        raise UsageError(f"client_factory must return a kazoo KazooClient, got {type(client).__name__}")
    if client.connected:
        raise UsageError("client_factory returned a started KazooClient: return a new one; the ConfigClient starts it")
    return client
