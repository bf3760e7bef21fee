"""ZooKeeperConnection and SyncTuning: validated, grouped settings, and the client_factory seam."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient

from autoglm_runtime import ConfigClient
from autoglm_runtime.config import SyncTuning, ZooKeeperConnection
from autoglm_runtime.errors import UsageError


def test_the_kazoo_client_carries_the_connection_settings() -> None:
    connection = ZooKeeperConnection(session_timeout=4.0, reconnect_max_delay=0.5, auth=[("digest", "a:b")])
    kazoo = connection.kazoo_client("127.0.0.1:1", ("digest", "c:d"))
    try:
        assert isinstance(kazoo, KazooClient)
        assert kazoo.auth_data == {("digest", "a:b"), ("digest", "c:d")}
        assert kazoo._conn_retry.max_tries == -1  # retries for as long as the sync runs
        assert kazoo._conn_retry.max_delay == 0.5
    finally:
        kazoo.close()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ZooKeeperConnection(session_timeout=0), "E0001: session_timeout must be a positive number, got 0"),
        (
            lambda: ZooKeeperConnection(auth=[("digest",)]),  # type: ignore[list-item]
            'E0001: auth must be ("digest", "user:password") or a list of (scheme, credential) pairs',
        ),
        (
            lambda: SyncTuning(reconcile_rate=-1),
            "E0001: reconcile_rate must be a positive number of reads per second, got -1",
        ),
        (lambda: SyncTuning(batch_size=0), "E0001: batch_size must be at least 1, got 0"),
        (
            lambda: SyncTuning(watch_mode="recursive"),  # type: ignore[arg-type]
            "E0001: watch_mode must be 'auto' or 'per_node', got 'recursive'",
        ),
        (
            lambda: SyncTuning(snapshot_debounce=-0.5),
            "E0001: reconcile_jitter and snapshot_debounce must not be negative",
        ),
    ],
)
def test_bad_settings_are_coded_usage_errors(build: object, message: str) -> None:
    with pytest.raises(UsageError) as info:
        build()  # type: ignore[operator]
    assert str(info.value) == message


def test_a_factory_excludes_connection_and_auth() -> None:
    def factory() -> KazooClient:
        raise AssertionError("not called when the arguments are refused")

    with pytest.raises(UsageError, match="give either client_factory or connection/auth"):
        ConfigClient("127.0.0.1:1", "/r", auth=("digest", "a:b"), client_factory=factory)
    with pytest.raises(UsageError, match="give either client_factory or connection/auth"):
        ConfigClient("127.0.0.1:1", "/r", connection=ZooKeeperConnection(), client_factory=factory)


def test_the_factory_builds_the_client_once_and_the_config_client_closes_it() -> None:
    made: list[KazooClient] = []

    def factory() -> KazooClient:
        made.append(ZooKeeperConnection(session_timeout=2.0).kazoo_client("127.0.0.1:1"))
        return made[-1]

    client = ConfigClient("127.0.0.1:1", "/r", client_factory=factory)
    assert len(made) == 1
    client.stop()
    assert made[0].connected is False


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SyncTuning(batch_size=2.5), "E0001: batch_size must be at least 1, got 2.5"),  # type: ignore[arg-type]
        (lambda: SyncTuning(reconcile_jitter=float("nan")), "E0001: reconcile_jitter must be a finite number, got nan"),
        (
            lambda: ZooKeeperConnection(session_timeout="10"),  # type: ignore[arg-type]
            "E0001: session_timeout must be a finite number, got '10'",
        ),
        (
            lambda: ZooKeeperConnection(auth="ab"),  # type: ignore[arg-type]
            'E0001: auth must be ("digest", "user:password") or a list of (scheme, credential) pairs, not a string',
        ),
    ],
)
def test_settings_of_the_wrong_type_are_coded_usage_errors(build: object, message: str) -> None:
    with pytest.raises(UsageError) as info:
        build()  # type: ignore[operator]
    assert str(info.value) == message


def test_a_factory_must_give_a_new_kazoo_client() -> None:
    with pytest.raises(UsageError, match="client_factory must return a kazoo KazooClient, got NoneType"):
        ConfigClient("127.0.0.1:1", "/r", client_factory=lambda: None)  # type: ignore[arg-type,return-value]


def test_a_second_client_sharing_the_first_ones_handler_is_refused() -> None:
    from kazoo.handlers.threading import SequentialThreadingHandler

    from autoglm_runtime.config.settings import session_factory

    shared = SequentialThreadingHandler()
    made: list[KazooClient] = []

    def factory() -> KazooClient:
        made.append(KazooClient("127.0.0.1:1", handler=shared if len(made) < 3 else SequentialThreadingHandler()))
        return made[-1]

    new_session = session_factory("127.0.0.1:1", ZooKeeperConnection(), None, factory)
    try:
        assert new_session() is made[0]  # the config client's own session
        for _ in range(2):  # every catch-up client with that handler, not only the first
            with pytest.raises(UsageError) as info:
                new_session()
            assert info.value.code == "E0001"
            assert info.value.message == (
                f"client_factory returned a KazooClient sharing its handler (SequentialThreadingHandler at "
                f"{id(shared):#x}) with the config client's own session: KazooClient.stop() stops its handler, so "
                "closing the short catch-up session would stop the config client's too; create a new handler for "
                "each client inside the factory (or leave handler= out)"
            )
        assert new_session() is made[3]  # a handler of its own: taken
    finally:
        for client in made:
            client.close()
