"""Copies of one distribution across a virtual environment and its base, and metadata directories of one
distribution: exact ``duplicate`` and ``overrides-base`` findings on described environments."""

from __future__ import annotations

from tests.deps._check_data import SITE, dist, environment

from autoglm_runtime.deps.check import check_probed

BASE = "/usr/lib/python3/dist-packages"
LOCAL = "/usr/local/lib/python3.11/dist-packages"


def _found(report: object) -> list[tuple[str, str, tuple[str, ...], str]]:
    return [(f.kind, f.severity, f.packages, f.message) for f in report.findings]  # type: ignore[attr-defined]


def test_an_environment_copy_over_the_bases_is_informational() -> None:
    report = check_probed(
        environment(dist("six", "1.17.0"), dist("six", "1.16.0", location=BASE), base_site=[LOCAL, BASE])
    )
    assert _found(report) == [
        (
            "overrides-base",
            "info",
            ("six",),
            f"six 1.17.0 ({SITE}/six-1.17.0.dist-info) is the one imported; it overrides the base interpreter's "
            f"six 1.16.0 ({BASE}/six-1.16.0.dist-info), shadowed by design (the environment includes the system "
            "site-packages)",
        )
    ]
    assert report.ok
    assert report.exit_code == 0
    assert report.findings[0].details == {
        "used": {"version": "1.17.0", "location": SITE, "metadata_dir": f"{SITE}/six-1.17.0.dist-info"},
        "shadowed": [{"version": "1.16.0", "location": BASE, "metadata_dir": f"{BASE}/six-1.16.0.dist-info"}],
    }


def test_without_a_base_the_same_copies_are_a_duplicate() -> None:
    report = check_probed(environment(dist("six", "1.17.0"), dist("six", "1.16.0", location=BASE)))
    assert [(f.kind, f.severity) for f in report.findings] == [("duplicate", "error")]
    assert report.findings[0].message.startswith("six is installed 2 times on the path: six 1.17.0")


def test_a_base_copy_first_on_the_path_stays_a_duplicate() -> None:
    found = _found(
        check_probed(environment(dist("six", "1.16.0", location=BASE), dist("six", "1.17.0"), base_site=[BASE]))
    )
    assert found == [
        (
            "duplicate",
            "error",
            ("six",),
            f"six is installed 2 times on the path: six 1.16.0 ({BASE}/six-1.16.0.dist-info) is the one imported, "
            f"shadowing six 1.17.0 ({SITE}/six-1.17.0.dist-info)",
        )
    ]


def test_two_copies_in_the_environment_stay_a_duplicate_beside_the_override() -> None:
    found = _found(
        check_probed(
            environment(
                dist("pip", "26.0"),
                dist("pip", "1.0", location="/venv/extra"),
                dist("pip", "23.0.1", location=BASE),
                base_site=[BASE],
            )
        )
    )
    assert found == [
        (
            "duplicate",
            "error",
            ("pip",),
            f"pip is installed 2 times in the environment: pip 26.0 ({SITE}/pip-26.0.dist-info) is the one imported, "
            "shadowing pip 1.0 (/venv/extra/pip-1.0.dist-info)",
        ),
        (
            "overrides-base",
            "info",
            ("pip",),
            f"pip 26.0 ({SITE}/pip-26.0.dist-info) is the one imported; it overrides the base interpreter's pip "
            f"23.0.1 ({BASE}/pip-23.0.1.dist-info), shadowed by design (the environment includes the system "
            "site-packages)",
        ),
    ]


def test_two_copies_in_the_base_stay_a_duplicate_beside_the_override() -> None:
    old = dist("dup", "1.0", location=BASE, record_matches=False)
    new = dist("dup", "2.0", location=BASE, record_matches=False)
    report = check_probed(environment(dist("dup", "3.0"), new, old, base_site=[BASE]))
    assert [(f.kind, f.severity) for f in report.findings] == [("duplicate", "error"), ("overrides-base", "info")]
    assert report.findings[0].message == (
        f"dup is installed 2 times in the base interpreter's site directories: dup 2.0 ({BASE}/dup-2.0.dist-info) "
        f"and dup 1.0 ({BASE}/dup-1.0.dist-info) are in one directory and the files on disk match no single copy's "
        "RECORD, so which copy's files are imported cannot be determined"
    )
    assert report.findings[1].details["shadowed"] == [
        {"version": "2.0", "location": BASE, "metadata_dir": f"{BASE}/dup-2.0.dist-info"},
        {"version": "1.0", "location": BASE, "metadata_dir": f"{BASE}/dup-1.0.dist-info"},
    ]


def _debian_pair(*, egg_matches: bool | None = False) -> tuple[dict[str, object], dict[str, object]]:
    """Debian's python3-cryptography: a .dist-info (its RECORD off the stripped .so files) and an .egg-info."""
    info = f"{SITE}/cryptography-38.0.4.dist-info"
    egg = f"{SITE}/cryptography.egg-info"
    return (
        dist("cryptography", "38.0.4", ["cffi>=1.12"], record_matches=False, same_files=[egg]),
        dist("cryptography", "38.0.4", metadata_dir=egg, record_matches=egg_matches, same_files=[info]),
    )


def test_two_metadata_directories_of_one_distribution_are_no_finding() -> None:
    info, egg = _debian_pair()
    for order in ((info, egg), (egg, info)):
        env = environment(*order, dist("cffi", "1.15.1"))
        assert check_probed(env).findings == []
        assert env.copies("cryptography") == [env.dists[0]]  # the first listed stands, as importlib.metadata takes it
        assert env.winners["cryptography"] is env.dists[0]


def test_metadata_directories_of_one_distribution_count_as_one_copy_beside_another() -> None:
    info, egg = _debian_pair(egg_matches=True)  # either one matching the files on disk: the pair's files are there
    other = dist("cryptography", "41.0", record_matches=False)
    report = check_probed(environment(info, egg, other, dist("cffi", "1.15.1")))
    assert [(f.kind, f.message) for f in report.findings] == [
        (
            "duplicate",
            f"cryptography is installed 2 times on the path: cryptography 38.0.4 ({SITE}/cryptography-38.0.4."
            f"dist-info) is the one imported, shadowing cryptography 41.0 ({SITE}/cryptography-41.0.dist-info)",
        )
    ]
