"""Helpers shared by the ConfigClient integration tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient

from autoglm_runtime import ConfigClient

#: The ``make_client`` fixture: ``make_client(hosts, root, **options)`` builds a ConfigClient (not started).
Factory = Callable[..., ConfigClient]
#: The ``until`` fixture: ``until(condition, timeout=20.0, what="condition")`` polls with a deadline.
Until = Callable[..., None]


def j(value: Any) -> bytes:
    """``value`` as the JSON bytes a ZooKeeper node holds."""
    return json.dumps(value).encode()


def kazoo_of(client: ConfigClient) -> KazooClient:
    """The KazooClient a started ConfigClient syncs through."""
    return client._source.client  # type: ignore[union-attr,no-any-return]
