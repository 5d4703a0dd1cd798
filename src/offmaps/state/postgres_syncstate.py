"""The sync state in PostgreSQL: the :class:`~offmaps.state.SyncStateStore` of several server
processes on several hosts.

The same tables as :class:`~offmaps.state.SQLiteSyncStateStore` (``rows``, ``changes``,
``conflicts``) in the state schema (``offmaps_state``), with the same guarantees:

- :meth:`PostgresSyncStateStore.record` is one transaction: a change set's row states, answers
  (and those of the edits they cover, an edit answered already keeping its answer) and
  conflicts are all recorded or none. Records of one service take a transaction-scoped
  advisory lock of it first, so they queue as SQLite's ``BEGIN IMMEDIATE`` makes them (there,
  those of every service): two records of overlapping rows never deadlock. Each kind of row
  goes in one statement over arrays (``unnest``), whatever the size of the change set, sent
  in PostgreSQL's binary format (``%b``: in text, psycopg escapes each element of an array in
  Python, 6 of the 10 s that 100,000 row states and answers took).
- :meth:`PostgresSyncStateStore.iter_states` yields global ids in the order SQLite does
  (bytes, ``COLLATE "C"``, not the database's locale), in pages, holding no connection
  between them.
- :meth:`PostgresSyncStateStore.resolve_conflict` marks the conflict and rewrites the answers
  naming it in one transaction.

JSON is kept as text (``TEXT``, not ``JSONB``): the answers and conflicts carry rows, whose
strings may hold a ``\\u0000`` that ``JSONB`` refuses, and the conflicts' field order is kept.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from offmaps.schemas.changeset import ChangeResult
from offmaps.state.postgres import Migration, PostgresDatabase
from offmaps.state.syncstate import (
    _CONFLICT_COLUMNS,
    Answer,
    Conflict,
    RowKey,
    RowState,
    _conflict,
    _conflict_row,
)

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresSyncStateStore"]

COMPONENT = "sync_state"
"""The name of the store's tables in the schema's ``migrations`` table."""

MIGRATIONS: tuple[Migration, ...] = (
    (
        "row states, answered changes and the conflict review queue",
        """
        CREATE TABLE rows (
            service TEXT NOT NULL,
            layer TEXT NOT NULL,
            globalid TEXT COLLATE "C" NOT NULL,
            version BIGINT NOT NULL,
            vector TEXT NOT NULL,
            hlc TEXT,
            origin TEXT,
            PRIMARY KEY (service, layer, globalid)
        );
        CREATE TABLE changes (
            change_id TEXT PRIMARY KEY,
            replica_id TEXT NOT NULL,
            change_set_id TEXT NOT NULL,
            result TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX changes_replica ON changes (replica_id);
        CREATE TABLE conflicts (
            id TEXT PRIMARY KEY,
            replica_id TEXT NOT NULL,
            owner TEXT,
            map_id TEXT,
            service TEXT NOT NULL,
            layer TEXT NOT NULL,
            globalid TEXT NOT NULL,
            kind TEXT NOT NULL,
            change_id TEXT NOT NULL,
            fields TEXT NOT NULL,
            base TEXT NOT NULL,
            client TEXT NOT NULL,
            server TEXT,
            server_version BIGINT,
            client_vector TEXT NOT NULL,
            status TEXT NOT NULL,
            resolution TEXT,
            created DOUBLE PRECISION NOT NULL,
            resolved DOUBLE PRECISION,
            resolved_by TEXT
        );
        CREATE INDEX conflicts_status ON conflicts (status, created);
        CREATE INDEX conflicts_replica ON conflicts (replica_id, created);
        """,
    ),
)
"""The store's schema, step by step (step *n* makes version *n*): append, never edit."""

_SERVICE_LOCK = 0x6F6D7373  # "omss": with the service's hash, the lock of its records
_PAGE = 1000
"""Rows per page of :meth:`PostgresSyncStateStore.iter_states`."""
_CONFLICT_TYPES = (
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "text", "text", "bigint", "text", "text", "text", "float8", "float8", "text",
)  # fmt: skip
_INSERT_CONFLICTS = (
    f"INSERT INTO conflicts ({_CONFLICT_COLUMNS}) SELECT * FROM unnest("  # noqa: S608 - constant
    + ", ".join(f"%b::{kind}[]" for kind in _CONFLICT_TYPES)
    + ")"
)


class PostgresSyncStateStore:
    """:class:`~offmaps.state.SyncStateStore` in a PostgreSQL schema.

    Args:
        database: the state schema's database (the store closes it in :meth:`close`).
        migrate: upgrade older tables at open instead of refusing to open.

    Raises:
        FeatureStoreError: the database cannot be reached, or its tables are at another
            version (the message says what to do).
    """

    def __init__(self, database: PostgresDatabase, *, migrate: bool = False) -> None:
        self.database = database
        database.require(COMPONENT, MIGRATIONS, migrate=migrate)

    def __repr__(self) -> str:
        return f"PostgresSyncStateStore({self.database!r})"

    def close(self) -> None:
        """Close the database's connections."""
        self.database.close()

    def load_states(self, service: str, keys: Iterable[RowKey]) -> dict[RowKey, RowState]:
        """The recorded states of the rows among ``keys`` that have one."""
        layers: list[str] = []
        gids: list[str] = []
        for layer, gid in set(keys):
            layers.append(layer)
            gids.append(gid)
        if not gids:
            return {}
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT r.layer, r.globalid, r.version, r.vector, r.hlc, r.origin "
                "FROM unnest(%b::text[], %b::text[]) AS k (layer, globalid) "
                "JOIN rows r ON r.service = %s AND r.layer = k.layer "
                'AND r.globalid = k.globalid COLLATE "C"',
                (layers, gids, service),
            ).fetchall()
        return {
            (layer, gid): RowState(version, json.loads(vector), hlc, origin)
            for layer, gid, version, vector, hlc, origin in rows
        }

    def iter_states(self, service: str, layer: str) -> Iterator[tuple[str, RowState]]:
        """Every recorded state of ``layer``'s rows as ``(global id, state)``, in global id
        order (bytes, as SQLite), read in pages."""
        last = ""
        while True:
            with self.database.connection() as conn:
                rows = conn.execute(
                    "SELECT globalid, version, vector, hlc, origin FROM rows WHERE service = %s "
                    "AND layer = %s AND globalid > %s ORDER BY globalid LIMIT %s",
                    (service, layer, last, _PAGE),
                ).fetchall()
            for gid, version, vector, hlc, origin in rows:
                yield gid, RowState(version, json.loads(vector), hlc, origin)
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def find_answers(self, change_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Answer]:
        """The recorded answers among ``change_ids``, whichever replica sent them."""
        if not change_ids:
            return {}
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT change_id, replica_id, result FROM changes "
                "WHERE change_id = ANY(%b::text[])",
                ([str(i) for i in change_ids],),
            ).fetchall()
        return {
            uuid.UUID(change_id): Answer(replica_id, ChangeResult.model_validate_json(result))
            for change_id, replica_id, result in rows
        }

    def record(
        self,
        service: str,
        change_set_id: uuid.UUID,
        *,
        states: Mapping[RowKey, RowState | None],
        answers: Sequence[Answer],
        conflicts: Sequence[Conflict],
    ) -> None:
        """Record what merging a change set decided, in one transaction (see
        :meth:`SyncStateStore.record`).

        Raises:
            FeatureStoreError: the database failed, or a change id is answered already
                (nothing of the change set is recorded).
        """
        now = time.time()
        set_id = str(change_set_id)
        gone = sorted(key for key, state in states.items() if state is None)
        kept = sorted(
            ((key, state) for key, state in states.items() if state is not None),
            key=lambda item: item[0],
        )
        answered = [
            (str(a.result.change_id), a.replica_id, a.result.model_dump_json(exclude_defaults=True))
            for a in answers
        ]
        covered = [
            (
                str(edit),
                a.replica_id,
                a.result.model_copy(update={"change_id": edit}).model_dump_json(
                    exclude_defaults=True
                ),
            )
            for a in answers
            for edit in a.covers
        ]
        with self.database.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_SERVICE_LOCK, service))
            if gone:
                conn.execute(
                    "DELETE FROM rows r USING unnest(%b::text[], %b::text[]) AS k (layer, gid) "
                    'WHERE r.service = %s AND r.layer = k.layer AND r.globalid = k.gid COLLATE "C"',
                    ([k[0] for k in gone], [k[1] for k in gone], service),
                )
            if kept:
                conn.execute(
                    "INSERT INTO rows (service, layer, globalid, version, vector, hlc, origin) "
                    "SELECT %s, * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], "
                    "%b::text[], %b::text[]) "
                    "ON CONFLICT (service, layer, globalid) DO UPDATE SET "
                    "version = excluded.version, vector = excluded.vector, hlc = excluded.hlc, "
                    "origin = excluded.origin",
                    (
                        service,
                        [key[0] for key, _ in kept],
                        [key[1] for key, _ in kept],
                        [s.version for _, s in kept],
                        [json.dumps(s.vector) for _, s in kept],
                        [s.hlc for _, s in kept],
                        [s.origin for _, s in kept],
                    ),
                )
            if answered:
                conn.execute(
                    "INSERT INTO changes (change_id, replica_id, change_set_id, result, at) "
                    "SELECT c, r, %s, a, %s FROM unnest(%b::text[], %b::text[], %b::text[]) "
                    "AS t (c, r, a)",
                    (set_id, now, *_columns(answered, 3)),
                )
            if covered:
                # the edits a change covers are answered as it is; one answered already (in an
                # earlier change whose answer was lost, or by this one) keeps its answer
                conn.execute(
                    "INSERT INTO changes (change_id, replica_id, change_set_id, result, at) "
                    "SELECT c, r, %s, a, %s FROM unnest(%b::text[], %b::text[], %b::text[]) "
                    "WITH ORDINALITY AS t (c, r, a, n) ORDER BY n "
                    "ON CONFLICT (change_id) DO NOTHING",
                    (set_id, now, *_columns(covered, 3)),
                )
            if conflicts:
                conn.execute(
                    _INSERT_CONFLICTS,
                    _columns([_conflict_row(c) for c in conflicts], len(_CONFLICT_TYPES)),
                )

    def list_conflicts(
        self,
        *,
        owner: str | None,
        status: str | None,
        replica_id: str | None,
        limit: int,
    ) -> list[Conflict]:
        """Conflicts, newest first, of ``owner``, in ``status`` and of ``replica_id`` (each
        ``None`` for any)."""
        with self.database.connection() as conn:
            rows = conn.execute(
                f"SELECT {_CONFLICT_COLUMNS} FROM conflicts "  # noqa: S608 - constant columns
                "WHERE (%s::text IS NULL OR owner = %s) AND (%s::text IS NULL OR status = %s) "
                "AND (%s::text IS NULL OR replica_id = %s) ORDER BY created DESC LIMIT %s",
                (owner, owner, status, status, replica_id, replica_id, limit),
            ).fetchall()
        return [_conflict(row) for row in rows]

    def find_conflict(self, conflict_id: str) -> Conflict | None:
        """The conflict with this id, or ``None``."""
        with self.database.connection() as conn:
            row = conn.execute(
                f"SELECT {_CONFLICT_COLUMNS} FROM conflicts WHERE id = %s",  # noqa: S608
                (conflict_id,),
            ).fetchone()
        return None if row is None else _conflict(row)

    def refresh_conflict(
        self,
        conflict_id: str,
        *,
        kind: str,
        server: dict[str, Any] | None,
        server_version: int | None,
    ) -> None:
        """Record the server's side of an open conflict as the row is now; a resolved conflict
        keeps what it had."""
        with self.database.connection() as conn:
            conn.execute(
                "UPDATE conflicts SET kind = %s, server = %s, server_version = %s "
                "WHERE id = %s AND status = 'open'",
                (kind, None if server is None else json.dumps(server), server_version, conflict_id),
            )

    def resolve_conflict(
        self,
        conflict_id: str,
        *,
        resolution: str,
        resolved_by: str,
        settle: Callable[[ChangeResult], ChangeResult],
    ) -> None:
        """Mark a conflict resolved and rewrite the answers that name it, in one transaction."""
        with self.database.transaction() as conn:
            conn.execute(
                "UPDATE conflicts SET status = 'resolved', resolution = %s, resolved = %s, "
                "resolved_by = %s WHERE id = %s",
                (resolution, time.time(), resolved_by, conflict_id),
            )
            # the parked change's answer, and those of the edits it covered: the text search
            # narrows them down, the JSON decides (no ::jsonb cast, which a \u0000 would fail)
            candidates = conn.execute(
                "SELECT change_id, result FROM changes WHERE replica_id = "
                "(SELECT replica_id FROM conflicts WHERE id = %s) AND strpos(result, %s) > 0 "
                "FOR UPDATE",
                (conflict_id, conflict_id),
            ).fetchall()
            settled = [
                (settle(ChangeResult.model_validate_json(result)).model_dump_json(), change_id)
                for change_id, result in candidates
                if _names(result, conflict_id)
            ]
            if settled:
                conn.execute(
                    "UPDATE changes SET result = t.result FROM unnest(%b::text[], %b::text[]) "
                    "AS t (result, change_id) WHERE changes.change_id = t.change_id",
                    _columns(settled, 2),
                )


def _names(result: str, conflict_id: str) -> bool:
    """Whether an answer's ``conflict_id`` is ``conflict_id`` (as SQLite's ``json_extract``)."""
    found: Any = json.loads(result)
    return isinstance(found, dict) and found.get("conflict_id") == conflict_id


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as ``width`` columns: the arrays ``unnest`` takes."""
    return [[row[n] for row in rows] for n in range(width)]
