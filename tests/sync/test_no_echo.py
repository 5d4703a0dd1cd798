"""A device never downloads back what it uploaded: its own changes, applied as it sent them
and changed by no one since, are left out of its downloads, on both feature store backends;
rows someone else touched (another device, a merge, the server) still come down."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from shapely.geometry import Point

from offmaps.catalog import Catalog
from offmaps.features.model import Delete, Insert, Update
from offmaps.replicas.geojson import GeoJSONChanges
from offmaps.replicas.service import SyncService
from offmaps.schemas import WebMap
from offmaps.schemas.changeset import ChangeSet, ChangeStatus, ServerChange
from offmaps.state.replicas import Replica
from offmaps.state.syncstate import RowState, SQLiteSyncStateStore
from offmaps.state.webmaps import FolderWebMapStore
from offmaps.storage.local import LocalBlobStore
from tests.client.test_sync import Device, server_edit, server_sites, take_offline
from tests.features.conftest import BACKENDS, open_backend
from tests.replicas.test_service import POINTS
from tests.serverkit import LiveServer, webmap_document

__all__ = ["take_offline"]  # the fixture of the SDK's end-to-end tests, used here too

DEVICE, OTHER = "ab" * 16, "cd" * 16
POINT = "0101000000000000000000f03f0000000000000040"  # POINT (1 2), as WKB hex


@pytest.fixture(params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A sync service over one feature service of each backend, and two devices' replicas of
    its points layer."""
    store = open_backend(str(request.param), tmp_path)
    name = getattr(store, "schema", "service")
    store.create_layer(POINTS)
    webmaps = FolderWebMapStore(tmp_path / "webmaps")
    layer = {
        "type": "feature", "id": "points", "title": "Points", "service": name,
        "layer": "points", "editing": {"create": True, "update": True, "delete": True},
    }  # fmt: skip
    document = webmap_document(title="t", public=True, layers=[layer], tables=[])
    webmap = webmaps.create(WebMap.model_validate(document), owner="editor")
    catalog = SimpleNamespace(
        feature_service=lambda _: store,
        webmaps=webmaps,
        blobs=LocalBlobStore(tmp_path / "blobs"),
        max_attachment_bytes=1024,
    )
    sync = SyncService.open(tmp_path / "sync.sqlite", cast(Catalog, catalog))
    device = Replica(
        DEVICE, name, ("points",), 0, "editor", webmap.id, "bidirectional", "per_layer", 0.0
    )
    try:
        yield SimpleNamespace(
            sync=sync, store=store, device=device, other=replace(device, id=OTHER)
        )
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


def change(replica: Replica, kind: str, gid: uuid.UUID, **fields: Any) -> dict[str, Any]:
    return {"change_id": str(uuid.uuid4()), "layer": "points", "global_id": str(gid),
            "kind": kind, "hlc": f"1796000000000.000000.{replica.id}", **fields}  # fmt: skip


def insert(replica: Replica, gid: uuid.UUID, b: int) -> dict[str, Any]:
    values = {"a": "new", "b": b, "geom": POINT}
    return change(replica, "insert", gid, values=values, version_vector={replica.id: 1})


def rows(sync: SyncService, replica: Replica, since: int) -> dict[uuid.UUID, ServerChange]:
    """The rows a download since ``since`` sends, by global id (the header left out)."""
    return {
        record.global_id: record
        for record in sync.iter_download(replica, since)
        if isinstance(record, ServerChange)
    }


