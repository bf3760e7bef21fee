"""TreeApplier: the bookkeeping of the tree the reads came from."""

from __future__ import annotations

import threading

from autoglm_runtime.config._reader import ReadResult
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
