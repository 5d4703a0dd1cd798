"""The replicas the server has handed out: which service, which layers, from which generation.

An offline map taken with ``update_mode = sync_with_feature_services`` registers one replica per
feature service; sync reads and advances it. Each replica keeps its scope (which rows of each
layer it holds), so downloads send only rows that belong to it. Kept in ``DATA/replicas.sqlite``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from offmaps.errors import (
    FeatureStoreError,
    InvalidUserError,
    QuotaExceededError,
    ReplicaNotFoundError,
)

__all__ = ["SQLiteReplicaRegistry", "LayerScope", "RelatedKey", "Replica", "ReplicaRegistry"]

_REPLICA_ID = re.compile(r"^[0-9a-f]{32}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    layers TEXT NOT NULL,
    generation INTEGER NOT NULL,
    owner TEXT,
    map_id TEXT,
    sync_direction TEXT NOT NULL,
    sync_model TEXT NOT NULL,
    created REAL NOT NULL
)
"""
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS replicas_owner ON replicas (owner)"
_ADDED_COLUMNS = (
    ("scope", "TEXT NOT NULL DEFAULT '{}'"),
    ("attachment_sync_direction", "TEXT NOT NULL DEFAULT 'bidirectional'"),
    ("last_sync", "REAL"),
    ("inserts_only", "INTEGER NOT NULL DEFAULT 0"),
)


@dataclass(frozen=True, slots=True)
class RelatedKey:
    """A relationship that limits a table to the rows related to the replica's rows of its
    origin: a row belongs when its ``destination_key`` equals the ``origin_key`` of one of
    them."""

    origin: str
    origin_key: str
    destination_key: str


@dataclass(frozen=True, slots=True)
class LayerScope:
    """Which rows of a layer a replica holds: the ones a download keeps sending.

    Attributes:
        where: the CQL2 filter the rows were taken with (definition expression and where
            clause), or ``None``.
        area: the area (GeoJSON in CRS84) rows must intersect; ``None`` for tables and layers
            taken whole.
        include_null_geometry: whether rows without geometry are kept.
        related: for a table taken with "related rows only", the relationships that limit
            it (a row belongs when any of them relates it to a row the replica holds); empty
            for everything else.
    """

    where: str | None = None
    area: dict[str, Any] | None = None
    include_null_geometry: bool = False
    related: tuple[RelatedKey, ...] = ()

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> LayerScope:
        """A scope as :meth:`ReplicaRegistry.register` stored it (replicas registered before
        ``related`` existed have none)."""
        related = tuple(RelatedKey(**found) for found in value.get("related", ()))
        return cls(**{**value, "related": related})


@dataclass(frozen=True, slots=True)
class Replica:
    """One registered replica.

    ``owner`` is the user who took the map offline: every replica registered now has one;
    ``None`` only in replicas registered by versions that let anonymous callers start jobs,
    which only admins may use.
    """

    id: str
    service: str
    layers: tuple[str, ...]
    generation: int
    owner: str | None
    map_id: str | None
    sync_direction: str
    sync_model: str
    created: float
    scope: dict[str, LayerScope] = field(default_factory=dict)
    attachment_sync_direction: str = "bidirectional"
    last_sync: float | None = None
    inserts_only: bool = False
    """Whether the replica may upload new features only (a preplanned package in
    ``download_scheduled_updates_and_upload_new_features`` mode): its other changes are
    rejected, each with the reason."""


@runtime_checkable
class ReplicaRegistry(Protocol):
    """The replicas a server handed out: the seam a PostgreSQL store implements too."""

    def register(
        self,
        service: str,
        layers: tuple[str, ...],
        generation: int,
        *,
        owner: str,
        map_id: str | None,
        sync_direction: str,
        sync_model: str = "per_layer",
        scope: dict[str, LayerScope] | None = None,
        attachment_sync_direction: str = "bidirectional",
        max_owned: int | None = None,
        retry_after_s: int = 3600,
        inserts_only: bool = False,
        replica_id: str | None = None,
    ) -> Replica:
        """Record a new replica of user ``owner``; returns it with its id.

        With ``max_owned``, the count of the owner's replicas and the new one's insertion are
        one step, so concurrent jobs cannot pass the quota together; ``retry_after_s`` is
        the refusal's ``retry_after``.

        ``replica_id`` gives the new replica's id (a generate job derives it from its own id, so
        a run again of the job makes the same); a random one by default.

        Raises:
            QuotaExceededError: ``owner`` has ``max_owned`` replicas already.
            InvalidUserError: no owner.
        """
        ...

    def count_owned(self, owner: str) -> int:
        """How many replicas ``owner`` has registered."""
        ...

    def find(self, replica_id: str) -> Replica | None:
        """The replica with this id, or ``None``."""
        ...

    def get(self, replica_id: str) -> Replica:
        """The replica with this id; raises ``ReplicaNotFoundError``."""
        ...

    def synced(self, replica_id: str, generation: int) -> None:
        """Record that the replica downloaded up to ``generation`` now."""
        ...

    def unregister(self, replica_id: str) -> None:
        """Forget a replica (its device will no longer sync); raises ``ReplicaNotFoundError``."""
        ...

    def close(self) -> None:
        """Close the file."""
        ...


