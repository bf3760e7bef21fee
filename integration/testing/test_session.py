"""Forcing a session to expire: the client goes LOST, then CONNECTED with a new session."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

from autoglm_runtime.testing.session import StateWatcher
from autoglm_runtime.testing.zookeeper import expire_session


@pytest.mark.zk_container
def test_expire_session_moves_client_to_lost_then_new_session(zk_client: KazooClient, zk_root: str) -> None:
    zk_client.create(f"{zk_root}/ephemeral", b"mine", ephemeral=True)
    old_client_id = zk_client.client_id
    assert old_client_id is not None

    with StateWatcher(zk_client) as states:
        expire_session(zk_client)
        states.wait_for(KazooState.LOST)
        states.wait_for(KazooState.CONNECTED, timeout=30)

    new_client_id = zk_client.client_id
    assert new_client_id is not None
    assert new_client_id[0] != old_client_id[0]
    assert zk_client.exists(f"{zk_root}/ephemeral") is None  # the old session's ephemeral node went with it
