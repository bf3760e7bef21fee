"""health() dicts as samples: every field maps to its metric, and issue 13's restart reasons pass through."""

from __future__ import annotations

from autoglm_runtime.observability._samples import CONFIG_FAMILIES, config_samples, worker_samples


def test_a_running_client_with_resyncs_and_rejections() -> None:
    health = {
        "state": "running",
        "connected": True,
        "following": True,
        "last_sync": 1_700_000_000.0,
        "last_confirmed": 1_700_000_030.0,
        "source": "zookeeper",
        "keys": 12,
        "resync_reasons": {"session_expired": 1, "reconnect": 3},
        "watch_mode": "persistent",
        "root_missing": False,
        "denied": ["/p/secret", "/p/x/y"],
        "drift_corrected": 2,
        "rejected_reasons": {"validator": 4},
    }
    assert config_samples("/p", health) == [
        ("autoglm_config_last_sync_timestamp_seconds", ("/p",), 1_700_000_030.0),
        ("autoglm_config_connected", ("/p",), 1.0),
        ("autoglm_config_following", ("/p",), 1.0),
        ("autoglm_config_state", ("/p", "new"), 0.0),
        ("autoglm_config_state", ("/p", "starting"), 0.0),
        ("autoglm_config_state", ("/p", "running"), 1.0),
        ("autoglm_config_state", ("/p", "stopped"), 0.0),
        ("autoglm_config_state", ("/p", "failed"), 0.0),
        ("autoglm_config_source", ("/p", "none"), 0.0),
        ("autoglm_config_source", ("/p", "zookeeper"), 1.0),
        ("autoglm_config_source", ("/p", "snapshot"), 0.0),
        ("autoglm_config_source", ("/p", "file"), 0.0),
        ("autoglm_config_keys", ("/p",), 12.0),
        ("autoglm_config_watch_mode", ("/p", "persistent"), 1.0),
        ("autoglm_config_watch_mode", ("/p", "per_node"), 0.0),
        ("autoglm_config_watch_mode", ("/p", "none"), 0.0),
        ("autoglm_config_root_missing", ("/p",), 0.0),
        ("autoglm_config_denied_znodes", ("/p",), 2.0),
        ("autoglm_config_resyncs", ("/p", "gap"), 0.0),
        ("autoglm_config_resyncs", ("/p", "reconnect"), 3.0),
        ("autoglm_config_resyncs", ("/p", "root_recreated"), 0.0),
        ("autoglm_config_resyncs", ("/p", "session_expired"), 1.0),
        ("autoglm_config_drift_corrected", ("/p",), 2.0),
        ("autoglm_config_updates_rejected", ("/p", "E0409", "decode"), 0.0),
        ("autoglm_config_updates_rejected", ("/p", "E0409", "validator"), 4.0),
    ]


def test_rejections_are_exported_from_zero_for_both_reasons() -> None:
    # increase() needs a sample before the first rejection: a series born at 1 never fires the alert on it.
    health = {"state": "running", "connected": True, "last_confirmed": 1_700_000_000.0, "source": "zookeeper"}
    assert [sample for sample in config_samples("/p", health) if sample[0] == "autoglm_config_updates_rejected"] == [
        ("autoglm_config_updates_rejected", ("/p", "E0409", "decode"), 0.0),
        ("autoglm_config_updates_rejected", ("/p", "E0409", "validator"), 0.0),
    ]


def test_a_client_that_never_synced_has_no_timestamp() -> None:
    health = {"state": "new", "connected": False, "last_sync": None, "last_confirmed": None, "source": "none"}
    names = [name for name, _, _ in config_samples("/p", health)]
    assert "autoglm_config_last_sync_timestamp_seconds" not in names
    assert ("autoglm_config_connected", ("/p",), 0.0) in config_samples("/p", health)
    assert ("autoglm_config_following", ("/p",), 0.0) in config_samples("/p", health)
    assert ("autoglm_config_denied_znodes", ("/p",), 0.0) in config_samples("/p", health)


def test_workers_by_replica_and_restart_reason() -> None:
    health = {
        "b": {
            "state": "dead",
            "restart_reasons": {"signal": 1, "exit": 1, "heartbeat": 1},
            "restarted_after": {"exit": 1, "heartbeat": 1},  # replica 0 died of a signal: restarts on a call
            "replicas": [{"state": "dead", "pid": None, "inflight": 0}, {"state": "ready", "pid": 9, "inflight": 3}],
            "inflight": 3,
            "queued": 5,
            "max_inflight": 4,
            "max_queue": 8,
        },
        "a": {
            "state": "ready",
            "restart_reasons": {"timeout": 1, "oom": 2},
            "replicas": [{"state": "ready", "pid": 7}],
        },
    }
    assert worker_samples(health) == [
        ("autoglm_worker_up", ("a", "0"), 1.0),
        ("autoglm_worker_starts", ("a", "initial"), 1.0),
        ("autoglm_worker_starts", ("a", "crash"), 0.0),
        ("autoglm_worker_starts", ("a", "oom"), 2.0),
        ("autoglm_worker_starts", ("a", "timeout"), 1.0),
        ("autoglm_worker_starts", ("a", "heartbeat"), 0.0),
        ("autoglm_worker_inflight", ("a",), 0.0),
        ("autoglm_worker_replicas", ("a",), 1.0),
        ("autoglm_worker_up", ("b", "0"), 0.0),
        ("autoglm_worker_up", ("b", "1"), 1.0),
        ("autoglm_worker_starts", ("b", "initial"), 2.0),
        ("autoglm_worker_starts", ("b", "crash"), 1.0),
        ("autoglm_worker_starts", ("b", "oom"), 0.0),
        ("autoglm_worker_starts", ("b", "timeout"), 0.0),
        ("autoglm_worker_starts", ("b", "heartbeat"), 1.0),
        ("autoglm_worker_inflight", ("b",), 3.0),
        ("autoglm_worker_replicas", ("b",), 2.0),
        ("autoglm_worker_queued", ("b",), 5.0),
        ("autoglm_worker_max_inflight", ("b",), 4.0),
        ("autoglm_worker_max_queue", ("b",), 8.0),
    ]


def test_the_help_of_the_enum_gauges_says_what_the_value_is_in_both_modes() -> None:
    """In multiprocess mode these gauges are summed over the processes (``livesum``), so a value is a count of
    processes; their HELP said only "1 for the state, 0 for the others"."""
    assert {f.name: f.documentation for f in CONFIG_FAMILIES if f.multiprocess_mode == "livesum"} == {
        "autoglm_config_state": "The client's lifecycle state: 1 for its state, 0 for the others; in multiprocess "
        "mode the number of processes in each state.",
        "autoglm_config_source": "Where the cached values came from: 1 for their source, 0 for the others; in "
        "multiprocess mode the number of processes on each source.",
        "autoglm_config_watch_mode": "How the client follows ZooKeeper (persistent: one recursive watch; per_node: "
        "two per znode): 1 for its mode, 0 for the others; in multiprocess mode the number of processes in each "
        "mode.",
    }
