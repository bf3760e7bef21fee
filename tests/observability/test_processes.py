"""In other interpreters: without the extras nothing is recorded, and prometheus_client's multiprocess mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run(code: str, env: dict[str, str] | None = None) -> object:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def stores(tmp_path: Path) -> tuple[Path, Path]:
    """A file:// config store holding one key under /p, and an empty directory for multiprocess mode's files."""
    config = tmp_path / "config"
    (config / "p").mkdir(parents=True)
    (config / "p" / "a").write_text("1")
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    return config, metrics


#: The start of a script counting drift in multiprocess mode: a client whose count the script sets, and
#: ``exported()``, what the files export for it (summed over processes).
DRIFT = textwrap.dedent(
    """
    import json
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    from autoglm_runtime.observability import ConfigMetrics

    class Client:
        root = "/p"
        drift = 0
        def health(self):
            return {"drift_corrected": self.drift}

    def exported():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return sum(
            s.value for family in registry.collect() for s in family.samples
            if s.name == "autoglm_config_drift_corrected_total"
        )
    """
)


def test_without_the_extras_the_guards_work_and_the_exporters_say_what_to_install() -> None:
    out = run(
        """
        import json, sys
        sys.modules["prometheus_client"] = None  # as if neither extra were installed
        sys.modules["opentelemetry"] = None
        from autoglm_runtime.errors import AutoGLMRuntimeError
        from autoglm_runtime.observability import ConfigMetrics, metrics_available, tracing_available
        from autoglm_runtime.validation import CallableTokenizer, ContextWindowGuard, guarded

        @guarded(ContextWindowGuard(CallableTokenizer(lambda t: list(t.encode())), 10, message_tokens=0))
        def generate(prompt, max_tokens=1):
            return prompt

        try:
            generate("x" * 50)
        except AutoGLMRuntimeError as exc:
            rejected = exc.code
        try:
            ConfigMetrics(object())
        except AutoGLMRuntimeError as exc:
            refused = exc.message
        loaded = sorted(m for m in sys.modules if m.startswith(("prometheus_client.", "opentelemetry.")))
        print(json.dumps([metrics_available(), tracing_available(), generate("ok"), rejected, refused, loaded]))
        """
    )
    assert out == [
        False,
        False,
        "ok",
        "E0513",
        "metrics need prometheus-client: install autoglm-runtime[metrics] (or pip install prometheus-client)",
        [],
    ]


def test_multiprocess_mode_mirrors_health_into_the_shared_files(tmp_path: Path) -> None:
    config, metrics = stores(tmp_path)
    (config / "p" / "b").write_text("{bad")
    code = f"""
        import json, os, threading
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from autoglm_runtime import ConfigClient
        from autoglm_runtime.observability import ConfigMetrics
        from autoglm_runtime.validation import CallableTokenizer, ContextWindowGuard, guarded

        @guarded(ContextWindowGuard(CallableTokenizer(lambda t: list(t.encode())), 10, message_tokens=0))
        def generate(prompt, max_tokens=1):
            return prompt

        with ConfigClient("file://{config}", "/p") as client:
            exporter = ConfigMetrics(client, interval=60)
            exporter.start()
            generate("ok")
            exporter.stop()  # mirrors once more
            threads = [t.name for t in threading.enumerate() if t.name.startswith("autoglm-metrics")]
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        values = {{
            s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in registry.collect() for s in family.samples
            if s.name.startswith(("autoglm_config_keys", "autoglm_config_updates_rejected_total",
                                  "autoglm_config_drift_corrected_total",
                                  "autoglm_guard_check_duration_seconds_count"))
        }}
        print(json.dumps([threads, values, os.getpid()]))
    """
    threads, values, _ = run(code, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})  # type: ignore[misc]
    assert threads == []  # stop() ended the mirror thread
    assert values == {
        # A config gauge is one series per root, merged over the live processes (keys: the most any holds);
        # counters are summed over processes.
        'autoglm_config_keys{"root": "/p"}': 1.0,
        'autoglm_config_updates_rejected_total{"code": "E0409", "reason": "decode", "root": "/p"}': 1.0,
        'autoglm_config_updates_rejected_total{"code": "E0409", "reason": "validator", "root": "/p"}': 0.0,
        # Counters still at 0 are in the files too: the alert rules' increase() needs them before the first event.
        'autoglm_config_drift_corrected_total{"root": "/p"}': 0.0,
        'autoglm_guard_check_duration_seconds_count{"surface": "decorator"}': 1.0,
    }


