"""The probe's per-distribution cache: reused while a metadata directory is unchanged, never after."""

from __future__ import annotations

import json
import marshal
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from autoglm_runtime.cli import main
from autoglm_runtime.cli.check_deps import cache_file
from autoglm_runtime.deps._scripts import probe_cache
from autoglm_runtime.testing.wheels import build_wheel


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next((env / "lib").glob("python3*/site-packages"))
    for wheel in (
        build_wheel(tmp_path / "w", "app", "1.0", requires=["lib>=2"]),
        build_wheel(tmp_path / "w", "lib", "2.0"),
    ):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    return env / "bin" / "python", site


def _run(python: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    main(["check-deps", "--python", str(python), "--json", *extra])
    return [f["message"] for f in json.loads(capsys.readouterr().out)["findings"]]


def test_the_cache_is_used_while_unchanged_and_invalidated_by_any_change(
    venv: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site = venv
    assert _run(python, capsys) == []
    cached = probe_cache.load_cache(str(cache_file(str(python))))
    assert f"{site}/app-1.0.dist-info" in cached
    assert _run(python, capsys) == []  # warm
    # METADATA rewritten in place (same directory, same size): its own mtime changes.
    meta = site / "app-1.0.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace("lib>=2", "lib>=3"))
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 1_000_000))
    assert _run(python, capsys) == ["app 1.0 requires lib>=3, but lib 2.0 is installed"]
    # A copy of lib left behind in the same directory: new metadata directory, new answer.
    build = build_wheel(site.parent / "w2", "lib", "1.0")
    with zipfile.ZipFile(build) as zf:
        for name in zf.namelist():
            if ".dist-info/" in name:
                zf.extract(name, site)
    found = _run(python, capsys)
    assert any(m.startswith("lib is installed 2 times on the path") for m in found)
    assert _run(python, capsys, "--no-cache") == found


def _egg_info(site: Path, requires: str | None) -> Path:
    """A distribution's egg-info directory (requires.txt only if ``requires`` is given), made now."""
    egg = site / "eggy-1.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: eggy\nVersion: 1.0\n")
    if requires is not None:
        (egg / "requires.txt").write_text(requires)
    return egg


def _add_unseen(egg: Path) -> None:
    """Add requires.txt, then set the directory's mtime back: as a file system with coarse timestamps may
    leave it when the file is added right after the directory was listed."""
    before = egg.stat()
    (egg / "requires.txt").write_text("zz-not-installed>=1\n")
    os.utime(egg, ns=(before.st_atime_ns, before.st_mtime_ns))


MISSING = ["eggy 1.0 requires zz-not-installed>=1, but zz-not-installed is not installed"]


