"""What every ``autoglm-runtime config`` subcommand shares: its options, the store they name, how values are shown.

``--hosts``/``--root``/``--auth``/``--auth-file``/TLS become a :class:`~autoglm_runtime.config.ConfigClient` (reads)
or a ``KazooClient`` (writes); a load that ZooKeeper partly denies is reported with the command's own options
(``--auth-file``), not the SDK's ``auth=``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoglm_runtime.cli import _output
from autoglm_runtime.errors import ConfigAccessError, ConfigError, ConfigUnavailableError, UsageError

if TYPE_CHECKING:
    from autoglm_runtime.config import ConfigClient

__all__ = [
    "add_common",
    "check_key",
    "client",
    "decoded",
    "denied_error",
    "jsonable",
    "kazoo",
    "load",
    "missing",
    "seconds",
    "show",
    "target",
]


def add_common(sub: argparse.ArgumentParser) -> None:
    """The options every subcommand takes: where the store is, how to reach it, how to print."""
    sub.add_argument(
        "--hosts",
        default=os.environ.get("AUTOGLM_ZK_HOSTS"),
        help="ZooKeeper connect string or file:///dir (default: $AUTOGLM_ZK_HOSTS)",
    )
    sub.add_argument(
        "--root",
        default=os.environ.get("AUTOGLM_ZK_ROOT"),
        help="absolute path of the config subtree (default: $AUTOGLM_ZK_ROOT)",
    )
    sub.add_argument(
        "--codec",
        default="json",
        choices=["json", "text", "bytes"],
        help="how values are written: JSON text (default), UTF-8 text or raw bytes; as the servers read them",
    )
    sub.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        default=os.environ.get("AUTOGLM_ZK_AUTH"),
        help="digest credentials (default: $AUTOGLM_ZK_AUTH; prefer --auth-file)",
    )
    sub.add_argument("--auth-file", type=Path, help="file holding USER:PASSWORD for digest auth")
    sub.add_argument("--use-ssl", action="store_true", help="connect to ZooKeeper over TLS")
    sub.add_argument("--ca", help="CA certificate file for TLS")
    sub.add_argument("--certfile", help="client certificate file for TLS")
    sub.add_argument("--keyfile", help="client key file for TLS")
    sub.add_argument("--timeout", type=seconds, default=10.0, help="seconds to connect and load (default 10)")
    sub.add_argument("--json", action="store_true", help="print JSON")


def seconds(text: str) -> float:
    """A duration option: a number of seconds above 0 (0, a negative or nan would end the command at once)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def target(args: argparse.Namespace) -> tuple[str, str]:
    """``(hosts, root)`` from the options (or the environment), checked."""
    if not args.hosts:
        raise UsageError("no ZooKeeper given: pass --hosts HOST:PORT (or file:///dir) or set AUTOGLM_ZK_HOSTS")
    if not args.root:
        raise UsageError("no config root given: pass --root /path or set AUTOGLM_ZK_ROOT")
    from autoglm_runtime.config.settings import check_hosts, check_root

    check_hosts(str(args.hosts))
    # set and delete write beside the client: a root the servers (and get) refuse must not be written either
    return str(args.hosts), check_root(str(args.root))


def check_key(key: str) -> str:
    """``key`` if it is a path relative to the root; a usage error otherwise."""
    if not key or key.startswith("/") or key.endswith("/") or "//" in key or ".." in key.split("/"):
        raise UsageError(f"key {key!r} must be a path relative to the root, such as 'models/llm/context_window'")
    return key


def _auth(args: argparse.Namespace) -> tuple[str, str] | None:
    credential = args.auth
    if args.auth_file is not None:
        try:
            credential = args.auth_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read --auth-file {args.auth_file}: {exc.strerror}") from exc
    if not credential:
        return None
    if ":" not in credential:
        raise UsageError("digest credentials must look like USER:PASSWORD")
    return ("digest", str(credential))


def _tls(args: argparse.Namespace) -> dict[str, Any]:
    return {"use_ssl": args.use_ssl, "ca": args.ca, "certfile": args.certfile, "keyfile": args.keyfile}


@contextmanager
def client(args: argparse.Namespace, *, raw: bool = False) -> Iterator[ConfigClient]:
    """A ConfigClient on the store the options name (not started), stopped at the end.

    ``raw``: it keeps every znode's data as bytes (the ``bytes`` codec), for :func:`decoded` to decode with
    ``--codec``: a client with that codec leaves out data it cannot decode, as if the key did not exist.
    """
    from autoglm_runtime.config import ConfigClient, ZooKeeperConnection  # kazoo loads only when used

    hosts, root = target(args)
    codec = "bytes" if raw else args.codec
    config = ConfigClient(hosts, root, codec=codec, auth=_auth(args), connection=ZooKeeperConnection(**_tls(args)))
    try:
        yield config
    finally:
        config.stop()


