"""Whether several version specifier sets can hold at once, with a version that proves it.

Two models that both need ``numpy`` can share an environment only if one version satisfies both of their
specifier sets. :func:`intersect` answers that exactly and returns a *witness*: a version inside every set,
or ``None`` when the intersection is empty::

    >>> from packaging.specifiers import SpecifierSet
    >>> intersect(SpecifierSet(">=2"), SpecifierSet("<2")) is None
    True
    >>> intersect(SpecifierSet(">=1.24,<2"), SpecifierSet("~=1.26.0"))
    '1.26.0'

Pre-releases are judged as pip judges them: pip prefers final releases, and when no final release fits
it takes a pre-release (``packaging``'s ``filter`` fallback that pip's finder relies on). So the
intersection is empty only when *no* version, pre-release or not, satisfies every set; a non-empty
intersection holding pre-releases only is reported with :attr:`Overlap.prerelease_only`.

How it is exact: membership of a version in a specifier depends only on how the version compares with the
specifier's own version (its release, pre-, post-, dev- and local parts) and on prefix matches of the
release. The satisfying sets are therefore unions of intervals whose ends are built from the specifiers'
versions, and every non-empty intersection contains one of a finite set of candidates built around those
versions (each one, its neighbours in every part, and releases just above and just below it). The
candidates are tested with ``packaging``'s own ``contains``, so the judgement never drifts from the
library pip vendors. A property test checks the judgement against brute force and, where installed,
against ``packaging``'s ``SpecifierSet.is_unsatisfiable``.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.specifiers import Specifier, SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = ["Overlap", "admitted", "disjoint", "intersect", "overlap", "satisfies", "wheel_pin"]

#: A wheel file name at the end of a path or URL: name, version (build tag, python, abi, platform dropped).
_WHEEL_RE = re.compile(r"(?:^|[/\\])([A-Za-z0-9_.]+)-([^-/\\]+)(?:-\d[^-/\\]*)?-[^-/\\]+-[^-/\\]+-[^-/\\]+\.whl$")

_PreTag = tuple[str, int] | None


@dataclass(frozen=True)
class Overlap:
    """The result of intersecting specifier sets: ``witness`` is ``None`` when nothing satisfies them all."""

    #: A version in every set (normalised; the literal string for ``===``), or ``None``.
    witness: str | None
    #: True when only pre-releases satisfy every set (pip installs one only when no final release fits).
    prerelease_only: bool = False

    @property
    def empty(self) -> bool:
        """True when no version satisfies every set."""
        return self.witness is None


def satisfies(spec_set: SpecifierSet, version: Version | str) -> bool:
    """Whether ``version`` is in ``spec_set``, pre-releases included, the same on every ``packaging`` >= 23.

    ``===`` compares a ``version`` given as text with the text as written (PEP 440 string equality, compared
    case-insensitively), not its normal form: ``packaging`` 26 does so, 23 to 25 compare the normal form. A
    ``version`` that is not PEP 440 (``1.0-foo-bar``) satisfies only ``===`` of the same text, or a set
    without specifiers: ``packaging`` 26 judges it so, while 23 to 25 raise ``InvalidVersion`` instead.

    >>> satisfies(SpecifierSet(">=1"), "1.0-foo-bar"), satisfies(SpecifierSet("===1.0-foo-bar"), "1.0-foo-bar")
    (False, True)
    >>> satisfies(SpecifierSet("===1.0.0-RC1"), "1.0.0-RC1"), satisfies(SpecifierSet("===1.0.0rc1"), "1.0.0-RC1")
    (True, False)
    """
    try:
        if isinstance(version, str) and any(spec.operator == "===" for spec in spec_set):
            text = version.lower()
            return all(
                spec.version.lower() == text if spec.operator == "===" else spec.contains(version, prereleases=True)
                for spec in spec_set
            )
        return spec_set.contains(version, prereleases=True)
    except InvalidVersion:
        text = str(version).lower()
        return all(spec.operator == "===" and spec.version.lower() == text for spec in spec_set)


def _spec_versions(spec: Specifier) -> Iterator[Version]:
    """The versions a specifier's boundaries are built from (a wildcard gives its prefix and the next one)."""
    text = spec.version
    try:
        if text.endswith(".*"):
            prefix = Version(text[:-2])
            yield prefix
            release = (*prefix.release[:-1], prefix.release[-1] + 1)
            yield Version(f"{prefix.epoch}!{'.'.join(map(str, release))}")
        else:
            yield Version(text)
    except InvalidVersion:
        return  # an arbitrary-equality string; tried verbatim by the caller


def _release_str(epoch: int, release: tuple[int, ...]) -> str:
    return f"{epoch}!{'.'.join(map(str, release))}"


def _neighbour_releases(release: tuple[int, ...], depth: int, big: int) -> list[tuple[int, ...]]:
    """``release`` itself, the release just above it and the one just below it.

    "Just" means no specifier's release lies strictly between: above pads to ``depth`` and appends 1 (deeper
    than any specifier release); below lowers the last non-zero part and appends ``big`` (larger than any
    specifier number).
    """
    out = [release, (*release, *(0,) * max(0, depth - len(release)), 1)]
    trimmed = list(release)
    while trimmed and trimmed[-1] == 0:
        trimmed.pop()
    if trimmed:
        out.append((*trimmed[:-1], trimmed[-1] - 1, big))
    return out


def _numbers_near(value: int | None) -> list[int]:
    if value is None:
        return []
    return [value, value + 1] + ([value - 1] if value else [])


