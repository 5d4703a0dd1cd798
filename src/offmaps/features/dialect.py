"""How a feature store backend speaks SQL, for the code the backends share.

The change journal and the attachment records (:mod:`offmaps.features.journal`,
:mod:`offmaps.features.attachments`) are written once, as SQL text over a DB-API connection.
What differs between SQLite and PostgreSQL is supplied by each backend as a
:class:`StoreDialect`: the parameter placeholder, the names of its ``offmaps_*`` tables
(quoted and qualified as it needs), how global ids and date-times are bound and read back
(text in a GeoPackage, ``uuid`` and ``timestamptz`` in PostgreSQL), and which driver errors mean
a duplicate key or a value the database cannot store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

__all__ = ["ConnectionT", "SQLConnection", "SQLCursor", "StoreDialect"]


class SQLCursor(Protocol):
    """What the shared code reads from a cursor (``sqlite3`` and ``psycopg`` alike)."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the statement."""
        ...

    def fetchone(self) -> Any:
        """The next row, or ``None``."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...


class SQLConnection(Protocol):
    """A connection that runs one statement with bound parameters (``sqlite3`` and ``psycopg``
    connections both do)."""

    def execute(self, query: str, params: Sequence[Any], /) -> SQLCursor:
        """Run ``query`` with ``params`` bound to its placeholders."""
        ...


ConnectionT = TypeVar("ConnectionT", bound=SQLConnection)
"""The connection type of a backend."""


class StoreDialect(Protocol):
    """One backend's SQL, as the journal and attachment code needs it.

    Attributes:
        mark: the parameter placeholder (``?`` or ``%s``).
        journal_table: ``offmaps_journal``, quoted and qualified for a statement.
        attachments_table: ``offmaps_attachments``, likewise.
        attachment_order: the column that orders attachments created in the same millisecond
            in the order they were added.
        duplicate_errors: driver errors raised for a key that exists already.
        value_errors: driver errors raised for a value the database cannot store.
    """

    @property
    def mark(self) -> str: ...

    @property
    def journal_table(self) -> str: ...

    @property
    def attachments_table(self) -> str: ...

    @property
    def attachment_order(self) -> str: ...

    @property
    def duplicate_errors(self) -> tuple[type[Exception], ...]: ...

    @property
    def value_errors(self) -> tuple[type[Exception], ...]: ...

    def bind_id(self, value: UUID) -> object:
        """A global id or attachment id as a statement parameter."""
        ...

    def read_id(self, value: Any) -> UUID:
        """An id column's value as a UUID."""
        ...

    def bind_time(self, moment: datetime) -> object:
        """An aware date-time as a statement parameter, to the millisecond."""
        ...

    def read_time(self, value: Any) -> datetime:
        """A date-time column's value as an aware UTC datetime."""
        ...

    def any_of(self, column: str, values: Sequence[object]) -> tuple[str, list[object]]:
        """A condition that ``column`` is one of ``values`` (none: false), with its
        parameters."""
        ...
