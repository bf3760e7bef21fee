"""Whole-process wall time of ``autoglm-runtime check-deps`` against ``pip check``, ``uv pip check`` and pipdeptree.

Builds one environment of 260 generated distributions with inter-dependencies (plus pip and pipdeptree,
installed from the package index into the benchmark's environment), with a few planted problems: a version
conflict, a missing requirement, a requested extra whose dependency is missing, two distributions sharing a
top-level module, a second copy of a distribution on the path and a cycle. A quarter of the generated
METADATA files carry a multi-line License folded as meson-python and hatchling fold it. Each command runs as
its own process, several times, interleaved; the medians and ratios are printed along with how many problems
each command reported. ``uv (no cache)`` is ``uv pip check --no-cache``: uv then asks the interpreter what it
is instead of reading that from its cache, as ``check-deps (cold)`` does; its ratio is printed last and
apart, the targets being against ``uv pip check``. ``check-deps (cold)`` runs with ``--no-cache``;
``check-deps (warm)`` reuses the caches of the previous run (per distribution, the target's path, and the
stored report); how often they hit is printed too.

Every Python command runs as an installed tool runs: with byte code compiled (``compileall`` of the project,
its virtual environment and the benchmark's environment first, as ``pip install`` leaves them) and without
``PYTHONDONTWRITEBYTECODE``, which would otherwise make each run compile ``packaging`` and the checker from
source. The load average is printed before and after: the machine may be shared.
Run: ``.venv/bin/python benchmarks/check_deps.py``.
"""

from __future__ import annotations

import compileall
import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

from autoglm_runtime.testing.wheels import build_wheel

DISTS = 260
LICENSE = ["License: BSD 3-Clause", "        ", "        Copyright (c) the authors", "        "]
REPEATS = 15  # the medians of 15 interleaved runs: a burst of load on a shared machine moves none of them
BIN = Path(sys.executable).parent


def _build_env(root: Path) -> Path:
    rng = random.Random(42)
    wheels = root / "wheels"
    names = [f"pkg{i:03d}" for i in range(DISTS)]
    for i, name in enumerate(names):
        deps = [f"{names[j]}>=1.0" for j in sorted(rng.sample(range(i), min(i, rng.randint(0, 4))))]
        extras = {"extra": [f"{names[i - 1]}>=1.0"]} if i % 25 == 1 else None
        headers = LICENSE if i % 4 == 0 else []
        build_wheel(wheels, name, "1.0", requires=deps, extras=extras, headers=headers)
    # Planted problems: conflict, missing, extra with a missing dependency, shadowed module, cycle, duplicate.
    build_wheel(wheels, "conflicting", "1.0", requires=["pkg000<1.0"])
    build_wheel(wheels, "needs-missing", "1.0", requires=["not-installed>=1"])
    build_wheel(wheels, "wants-extra", "1.0", requires=["shipped-extra[fast]"])
    build_wheel(wheels, "shipped-extra", "1.0", extras={"fast": ["speedups>=1"]})
    build_wheel(wheels, "jwt", "1.0", modules={"jwt/__init__.py": "X = 1\n"})
    build_wheel(wheels, "PyJWT", "2.8.0", modules={"jwt/__init__.py": "X = 2\n"})
    build_wheel(wheels, "cyc-a", "1.0", requires=["cyc-b"])
    build_wheel(wheels, "cyc-b", "1.0", requires=["cyc-a"])
    second = build_wheel(root / "second", "pkg000", "0.9")
    env = root / "env"
    base = Path(sysconfig.get_config_var("BINDIR")) / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([BIN / "uv", "venv", "-q", "--python", str(base), str(env)], check=True)
    env_python = env / "bin" / "python"
    bundled = Path(sysconfig.get_path("stdlib")) / "ensurepip" / "_bundled"
    pip_wheel = sorted(bundled.glob("pip-*.whl"))[-1]
    all_wheels = sorted(str(w) for w in wheels.glob("*.whl"))
    cmd = ["uv", "pip", "install", "-q", "--python", str(env_python), "--no-deps", *all_wheels, str(pip_wheel)]
    subprocess.run([str(BIN / cmd[0]), *cmd[1:]], check=True)
    # pipdeptree from the package index (the benchmark's one download); its own few dependencies come along.
    subprocess.run([str(BIN / "uv"), "pip", "install", "-q", "--python", str(env_python), "pipdeptree"], check=True)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([str(env_python), "-c", where], text=True).strip())
    with zipfile.ZipFile(second) as zf:
        zf.extractall(root / "extra-site")
    (site / "zz_extra.pth").write_text(f"{root / 'extra-site'}\n")
    return env_python


#: The environment every command runs with: as an installed tool, byte code used and written.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=ENV)
    return time.perf_counter() - start, done


def _compile(env_python: Path) -> None:
    import autoglm_runtime

    for root in (Path(autoglm_runtime.__file__).parent, Path(sysconfig.get_path("purelib"))):
        compileall.compile_dir(str(root), quiet=1)
    code = "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path('purelib'), quiet=1)"
    subprocess.run([str(env_python), "-c", code], check=True, env=ENV)


