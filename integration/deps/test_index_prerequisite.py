"""Tests that need real wheels from the package index: never a silent skip (integration._helpers.uv_pip_install)."""

from __future__ import annotations

from pathlib import Path

import pytest
from integration._helpers import uv_pip_install

#: No index serves this: uv's cache cannot hold it, so it is asked of the (unreachable) index.
ABSENT = "autoglm-runtime-absent-from-every-index==1.0"


@pytest.fixture
def unreachable_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple")  # port 9 (discard): refused at once
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")


@pytest.mark.usefixtures("unreachable_index")
def test_an_unreachable_index_fails_the_test_under_ci_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        uv_pip_install("--target", tmp_path, ABSENT)
    message = str(failed.value)
    assert message.startswith(
        f"uv pip install --target {tmp_path} {ABSENT}: not in uv's cache, and not installable from the package "
        "index (is it reachable?): "
    )
    assert "127.0.0.1:9" in message  # uv's own error names the index it could not reach


@pytest.mark.usefixtures("unreachable_index")
def test_an_unreachable_index_skips_outside_ci_saying_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        uv_pip_install("--target", tmp_path, ABSENT)
    assert "not in uv's cache, and not installable from the package index" in str(skipped.value)


def test_wheels_in_uv_s_cache_install_without_the_index_even_with_a_test_s_own_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uv_pip_install("--target", tmp_path / "first", "packaging==23.2")  # from the index unless cached already
    # integration/deps/conftest.py points XDG_CACHE_HOME (where uv's cache lives too) at the test's directory;
    # with the network unreachable (through a proxy that refuses), the wheel comes from the user's uv cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    monkeypatch.setenv("CI", "true")
    uv_pip_install("--target", tmp_path / "again", "packaging==23.2")
    assert (tmp_path / "again" / "packaging" / "__init__.py").is_file()