def test_a_recently_changed_metadata_directory_is_listed_again_every_run(
    venv: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site = venv
    egg = _egg_info(site, None)  # its mtime is now: too recent to trust that it says every change
    assert _run(python, capsys) == []
    _add_unseen(egg)
    assert _run(python, capsys) == MISSING


def test_an_old_metadata_directory_is_checked_by_its_files_alone(
    venv: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site = venv
    egg = _egg_info(site, None)
    an_hour_ago = egg.stat().st_mtime_ns - 3600 * 10**9
    os.utime(egg, ns=(an_hour_ago, an_hour_ago))
    assert _run(python, capsys) == []
    (egg / "requires.txt").write_text("zz-not-installed>=1\n")  # changes the directory's mtime
    assert _run(python, capsys) == MISSING
    (egg / "requires.txt").write_text("zz-not-installed>=2\n")  # in place: the file's own mtime and size
    os.utime(egg, ns=(an_hour_ago, an_hour_ago))
    assert _run(python, capsys) == ["eggy 1.0 requires zz-not-installed>=2, but zz-not-installed is not installed"]
    stored = probe_cache.load_cache(str(cache_file(str(python))))[str(egg)]
    assert stored[2] is True  # trusted: the next runs stat its files without listing it


def _report_entry(python: Path) -> Path:
    return cache_file(str(python)).with_name(cache_file(str(python)).stem + ".report")


def test_a_stored_report_is_printed_again_without_importing_the_checker_or_argparse(
    venv: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    python, _site = venv
    first = _run(python, capsys)
    entry = _report_entry(python)
    stamp = entry.stat().st_mtime_ns
    code = (
        "import sys\n"
        "from autoglm_runtime.cli import main\n"
        f"code = main(['check-deps', '--python', {str(python)!r}, '--json'])\n"
        "loaded = [m for m in sys.modules if m.startswith(('argparse', 'packaging', 'autoglm_runtime.deps'))]\n"
        "print(sorted(loaded), code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[] 0"
    assert json.loads(done.stdout[: done.stdout.rindex("}") + 1])["findings"] == first == []
    assert entry.stat().st_mtime_ns == stamp  # a hit leaves the entry as it was


def test_a_stored_report_is_used_only_for_the_same_options_and_environment(
    venv: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site = venv
    main(["check-deps", "--python", str(python)])
    human = capsys.readouterr().out
    assert main(["check-deps", "--python", str(python), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []
    main(["check-deps", "--python", str(python), "--why", "lib"])
    why = capsys.readouterr().out
    assert why.startswith("why lib (2.0 installed):\n")
    assert why.endswith(human)
    assert main(["check-deps", "--python", str(python)]) == 0
    assert capsys.readouterr().out == human
    _egg_info(site, "zz-not-installed>=1\n")
    assert _run(python, capsys) == MISSING


def test_no_cache_and_model_paths_neither_read_nor_write_a_stored_report(
    venv: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    python, _ = venv
    entry = _report_entry(python)
    assert _run(python, capsys, "--no-cache") == []
    assert not entry.exists()
    reqs = tmp_path / "serving.txt"
    reqs.write_text("lib>=3\n")
    (found,) = _run(python, capsys, str(reqs))
    assert found.startswith("model 'serving.txt' needs lib>=3 but the environment has lib 2.0;")
    assert not entry.exists()
    assert _run(python, capsys) == []
    stored = marshal.loads(entry.read_bytes())
    # A forged entry for this very probe output, options and code: printed as stored, which proves it is read;
    # --no-cache ignores it.
    stored["output"] = json.dumps({"findings": [{"message": "from the stored report"}]}) + "\n"
    entry.write_bytes(marshal.dumps(stored))
    assert _run(python, capsys) == ["from the stored report"]
    assert _run(python, capsys, "--no-cache") == []
    entry.write_text("{not marshal")
    assert _run(python, capsys) == []
    assert marshal.loads(entry.read_bytes())["format"] == 2  # rewritten


def _probe(python: Path, *flags: str) -> tuple[dict[str, dict[str, object]], set[str]]:
    """The probe's distributions by name, and the modules ``-X importtime`` says it imported."""
    from autoglm_runtime.cli._early_probe import PROBE_SCRIPT

    command = [str(python), "-X", "importtime", "-I", PROBE_SCRIPT, "--cache", str(cache_file(str(python)))]
    done = subprocess.run([*command[:1], *flags, *command[1:]], capture_output=True, text=True, check=True)
    payload = json.loads(done.stdout.rpartition("@autoglm-runtime-probe@\n")[2])
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return {str(d["name"]): d for d in payload["distributions"]}, imported


def _hashed(imported: set[str]) -> bool:
    """Whether a probe that imported ``imported`` hashed a file (its SHA-256 module, by Python version)."""
    return bool({"_sha2", "_sha256", "hashlib"} & imported)


def _age(*paths: Path) -> None:
    an_hour_ago = time.time_ns() - 3600 * 10**9
    for path in paths:
        os.utime(path, ns=(an_hour_ago, an_hour_ago))


def test_a_warm_probe_reuses_ownership_decisions_and_interpreter_facts_while_their_files_are_unchanged(
    venv: tuple[Path, Path],
) -> None:
    python, site = venv
    for wheel in (
        build_wheel(site.parent / "w3", "jwt", "1.0", modules={"jwt/__init__.py": "X = 1\n"}),
        build_wheel(site.parent / "w3", "PyJWT", "2.8.0", modules={"jwt/__init__.py": "X = 2\n"}),
    ):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)  # PyJWT last: its file is the one on disk
    _age(site / "jwt" / "__init__.py", *site.glob("*.dist-info"))
    dists, imported = _probe(python)
    assert (dists["jwt"]["clashes"], dists["PyJWT"]["clashes"]) == ({"jwt": False}, {"jwt": True})
    assert _hashed(imported)
    cached = probe_cache.load_cache(str(cache_file(str(python))))
    kept = sorted(k.partition("\0")[0] for k in cached if k.startswith("@"))
    assert kept == ["@interpreter", "@output", "@ownership"]
    dists, imported = _probe(python)
    assert (dists["jwt"]["clashes"], dists["PyJWT"]["clashes"]) == ({"jwt": False}, {"jwt": True})
    assert not _hashed(imported)  # the decision was not made again
    assert {"json", "re"} & imported == set()  # nor the metadata read, nor the output written again
    (site / "jwt" / "__init__.py").write_text("X = 1\n")  # same size: the mtime tells
    dists, imported = _probe(python)
    assert (dists["jwt"]["clashes"], dists["PyJWT"]["clashes"]) == ({"jwt": True}, {"jwt": False})
    assert _hashed(imported)
    dists, imported = _probe(python)  # the file is too new to trust its mtime: decided again
    assert (dists["jwt"]["clashes"], dists["PyJWT"]["clashes"]) == ({"jwt": True}, {"jwt": False})
    assert _hashed(imported)


def test_interpreter_facts_are_taken_from_the_cache_only_for_the_same_inputs() -> None:
    from autoglm_runtime.deps._scripts import probe as _probe

    inputs = _probe._facts_inputs()
    forged = {"version": "9.9.9", "markers": {"python_version": "9.9"}}
    assert _probe._facts({_probe.FACTS_KEY: [inputs, forged]}) == forged
    other = [*inputs[:-1], "elsewhere"]  # type: ignore[index]
    cache: dict[str, object] = {_probe.FACTS_KEY: [other, forged]}
    assert _probe._facts(cache) == {"version": platform.python_version(), "markers": _probe.marker_environment()}
    assert cache[_probe.FACTS_KEY] == [inputs, _probe._facts(None)]


def test_a_warm_probe_prints_its_last_output_again_only_for_the_same_directories(venv: tuple[Path, Path]) -> None:
    python, site = venv
    _age(*site.glob("*.dist-info"))
    first, _ = _probe(python)
    second, imported = _probe(python)
    assert second == first
    assert "json" not in imported
    shutil.rmtree(site / "lib-2.0.dist-info")  # every remaining entry still holds: only the listing changed
    third, imported = _probe(python)
    assert sorted(third) == ["app"]
    assert "json" in imported
