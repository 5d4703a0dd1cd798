"""The server side of sync over both feature store backends (GeoPackage and PostGIS)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from shapely.geometry import Point

from offmaps.catalog import Catalog
from offmaps.features import FieldType
from offmaps.features.model import Delete, Field, GeometryType, Insert, LayerSchema, Update
from offmaps.features.store import FeatureStore
from offmaps.replicas.service import SyncService
from offmaps.schemas import WebMap
from offmaps.schemas.changeset import ChangeSet, ChangeStatus, ConflictPolicy
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


def set_policy(sync: SyncService, replica: Replica, policy: ConflictPolicy) -> None:
    webmaps = sync.catalog.webmaps
    assert replica.map_id is not None
    webmap = webmaps.get(replica.map_id)
    offline = webmap.offline.model_copy(update={"conflict_policy": policy})
    webmaps.replace(replica.map_id, webmap.model_copy(update={"offline": offline}))


@pytest.mark.parametrize("settled_by", ["policy", "review"])
def test_a_row_brought_back_goes_on_from_the_version_and_vector_it_was_deleted_at(
    service: tuple[SyncService, Any], settled_by: str
) -> None:
    """An update against the server's delete brings the row back (the ``client_wins`` policy,
    or a person taking the device's side): the row's version and vector go on from those it
    was deleted at, so another device's later edit of the row, as it knew it, is merged, not
    refused as forged (its base version and vector are newer than a row begun again)."""
    sync, world = service
    store: FeatureStore = world.store
    first: Replica = world.replica
    second = replace(first, id="cd" * 16)
    if settled_by == "policy":
        set_policy(sync, first, ConflictPolicy.CLIENT_WINS)
    (row,) = store.apply_edits([Insert("points", {"a": "x", "b": 1}, Point(1, 2))])
    assert row is not None
    gid, hlc = row.global_id, f"1796000000000.000000.{second.id}"
    (answer,) = upload(
        sync, second,
        change("update", gid, base_version=1, changed=["a"], values={"a": "second"},
               base_values={"a": "x"}, version_vector={"server": 1, second.id: 1}, hlc=hlc),
    )  # fmt: skip
    assert (answer.status, answer.version) == (ChangeStatus.APPLIED, 2)
    store.apply_edits([Update("points", gid, {"b": 2})])
    seen = {"server": 2, second.id: 1}  # the first device downloads the row at version 3
    store.apply_edits([Delete("points", gid)])

    point = "0101000000000000000000f03f0000000000000040"
    (back,) = upload(
        sync, second,
        change("update", gid, base_version=2, changed=["a"],
               values={"a": "again", "b": 1, "geom": point}, base_values={"a": "second"},
               version_vector={"server": 1, second.id: 2}, hlc=hlc),
    )  # fmt: skip
    if settled_by == "review":
        assert back.status is ChangeStatus.CONFLICT
        (conflict,) = sync.list_conflicts(owner="editor")
        sync.resolve_conflict(
            conflict.id, owner="editor", side="client", values=None, resolved_by="e"
        )
        back = sync.change_result(second, back.change_id)
        assert back is not None
    assert back.status is ChangeStatus.MERGED
    assert back.version == store.get_feature("points", gid).version == 4
    assert back.version_vector is not None
    assert back.version_vector["server"] >= 2

    (merged,) = upload(
        sync, first,
        change("update", gid, base_version=3, changed=["geom"],
               values={"geom": "010100000000000000000008400000000000000840"},
               base_values={"geom": point}, version_vector={**seen, first.id: 1}),
    )  # fmt: skip
    assert merged.status is ChangeStatus.MERGED, merged.reason
    current = store.get_feature("points", gid)
    assert (current.version, current.properties["a"]) == (5, "again")
    assert current.geometry == Point(3, 3)


def test_a_row_deleted_by_a_device_and_brought_back_keeps_the_edits_others_saw(
    service: tuple[SyncService, Any],
) -> None:
    """A device's delete keeps the row's clock: when another device's update brings the row
    back, a third device's edit of the row as it was before the delete is merged, not refused
    as claiming edits the server never had."""
    sync, world = service
    store: FeatureStore = world.store
    first: Replica = world.replica
    second, third = replace(first, id="cd" * 16), replace(first, id="ef" * 16)
    set_policy(sync, first, ConflictPolicy.CLIENT_WINS)
    (row,) = store.apply_edits([Insert("points", {"a": "x", "b": 1}, Point(1, 2))])
    assert row is not None
    gid, point = row.global_id, "0101000000000000000000f03f0000000000000040"
    (edited,) = upload(
        sync, first,
        change("update", gid, base_version=1, changed=["a"], values={"a": "first"},
               base_values={"a": "x"}, version_vector={"server": 1, first.id: 1}),
    )  # fmt: skip
    assert edited.version_vector == {"server": 1, first.id: 1}  # the third device downloads it
    (deleted,) = upload(
        sync, first,
        change("delete", gid, base_version=2, base_values={"a": "first"},
               version_vector={"server": 1, first.id: 2}),
    )  # fmt: skip
    assert deleted.status is ChangeStatus.APPLIED
    (back,) = upload(
        sync, second,
        change("update", gid, base_version=1, changed=["b"],
               values={"a": "x", "b": 7, "geom": point}, base_values={"b": 1},
               version_vector={"server": 1, second.id: 1},
               hlc=f"1796000000000.000000.{second.id}"),
    )  # fmt: skip
    assert (back.status, back.version) == (ChangeStatus.MERGED, 3)
    (merged,) = upload(
        sync, third,
        change("update", gid, base_version=2, changed=["geom"],
               values={"geom": "010100000000000000000008400000000000000840"},
               base_values={"geom": point},
               version_vector={"server": 1, first.id: 1, third.id: 1},
               hlc=f"1796000000000.000000.{third.id}"),
    )  # fmt: skip
    assert merged.status is ChangeStatus.MERGED, merged.reason
    current = store.get_feature("points", gid)
    assert (current.properties["b"], current.geometry) == (7, Point(3, 3))


def test_a_download_comes_in_chunks_of_whole_lines_not_a_line_at_a_time(
    service: tuple[SyncService, Any],
) -> None:
    # a streaming response reads each item in its own thread-pool call, on the event loop's
    # time: one item per row would slow every other request (tiles) while devices sync
    sync, env = service
    env.store.apply_edits(
        [Insert("points", {"a": "x" * 200, "b": i}, Point(i / 1000, 0)) for i in range(2_000)]
    )
    chunks = list(sync.download(env.replica, 0))
    lines = b"".join(chunks).splitlines(keepends=True)
    assert len(lines) == 2_002  # header, rows, end
    assert len(chunks) < len(lines) / 100
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert json.loads(lines[-1])["count"] == 2_000
