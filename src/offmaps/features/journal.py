"""The change journal of a feature store, read the same way from either backend.

Every write transaction takes the next generation and journals each change it makes in
``offmaps_journal`` (``id, generation, layer, globalid, kind, version, changed_at,
attachment_id``), in the same transaction. Each backend writes its edits' entries itself, in
bulk; :class:`JournalBase` holds what is the same SQL in both, over the backend's
:class:`~offmaps.features.dialect.StoreDialect`: reading the journal
(:meth:`~JournalBase.iter_changes`, :meth:`~JournalBase.last_change`) and journaling an
attachment change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Generic
from uuid import UUID

from offmaps.features.dialect import ConnectionT, StoreDialect
from offmaps.features.model import Attachment, ChangeKind, JournalEntry

__all__ = ["ENTRY_COLUMNS", "ROW_KINDS", "JournalBase"]

ENTRY_COLUMNS = "generation, layer, globalid, kind, version, changed_at, attachment_id"
"""The columns of ``offmaps_journal`` that make a :class:`JournalEntry`, in its order."""
ROW_KINDS = (ChangeKind.INSERT.value, ChangeKind.UPDATE.value, ChangeKind.DELETE.value)
"""The kinds of the changes of a row itself (attachment changes aside)."""
_BATCH = 500


class JournalBase(ABC, Generic[ConnectionT]):
    """The journal methods of the feature store protocol, written once over the backend's
    hooks: :meth:`_read`, :meth:`_layer` and its dialect (``_dialect``)."""

    _dialect: StoreDialect

    @abstractmethod
    def _read(self) -> AbstractContextManager[ConnectionT]:
        """The connection, held for one read (under the store's lock)."""

    @abstractmethod
    def _layer(self, name: str) -> object:
        """The layer called ``name``; raises ``LayerNotFoundError``."""

    def iter_changes(
        self, since: int = 0, *, layers: Sequence[str] | None = None
    ) -> Iterator[JournalEntry]:
        """Journal entries with a generation ``> since``, oldest first, read in batches."""
        dialect = self._dialect
        mark = dialect.mark
        wanted, params = "", list[object]()
        if layers is not None:
            # the layer is tested as an expression, which no index serves: given the row index
            # (layer, globalid) for an IN list, SQLite's planner (which has no statistics) reads
            # every entry of the layers and sorts them for each batch (5.8 s for a journal of
            # 52,824 entries read since 0, 0.1-0.2 s for its last 500); by the primary key it
            # reads them in order (0.16 s, 0.01 s)
            condition, params = dialect.any_of("(layer || '')", list(layers))
            wanted = f" AND {condition}"
        statement = (
            f"SELECT id, {ENTRY_COLUMNS} FROM {dialect.journal_table} "
            f"WHERE generation > {mark}{wanted} AND id > {mark} ORDER BY id LIMIT {mark}"
        )
        last = 0
        while True:
            with self._read() as conn:
                rows = conn.execute(statement, [since, *params, last, _BATCH]).fetchall()
            for row in rows:
                yield self._journal_entry(row[1:])
            if len(rows) < _BATCH:
                return
            last = rows[-1][0]

    def last_change(self, layer: str, global_id: UUID) -> JournalEntry | None:
        """The newest insert, update or delete journaled for a row, or ``None`` (see the
        protocol); read through the journal's index by row."""
        dialect = self._dialect
        mark = dialect.mark
        with self._read() as conn:
            self._layer(layer)
            row = None
            if isinstance(global_id, UUID):  # no row has another, and a driver may choke on it
                row = conn.execute(
                    f"SELECT {ENTRY_COLUMNS} FROM {dialect.journal_table} "
                    f"WHERE layer = {mark} AND globalid = {mark} "
                    f"AND kind IN ({', '.join([mark] * len(ROW_KINDS))}) "
                    "ORDER BY id DESC LIMIT 1",
                    [layer, dialect.bind_id(global_id), *ROW_KINDS],
                ).fetchone()
        return None if row is None else self._journal_entry(row)

    def _journal_attachment(
        self,
        conn: ConnectionT,
        generation: int,
        attachment: Attachment,
        version: int,
        kind: ChangeKind,
    ) -> None:
        """Journal an attachment's addition or removal, as a change of its row at ``version``."""
        dialect = self._dialect
        conn.execute(
            f"INSERT INTO {dialect.journal_table} ({ENTRY_COLUMNS}) "
            f"VALUES ({', '.join([dialect.mark] * 7)})",
            [
                generation,
                attachment.layer,
                dialect.bind_id(attachment.global_id),
                kind.value,
                version,
                dialect.bind_time(datetime.now(UTC)),
                dialect.bind_id(attachment.attachment_id),
            ],
        )

    def _journal_entry(self, row: Sequence[Any]) -> JournalEntry:
        """A journal row of :data:`ENTRY_COLUMNS` as an entry."""
        dialect = self._dialect
        return JournalEntry(
            generation=int(row[0]),
            layer=row[1],
            global_id=dialect.read_id(row[2]),
            kind=ChangeKind(row[3]),
            version=int(row[4]),
            changed_at=dialect.read_time(row[5]),
            attachment_id=dialect.read_id(row[6]) if row[6] else None,
        )
