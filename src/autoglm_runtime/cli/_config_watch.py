"""``autoglm-runtime config watch``: print each change as it happens, and say when the watch stops following.

The loop collects what happened (changes, from a listener; the client's ``health()``, looked at before each change
is printed and at least every half second), decides (:func:`follow`, a pure function of what the operator was told
so far and the health seen now) and executes (prints). When the client stops following ZooKeeper (the connection
is lost, the session expires, a resync is pending) one coded line on stderr says so, and one more when it follows
again, reconnected and resynced, with how: never a line per reconnection attempt. Those lines go to stderr in
``--json`` mode too, so standard output holds only change records.
"""

from __future__ import annotations

import argparse
import enum
import json
import queue
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from autoglm_runtime.cli import _output
from autoglm_runtime.cli._config_store import client, decoded, denied_error, jsonable, load, show
from autoglm_runtime.errors import EXIT_OK, EXIT_PARTIAL

if TYPE_CHECKING:
    from autoglm_runtime.config import ConfigChange, ConfigHealth

__all__ = ["Link", "Notice", "Seen", "describe", "follow", "watch"]

#: Resyncs that follow a connection problem (``root_recreated`` is a change of the tree, printed as changes).
_CONNECTION_RESYNCS = ("reconnect", "session_expired", "gap")
_HOW = {
    "reconnect": "reconnected in the same session and resynced",
    "session_expired": "the session had expired: a new one was opened and the tree resynced",
    "gap": "reconnected and read the whole tree again (what changed meanwhile could not be caught up on)",
}


class Link(enum.Enum):
    """What the operator was last told: the watch follows ZooKeeper, or it does not (until it says otherwise)."""

    FOLLOWING = "following"
    ASTRAY = "astray"


@dataclass(frozen=True)
class Seen:
    """The watch's state: what it last told the operator, and the connection resyncs counted when it did."""

    link: Link = Link.FOLLOWING
    resyncs: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Notice:
    """A line to print. ``lost``: ``cause`` is ``"connection"`` (not connected) or ``"sync"`` (connected, the cache
    not yet confirmed: a resync pending or a failed sync). ``back``: ``resyncs`` says how it caught up."""

    kind: Literal["lost", "back"]
    cause: Literal["connection", "sync"] | None = None
    resyncs: tuple[str, ...] = ()


def follow(seen: Seen, health: ConfigHealth) -> tuple[Seen, tuple[Notice, ...]]:
    """Decide what to tell the operator, given what it was told (``seen``) and the client's ``health`` now."""
    counts = {r: n for r, n in health["resync_reasons"].items() if r in _CONNECTION_RESYNCS}
    grown = tuple(r for r in _CONNECTION_RESYNCS if counts.get(r, 0) > seen.resyncs.get(r, 0))
    following = health["following"]
    if seen.link is Link.ASTRAY:
        if not following:
            return seen, ()
        return Seen(Link.FOLLOWING, counts), (Notice("back", resyncs=grown),)
    if not following:
        cause: Literal["connection", "sync"] = "sync" if health["connected"] else "connection"
        return Seen(Link.ASTRAY, seen.resyncs), (Notice("lost", cause),)
    if grown:  # lost and back between two looks: said all the same
        return Seen(Link.FOLLOWING, counts), (Notice("lost", "connection"), Notice("back", resyncs=grown))
    return seen, ()


def describe(notice: Notice, hosts: str, root: str) -> str:
    """The stderr line for ``notice``."""
    if notice.kind == "lost":
        if notice.cause == "connection":
            problem = f"lost the connection to ZooKeeper at {hosts}: not following {root}"
        else:
            problem = f"not following {root} on ZooKeeper at {hosts}: a resync is pending or the sync failed"
        return (
            f"autoglm-runtime: warning E0409: {problem} (retrying); changes made meanwhile will be printed once it "
            "follows again"
        )
    how = "; ".join(_HOW[reason] for reason in notice.resyncs) or "resynced"
    return f"autoglm-runtime: following {root} on ZooKeeper at {hosts} again: {how}"


def watch(args: argparse.Namespace) -> int:
    """The ``config watch`` command."""
    changes: queue.Queue[ConfigChange] = queue.Queue()
    seen_changes = 0
    deadline = time.monotonic() + args.duration if args.duration is not None else None
    watching = False

    def on_change(change: ConfigChange) -> None:
        # The initial load arrives as "added" events before start() returns: only later changes are news.
        if watching or change.kind != "added":
            changes.put(change)

    with client(args, raw=True) as config:
        # Subscribed before start(), so a change landing between the load and the subscription is not lost.
        config.subscribe(args.prefix, on_change)
        # What ZooKeeper refuses to read is said once; the rest is followed all the same (exit 3 at the end).
        denied = load(config, args, follow=True)
        for key in denied:
            _output.report(denied_error(args, key))
        # Raw data, decoded here: data the codec refuses is said on stderr, not passed over as servers pass it over.
        served, _undecodable = decoded(config.snapshot(), args)
        watching = True
        seen = Seen(resyncs=config.health()["resync_reasons"])
        _output.note(f"watching {args.root}/{args.prefix} on {args.hosts}")
        while args.count is None or seen_changes < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                change: ConfigChange | None = changes.get(timeout=0.5 if remaining is None else min(0.5, remaining))
            except queue.Empty:
                change = None
            seen, notices = follow(seen, config.health())
            for notice in notices:
                _output.note(describe(notice, args.hosts, args.root))
            if change is not None and (shown := _served(change, served, args)) is not None:
                seen_changes += 1
                _print(shown, args)
    return EXIT_PARTIAL if denied else EXIT_OK


def _served(change: ConfigChange, served: dict[str, Any], args: argparse.Namespace) -> ConfigChange | None:
    """``change`` (raw data) as servers reading with ``--codec`` see it (``served``: their values, kept up to
    date); ``None``, with a line on stderr, for data they refuse (they keep their last good value)."""
    from autoglm_runtime.config import ConfigChange

    old = served.get(change.key)
    if change.kind == "deleted":
        if change.key not in served:
            return None  # servers never had a value for it
        del served[change.key]
        return ConfigChange(change.key, "deleted", old, None, change.version)
    new, undecodable = decoded({change.key: change.new}, args)
    if undecodable:
        error = undecodable[change.key]
        _output.note(f"autoglm-runtime: warning {error.code}: {error.message.replace(' holds ', ' now holds ', 1)}")
        return None
    kind: Literal["added", "updated"] = "updated" if change.key in served else "added"
    served[change.key] = new[change.key]
    return ConfigChange(change.key, kind, old, new[change.key], change.version)


def _print(change: ConfigChange, args: argparse.Namespace) -> None:
    if args.json:
        record = {
            "key": change.key,
            "kind": change.kind,
            "old": jsonable(change.old),
            "new": jsonable(change.new),
            "version": change.version,
        }
        text = json.dumps(record, ensure_ascii=False)
    else:
        text = f"{change.kind} {change.key} = {show(change.new, args.codec)}"
    _output.write(f"{text}\n", f"the change of {change.key!r}")
