"""scripts/_container_setup.py: podman's settings merged into an existing containers.conf, and apt's mirror."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "_container_setup.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_container_setup", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


setup = _load()

WANTED = '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param("", WANTED, id="no file"),
        pytest.param(WANTED, WANTED, id="already right"),
        pytest.param(
            '# site settings\n[containers]\nlog_size_max = 1000\ndefault_ulimits = [\n  "nofile=1024:1024",\n'
            '  "nproc=512:512",\n]\n\n[engine]\nruntime = "crun"  # fast\nevents_logger = "file"\n',
            "# site settings\n[containers]\nlog_size_max = 1000\ndefault_ulimits = []\n\n"
            '[engine]\nruntime = "runc"\nevents_logger = "file"\n',
            id="multi-line array and other keys kept",
        ),
        pytest.param(
            '[network]\nnetwork_backend = "cni"\n\n[engine]\n# runtime = "crun"\ncgroup_manager = "cgroupfs"\n',
            '[network]\nnetwork_backend = "cni"\n\n[engine]\nruntime = "runc"\n# runtime = "crun"\n'
            'cgroup_manager = "cgroupfs"\n\n[containers]\ndefault_ulimits = []\n',
            id="commented key ignored, missing table appended",
        ),
        pytest.param(
            '[engine.runtimes]\nrunc = ["/usr/bin/runc"]\n[engine]\nruntime = "crun"\n',
            '[engine.runtimes]\nrunc = ["/usr/bin/runc"]\n[engine]\nruntime = "runc"\n\n'
            "[containers]\ndefault_ulimits = []\n",
            id="a sub-table's keys are not the table's",
        ),
    ],
)
def test_settings_are_merged_and_nothing_else_changes(before: str, after: str) -> None:
    assert setup.set_toml_keys(before, setup.PODMAN_SETTINGS) == after


def test_an_existing_file_is_backed_up_once_changed(tmp_path: Path) -> None:
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\nruntime = "crun"\n')

    assert setup.configure_containers_conf(conf) is True
    assert setup.configure_containers_conf(conf) is False

    assert conf.read_text() == '[engine]\nruntime = "runc"\n\n[containers]\ndefault_ulimits = []\n'
    assert (tmp_path / "containers.conf.autoglm-backup").read_text() == '[engine]\nruntime = "crun"\n'


def test_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k/sec.gpg] http://security.example/debian-security bookworm-security main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )

    assert setup.apt_mirror("bookworm", tmp_path) == (
        "http://deb.example/debian",
        "main,contrib",
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    )
    assert setup.apt_mirror("bookworm-security", tmp_path) == (
        "http://security.example/debian-security",
        "main",
        "/k/sec.gpg",
    )
    assert setup.apt_mirror("trixie", tmp_path) is None
