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
    assert dict(report) == {
        "connected": False,
        "stale_seconds": 0.0,
        "last_sync": 1.7e9,
        "applied": 4,
        "rejected": 0,
        "drift_corrected": 0,
        "resyncs": 1,
        "reads": 0,
        "requests": 0,
        "source": "none",
        "keys": 2,
    }