def _around(version: Version, depth: int, big: int) -> Iterator[str]:
    """Candidate versions near ``version`` in every part of its PEP 440 key."""
    pres: list[_PreTag] = [None, ("a", 0), ("rc", big)]
    if version.pre is not None:
        letter, number = version.pre
        pres += [version.pre, (letter, number + 1)] + ([(letter, number - 1)] if number else [])
    posts = [None, 0, big, *_numbers_near(version.post)]
    devs = [None, 0, big, *_numbers_near(version.dev)]
    locals_: list[str | None] = [None, "0"] + ([version.local] if version.local else [])
    for release in _neighbour_releases(version.release, depth, big):
        base = _release_str(version.epoch, release)
        for pre, post, dev, local in itertools.product(pres, posts, devs, locals_):
            text = base
            if pre is not None:
                text += f"{pre[0]}{pre[1]}"
            if post is not None:
                text += f".post{post}"
            if dev is not None:
                text += f".dev{dev}"
            if local is not None:
                text += f"+{local}"
            yield text


def _candidates(sets: Iterable[SpecifierSet]) -> list[Version | str]:
    """A finite set that meets every non-empty intersection of ``sets``; specifier versions first."""
    specs = [spec for spec_set in sets for spec in spec_set]
    versions = [v for spec in specs for v in _spec_versions(spec)]
    numbers = [n for v in versions for n in (*v.release, v.epoch, *(v.pre or ("", 0))[1:], v.post or 0, v.dev or 0)]
    big = max([9, *numbers]) + 2
    depth = max([1, *(len(v.release) for v in versions)]) + 1
    out: list[Version | str] = [spec.version for spec in specs if spec.operator == "==="]
    out += versions
    texts = itertools.chain.from_iterable(_around(v, depth, big) for v in versions)
    out += [Version(t) for t in dict.fromkeys(texts)]
    out += [Version("0"), Version("0.dev0"), Version(str(big))]
    epochs = {v.epoch for v in versions}
    out += [Version(f"{e + 1}!0.dev0") for e in epochs] + [Version(f"{e}!{big}") for e in epochs]
    return out


def _rank(item: Version | str) -> tuple[bool, bool, bool]:
    if isinstance(item, str):
        return (False, False, False)
    return (item.is_prerelease, item.local is not None, item.post is not None)


def overlap(*sets: SpecifierSet) -> Overlap:
    """Intersect ``sets``; the witness is a final release whenever one fits, else a pre-release.

    >>> overlap(SpecifierSet(">=2.0b1"), SpecifierSet("<2")).empty   # 2.0b1 is excluded by "<2"
    True
    >>> overlap(SpecifierSet("==2.0b1"), SpecifierSet(">=1")).prerelease_only
    True
    """
    for item in sorted(_candidates(sets), key=_rank):  # stable: the specifiers' own versions first
        if all(satisfies(spec_set, item) for spec_set in sets):
            return Overlap(str(item), prerelease_only=_rank(item)[0])
    return Overlap(None)


def intersect(*sets: SpecifierSet) -> str | None:
    """A version satisfying every one of ``sets``, or ``None`` when their intersection is empty."""
    return overlap(*sets).witness


_LOWER = frozenset({">=", ">"})
_UPPER = frozenset({"<=", "<"})


def disjoint(*sets: SpecifierSet) -> bool:
    """Whether no version satisfies every one of ``sets``: ``overlap(*sets).empty``, fast on the usual cases.

    Sets that only bound from below (``>=1``, ``>2``), or only from above, always meet; otherwise the
    exact judgement of :func:`overlap` is taken once per distinct combination (model requirements repeat,
    so pairwise checks of many models mostly hit the cache).

    >>> disjoint(SpecifierSet(">=2"), SpecifierSet("<2")), disjoint(SpecifierSet(">=1"), SpecifierSet(">3"))
    (True, False)
    """
    specs = [spec for spec_set in sets for spec in spec_set]
    operators = {spec.operator for spec in specs}
    if not specs or operators <= _LOWER or operators <= _UPPER:
        return False
    return _disjoint_texts(tuple(sorted({str(spec_set) for spec_set in sets})))


@functools.lru_cache(maxsize=65536)
def _disjoint_texts(texts: tuple[str, ...]) -> bool:
    return overlap(*(SpecifierSet(text) for text in texts)).empty


def wheel_pin(location: str) -> tuple[str, str] | None:
    """``(name, version)`` of the wheel a path or URL ends in, ``None`` when it names no wheel.

    The version is percent-decoded (download.pytorch.org spells the ``+`` of a local version ``%2B``); a
    URL's query and fragment (``#sha256=...``) are not part of the file name. The version may still be
    invalid: the caller judges it.

    >>> wheel_pin("https://download.pytorch.org/whl/cpu/torch-2.1.0%2Bcpu-cp311-cp311-linux_x86_64.whl")
    ('torch', '2.1.0+cpu')
    """
    from urllib.parse import unquote, urlsplit  # here: only a wheel path or URL needs it

    path = urlsplit(location).path if "://" in location else location
    found = _WHEEL_RE.search(path)
    return (found.group(1), unquote(found.group(2))) if found else None


def admitted(req: Requirement) -> SpecifierSet:
    """The versions a model's requirement admits: its specifier, or for a direct reference to a wheel
    (``torch @ https://.../torch-2.1.0%2Bcpu-cp311-cp311-linux_x86_64.whl``) that wheel's version, which is
    the one pip installs; a reference to anything else (an sdist, a VCS URL) admits any version.

    >>> str(admitted(Requirement("torch @ https://example.com/torch-2.1.0%2Bcpu-cp311-cp311-linux_x86_64.whl")))
    '==2.1.0+cpu'
    """
    if req.url is None:
        return req.specifier
    pin = wheel_pin(req.url)
    try:
        return SpecifierSet(f"=={pin[1]}") if pin else req.specifier
    except ValueError:  # InvalidSpecifier: a file name whose version is not PEP 440 pins nothing we can compare
        return req.specifier
