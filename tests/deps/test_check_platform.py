"""``unsupported-wheel``: wheels built for another interpreter or platform, as ``pip check`` reports them."""

from __future__ import annotations

import platform
import sys
import zipfile
from pathlib import Path

import pytest
from tests.deps._check_data import dist, environment

from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps._scripts.markers import binary_platform
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
#: This interpreter's pointer width and C library, as a target like it reports them.
HERE_BINARY = (64 if sys.maxsize > 2**32 else 32, binary_platform()[1])


def _kinds(*dists: dict[str, object], markers: dict[str, str] = HERE311, abiflags: str | None = "") -> list[str]:
    env = environment(*dists, markers=markers)
    env.abiflags = abiflags
    env.binary_platform = HERE_BINARY  # type: ignore[assignment]
    return [f.kind for f in check_probed(env).findings]


@pytest.mark.skipif(sys.platform != "linux", reason="manylinux tags")
def test_a_wheel_of_another_python_is_unsupported_as_pip_check_says() -> None:
    cp312 = [f"cp312-cp312-manylinux_2_17_{MACHINE}", f"cp312-cp312-manylinux2014_{MACHINE}"]
    env = environment(dist("pydantic_core", "2.50.5", wheel_tags=cp312), markers=HERE311)
    env.abiflags = ""
    env.binary_platform = HERE_BINARY  # type: ignore[assignment]
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


@pytest.mark.skipif(sys.platform != "linux" or MACHINE != "x86_64", reason="an x86_64 Linux host")
def test_a_32_bit_or_musl_target_on_this_kernel_is_not_judged_by_our_tags() -> None:
    # A 32-bit interpreter on a 64-bit kernel reports platform_machine x86_64 (the kernel's) but loads i686
    # modules; a musl one loads musllinux modules. These are the WHEEL tags of real wheels built for them:
    # judged with this glibc x86_64 interpreter's tags they would all be "unsupported".
    i686 = ["cp311-cp311-manylinux_2_17_i686", "cp311-cp311-manylinux2014_i686"]
    musl = ["cp311-cp311-musllinux_1_1_x86_64"]
    for binary, tags in (([32, HERE_BINARY[1]], i686), ([64, ""], musl)):
        data = {
            "version": "3.11.7",
            "markers": HERE311,
            "path": ["/t/site-packages"],
            "distributions": [dist("markupsafe", "2.1.5", wheel_tags=tags)],
            "abiflags": "",
            "binary_platform": binary,
        }
        env = parse_probe(data, "/t/bin/python")
        assert env.binary_platform == tuple(binary)
        assert [f.kind for f in check_probed(env).findings] == []
    assert HERE_BINARY[1].startswith("glibc ")  # else the musl case above would be this machine's own
    # The same target reporting this interpreter's width and C library is judged: an i686 wheel is unsupported.
    assert _kinds(dist("markupsafe", "2.1.5", wheel_tags=i686)) == ["unsupported-wheel"]


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
    assert data["binary_platform"] == [HERE_BINARY[0], HERE_BINARY[1]]
    assert parse_probe(data, sys.executable).binary_platform == HERE_BINARY
