"""``shadowed-module`` across a virtual environment made with ``--system-site-packages`` and its base: exact
findings on described environments (integration/deps/test_check_deps_system_site.py runs the real one)."""

from __future__ import annotations

from tests.deps._check_data import SITE, dist, environment, model

from autoglm_runtime.deps.check import check_probed

BASE = "/usr/lib/python3/dist-packages"
JWT = {"jwt": ["jwt/__init__.py", "sha256=gehirn"]}
PYJWT = {"jwt": ["jwt/__init__.py", "sha256=pyjwt"]}


def _found(report: object) -> list[tuple[str, str, str]]:
    return [(f.kind, f.severity, f.message) for f in report.findings]  # type: ignore[attr-defined]


def test_the_environments_module_over_a_base_distribution_nothing_requires_is_informational() -> None:
    env = environment(
        dist("jwt", "1.4.0", modules=JWT), dist("PyJWT", "2.6.0", location=BASE, modules=PYJWT), base_site=[BASE]
    )
    report = check_probed(env)
    assert _found(report) == [
        (
            "shadowed-module",
            "info",
            "jwt 1.4.0 and PyJWT 2.6.0 both install the top-level module 'jwt'; 'import jwt' gets jwt 1.4.0, the "
            "environment's own, shadowing the base interpreter's PyJWT 2.6.0 by design (the environment includes the "
            "system site-packages); nothing requires PyJWT",
        )
    ]
    assert report.findings[0].hint == (
        "nothing to do while nothing here needs PyJWT: what requires it would import jwt 1.4.0's 'jwt'"
    )
    assert report.findings[0].details == {
        "module": "jwt",
        "winner": "jwt",
        "distributions": [
            {"name": "jwt", "version": "1.4.0", "location": SITE},
            {"name": "pyjwt", "version": "2.6.0", "location": BASE},
        ],
        "required_by": [],
    }
    assert report.ok


def test_a_base_distribution_something_requires_shadowed_by_the_environment_is_an_error() -> None:
    needs = dist("needs-pyjwt", "1.0", ["PyJWT>=2", "other; sys_platform == 'linux'"])
    base_user = dist("oauth", "3.0", ["pyjwt"], location=BASE)
    env = environment(
        dist("jwt", "1.4.0", modules=JWT),
        needs,
        dist("PyJWT", "2.6.0", location=BASE, modules=PYJWT),
        base_user,
        base_site=[BASE],
    )
    report = check_probed(env)
    assert _found(report) == [
        (
            "shadowed-module",
            "error",
            "jwt 1.4.0 and PyJWT 2.6.0 both install the top-level module 'jwt'; 'import jwt' gets jwt 1.4.0, the "
            "environment's own, so the base interpreter's PyJWT 2.6.0 is shadowed, yet needs-pyjwt 1.0 (PyJWT>=2), "
            "oauth 3.0 (pyjwt) require it",
        )
    ]
    assert report.findings[0].hint == (
        "uninstall jwt from the environment so that the base interpreter's PyJWT 2.6.0 is imported, or install what "
        "requires it in an environment without the system site-packages"
    )
    assert report.findings[0].details["required_by"] == ["needs-pyjwt 1.0 (PyJWT>=2)", "oauth 3.0 (pyjwt)"]


def test_a_model_requiring_the_shadowed_base_distribution_makes_it_an_error() -> None:
    env = environment(
        dist("jwt", "1.4.0", modules=JWT), dist("PyJWT", "2.6.0", location=BASE, modules=PYJWT), base_site=[BASE]
    )
    report = check_probed(
        env, [model("a", "pyjwt>=2"), model("b", "pyjwt; sys_platform == 'linux'")]
    )  # b: not on win32
    assert [(f.kind, f.severity, f.details["required_by"]) for f in report.findings] == [
        ("shadowed-module", "error", ["model 'a' (pyjwt>=2)"])
    ]


def test_distributions_of_one_layer_stay_an_error() -> None:
    local = "/usr/local/lib/python3.11/dist-packages"
    for first, base_site in (("/t/first", [BASE]), (local, [local, BASE])):  # both the environment's, or the base's
        env = environment(
            dist("jwt", "1.4.0", modules=JWT, location=first),
            dist("PyJWT", "2.6.0", modules=PYJWT, location=SITE if first == "/t/first" else BASE),
            base_site=base_site,
        )
        assert [(f.kind, f.severity) for f in check_probed(env).findings] == [("shadowed-module", "error")]
