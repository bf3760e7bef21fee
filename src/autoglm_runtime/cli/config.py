"""``autoglm-runtime config get|set|delete|dump|watch``: operators' view of a config subtree.

Reads go through :class:`~autoglm_runtime.config.ConfigClient`, so they decode with the same codec a server
uses and work for ``file://`` directories too. Writes go straight to ZooKeeper (or the directory), after
checking that the codec can decode the new value: a value no server could decode is refused here.
Credentials come from ``--auth-file`` or ``$AUTOGLM_ZK_AUTH`` (``--auth`` works too, but puts the password in
the process list); TLS options match ConfigClient's.

    autoglm-runtime config set models/llm/context_window 8192 --hosts 127.0.0.1:2181 --root /autoglm/prod
    autoglm-runtime config watch models/ --json --hosts 127.0.0.1:2181 --root /autoglm/prod
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoglm_runtime.cli import _output
from autoglm_runtime.errors import (
    EXIT_FINDINGS,
    EXIT_OK,
    ConfigAccessError,
    ConfigError,
    ConfigUnavailableError,
    UsageError,
)

if TYPE_CHECKING:
    from autoglm_runtime.config import ConfigChange, ConfigClient
    from autoglm_runtime.config.codec import Codec

__all__ = ["register"]

_KEY_HELP = "path relative to --root, such as models/llm/context_window"


def register(subparsers: Any) -> None:
    """Add the ``config`` command and its subcommands."""
    parser = subparsers.add_parser(
        "config",
        help="read, change and follow a config subtree in ZooKeeper (or a file:// directory)",
        description="Read, change and follow a config subtree. Keys are paths relative to --root.",
    )
    commands = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
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
        sub.add_argument("--timeout", type=_seconds, default=10.0, help="seconds to connect and load (default 10)")
        sub.add_argument("--json", action="store_true", help="print JSON")

    get = commands.add_parser("get", help="print one key's value")
    get.add_argument("key", help=_KEY_HELP)
    common(get)
    get.set_defaults(func=_get)

    put = commands.add_parser("set", help="set one key (created with its parents if missing)")
    put.add_argument("key", help=_KEY_HELP)
    put.add_argument("value", help="the value as the codec reads it (JSON text for --codec json)")
    common(put)
    put.set_defaults(func=_set)

    delete = commands.add_parser("delete", help="delete one key (and, with --recursive, its children)")
    delete.add_argument("key", help=_KEY_HELP)
    delete.add_argument("--recursive", action="store_true")
    common(delete)
    delete.set_defaults(func=_delete)

    dump = commands.add_parser("dump", help="print every key and value")
    common(dump)
    dump.set_defaults(func=_dump)

    watch = commands.add_parser("watch", help="print changes as they happen (until Ctrl-C)")
    watch.add_argument("prefix", nargs="?", default="", help="only keys under this prefix")
    watch.add_argument("--count", type=_count, help="exit after this many changes")
    watch.add_argument("--for", dest="duration", type=_seconds, help="exit after this many seconds")
    common(watch)
    watch.set_defaults(func=_watch)


def _seconds(text: str) -> float:
    """A duration option: a number of seconds above 0 (0, a negative or nan would end the command at once)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of changes, 1 or more")
    return value


def _target(args: argparse.Namespace) -> tuple[str, str]:
    if not args.hosts:
        raise UsageError("no ZooKeeper given: pass --hosts HOST:PORT (or file:///dir) or set AUTOGLM_ZK_HOSTS")
    if not args.root:
        raise UsageError("no config root given: pass --root /path or set AUTOGLM_ZK_ROOT")
    from autoglm_runtime.config.settings import check_hosts

    check_hosts(str(args.hosts))
    return str(args.hosts), str(args.root)


def _check_key(key: str) -> str:
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
def _client(args: argparse.Namespace) -> Iterator[ConfigClient]:
    from autoglm_runtime.config import ConfigClient, ZooKeeperConnection  # kazoo loads only when used

    hosts, root = _target(args)
    client = ConfigClient(hosts, root, codec=args.codec, auth=_auth(args), connection=ZooKeeperConnection(**_tls(args)))
    try:
        yield client
    finally:
        client.stop()


def _show(value: Any, codec: str) -> str:
    if codec == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


def _missing(key: str, root: str) -> None:
    # A finding, not a failure of the command: coded like every other error line, exit status 1.
    _output.report(ConfigError(f"key {key!r} does not exist under {root}"))


def _get(args: argparse.Namespace) -> int:
    key = _check_key(args.key)
    with _client(args) as client:
        client.start(timeout=args.timeout)
        snapshot = client.snapshot()
        if key not in snapshot:
            _missing(key, args.root)
            return EXIT_FINDINGS
        value = snapshot[key]
        version = client.version(key)
    if args.json:
        text = json.dumps({"key": key, "value": _jsonable(value), "version": version}, ensure_ascii=False)
    else:
        text = _show(value, args.codec)
    _output.write(f"{text}\n", f"the value of {key!r}")
    return EXIT_OK


