from __future__ import annotations

from autoglm_runtime.config.health import SyncStatus

from .conftest import FakeClock


def test_staleness_counts_from_the_first_suspension(clock: FakeClock) -> None:
    status = SyncStatus(timer=clock, wall_clock=lambda: 1.7e9)
    assert status.stale_seconds() == 0.0
    status.mark_stale()
    clock.advance(3)
    status.mark_stale()  # LOST after SUSPENDED: still counted from the suspension
    clock.advance(2)
    assert status.stale_seconds() == 5.0
    status.mark_synced(resync=True)
    assert status.stale_seconds() == 0.0
    report = status.report(applied=4, keys=2)
    assert report == {
        "state": "new",
        "connected": False,
        "following": False,
        "stale_seconds": 0.0,
        "last_sync": 1.7e9,
        "last_confirmed": 1.7e9,
        "applied": 4,
        "rejected": 0,
        "drift_corrected": 0,
        "resyncs": 1,
        "resync_reasons": {"reconnect": 1},
        "rejected_reasons": {},
        "reads": 0,
        "requests": 0,
        "source": "none",
        "keys": 2,
        "root_missing": False,
        "watch_mode": "none",
        "denied": [],
    }


def test_only_a_running_client_is_connected(clock: FakeClock) -> None:
    status = SyncStatus(timer=clock)
    status.set_connected(True)  # what the source's last callback said
    seen = {}
    for state in ("new", "starting", "running", "stopped", "failed"):
        status.set_state(state)  # type: ignore[arg-type]
        seen[state] = status.report(applied=0, keys=0)["connected"]
    assert seen == {"new": False, "starting": False, "running": True, "stopped": False, "failed": False}


def test_a_client_on_its_snapshot_is_connected_but_not_following_until_the_load_completes(clock: FakeClock) -> None:
    status = SyncStatus(timer=clock, wall_clock=lambda: 1.7e9)
    status.set_state("running")
    status.serve_snapshot(1.7e9 - 60)  # ZooKeeper was down at start
    seen = [(status.report(applied=0, keys=0)["connected"], status.report(applied=0, keys=0)["following"])]
    status.set_connected(True)  # ZooKeeper answers: the session is CONNECTED, the tree not loaded yet
    report = status.report(applied=0, keys=0)
    seen.append((report["connected"], report["following"]))
    status.source = "zookeeper"  # what the sync thread's completed load does
    status.mark_synced(resync=False)
    report = status.report(applied=0, keys=0)
    seen.append((report["connected"], report["following"]))
    assert seen == [(False, False), (True, False), (True, True)]
    assert (report["source"], report["stale_seconds"]) == ("zookeeper", 0.0)


def test_following_needs_a_running_connected_client_whose_values_come_from_a_completed_load(clock: FakeClock) -> None:
    cases = {
        # (state, connected, source, stale): following
        ("running", True, "zookeeper", False): True,
        ("running", True, "file", False): True,
        ("running", True, "zookeeper", True): False,  # reconnected, the resync not completed yet
        ("running", False, "zookeeper", False): False,
        ("running", True, "snapshot", True): False,
        ("running", True, "none", False): False,
        ("starting", True, "zookeeper", False): False,
        ("stopped", True, "zookeeper", False): False,
    }
    seen = {}
    for state, connected, source, stale in cases:
        status = SyncStatus(timer=clock)
        status.set_connected(connected)
        status.source = source  # type: ignore[assignment]
        if stale:
            status.mark_stale()
        status.set_state(state)  # type: ignore[arg-type]
        seen[state, connected, source, stale] = status.report(applied=0, keys=0)["following"]
    assert seen == cases


def test_stopping_a_client_that_holds_values_makes_it_stale_for_good(clock: FakeClock) -> None:
    status = SyncStatus(timer=clock)
    status.set_state("running")
    status.source = "zookeeper"
    status.mark_synced(resync=False)
    clock.advance(1)
    status.set_state("stopped")
    clock.advance(2.5)
    status.mark_synced(resync=True)  # a late sync after the stop changes nothing
    report = status.report(applied=0, keys=0)
    assert (report["state"], report["stale_seconds"], report["resyncs"]) == ("stopped", 2.5, 0)


def test_stopping_a_client_that_loaded_nothing_is_not_stale(clock: FakeClock) -> None:
    status = SyncStatus(timer=clock)
    status.set_state("stopped")
    clock.advance(2)
    assert status.report(applied=0, keys=0)["stale_seconds"] == 0.0


def test_staleness_from_before_the_stop_keeps_counting_from_its_start(clock: FakeClock) -> None:
    status = SyncStatus(timer=clock)
    status.set_state("running")
    status.source = "snapshot"
    status.mark_stale()
    clock.advance(3)
    status.set_state("stopped")
    clock.advance(1)
    assert status.stale_seconds() == 4.0


def test_a_copy_in_a_forked_child_reports_a_running_client_as_following_nothing(clock: FakeClock) -> None:
    status = SyncStatus(timer=clock, wall_clock=lambda: 1.7e9)
    status.set_state("running")
    status.set_connected(True)
    status.mark_synced(resync=False)
    status.forked()  # what the after-fork hook runs in the child
    clock.advance(4)
    report = status.report(applied=0, keys=0)
    assert (report["state"], report["connected"], report["following"], report["stale_seconds"]) == (
        "running",
        False,
        False,
        4.0,
    )
    status.set_connected(True)  # (nothing in the child would call it: no sync thread runs there)
    new = SyncStatus(timer=clock)
    new.forked()  # a client never started stays as it was: it may still be started in the child
    assert (new.report(applied=0, keys=0)["state"], new.stale_seconds()) == ("new", 0.0)
