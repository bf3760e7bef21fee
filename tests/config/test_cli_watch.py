"""``config watch``'s decision (:func:`follow`): what it tells the operator about the connection, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from autoglm_runtime.cli._config_watch import Link, Notice, Seen, describe, follow
from autoglm_runtime.config import ConfigHealth

FOLLOWING = Seen(Link.FOLLOWING, {"reconnect": 1})
ASTRAY = Seen(Link.ASTRAY, {"reconnect": 1})


def health(*, connected: bool = True, stale: float = 0.0, **resyncs: int) -> ConfigHealth:
    fields: dict[str, Any] = {"connected": connected, "stale_seconds": stale, "resync_reasons": {"reconnect": 1}}
    fields["following"] = connected and stale == 0.0  # what SyncStatus.report says of a running ZooKeeper client
    fields["resync_reasons"].update(resyncs)
    return fields  # type: ignore[return-value]  # follow() reads only these


@pytest.mark.parametrize(
    ("seen", "now", "link", "notices"),
    [
        # following, and nothing happened (a root recreated is a change of the tree, not of the connection)
        (FOLLOWING, health(), Link.FOLLOWING, ()),
        (FOLLOWING, health(root_recreated=1), Link.FOLLOWING, ()),
        # the connection goes: one line, then nothing however long it stays away
        (FOLLOWING, health(connected=False, stale=0.2), Link.ASTRAY, (Notice("lost", "connection"),)),
        (ASTRAY, health(connected=False, stale=8.0), Link.ASTRAY, ()),
        # connected again but not yet resynced: still astray, nothing said
        (ASTRAY, health(stale=8.5), Link.ASTRAY, ()),
        # connected but the cache not confirmed, without the drop being seen (a failed sync, a resync pending)
        (FOLLOWING, health(stale=0.1), Link.ASTRAY, (Notice("lost", "sync"),)),
        # back and resynced: how it caught up
        (ASTRAY, health(reconnect=2), Link.FOLLOWING, (Notice("back", resyncs=("reconnect",)),)),
        (ASTRAY, health(session_expired=1), Link.FOLLOWING, (Notice("back", resyncs=("session_expired",)),)),
        (ASTRAY, health(gap=1, reconnect=2), Link.FOLLOWING, (Notice("back", resyncs=("reconnect", "gap")),)),
        (ASTRAY, health(), Link.FOLLOWING, (Notice("back"),)),
        # lost and back between two looks: both lines all the same
        (
            FOLLOWING,
            health(session_expired=1),
            Link.FOLLOWING,
            (Notice("lost", "connection"), Notice("back", resyncs=("session_expired",))),
        ),
    ],
)
def test_follow(seen: Seen, now: ConfigHealth, link: Link, notices: tuple[Notice, ...]) -> None:
    state, said = follow(seen, now)
    assert (state.link, said) == (link, notices)


def test_the_resyncs_of_an_outage_are_counted_from_its_start() -> None:
    state, _ = follow(FOLLOWING, health(connected=False, stale=1.0))
    state, _ = follow(state, health(connected=False, stale=2.0, reconnect=2))  # a flap while away
    state, said = follow(state, health(reconnect=3))
    assert said == (Notice("back", resyncs=("reconnect",)),)
    assert follow(state, health(reconnect=3)) == (state, ())


@pytest.mark.parametrize(
    ("notice", "line"),
    [
        (
            Notice("lost", "connection"),
            "autoglm-runtime: warning E0409: lost the connection to ZooKeeper at zk1:2181: not following /cfg "
            "(retrying); changes made meanwhile will be printed once it follows again",
        ),
        (
            Notice("lost", "sync"),
            "autoglm-runtime: warning E0409: not following /cfg on ZooKeeper at zk1:2181: a resync is pending or the "
            "sync failed (retrying); changes made meanwhile will be printed once it follows again",
        ),
        (
            Notice("back", resyncs=("session_expired",)),
            "autoglm-runtime: following /cfg on ZooKeeper at zk1:2181 again: the session had expired: a new one was "
            "opened and the tree resynced",
        ),
        (Notice("back"), "autoglm-runtime: following /cfg on ZooKeeper at zk1:2181 again: resynced"),
    ],
)
def test_describe(notice: Notice, line: str) -> None:
    assert describe(notice, "zk1:2181", "/cfg") == line
