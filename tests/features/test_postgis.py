"""What only the PostGIS backend promises, beyond the contract suite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from offmaps.features import FieldType
from offmaps.features.model import ChangeKind, Field, Insert, LayerSchema
from offmaps.features.postgis import PostGISStore
from tests.features.conftest import postgres_url


@pytest.fixture
def service() -> Iterator[PostGISStore]:
    store = PostGISStore.create(postgres_url(), schema=f"test_{uuid.uuid4().hex[:12]}")
    try:
        yield store
    finally:
        store.drop()
        store.close()


def journal_row_index(schema: str) -> object:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT to_regclass(format('%%I.offmaps_journal_row', %s::text))", (schema,)
        ).fetchone()
    return None if row is None else row[0]


def test_the_journal_is_indexed_by_row(service: PostGISStore) -> None:
    assert journal_row_index(service.schema) is not None


def test_opening_an_older_store_adds_the_journal_index(service: PostGISStore) -> None:
    service.create_layer(LayerSchema("notes", (Field("text", FieldType.TEXT),)))
    (note,) = service.apply_edits([Insert("notes", {"text": "a"})])
    assert note is not None
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP INDEX {}.offmaps_journal_row").format(sql.Identifier(service.schema))
        )
    assert journal_row_index(service.schema) is None
    with service.reopen() as again:
        entry = again.last_change("notes", note.global_id)
        assert entry is not None
        assert entry.kind is ChangeKind.INSERT
    assert journal_row_index(service.schema) is not None