def test_a_devices_100_edits_do_not_come_back_in_its_download(world: SimpleNamespace) -> None:
    sync, store, device = world.sync, world.store, world.device
    existing = store.apply_edits(
        [Insert("points", {"a": "x", "b": i}, Point(i, 0)) for i in range(50)]
    )
    since = store.generation()  # the device took the map offline here
    new = [uuid.uuid4() for _ in range(50)]
    updates = [
        change(device, "update", row.global_id, base_version=1, changed=["b"],
               values={"b": 1000 + i}, base_values={"b": i},
               version_vector={"server": 1, device.id: 1})
        for i, row in enumerate(existing) if row is not None
    ]  # fmt: skip
    answers = upload(sync, device, *(insert(device, g, i) for i, g in enumerate(new)), *updates)
    assert {a.status for a in answers} == {ChangeStatus.APPLIED}
    assert len(answers) == 100

    assert rows(sync, device, since) == {}
    size = sync.measure_download(device, since)
    assert (size.generation, size.changes) == (store.generation(), 0)
    # another device gets every one of them
    assert len(rows(sync, world.other, since)) == 100


def test_an_edit_by_another_device_comes_down(world: SimpleNamespace) -> None:
    sync, store, device, other = world.sync, world.store, world.device, world.other
    since = store.generation()
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    upload(sync, device, insert(device, mine, 1))
    upload(sync, other, insert(other, theirs, 2))
    assert set(rows(sync, device, since)) == {theirs}
    assert set(rows(sync, other, since)) == {mine}


def test_a_row_the_device_edited_and_the_server_merged_comes_down(
    world: SimpleNamespace,
) -> None:
    sync, store, device = world.sync, world.store, world.device
    (row,) = store.apply_edits([Insert("points", {"a": "x", "b": 1}, Point(1, 2))])
    assert row is not None
    since = store.generation()
    store.apply_edits([Update("points", row.global_id, {"b": 2})])  # the office, unseen
    (merged,) = upload(
        sync, device,
        change(device, "update", row.global_id, base_version=1, changed=["a"],
               values={"a": "device"}, base_values={"a": "x"},
               version_vector={"server": 1, device.id: 1}),
    )  # fmt: skip
    assert merged.status is ChangeStatus.MERGED
    down = rows(sync, device, since)[row.global_id]
    assert (down.values["a"], down.values["b"]) == ("device", 2)
    assert down.version == merged.version
    assert down.version_vector == merged.version_vector


def test_a_row_the_device_edited_then_another_device_edited_comes_down(
    world: SimpleNamespace,
) -> None:
    sync, store, device, other = world.sync, world.store, world.device, world.other
    since = store.generation()
    gid = uuid.uuid4()
    upload(sync, device, insert(device, gid, 1))
    assert rows(sync, device, since) == {}
    (answer,) = upload(
        sync, other,
        change(other, "update", gid, base_version=1, changed=["b"], values={"b": 7},
               base_values={"b": 1}, version_vector={device.id: 1, other.id: 1}),
    )  # fmt: skip
    assert answer.status is ChangeStatus.APPLIED
    down = rows(sync, device, since)[gid]
    assert (down.version, down.values["b"]) == (2, 7)


def test_a_row_the_server_edited_or_attached_to_after_the_device_comes_down(
    world: SimpleNamespace,
) -> None:
    sync, store, device = world.sync, world.store, world.device
    since = store.generation()
    edited, attached = uuid.uuid4(), uuid.uuid4()
    upload(sync, device, insert(device, edited, 1), insert(device, attached, 2))
    store.apply_edits([Update("points", edited, {"b": 3})])  # the OGC API
    # an attachment leaves the row's version as it is: the journal says the row changed
    store.add_attachment(
        "points", attached, name="p.jpg", content_type="image/jpeg", size=1, sha256="0" * 64
    )
    assert set(rows(sync, device, since)) == {edited, attached}


def test_a_devices_own_deletion_still_comes_down_as_one_short_line(
    world: SimpleNamespace,
) -> None:
    sync, store, device = world.sync, world.store, world.device
    (row,) = store.apply_edits([Insert("points", {"a": "x", "b": 1}, Point(1, 2))])
    assert row is not None
    since = store.generation()
    (answer,) = upload(
        sync, device,
        change(device, "delete", row.global_id, base_version=1, base_values={"a": "x"},
               version_vector={"server": 1, device.id: 1}),
    )  # fmt: skip
    assert answer.status is ChangeStatus.APPLIED
    assert rows(sync, device, since)[row.global_id].kind == "delete"


