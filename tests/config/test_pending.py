"""PendingPaths: which watch events a read answers."""

from __future__ import annotations

import itertools

import pytest

from autoglm_runtime.config._pending import PendingPaths


@pytest.mark.parametrize(
    ("reads", "pending"),
    [
        ([(1, True, True)], set()),  # a read issued after the events answers them
        ([(1, True, False)], {"/r/a"}),  # a value read does not answer a child event
        ([(1, False, True)], {"/r/a"}),  # nor a child-list read a value event
        ([(1, True, False), (2, False, True)], set()),
        ([(-1, True, True)], {"/r/a"}),  # a read issued before the second event does not answer it
    ],
)
def test_a_read_answers_only_what_it_read_of_the_events_before_it(
    reads: list[tuple[int, bool, bool]], pending: set[str]
) -> None:
    numbers = itertools.count(1)
    paths = PendingPaths(lambda: next(numbers))
    paths.mark("/r/a", data=True, children=False)  # 1
    paths.mark("/r/a", data=False, children=True)  # 2
    for offset, data, children in reads:
        paths.answer("/r/a", 2 + offset, data=data, children=children)
    assert paths.paths() == pending
    assert ("/r/a" in paths) == bool(pending)


def test_applying_the_re_read_of_an_earlier_event_keeps_a_later_one_pending() -> None:
    paths = PendingPaths(itertools.count(100).__next__)
    paths.mark("/r/a", data=True, children=False, seq=10)  # a value changed: its re-read 10 was issued
    paths.mark("/r/a", data=True, children=True, seq=11)  # deleted: re-read 11 (value and children) issued
    paths.answer("/r/a", 10, data=True, children=False)
    assert "/r/a" in paths
    paths.answer("/r/a", 11, data=True, children=True)
    assert "/r/a" not in paths


def test_a_full_read_answers_the_events_marked_before_it_started_not_those_since() -> None:
    """A full read answers the pending events only when it is applied (under the cache lock): clearing them
    when it started let a verification applying meanwhile count their changes as drift."""
    paths = PendingPaths(itertools.count(100).__next__)
    paths.mark("/r/a", data=True, children=False, seq=10)
    paths.mark("/r/b", data=True, children=True, seq=11)
    # The full read started after read 12; these events came after that.
    paths.mark("/r/b", data=False, children=True, seq=13)
    paths.mark("/r/c", data=True, children=False, seq=14)
    paths.answer_all(12)
    assert paths.paths() == frozenset({"/r/b", "/r/c"})
    paths.answer("/r/b", 13, data=False, children=True)  # b's value mark went with the full read
    assert paths.paths() == frozenset({"/r/c"})
