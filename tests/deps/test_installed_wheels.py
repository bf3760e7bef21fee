"""Checks of environments installed from real wheel files (built offline, METADATA as the backends write it).

Each test here is a regression for a wrong answer check-deps gave on a real environment (issue 12).
"""

from __future__ import annotations

import email
import json
import os
import platform
import sys
import zipfile
from importlib.metadata import Distribution
from pathlib import Path

import pytest

from autoglm_runtime.deps._scripts import metadata as _metadata
from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps.check import check_probed
from autoglm_runtime.deps.findings import Finding
from autoglm_runtime.deps.probe import ProbedEnvironment, parse_probe
from autoglm_runtime.testing.wheels import build_wheel

# How meson-python (pandas, scipy) and hatchling fold a multi-line License: continuation lines that hold
# nothing but spaces, which end the headers for a reader that strips before it looks for a continuation.
MESON_LICENSE = [
    "License: BSD 3-Clause License",
    "        ",
    "        Copyright (c) 2008-2011, AQR Capital Management, LLC, Lambda Foundry, Inc. and PyData Development Team",
    "        All rights reserved.",
    "        ",
    "        * Redistributions of source code must retain the above copyright notice, this",
    "          list of conditions and the following disclaimer.",
    "        ",
]
HATCH_LICENSE = ["License: MIT License", "         ", "         Copyright (c) 2022 OpenAI, Shantanu Jain", "         "]


