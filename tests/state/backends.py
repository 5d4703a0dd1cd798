"""What the state stores' contract suites share: stores of one backend opened on one place
(each opening another process's view), closed afterwards, and a PostgreSQL schema of the test's
own, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
from psycopg import sql

from offmaps.state.postgres import PostgresDatabase
from tests.features.conftest import postgres_url

S = TypeVar("S")


def drop_schema(schema: str) -> None:
    """Remove a test's schema and everything in it."""
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def opening(
    backend: str, embedded: Callable[[], S], postgres: Callable[[PostgresDatabase], S]
) -> Iterator[Callable[[], S]]:
    """Yield an opener of stores of ``backend`` (``postgres``, or the embedded one), all on
    one place; close what it opened and drop the schema afterwards (a fixture's body)."""
    opened: list[S] = []
    schema = f"test_{uuid.uuid4().hex[:12]}"

    def opener() -> S:
        store = (
            postgres(PostgresDatabase(postgres_url(), schema=schema))
            if backend == "postgres"
            else embedded()
        )
        opened.append(store)
        return store

    try:
        yield opener
    finally:
        for store in opened:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        if backend == "postgres":
            drop_schema(schema)
