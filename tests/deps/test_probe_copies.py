"""The probe's judgement of metadata directories of one distribution in one directory (``same_files``), on
trees laid out as installers and Debian leave them."""

from __future__ import annotations

import site
import sys
import time
import zipfile
from pathlib import Path

import pytest

from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps._scripts import sites
from autoglm_runtime.deps._scripts.scan import OWNERSHIP_KEY
from autoglm_runtime.deps.check import check_probed
from autoglm_runtime.deps.probe import parse_probe
from autoglm_runtime.testing.wheels import build_wheel


def _install(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)


def _egg_info(site: Path, dirname: str, version: str, top_level: str = "crypt\n") -> Path:
    """An .egg-info as Debian ships it beside the .dist-info: PKG-INFO, requires.txt, top_level.txt, no RECORD."""
    egg = site / dirname
    egg.mkdir()
    (egg / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: crypt\nVersion: {version}\n")
    (egg / "requires.txt").write_text("cffi>=1.12\n")
    (egg / "top_level.txt").write_text(top_level)
    return egg


def _debian_site(tmp_path: Path, egg_version: str = "38.0.4", top_level: str = "crypt\n") -> Path:
    """crypt's .dist-info with a compiled module rewritten after install (Debian strips the .so files, so
    RECORD's hash is off) and an .egg-info of ``egg_version``."""
    site = tmp_path / "dist-packages"
    modules = {"crypt/__init__.py": "X = 1\n", "crypt/_rust.abi3.so": b"\x7fELF unstripped"}
    _install(build_wheel(tmp_path / "w", "crypt", "38.0.4", modules=modules, requires=["cffi>=1.12"]), site)
    (site / "crypt" / "_rust.abi3.so").write_bytes(b"\x7fELF")
    _egg_info(site, "crypt.egg-info", egg_version, top_level)
    (site / "other.py").write_text("")
    return site


def _same_files(dists: list[dict[str, object]]) -> dict[str, list[str]]:
    return {Path(str(d["metadata_dir"])).name: list(d.get("same_files", [])) for d in dists}  # type: ignore[call-overload]


def test_a_dist_info_and_an_egg_info_of_one_version_are_one_distribution(tmp_path: Path) -> None:
    site = _debian_site(tmp_path)
    dists = _probe.collect([str(site)])
    assert _same_files(dists) == {
        "crypt-38.0.4.dist-info": [str(site / "crypt.egg-info")],
        "crypt.egg-info": [str(site / "crypt-38.0.4.dist-info")],
    }
    assert [d["record_matches"] for d in dists] == [False, False]  # neither copy's RECORD decides it
    data = {"probe": 3, "version": "3.11.2", "markers": {}, "path": [str(site)], "distributions": dists}
    assert check_probed(parse_probe(data, "/usr/bin/python3")).findings[0].kind == "missing"  # cffi; no duplicate


def test_an_egg_info_of_another_version_is_a_copy_of_its_own(tmp_path: Path) -> None:
    site = _debian_site(tmp_path, egg_version="37.0")
    dists = _probe.collect([str(site)])
    # The probe reports the same files; the checker, comparing versions with PEP 440, keeps two copies.
    assert _same_files(dists)["crypt.egg-info"] == [str(site / "crypt-38.0.4.dist-info")]
    data = {"probe": 3, "version": "3.11.2", "markers": {}, "path": [str(site)], "distributions": dists}
    found = [f.kind for f in check_probed(parse_probe(data, "/usr/bin/python3")).findings]
    assert found == ["missing", "duplicate"]


def test_versions_of_one_distribution_are_compared_as_pep_440_versions(tmp_path: Path) -> None:
    # 38.0.4.0 is 38.0.4 (PEP 440 pads releases with zeros), as pip and packaging compare versions; compared
    # as text they differed, and the pair was reported as a duplicate.
    site = _debian_site(tmp_path, egg_version="38.0.4.0")
    dists = _probe.collect([str(site)])
    data = {"probe": 3, "version": "3.11.2", "markers": {}, "path": [str(site)], "distributions": dists}
    env = parse_probe(data, "/usr/bin/python3")
    assert [f.kind for f in check_probed(env).findings] == ["missing"]  # cffi; no duplicate
    assert [d.version for d in env.copies("crypt")] == ["38.0.4"]  # the first listed stands


def test_an_egg_info_naming_a_module_the_dist_info_does_not_install_is_a_copy_of_its_own(tmp_path: Path) -> None:
    site = _debian_site(tmp_path, top_level="crypt\nother\n")
    assert _same_files(_probe.collect([str(site)])) == {"crypt-38.0.4.dist-info": [], "crypt.egg-info": []}


def test_two_records_are_one_distribution_only_when_they_list_the_same_files(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _install(build_wheel(tmp_path / "a", "dup", "1.0", modules={"dup/__init__.py": "X = 1\n"}), site)
    # The same wheel under another spelling of its name (pip's Dup-1.0 beside uv's dup-1.0): the same files.
    (site / "dup-1.0.dist-info").rename(site / "Dup-1.0.dist-info")
    record = (site / "Dup-1.0.dist-info" / "RECORD").read_text().replace("dup-1.0.dist-info/", "Dup-1.0.dist-info/")
    (site / "Dup-1.0.dist-info" / "RECORD").write_text(record)
    _install(build_wheel(tmp_path / "a", "dup", "1.0", modules={"dup/__init__.py": "X = 1\n"}), site)
    assert _same_files(_probe.collect([str(site)])) == {
        "Dup-1.0.dist-info": [str(site / "dup-1.0.dist-info")],
        "dup-1.0.dist-info": [str(site / "Dup-1.0.dist-info")],
    }
    # One RECORD with another hash for dup/__init__.py (another build of 1.0): two copies, one on disk.
    (site / "dup-1.0.dist-info" / "RECORD").write_text(
        record.replace("Dup-1.0", "dup-1.0").replace("sha256=", "sha256=x")
    )
    dists = _probe.collect([str(site)])
    assert _same_files(dists) == {"Dup-1.0.dist-info": [], "dup-1.0.dist-info": []}
    assert [d["record_matches"] for d in dists] == [True, False]


def test_the_judgement_is_cached_with_the_decision(tmp_path: Path) -> None:
    site = _debian_site(tmp_path)
    cache: dict[str, object] = {}
    later = time.time_ns() + 10_000_000_000  # every file old enough for its stamp to be trusted
    first = _probe.collect([str(site)], cache, later)
    misses: list[str] = []
    again = _probe.collect([str(site)], cache, later, misses=misses)
    assert again == first
    assert not [m for m in misses if m.startswith(OWNERSHIP_KEY)]  # the decision came from the cache
    assert _same_files(again)["crypt.egg-info"] == [str(site / "crypt-38.0.4.dist-info")]


def test_base_site_lists_the_bases_site_directories_and_what_their_pth_files_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "base"
    monkeypatch.setattr(sys, "base_prefix", str(base))
    monkeypatch.setattr(sys, "base_exec_prefix", str(base))
    base_dirs = [Path(p) for p in site.getsitepackages([str(base)])]
    base_dirs[0].mkdir(parents=True)
    egg = base_dirs[0] / "six-1.16.0-py3.11.egg"
    egg.mkdir()
    (base_dirs[0] / "easy-install.pth").write_text("# a comment\nimport os\n./six-1.16.0-py3.11.egg\n")
    venv_site = tmp_path / "venv" / "site-packages"
    path = ["/usr/lib/python3.11", str(venv_site), f"{base_dirs[0]}/", str(egg), "/elsewhere"]
    assert sites.base_site(path) == [str(base_dirs[0]), str(egg)]
    monkeypatch.setattr(sys, "base_prefix", sys.prefix)
    monkeypatch.setattr(sys, "base_exec_prefix", sys.exec_prefix)
    assert sites.base_site(path) == []  # not a virtual environment: no base apart from the interpreter
