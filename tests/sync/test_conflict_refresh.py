"""A parked conflict whose row someone edits or deletes afterwards: a resolve against the old
server side is refused ("read it again"), and reading it again shows the row as it is now, so
the reviewer's next resolve, against what they saw, goes through (on both feature stores)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from shapely.geometry import Point

from offmaps.errors import ConflictStateError
from offmaps.features.model import Delete, Insert, Update
from offmaps.features.store import FeatureStore
from offmaps.replicas.service import SyncService
from offmaps.schemas.changeset import ChangeStatus
from offmaps.state.replicas import Replica
from tests.replicas.test_service import REPLICA, change, service, upload

__all__ = ["service"]  # the fixture, used by name

POINT = "0101000000000000000000f03f0000000000000040"


def _parked(sync: SyncService, store: FeatureStore, replica: Replica) -> tuple[uuid.UUID, str]:
    """A row both the device and the office changed field ``a`` of: its id and the conflict's."""
    (row,) = store.apply_edits([Insert("points", {"a": "x", "b": 1}, Point(1, 2))])
    assert row is not None
    store.apply_edits([Update("points", row.global_id, {"a": "office"})])
    (answer,) = upload(
        sync, replica,
        change("update", row.global_id, base_version=1, changed=["a"],
               values={"a": "device", "b": 1, "geom": POINT}, base_values={"a": "x"},
               version_vector={"server": 1, REPLICA: 1}),
    )  # fmt: skip
    assert answer.status is ChangeStatus.CONFLICT
    assert answer.conflict_id is not None
    return row.global_id, str(answer.conflict_id)


def test_a_row_edited_after_its_conflict_is_resolved_against_what_is_read_again(
    service: tuple[SyncService, Any],
) -> None:
    sync, world = service
    store: FeatureStore = world.store
    gid, conflict_id = _parked(sync, store, world.replica)
    parked = sync.get_conflict(conflict_id, owner="editor")
    assert (parked.server or {})["a"] == "office"
    store.apply_edits([Update("points", gid, {"b": 7})])  # after the reviewer read it

    with pytest.raises(ConflictStateError, match="read it again"):
        sync.resolve_conflict(conflict_id, owner="editor", side="client", values=None,
                              resolved_by="reviewer")  # fmt: skip
    again = sync.get_conflict(conflict_id, owner="editor")
    assert (again.server or {})["b"] == 7
    assert again.server_version == store.get_feature("points", gid).version
    assert sync.get_conflict(conflict_id, owner="editor") == again  # recorded once
    settled = sync.resolve_conflict(
        conflict_id, owner="editor", side="client", values=None, resolved_by="reviewer"
    )
    assert settled.status == "resolved"
    row = store.get_feature("points", gid)
    assert (row.properties["a"], row.properties["b"]) == ("device", 7)


def test_a_row_deleted_after_its_conflict_can_be_brought_back(
    service: tuple[SyncService, Any],
) -> None:
    sync, world = service
    store: FeatureStore = world.store
    gid, conflict_id = _parked(sync, store, world.replica)
    store.apply_edits([Delete("points", gid)])
    again = sync.get_conflict(conflict_id, owner="editor")
    assert (again.kind, again.server, again.server_version) == ("update_delete", None, None)
    sync.resolve_conflict(
        conflict_id, owner="editor", side="client", values=None, resolved_by="reviewer"
    )
    assert store.get_feature("points", gid).properties["a"] == "device"
    resolved = sync.get_conflict(conflict_id, owner="editor")
    assert resolved.status == "resolved"
    store.apply_edits([Update("points", gid, {"b": 9})])
    assert sync.get_conflict(conflict_id, owner="editor") == resolved  # kept as settled
