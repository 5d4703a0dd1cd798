"""Server state in PostgreSQL: a pool of connections, one schema, and versioned migrations.

With ``OFFMAPS_DATABASE_URL`` the state stores keep their tables in one schema of that
database, ``<OFFMAPS_DATABASE_SCHEMA>_state`` (``offmaps_state`` by default). Each store is a
*component* that declares its migrations: a tuple of ``(what it does, SQL)`` steps, step *n*
bringing the component to version *n*. The ``migrations`` table of the schema records every
step applied (component, version, name, when).

A :class:`PostgresDatabase` applies missing steps in one transaction that first takes a
transaction-scoped advisory lock of the schema, so two processes starting (or running
``offmaps db upgrade``) together apply each step once, and a step that fails leaves nothing:
PostgreSQL's DDL is transactional. A store checks its version when it opens
(:meth:`PostgresDatabase.require`): a component with no tables yet is created, as the cache
index always was; one at an older version is upgraded only when asked (``migrate``, the
``OFFMAPS_DATABASE_MIGRATE`` setting), else the store refuses to open and says to run
``offmaps db upgrade``; one at a newer version than this offmaps knows refuses to open too.

Connections come from a psycopg pool (docs/architecture.md, "State in PostgreSQL"), opened on
first use, with a bounded number of connections shared by every thread, each checked before it
is handed out, so a database that restarted costs no failed request once it is back.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from offmaps.errors import FeatureStoreError

__all__ = [
    "AppliedMigration",
    "Migration",
    "PostgresDatabase",
    "STATE_SUFFIX",
]

Migration = tuple[str, str]
"""One step of a component's schema: what it does, and its SQL (one or more statements)."""

STATE_SUFFIX = "_state"
"""What follows ``OFFMAPS_DATABASE_SCHEMA`` in the name of the state stores' schema."""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_COMPONENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MIGRATIONS_LOCK = 0x6F6D6D67  # "ommg": with the schema's hash, the lock of its migrations
_CONNECT_TIMEOUT_S = 10
_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    applied DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (component, version)
)
"""


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A step applied by :meth:`PostgresDatabase.upgrade`."""

    component: str
    version: int
    name: str


_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#\[]*:([^@]*)@")


