"""The replicas the server has handed out, in PostgreSQL: the
:class:`~offmaps.state.ReplicaRegistry` of several server processes on several hosts.

The same rows as :class:`~offmaps.state.SQLiteReplicaRegistry`, in the ``replicas`` table of the
state schema (``offmaps_state``); layers and scopes as ``JSONB``. A registration with a quota
(``max_owned``) counts the owner's replicas and inserts the new one in one transaction that
first takes an advisory lock of that owner: SQLite serialises every write, PostgreSQL under
``READ COMMITTED`` would let two registrations count the same rows and pass the quota together.
Registrations of different owners never wait for each other.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from typing import Any

from psycopg.types.json import Jsonb

from offmaps.errors import InvalidUserError, QuotaExceededError, ReplicaNotFoundError
from offmaps.state.postgres import Migration, PostgresDatabase
from offmaps.state.replicas import _REPLICA_ID, LayerScope, Replica

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresReplicaRegistry"]

COMPONENT = "replicas"
"""The name of the registry's tables in the schema's ``migrations`` table."""

MIGRATIONS: tuple[Migration, ...] = (
    (
        "the replicas table",
        """
        CREATE TABLE replicas (
            id TEXT PRIMARY KEY,
            service TEXT NOT NULL,
            layers JSONB NOT NULL,
            generation BIGINT NOT NULL,
            owner TEXT,
            map_id TEXT,
            sync_direction TEXT NOT NULL,
            sync_model TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            scope JSONB NOT NULL DEFAULT '{}',
            attachment_sync_direction TEXT NOT NULL DEFAULT 'bidirectional',
            last_sync DOUBLE PRECISION,
            inserts_only BOOLEAN NOT NULL DEFAULT false
        );
        CREATE INDEX replicas_owner ON replicas (owner);
        """,
    ),
)
"""The registry's schema, step by step (step *n* makes version *n*): append, never edit."""

_OWNER_LOCK = 0x6F6D7270  # "omrp": with the owner's hash, the lock of a quota check
_SELECT = (
    "SELECT id, service, layers, generation, owner, map_id, sync_direction, sync_model, "
    "created, scope, attachment_sync_direction, last_sync, inserts_only FROM replicas"
)


def _replica(row: tuple[Any, ...]) -> Replica:
    scope = {name: LayerScope.from_json(value) for name, value in row[9].items()}
    return Replica(
        id=row[0], service=row[1], layers=tuple(row[2]), generation=row[3], owner=row[4],
        map_id=row[5], sync_direction=row[6], sync_model=row[7], created=row[8], scope=scope,
        attachment_sync_direction=row[10], last_sync=row[11], inserts_only=bool(row[12]),
    )  # fmt: skip


class PostgresReplicaRegistry:
    """Replicas by id, in a PostgreSQL schema.

    Args:
        database: the state schema's database (the registry closes it in :meth:`close`).
        migrate: upgrade older tables at open instead of refusing to open.

    Raises:
        FeatureStoreError: the database cannot be reached, or its tables are at another
            version (the message says what to do).
    """

    def __init__(self, database: PostgresDatabase, *, migrate: bool = False) -> None:
        self.database = database
        database.require(COMPONENT, MIGRATIONS, migrate=migrate)

    def __repr__(self) -> str:
        return f"PostgresReplicaRegistry({self.database!r})"

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
        unless ``owner`` has that many already: counted and inserted in one transaction under
        the owner's lock).

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
        scope_json = {name: asdict(found) for name, found in replica.scope.items()}
        with self.database.transaction() as conn:
            if max_owned is not None:
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_OWNER_LOCK, owner))
            inserted = conn.execute(
                "INSERT INTO replicas (id, service, layers, generation, owner, map_id, "
                "sync_direction, sync_model, created, scope, attachment_sync_direction, "
                "last_sync, inserts_only) "
                "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s "
                "WHERE %s::integer IS NULL "
                "OR (SELECT count(*) FROM replicas WHERE owner = %s) < %s::integer",
                (
                    replica.id, service, Jsonb(list(layers)), generation, owner, map_id,
                    sync_direction, sync_model, replica.created, Jsonb(scope_json),
                    attachment_sync_direction, inserts_only, max_owned, owner, max_owned,
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
        with self.database.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM replicas WHERE owner = %s", (owner,)
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def find(self, replica_id: str) -> Replica | None:
        """The replica with this id, or ``None``."""
        with self.database.connection() as conn:
            row = conn.execute(_SELECT + " WHERE id = %s", (replica_id,)).fetchone()
        return None if row is None else _replica(row)

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
        with self.database.connection() as conn:
            conn.execute(
                "UPDATE replicas SET generation = GREATEST(generation, %s), last_sync = %s "
                "WHERE id = %s",
                (generation, time.time(), replica_id),
            )

    def unregister(self, replica_id: str) -> None:
        """Forget a replica (its device will no longer sync); raises ``ReplicaNotFoundError``."""
        self.get(replica_id)
        with self.database.connection() as conn:
            conn.execute("DELETE FROM replicas WHERE id = %s", (replica_id,))

    def close(self) -> None:
        """Close the database's connections."""
        self.database.close()
