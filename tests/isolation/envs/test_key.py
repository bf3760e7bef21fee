"""Environment keys: what changes a key, and what must not."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement

from autoglm_runtime.deps.manifest import ModelManifest, load_manifest
from autoglm_runtime.errors import UsageError
from autoglm_runtime.isolation.envs.key import (
    KEY_LENGTH,
    InterpreterInfo,
    environment_key,
    interpreter_info,
    normalise_requirement,
    normalise_requirements,
    redact_url,
    source_identity,
    wheelhouse_identity,
)
from autoglm_runtime.testing.wheels import build_wheel

INFO = InterpreterInfo("cpython", "3.11.7", "cpython-311", "", "linux-x86_64", "/usr/bin/python3.11")
SOURCE = "offline=True|wheelhouse=abc"


def _manifest(*reqs: str, included: tuple[Path, ...] = ()) -> ModelManifest:
    return ModelManifest(
        name="m",
        entrypoint="m:load",
        requirements=tuple(Requirement(r) for r in reqs),
        python=None,
        directory=Path("/models/m"),
        source=Path("/models/m/model.toml"),
        included_files=included,
    )


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Foo_Bar >= 1.0, <2", "foo-bar<2,>=1.0"),
        ("foo.bar[B,a]==1.0", "foo-bar[a,b]==1.0"),
        ("numpy>=1.24; python_version < '3.12'", 'numpy>=1.24; python_version < "3.12"'),
        ("pkg @ https://example.org/pkg-1.0-py3-none-any.whl", "pkg @ https://example.org/pkg-1.0-py3-none-any.whl"),
        ("plain", "plain"),
    ],
)
def test_normalise_requirement(text: str, normalised: str) -> None:
    assert normalise_requirement(Requirement(text)) == normalised


def test_normalise_requirements_sorts_and_deduplicates() -> None:
    reqs = [Requirement("b==1"), Requirement("A>=1,<2"), Requirement("a<2,>=1")]
    assert normalise_requirements(reqs) == ["a<2,>=1", "b==1"]


NAMES = st.sampled_from(["conflictlib", "Conflict_Lib", "conflict.lib", "numpy", "NumPy", "tokenizers"])
SPECS = st.lists(st.sampled_from([">=1.0", "<2", "!=1.5", "==1.*", "~=1.2"]), max_size=3, unique=True)


@given(st.lists(st.tuples(NAMES, SPECS), min_size=1, max_size=5), st.randoms())
def test_key_ignores_order_spelling_and_spacing(reqs: list[tuple[str, list[str]]], rnd: object) -> None:
    texts = [name + ",".join(specs) for name, specs in reqs]
    shuffled = [name.upper().replace("_", "-") + " " + " , ".join(reversed(specs)) for name, specs in reqs]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert environment_key(_manifest(*texts), INFO, SOURCE) == environment_key(_manifest(*shuffled), INFO, SOURCE)


def test_key_is_hex_of_fixed_length() -> None:
    key = environment_key(_manifest("a==1"), INFO, SOURCE)
    assert len(key) == KEY_LENGTH
    int(key, 16)


@pytest.mark.parametrize(
    "change",
    [
        lambda m, i, s: (_manifest("conflictlib==2.0"), i, s),
        lambda m, i, s: (_manifest("conflictlib==1.0", "extra"), i, s),
        lambda m, i, s: (_manifest("conflictlib[x]==1.0"), i, s),
        lambda m, i, s: (_manifest("conflictlib==1.0; sys_platform == 'linux'"), i, s),
        lambda m, i, s: (m, replace(i, version="3.11.8"), s),
        lambda m, i, s: (m, replace(i, cache_tag="cpython-312"), s),
        lambda m, i, s: (m, replace(i, abiflags="t"), s),
        lambda m, i, s: (m, replace(i, platform="linux-aarch64"), s),
        lambda m, i, s: (m, replace(i, implementation="pypy"), s),
        lambda m, i, s: (m, i, "offline=True|wheelhouse=def"),
        lambda m, i, s: (m, i, "offline=False|index=https://pypi.example/simple"),
    ],
)
def test_key_changes_with_what_decides_the_install(change: object) -> None:
    base = (_manifest("conflictlib==1.0"), INFO, SOURCE)
    changed = change(*base)  # type: ignore[operator]
    assert environment_key(*changed) != environment_key(*base)


def test_key_ignores_the_interpreter_path() -> None:
    moved = replace(INFO, executable="/opt/python/bin/python3.11")
    assert environment_key(_manifest("a==1"), moved, SOURCE) == environment_key(_manifest("a==1"), INFO, SOURCE)


def test_key_covers_included_file_content(tmp_path: Path) -> None:
    (tmp_path / "model.toml").write_text('[model]\nname = "m"\nentrypoint = "m:load"\nrequirements = ["-r r.txt"]\n')
    (tmp_path / "r.txt").write_text("conflictlib==1.0\n")
    first = environment_key(load_manifest(tmp_path), INFO, SOURCE)
    (tmp_path / "r.txt").write_text("conflictlib==1.0  # pinned for the demo\n")
    second = environment_key(load_manifest(tmp_path), INFO, SOURCE)
    assert first != second


def test_source_identity_hashes_wheel_names_and_sizes(tmp_path: Path) -> None:
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("ignored")
    first = source_identity(tmp_path, None, True)
    (tmp_path / "notes.txt").write_text("still ignored")
    assert source_identity(tmp_path, None, True) == first
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"x" * 11)
    assert source_identity(tmp_path, None, True) != first
    assert source_identity(tmp_path, None, False) != source_identity(tmp_path, None, True)


def test_source_identity_sees_a_wheel_rewritten_in_place_with_the_same_size(tmp_path: Path) -> None:
    wheel = tmp_path / "a-1.0-py3-none-any.whl"
    wheel.write_bytes(b"x" * 10)
    os.utime(wheel, ns=(1_000_000_000, 1_000_000_000))
    first = source_identity(tmp_path, None, True)
    wheel.write_bytes(b"y" * 10)
    os.utime(wheel, ns=(2_000_000_000, 2_000_000_000))
    assert source_identity(tmp_path, None, True) != first


def test_same_wheelhouse_content_with_other_modification_times_gives_the_same_key(tmp_path: Path) -> None:
    # What a restart of the example does: the wheels are written again, byte for byte the same.
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    build_wheel(first_dir, "conflictlib", "1.0")
    first = environment_key(_manifest("conflictlib==1.0"), INFO, source_identity(first_dir, None, True))
    build_wheel(second_dir, "conflictlib", "1.0")
    wheel = second_dir / "conflictlib-1.0-py3-none-any.whl"
    os.utime(wheel, ns=(3_000_000_000, 3_000_000_000))
    assert environment_key(_manifest("conflictlib==1.0"), INFO, source_identity(second_dir, None, True)) == first

    build_wheel(second_dir, "conflictlib", "1.0", modules={"conflictlib/__init__.py": "VERSION = 'patched'\n"})
    assert environment_key(_manifest("conflictlib==1.0"), INFO, source_identity(second_dir, None, True)) != first


def test_wheelhouse_identity_is_names_and_content(tmp_path: Path) -> None:
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"abc")
    (tmp_path / "b-1.0.tar.gz").write_bytes(b"")
    expected = hashlib.sha256(
        f"a-1.0-py3-none-any.whl\0{hashlib.sha256(b'abc').hexdigest()}\n"
        f"b-1.0.tar.gz\0{hashlib.sha256(b'').hexdigest()}\n".encode()
    ).hexdigest()
    assert wheelhouse_identity(tmp_path) == expected
    (tmp_path / "a-1.0-py3-none-any.whl").rename(tmp_path / "a-1.1-py3-none-any.whl")
    assert wheelhouse_identity(tmp_path) != expected


def test_a_rewrite_that_restores_size_and_modification_time_is_still_seen(tmp_path: Path) -> None:
    wheel = tmp_path / "a-1.0-py3-none-any.whl"
    wheel.write_bytes(b"x" * 10)
    os.utime(wheel, ns=(1_000_000_000, 1_000_000_000))
    first = wheelhouse_identity(tmp_path)  # now cached by the file's stat
    wheel.write_bytes(b"y" * 10)
    os.utime(wheel, ns=(1_000_000_000, 1_000_000_000))
    assert wheelhouse_identity(tmp_path) != first


def test_source_identity_of_an_index() -> None:
    assert source_identity(None, "https://pypi.example/simple/", False) == (
        "offline=False|index=https://pypi.example/simple"
    )
    assert source_identity(None, None, False) == "offline=False|index=default"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://user:s3cret-token@pypi.example/simple", "https://****@pypi.example/simple"),
        ("https://tok%40en@pypi.example:8443/simple/", "https://****@pypi.example:8443/simple/"),
        ("https://pypi.example/simple", "https://pypi.example/simple"),
    ],
)
def test_redact_url_drops_user_information(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_redacted_source_identity_keeps_credentials_out_but_keys_tell_them_apart() -> None:
    url = "https://user:s3cret-token@pypi.example/simple"
    assert source_identity(None, url, False, redact=True) == "offline=False|index=https://****@pypi.example/simple"
    assert source_identity(None, url, False) == f"offline=False|index={url}"
    other = source_identity(None, "https://user:other-token@pypi.example/simple", False)
    assert environment_key(_manifest("a"), INFO, other) != environment_key(
        _manifest("a"), INFO, source_identity(None, url, False)
    )


def test_missing_wheelhouse_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        source_identity(tmp_path / "nope", None, True)
    assert info.value.message == (
        f"wheelhouse {tmp_path / 'nope'} cannot be read (No such file or directory); give a directory of wheels"
    )


def test_interpreter_info_of_the_running_interpreter() -> None:
    info = interpreter_info(sys.executable)
    assert info.version == "{}.{}.{}".format(*sys.version_info[:3])
    assert info.cache_tag == sys.implementation.cache_tag
    assert info.version_tuple == tuple(sys.version_info[:3])


def test_interpreter_info_of_a_missing_interpreter(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        interpreter_info(tmp_path / "python9")
    assert info.value.message == (
        f"interpreter {tmp_path / 'python9'} does not exist (No such file or directory); give the path of an "
        "existing Python executable"
    )


def test_interpreter_info_of_a_program_that_is_no_python(tmp_path: Path) -> None:
    fake = tmp_path / "python9"
    fake.write_text("#!/bin/sh\necho not python >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(UsageError) as info:
        interpreter_info(fake)
    assert info.value.message == (
        f"interpreter {fake} failed to describe itself (not python); give the path of an existing Python executable"
    )
