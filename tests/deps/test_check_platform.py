"""``unsupported-wheel``: wheels built for another interpreter or platform, as ``pip check`` reports them."""

from __future__ import annotations

import platform
import sys
import zipfile
from pathlib import Path

import pytest
from tests.deps._check_data import dist, environment

from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps.check import check_probed
from autoglm_runtime.deps.probe import parse_probe
from autoglm_runtime.testing.wheels import build_wheel

#: This machine, as a CPython 3.11 target on it reports itself.
HERE311 = {
    **_probe.marker_environment(),
    "implementation_name": "cpython",
    "python_full_version": "3.11.7",
    "python_version": "3.11",
}
MACHINE = platform.machine()


def _kinds(*dists: dict[str, object], markers: dict[str, str] = HERE311, abiflags: str | None = "") -> list[str]:
    env = environment(*dists, markers=markers)
    env.abiflags = abiflags
    return [f.kind for f in check_probed(env).findings]


@pytest.mark.skipif(sys.platform != "linux", reason="manylinux tags")
def test_a_wheel_of_another_python_is_unsupported_as_pip_check_says() -> None:
    cp312 = [f"cp312-cp312-manylinux_2_17_{MACHINE}", f"cp312-cp312-manylinux2014_{MACHINE}"]
    env = environment(dist("pydantic_core", "2.50.5", wheel_tags=cp312), markers=HERE311)
    env.abiflags = ""
    (finding,) = check_probed(env).findings
    assert (finding.kind, finding.packages, finding.severity) == ("unsupported-wheel", ("pydantic-core",), "error")
    assert finding.message == (
        f"pydantic_core 2.50.5 was built for another interpreter or platform ({', '.join(cp312)}); /t/bin/python "
        "(CPython 3.11.7) supports none of its tags, so it cannot be imported"
    )
    assert (
        finding.hint
        == "reinstall it for this interpreter: pip install --force-reinstall --no-deps 'pydantic_core==2.50.5'"
    )
    assert finding.details == {"wheel_tags": cp312}


@pytest.mark.skipif(sys.platform != "linux", reason="manylinux tags")
@pytest.mark.parametrize(
    ("tags", "abiflags", "kinds"),
    [
        ([f"cp311-cp311-manylinux_2_17_{MACHINE}"], "", []),
        ([f"cp38-abi3-manylinux_2_17_{MACHINE}"], "", []),  # the stable ABI of 3.8 and later
        ([f"cp311-cp311t-manylinux_2_17_{MACHINE}"], "", ["unsupported-wheel"]),  # free-threaded only
        ([f"cp311-cp311t-manylinux_2_17_{MACHINE}"], "t", []),
        ([f"cp311-cp311d-manylinux_2_17_{MACHINE}"], "d", []),
        ([f"cp311-cp311-manylinux_2_17_{MACHINE}"], "d", []),  # a debug build loads normal extensions too
        ([f"cp311-cp311t-manylinux_2_17_{MACHINE}"], "td", []),
        ([f"cp311-cp311-manylinux_2_17_{MACHINE}"], "td", ["unsupported-wheel"]),
        (["py2-none-any"], "", ["unsupported-wheel"]),  # pip check says so too
        (["py2.py3-none-any"], "", []),
        (["py311-none-any"], "", []),
        (["cp311-cp311-win_amd64"], "", ["unsupported-wheel"]),
        (["cp311-cp311-win_amd64"], None, []),  # an interpreter without sys.abiflags: not judged
        (["not a tag"], "", []),
    ],
)
def test_which_tags_the_target_supports(tags: list[str], abiflags: str | None, kinds: list[str]) -> None:
    assert _kinds(dist("x", "1.0", wheel_tags=tags), abiflags=abiflags) == kinds


def test_another_machine_or_implementation_is_not_judged() -> None:
    win = {**HERE311, "sys_platform": "win32", "platform_machine": "AMD64"}
    # (a Windows wheel: this machine's tags would refuse it, the Windows target's accept it)
    assert _kinds(dist("x", "1.0", wheel_tags=["cp311-cp311-win_amd64"]), markers=win) == []
    pypy = {**HERE311, "implementation_name": "pypy"}
    assert _kinds(dist("x", "1.0", wheel_tags=["cp311-cp311-win_amd64"]), markers=pypy) == []


def test_the_probe_reads_the_wheel_tags_and_the_abi_flags(tmp_path: Path) -> None:
    site = tmp_path / "site"
    native = {"native/__init__.py": "", "native/_core.cpython-39-x86_64-linux-gnu.so": b"\x7fELF"}
    for wheel in (
        build_wheel(tmp_path / "w", "pure", "1.0", tag="py2-none-any"),
        build_wheel(tmp_path / "w", "native", "1.0", modules=native, tag="cp39-cp39-manylinux_2_17_x86_64"),
    ):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    dists = {d["name"]: d["wheel_tags"] for d in _probe.collect([str(site)])}
    # Only a wheel with compiled modules has its WHEEL read: the many pure ones cost no read.
    assert dists == {"pure": [], "native": ["cp39-cp39-manylinux_2_17_x86_64"]}
    data = _probe.probe()
    assert data["abiflags"] == getattr(sys, "abiflags", None)
    assert parse_probe(data, sys.executable).abiflags == data["abiflags"]
