"""The server's sync state: row clocks, answered changes and the conflict review queue.

What the sync service (:class:`offmaps.replicas.SyncService`) remembers between change sets,
behind the :class:`SyncStateStore` protocol:

- per row of a feature service, the version vector and hybrid logical clock time of its last
  synced write, the store version they were recorded at, and the replica whose change the row
  then held exactly as sent (:class:`RowState`);
- every change id the server has answered, with its answer, and the ids of the edits each
  change covers with the same answer (:class:`Answer`), so a change set sent again gets the
  recorded answers and applies nothing twice;
- the review queue (:class:`Conflict`): the base, the client's and the server's versions of a
  row whose edit was parked (``manual``) or settled by a policy (kept for the record).

The methods are set-oriented (states of many rows read at once, a change set's states, answers
and conflicts recorded in one call and one transaction), so a PostgreSQL implementation does as
few round trips as the embedded one. :class:`SQLiteSyncStateStore` is that embedded one:
``DATA/sync.sqlite``, tables ``rows``, ``changes`` and ``conflicts``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

from offmaps.schemas.changeset import ChangeResult

__all__ = [
    "Answer",
    "Conflict",
    "RowKey",
    "RowState",
    "SQLiteSyncStateStore",
    "SyncStateStore",
]

RowKey: TypeAlias = tuple[str, str]
"""A row of a feature service: ``(layer, global id)``, the global id as text."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rows (service TEXT NOT NULL, layer TEXT NOT NULL, "
    "globalid TEXT NOT NULL, version INTEGER NOT NULL, vector TEXT NOT NULL, hlc TEXT, "
    "origin TEXT, PRIMARY KEY (service, layer, globalid))",
    "CREATE TABLE IF NOT EXISTS changes (change_id TEXT PRIMARY KEY, replica_id TEXT NOT NULL, "
    "change_set_id TEXT NOT NULL, result TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS changes_replica ON changes (replica_id)",
    "CREATE TABLE IF NOT EXISTS conflicts (id TEXT PRIMARY KEY, replica_id TEXT NOT NULL, "
    "owner TEXT, map_id TEXT, service TEXT NOT NULL, layer TEXT NOT NULL, "
    "globalid TEXT NOT NULL, kind TEXT NOT NULL, change_id TEXT NOT NULL, "
    "fields TEXT NOT NULL, base TEXT NOT NULL, client TEXT NOT NULL, server TEXT, "
    "server_version INTEGER, client_vector TEXT NOT NULL, status TEXT NOT NULL, "
    "resolution TEXT, created REAL NOT NULL, resolved REAL, resolved_by TEXT)",
    "CREATE INDEX IF NOT EXISTS conflicts_status ON conflicts (status, created)",
)
_CONFLICT_COLUMNS = (
    "id, replica_id, owner, map_id, service, layer, globalid, kind, change_id, fields, base, "
    "client, server, server_version, client_vector, status, resolution, created, resolved, "
    "resolved_by"
)
_BATCH = 500
"""Keys per ``IN (...)`` list, and rows per page of :meth:`SQLiteSyncStateStore.iter_states`."""


@dataclass(frozen=True, slots=True)
class RowState:
    """A row's sync clock: the version vector and hybrid logical clock time of its last
    synced write, and the store version they were recorded at.

    Versions written since by anything else (OGC API, conflict resolutions) count as the
    server's edits (:func:`offmaps.sync.vectors.derive`).
    """

    version: int
    vector: dict[str, int]
    hlc: str | None
    origin: str | None = None
    """The replica whose change the row holds exactly as it sent it at ``version`` (the change
    was applied as is), or ``None`` (merged with other edits, or not known): a download to that
    replica need not send the row back while it stays at ``version``."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The server's answer to one change of a replica.

    Attributes:
        replica_id: the replica that sent the change.
        result: the answer (its ``change_id`` is the change's).
        covers: when recorded, the ids of the edits the change covers, answered as it is
            (one answered already keeps its answer); empty when read back, as each covered
            id is an answer of its own.
    """

    replica_id: str
    result: ChangeResult
    covers: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class Conflict:
    """An entry of the review queue (docs/sync.md)."""

    id: str
    replica_id: str
    owner: str | None
    map_id: str | None
    service: str
    layer: str
    global_id: str
    kind: str
    """``update_update``, ``delete_update`` (the device deleted, the server updated) or
    ``update_delete`` (the device updated, the server deleted)."""
    change_id: str
    fields: list[str]
    base: dict[str, Any]
    client: dict[str, Any]
    server: dict[str, Any] | None
    server_version: int | None
    client_vector: dict[str, int]
    status: str
    """``open``, or ``resolved``."""
    resolution: str | None
    created: float
    resolved: float | None
    resolved_by: str | None

    def document(self) -> dict[str, Any]:
        """The conflict as JSON for the REST API."""
        return {
            "id": self.id,
            "replica_id": self.replica_id,
            "map_id": self.map_id,
            "collection": f"{self.service}.{self.layer}",
            "layer": self.layer,
            "global_id": self.global_id,
            "kind": self.kind,
            "change_id": self.change_id,
            "fields": self.fields,
            "base": self.base,
            "client": self.client,
            "server": self.server,
            "server_version": self.server_version,
            "status": self.status,
            "resolution": self.resolution,
            "created": _iso(self.created),
            "resolved": _iso(self.resolved) if self.resolved else None,
            "resolved_by": self.resolved_by,
        }


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