class SQLiteReplicaRegistry:
    """Replicas by id, in a SQLite file."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            present = {row[1] for row in self._conn.execute("PRAGMA table_info(replicas)")}
            for name, definition in _ADDED_COLUMNS:
                if name not in present:
                    self._conn.execute(f"ALTER TABLE replicas ADD COLUMN {name} {definition}")
            self._conn.execute(_OWNER_INDEX)
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"cannot open the replica registry {path}: {exc}") from None

    def register(
        self,
        service: str,
        layers: tuple[str, ...],
        generation: int,
        *,
        owner: str,
        map_id: str | None,
        sync_direction: str,
        sync_model: str = "per_layer",
        scope: dict[str, LayerScope] | None = None,
        attachment_sync_direction: str = "bidirectional",
        max_owned: int | None = None,
        retry_after_s: int = 3600,
        inserts_only: bool = False,
        replica_id: str | None = None,
    ) -> Replica:
        """Record a new replica of user ``owner``; returns it with its id (with ``max_owned``,
        unless ``owner`` has that many already: counted and inserted in one statement).

        Raises:
            QuotaExceededError: ``owner`` has ``max_owned`` replicas already.
            InvalidUserError: no owner.
        """
        if not isinstance(owner, str) or not owner:
            raise InvalidUserError("a replica needs an owner: the user who takes the map offline")
        replica = Replica(
            replica_id or uuid.uuid4().hex, service, layers, generation, owner, map_id,
            sync_direction, sync_model, time.time(), dict(scope or {}), attachment_sync_direction,
            inserts_only=inserts_only,
        )  # fmt: skip
        scope_json = json.dumps({name: asdict(found) for name, found in replica.scope.items()})
        with self._lock:
            inserted = self._conn.execute(
                "INSERT INTO replicas (id, service, layers, generation, owner, map_id, "
                "sync_direction, sync_model, created, scope, attachment_sync_direction, "
                "inserts_only) "
                "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                "WHERE ? IS NULL OR (SELECT count(*) FROM replicas WHERE owner = ?) < ?",
                (
                    replica.id, service, json.dumps(list(layers)), generation, owner, map_id,
                    sync_direction, sync_model, replica.created, scope_json,
                    attachment_sync_direction, int(inserts_only), max_owned, owner, max_owned,
                ),
            ).rowcount  # fmt: skip
        if inserted != 1:
            raise QuotaExceededError(
                f"{owner} has {max_owned} replicas registered, the most a user may: "
                "unregister one (DELETE /api/replicas/{id}) first",
                quota="replicas",
                limit=max_owned or 0,
                used=self.count_owned(owner),
                retry_after=retry_after_s,
            )
        return replica

    def count_owned(self, owner: str) -> int:
        """How many replicas ``owner`` has registered."""
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM replicas WHERE owner = ?", (owner,)
            ).fetchone()
        return int(row[0])

    def find(self, replica_id: str) -> Replica | None:
        """The replica with this id, or ``None``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, service, layers, generation, owner, map_id, sync_direction, "
                "sync_model, created, scope, attachment_sync_direction, last_sync, inserts_only "
                "FROM replicas WHERE id = ?",
                (replica_id,),
            ).fetchone()
        if row is None:
            return None
        scope = {name: LayerScope.from_json(value) for name, value in json.loads(row[9]).items()}
        return Replica(
            id=row[0], service=row[1], layers=tuple(json.loads(row[2])), generation=row[3],
            owner=row[4], map_id=row[5], sync_direction=row[6], sync_model=row[7],
            created=row[8], scope=scope, attachment_sync_direction=row[10], last_sync=row[11],
            inserts_only=bool(row[12]),
        )  # fmt: skip

    def get(self, replica_id: str) -> Replica:
        """The replica with this id; raises ``ReplicaNotFoundError``."""
        found = self.find(replica_id) if _REPLICA_ID.match(replica_id) else None
        if found is None:
            raise ReplicaNotFoundError(
                f"no replica {replica_id[:40]!r}: it was never registered or was unregistered"
            )
        return found

    def synced(self, replica_id: str, generation: int) -> None:
        """Record that the replica downloaded up to ``generation`` now."""
        with self._lock:
            self._conn.execute(
                "UPDATE replicas SET generation = max(generation, ?), last_sync = ? WHERE id = ?",
                (generation, time.time(), replica_id),
            )

    def unregister(self, replica_id: str) -> None:
        """Forget a replica (its device will no longer sync); raises ``ReplicaNotFoundError``."""
        self.get(replica_id)
        with self._lock:
            self._conn.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()
