"""The server's own state behind protocols: users and clients, web maps, replicas, sync state.

Layer 3 of DESIGN.md. Each store is a :class:`typing.Protocol` with an embedded implementation
in the data folder (SQLite files, JSON documents); PostgreSQL implementations of the same
protocols come with the scale-out work. Services take the protocol, never the implementation.
"""

from offmaps.state.replicas import (
    LayerScope,
    RelatedKey,
    Replica,
    ReplicaRegistry,
    SQLiteReplicaRegistry,
)
from offmaps.state.syncstate import (
    Answer,
    Conflict,
    RowKey,
    RowState,
    SQLiteSyncStateStore,
    SyncStateStore,
)
from offmaps.state.users import Client, SQLiteUserStore, User, UserStore
from offmaps.state.webmaps import FolderWebMapStore, WebMapStore

__all__ = [
    "Answer",
    "Client",
    "Conflict",
    "FolderWebMapStore",
    "LayerScope",
    "RelatedKey",
    "Replica",
    "ReplicaRegistry",
    "RowKey",
    "RowState",
    "SQLiteReplicaRegistry",
    "SQLiteSyncStateStore",
    "SQLiteUserStore",
    "SyncStateStore",
    "User",
    "UserStore",
    "WebMapStore",
]
