"""model.toml and requirements-file parsing: every problem named with its file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement

from autoglm_runtime.deps.manifest import (
    _Problems,
    load_manifest,
    parse_requirement_lines,
    parse_requirements_file,
)
from autoglm_runtime.errors import ManifestError


def _write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_full_manifest(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "extra.txt").write_text("six>=1.16  # pinned for x\nnumpy>=1.24,\\\n  <2\n")
    _write(
        tmp_path / "m",
        '[model]\nname = "sentiment-v1"\nentrypoint = "sentiment_model:load"\n'
        'requirements = ["conflictlib==1.0", "-r extra.txt"]\npython = ">=3.10"\n',
    )
    manifest = load_manifest(tmp_path / "m")
    assert manifest.name == "sentiment-v1"
    assert (manifest.module, manifest.attribute) == ("sentiment_model", "load")
    assert [str(r) for r in manifest.requirements] == ["conflictlib==1.0", "six>=1.16", "numpy<2,>=1.24"]
    assert str(manifest.python) == ">=3.10"
    assert manifest.directory == (tmp_path / "m").resolve()
    assert manifest.included_files == ((tmp_path / "m" / "extra.txt").resolve(),)


def test_loading_by_file_path_and_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path / "m", '[model]\nname = "a"\nentrypoint = "pkg.mod:Factory.create"\n')
    manifest = load_manifest(path)
    assert manifest.requirements == ()
    assert manifest.python is None


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m",
        '[model]\nname = "bad name!"\nentrypoint = "no_colon"\nrequirements = ["ok==1", "bad req ==="]\n'
        'python = "three"\ncolour = "red"\n',
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "m")
    assert info.value.code == "E0102"
    assert info.value.message == (
        f"{path} has 5 problems: model.colour: unknown field; expected one of entrypoint, name, python, "
        "requirements; model.name: must be a name of letters, digits, '.', '_' or '-', got 'bad name!'; "
        "model.entrypoint: must look like 'module:callable', got 'no_colon'; model.requirements[1]: "
        "'bad req ===' is not a valid PEP 508 requirement (Expected semicolon (after name with no version "
        "specifier) or end); model.python: 'three' is not a valid version specifier"
    )


def test_the_serving_table_is_checked_with_the_model_table(tmp_path: Path) -> None:
    # Before: load_manifest (so check-deps and env build) accepted any [serving] table, which the loader then
    # refused: a CI gate running check-deps passed manifests no server could load.
    path = _write(
        tmp_path / "m",
        '[model]\nname = "m"\nentrypoint = "x"\n[serving]\nreplicas = 0\nconcurrency = "fast"\nspeed = 1\n',
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.message == (
        f"{path} has 4 problems: model.entrypoint: must look like 'module:callable', got 'x'; serving.speed: "
        "unknown field; expected one of replicas, concurrency, max_inflight, max_queue; serving.replicas: must be "
        "a whole number >= 1, got 0; serving.concurrency: must be one of 'serial', 'threads', 'async', got 'fast'"
    )
    _write(tmp_path / "m", '[model]\nname = "m"\nentrypoint = "m:load"\n[serving]\nmax_inflight = 2\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.message == (
        f"{path}: serving.max_inflight: 2 calls at once need concurrency = 'threads' (a thread-safe model) or "
        "'async' (an async model); a serial model runs one call at a time"
    )
    _write(tmp_path / "m", 'serving = 3\n[model]\nname = "m"\nentrypoint = "m:load"\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.message == f"{path}: serving: must be a table ([serving]), got 3"
    table = '[serving]\nreplicas = 2\nconcurrency = "threads"\nmax_inflight = 4\nmax_queue = 0\n'
    _write(tmp_path / "m", f'[model]\nname = "m"\nentrypoint = "m:load"\n{table}')
    assert load_manifest(path).name == "m"


def test_a_final_newline_is_not_part_of_a_valid_name_or_entrypoint(tmp_path: Path) -> None:
    path = _write(tmp_path / "m", '[model]\nname = "a\\n"\nentrypoint = "pkg.mod:make\\n"\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.code == "E0102"
    assert info.value.message == (
        f"{path} has 2 problems: model.name: must be a name of letters, digits, '.', '_' or '-', got 'a\\n'; "
        "model.entrypoint: must look like 'module:callable', got 'pkg.mod:make\\n'"
    )


def test_missing_file_table_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no such manifest; a model directory must hold model.toml"):
        load_manifest(tmp_path)
    path = _write(tmp_path / "x", "name = 'a'\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.message == (
        f"{path}: [model]: missing table; the manifest needs a [model] table with name and entrypoint"
    )
    path = _write(tmp_path / "y", "[model\n")
    with pytest.raises(ManifestError, match=r"model.toml: not valid TOML: "):
        load_manifest(path)


def test_requirements_must_be_strings(tmp_path: Path) -> None:
    path = _write(tmp_path / "m", '[model]\nname = "a"\nentrypoint = "a:b"\nrequirements = "six"\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.message == f"{path}: model.requirements: must be a list of PEP 508 strings, got 'six'"


def test_include_cycles_missing_includes_and_options(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("-r b.txt\nsix\n")
    (tmp_path / "b.txt").write_text("-r a.txt\n--frobnicate http://example.invalid\n-r missing.txt\n")
    with pytest.raises(ManifestError) as info:
        parse_requirements_file(tmp_path / "a.txt")
    b = (tmp_path / "b.txt").resolve()
    assert info.value.message == (
        f"{(tmp_path / 'a.txt').resolve()} has 3 problems: {b}:1: '-r a.txt' includes itself through "
        f"{(tmp_path / 'a.txt').resolve()}; {b}:2: option '--frobnicate' is not one pip accepts in a "
        f"requirements file; {b}:3: cannot read included requirements file {(tmp_path / 'missing.txt').resolve()}: "
        "No such file or directory"
    )


def test_requirements_file_with_markers_and_extras(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("# comment\n\nrequests[socks]>=2 ; python_version >= '3.8'\n")
    reqs, included = parse_requirements_file(tmp_path / "r.txt")
    assert [str(r) for r in reqs] == ['requests[socks]>=2; python_version >= "3.8"']
    assert included == [(tmp_path / "r.txt").resolve()]


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80))
def test_any_requirement_text_parses_or_gives_a_coded_error(text: str) -> None:
    problems = _Problems(Path("model.toml"))
    reqs = parse_requirement_lines([("model.requirements[0]", text.strip())], Path("."), problems, [])
    assert len(reqs) + len(problems.items) <= 1
    if not text.strip():
        return
    if text.strip().startswith("-"):
        return  # an option pip accepts adds nothing
    assert len(reqs) + len(problems.items) == 1


COMPILED = """\
# This file was autogenerated by uv via the following command:
#    uv pip compile --generate-hashes requirements.in
--index-url https://pypi.example.invalid/simple
--extra-index-url https://mirror.example.invalid/simple
--find-links ./wheels
-c constraints.txt
-e ./localproj
-e git+https://example.invalid/repo.git@v1#egg=from-git
numpy==1.26.4 \\
    --hash=sha256:03a8c78d01d9781b28a6989f6fa1bb2c4f2d51201cf99d3dd875df6fbd96b23b \\
    --hash=sha256:08beddf13648eb95f8d867350f6a018a4be2e5ad54c8d8caed89ebca558b2818
    # via pandas