def _jsonable(value: Any) -> Any:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _encode(codec: Codec, text: str, name: str) -> bytes:
    data = text.encode("utf-8")
    try:
        codec.decode(data)
    except ValueError as exc:
        # The usual slip: a bare word for the json codec, which reads JSON text (a string needs its quotes).
        hint = (
            f"; give JSON text (a string in quotes: {json.dumps(text[:40])!r}), or --codec text"
            if name == "json"
            else ""
        )
        raise UsageError(
            f"value {text[:40]!r} cannot be decoded by the codec, so servers would reject it: {exc}{hint}"
        ) from exc
    return data


def _set(args: argparse.Namespace) -> int:
    key = _check_key(args.key)
    hosts, root = _target(args)
    from autoglm_runtime.config.codec import resolve_codec

    data = _encode(resolve_codec(args.codec), args.value, args.codec)
    if hosts.startswith("file://"):
        path = _file_path(hosts, root, key)
        _check_file_key(path, key, hosts, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the file and rename, so a watching server never reads half a value.
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        version: int | None = None
    else:
        from kazoo.exceptions import NodeExistsError

        with _kazoo(args, hosts) as zk:
            full = f"{root}/{key}"
            try:
                zk.create(full, data, makepath=True)
                stat = zk.exists(full)
            except NodeExistsError:
                stat = zk.set(full, data)
            version = int(stat.mzxid) if stat is not None else None
    if args.json:
        _output.write(
            json.dumps({"key": key, "set": True, "version": version}) + "\n",
            f"the confirmation of setting {key!r} (the value is set)",
        )
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    key = _check_key(args.key)
    hosts, root = _target(args)
    if hosts.startswith("file://"):
        path = _file_path(hosts, root, key)
        if not path.exists():
            _missing(key, root)
            return EXIT_FINDINGS
        if path.is_dir():
            if not args.recursive:
                raise UsageError(f"key {key!r} has children: pass --recursive to delete them too")
            for child in sorted(path.rglob("*"), reverse=True):
                child.rmdir() if child.is_dir() else child.unlink()
            path.rmdir()
        else:
            path.unlink()
    else:
        from kazoo.exceptions import NoNodeError, NotEmptyError

        with _kazoo(args, hosts) as zk:
            try:
                zk.delete(f"{root}/{key}", recursive=args.recursive)
            except NoNodeError:
                _missing(key, root)
                return EXIT_FINDINGS
            except NotEmptyError as exc:
                raise UsageError(f"key {key!r} has children: pass --recursive to delete them too") from exc
    if args.json:
        _output.write(
            json.dumps({"key": key, "deleted": True}) + "\n",
            f"the confirmation of deleting {key!r} (the key is deleted)",
        )
    return EXIT_OK


def _dump(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.start(timeout=args.timeout)
        snapshot = client.snapshot()
    if args.json:
        text = json.dumps({k: _jsonable(snapshot[k]) for k in sorted(snapshot)}, ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(f"{key} = {_show(snapshot[key], args.codec)}\n" for key in sorted(snapshot))
    if text:
        _output.write(text, f"the {len(snapshot)} values under {args.root}")
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    changes: queue.Queue[ConfigChange] = queue.Queue()
    seen = 0
    deadline = time.monotonic() + args.duration if args.duration is not None else None
    watching = False

    def on_change(change: ConfigChange) -> None:
        # The initial load arrives as "added" events before start() returns: only later changes are news.
        if watching or change.kind != "added":
            changes.put(change)

    with _client(args) as client:
        # Subscribed before start(), so a change landing between the load and the subscription is not lost.
        client.subscribe(args.prefix, on_change)
        client.start(timeout=args.timeout)
        watching = True
        _output.note(f"watching {args.root}/{args.prefix} on {args.hosts}")
        while args.count is None or seen < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                change = changes.get(timeout=0.5 if remaining is None else min(0.5, remaining))
            except queue.Empty:
                continue
            seen += 1
            if args.json:
                record = {
                    "key": change.key,
                    "kind": change.kind,
                    "old": _jsonable(change.old),
                    "new": _jsonable(change.new),
                    "version": change.version,
                }
                text = json.dumps(record, ensure_ascii=False)
            else:
                text = f"{change.kind} {change.key} = {_show(change.new, args.codec)}"
            _output.write(f"{text}\n", f"the change of {change.key!r}")
    return EXIT_OK


def _file_path(hosts: str, root: str, key: str) -> Path:
    from autoglm_runtime.config._files import file_directory

    return file_directory(hosts, root) / key


def _check_file_key(path: Path, key: str, hosts: str, root: str) -> None:
    """In a ``file://`` store a key is a file: one with keys below it (a directory) cannot hold a value too."""
    if path.is_dir():
        raise UsageError(
            f"key {key!r} has keys below it in the file:// store ({hosts}, root {root}), so it cannot hold a value "
            "there: set a key below it, or delete them first (config delete --recursive)"
        )
    parts = key.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if (path.parents[len(parts) - depth - 1]).is_file():
            raise UsageError(
                f"key {key!r} cannot be created in the file:// store ({hosts}, root {root}): {parent!r} holds a "
                "value, and a key with a value cannot have keys below it there: delete it first, or choose another key"
            )


@contextmanager
def _kazoo(args: argparse.Namespace, hosts: str) -> Iterator[Any]:
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
            f"ZooKeeper at {hosts} could not be reached within {args.timeout:g} s: check --hosts"
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