def _reason(exc: BaseException, url: str) -> str:
    """The first line of a database error (libpq's messages run over several lines), without
    the URL's password: libpq quotes the parts of a URL it cannot parse."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    found = _PASSWORD.match(url)
    if found and found.group(1):
        for secret in {found.group(1), unquote(found.group(1))}:
            line = line.replace(secret, "***")
    return line


class PostgresDatabase:
    """One schema of a PostgreSQL database, with a pool of connections and migrations.

    Nothing connects until a method needs to. Connections are in autocommit mode with the
    schema first on their ``search_path``; :meth:`transaction` makes one transaction.

    Args:
        url: a ``postgresql://`` URL (never shown in messages: it may hold a password).
        schema: the schema of the tables, made by the first :meth:`upgrade`.
        pool_size: the most connections the pool holds at once.
        timeout_s: how long a caller waits for a connection before the store gives up.

    Raises:
        ValueError: a schema name that is not lowercase letters, digits and ``_``.
    """

    def __init__(
        self, url: str, *, schema: str, pool_size: int = 10, timeout_s: float = 10.0
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"a schema name is lowercase letters, digits and _: not {schema!r}")
        self.url = url
        self.schema = schema
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresDatabase(schema={self.schema!r})"  # never the URL

    @property
    def application_name(self) -> str:
        """What the pool's connections call themselves (``pg_stat_activity``)."""
        return f"offmaps {self.schema}"

    def where(self) -> str:
        """Where the state is, for messages."""
        return f"PostgreSQL (schema {self.schema})"

    # --- connections -----------------------------------------------------------------------

    @contextmanager
    def _direct(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection of its own (not the pool's), for migrations and the check at open:
        its errors say why (the pool's only that it waited)."""
        try:
            conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                self.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            raise FeatureStoreError(
                f"cannot connect to {self.where()}: {_reason(exc, self.url)}"
            ) from None
        try:
            with conn:
                yield conn
        except psycopg.Error as exc:
            raise FeatureStoreError(f"{self.where()}: {_reason(exc, self.url)}") from None

    def _configure(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def _opened_pool(self) -> ConnectionPool[psycopg.Connection[tuple[Any, ...]]]:
        with self._lock:
            if self._closed:
                raise FeatureStoreError(f"{self.where()}: the store was closed")
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url,
                    kwargs={
                        "autocommit": True,
                        "connect_timeout": _CONNECT_TIMEOUT_S,
                        "application_name": self.application_name,
                    },
                    min_size=1,
                    max_size=self.pool_size,
                    open=True,
                    configure=self._configure,
                    check=ConnectionPool.check_connection,
                    timeout=self.timeout_s,
                    name=f"offmaps-{self.schema}",
                )
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection of the pool (autocommit, the schema on its path) for the block.

        Raises:
            FeatureStoreError: no connection within ``timeout_s``, or the database failed.
        """
        pool = self._opened_pool()
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise FeatureStoreError(f"{self.where()}: {_reason(exc, self.url)}") from None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection of the pool inside one transaction, committed when the block ends
        and rolled back when it raises.

        Raises:
            FeatureStoreError: as :meth:`connection`.
        """
        with self.connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        """Close the pool's connections; the database cannot be used after."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # --- migrations ------------------------------------------------------------------------

    def _versions(self, conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
        table = conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.migrations",)).fetchone()
        if table is None or table[0] is None:
            return {}
        rows = conn.execute(
            sql.SQL("SELECT component, max(version) FROM {}.migrations GROUP BY component").format(
                sql.Identifier(self.schema)
            )
        ).fetchall()
        return {str(component): int(version) for component, version in rows}

    def versions(self) -> dict[str, int]:
        """The version of every component with tables in the schema (none: ``{}``).

        Raises:
            FeatureStoreError: the database cannot be reached.
        """
        with self._direct() as conn:
            return self._versions(conn)

    def upgrade(self, component: str, migrations: Sequence[Migration]) -> list[AppliedMigration]:
        """Apply the steps of ``component`` the schema lacks, in one transaction under the
        schema's migration lock; returns them (none when it was up to date).

        Raises:
            FeatureStoreError: the database cannot be reached, a step failed (nothing of the
                upgrade stays), or the schema is newer than ``migrations``.
        """
        _check_component(component)
        with self._direct() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_MIGRATIONS_LOCK, self.schema)
            )
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema)))
            conn.execute(_MIGRATIONS_TABLE)
            current = self._versions(conn).get(component, 0)
            self._check_not_newer(component, current, migrations)
            applied = []
            for version, (name, statements) in enumerate(migrations[current:], start=current + 1):
                conn.execute(statements.encode())  # bytes: psycopg runs several statements
                conn.execute(
                    "INSERT INTO migrations (component, version, name, applied) "
                    "VALUES (%s, %s, %s, %s)",
                    (component, version, name, time.time()),
                )
                applied.append(AppliedMigration(component, version, name))
            return applied

    def require(
        self, component: str, migrations: Sequence[Migration], *, migrate: bool = False
    ) -> int:
        """Check at a store's open that ``component`` is at the version of ``migrations``;
        returns that version.

        A component with no tables yet is created; one at an older version is upgraded only
        with ``migrate``.

        Raises:
            FeatureStoreError: the database cannot be reached; the component is older and
                ``migrate`` is false (the message says to run ``offmaps db upgrade``); or it
                is newer than this offmaps.
        """
        _check_component(component)
        current = self.versions().get(component, 0)
        self._check_not_newer(component, current, migrations)
        if current < len(migrations):
            if current and not migrate:
                raise FeatureStoreError(
                    f"the {component} tables in {self.where()} are at version {current} and "
                    f"this offmaps needs version {len(migrations)}: run `offmaps db upgrade` "
                    "(or start with OFFMAPS_DATABASE_MIGRATE=true)"
                )
            self.upgrade(component, migrations)
        return len(migrations)

    def _check_not_newer(
        self, component: str, current: int, migrations: Sequence[Migration]
    ) -> None:
        if current > len(migrations):
            raise FeatureStoreError(
                f"the {component} tables in {self.where()} are at version {current}, newer "
                f"than this offmaps knows ({len(migrations)}): run a newer offmaps"
            )


def _check_component(component: str) -> None:
    if not _COMPONENT.fullmatch(component):
        raise ValueError(f"a component name is lowercase letters, digits and _: not {component!r}")
