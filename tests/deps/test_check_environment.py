"""The environment-only checks on described environments: exact findings for each kind."""

from __future__ import annotations

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from tests.deps._check_data import SITE, WIN39, dist, environment, model

from autoglm_runtime.deps.check import check_probed
from autoglm_runtime.deps.installed import check_installed


def _found(*dists: dict[str, object], markers: dict[str, str] = WIN39) -> list[tuple[str, tuple[str, ...], str]]:
    report = check_probed(environment(*dists, markers=markers))
    return [(f.kind, f.packages, f.message) for f in report.findings]


def test_a_consistent_environment_is_clean() -> None:
    report = check_probed(environment(dist("a", "1.0", ["b>=1"]), dist("b", "1.2")))
    assert report.findings == []
    assert report.ok
    assert report.exit_code == 0


def test_pep503_names_match() -> None:
    assert _found(dist("a", "1.0", ["Foo_Bar.baz>=1"]), dist("foo-bar.Baz", "1.0")) == []


def test_missing_and_incompatible_as_pip_check_judges() -> None:
    assert _found(
        dist("a", "1.0", ["b>=2", "c", "pre>=1.0", "rc<2.0"]),
        dist("b", "1.5"),
        dist("pre", "1.1b1"),  # a pre-release satisfies >=1.0 (pip check passes prereleases=True)
        dist("rc", "2.0rc1"),  # but "<2.0" excludes the pre-releases of 2.0
    ) == [
        ("missing", ("a", "c"), "a 1.0 requires c, but c is not installed"),
        ("incompatible", ("a", "b"), "a 1.0 requires b>=2, but b 1.5 is installed"),
        ("incompatible", ("a", "rc"), "a 1.0 requires rc<2.0, but rc 2.0rc1 is installed"),
    ]


def test_a_requirement_listed_twice_is_one_requirement_as_for_pip_check() -> None:
    # huggingface_hub 2.4's METADATA has 'Requires-Dist: fastapi; extra == "all"' twice (and others so).
    hub = dist("hub", "2.4", ["absent>=1", "absent>=1", 'fastapi; extra == "all"', 'fastapi; extra == "all"'],
               extras=["all"])  # fmt: skip
    report = check_probed(environment(hub), [model("m", "hub[all]")])
    assert [(f.kind, f.message) for f in report.findings] == [
        ("missing", "hub 2.4 requires absent>=1, but absent is not installed"),
        ("missing-extra", "model 'm' requires hub[all], whose extra 'all' needs fastapi, but fastapi is not installed"),
    ]


def test_a_requirement_listed_twice_in_other_words_is_one_requirement_as_for_pip_check() -> None:
    # pip check keeps requirements in sets, and packaging's Requirement equality ignores spacing, quotes, the
    # order of specifiers and the name's spelling: the same requirement written another way was two findings.
    spelled = ["absent>=1,<2", "Absent < 2 , >= 1", 'fastapi; extra == "all"', "FastAPI ; extra=='all'"]
    report = check_probed(environment(dist("hub", "2.4", spelled, extras=["all"])), [model("m", "hub[all]")])
    assert [(f.kind, f.message) for f in report.findings] == [
        ("missing", "hub 2.4 requires absent<2,>=1, but absent is not installed"),
        ("missing-extra", "model 'm' requires hub[all], whose extra 'all' needs fastapi, but fastapi is not installed"),
    ]


def test_markers_are_evaluated_for_the_target_interpreter() -> None:
    requires = [
        "winlib; sys_platform == 'win32'",
        "linuxlib; sys_platform == 'linux'",
        "oldlib; python_version < '3.10'",
        "newlib; python_version >= '3.10'",
        "gpu; extra == 'gpu'",
    ]
    assert _found(dist("a", "1.0", requires, extras=["gpu"])) == [
        ("missing", ("a", "oldlib"), "a 1.0 requires oldlib, but oldlib is not installed"),
        ("missing", ("a", "winlib"), "a 1.0 requires winlib, but winlib is not installed"),
    ]


def test_requires_python_judged_on_the_release_as_pip_does() -> None:
    rc = {**WIN39, "python_full_version": "3.13.0rc1", "python_version": "3.13"}
    assert _found(dist("a", "1.0", requires_python=">=3.13"), markers=rc) == []
    assert _found(dist("a", "1.0", requires_python=">=3.10")) == [
        ("requires-python", ("a",), "a 1.0 requires Python >=3.10, but /t/bin/python is Python 3.9.1"),
    ]