./wheels/tiny_lib-2.0-py3-none-any.whl
pandas==2.1.4 --hash=sha256:00028e6737c594feac3c2df15636d73ace46b8314d236100b57ed7e4b9ebe8d9
"""


def test_requirements_files_written_by_pip_compile_and_uv_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(COMPILED)
    (tmp_path / "constraints.txt").write_text("urllib3<2\n")
    (tmp_path / "localproj").mkdir()
    (tmp_path / "localproj" / "pyproject.toml").write_text('[project]\nname = "localproj"\nversion = "0.1"\n')
    constraints: list[Requirement] = []
    reqs, included = parse_requirements_file(tmp_path / "requirements.txt", constraints)
    assert [str(r) for r in reqs] == ["localproj", "from-git", "numpy==1.26.4", "tiny_lib==2.0", "pandas==2.1.4"]
    assert included == [(tmp_path / "requirements.txt").resolve(), (tmp_path / "constraints.txt").resolve()]
    assert [str(r) for r in constraints] == ["urllib3<2"]


def test_constraints_files_are_kept_apart_from_the_requirements(tmp_path: Path) -> None:
    # A -c file's lines are constraints wherever the -c line is, also in a -r file; so are those of the files
    # it includes with -r, as uv reads them (pip reads those as requirements).
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "c.txt").write_text("numpy<2\n-r c2.txt\n")
    (tmp_path / "m" / "c2.txt").write_text("pandas==2.1.4; python_version >= '3.9'\n")
    (tmp_path / "m" / "r.txt").write_text("scipy\n-c c3.txt\n")
    (tmp_path / "m" / "c3.txt").write_text("scipy<1.12\n")
    _write(
        tmp_path / "m",
        '[model]\nname = "m"\nentrypoint = "m:load"\nrequirements = ["numpy", "-c c.txt", "-r r.txt"]\n',
    )
    manifest = load_manifest(tmp_path / "m")
    assert [str(r) for r in manifest.requirements] == ["numpy", "scipy"]
    assert [str(r) for r in manifest.constraints] == ["numpy<2", 'pandas==2.1.4; python_version >= "3.9"', "scipy<1.12"]


def test_a_constraint_with_extras_is_a_problem_as_pip_refuses_it(tmp_path: Path) -> None:
    # pip: "Constraints cannot have extras"; uv drops them: read here as either, the check and the install disagree
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "c.txt").write_text("numpy<2\nrequests[socks]<3; python_version >= '3.8'\n-r c2.txt\n")
    (tmp_path / "m" / "c2.txt").write_text("httpx[http2,socks]==0.27.0\n")
    _write(
        tmp_path / "m",
        '[model]\nname = "m"\nentrypoint = "m:load"\nrequirements = ["requests", "-c c.txt"]\n',
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "m")
    assert info.value.code == "E0102"
    assert str(info.value) == (
        f"E0102: {tmp_path / 'm' / 'model.toml'} has 2 problems: model.requirements[1]: constraint "
        "'requests[socks]<3; python_version >= \"3.8\"' in c.txt has extras [socks]: pip refuses extras in "
        "constraints ('Constraints cannot have extras') and uv ignores them; write "
        "'requests<3; python_version >= \"3.8\"' (a requirement may ask for the extras); model.requirements[1]: "
        "constraint 'httpx[http2,socks]==0.27.0' in c.txt has extras [http2,socks]: pip refuses extras in "
        "constraints ('Constraints cannot have extras') and uv ignores them; write 'httpx==0.27.0' (a requirement "
        "may ask for the extras)"
    )


def test_a_huge_bad_line_is_not_echoed_whole(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("numpy==1.26.4 " + "garbage " * 2000 + "\n")
    with pytest.raises(ManifestError) as info:
        parse_requirements_file(bad)
    assert len(info.value.message) < 400
    assert info.value.message.startswith(f"{bad.resolve()}: line 1: 'numpy==1.26.4 garbage garbage garbage")
    assert "... (16013 characters)" in info.value.message


def test_each_requirement_that_is_not_a_string_is_named_alone(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m", '[model]\nname = "a"\nentrypoint = "a:b"\nrequirements = ["six==1.16", 3, "x ===", {a = 1}]\n'
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.message == (
        f"{path} has 3 problems: model.requirements[1]: must be a PEP 508 string, got 3; model.requirements[2]: "
        "'x ===' is not a valid PEP 508 requirement (Expected semicolon (after name with no version specifier) or "
        "end); model.requirements[3]: must be a PEP 508 string, got {'a': 1}"
    )


def test_a_wheel_url_with_a_percent_encoded_local_version_is_pinned_to_it(tmp_path: Path) -> None:
    # download.pytorch.org spells the '+' of a local version '%2B' in its wheel URLs.
    url = "https://download.pytorch.org/whl/cpu/torch-2.1.0%2Bcpu-cp311-cp311-linux_x86_64.whl"
    (tmp_path / "r.txt").write_text(f"{url}\n./wheels/odd-1.0%-py3-none-any.whl\n")
    with pytest.raises(ManifestError) as info:
        parse_requirements_file(tmp_path / "r.txt")
    assert info.value.message.startswith(
        f"{(tmp_path / 'r.txt').resolve()}: line 2: './wheels/odd-1.0%-py3-none-any.whl' names no valid version "
        "'1.0%' or marker"
    )
    (tmp_path / "r.txt").write_text(f"{url}\n")
    reqs, _ = parse_requirements_file(tmp_path / "r.txt")
    assert [str(r) for r in reqs] == ["torch==2.1.0+cpu"]


def test_a_wheel_path_or_url_keeps_its_marker_as_pip_reads_it(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text(
        "https://download.pytorch.org/whl/cu118/torch-2.0.1%2Bcu118-cp311-cp311-linux_x86_64.whl ; "
        "sys_platform == 'linux'\n"
        "./wheels/tiny_lib-2.0-py3-none-any.whl;python_version>='3'\n"
        "https://files.example.invalid/six-1.16.0-py2.py3-none-any.whl#sha256=8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n"
    )
    reqs, _ = parse_requirements_file(tmp_path / "r.txt")
    assert [str(r) for r in reqs] == [
        'torch==2.0.1+cu118; sys_platform == "linux"',
        'tiny_lib==2.0; python_version >= "3"',
        "six==1.16.0",  # the URL's fragment is no part of the file name
    ]