@runtime_checkable
class SyncStateStore(Protocol):
    """The sync service's state: the seam a PostgreSQL store implements too."""

    def load_states(self, service: str, keys: Iterable[RowKey]) -> dict[RowKey, RowState]:
        """The recorded states of the rows among ``keys`` that have one."""
        ...

    def iter_states(self, service: str, layer: str) -> Iterator[tuple[str, RowState]]:
        """Every recorded state of ``layer``'s rows as ``(global id, state)``, in global id
        order."""
        ...

    def find_answers(self, change_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Answer]:
        """The recorded answers among ``change_ids``, whichever replica sent them."""
        ...

    def record(
        self,
        service: str,
        change_set_id: uuid.UUID,
        *,
        states: Mapping[RowKey, RowState | None],
        answers: Sequence[Answer],
        conflicts: Sequence[Conflict],
    ) -> None:
        """Record what merging a change set decided, in one transaction: the rows' new states
        (``None``: the row is gone, its state is dropped), the answers (and those of the edits
        they cover) and the review queue's new entries.
        """
        ...

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
        ...

    def find_conflict(self, conflict_id: str) -> Conflict | None:
        """The conflict with this id, or ``None``."""
        ...

    def resolve_conflict(
        self,
        conflict_id: str,
        *,
        resolution: str,
        resolved_by: str,
        settle: Callable[[ChangeResult], ChangeResult],
    ) -> None:
        """Mark a conflict resolved, and in the same transaction rewrite with ``settle`` the
        answers that name it (the parked change's, and those of the edits it covered)."""
        ...

    def refresh_conflict(
        self,
        conflict_id: str,
        *,
        kind: str,
        server: dict[str, Any] | None,
        server_version: int | None,
    ) -> None:
        """Record the server's side of an open conflict as the row is now (it changed after
        the conflict was parked); a resolved conflict keeps what it had."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class SQLiteSyncStateStore:
    """The sync state in a SQLite file (``DATA/sync.sqlite``), one connection under a lock.

    Args:
        path: the file; created with its tables when missing.
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(rows)")}
        if "origin" not in columns:  # a file from before rows knew their origin
            self._conn.execute("ALTER TABLE rows ADD COLUMN origin TEXT")

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()

    def load_states(self, service: str, keys: Iterable[RowKey]) -> dict[RowKey, RowState]:
        """The recorded states of the rows among ``keys`` that have one."""
        by_layer: dict[str, list[str]] = {}
        for layer, gid in sorted(set(keys)):
            by_layer.setdefault(layer, []).append(gid)
        states: dict[RowKey, RowState] = {}
        with self._lock:
            for layer, gids in by_layer.items():
                for start in range(0, len(gids), _BATCH):
                    chunk = gids[start : start + _BATCH]
                    marks = ",".join("?" * len(chunk))
                    for gid, version, vector, hlc, origin in self._conn.execute(
                        "SELECT globalid, version, vector, hlc, origin FROM rows "  # noqa: S608
                        f"WHERE service = ? AND layer = ? AND globalid IN ({marks})",
                        [service, layer, *chunk],
                    ):
                        states[layer, gid] = RowState(version, json.loads(vector), hlc, origin)
        return states

    def iter_states(self, service: str, layer: str) -> Iterator[tuple[str, RowState]]:
        """Every recorded state of ``layer``'s rows as ``(global id, state)``, in global id
        order (read in pages: the lock is not held between them)."""
        last = ""
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT globalid, version, vector, hlc, origin FROM rows WHERE service = ? "
                    "AND layer = ? AND globalid > ? ORDER BY globalid LIMIT ?",
                    (service, layer, last, _BATCH),
                ).fetchall()
            for gid, version, vector, hlc, origin in rows:
                yield gid, RowState(version, json.loads(vector), hlc, origin)
            if len(rows) < _BATCH:
                return
            last = rows[-1][0]

    def find_answers(self, change_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Answer]:
        """The recorded answers among ``change_ids``, whichever replica sent them."""
        found: dict[uuid.UUID, Answer] = {}
        keys = [str(i) for i in change_ids]
        with self._lock:
            for start in range(0, len(keys), _BATCH):
                chunk = keys[start : start + _BATCH]
                marks = ",".join("?" * len(chunk))
                for change_id, replica_id, result in self._conn.execute(
                    "SELECT change_id, replica_id, result FROM changes "  # noqa: S608 - marks
                    f"WHERE change_id IN ({marks})",
                    chunk,
                ):
                    found[uuid.UUID(change_id)] = Answer(
                        replica_id, ChangeResult.model_validate_json(result)
                    )
        return found

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
        :meth:`SyncStateStore.record`)."""
        now = time.time()
        set_id = str(change_set_id)
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "DELETE FROM rows WHERE service = ? AND layer = ? AND globalid = ?",
                    [(service, *key) for key, state in states.items() if state is None],
                )
                conn.executemany(
                    "INSERT INTO rows (service, layer, globalid, version, vector, hlc, origin) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (service, layer, globalid) DO UPDATE SET "
                    "version = excluded.version, vector = excluded.vector, hlc = excluded.hlc, "
                    "origin = excluded.origin",
                    [
                        (service, *key, s.version, json.dumps(s.vector), s.hlc, s.origin)
                        for key, s in states.items()
                        if s is not None
                    ],
                )
                conn.executemany(
                    "INSERT INTO changes VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            str(a.result.change_id),
                            a.replica_id,
                            set_id,
                            a.result.model_dump_json(exclude_defaults=True),
                            now,
                        )
                        for a in answers
                    ],
                )
                # the edits a change covers are answered as it is; one answered already (in
                # an earlier change whose answer was lost) keeps its answer
                conn.executemany(
                    "INSERT OR IGNORE INTO changes VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            str(covered),
                            a.replica_id,
                            set_id,
                            a.result.model_copy(update={"change_id": covered}).model_dump_json(
                                exclude_defaults=True
                            ),
                            now,
                        )
                        for a in answers
                        for covered in a.covers
                    ],
                )
                conn.executemany(
                    f"INSERT INTO conflicts ({_CONFLICT_COLUMNS}) "  # noqa: S608 - constant
                    f"VALUES ({', '.join('?' * 20)})",
                    [_conflict_row(c) for c in conflicts],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

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
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (("owner", owner), ("status", status), ("replica_id", replica_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_CONFLICT_COLUMNS} FROM conflicts {where} "  # noqa: S608 - columns
                "ORDER BY created DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [_conflict(row) for row in rows]

    def find_conflict(self, conflict_id: str) -> Conflict | None:
        """The conflict with this id, or ``None``."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_CONFLICT_COLUMNS} FROM conflicts WHERE id = ?",  # noqa: S608
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
        """Record the server's side of an open conflict as the row is now."""
        with self._lock:
            self._conn.execute(
                "UPDATE conflicts SET kind = ?, server = ?, server_version = ? "
                "WHERE id = ? AND status = 'open'",
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
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "UPDATE conflicts SET status = 'resolved', resolution = ?, resolved = ?, "
                    "resolved_by = ? WHERE id = ?",
                    (resolution, time.time(), resolved_by, conflict_id),
                )
                # the parked change's answer, and those of the edits it covered
                answers = conn.execute(
                    "SELECT change_id, result FROM changes WHERE replica_id = "
                    "(SELECT replica_id FROM conflicts WHERE id = ?) "
                    "AND json_extract(result, '$.conflict_id') = ?",
                    (conflict_id, conflict_id),
                ).fetchall()
                conn.executemany(
                    "UPDATE changes SET result = ? WHERE change_id = ?",
                    [
                        (settle(ChangeResult.model_validate_json(result)).model_dump_json(), cid)
                        for cid, result in answers
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise


def _conflict_row(conflict: Conflict) -> tuple[object, ...]:
    return (
        conflict.id, conflict.replica_id, conflict.owner, conflict.map_id, conflict.service,
        conflict.layer, conflict.global_id, conflict.kind, conflict.change_id,
        json.dumps(conflict.fields), json.dumps(conflict.base), json.dumps(conflict.client),
        json.dumps(conflict.server) if conflict.server is not None else None,
        conflict.server_version, json.dumps(conflict.client_vector), conflict.status,
        conflict.resolution, conflict.created, conflict.resolved, conflict.resolved_by,
    )  # fmt: skip


def _conflict(row: Sequence[Any]) -> Conflict:
    return Conflict(
        id=row[0], replica_id=row[1], owner=row[2], map_id=row[3], service=row[4],
        layer=row[5], global_id=row[6], kind=row[7], change_id=row[8],
        fields=json.loads(row[9]), base=json.loads(row[10]), client=json.loads(row[11]),
        server=json.loads(row[12]) if row[12] else None, server_version=row[13],
        client_vector=json.loads(row[14]), status=row[15], resolution=row[16],
        created=row[17], resolved=row[18], resolved_by=row[19],
    )  # fmt: skip