def load(config: ConfigClient, args: argparse.Namespace, *, follow: bool = False) -> tuple[str, ...]:
    """Start ``config``; returns the keys ZooKeeper refused to read (``""``: the root itself), sorted.

    The keys it could read are loaded all the same (``config.snapshot()``); unless ``follow``, the client no
    longer follows the tree. A root ZooKeeper says does not exist (a typo in ``--root``) is an error, not an empty
    tree; with ``follow`` (``watch``, which prints its keys once it is created) a warning on stderr.
    """
    try:
        config.start(timeout=args.timeout, allow_denied=follow)
    except ConfigAccessError as exc:
        if not exc.paths:
            raise
        paths = exc.paths
    except ConfigUnavailableError as exc:
        if config.hosts.startswith("file://"):
            raise
        # The SDK's advice (a snapshot_path) is no option of this command: name the ones it has.
        raise ConfigUnavailableError(
            f"ZooKeeper at {config.hosts} could not be reached (or root {config.root} loaded) within "
            f"{args.timeout:g} s: {_UNREACHABLE_HINT}"
        ) from exc
    else:
        paths = config.denied
        if config.health()["root_missing"]:
            problem = f"config root {config.root} does not exist on ZooKeeper at {config.hosts}"
            if not follow:
                raise ConfigError(
                    f"{problem}: check --root (a server following it serves no keys), or create it by setting a "
                    "key under it with config set"
                )
            _output.note(
                f"autoglm-runtime: warning E0409: {problem}: check --root; its keys are printed once it is created"
            )
    prefix = "/" if config.root == "/" else f"{config.root}/"
    return tuple(sorted({p[len(prefix) :] if p.startswith(prefix) else "" for p in paths}))


_UNREACHABLE_HINT = "check --hosts and that ZooKeeper runs there, or give a longer --timeout"


def decoded(raw: Mapping[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, ConfigError]]:
    """The values of a raw (bytes) snapshot decoded with ``--codec``, and the error for each key it cannot decode
    (servers reading with that codec refuse such data and keep their last good value, or the default)."""
    from autoglm_runtime.config.codec import decode_value, resolve_codec

    codec = resolve_codec(args.codec)
    values: dict[str, Any] = {}
    errors: dict[str, ConfigError] = {}
    for key, data in raw.items():
        try:
            values[key] = decode_value(codec, data)
        except Exception as exc:  # a codec may raise anything (RecursionError from deep JSON): still undecodable
            other = "--codec text" if args.codec == "json" and _utf8(data) else "--codec bytes"
            errors[key] = ConfigError(
                f"key {key!r} under {args.root} holds data the {args.codec} codec cannot decode ({exc}): servers "
                f"reading it with that codec keep their last good value (or their default); fix it with config set, "
                f"or read it as it is with {other}"
            )
    return values, errors


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def denied_error(args: argparse.Namespace, key: str) -> ConfigAccessError:
    """The error for ``key`` (from :func:`load`), naming this command's credential options."""
    what = f"the root {args.root} itself" if not key else f"key {key!r} under {args.root} (and any key below it)"
    return ConfigAccessError(
        f"ZooKeeper at {args.hosts} denied reading {what}: give --auth-file (or --auth) with credentials that may "
        "read it, or check its ACL"
    )


def show(value: Any, codec: str) -> str:
    """``value`` as the text output prints it."""
    if codec == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


def jsonable(value: Any) -> Any:
    """``value`` as the ``--json`` output prints it (bytes as text)."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def missing(key: str, root: str) -> None:
    """Report a key that does not exist."""
    # A finding, not a failure of the command: coded like every other error line, exit status 1.
    _output.report(ConfigError(f"key {key!r} does not exist under {root}"))


@contextmanager
def kazoo(args: argparse.Namespace, hosts: str) -> Iterator[Any]:
    """A started ``KazooClient`` for a write; ZooKeeper's refusals become coded errors."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import KazooException, NoAuthError
    from kazoo.handlers.threading import KazooTimeoutError

    auth = _auth(args)
    from autoglm_runtime.config._kazoolog import OutageLog

    # kazoo's own lines (one per failed connection attempt) would reach stderr through logging's last resort.
    zk = KazooClient(hosts=hosts, auth_data=[auth] if auth else None, logger=OutageLog(hosts), **_tls(args))
    try:
        zk.start(timeout=args.timeout)
    except KazooTimeoutError as exc:
        zk.close()
        raise ConfigUnavailableError(
            f"ZooKeeper at {hosts} could not be reached within {args.timeout:g} s: {_UNREACHABLE_HINT}"
        ) from exc
    try:
        yield zk
    except NoAuthError as exc:
        raise ConfigAccessError(
            f"ZooKeeper at {hosts} denied writing under {args.root}: give --auth-file (or --auth) with credentials "
            "that have write access"
        ) from exc
    except (KazooException, KazooTimeoutError) as exc:
        raise ConfigUnavailableError(
            f"ZooKeeper at {hosts} failed the request under {args.root} ({type(exc).__name__}): check the "
            "connection and try again"
        ) from exc
    finally:
        zk.stop()
        zk.close()
