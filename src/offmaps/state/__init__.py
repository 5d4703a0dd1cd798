"""The server's own state behind protocols: users and clients, web maps, replicas, sync state,
preplanned map areas.

Layer 3 of DESIGN.md. Each store is a :class:`typing.Protocol` with an embedded implementation
in the data folder (SQLite files, JSON documents); PostgreSQL implementations of the same
protocols come with the scale-out work. Services take the protocol, never the implementation.
"""

from offmaps.state.areas import AreaPackage, MapArea, MapAreaStore, SQLiteMapAreaStore
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
    "AreaPackage",
    "Client",
    "Conflict",
    "FolderWebMapStore",
    "LayerScope",
    "MapArea",
    "MapAreaStore",
    "RelatedKey",
    "Replica",
    "ReplicaRegistry",
    "RowKey",
    "RowState",
    "SQLiteMapAreaStore",
    "SQLiteReplicaRegistry",
    "SQLiteSyncStateStore",
    "SQLiteUserStore",
    "SyncStateStore",
    "User",
    "UserStore",
    "WebMapStore",
]