def test_duplicates_name_the_copy_that_imports() -> None:
    found = _found(dist("Dup", "2.0"), dist("dup", "1.0", ["never"], location="/t/other"))
    assert found == [
        (
            "duplicate",
            ("dup",),
            f"Dup is installed 2 times on the path: Dup 2.0 ({SITE}/Dup-2.0.dist-info) is the one imported, "
            "shadowing dup 1.0 (/t/other/dup-1.0.dist-info)",
        )
    ]  # the shadowed copy's requirements are not checked, as pip check does not


def test_duplicates_in_one_directory_are_decided_by_the_file_hash() -> None:
    old = dist("dup", "1.0", ["needs-old"], record_matches=False)
    new = dist("dup", "2.0", record_matches=True)
    for order in ((old, new), (new, old)):  # directory order must not matter
        report = check_probed(environment(*order))
        assert [(f.kind, f.message) for f in report.findings] == [
            (
                "duplicate",
                f"dup is installed 2 times on the path: dup 2.0 ({SITE}/dup-2.0.dist-info) is the one imported, "
                f"shadowing dup 1.0 ({SITE}/dup-1.0.dist-info)",
            )
        ]
        assert report.findings[0].details["used"]["version"] == "2.0"
        # One answer everywhere: the copy whose files are on disk is the one whose requirements count.
        assert report.findings[0].hint == f"delete the stale metadata directory {SITE}/dup-1.0.dist-info"


def test_duplicates_in_one_directory_without_a_deciding_hash_are_undetermined() -> None:
    old = dist("dup", "1.0", record_matches=False)
    new = dist("dup", "2.0", record_matches=False)
    far = dist("dup", "0.9", location="/t/later")
    report = check_probed(environment(new, old, far))
    assert [(f.kind, f.packages, f.message) for f in report.findings] == [
        (
            "duplicate",
            ("dup",),
            f"dup is installed 3 times on the path: dup 2.0 ({SITE}/dup-2.0.dist-info) and dup 1.0 "
            f"({SITE}/dup-1.0.dist-info) are in one directory and the files on disk match no single copy's "
            "RECORD, so which copy's files are imported cannot be determined; they shadow dup 0.9 "
            "(/t/later/dup-0.9.dist-info)",
        )
    ]
    finding = report.findings[0]
    assert finding.hint == (
        "delete the metadata directories of the copies you do not want, then reinstall the one you keep over its "
        "files, e.g. pip install --force-reinstall --no-deps 'dup==2.0'"
    )
    assert finding.details == {
        "used": None,
        "candidates": [
            {"version": "2.0", "location": SITE, "metadata_dir": f"{SITE}/dup-2.0.dist-info"},
            {"version": "1.0", "location": SITE, "metadata_dir": f"{SITE}/dup-1.0.dist-info"},
        ],
        "shadowed": [{"version": "0.9", "location": "/t/later", "metadata_dir": "/t/later/dup-0.9.dist-info"}],
    }


def test_shadowed_module_across_path_entries_first_wins() -> None:
    assert _found(
        dist("jwt", "1.0", modules={"jwt": ["jwt/__init__.py", "sha256=a"]}, location="/t/first"),
        dist("PyJWT", "2.8.0", modules={"jwt": ["jwt/__init__.py", "sha256=b"]}),
    ) == [
        (
            "shadowed-module",
            ("jwt", "pyjwt"),
            "jwt 1.0 and PyJWT 2.8.0 both install the top-level module 'jwt'; 'import jwt' gets jwt 1.0, so PyJWT "
            "2.8.0 is shadowed",
        )
    ]


def test_shadowed_module_in_one_directory_is_decided_by_the_file_hash() -> None:
    assert _found(
        dist("PIL", "1.1.7", modules={"PIL": ["PIL/__init__.py", "sha256=old"]}, clashes={"PIL": False}),
        dist("Pillow", "10.0.0", modules={"PIL": ["PIL/__init__.py", "sha256=new"]}, clashes={"PIL": True}),
    ) == [
        (
            "shadowed-module",
            ("pil", "pillow"),
            "PIL 1.1.7 and Pillow 10.0.0 both install the top-level module 'PIL'; 'import PIL' gets Pillow 10.0.0, "
            "so PIL 1.1.7 is shadowed",
        )
    ]


