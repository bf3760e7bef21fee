"""Pieces every ZooKeeper harness backend shares: errors, free ports, four-letter words, zoo.cfg text."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from autoglm_runtime.errors import AutoGLMRuntimeError

__all__ = [
    "INSTALL_HINT",
    "QuorumPeer",
    "ZooKeeperHarnessError",
    "ZooKeeperUnavailableError",
    "format_hosts",
    "four_letter_word",
    "free_port",
    "parse_mode",
    "render_config",
    "wait_for_mode",
]

#: Said whenever no backend could start, so the reader knows how to get a ZooKeeper.
INSTALL_HINT = (
    "Install ZooKeeper with 'apt-get install zookeeper' (Debian/Ubuntu), or unpack an Apache ZooKeeper "
    "tarball and set ZOOKEEPER_HOME to it, or point AUTOGLM_ZK_HOSTS at a running server, or start a Docker "
    "engine so the 'zookeeper' image can be used."
)


class ZooKeeperHarnessError(AutoGLMRuntimeError, RuntimeError):
    """The test harness could not start, stop or control a ZooKeeper server (E0002).

    It subclasses ``RuntimeError`` too, so a test runner reports it as an error of the test set-up.
    """

    code = "E0002"


class ZooKeeperUnavailableError(ZooKeeperHarnessError):
    """No backend can provide a ZooKeeper server on this machine; the message says how to install one.

    ``reasons`` says why each backend tried could not, by backend name, without the advice: a program that
    starts ZooKeeper for another purpose than tests (the example server) gives its own.
    """

    def __init__(self, message: str, reasons: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons: dict[str, str] = dict(reasons or {})


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it; callers retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def format_hosts(addresses: Sequence[tuple[str, int]]) -> str:
    """A ZooKeeper connect string (``"h1:p1,h2:p2"``) for ``(host, port)`` pairs; IPv6 hosts get brackets."""
    parts = []
    for host, port in addresses:
        shown = f"[{host}]" if ":" in host else host
        parts.append(f"{shown}:{port}")
    return ",".join(parts)


def four_letter_word(host: str, port: int, word: str, timeout: float = 1.0) -> str | None:
    """Send a four-letter word (``srvr``, ``ruok`` ...) and return the reply, or None if the server did not answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(word.encode("ascii"))
            chunks = []
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return None
    return b"".join(chunks).decode("utf-8", "replace")


def parse_mode(reply: str | None) -> str | None:
    """The ``Mode:`` of a ``srvr`` reply (``standalone``, ``leader``, ``follower`` ...), or None if there is none.

    A server that is up but not serving (no quorum yet) answers without a Mode line.

    >>> parse_mode("Zookeeper version: 3.8.0\\nMode: leader\\nNode count: 5\\n")
    'leader'
    """
    if not reply:
        return None
    for line in reply.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Mode":
            return value.strip() or None
    return None


def wait_for_mode(
    host: str,
    port: int,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    timer: Callable[[], float] = time.monotonic,
    interval: float = 0.05,
    reply_timeout: float = 2.0,
) -> str | None:
    """Poll ``srvr`` until the server reports a Mode and return it; None at the deadline or when ``alive()`` fails."""
    deadline = timer() + timeout
    while True:
        mode = parse_mode(four_letter_word(host, port, "srvr", timeout=reply_timeout))
        if mode is not None:
            return mode
        if not alive() or timer() >= deadline:
            return None
        time.sleep(interval)  # polling a server that is still starting, with a deadline


@dataclass(frozen=True)
class QuorumPeer:
    """One member line of an ensemble's config: ``server.<myid>=<host>:<quorum_port>:<election_port>``."""

    myid: int
    host: str
    quorum_port: int
    election_port: int


def render_config(
    *,
    data_dir: str,
    client_port: int,
    client_host: str = "127.0.0.1",
    tick_time_ms: int = 500,
    min_session_timeout_ms: int = 1000,
    max_session_timeout_ms: int = 60000,
    peers: Sequence[QuorumPeer] = (),
    extra: Mapping[str, str] | None = None,
) -> str:
    """The text of a zoo.cfg for a test server: small tick, admin server off, all four-letter words allowed.

    ``minSessionTimeout`` is explicit so tests may ask for short sessions; ``forceSync=no`` is safe here
    because killing the process does not lose the page cache, only a machine crash would.
    """
    lines = {
        "tickTime": str(tick_time_ms),
        "initLimit": "10",
        "syncLimit": "5",
        "dataDir": data_dir,
        "clientPort": str(client_port),
        "clientPortAddress": client_host,
        "minSessionTimeout": str(min_session_timeout_ms),
        "maxSessionTimeout": str(max_session_timeout_ms),
        "admin.enableServer": "false",
        "4lw.commands.whitelist": "*",
        "forceSync": "no",
        "maxClientCnxns": "0",
    }
    for peer in peers:
        lines[f"server.{peer.myid}"] = f"{peer.host}:{peer.quorum_port}:{peer.election_port}"
    if extra:
        lines.update(extra)
    return "".join(f"{key}={value}\n" for key, value in lines.items())
