"""The server side of sync over both feature store backends (GeoPackage and PostGIS)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from shapely.geometry import Point

from offmaps.catalog import Catalog
from offmaps.features import FieldType
from offmaps.features.model import Field, GeometryType, Insert, LayerSchema, Update
from offmaps.features.store import FeatureStore
from offmaps.replicas.service import SyncService
from offmaps.schemas import WebMap
from offmaps.schemas.changeset import ChangeSet, ChangeStatus
from offmaps.state.replicas import Replica
from offmaps.state.webmaps import FolderWebMapStore
from offmaps.storage.local import LocalBlobStore
from tests.features.conftest import BACKENDS, open_backend
from tests.serverkit import webmap_document

POINTS = LayerSchema(
    "points", (Field("a", FieldType.TEXT), Field("b", FieldType.INTEGER)), GeometryType.POINT
)
REPLICA = "ab" * 16
HLC = f"1796000000000.000000.{REPLICA}"


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SyncService, Any]]:
    """A sync service over one feature service of each backend, with a map and a replica."""
    store = open_backend(str(request.param), tmp_path)
    name = getattr(store, "schema", "service")
    store.create_layer(POINTS)
    webmaps = FolderWebMapStore(tmp_path / "webmaps")
    document = webmap_document(
        title="t",
        public=True,
        layers=[
            {
                "type": "feature", "id": "points", "title": "Points", "service": name,
                "layer": "points", "editing": {"create": True, "update": True, "delete": True},
            }
        ],
        tables=[],
    )  # fmt: skip
    webmap = webmaps.create(WebMap.model_validate(document), owner="editor")
    catalog = SimpleNamespace(
        feature_service=lambda _: store,
        webmaps=webmaps,
        blobs=LocalBlobStore(tmp_path / "blobs"),
        max_attachment_bytes=1024,
    )
    sync = SyncService.open(tmp_path / "sync.sqlite", cast(Catalog, catalog))
    replica = Replica(
        REPLICA, name, ("points",), 0, "editor", webmap.id, "bidirectional", "per_layer", 0.0
    )
    try:
        yield sync, SimpleNamespace(store=store, replica=replica)
    finally:
        sync.close()
        drop = getattr(store, "drop", None)
        if drop is not None:
            drop()
        store.close()


def upload(sync: SyncService, replica: Replica, *changes: dict[str, Any]) -> list[Any]:
    change_set = ChangeSet.model_validate(
        {"change_set_id": str(uuid.uuid4()), "replica_id": replica.id, "changes": list(changes)}
    )
    return sync.upload(replica, change_set).results


def change(kind: str, gid: uuid.UUID, **fields: Any) -> dict[str, Any]:
    return {"change_id": str(uuid.uuid4()), "layer": "points", "global_id": str(gid),
            "kind": kind, "hlc": HLC, **fields}  # fmt: skip


def test_changes_merge_conflict_replay_and_come_down_on_both_backends(
    service: tuple[SyncService, Any],
) -> None:
    sync, world = service
    store: FeatureStore = world.store
    replica: Replica = world.replica
    (row,) = store.apply_edits([Insert("points", {"a": "x", "b": 1}, Point(1, 2))])
    assert row is not None
    new = uuid.uuid4()
    geometry = "0101000000000000000000f03f0000000000000040"
    server_vector = {"server": 1}
    answers = upload(
        sync, replica,
        change("insert", new, values={"a": "new", "b": 5, "geom": geometry},
               version_vector={REPLICA: 1}),
        change("update", row.global_id, base_version=1, changed=["a"],
               values={"a": "device", "b": 1, "geom": geometry}, base_values={"a": "x"},
               version_vector={**server_vector, REPLICA: 1}),
    )  # fmt: skip
    assert [a.status for a in answers] == [ChangeStatus.APPLIED, ChangeStatus.APPLIED]
    assert store.get_feature("points", row.global_id).properties["a"] == "device"
    assert store.get_feature("points", new).properties["b"] == 5

    store.apply_edits([Update("points", row.global_id, {"a": "office", "b": 2})])
    stale = {**server_vector, REPLICA: 2}  # the device has not seen the office's edit
    merged, parked = upload(
        sync, replica,
        change("update", row.global_id, base_version=2, changed=["geom"],
               values={"geom": "010100000000000000000008400000000000000840"},
               base_values={"geom": geometry}, version_vector=stale),
        change("update", row.global_id, base_version=2, changed=["a"],
               values={"a": "again"}, base_values={"a": "device"},
               version_vector={**stale, REPLICA: 3}),
    )  # fmt: skip
    assert merged.status is ChangeStatus.MERGED
    assert parked.status is ChangeStatus.CONFLICT
    current = store.get_feature("points", row.global_id)
    assert (current.properties["a"], current.geometry) == ("office", Point(3, 3))
    (conflict,) = sync.list_conflicts(owner="editor")
    assert (conflict.fields, conflict.client, conflict.base) == (
        ["a"],
        {"a": "again"},
        {"a": "device"},
    )
    sync.resolve_conflict(conflict.id, owner="editor", side="client", values=None, resolved_by="e")
    assert store.get_feature("points", row.global_id).properties["a"] == "again"

    generation = store.generation()
    delete = ChangeSet.model_validate(
        {"change_set_id": str(uuid.uuid4()), "replica_id": replica.id,
         "changes": [change("delete", new, base_version=1, version_vector={REPLICA: 2})]}
    )  # fmt: skip
    first = sync.upload(replica, delete).results
    again = sync.upload(replica, delete).results  # a retry after a lost answer
    assert first == again
    assert first[0].status is ChangeStatus.APPLIED
    assert store.generation() == generation + 1

    lines = b"".join(sync.download(replica, 0)).splitlines(keepends=True)
    header, *records, end = (json.loads(line) for line in lines)
    assert header["generation"] == store.generation()
    kinds = {r["global_id"]: r["kind"] for r in records}
    assert kinds == {str(row.global_id): "upsert", str(new): "delete"}
    assert end == {
        "type": "end",
        "count": 2,
        "sha256": hashlib.sha256(b"".join(lines[:-1])).hexdigest(),
    }
