"""Benchmark of the isolated loader against its peers, measured in the same run.

1. BuiltEnvironment creation for one requirement set (30 generated pure-Python wheels, offline wheelhouse):
   cold ``EnvironmentBuilder.ensure`` (uv venv + uv pip install + check-deps + atomic rename) against
   running ``uv venv`` + ``uv pip install`` by hand; warm ``ensure`` (the key exists) on its own.
   Targets: warm <= 50 ms, cold <= 1.2x bare uv.
2. Call round trip with a 1 KB payload: ``LoadedModel.call`` (process backend: socketpair, length-prefixed
   JSON) against a ``multiprocessing.Queue`` worker (the pattern MLServer uses). Target: not slower.

Run: ``.venv/bin/python benchmarks/isolation.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autoglm_runtime.deps import load_manifest
from autoglm_runtime.isolation import EnvironmentBuilder, ModelLoader
from autoglm_runtime.isolation.envs.build import find_uv
from autoglm_runtime.testing.wheels import build_wheel

ROUNDS = 7
WARM_ROUNDS = 200
CALLS = 3000
BLOCK = 100
PAYLOAD = {"text": "x" * 1000}  # ~1 KB once encoded
N_WHEELS = 30

MODEL = """
class Model:
    def echo(self, value):
        return value

def load():
    return Model()
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _setup(base: Path) -> tuple[Path, Path, list[str]]:
    wheels = base / "wheels"
    requirements = []
    for i in range(N_WHEELS):
        name = f"benchlib{i:02d}"
        modules = {f"{name}/__init__.py": "VALUE = 1\n", **{f"{name}/m{j}.py": "X = 1\n" * 50 for j in range(10)}}
        build_wheel(wheels, name, "1.0", modules=modules)
        requirements.append(f"{name}==1.0")
    model = base / "model"
    model.mkdir()
    reqs = ", ".join(f'"{r}"' for r in requirements)
    (model / "model.toml").write_text(
        f'[model]\nname = "bench"\nentrypoint = "bench_model:load"\nrequirements = [{reqs}]\n'
    )
    (model / "bench_model.py").write_text(MODEL)
    return wheels, model, requirements


def _bare_uv(uv: str, wheels: Path, requirements: list[str], target: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [uv, "venv", "--no-config", "--python", sys.executable, str(target)], check=True, capture_output=True
    )
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--no-config",
            "--offline",
            "--python",
            str(target / "bin" / "python"),
            "--no-index",
            "--find-links",
            str(wheels),
            *requirements,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def bench_environments(base: Path) -> dict[str, float]:
    uv = find_uv()
    assert uv is not None, "the benchmark compares against uv; pip install uv"
    wheels, model_dir, requirements = _setup(base)
    manifest = load_manifest(model_dir)
    _bare_uv(uv, wheels, requirements, base / "prime")  # fills uv's cache for both sides
    bare, ours, unchecked = [], [], []
    for i in range(ROUNDS):  # interleaved, so load from other processes hits both sides alike
        bare.append(_bare_uv(uv, wheels, requirements, base / f"bare-{i}"))
        for check, into in ((True, ours), (False, unchecked)):
            builder = EnvironmentBuilder(base / f"ours-{i}-{check}", wheelhouse=wheels, offline=True, check=check)
            builder.interpreter()  # describing the interpreter is cached per process; not part of a build
            start = time.perf_counter()
            env = builder.ensure(manifest)
            into.append(time.perf_counter() - start)
            assert env.created
    warm_builder = EnvironmentBuilder(base / "ours-0-True", wheelhouse=wheels, offline=True)
    warm = []
    for _ in range(WARM_ROUNDS):
        start = time.perf_counter()
        env = warm_builder.ensure(manifest)
        warm.append(time.perf_counter() - start)
        assert not env.created
    return {
        "bare_uv": statistics.median(bare),
        "cold": statistics.median(ours),
        "cold_unchecked": statistics.median(unchecked),
        "warm_p50": statistics.median(warm),
        "warm_max": max(warm),
    }


def _queue_worker(requests: Any, responses: Any) -> None:
    while True:
        item = requests.get()
        if item is None:
            return
        responses.put(item)


def bench_round_trip(base: Path) -> dict[str, float]:
    wheels, model_dir, _ = _setup(base / "rt")
    ours: list[float] = []
    peer: list[float] = []
    ctx = mp.get_context("spawn")
    requests, responses = ctx.Queue(), ctx.Queue()
    worker = ctx.Process(target=_queue_worker, args=(requests, responses), daemon=True)
    worker.start()
    with ModelLoader(base / "rt-envs", wheelhouse=wheels, offline=True, backend="process") as loader:
        model = loader.load(model_dir)
        for block in range(-2, CALLS // BLOCK):  # interleaved blocks; the first two only warm up
            sink: list[float] = [] if block < 0 else ours
            for _ in range(BLOCK):
                start = time.perf_counter()
                model.call("echo", PAYLOAD, timeout=30)
                sink.append(time.perf_counter() - start)
            sink = [] if block < 0 else peer
            for _ in range(BLOCK):
                start = time.perf_counter()
                requests.put(("echo", (PAYLOAD,), {}))
                responses.get(timeout=30)
                sink.append(time.perf_counter() - start)
    requests.put(None)
    worker.join(10)
    return {
        "ours_p50": _percentile(ours, 0.50),
        "ours_p99": _percentile(ours, 0.99),
        "queue_p50": _percentile(peer, 0.50),
        "queue_p99": _percentile(peer, 0.99),
    }


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="autoglm-bench-"))
    try:
        env = bench_environments(base)
        rt = bench_round_trip(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ms = 1000.0
    us = 1_000_000.0
    print(f"environment for {N_WHEELS} wheels, offline wheelhouse, median of {ROUNDS} (uv cache warm on both sides)")
    print(f"  bare uv venv + uv pip install : {env['bare_uv'] * ms:8.1f} ms")
    cold, unchecked, bare = env["cold"], env["cold_unchecked"], env["bare_uv"]
    print(f"  EnvironmentBuilder cold       : {cold * ms:8.1f} ms   ratio {cold / bare:.2f}x  (target <= 1.20x)")
    print(f"    same with check-deps off    : {unchecked * ms:8.1f} ms   ratio {unchecked / bare:.2f}x")
    print(f"  EnvironmentBuilder warm p50   : {env['warm_p50'] * ms:8.2f} ms   max {env['warm_max'] * ms:.2f} ms")
    print("                                  (target <= 50 ms)")
    print(f"call round trip, 1 KB payload, {CALLS} calls")
    print(f"  LoadedModel.call      p50 {rt['ours_p50'] * us:7.1f} us   p99 {rt['ours_p99'] * us:7.1f} us")
    print(f"  multiprocessing.Queue p50 {rt['queue_p50'] * us:7.1f} us   p99 {rt['queue_p99'] * us:7.1f} us")
    print(
        f"  ratio (ours / queue)  p50 {rt['ours_p50'] / rt['queue_p50']:.2f}x      "
        f"p99 {rt['ours_p99'] / rt['queue_p99']:.2f}x  (target <= 1.00x)"
    )


if __name__ == "__main__":
    main()