def test_a_change_sent_as_a_geojson_feature_comes_back_as_the_server_stores_it(
    world: SimpleNamespace,
) -> None:
    # a GeoJSON client holds its rows as Features, and may learn versions from the download
    sync, store, device = world.sync, world.store, world.device
    since = store.generation()
    gid = uuid.uuid4()
    feature = {"type": "Feature", "id": str(gid), "geometry": {"type": "Point",
               "coordinates": [1, 2]}, "properties": {"a": "new", "b": 1}}  # fmt: skip
    document = {
        "change_set_id": str(uuid.uuid4()), "replica_id": device.id,
        "changes": [{**change(device, "insert", gid, version_vector={device.id: 1}),
                     "feature": feature}],
    }  # fmt: skip
    converted = GeoJSONChanges.of_store(store).change_set(document)
    (answer,) = sync.upload(device, converted).results
    assert answer.status is ChangeStatus.APPLIED
    assert rows(sync, device, since)[gid].values["a"] == "new"


def test_a_state_file_from_before_origins_opens_and_its_rows_come_down(tmp_path: Path) -> None:
    path = tmp_path / "sync.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE rows (service TEXT NOT NULL, layer TEXT NOT NULL, globalid TEXT NOT "
            "NULL, version INTEGER NOT NULL, vector TEXT NOT NULL, hlc TEXT, "
            "PRIMARY KEY (service, layer, globalid))"
        )
        conn.execute("INSERT INTO rows VALUES ('s', 'points', 'g', 1, '{}', NULL)")
    conn.close()
    state = SQLiteSyncStateStore(path)
    try:
        assert state.load_states("s", [("points", "g")]) == {("points", "g"): RowState(1, {}, None)}
    finally:
        state.close()


def test_a_100_edit_sync_with_no_other_editor_reports_0_downloaded(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    sites = device.sites()
    edits: list[Any] = [Update("sites", f.global_id, {"status": "seen"}) for f in sites.values()]
    edits += [
        Insert("sites", {"name": f"new {i}", "status": "new", "osm_id": 1000 + i},
               Point(24.9 + i / 10_000, 60.1))
        for i in range(100 - len(edits))
    ]  # fmt: skip
    device.edit(*edits)
    result = device.sync()
    assert not result.has_errors
    (layer,) = (r for r in result.layer_results.values() if r.uploaded)
    assert (layer.uploaded, layer.applied) == (100, 100)
    assert sum(r.downloaded + r.deleted for r in result.layer_results.values()) == 0

    # the next sync brings down what another editor did, and only that
    on_server = server_sites(live_server)
    server_edit(live_server, Update("sites", on_server["site 1"].global_id, {"status": "fixed"}))
    result = device.sync()
    assert sum(r.downloaded for r in result.layer_results.values()) == 1
    assert device.sites()["site 1"].properties["status"] == "fixed"


def test_a_downloads_records_are_what_their_lines_validate_into(world: SimpleNamespace) -> None:
    # the records are built without validation: they must be what validation gives
    sync, store, other = world.sync, world.store, world.other
    (_, gone) = store.apply_edits(
        [Insert("points", {"a": "x", "b": i}, Point(i, 2)) for i in range(2)]
    )
    assert gone is not None
    upload(sync, other, insert(other, uuid.uuid4(), 3))
    store.apply_edits([Delete("points", gone.global_id)])
    records = [r for r in sync.iter_download(world.device, 0) if isinstance(r, ServerChange)]
    assert sorted(r.kind for r in records) == ["delete", "upsert", "upsert"]
    for record in records:
        line = record.model_dump_json()
        assert ServerChange.model_validate_json(line).model_dump_json() == line
        assert ServerChange.model_validate(record.model_dump()) == record