def test_no_span_is_started_until_the_application_sets_a_provider_and_then_every_call_has_one() -> None:
    out = run(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from autoglm_runtime.observability import ModelCall, _tracing

        proxy = _tracing.tracer()
        started = []
        real_start = proxy.start_span
        proxy.start_span = lambda *a, **k: started.append(a[0]) or real_start(*a, **k)
        with ModelCall("m", "echo"):
            before = _tracing.current_ids()
        unset = list(started)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with ModelCall("m", "echo"):
            inside = _tracing.current_ids()
        spans = exporter.get_finished_spans()
        print(json.dumps({
            "unset": unset, "before": before, "started": started, "inside": inside is not None,
            "spans": [(s.name, dict(s.attributes)) for s in spans],
        }))
        """
    )
    assert out == {
        "unset": [],
        "before": None,
        "started": ["autoglm.model.call"],
        "inside": True,
        "spans": [["autoglm.model.call", {"autoglm.model.name": "m", "autoglm.model.method": "echo"}]],
    }


def test_multiprocess_mode_exports_every_series_one_process_does_counters_at_zero_included(tmp_path: Path) -> None:
    # A counter series that first appears at 1 hides that increment from increase() and rate(): the alerting
    # rules on drift, rejections and restarts would miss the first one. Every series of the single-process
    # collectors (reasons that never happened included) must be in the files from the first mirror on.
    config, metrics = stores(tmp_path)
    code = f"""
        import json
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from autoglm_runtime import ConfigClient
        from autoglm_runtime.observability import ConfigMetrics, ModelMetrics

        class Loader:
            def health(self):
                return {{"m": {{"replicas": [{{"state": "ready", "pid": 1}}], "inflight": 0, "queued": 0}}}}

        def series(families):
            return sorted(
                [s.name, sorted((k, v) for k, v in s.labels.items() if k != "pid")]
                for family in families for s in family.samples
            )

        with ConfigClient("file://{config}", "/p") as client:
            exporters = [ConfigMetrics(client, multiprocess=True), ModelMetrics(Loader(), multiprocess=True)]
            for exporter in exporters:
                exporter.mirror()
            one_process = series(f for e in exporters for f in e.collect())
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        print(json.dumps([one_process, series(registry.collect())]))
    """
    one_process, multiprocess = run(code, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})  # type: ignore[misc]
    assert ["autoglm_config_drift_corrected_total", [["root", "/p"]]] in one_process
    assert ["autoglm_worker_starts_total", [["model", "m"], ["reason", "crash"]]] in one_process
    assert multiprocess == one_process


def test_a_dead_process_gauges_leave_the_exposition_at_the_next_mirror_of_a_live_one(tmp_path: Path) -> None:
    # uvicorn --workers restarts a worker that died and has no hook to call mark_process_dead from: the dead
    # worker's last sync timestamp stayed exported for good and fired AutoGLMConfigStale after 5 minutes. Here the
    # dead process held a key the live ones no longer have: merged over the processes (the most keys any holds),
    # its count would stay the one exported.
    config, metrics = stores(tmp_path)
    (config / "p" / "b").write_text("2")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    mirror = f"""
        import glob, json, os, sys
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from autoglm_runtime import ConfigClient
        from autoglm_runtime.observability import ConfigMetrics

        with ConfigClient("file://{config}", "/p") as client:
            ConfigMetrics(client, multiprocess=True).mirror()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        keys = [
            s.value for family in registry.collect() for s in family.samples if s.name == "autoglm_config_keys"
        ]
        files = glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "gauge_live*_*.db"))
        pids = sorted({{int(os.path.basename(f)[: -len(".db")].rpartition("_")[2]) for f in files}})
        print(json.dumps([os.getpid(), keys, pids]), flush=True)
        sys.stdin.read()  # until told to end
    """
    dead_pid, keys, pids = run(mirror, env)  # type: ignore[misc]
    assert (keys, pids) == ([2.0], [dead_pid])
    (config / "p" / "b").unlink()
    live = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(mirror)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert live.stdout is not None
        live_pid, _, _ = json.loads(live.stdout.readline())
        pid, keys, pids = run(mirror, env)  # type: ignore[misc]
        assert (keys, pids) == ([1.0], sorted([live_pid, pid]))
    finally:
        live.communicate(b"", timeout=60)


def test_multiprocess_mode_a_gauge_gone_from_health_is_no_longer_a_value(tmp_path: Path) -> None:
    # One process: a closed model's series leave the exposition. The files cannot drop a series: it was left at
    # its last value (autoglm_worker_up 1 for a model no longer loaded); it is NaN, which no rule compares true.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = """
        import json, math
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from autoglm_runtime.observability import ModelMetrics

        class Loader:
            models = {"m": {"replicas": [{"state": "ready", "pid": 1}], "inflight": 2, "queued": 0}}
            def health(self):
                return self.models

        def up():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            values = {
                s.name: s.value for family in registry.collect() for s in family.samples
                if s.name in ("autoglm_worker_up", "autoglm_worker_inflight", "autoglm_worker_starts_total")
                and s.labels.get("reason", "initial") == "initial"
            }
            return {name: "nan" if math.isnan(v) else v for name, v in sorted(values.items())}

        loader = Loader()
        exporter = ModelMetrics(loader, multiprocess=True)
        exporter.mirror()
        loaded = up()
        loader.models = {}  # closed
        exporter.mirror()
        closed = up()
        loader.models = {"m": {"replicas": [{"state": "ready", "pid": 2}], "inflight": 0, "queued": 0}}
        exporter.mirror()  # loaded again
        print(json.dumps([loaded, closed, up()]))
    """
    loaded, closed, again = run(code, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})  # type: ignore[misc]
    assert loaded == {"autoglm_worker_inflight": 2.0, "autoglm_worker_starts_total": 1.0, "autoglm_worker_up": 1.0}
    # (a counter keeps its count, as counts of a process that ended stay in the sums)
    assert closed == {"autoglm_worker_inflight": "nan", "autoglm_worker_starts_total": 1.0, "autoglm_worker_up": "nan"}
    assert again == {"autoglm_worker_inflight": 0.0, "autoglm_worker_starts_total": 2.0, "autoglm_worker_up": 1.0}


def test_multiprocess_mode_is_what_prometheus_client_chose_at_its_import() -> None:
    # prometheus_client picks its value class once, at import: a directory named after that changes nothing, and
    # an exporter that mirrored into files then would leave the default registry without its metrics.
    out = run(
        """
        import json, os
        import prometheus_client
        from autoglm_runtime.observability import multiprocess_mode
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = "/nonexistent"  # too late
        print(json.dumps(multiprocess_mode()))
        """
    )
    assert out is False


def test_a_dead_process_whose_gauges_cannot_be_removed_is_logged_once_and_the_mirror_goes_on(tmp_path: Path) -> None:
    # mark_process_dead failing with anything but ENOENT (EACCES, EIO; here EISDIR, which root gets too) ended
    # the mirror thread: the process then exported frozen values for good.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    unremovable, removable = (int(run("import os; print(os.getpid())")) for _ in range(2))  # type: ignore[call-overload]
    (metrics / f"gauge_liveall_{unremovable}.db").mkdir()
    (metrics / f"gauge_liveall_{removable}.db").write_bytes(b"")
    code = """
        import io, json, os, threading
        from autoglm_runtime.logging import configure_json_logging
        from autoglm_runtime.observability import ModelMetrics

        stream = io.StringIO()
        configure_json_logging("WARNING", stream=stream)
        calls, enough = [], threading.Event()

        class Loader:
            def health(self):
                calls.append(None)
                if len(calls) in (2, 3):
                    raise RuntimeError("health failed")
                if len(calls) >= 6:
                    enough.set()
                return {"m": {"replicas": [{"state": "ready", "pid": 1}], "inflight": 0, "queued": 0}}

        exporter = ModelMetrics(Loader(), interval=0.01, multiprocess=True)
        with exporter:
            assert enough.wait(60), "the mirror thread stopped"
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        left = sorted(name for name in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]) if "liveall" in name)
        print(json.dumps([left, [[line["error_code"], line["message"]] for line in lines]]))
    """
    left, logged = run(code, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})  # type: ignore[misc]
    assert f"gauge_liveall_{removable}.db" not in left
    assert f"gauge_liveall_{unremovable}.db" in left
    assert logged == [
        [
            "E0004",
            f"the live gauges of process {unremovable}, which ended, cannot be removed from {metrics} ([Errno 21] "
            f"Is a directory: '{metrics}/gauge_liveall_{unremovable}.db'): its last values stay in the exposition; "
            f"make the directory writable by this server, or remove {metrics}/gauge_live*_{unremovable}.db",
        ],
        [
            "E0004",
            "ModelMetrics could not copy health() into the multiprocess metrics files; it tries again every 0.01 s",
        ],
    ]


def test_concurrent_mirrors_of_one_exporter_add_each_increment_once(tmp_path: Path) -> None:
    # mirror() is public and its thread calls it too: both read the last count, both added the same delta.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = """
        import itertools, sys, threading

        class Growing(Client):
            counts = itertools.count(1)
            def health(self):
                self.drift = next(self.counts)
                return super().health()

        sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes: the race shows at once
        client = Growing()
        exporter = ConfigMetrics(client, multiprocess=True)
        threads = [threading.Thread(target=lambda: [exporter.mirror() for _ in range(300)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        exporter.mirror()
        print(json.dumps([client.drift, exported()]))
    """
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    last, exported = run(DRIFT + textwrap.dedent(code), env)  # type: ignore[misc]
    assert exported == last


def test_the_overload_series_the_alerts_read_exist_at_zero_before_the_first_refusal() -> None:
    # AutoGLMGuardOverloaded and AutoGLMModelOverloaded take rate() of these counters: a series that first appeared
    # at its first refusal (at 1) hid that refusal from them. A fresh interpreter: no refusal counted before.
    out = run(
        """
        import json
        from prometheus_client import REGISTRY
        from autoglm_runtime.observability._events import ModelCallMetrics
        from autoglm_runtime.validation import ValidationMiddleware

        def value(name, labels):
            return REGISTRY.get_sample_value(name, labels)

        guard = "autoglm_guard_rejections_total", {"code": "E0516", "surface": "http"}
        before = [value(*guard)]
        ValidationMiddleware(lambda scope, receive, send: None, offload=False)
        before.append(value(*guard))  # (no guard threads: nothing refuses as overloaded)
        ValidationMiddleware(lambda scope, receive, send: None)
        ModelCallMetrics("m")  # what a LoadedModel records with, made as it loads
        after = [
            value(*guard),
            value("autoglm_worker_calls_total", {"model": "m", "outcome": "E0106"}),
            value("autoglm_worker_calls_total", {"model": "m", "outcome": "ok"}),
        ]
        print(json.dumps([before, after]))
        """
    )
    assert out == [[None, None], [0.0, 0.0, 0.0]]


def test_an_exporter_made_again_for_the_same_source_adds_only_what_is_new(tmp_path: Path) -> None:
    # Each exporter remembered its own last counts, and counted a source it had not seen from zero: the second
    # ConfigMetrics of a client (after the first stopped) added the client's whole count to the files again.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = """
        client = Client()
        client.drift = 3
        with ConfigMetrics(client, multiprocess=True, interval=3600):
            pass  # (mirrors as it starts and as it stops)
        first = exported()
        client.drift = 5
        with ConfigMetrics(client, multiprocess=True, interval=3600):
            pass
        print(json.dumps([first, exported()]))
    """
    assert run(DRIFT + textwrap.dedent(code), {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}) == [3.0, 5.0]


def test_a_new_source_on_the_same_root_adds_its_whole_count_however_far_past_the_old_one(tmp_path: Path) -> None:
    # The last counts were shared by every source of a series: a new client on the old one's root whose count
    # (5) was past the old one's (3) at its first mirror added only the difference (exported 5 for 3 + 5), and
    # two clients of one root mirrored in turn took each other's counts for their own.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = """
        old = Client()
        old.drift = 3
        with ConfigMetrics(old, multiprocess=True, interval=3600):
            pass
        exported_once = exported()
        new = Client()
        new.drift = 5
        with ConfigMetrics(new, multiprocess=True, interval=3600) as new_metrics:
            pass
        after_new = exported()
        old_metrics = ConfigMetrics(old, multiprocess=True)
        old.drift, new.drift = 4, 7
        old_metrics.mirror()
        new_metrics.mirror()
        print(json.dumps([exported_once, after_new, exported()]))
    """
    exported = run(DRIFT + textwrap.dedent(code), {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})
    assert exported == [3.0, 8.0, 11.0]


def test_a_source_without_weak_references_is_counted_by_its_exporter(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = """
        class Slotted:
            __slots__ = ("drift",)
            root = "/p"
            def health(self):
                return {"drift_corrected": self.drift}

        client = Slotted()
        client.drift = 3
        exporter = ConfigMetrics(client, multiprocess=True)
        exporter.mirror()
        client.drift = 5
        exporter.mirror()
        print(json.dumps(exported()))
    """
    assert run(DRIFT + textwrap.dedent(code), {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}) == 5.0


def test_a_child_forked_while_a_mirror_held_the_lock_mirrors_its_own_files(tmp_path: Path) -> None:
    # The exporters of a process share one lock: a child forked while a mirror held it (a preloading server's
    # master exporting as it forks) must not wait for it for ever, nor start from its parent's counts.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = """
        import os, threading, time
        from autoglm_runtime.observability import collectors

        Client.drift = 2
        ConfigMetrics(Client(), multiprocess=True).mirror()
        held, forked = threading.Event(), threading.Event()

        def mirroring():  # (as a mirror thread holds it during its copy)
            with collectors._mirrored.lock:
                held.set()
                forked.wait()

        thread = threading.Thread(target=mirroring)
        thread.start()
        held.wait()
        child = os.fork()
        if child == 0:
            ConfigMetrics(Client(), multiprocess=True).mirror()
            os._exit(0)
        forked.set()
        thread.join()
        deadline = time.monotonic() + 60
        while (done := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(child, 9)
            os.waitpid(child, 0)
        print(json.dumps([done[0] == child and os.waitstatus_to_exitcode(done[1]), exported()]))
    """
    # Summed over both processes' files: each counted the client's 2 once.
    assert run(DRIFT + textwrap.dedent(code), {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}) == [0, 4.0]
