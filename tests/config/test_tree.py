"""TreeApplier: the bookkeeping of the tree the reads came from."""

from __future__ import annotations

import logging
import threading

import pytest
from kazoo.protocol.states import ZnodeStat

from autoglm_runtime.config._results import ReadResult
from autoglm_runtime.config._tree import TreeApplier
from autoglm_runtime.config._values import ValuePipeline
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.codec import resolve_codec
from autoglm_runtime.config.health import SyncStatus


def _applier() -> tuple[TreeApplier, ConfigCache, SyncStatus]:
    status = SyncStatus(timer=lambda: 0.0)
    cache = ConfigCache(ttl=30.0, timer=lambda: 0.0)
    pipeline = ValuePipeline(cache=cache, codec=resolve_codec("json"), validator=None, status=status)
    tree = TreeApplier(
        hosts="h:2181",
        root="/r",
        cache=cache,
        pipeline=pipeline,
        status=status,
        pending=set(),
        behind=lambda: False,
        loaded=threading.Event(),
    )
    return tree, cache, status


def _children(path: str, seq: int, names: list[str]) -> ReadResult:
    result = ReadResult(path, seq)
    result.children = names
    return result


def _missing(path: str, seq: int) -> ReadResult:
    result = ReadResult(path, seq)
    result.missing = True
    return result


def _value(path: str, seq: int, data: bytes, czxid: int) -> ReadResult:
    """A read of ``path``'s value and (empty) child list, at the incarnation created at ``czxid``."""
    result = _children(path, seq, [])
    result.data, result.stat = data, ZnodeStat(czxid, czxid, 0, 0, 0, 0, 0, 0, len(data), 0, czxid)
    return result


def test_the_safety_net_reads_a_listed_child_the_cache_lacks() -> None:
    tree, _, _ = _applier()
    # The root's child list was read, the read of "a" that followed it was lost.
    assert tree.apply(_children("/r", 1, ["a"]), found=None, full=False, reconcile=False) == [("/r/a", True, True)]
    # The reconciler's re-read of the root's child list finds the same names: "a" is still read.
    assert tree.apply(_children("/r", 2, ["a"]), found=None, full=False, reconcile=True) == [("/r/a", True, True)]


def test_a_missing_root_forgets_its_child_list() -> None:
    tree, _, _ = _applier()
    tree.apply(_children("/r", 1, ["a", "b"]), found=None, full=False, reconcile=False)
    tree.apply(_missing("/r", 2), found=None, full=False, reconcile=False)
    # Created again with the same names: every child is new.
    follow = tree.apply(_children("/r", 3, ["a", "b"]), found=None, full=False, reconcile=False)
    assert follow == [("/r/a", True, True), ("/r/b", True, True)]


# Each case: events marked (path, data, children) then reads applied (seq offset from the last mark, data,
# children); the paths still pending. A read is numbered after the marks taken before it was issued.
def test_a_child_an_older_read_found_missing_is_read_again_when_a_newer_list_names_it() -> None:
    tree, cache, _ = _applier()
    tree.apply(_children("/r", 1, ["a"]), found=None, full=False, reconcile=False)
    cache.offer("a", 1, b"1", czxid=10, mzxid=10, seq=2)
    # "a" was deleted (its re-read, 3, found it missing) and created again before the root's list (4) was read.
    tree.apply(_children("/r", 4, ["a"]), found=None, full=False, reconcile=False)
    assert tree.apply(_missing("/r/a", 3), found=None, full=False, reconcile=False) == [("/r/a", True, True)]
    assert cache.get("a") == 1
    assert tree.children["/r"] == (4, frozenset({"a"}))
    # A read after the list that finds it missing is a deletion.
    assert tree.apply(_missing("/r/a", 5), found=None, full=False, reconcile=False) == []
    assert cache.get("a") is None
    assert tree.children["/r"] == (4, frozenset())


