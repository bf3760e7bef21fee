"""``autoglm-runtime config get|set|delete|dump|watch``: operators' view of a config subtree.

Reads go through :class:`~autoglm_runtime.config.ConfigClient`, so they decode with the same codec a server
uses and work for ``file://`` directories too. Writes go straight to ZooKeeper (or the directory), after
checking that the codec can decode the new value: a value no server could decode is refused here.
Credentials come from ``--auth-file`` or ``$AUTOGLM_ZK_AUTH`` (``--auth`` works too, but puts the password in
the process list); TLS options match ConfigClient's. The options and the store they name are in
:mod:`._config_store`, ``watch`` in :mod:`._config_watch`.

    autoglm-runtime config set models/llm/context_window 8192 --hosts 127.0.0.1:2181 --root /autoglm/prod
    autoglm-runtime config watch models/ --json --hosts 127.0.0.1:2181 --root /autoglm/prod
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoglm_runtime.cli import _output
from autoglm_runtime.cli._config_store import (
    add_common,
    check_key,
    client,
    decoded,
    denied_error,
    jsonable,
    kazoo,
    load,
    missing,
    seconds,
    show,
    target,
)
from autoglm_runtime.cli._config_watch import watch
from autoglm_runtime.errors import EXIT_FINDINGS, EXIT_OK, EXIT_PARTIAL, UsageError

if TYPE_CHECKING:
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

    get = commands.add_parser("get", help="print one key's value")
    get.add_argument("key", help=_KEY_HELP)
    add_common(get)
    get.set_defaults(func=_get)

    put = commands.add_parser("set", help="set one key (created with its parents if missing)")
    put.add_argument("key", help=_KEY_HELP)
    put.add_argument("value", help="the value as the codec reads it (JSON text for --codec json)")
    add_common(put)
    put.set_defaults(func=_set)

    delete = commands.add_parser("delete", help="delete one key (and, with --recursive, its children)")
    delete.add_argument("key", help=_KEY_HELP)
    delete.add_argument("--recursive", action="store_true", help="also delete the keys below it")
    add_common(delete)
    delete.set_defaults(func=_delete)

    dump = commands.add_parser("dump", help="print every key and value")
    add_common(dump)
    dump.set_defaults(func=_dump)

    follow = commands.add_parser("watch", help="print changes as they happen (until Ctrl-C)")
    follow.add_argument("prefix", nargs="?", default="", help="only keys under this prefix")
    follow.add_argument("--count", type=_count, help="exit after this many changes")
    follow.add_argument("--for", dest="duration", type=seconds, help="exit after this many seconds")
    add_common(follow)
    follow.set_defaults(func=watch)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of changes, 1 or more")
    return value


def _get(args: argparse.Namespace) -> int:
    key = check_key(args.key)
    with client(args, raw=True) as config:
        denied = load(config, args)
        raw = config.snapshot()
        if key not in raw:
            # Not loaded because ZooKeeper refused it (or a key above it) is not "missing".
            for refused in denied:
                if not refused or key == refused or key.startswith(f"{refused}/"):
                    raise denied_error(args, refused)
            missing(key, args.root)
            return EXIT_FINDINGS
        values, undecodable = decoded({key: raw[key]}, args)
        if undecodable:  # there, but no server can read it: not "missing" either
            _output.report(undecodable[key])
            return EXIT_FINDINGS
        value = values[key]
        version = config.version(key)
    if args.json:
        text = json.dumps({"key": key, "value": jsonable(value), "version": version}, ensure_ascii=False)
    else:
        text = show(value, args.codec)
    _output.write(f"{text}\n", f"the value of {key!r}")
    return EXIT_OK


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
    key = check_key(args.key)
    hosts, root = target(args)
    from autoglm_runtime.config.codec import resolve_codec

    data = _encode(resolve_codec(args.codec), args.value, args.codec)
    if hosts.startswith("file://"):
        path = _file_path(hosts, root, key)
        _check_file_key(path, key, hosts, root)
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the file and rename, so a watching server never reads half a value.
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        version: int | None = None
    else:
        from kazoo.exceptions import NodeExistsError

        with kazoo(args, hosts) as zk:
            full = f"{root}/{key}"
            try:
                zk.create(full, data, makepath=True)
                stat = zk.exists(full)
                created = True
            except NodeExistsError:
                stat = zk.set(full, data)
                created = False
            version = int(stat.mzxid) if stat is not None else None
    if args.json:
        text = json.dumps({"key": key, "set": True, "version": version}) + "\n"
    else:
        # Not the value, which may be a secret; "new key" shows a mistyped key that was created, not changed.
        text = f"set {key} under {root} at {hosts}{' (new key)' if created else ''}\n"
    _output.write(text, f"the confirmation of setting {key!r} (the value is set)")
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    key = check_key(args.key)
    hosts, root = target(args)
    if hosts.startswith("file://"):
        path = _file_path(hosts, root, key)
        if not path.exists():
            missing(key, root)
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

        with kazoo(args, hosts) as zk:
            try:
                zk.delete(f"{root}/{key}", recursive=args.recursive)
            except NoNodeError:
                missing(key, root)
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
    """Every key it may read, then one line on stderr per key ZooKeeper refused (exit status 3, partial)."""
    with client(args, raw=True) as config:
        denied = load(config, args)
        snapshot, undecodable = decoded(config.snapshot(), args)
    if args.json:
        text = json.dumps({k: jsonable(snapshot[k]) for k in sorted(snapshot)}, ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(f"{key} = {show(snapshot[key], args.codec)}\n" for key in sorted(snapshot))
    if text:
        _output.write(text, f"the {len(snapshot)} values under {args.root}")
    for key in denied:
        _output.report(denied_error(args, key))
    for key in sorted(undecodable):
        _output.report(undecodable[key])
    return EXIT_PARTIAL if denied or undecodable else EXIT_OK


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
