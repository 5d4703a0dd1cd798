"""The server's own state behind protocols: users and clients, web maps, replicas.

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
from offmaps.state.users import Client, SQLiteUserStore, User, UserStore
from offmaps.state.webmaps import FolderWebMapStore, WebMapStore

__all__ = [
    "Client",
    "FolderWebMapStore",
    "LayerScope",
    "RelatedKey",
    "Replica",
    "ReplicaRegistry",
    "SQLiteReplicaRegistry",
    "SQLiteUserStore",
    "User",
    "UserStore",
    "WebMapStore",
]
