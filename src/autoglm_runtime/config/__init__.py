"""The config part: a local cache that follows a ZooKeeper subtree (or a directory) and never silently stops.

Start with :class:`ConfigClient`; listeners receive :class:`ConfigChange` events. ``docs/config-sync.md``
describes the guarantees.
"""

from __future__ import annotations

from autoglm_runtime._exports import publish as _publish
from autoglm_runtime._library_logging import install_null_handler as _install_null_handler
from autoglm_runtime.config._frozen import FrozenDict, FrozenList
from autoglm_runtime.config._values import Validator
from autoglm_runtime.config.client import ConfigClient
from autoglm_runtime.config.codec import BytesCodec, Codec, JsonCodec, TextCodec
from autoglm_runtime.config.dispatcher import ConfigChange, Listener
from autoglm_runtime.config.health import ConfigHealth, ConfigSource, ConfigState
from autoglm_runtime.config.settings import SyncTuning, ZooKeeperConnection
from autoglm_runtime.config.snapshot import Snapshot, SnapshotEntry, read_snapshot, write_snapshot
from autoglm_runtime.config.typed import TypedView

_install_null_handler()  # a library never configures logging; see autoglm_runtime._library_logging

__all__ = [
    "BytesCodec",
    "Codec",
    "ConfigChange",
    "ConfigClient",
    "ConfigHealth",
    "ConfigSource",
    "ConfigState",
    "FrozenDict",
    "FrozenList",
    "JsonCodec",
    "Listener",
    "Snapshot",
    "SnapshotEntry",
    "SyncTuning",
    "TextCodec",
    "TypedView",
    "Validator",
    "ZooKeeperConnection",
    "read_snapshot",
    "write_snapshot",
]

_publish(__name__, globals(), __all__)
