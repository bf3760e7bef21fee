"""Choosing a backend, finding a local installation, and what users are told when nothing is available."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from autoglm_runtime.testing._common import INSTALL_HINT
from autoglm_runtime.testing._container import docker_unreachable_reason
from autoglm_runtime.testing._local import STANDALONE_MAIN, LocalInstallation, find_local_installation
from autoglm_runtime.testing._server import ExternalZooKeeperServer, LocalZooKeeperServer
from autoglm_runtime.testing.ensemble import ZooKeeperEnsemble
from autoglm_runtime.testing.zookeeper import (
    BACKENDS,
    ZooKeeperHarnessError,
    ZooKeeperUnavailableError,
    backend_order,
    in_ci,
    skip_or_fail,
    start_zookeeper,
)

NO_DOCKER = "unix:///nonexistent/docker.sock"


@pytest.fixture
def fake_java(tmp_path: Path) -> Path:
    """A JAVA_HOME with an executable bin/java (never run by these tests)."""
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\nexit 1\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return tmp_path / "jdk"


def test_backend_order() -> None:
    assert BACKENDS == ("container", "local", "external")
    assert backend_order("auto", {}) == BACKENDS
    assert backend_order(None, {}) == BACKENDS
    assert backend_order(None, {"AUTOGLM_ZK_BACKEND": " Local "}) == ("local",)
    assert backend_order("external", {"AUTOGLM_ZK_BACKEND": "local"}) == ("external",)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ZooKeeperHarnessError) as info:
        backend_order(None, {"AUTOGLM_ZK_BACKEND": "podman"})

    assert info.value.message == (
        "The ZooKeeper backend must be one of auto, container, local or external, not 'podman'; "
        "set AUTOGLM_ZK_BACKEND or the backend argument to one of those."
    )


def test_tarball_is_preferred_and_its_jars_and_conf_form_the_classpath(tmp_path: Path, fake_java: Path) -> None:
    home = tmp_path / "apache-zookeeper-3.8.4-bin"
    (home / "lib").mkdir(parents=True)
    (home / "conf").mkdir()
    for jar in ("zookeeper-3.8.4.jar", "zookeeper-jute-3.8.4.jar", "netty-handler-4.1.jar"):
        (home / "lib" / jar).write_bytes(b"")

    found = find_local_installation({"JAVA_HOME": str(fake_java), "ZOOKEEPER_HOME": str(home), "PATH": ""})

    assert found == LocalInstallation(
        java=str(fake_java / "bin" / "java"),
        classpath=(
            str(home / "conf"),
            str(home / "lib" / "netty-handler-4.1.jar"),
            str(home / "lib" / "zookeeper-3.8.4.jar"),
            str(home / "lib" / "zookeeper-jute-3.8.4.jar"),
        ),
        source=f"ZOOKEEPER_HOME={home}",
    )
    argv = found.command(STANDALONE_MAIN, Path("/x/zoo.cfg"))
    assert argv[0] == str(fake_java / "bin" / "java")
    assert argv[-4:] == ["-cp", os.pathsep.join(found.classpath), STANDALONE_MAIN, "/x/zoo.cfg"]
    assert "-Dzookeeper.admin.enableServer=false" in argv


def test_debian_jar_is_used_with_its_logger(tmp_path: Path, fake_java: Path) -> None:
    jar = tmp_path / "java" / "zookeeper.jar"
    jar.parent.mkdir()
    jar.write_bytes(b"")
    (jar.parent / "slf4j-simple.jar").write_bytes(b"")

    found = find_local_installation({"JAVA_HOME": str(fake_java), "PATH": ""}, debian_jar=jar)

    assert found.classpath == (str(jar), str(jar.parent / "slf4j-simple.jar"))
    assert found.source == str(jar)


def test_missing_pieces_are_named(tmp_path: Path, fake_java: Path) -> None:
    with pytest.raises(ZooKeeperUnavailableError) as info:
        find_local_installation({"PATH": str(tmp_path)})
    assert (
        info.value.message == "The local backend needs a java executable, but none was found in JAVA_HOME or on PATH."
    )

    with pytest.raises(ZooKeeperUnavailableError) as info:
        find_local_installation({"JAVA_HOME": str(fake_java), "ZOOKEEPER_HOME": str(tmp_path)})
    assert info.value.message == (
        f"ZOOKEEPER_HOME is set to {str(tmp_path)!r}, but no zookeeper-*.jar was found in it or in its lib folder."
    )

    missing = tmp_path / "none.jar"
    with pytest.raises(ZooKeeperUnavailableError) as info:
        find_local_installation({"JAVA_HOME": str(fake_java)}, debian_jar=missing)
    assert info.value.message == (
        f"The local backend found no ZooKeeper: ZOOKEEPER_HOME is not set and {missing} does not exist."
    )


def test_docker_that_does_not_answer_is_reported() -> None:
    assert docker_unreachable_reason({"DOCKER_HOST": NO_DOCKER}, timeout=1) == (
        f"No Docker engine answered a ping at {NO_DOCKER} within 1 seconds."
    )


def test_auto_with_nothing_available_says_why_and_how_to_install(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "DOCKER_HOST": NO_DOCKER}

    with pytest.raises(ZooKeeperUnavailableError) as info:
        start_zookeeper(env=env)

    assert info.value.message == (
        "No ZooKeeper backend could start (tried container, local, external). "
        f"container: No Docker engine answered a ping at {NO_DOCKER} within 10 seconds. "
        "local: The local backend needs a java executable, but none was found in JAVA_HOME or on PATH. "
        "external: The external backend needs AUTOGLM_ZK_HOSTS, which is not set. " + INSTALL_HINT
    )
    # The same reasons without the advice, for a program that gives its own (the example server does).
    assert info.value.reasons == {
        "container": f"No Docker engine answered a ping at {NO_DOCKER} within 10 seconds.",
        "local": "The local backend needs a java executable, but none was found in JAVA_HOME or on PATH.",
        "external": "The external backend needs AUTOGLM_ZK_HOSTS, which is not set.",
    }
    assert "apt-get install zookeeper" in INSTALL_HINT
    assert "ZOOKEEPER_HOME" in INSTALL_HINT
    assert "AUTOGLM_ZK_HOSTS" in INSTALL_HINT
    assert "Docker engine" in INSTALL_HINT


def test_only_the_chosen_backend_is_tried(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "DOCKER_HOST": NO_DOCKER, "AUTOGLM_ZK_BACKEND": "external"}

    with pytest.raises(ZooKeeperUnavailableError) as info:
        start_zookeeper(env=env)

    assert info.value.message == (
        "No ZooKeeper backend could start (tried external). "
        "external: The external backend needs AUTOGLM_ZK_HOSTS, which is not set. " + INSTALL_HINT
    )


def test_external_backend_uses_the_given_hosts_and_cannot_stop() -> None:
    server = ExternalZooKeeperServer("zk1.example:2182,zk2.example:2181/chroot")

    assert (server.host, server.port, server.hosts, server.backend) == (
        "zk1.example",
        2182,
        "zk1.example:2182,zk2.example:2181/chroot",
        "external",
    )
    with pytest.raises(ZooKeeperHarnessError) as info:
        server.restart()
    assert info.value.message == (
        "The external ZooKeeper at zk1.example:2182,zk2.example:2181/chroot is not run by the harness, so it "
        "cannot be stopped or restarted; use the local or container backend for tests that stop servers."
    )
    server.close()  # a no-op: someone else owns it


def test_in_ci() -> None:
    assert in_ci({"CI": "true"})
    assert in_ci({"CI": "1"})
    assert not in_ci({"CI": "false"})
    assert not in_ci({})


def test_skip_or_fail_fails_under_ci_and_skips_elsewhere() -> None:
    exc = ZooKeeperUnavailableError("Nothing here.")
    expected = "This test needs a real ZooKeeper and none could start. Nothing here."

    with pytest.raises(pytest.fail.Exception) as failed:
        skip_or_fail(exc, {"CI": "true"})
    assert failed.value.msg == expected

    with pytest.raises(pytest.skip.Exception) as skipped:
        skip_or_fail(exc, {})
    assert skipped.value.msg == expected


def test_relative_paths_are_resolved_once_where_they_are_accepted(
    tmp_path: Path, fake_java: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # java runs in the server's data folder: any relative path handed to it would name the wrong place.
    home = tmp_path / "zk"
    (home / "lib").mkdir(parents=True)
    (home / "lib" / "zookeeper-3.8.4.jar").write_bytes(b"")
    monkeypatch.chdir(tmp_path)

    found = find_local_installation({"JAVA_HOME": "jdk", "ZOOKEEPER_HOME": "zk", "PATH": ""})
    assert found.java == str(fake_java / "bin" / "java")
    assert found.classpath == (str(home / "lib" / "zookeeper-3.8.4.jar"),)

    server = LocalZooKeeperServer(found, data_dir=Path("data"), port=1)
    assert (server.data_dir, server.config_path, server.log_path) == (
        tmp_path / "data",
        tmp_path / "data" / "zoo.cfg",
        tmp_path / "data" / "zookeeper.log",
    )
    ensemble = ZooKeeperEnsemble(3, installation=found, base_dir="ens")
    assert [s.data_dir for s in ensemble.servers] == [tmp_path / "ens" / f"server{n}" for n in (1, 2, 3)]