def _install(site: Path, wheel: Path) -> None:
    """Unpack a wheel as pip does for a pure wheel (later files overwrite earlier ones)."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)


def _probe_site(*sites: Path) -> ProbedEnvironment:
    data = {
        "probe": _probe.PROBE_FORMAT,
        "version": platform.python_version(),
        "markers": _probe.marker_environment(),
        "path": [str(s) for s in sites],
        "distributions": _probe.collect([str(s) for s in sites]),
    }
    return parse_probe(json.loads(json.dumps(data)), sys.executable)


def _findings(*sites: Path) -> list[Finding]:
    return check_probed(_probe_site(*sites)).findings


def test_a_whitespace_only_license_continuation_does_not_cut_the_requirements(tmp_path: Path) -> None:
    wheels, site = tmp_path / "w", tmp_path / "site"
    pandas = build_wheel(
        wheels,
        "pandas",
        "2.1.4",
        headers=MESON_LICENSE,
        requires=['numpy<2,>=1.23.2; python_version >= "3.10"'],
        requires_python=">=3.9",
        extras={"test": ["hypothesis>=6.46.1"]},
    )
    _install(site, pandas)
    _install(site, build_wheel(wheels, "numpy", "2.0.0"))
    _install(site, build_wheel(wheels, "tiktoken", "0.5.2", headers=HATCH_LICENSE, requires=["regex>=2022.1.18"]))
    env = _probe_site(site)
    assert [str(r) for r in env.winners["pandas"].requires] == [
        'numpy<2,>=1.23.2; python_version >= "3.10"',
        'hypothesis>=6.46.1; extra == "test"',
    ]
    assert env.winners["pandas"].provides_extra == {"test"}
    assert [(f.kind, f.message) for f in check_probed(env).findings] == [
        ("missing", "tiktoken 0.5.2 requires regex>=2022.1.18, but regex is not installed"),
        ("incompatible", "pandas 2.1.4 requires numpy<2,>=1.23.2, but numpy 2.0.0 is installed"),
    ]


def _metadata_dirs(site: Path) -> list[Path]:
    return sorted(p for p in site.iterdir() if p.name.endswith(".dist-info"))


def _email_headers(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in email.message_from_string(text).items():
        out.setdefault(key.lower(), []).append(value)
    return out


def test_headers_match_importlib_metadata_on_built_and_installed_wheels(tmp_path: Path) -> None:
    wheels, site = tmp_path / "w", tmp_path / "site"
    _install(site, build_wheel(wheels, "scipy", "1.11.4", headers=MESON_LICENSE, requires=["numpy<1.28.0,>=1.21.6"]))
    _install(site, build_wheel(wheels, "tiktoken", "0.5.2", headers=HATCH_LICENSE, requires=["regex>=2022.1.18"]))
    # And every distribution the test environment installed from the package index (hatchling, setuptools,
    # flit, maturin, poetry-core and meson builds among them).
    real = [Path(p) for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    dirs = _metadata_dirs(site) + [d for s in real for d in _metadata_dirs(s)]
    assert len(dirs) > 20
    for meta_dir in dirs:
        text = (meta_dir / "METADATA").read_text(encoding="utf-8")
        ours = _metadata._headers(text)
        assert ours == _email_headers(text), meta_dir
        metadata = Distribution.at(meta_dir).metadata
        for field in ("Name", "Version", "Requires-Dist", "Requires-Python", "Provides-Extra"):  # License: dedented
            assert ours.get(field.lower(), []) == (metadata.get_all(field) or []), (meta_dir, field)


def test_an_empty_metadata_file_is_invalid_metadata(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _install(site, build_wheel(tmp_path / "w", "hollow", "1.0"))
    meta = site / "hollow-1.0.dist-info" / "METADATA"
    meta.write_bytes(b"")
    assert [(f.kind, f.message) for f in _findings(site)] == [
        ("invalid-metadata", f"invalid metadata in {meta.parent}: METADATA is empty"),
    ]


def test_same_version_opencv_variants_clash_on_their_compiled_module(tmp_path: Path) -> None:
    wheels, site = tmp_path / "w", tmp_path / "site"
    init = "from .cv2 import *\n"  # byte-identical in both
    gui = build_wheel(
        wheels, "opencv-python", "4.8.1.78", modules={"cv2/__init__.py": init, "cv2/cv2.abi3.so": b"\x7fELF gui"}
    )
    headless = build_wheel(
        wheels,
        "opencv-python-headless",
        "4.8.1.78",
        modules={"cv2/__init__.py": init, "cv2/cv2.abi3.so": b"\x7fELF headless"},
    )
    _install(site, gui)
    _install(site, headless)  # installed second: its compiled module is the one on disk
    found = [(f.kind, f.message, f.details["winner"]) for f in _findings(site)]
    assert found == [
        (
            "shadowed-module",
            "opencv-python 4.8.1.78 and opencv-python-headless 4.8.1.78 both install the top-level module 'cv2'; "
            "'import cv2' gets opencv-python-headless 4.8.1.78, so opencv-python 4.8.1.78 is shadowed",
            "opencv-python-headless",
        )
    ]


def test_namespace_siblings_sharing_an_identical_init_do_not_clash(tmp_path: Path) -> None:
    wheels, site = tmp_path / "w", tmp_path / "site"
    init = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    _install(site, build_wheel(wheels, "ns-a", "1.0", modules={"ns/__init__.py": init, "ns/a.py": "A = 1\n"}))
    _install(site, build_wheel(wheels, "ns-b", "1.0", modules={"ns/__init__.py": init, "ns/b.py": "B = 1\n"}))
    assert _findings(site) == []


def test_namespace_siblings_whose_namespace_inits_are_spelled_differently_do_not_clash(tmp_path: Path) -> None:
    # backports.functools_lru_cache 1.6.6 and backports.cached-property 1.0.2 (from PyPI) each ship a
    # pkgutil-style backports/__init__.py, one with a comment: whichever is on disk, both import.
    wheels, site = tmp_path / "w", tmp_path / "site"
    init = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    a = {"backports/__init__.py": init, "backports/functools_lru_cache.py": "A = 1\n"}
    b = {"backports/__init__.py": init[:-1] + "  # type: ignore\n", "backports/cached_property/__init__.py": "B = 1\n"}
    _install(site, build_wheel(wheels, "backports.functools_lru_cache", "1.6.6", modules=a))
    _install(site, build_wheel(wheels, "backports.cached-property", "1.0.2", modules=b))
    stub = "try:\n    __import__('pkg_resources').declare_namespace(__name__)\nexcept ImportError:\n    pass\n"
    _install(site, build_wheel(wheels, "zc.a", "1.0", modules={"zc/__init__.py": stub, "zc/a.py": "A = 1\n"}))
    _install(site, build_wheel(wheels, "zc.b", "1.0", modules={"zc/__init__.py": "# ns\n" + stub, "zc/b.py": ""}))
    assert _findings(site) == []
    # A regular package's __init__.py on disk, over another distribution's namespace one, is still a clash.
    _install(site, build_wheel(wheels, "zc-regular", "2.0", modules={"zc/__init__.py": "from .a import A\n"}))
    found = [(f.kind, f.details["module"], f.details["winner"]) for f in _findings(site)]
    assert found == [("shadowed-module", "zc", "zc-regular")]


def test_a_namespace_spread_over_path_entries_shadows_nothing(tmp_path: Path) -> None:
    # backports.functools_lru_cache in site-packages, backports.cached-property in a directory a .pth adds:
    # the first backports/__init__.py extends the package's __path__ over both, so both import.
    wheels, site, extra = tmp_path / "w", tmp_path / "site", tmp_path / "extra"
    init = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    a = {"backports/__init__.py": init, "backports/functools_lru_cache.py": "A = 1\n"}
    b = {"backports/__init__.py": init[:-1] + "  # type: ignore\n", "backports/cached_property/__init__.py": "B = 1\n"}
    _install(site, build_wheel(wheels, "backports.functools_lru_cache", "1.6.6", modules=a))
    _install(extra, build_wheel(wheels, "backports.cached-property", "1.0.2", modules=b))
    assert _findings(site, extra) == []
    # A regular package behind a namespace one is shadowed: its __init__.py never runs.
    regular = {"backports/__init__.py": "API = 1\n", "backports/other.py": ""}
    _install(tmp_path / "third", build_wheel(wheels, "backports-regular", "1.0", modules=regular))
    found = [(f.kind, f.message) for f in _findings(site, extra, tmp_path / "third")]
    assert found == [
        (
            "shadowed-module",
            "backports.functools_lru_cache 1.6.6 and backports-regular 1.0 both install the top-level module "
            "'backports'; 'import backports' gets backports.functools_lru_cache 1.6.6, so backports-regular 1.0 is "
            "shadowed",
        )
    ]
    # A regular package first on the path extends nothing: the namespace distributions behind it are shadowed.
    found = [(f.kind, f.details["winner"]) for f in _findings(tmp_path / "third", site, extra)]
    assert found == [("shadowed-module", "backports-regular")]


def test_eggs_on_the_path_zipped_or_not_are_distributions(tmp_path: Path) -> None:
    # `setup.py install` (easy_install) puts six-1.16.0-py3.11.egg on the path through easy-install.pth, a zip
    # file by default: importlib.metadata and pip check read its EGG-INFO, so six is installed.
    wheels, site = tmp_path / "w", tmp_path / "site"
    _install(site, build_wheel(wheels, "python-dateutil", "2.8.2", requires=["six>=1.5", "pytz"]))
    zipped = tmp_path / "six-1.16.0-py3.11.egg"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("EGG-INFO/PKG-INFO", "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n")
        zf.writestr("six.py", "X = 1\n")
    unzipped = tmp_path / "pytz-2020.1-py3.11.egg"
    (unzipped / "EGG-INFO").mkdir(parents=True)
    (unzipped / "EGG-INFO" / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: pytz\nVersion: 2020.1\n")
    (unzipped / "EGG-INFO" / "requires.txt").write_text("absent-lib>=1\n\n[extra]\nmore\n")
    assert [(f.kind, f.message) for f in _findings(site, zipped, unzipped)] == [
        ("missing", "pytz 2020.1 requires absent-lib>=1, but absent-lib is not installed")
    ]
    env = _probe_site(site, zipped, unzipped)
    assert [(d.name, d.version, d.metadata_dir) for d in env.dists[1:]] == [
        ("six", "1.16.0", f"{zipped}/EGG-INFO"),
        ("pytz", "2020.1", f"{unzipped}/EGG-INFO"),
    ]
    sys.path[:0] = [str(zipped), str(unzipped)]
    try:  # importlib.metadata finds the same
        assert Distribution.from_name("six").version == "1.16.0"
        assert Distribution.from_name("pytz").requires == ["absent-lib>=1", 'more; extra == "extra"']
    finally:
        del sys.path[:2]


def test_an_egg_info_is_read_as_pip_and_importlib_metadata_read_it(tmp_path: Path) -> None:
    # Requires-Dist of PKG-INFO first, requires.txt without them; Provides-Extra of PKG-INFO first, the
    # sections of requires.txt without them (setuptools before 38.6 wrote none).
    site = tmp_path / "site"
    (site / "nodeps.egg-info").mkdir(parents=True)
    (site / "nodeps.egg-info" / "PKG-INFO").write_text(
        "Metadata-Version: 2.1\nName: nodeps\nVersion: 1.0\nRequires-Dist: absent-lib>=1\n"
    )
    (site / "oldtool-1.0-py3.11.egg-info").mkdir()
    (site / "oldtool-1.0-py3.11.egg-info" / "PKG-INFO").write_text(
        "Metadata-Version: 1.1\nName: oldtool\nVersion: 1.0\n"
    )
    (site / "oldtool-1.0-py3.11.egg-info" / "requires.txt").write_text(
        "[Fast_Mode]\nnodeps\n\n[docs:python_version>'3']\n"
    )
    (site / "user-1.0.dist-info").mkdir()
    (site / "user-1.0.dist-info" / "METADATA").write_text(
        "Name: user\nVersion: 1.0\nRequires-Dist: oldtool[fast-mode]\n"
    )
    found = [(f.kind, f.message) for f in _findings(site)]
    assert found == [("missing", "nodeps 1.0 requires absent-lib>=1, but absent-lib is not installed")]
    sys.path.insert(0, str(site))
    try:
        assert Distribution.from_name("nodeps").requires == ["absent-lib>=1"]
    finally:
        sys.path.remove(str(site))


def _two_djangos(tmp_path: Path) -> Path:
    """Django 4.2 then 5.0 unpacked into one directory whose 4.2 metadata was left behind."""
    wheels, site = tmp_path / "w", tmp_path / "site"
    init = "from django.utils.version import get_version\n"  # the same in both versions
    for version, sqlparse in (("4.2.7", "sqlparse<0.4"), ("5.0.1", "sqlparse>=0.3.1")):
        modules = {"django/__init__.py": init, "django/conf.py": f"VERSION = {version!r}\n"}
        _install(site, build_wheel(wheels, "Django", version, modules=modules, requires=[sqlparse]))
    _install(site, build_wheel(wheels, "sqlparse", "0.4.4"))
    return site


def test_copies_in_one_directory_are_decided_by_every_file_and_checked_as_decided(tmp_path: Path) -> None:
    site = _two_djangos(tmp_path)
    env = _probe_site(site)
    assert env.winners["django"].version == "5.0.1"
    found = [(f.kind, f.message, f.hint) for f in check_probed(env).findings]
    assert found == [
        (
            "duplicate",
            f"Django is installed 2 times on the path: Django 5.0.1 ({site}/Django-5.0.1.dist-info) is the one "
            f"imported, shadowing Django 4.2.7 ({site}/Django-4.2.7.dist-info)",
            f"delete the stale metadata directory {site}/Django-4.2.7.dist-info",
        )
    ]  # and 4.2.7's sqlparse<0.4 is not checked: its files are not the ones imported


def test_an_interrupted_uninstall_leftover_is_not_a_copy(tmp_path: Path) -> None:
    site = _two_djangos(tmp_path)
    (site / "Django-4.2.7.dist-info").rename(site / "~jango-4.2.7.dist-info")
    assert _findings(site) == []


def test_a_src_layout_editable_install_is_one_copy_and_owns_no_module(tmp_path: Path) -> None:
    project, site = tmp_path / "proj", tmp_path / "site"
    egg = project / "src" / "mypkg.egg-info"  # what setuptools leaves in the project after pip install -e .
    egg.mkdir(parents=True)
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 1.0\n")
    (egg / "top_level.txt").write_text("mypkg\n")
    (project / "src" / "mypkg").mkdir()
    (project / "src" / "mypkg" / "__init__.py").write_text("")
    editable = build_wheel(
        tmp_path / "w", "mypkg", "1.0", modules={"__editable__.mypkg-1.0.pth": f"{project / 'src'}\n"}
    )
    _install(site, editable)
    info = site / "mypkg-1.0.dist-info"
    direct_url = {"url": project.as_uri(), "dir_info": {"editable": True}}
    (info / "direct_url.json").write_text(json.dumps(direct_url))
    with (info / "RECORD").open("a") as fh:
        fh.write("mypkg-1.0.dist-info/direct_url.json,,\n")
    # Another distribution also installing 'mypkg' in the project directory is not the editable's concern.
    assert _findings(site, project / "src") == []
    env = _probe_site(site, project / "src")
    assert [(d.name, d.editable) for d in env.dists] == [("mypkg", str(project))]


@pytest.mark.parametrize("order", ["gui-first", "headless-first"])
def test_clash_winner_does_not_depend_on_install_order_names(tmp_path: Path, order: str) -> None:
    wheels, site = tmp_path / "w", tmp_path / "site"
    a = build_wheel(wheels, "aaa", "1.0", modules={"m/__init__.py": "", "m/x.so": b"a"})
    b = build_wheel(wheels, "zzz", "1.0", modules={"m/__init__.py": "", "m/x.so": b"z"})
    first, second = (a, b) if order == "gui-first" else (b, a)
    _install(site, first)
    _install(site, second)
    winner = "zzz" if second is b else "aaa"
    assert [f.details["winner"] for f in _findings(site)] == [winner]


def test_a_repeated_requirement_string_gives_the_findings_of_separate_ones_and_each_marker_is_evaluated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from packaging.markers import Marker

    same = ['lib>=2; python_version >= "3"', 'gone>=1; extra == "x"', 'lib<1; python_version < "3"']
    spelled = [  # the same requirements, each distribution spelling them its own way
        ['lib >=2 ; python_version>="3"', 'gone >= 1 ; extra=="x"', 'lib <1 ; python_version<"3"'],
        ['lib>= 2;python_version >="3"', 'gone>=1 ;extra == "x"', 'lib< 1; python_version <"3"'],
        ["lib>=2 ; python_version >= '3'", "gone>=1; extra == 'x'", "lib<1 ; python_version < '3'"],
    ]
    sites = {"same": tmp_path / "same", "spelled": tmp_path / "spelled"}
    for kind, site in sites.items():
        for i, requires in enumerate(spelled if kind == "spelled" else [same] * 3):
            _install(site, build_wheel(tmp_path / kind, f"app{i}", "1.0", requires=requires, extras={"x": []}))
        _install(site, build_wheel(tmp_path / kind, "lib", "1.5"))
        _install(site, build_wheel(tmp_path / kind, "wants", "1.0", requires=["app0[x]", "app1[x]", "app2[x]"]))
    calls: list[str] = []
    evaluate = Marker.evaluate

    def counted(marker: Marker, environment: dict[str, str] | None = None, context: str = "metadata") -> bool:
        calls.append(str(marker))
        return evaluate(marker, environment, context)  # type: ignore[arg-type]

    found = {kind: [(f.kind, f.message) for f in _findings(site)] for kind, site in sites.items()}
    assert found["same"] == found["spelled"]
    assert sorted(kind for kind, _ in found["same"]) == ["incompatible"] * 3 + ["missing-extra"] * 3
    env = _probe_site(sites["same"])
    assert env.winners["app0"].requires[0] is env.winners["app2"].requires[0]  # one text, parsed once
    monkeypatch.setattr(Marker, "evaluate", counted)
    assert [(f.kind, f.message) for f in check_probed(env).findings] == found["same"]
    # Three markers shared by three distributions, whose extra "x" is requested: each marker evaluated once
    # without an extra and once with "x", not once per distribution.
    assert sorted(calls) == sorted(2 * [str(r.marker) for r in env.winners["app0"].requires])


def test_arbitrary_equality_compares_the_installed_version_as_written(tmp_path: Path) -> None:
    # PEP 440: ``===`` is string equality with the version as the distribution spells it, not its normal form.
    wheels, site = tmp_path / "w", tmp_path / "site"
    _install(site, build_wheel(wheels, "rc", "1.0.0-RC1"))
    _install(site, build_wheel(wheels, "exact", "1.0", requires=["rc===1.0.0-RC1", "rc==1.0.0rc1"]))
    _install(site, build_wheel(wheels, "normal", "1.0", requires=["rc===1.0.0rc1"]))
    _install(site, build_wheel(wheels, "both", "1.0", requires=["rc===1.0.0-rc1,>=1.0.0rc1"]))
    assert [(f.kind, f.message) for f in _findings(site)] == [
        ("incompatible", "normal 1.0 requires rc===1.0.0rc1, but rc 1.0.0-RC1 is installed"),
    ]


def test_a_metadata_file_whose_headers_cannot_be_read_is_invalid_metadata(tmp_path: Path) -> None:
    # importlib.metadata finds no Name in a METADATA that starts with a byte order mark (its email parser
    # takes the first line for the body): such a distribution must not vanish from the report.
    site = tmp_path / "site"
    _install(site, build_wheel(tmp_path / "w", "bommed", "1.0", requires=["absent>=1"]))
    meta = site / "bommed-1.0.dist-info" / "METADATA"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    _install(site, build_wheel(tmp_path / "w", "bodied", "1.0", requires=["absent>=1"]))
    body = site / "bodied-1.0.dist-info" / "METADATA"
    body.write_text("Metadata-Version 2.1\n" + body.read_text())  # no colon: the body starts at once
    for path in (meta, body):
        assert Distribution.at(path.parent).metadata["Name"] is None
    assert sorted((f.kind, f.message) for f in _findings(site)) == [
        (
            "invalid-metadata",
            f"invalid metadata in {body.parent}: METADATA has no headers (its first line is not a field)",
        ),
        (
            "invalid-metadata",
            f"invalid metadata in {meta.parent}: METADATA starts with a byte order mark (U+FEFF), so its headers "
            "cannot be read",
        ),
    ]