def _probe_cache_valid(env_python: Path) -> str:
    """How many entries of the probe's cache hold for the environment as it is (the warm runs' hit rate)."""
    from autoglm_runtime.cli._early_probe import cache_path
    from autoglm_runtime.deps._scripts import probe_cache

    every = probe_cache.load_cache(cache_path(str(env_python)))
    cache = {k: v for k, v in every.items() if not k.startswith("@")}  # distributions, not decisions or facts
    now = time.time_ns()
    valid = sum(
        1
        for meta_dir, (stamp, _, trusted) in cache.items()  # type: ignore[misc]
        if (trusted and probe_cache.holds(meta_dir, stamp)) or probe_cache.stamp(meta_dir, now)[0] == stamp
    )
    trusted_count = sum(1 for entry in cache.values() if entry[2] is True)  # type: ignore[index]
    others = sorted({k.partition("\0")[0] for k in every if k.startswith("@")})
    return f"{valid}/{len(cache)} entries hold ({trusted_count} checked without a listing), also cached: {others}"


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env_python = _build_env(Path(tmp))
        ours = [str(BIN / "autoglm-runtime"), "check-deps", "--python", str(env_python), "--json"]
        commands = {
            "check-deps (cold)": [*ours, "--no-cache"],
            "check-deps (warm)": ours,
            "pip check": [str(env_python), "-m", "pip", "check"],
            "uv pip check": [str(BIN / "uv"), "pip", "check", "--python", str(env_python)],
            # uv keeps what it learnt of an interpreter in its cache, so `uv pip check` starts no Python; with
            # --no-cache it asks the interpreter, as check-deps (cold) does. Printed for that comparison only.
            "uv (no cache)": [str(BIN / "uv"), "pip", "check", "--no-cache", "--python", str(env_python)],
            "pipdeptree": [str(env_python.parent / "pipdeptree"), "-w", "warn"],
        }
        _compile(env_python)
        loads = [_load()]
        subprocess.run(ours, capture_output=True, check=False, env=ENV)  # fills the caches the warm runs use
        subprocess.run(ours, capture_output=True, check=False, env=ENV)
        from autoglm_runtime.cli._early_probe import cache_path
        from autoglm_runtime.cli._report_cache import entry_path

        entry = Path(entry_path(cache_path(str(env_python))))
        times: dict[str, list[float]] = {name: [] for name in commands}
        outputs: dict[str, subprocess.CompletedProcess[str]] = {}
        report_hits = 0
        for _ in range(REPEATS):  # interleaved, so load on the machine hits every command alike
            for name, cmd in commands.items():
                before = entry.stat().st_mtime_ns if entry.exists() else None
                elapsed, outputs[name] = _time(cmd)
                times[name].append(elapsed)
                if name == "check-deps (warm)" and before is not None and entry.stat().st_mtime_ns == before:
                    report_hits += 1  # a hit prints the stored report and leaves the entry as it was
        loads.append(_load())
        report = json.loads(outputs["check-deps (cold)"].stdout)
        warm = json.loads(outputs["check-deps (warm)"].stdout)
        assert warm["findings"] == report["findings"], "the warm run must report what the cold run reports"
        uv_lines = outputs["uv pip check"].stderr.splitlines()
        uv_cold_lines = outputs["uv (no cache)"].stderr.splitlines()
        ours_found = f"{report['summary']['findings']} findings {report['summary']['by_kind']}"
        deptree = outputs["pipdeptree"].stderr.splitlines()
        found = {
            "check-deps (cold)": ours_found,
            "check-deps (warm)": ours_found,
            "pip check": f"{len(outputs['pip check'].stdout.splitlines())} problems",
            "uv pip check": f"{sum(1 for line in uv_lines if line.startswith('The package'))} problems",
            "uv (no cache)": f"{sum(1 for line in uv_cold_lines if line.startswith('The package'))} problems",
            "pipdeptree": f"{sum(1 for line in deptree if line.startswith(' '))} warning lines",
        }
        environment = report["environment"]
        print(
            f"environment: {environment['distributions']} distributions, Python {environment['python_version']}; "
            f"{REPEATS} runs of each command, interleaved"
        )
        print(f"machine: {loads[0]} before, {loads[1]} after")
        print(f"warm caches: probe cache {_probe_cache_valid(env_python)}; stored report {report_hits}/{REPEATS} hits")
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, median in medians.items():
            exit_code = outputs[name].returncode
            print(f"  {name:<17} median {median * 1000:7.1f} ms  (exit {exit_code}; reported {found[name]})")
        for mode in ("cold", "warm"):
            ours_ms = medians[f"check-deps ({mode})"]
            for peer in ("pip check", "uv pip check", "pipdeptree"):
                print(f"ratio check-deps ({mode}) / {peer}: {ours_ms / medians[peer]:5.2f}x")
        cold_to_uv = medians["check-deps (cold)"] / medians["uv (no cache)"]
        print(f"ratio check-deps (cold) / uv pip check --no-cache: {cold_to_uv:5.2f}x")


if __name__ == "__main__":
    main()