@pytest.mark.parametrize("adopt", [True, False])
def test_a_missing_read_older_than_the_znode_created_again_is_no_drift(adopt: bool) -> None:
    """A verification read "a" missing (6) and then the root's child list naming it (7): "a" was created again
    in between. The sync thread applied the re-read of that creation (8) first; "a" is no longer pending. Before
    the fix, the older missing read took "a" out of the root's remembered child list (though the cache kept
    the newer "a"), so the list read after it looked like a creation no watch had reported: one false drift
    count (integration/config/test_wrong_state.py's churn test, 3 runs in ~60 under load), and forgot the new
    incarnation's czxid; per node, where the root's list was read again after the creation, it cost a needless
    re-read of "a"."""
    tree, cache, status = _applier()
    tree.adopt = adopt  # persistent watch mode: a creation's re-read joins the parent's child list
    tree.apply(_children("/r", 1, ["a"]), found=None, full=False, reconcile=False)
    tree.apply(_value("/r/a", 2, b"1", czxid=10), found=None, full=False, reconcile=False)
    tree.apply(_missing("/r/a", 5), found=None, full=False, reconcile=False)  # its deletion's re-read
    assert cache.get("a") is None
    tree.apply(_value("/r/a", 8, b"2", czxid=20), found=None, full=False, reconcile=False)  # its creation's
    if not adopt:  # per node, the root's child watch fired: its list is read again
        tree.apply(_children("/r", 9, ["a"]), found=None, full=False, reconcile=False)
    # The verification's reads, issued before 8, applied after it.
    assert tree.apply(_missing("/r/a", 6), found=None, full=False, reconcile=True) == []
    assert tree.apply(_children("/r", 7, ["a"]), found=None, full=False, reconcile=True) == []
    assert status.drift_corrected == 0
    assert (cache.get("a"), tree.czxids["/r/a"], tree.pzxids["/r/a"]) == (2, 20, 20)
    assert "a" in tree.children["/r"][1]


def _denied(path: str, seq: int) -> ReadResult:
    result = ReadResult(path, seq)
    result.denied = True
    return result


def test_a_denied_child_is_said_once_and_left_out_of_the_safety_net(caplog: pytest.LogCaptureFixture) -> None:
    tree, cache, status = _applier()
    with caplog.at_level(logging.INFO, logger="autoglm_runtime.config"):
        assert tree.apply(_children("/r", 1, ["a"]), found=None, full=False, reconcile=False) == [("/r/a", True, True)]
        assert tree.apply(_denied("/r/a", 2), found=None, full=False, reconcile=False) == []
        assert status.denied == ("/r/a",)
        # A verification of the root's child list: "a" is absent from the cache because it is refused, not lost.
        # (before: read again at every verification, and said again each time)
        assert tree.apply(_children("/r", 3, ["a"]), found=None, full=False, reconcile=True) == []
        assert tree.apply(_denied("/r/a", 4), found=None, full=False, reconcile=False) == []
        assert status.denied == ("/r/a",)
        tree.apply(_value("/r/a", 5, b"1", czxid=5), found=None, full=False, reconcile=False)
    assert (status.denied, cache.get("a")) == ((), 1)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "ZooKeeper denied reading /r/a; keeping the last known values of it and everything under it"),
        ("INFO", "ZooKeeper lets the client read /r/a again"),
    ]


def test_a_full_read_that_no_longer_reaches_a_denied_znode_forgets_it() -> None:
    tree, _, status = _applier()
    found: set[str] = set()
    tree.apply(_children("/r", 1, ["a"]), found=found, full=True, reconcile=False)
    tree.apply(_denied("/r/a", 2), found=found, full=True, reconcile=False)
    tree.end_full_read()
    assert status.denied == ("/r/a",)
    tree.denied = []  # the next full read: "a" was deleted meanwhile
    tree.apply(_children("/r", 3, []), found=set(), full=True, reconcile=False)
    tree.end_full_read()
    assert status.denied == ()


def test_removing_a_subtree_forgets_the_bookkeeping_of_every_znode_under_it() -> None:
    tree, cache, _ = _applier()
    assert tree.apply(_children("/r", 1, ["a"]), found=None, full=False, reconcile=False) == [("/r/a", True, True)]
    for seq, (path, child) in enumerate([("/r/a", "b"), ("/r/a/b", "c"), ("/r/a/b/c", None)], start=2):
        read = _value(path, seq, b"1", czxid=seq)
        read.children = [child] if child else []
        tree.apply(read, found=None, full=False, reconcile=False)
    assert sorted(tree.czxids) == sorted(tree.pzxids) == ["/r/a", "/r/a/b", "/r/a/b/c"]
    tree.apply(_missing("/r/a", 5), found=None, full=False, reconcile=False)
    assert (tree.czxids, tree.pzxids, tree.children, dict(cache.snapshot())) == ({}, {}, {"/r": (1, frozenset())}, {})


def test_removing_a_subtree_tells_the_reader_to_forget_every_znode_under_it() -> None:
    tree, _, _ = _applier()
    forgotten: list[str] = []
    tree._forget = forgotten.append
    tree.apply(_children("/r", 1, ["a"]), found=None, full=False, reconcile=False)
    for seq, (path, child) in enumerate([("/r/a", "b"), ("/r/a/b", None)], start=2):
        read = _value(path, seq, b"1", czxid=seq)
        read.children = [child] if child else []
        tree.apply(read, found=None, full=False, reconcile=False)
    tree.apply(_children("/r", 4, []), found=None, full=False, reconcile=False)  # "a" gone with all under it
    assert sorted(forgotten) == ["/r/a", "/r/a/b"]
