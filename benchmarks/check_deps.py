"""Whole-process wall time of ``autoglm-runtime check-deps`` against ``pip check`` and ``uv pip check``.

Builds one environment of 150 generated distributions with inter-dependencies (plus pip itself), with a few
planted problems: a version conflict, a missing requirement, a requested extra whose dependency is missing,
two distributions sharing a top-level module, a second copy of a distribution on the path and a cycle. Each
command runs as its own process, several times; the medians and ratios are printed along with how many
problems each command reported. Run: ``.venv/bin/python benchmarks/check_deps.py``.
"""

from __future__ import annotations

import json
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

DISTS = 150
REPEATS = 9
BIN = Path(sys.executable).parent


def _build_env(root: Path) -> Path:
    rng = random.Random(42)
    wheels = root / "wheels"
    names = [f"pkg{i:03d}" for i in range(DISTS)]
    for i, name in enumerate(names):
        deps = [f"{names[j]}>=1.0" for j in sorted(rng.sample(range(i), min(i, rng.randint(0, 4))))]
        extras = {"extra": [f"{names[i - 1]}>=1.0"]} if i % 25 == 1 else None
        build_wheel(wheels, name, "1.0", requires=deps, extras=extras)
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
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([str(env_python), "-c", where], text=True).strip())
    with zipfile.ZipFile(second) as zf:
        zf.extractall(root / "extra-site")
    (site / "zz_extra.pth").write_text(f"{root / 'extra-site'}\n")
    return env_python


def _time(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env_python = _build_env(Path(tmp))
        commands = {
            "check-deps": [str(BIN / "autoglm-runtime"), "check-deps", "--python", str(env_python), "--json"],
            "pip check": [str(env_python), "-m", "pip", "check"],
            "uv pip check": [str(BIN / "uv"), "pip", "check", "--python", str(env_python)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        outputs: dict[str, subprocess.CompletedProcess[str]] = {}
        for _ in range(REPEATS):  # interleaved, so load on the machine hits every command alike
            for name, cmd in commands.items():
                elapsed, outputs[name] = _time(cmd)
                times[name].append(elapsed)
        report = json.loads(outputs["check-deps"].stdout)
        uv_lines = outputs["uv pip check"].stderr.splitlines()
        found = {
            "check-deps": f"{report['summary']['findings']} findings {report['summary']['by_kind']}",
            "pip check": f"{len(outputs['pip check'].stdout.splitlines())} problems",
            "uv pip check": f"{sum(1 for line in uv_lines if line.startswith('The package'))} problems",
        }
        environment = report["environment"]
        print(
            f"environment: {environment['distributions']} distributions, Python {environment['python_version']}; "
            f"{REPEATS} runs of each command, interleaved"
        )
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, median in medians.items():
            exit_code = outputs[name].returncode
            print(f"  {name:<13} median {median * 1000:7.1f} ms  (exit {exit_code}; reported {found[name]})")
        ours = medians["check-deps"]
        print(f"ratio pip check / check-deps:    {medians['pip check'] / ours:5.2f}x")
        print(f"ratio uv pip check / check-deps: {medians['uv pip check'] / ours:5.2f}x")


if __name__ == "__main__":
    main()