def test_identical_shared_files_are_not_shadowing_and_unknown_files_are_said_to_be() -> None:
    same = {"ns": ["ns/__init__.py", "sha256=same"]}
    assert _found(dist("ns-a", "1.0", modules=same), dist("ns-b", "1.0", modules=same)) == []
    assert _found(
        dist("x", "1.0", modules={"m": ["m.py", "sha256=1"]}, clashes={"m": False}),
        dist("y", "1.0", modules={"m": ["m.py", "sha256=2"]}, clashes={"m": False}),
        dist("z", "1.0", modules={"m": ["m.py", "sha256=4"]}, clashes={"m": False}),
    ) == [
        (
            "shadowed-module",
            ("x", "y", "z"),
            "x 1.0, y 1.0 and z 1.0 all install the top-level module 'm'; the files on disk cannot be attributed to "
            "either, so the import is a mix or a guess",
        )
    ]


def _reason(text: str) -> str:
    with pytest.raises(InvalidRequirement) as caught:
        Requirement(text)
    return str(caught.value).splitlines()[0]


def test_invalid_metadata_is_reported_and_the_rest_still_checked() -> None:
    bad_marker = "d; nonsense == '1'"
    assert _found(
        dist("a", "1.0", ["b>=1", "c >>> 1", bad_marker], requires_python="~=3"),
        dist("weird", "not.a.version"),
        dist(None, None, errors=["METADATA is missing"]),
    ) == [
        ("missing", ("a", "b"), "a 1.0 requires b>=1, but b is not installed"),
        ("invalid-metadata", (), f"invalid metadata in {SITE}/None-None.dist-info: METADATA is missing"),
        (
            "invalid-metadata",
            ("a",),
            f"invalid metadata in {SITE}/a-1.0.dist-info: a 1.0 has an invalid Requires-Python '~=3'; it is ignored, "
            "as pip ignores it: any Python is taken to be supported",
        ),
        (
            "invalid-metadata",
            ("a",),
            f"invalid metadata in {SITE}/a-1.0.dist-info: a 1.0 has an invalid requirement {bad_marker!r} "
            f"({_reason(bad_marker)})",
        ),
        (
            "invalid-metadata",
            ("a",),
            f"invalid metadata in {SITE}/a-1.0.dist-info: a 1.0 has an invalid requirement 'c >>> 1' "
            f"({_reason('c >>> 1')})",
        ),
        (
            "invalid-metadata",
            ("weird",),
            f"invalid metadata in {SITE}/weird-not.a.version.dist-info: weird not.a.version has an invalid version "
            "'not.a.version' (not PEP 440)",
        ),
    ]


def test_an_invalid_requires_python_is_ignored_as_pip_ignores_it_and_reported_as_informational() -> None:
    # pip's BaseDistribution.requires_python logs "Package 'a' has an invalid Requires-Python" and takes an empty
    # SpecifierSet (any Python); pip check never reads it, uv pip check reads '>=3.7.*' leniently as '>=3.7'.
    report = check_probed(
        environment(dist("a", "1.0", requires_python=">=3.7.*"), dist("b", "1.0", requires_python=">=4.*"))
    )
    assert [(f.kind, f.severity, f.packages, f.message) for f in report.findings] == [
        (
            "invalid-metadata",
            "info",
            ("a",),
            f"invalid metadata in {SITE}/a-1.0.dist-info: a 1.0 has an invalid Requires-Python '>=3.7.*'; it is "
            "ignored, as pip ignores it: any Python is taken to be supported",
        ),
        (
            "invalid-metadata",
            "info",
            ("b",),
            f"invalid metadata in {SITE}/b-1.0.dist-info: b 1.0 has an invalid Requires-Python '>=4.*'; it is "
            "ignored, as pip ignores it: any Python is taken to be supported",
        ),
    ]
    assert report.findings[0].hint == (
        "nothing to do here: pip installs and imports a all the same; a release of a with valid metadata ends this"
    )
    assert report.findings[0].details == {
        "metadata_dir": f"{SITE}/a-1.0.dist-info",
        "error": "a 1.0 has an invalid Requires-Python '>=3.7.*'",
    }
    assert (report.ok, report.exit_code, report.summary()["informational"]) == (True, 0, 2)


def test_cycles_are_informational() -> None:
    report = check_probed(
        environment(dist("a", "1.0", ["b"]), dist("b", "1.0", ["C"]), dist("c", "1.0", ["a"]), dist("s", "1", ["s"]))
    )
    assert [(f.kind, f.severity, f.message) for f in report.findings] == [
        ("cycle", "info", "dependency cycle: a 1.0 -> b 1.0 -> c 1.0 -> a 1.0"),
        ("cycle", "info", "dependency cycle: s 1 -> s 1"),
    ]
    assert report.ok
    assert report.exit_code == 0
    assert report.findings[0].details == {"cycle": ["a", "b", "c", "a"]}


def test_check_installed_ignores_models() -> None:
    assert check_installed(environment(dist("a", "1.0"))) == []
