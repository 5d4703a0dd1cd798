"""``attachments_of``: the attachment records of many rows in one query, on every backend, as
``list_attachments`` gives them row by row."""

from __future__ import annotations

import uuid

import pytest

from offmaps.errors import LayerNotFoundError
from offmaps.features.store import FeatureStore
from tests.features.test_store_contract import SHA, hydrants, insert

__all__ = ["hydrants"]  # the fixture, shared with the store's contract tests


def test_the_attachments_of_many_rows_are_those_of_each_row(hydrants: FeatureStore) -> None:
    rows = [insert(hydrants) for _ in range(4)]
    for n, row in enumerate(rows[:3]):
        for k in range(n + 1):
            hydrants.add_attachment(
                "hydrants", row.global_id, name=f"{n}-{k}.jpg", content_type="image/jpeg",
                size=3, sha256=SHA,
            )  # fmt: skip
    (gone, *_) = hydrants.list_attachments("hydrants", rows[2].global_id)
    hydrants.delete_attachment("hydrants", gone.attachment_id)
    missing = uuid.uuid4()
    asked = [row.global_id for row in rows] + [missing]
    found = hydrants.attachments_of("hydrants", asked)
    assert found == {
        row.global_id: hydrants.list_attachments("hydrants", row.global_id)
        for row in rows
        if hydrants.list_attachments("hydrants", row.global_id)
    }
    assert [len(found[row.global_id]) for row in rows[:3]] == [1, 2, 2]
    assert rows[3].global_id not in found
    assert missing not in found
    assert hydrants.attachments_of("hydrants", []) == {}


def test_more_rows_than_one_query_takes(hydrants: FeatureStore) -> None:
    row = insert(hydrants)
    hydrants.add_attachment(
        "hydrants", row.global_id, name="a.jpg", content_type="image/jpeg", size=3, sha256=SHA
    )
    asked = [uuid.uuid4() for _ in range(1200)] + [row.global_id]
    assert list(hydrants.attachments_of("hydrants", asked)) == [row.global_id]


def test_an_unknown_layer_is_refused(hydrants: FeatureStore) -> None:
    with pytest.raises(LayerNotFoundError):
        hydrants.attachments_of("nope", [uuid.uuid4()])
