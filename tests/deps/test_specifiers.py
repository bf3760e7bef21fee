"""Specifier intersection: exact emptiness, a witness inside every set, pre-releases as pip judges them."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from autoglm_runtime.deps.specifiers import Overlap, intersect, overlap, satisfies

# Small numbers so that generated versions collide with the specifiers' own boundaries.
_num = st.integers(min_value=0, max_value=3)
_release = st.lists(_num, min_size=1, max_size=3).map(lambda r: ".".join(map(str, r)))
_pre = st.one_of(st.just(""), st.tuples(st.sampled_from(["a", "b", "rc"]), _num).map(lambda p: f"{p[0]}{p[1]}"))
_post = st.one_of(st.just(""), _num.map(lambda n: f".post{n}"))
_dev = st.one_of(st.just(""), _num.map(lambda n: f".dev{n}"))
_local = st.sampled_from(["", "", "+1", "+abc"])
_epoch = st.sampled_from(["", "", "", "1!"])


@st.composite
def versions(draw: st.DrawFn, local: bool = True) -> str:
    text = draw(_epoch) + draw(_release) + draw(_pre) + draw(_post) + draw(_dev)
    return text + (draw(_local) if local else "")


@st.composite
def specifiers(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "~=", "==*", "!=*"]))
    if op in {"==*", "!=*"}:
        return f"{op[:2]}{draw(_epoch)}{draw(_release)}.*"
    if op in {"==", "!="}:
        return op + draw(versions())
    version = draw(versions(local=False))
    if op == "~=" and len(Version(version).release) < 2:
        version = f"{Version(version).epoch}!{Version(version).release[0]}.0"
    return op + version


spec_sets = st.lists(specifiers(), min_size=0, max_size=3).map(lambda s: SpecifierSet(",".join(s)))


def _in_all(version: str, sets: tuple[SpecifierSet, ...]) -> bool:
    return all(s.contains(version, prereleases=True) for s in sets)


@settings(max_examples=200, deadline=None)
@given(a=spec_sets, b=spec_sets, probes=st.lists(versions(), max_size=25))
@example(a=SpecifierSet(">1.0"), b=SpecifierSet("<1.0.1"), probes=["1.0.0.1"])
@example(a=SpecifierSet("<2.0"), b=SpecifierSet(">=2.0rc1"), probes=["2.0rc1", "1.9"])
@example(a=SpecifierSet("==1.0+abc"), b=SpecifierSet("!=1.0"), probes=["1.0+abc"])
def test_judgement_is_sound_and_complete(a: SpecifierSet, b: SpecifierSet, probes: list[str]) -> None:
    result = overlap(a, b)
    if result.witness is None:
        # Judged empty: no version at all satisfies both (pip would take even a pre-release).
        assert not any(_in_all(v, (a, b)) for v in probes)
    else:
        assert _in_all(result.witness, (a, b))
        assert result.prerelease_only == Version(result.witness).is_prerelease
    if any(_in_all(v, (a, b)) and not Version(v).is_prerelease for v in probes):
        # A final release fits, so the witness is one: pip prefers finals.
        assert result.witness is not None
        assert not result.prerelease_only


@settings(max_examples=200, deadline=None)
@given(a=spec_sets, b=spec_sets)
def test_judgement_agrees_with_packaging_ranges(a: SpecifierSet, b: SpecifierSet) -> None:
    combined = SpecifierSet(str(a & b), prereleases=True)
    if not hasattr(combined, "is_unsatisfiable"):
        pytest.skip("packaging < 26.1 has no is_unsatisfiable to compare with")  # pragma: no cover
    assert overlap(a, b).empty == combined.is_unsatisfiable()


@settings(deadline=None)
@given(a=spec_sets, b=spec_sets)
def test_intersection_is_symmetric(a: SpecifierSet, b: SpecifierSet) -> None:
    assert overlap(a, b).empty == overlap(b, a).empty


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (">=2", "<2", Overlap(None)),
        (">=1.24,<2", "~=1.26.0", Overlap("1.26.0")),
        (">=2.0b1", "<2", Overlap(None)),  # "<2" excludes the pre-releases of 2
        ("==2.0b1", ">=1", Overlap("2.0b1", prerelease_only=True)),
        ("==1.2.*", "!=1.2.*", Overlap(None)),
        ("~=1.4.2", ">=1.5", Overlap(None)),
        (">1.0", "<=1.0.post1", Overlap(None)),  # ">1.0" excludes the post-releases of 1.0
        ("==1.0+abc", "!=1.0", Overlap(None)),
        ("==1.0", "!=1.0+abc", Overlap("1.0")),
        ("", "", Overlap("0")),
        ("===foo", "", Overlap("foo")),
    ],
)
def test_examples(a: str, b: str, expected: Overlap) -> None:
    assert overlap(SpecifierSet(a), SpecifierSet(b)) == expected


def test_more_than_two_sets() -> None:
    sets = (SpecifierSet(">=1,<3"), SpecifierSet(">=2,<4"), SpecifierSet("!=2.*"))
    assert intersect(*sets) is None
    assert intersect(*sets[:2]) == "2"


@given(spec_sets, versions())
def test_satisfies_is_packagings_contains_for_pep440_versions(spec_set: SpecifierSet, version: str) -> None:
    assert satisfies(spec_set, version) is spec_set.contains(version, prereleases=True)


@pytest.mark.parametrize(
    ("spec_set", "expected"),
    [
        ("", True),  # no specifier: any installed version will do
        (">=0.5", False),
        ("===1.0-foo-bar", True),
        ("===1.0-FOO-bar", True),  # arbitrary equality compares text case-insensitively
        ("===1.0-foo-bar,>=0.5", False),
        ("===1.0-foo", False),
    ],
)
def test_satisfies_judges_a_version_that_is_not_pep440(spec_set: str, expected: bool) -> None:
    assert satisfies(SpecifierSet(spec_set), "1.0-foo-bar") is expected


def test_arbitrary_equality_to_a_string_that_is_no_version() -> None:
    assert overlap(SpecifierSet("===1.0-foo-bar"), SpecifierSet("")) == Overlap("1.0-foo-bar")
    assert overlap(SpecifierSet("===1.0-foo-bar"), SpecifierSet(">=1")).empty
