"""Health dicts as metric samples: pure functions, the single source of both exporters in ``collectors``.

A :class:`Family` names a metric; a sample is ``(family name, label values, value)``. Counters are named here
without ``_total`` (prometheus_client appends it).

In prometheus_client's multiprocess mode each process writes its own values and the scrape merges them: counters
are summed, and each gauge by its family's ``multiprocess_mode``. A model's workers belong to one process, so
the worker gauges keep one series per process (``liveall``, a ``pid`` label). Every process of a server follows
the same root, so a config gauge is one series per root (no ``pid``: an alert fires once per server, not once
per process, and no series is left behind by each restart), merged so that it shows the process worst off:
the oldest confirmation, 0 for connected and following while any process is not, the most znodes denied; the
enum gauges (state, source, watch mode) count the processes in each value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CONFIG_FAMILIES", "WORKER_FAMILIES", "Family", "Sample", "config_samples", "worker_samples"]


@dataclass(frozen=True)
class Family:
    """One metric: its name, kind, help text, label names, and how a gauge's values of the live processes are
    merged in multiprocess mode (prometheus_client's ``multiprocess_mode``; ``liveall`` keeps one per process)."""

    name: str
    kind: Literal["gauge", "counter"]
    documentation: str
    labels: tuple[str, ...]
    multiprocess_mode: Literal["liveall", "livemin", "livemax", "livesum"] = "liveall"


Sample = tuple[str, tuple[str, ...], float]

_CONFIG_STATES = ("new", "starting", "running", "stopped", "failed")
_CONFIG_SOURCES = ("none", "zookeeper", "snapshot", "file")
_WATCH_MODES = ("persistent", "per_node", "none")
_RESYNC_REASONS = ("reconnect", "session_expired", "gap", "root_recreated")
_REJECT_REASONS = ("decode", "validator")

CONFIG_FAMILIES = (
    # In multiprocess mode (see the module's docstring): the oldest confirmation of the live processes.
    Family(
        "autoglm_config_last_sync_timestamp_seconds",
        "gauge",
        "Unix time ZooKeeper last confirmed the config cache: a load, a resync or a verification re-read.",
        ("root",),
        "livemin",
    ),
    Family(
        "autoglm_config_connected",
        "gauge",
        "1 while the client runs and its session is CONNECTED.",
        ("root",),
        "livemin",
    ),
    Family(
        "autoglm_config_following",
        "gauge",
        "1 while the values served come from a completed load or resync of the source and the client follows it "
        "(0 on the snapshot a start served, even once connected).",
        ("root",),
        "livemin",
    ),
    # The enum gauges: 1 for the value, 0 for the others; summed in multiprocess mode, so a count of processes.
    Family(
        "autoglm_config_state",
        "gauge",
        "The client's lifecycle state: 1 for its state, 0 for the others; in multiprocess mode the number of "
        "processes in each state.",
        ("root", "state"),
        "livesum",
    ),
    Family(
        "autoglm_config_source",
        "gauge",
        "Where the cached values came from: 1 for their source, 0 for the others; in multiprocess mode the number "
        "of processes on each source.",
        ("root", "source"),
        "livesum",
    ),
    Family("autoglm_config_keys", "gauge", "Keys in the config cache.", ("root",), "livemax"),
    Family(
        "autoglm_config_watch_mode",
        "gauge",
        "How the client follows ZooKeeper (persistent: one recursive watch; per_node: two per znode): 1 for its "
        "mode, 0 for the others; in multiprocess mode the number of processes in each mode.",
        ("root", "mode"),
        "livesum",
    ),
    Family(
        "autoglm_config_root_missing",
        "gauge",
        "1 while ZooKeeper says the configured root does not exist (a typo, or deleted).",
        ("root",),
        "livemax",
    ),
    Family(
        "autoglm_config_denied_znodes",
        "gauge",
        "Znodes ZooKeeper refuses to let the client read (ACL, credentials): their keys keep their last known "
        "values, or stay absent.",
        ("root",),
        "livemax",
    ),
    Family("autoglm_config_resyncs", "counter", "Completed resyncs, by what caused them.", ("root", "reason")),
    Family(
        "autoglm_config_drift_corrected",
        "counter",
        "Differences the reconciler found and fixed: each is a missed watch.",
        ("root",),
    ),
    Family(
        "autoglm_config_updates_rejected",
        "counter",
        "Config updates refused (the last good value stays), by error code and reason (decode, validator).",
        ("root", "code", "reason"),
    ),
)

WORKER_FAMILIES = (
    Family("autoglm_worker_up", "gauge", "1 while the model's worker is ready to serve calls.", ("model", "replica")),
    Family(
        "autoglm_worker_starts",
        "counter",
        "Worker starts: the first (reason initial) and every restart after a failure.",
        ("model", "reason"),
    ),
    Family("autoglm_worker_inflight", "gauge", "Calls and streams the model's workers run now.", ("model",)),
    Family("autoglm_worker_queued", "gauge", "Calls waiting in the model's queue for a free replica.", ("model",)),
    Family("autoglm_worker_replicas", "gauge", "Worker processes the model is served by.", ("model",)),
    Family("autoglm_worker_max_inflight", "gauge", "Calls one replica runs at a time at most.", ("model",)),
    Family(
        "autoglm_worker_max_queue", "gauge", "Calls that may wait in the queue before E0106 refuses more.", ("model",)
    ),
)

#: health() keys of a loaded model exported as they are, by metric.
_LOAD_GAUGES = (
    ("autoglm_worker_queued", "queued"),
    ("autoglm_worker_max_inflight", "max_inflight"),
    ("autoglm_worker_max_queue", "max_queue"),
)


def config_samples(root: str, health: Mapping[str, Any]) -> list[Sample]:
    """The config metrics of one client from its ``health()`` dict."""
    samples: list[Sample] = []
    confirmed = health.get("last_confirmed", health.get("last_sync"))
    if confirmed is not None:
        samples.append(("autoglm_config_last_sync_timestamp_seconds", (root,), float(confirmed)))
    samples.append(("autoglm_config_connected", (root,), 1.0 if health.get("connected") else 0.0))
    samples.append(("autoglm_config_following", (root,), 1.0 if health.get("following") else 0.0))
    samples.extend(("autoglm_config_state", (root, s), float(health.get("state") == s)) for s in _CONFIG_STATES)
    samples.extend(("autoglm_config_source", (root, s), float(health.get("source") == s)) for s in _CONFIG_SOURCES)
    samples.append(("autoglm_config_keys", (root,), float(health.get("keys", 0))))
    mode = health.get("watch_mode", "none")
    samples.extend(("autoglm_config_watch_mode", (root, m), float(mode == m)) for m in _WATCH_MODES)
    samples.append(("autoglm_config_root_missing", (root,), 1.0 if health.get("root_missing") else 0.0))
    # A count, not a series per path: paths as labels would grow without bound and outlive their denial.
    samples.append(("autoglm_config_denied_znodes", (root,), float(len(health.get("denied", ())))))
    # Every reason, always: a rate over a reason that never happened is 0, not absent.
    reasons = dict.fromkeys(_RESYNC_REASONS, 0) | dict(health.get("resync_reasons", {}))
    for reason, count in sorted(reasons.items()):
        samples.append(("autoglm_config_resyncs", (root, reason), float(count)))
    samples.append(("autoglm_config_drift_corrected", (root,), float(health.get("drift_corrected", 0))))
    # Both reasons from the start too: a series that first appears at 1 has no increase(), so the first bad
    # value a server refused would never fire AutoGLMConfigUpdatesRejected.
    rejected = dict.fromkeys(_REJECT_REASONS, 0) | dict(health.get("rejected_reasons", {}))
    for reason, count in sorted(rejected.items()):
        samples.append(("autoglm_config_updates_rejected", (root, "E0409", reason), float(count)))
    return samples


#: The workers' failure reasons (keys of ``restarted_after`` in health) as autoglm_worker_starts_total's reasons.
START_REASONS = {
    "exit": "crash",
    "signal": "crash",
    "load": "crash",
    "protocol": "crash",
    "oom": "oom",
    "timeout": "timeout",
    "heartbeat": "heartbeat",
}


def worker_samples(health: Mapping[str, Mapping[str, Any]]) -> list[Sample]:
    """The worker metrics of a loader from its ``health()`` dict (one entry per loaded model).

    ``autoglm_worker_up`` has one series per replica; ``autoglm_worker_starts_total`` counts the first start of
    each replica (``initial``) and every restart, once its process started (``restarted_after``), by the failure
    it followed (``crash``, ``oom``, ``timeout``, ``heartbeat``), always all five, so a rate over a reason that
    never happened is 0, not absent. The load gauges (in flight, queued, replicas and the two limits) have one
    series per model.
    """
    samples: list[Sample] = []
    for model, entry in sorted(health.items()):
        replicas = entry.get("replicas") or [entry]
        for index, replica in enumerate(replicas):
            up = replica.get("state") == "ready" and replica.get("pid") is not None
            samples.append(("autoglm_worker_up", (model, str(index)), 1.0 if up else 0.0))
        starts = dict.fromkeys(("initial", "crash", "oom", "timeout", "heartbeat"), 0.0)
        starts["initial"] = float(len(replicas))
        restarts = entry.get("restarted_after")
        if restarts is None:  # (a source counting only failures: each taken as restarted)
            restarts = entry.get("restart_reasons")
        for reason, count in (restarts or {}).items():
            label = START_REASONS.get(str(reason), "crash")
            starts[label] += float(count)
        samples.extend(("autoglm_worker_starts", (model, reason), count) for reason, count in starts.items())
        inflight = entry.get("inflight")
        if inflight is None:
            inflight = sum(replica.get("inflight", 0) for replica in replicas)
        samples.append(("autoglm_worker_inflight", (model,), float(inflight)))
        samples.append(("autoglm_worker_replicas", (model,), float(len(replicas))))
        samples.extend((name, (model,), float(entry[key])) for name, key in _LOAD_GAUGES if key in entry)
    return samples
