"""Offline editing and sync end to end: packages edited on the device, the server, and back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from shapely.geometry import Point

from offmaps.client import AsyncOfflineMapSyncTask, Portal
from offmaps.client.offline import OfflineMapTask
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.errors import ConnectionFailedError, SyncFailedError
from offmaps.features import FieldType
from offmaps.features.geopackage import GeoPackageStore, _register_functions
from offmaps.features.model import Delete, Feature, FeatureQuery, Field, Insert, Update
from offmaps.offline.editing import open_feature_table
from offmaps.offline.package import MobileMapPackage, verify_package
from offmaps.offline.replica import LocalReplica
from offmaps.schemas import EditingCapabilities, SyncDirection
from offmaps.schemas.changeset import (
    ChangeStatus,
    ConflictPolicy,
    DownloadEnd,
    DownloadHeader,
    ServerChange,
)
from offmaps.state.replicas import LayerScope, RelatedKey
from tests.cli.test_users import run
from tests.client.test_offline import AREA, offline_map
from tests.serverkit import PASSWORD, LiveServer, assert_problem

Policy = str


@dataclass
class Device:
    """A package taken offline by the editor, and its sync task."""

    folder: Path
    task: OfflineMapSyncTask

    @property
    def package(self) -> MobileMapPackage:
        return self.task.package

    def store(self) -> GeoPackageStore:
        (replica,) = self.package.manifest.replicas
        return GeoPackageStore.open(self.folder / replica.file)

    def sites(self) -> dict[str, Feature]:
        with self.store() as store:
            return {
                str(f.properties["name"]): f
                for f in store.iter_features("sites", FeatureQuery(limit=1000))
            }

    def edit(self, *edits: Any) -> None:
        with self.store() as store:
            store.apply_edits(list(edits))

    def sync(self, **options: Any) -> Any:
        parameters = SyncOfflineMapParameters(**options)
        return self.task.sync_offline_map(parameters).wait()

    def outbox(self) -> dict[ChangeStatus, int]:
        (replica,) = self.package.manifest.replicas
        with LocalReplica.open(
            self.folder / replica.file,
            replica_id=replica.replica_id,
            generation=replica.generation,
        ) as local:
            return {s: n for s, n in local.status_counts().items() if n}


@pytest.fixture
def take_offline(
    live_server: LiveServer,
    tmp_path: Path,
    task_for: Callable[[LiveServer, str], OfflineMapTask],
) -> Callable[..., Device]:
    """Takes the offline test map to a new folder; ``policy`` sets the map's conflict policy."""
    made: dict[str, str] = {}

    def take(policy: Policy = "manual", name: str | None = None) -> Device:
        if policy not in made:
            made[policy] = offline_map(live_server)
            catalog = live_server.server.catalog
            webmap = catalog.webmaps.get(made[policy])
            offline = webmap.offline.model_copy(update={"conflict_policy": ConflictPolicy(policy)})
            catalog.webmaps.replace(made[policy], webmap.model_copy(update={"offline": offline}))
        task = task_for(live_server, made[policy])
        folder = tmp_path / (name or uuid.uuid4().hex[:8])
        parameters = task.create_default_generate_offline_map_parameters(AREA)
        task.generate_offline_map(parameters, folder).wait(poll_seconds=0.05)
        return Device(folder, OfflineMapSyncTask(folder, task.item.portal))

    return take


def server_sites(server: LiveServer) -> dict[str, Feature]:
    store = server.server.catalog.feature_service("city")
    return {
        str(f.properties["name"]): f for f in store.iter_features("sites", FeatureQuery(limit=1000))
    }


def server_edit(server: LiveServer, *edits: Any) -> None:
    server.server.catalog.feature_service("city").apply_edits(list(edits))


def test_edits_made_offline_come_home_and_the_servers_come_down(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    sites = device.sites()
    device.edit(
        Insert("sites", {"name": "new site", "status": "new", "osm_id": 100}, Point(24.91, 60.1)),
        Update("sites", sites["site 1"].global_id, {"status": "broken"}),
        Delete("sites", sites["site 2"].global_id),
    )
    server = server_sites(live_server)
    server_edit(live_server, Update("sites", server["site 3"].global_id, {"status": "fixed"}))

    defaults = device.task.create_default_offline_map_sync_parameters()
    assert defaults.sync_direction is SyncDirection.BIDIRECTIONAL  # the replica's own
    updates = device.task.check_for_updates()
    assert (updates.upload_changes, updates.upload_available) == (3, True)
    assert updates.download_available

    result = device.sync(batch_size=1)  # three sets, each read while the last is merged
    assert not result.has_errors
    sites_result = result.layer_results["sites"]
    assert (sites_result.uploaded, sites_result.applied) == (3, 3)

    server = server_sites(live_server)
    assert server["new site"].properties["status"] == "new"
    assert server["site 1"].properties["status"] == "broken"
    assert "site 2" not in server
    local = device.sites()
    assert local["site 3"].properties["status"] == "fixed"
    assert {name: f.properties for name, f in local.items()} == {
        name: f.properties for name, f in server.items() if name in local
    }
    assert device.outbox() == {ChangeStatus.APPLIED: 3}
    after = device.task.check_for_updates()
    assert not after.upload_available


def test_disjoint_edits_merge_and_the_same_field_goes_to_the_review_queue(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    sites = device.sites()
    device.edit(
        Update("sites", sites["site 1"].global_id, {"status": "device"}),
        Update("sites", sites["site 4"].global_id, {"status": "device"}),
    )
    server_edit(
        live_server,
        Update("sites", sites["site 1"].global_id, {"name": "site 1 renamed"}),
        Update("sites", sites["site 4"].global_id, {"status": "office"}),
    )
    result = device.sync()
    layer = result.layer_results["sites"]
    assert (layer.merged, layer.conflicts) == (1, 1)
    server = server_sites(live_server)
    assert server["site 1 renamed"].properties["status"] == "device"
    assert server["site 4"].properties["status"] == "office"  # parked: the server's stays
    local = device.sites()
    assert local["site 1 renamed"].properties["status"] == "device"
    assert local["site 4"].properties["status"] == "office"

    client = live_server.server.client
    headers = live_server.server.token("editor")
    (conflict,) = client.get("/api/conflicts", headers=headers).json()["conflicts"]
    assert conflict["fields"] == ["status"]
    assert (conflict["base"], conflict["client"], conflict["server"]["status"]) == (
        {"status": "ok"},
        {"status": "device"},
        "office",
    )
    resolved = client.post(
        f"/api/conflicts/{conflict['id']}/resolve", json={"side": "client"}, headers=headers
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"
    assert server_sites(live_server)["site 4"].properties["status"] == "device"
    device.sync()
    assert device.sites()["site 4"].properties["status"] == "device"
    assert device.outbox() == {ChangeStatus.MERGED: 2}  # the settled conflict, seen on the device


def test_a_rows_edits_go_as_one_change_and_every_edit_is_answered(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    """Two edits of a row go as one change covering the first; both edits are answered, as a
    conflict, and both are settled when it is resolved."""
    device = take_offline()
    gid = device.sites()["site 4"].global_id
    device.edit(Update("sites", gid, {"status": "device"}))
    device.edit(Update("sites", gid, {"osm_id": 44}))
    server_edit(live_server, Update("sites", gid, {"status": "office"}))

    layer = device.sync().layer_results["sites"]
    assert (layer.uploaded, layer.conflicts) == (2, 2)
    assert device.outbox() == {ChangeStatus.CONFLICT: 2}
    client = live_server.server.client
    headers = live_server.server.token("editor")
    (conflict,) = client.get("/api/conflicts", headers=headers).json()["conflicts"]
    assert (conflict["base"], conflict["client"]) == (
        {"status": "ok", "osm_id": 4},
        {"status": "device", "osm_id": 44},
    )
    (replica,) = device.package.manifest.replicas
    with LocalReplica.open(
        device.folder / replica.file, replica_id=replica.replica_id, generation=0
    ) as local:
        ids = [entry.change_id for entry in local.outbox()]
    for change_id in ids:  # each edit's answer is on record under its own id
        answer = client.get(
            f"/api/replicas/{replica.replica_id}/changes/{change_id}", headers=headers
        ).json()
        assert (answer["status"], answer["conflict_id"]) == ("conflict", conflict["id"])

    resolved = client.post(
        f"/api/conflicts/{conflict['id']}/resolve", json={"side": "client"}, headers=headers
    )
    assert resolved.status_code == 200, resolved.text
    device.sync()
    assert device.outbox() == {ChangeStatus.MERGED: 2}
    assert server_sites(live_server)["site 4"].properties["osm_id"] == 44


@pytest.mark.parametrize(
    ("policy", "winner"),
    [("server_wins", "office"), ("client_wins", "device"), ("last_writer_wins", "office")],
)
def test_a_conflict_policy_settles_the_same_field_changed_on_both_sides(
    live_server: LiveServer, take_offline: Callable[..., Device], policy: str, winner: str
) -> None:
    device = take_offline(policy)
    gid = device.sites()["site 5"].global_id
    device.edit(Update("sites", gid, {"status": "device", "name": "site 5 seen"}))
    server_edit(live_server, Update("sites", gid, {"status": "office"}))  # later: LWW → office
    result = device.sync()
    layer = result.layer_results["sites"]
    assert (layer.merged, layer.conflicts) == (1, 0)
    server = server_sites(live_server)["site 5 seen"]
    assert server.properties["status"] == winner
    assert device.sites()["site 5 seen"].properties["status"] == winner
    headers = live_server.server.token("editor")
    client = live_server.server.client
    (record,) = client.get("/api/conflicts?status=all", headers=headers).json()["conflicts"]
    assert (record["status"], record["resolution"]) == ("resolved", policy)
    assert record["client"]["status"] == "device"  # the losing edit is kept on record


def test_delete_against_update_is_a_conflict_and_nothing_is_lost(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    sites = device.sites()
    device.edit(
        Delete("sites", sites["site 6"].global_id),
        Update("sites", sites["site 7"].global_id, {"status": "device"}),
    )
    server_edit(
        live_server,
        Update("sites", sites["site 6"].global_id, {"status": "office"}),
        Delete("sites", sites["site 7"].global_id),
    )
    result = device.sync()
    assert result.layer_results["sites"].conflicts == 2
    server = server_sites(live_server)
    assert server["site 6"].properties["status"] == "office"
    assert "site 7" not in server
    local = device.sites()
    assert local["site 6"].properties["status"] == "office"
    assert "site 7" not in local
    headers = live_server.server.token("editor")
    client = live_server.server.client
    found = client.get("/api/conflicts", headers=headers).json()["conflicts"]
    kinds = {c["kind"]: c for c in found}
    assert set(kinds) == {"delete_update", "update_delete"}
    assert kinds["update_delete"]["client"]["status"] == "device"
    response = client.post(
        f"/api/conflicts/{kinds['update_delete']['id']}/resolve",
        json={"side": "client"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert server_sites(live_server)["site 7"].properties["status"] == "device"
    again = client.post(
        f"/api/conflicts/{kinds['update_delete']['id']}/resolve",
        json={"side": "server"},
        headers=headers,
    )
    assert_problem(again, 409)
    other = kinds["delete_update"]["id"]
    for body, status in [
        ({"side": "merge", "values": {"name": "x"}}, 422),  # a delete has no fields to merge
        ({"side": "theirs"}, 422),
        ({"side": "client", "extra": 1}, 422),
        ("not json", 422),
    ]:
        assert_problem(
            client.post(f"/api/conflicts/{other}/resolve", json=body, headers=headers), status
        )
    assert_problem(
        client.post("/api/conflicts/nope/resolve", json={"side": "client"}, headers=headers), 404
    )
    assert_problem(  # maps:read only: not even the review queue of one's own replicas
        client.get(f"/api/conflicts/{other}", headers=live_server.server.token("viewer")), 403
    )
    device.sync()
    assert device.sites()["site 7"].properties["status"] == "device"


def test_a_field_added_on_the_server_syncs_both_ways(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    gid = device.sites()["site 8"].global_id
    device.edit(Update("sites", gid, {"status": "device"}))
    store = live_server.server.catalog.feature_service("city")
    store.add_field("sites", Field("priority", FieldType.INTEGER))
    server_edit(live_server, Update("sites", gid, {"priority": 3}))
    result = device.sync()
    assert "sites.priority" in result.fields_added
    local = device.sites()["site 8"]
    assert (local.properties["status"], local.properties["priority"]) == ("device", 3)
    device.edit(Update("sites", gid, {"priority": 1}))
    device.sync()
    server = server_sites(live_server)["site 8"]
    assert (server.properties["status"], server.properties["priority"]) == ("device", 1)


def device_inspections(device: Device) -> set[tuple[int, str]]:
    with device.store() as store:
        return {
            (int(str(f.properties["site_osm_id"])), str(f.properties["result"]))
            for f in store.iter_features("inspections", FeatureQuery())
        }


def test_a_table_of_related_rows_only_keeps_to_the_rows_related_to_the_replicas(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()  # sites 0-9 are in the area; inspections are taken related only
    assert device_inspections(device) == {(1, "ok"), (2, "ok")}  # not 20: its site is outside
    store = live_server.server.catalog.feature_service("city")
    on_server = {
        f.properties["site_osm_id"]: f.global_id
        for f in store.iter_features("inspections", FeatureQuery())
    }
    server_edit(
        live_server,
        Insert("inspections", {"site_osm_id": 3, "result": "new"}, None),  # site 3: inside
        Insert("inspections", {"site_osm_id": 15, "result": "far"}, None),  # site 15: outside
        Update("inspections", on_server[20], {"result": "redone"}),  # never on the device
        Update("inspections", on_server[2], {"site_osm_id": 22}),  # now a site outside
        Update("inspections", on_server[1], {"result": "checked"}),
    )
    assert not device.sync().has_errors
    assert device_inspections(device) == {(1, "checked"), (3, "new")}

    # site 15 moves into the area: its inspections come with their next change (docs/sync.md)
    site_15 = server_sites(live_server)["site 15"].global_id
    server_edit(
        live_server,
        Update("sites", site_15, geometry=Point(24.95, 60.1), set_geometry=True),
        Update("inspections", on_server[20], {"site_osm_id": 15}),
    )
    assert not device.sync().has_errors
    assert "site 15" in device.sites()
    assert device_inspections(device) == {(1, "checked"), (3, "new"), (15, "redone")}


def test_replicas_registered_before_related_scopes_keep_every_changed_row() -> None:
    scope = LayerScope.from_json({"where": None, "area": None, "include_null_geometry": False})
    assert scope == LayerScope()
    stored = {"related": [{"origin": "sites", "origin_key": "osm_id", "destination_key": "x"}]}
    assert LayerScope.from_json(stored).related == (RelatedKey("sites", "osm_id", "x"),)


def attach(device: Device, gid: uuid.UUID, data: bytes, name: str = "photo.jpg") -> str:
    """Put an attachment on a device row through the SDK (blob in the package, then record)."""
    with open_feature_table(device.package, "sites") as sites:
        return sites.add_attachment(gid, name, "image/jpeg", data).sha256


def test_attachments_upload_resumably_and_come_down_by_hash(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device, other = take_offline(name="a"), take_offline(name="b")
    gid = device.sites()["site 9"].global_id
    photos = [os.urandom(200_000), os.urandom(10)]
    hashes = [attach(device, gid, data, f"p{i}.jpg") for i, data in enumerate(photos)]
    # a first, interrupted upload of the big one left half of it on the server
    (replica,) = device.package.manifest.replicas
    headers = live_server.server.token("editor")
    client = live_server.server.client
    url = f"/api/replicas/{replica.replica_id}/uploads/{hashes[0]}"
    half = client.put(
        f"{url}?offset=0&total={len(photos[0])}", content=photos[0][:100_000], headers=headers
    )
    assert half.json() == {"sha256": hashes[0], "received": 100_000, "complete": False}

    result = device.sync()
    assert result.attachments == "2 of 2 attachments"
    blobs = live_server.server.catalog.blobs
    assert [blobs.get(h) for h in hashes] == photos
    store = live_server.server.catalog.feature_service("city")
    assert sorted(a.name for a in store.list_attachments("sites", gid)) == ["p0.jpg", "p1.jpg"]

    other_result = other.sync()
    assert other_result.attachments_downloaded == 2
    for sha256, data in zip(hashes, photos, strict=True):
        assert (
            other.folder / "attachments" / sha256[:2] / sha256[2:4] / sha256
        ).read_bytes() == data
    with other.store() as replica_store:
        assert len(replica_store.list_attachments("sites", gid)) == 2


def test_edits_the_map_does_not_allow_are_rejected_with_a_reason(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    catalog = live_server.server.catalog
    map_id = device.package.manifest.source_map_id
    assert map_id is not None
    webmap = catalog.webmaps.get(map_id)
    layers = [
        layer.model_copy(
            update={"editing": EditingCapabilities(update=True, editable_fields=("status",))}
        )
        if layer.id == "sites"
        else layer
        for layer in webmap.operational_layers
    ]
    catalog.webmaps.replace(map_id, webmap.model_copy(update={"operational_layers": tuple(layers)}))
    sites = device.sites()
    device.edit(
        Update("sites", sites["site 0"].global_id, {"name": "renamed"}),
        Update("sites", sites["site 1"].global_id, {"status": "allowed"}),
        Delete("sites", sites["site 3"].global_id),
    )
    result = device.sync()
    layer = result.layer_results["sites"]
    assert (layer.applied, layer.rejected) == (1, 2)
    assert result.has_errors
    assert any("'name'" in r and "not editable" in r for r in layer.rejections)
    assert any("deleting" in r for r in layer.rejections)
    server = server_sites(live_server)
    assert "renamed" not in server
    assert "site 3" in server
    local = device.sites()  # the device takes the server's rows back; the outbox keeps the edits
    assert "site 0" in local
    assert "site 3" in local
    assert device.outbox() == {ChangeStatus.APPLIED: 1, ChangeStatus.REJECTED: 2}


class FaultyTransport(httpx.BaseTransport):
    """Forwards requests, until request number ``fail_at``: from there on the connection
    drops, before the request reaches the server (``lose="request"``) or after the server
    answered it (``lose="response"``)."""

    def __init__(self, fail_at: int | None, lose: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.fail_at = fail_at
        self.lose = lose
        self.count = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        failing = self.fail_at is not None and self.count >= self.fail_at
        if failing and self.lose == "request":
            raise httpx.ConnectError("dropped before sending", request=request)
        response = self.inner.handle_request(request)
        if failing:
            response.read()
            response.close()
            raise httpx.ReadError("dropped before the answer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def sync_through(device: Device, transport: FaultyTransport) -> Any:
    portal = device.task.portal
    faulty = Portal(portal.url, credentials=portal.credentials, transport=transport)
    try:
        task = OfflineMapSyncTask(device.package, faulty)
        return task.sync_offline_map(SyncOfflineMapParameters()).wait()
    finally:
        faulty.close()


def offline_edits(device: Device, find: str) -> None:
    """A device's edits: an insert, an update, a delete and a photo."""
    sites = device.sites()
    device.edit(
        Insert("sites", {"name": find, "status": "new", "osm_id": 7}, Point(24.92, 60.1)),
        Update("sites", sites["site 1"].global_id, {"status": "device"}),
        Delete("sites", sites["site 2"].global_id),
    )
    attach(device, sites["site 4"].global_id, f"picture of {find}".encode())


def fresh_device(live_server: LiveServer, take_offline: Callable[..., Device], name: str) -> Device:
    """A device with the edits of :func:`offline_edits`, the office editing site 5 meanwhile;
    the rows they touch are put back first."""
    server = server_sites(live_server)
    restore: list[Any] = [Update("sites", server["site 1"].global_id, {"status": "ok"})]
    if "site 2" not in server:
        restore.append(Insert("sites", {"name": "site 2", "osm_id": 2}, Point(24.92, 60.1)))
    server_edit(live_server, *restore)
    device = take_offline(name=name)
    offline_edits(device, f"find {name}")
    server_edit(live_server, Update("sites", device.sites()["site 5"].global_id, {"status": name}))
    return device


def check_converged(live_server: LiveServer, device: Device, name: str) -> None:
    """Every edit of :func:`fresh_device` arrived once, and the device has the office's."""
    server = server_sites(live_server)
    assert sum(1 for found in server if found == f"find {name}") == 1
    assert server["site 1"].properties["status"] == "device"
    assert "site 2" not in server
    local = device.sites()
    assert local["site 5"].properties["status"] == name
    assert {n: f.properties for n, f in local.items()} == {
        n: f.properties for n, f in server.items() if n in local
    }
    counts = device.outbox()
    assert counts == {ChangeStatus.APPLIED: 4}, (name, counts)
    store = live_server.server.catalog.feature_service("city")
    attachments = store.list_attachments("sites", local["site 4"].global_id)
    picture = hashlib.sha256(f"picture of find {name}".encode()).hexdigest()
    pictures = [a for a in attachments if a.sha256 == picture]
    assert len(pictures) == 1, name


def test_a_sync_cut_at_any_step_converges_on_retry_with_no_duplicate_and_no_loss(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    probe = fresh_device(live_server, take_offline, "probe")
    counting = FaultyTransport(None, "request")
    sync_through(probe, counting)
    steps = counting.count
    assert steps >= 4  # upload state, bytes, change set, download
    for lose in ("request", "response"):
        for step in range(1, steps + 1):
            name = f"{lose}-{step}"
            device = fresh_device(live_server, take_offline, name)
            with pytest.raises(SyncFailedError):
                sync_through(device, FaultyTransport(step, lose))
            device.sync()  # the next sync, as after a restart
            check_converged(live_server, device, name)


class LoseChangeSetAnswers(FaultyTransport):
    """Drops the connection after the server answered a change set."""

    def __init__(self) -> None:
        super().__init__(None, "response")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/changes"):
            response.read()
            response.close()
            raise httpx.ReadError("dropped before the answer", request=request)
        return response


def test_edits_made_after_an_upload_whose_answer_was_lost_are_not_lost(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    """The server applied a set, the answer was lost, and the rows were edited again before
    the next sync: the sent edits go again one by one (answered from the server's record),
    the new ones after them, and nothing is rejected or lost."""
    device = take_offline(name="lost")
    gid = device.sites()["site 1"].global_id
    device.edit(
        Insert("sites", {"name": "found", "status": "new", "osm_id": 70}, Point(24.92, 60.1)),
        Insert("sites", {"name": "passing", "osm_id": 71}, Point(24.93, 60.1)),
        Update("sites", gid, {"status": "first"}),
    )
    device.edit(Update("sites", gid, {"osm_id": 11}))
    with pytest.raises(SyncFailedError):
        sync_through(device, LoseChangeSetAnswers())
    assert "found" in server_sites(live_server)  # applied, but the device does not know
    local = device.sites()
    device.edit(
        Update("sites", local["found"].global_id, {"status": "second"}),
        Delete("sites", local["passing"].global_id),
        Update("sites", gid, {"status": "third"}),
    )

    result = device.sync()

    layer = result.layer_results["sites"]
    assert (layer.uploaded, layer.applied, layer.rejected) == (7, 7, 0)
    server = server_sites(live_server)
    assert server["found"].properties["status"] == "second"
    assert "passing" not in server
    assert (server["site 1"].properties["status"], server["site 1"].properties["osm_id"]) == (
        "third",
        11,
    )
    assert device.outbox() == {ChangeStatus.APPLIED: 7}


KILLED_SYNC = """
import os, sys
from datetime import datetime, timedelta, timezone
import httpx
from offmaps.client import OfflineMapSyncTask, Portal, SyncOfflineMapParameters
from offmaps.client.portal import Credentials

url, token, folder, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

class Killing(httpx.HTTPTransport):
    count = 0

    def handle_request(self, request):
        response = super().handle_request(request)
        Killing.count += 1
        if Killing.count == kill_at:
            response.read()
            os._exit(9)  # killed with the server's answer unread
        return response

expires = datetime.now(timezone.utc) + timedelta(hours=1)
portal = Portal(url, credentials=Credentials(url, token, expires, ""), transport=Killing())
OfflineMapSyncTask(folder, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
"""


def test_a_sync_process_killed_at_any_step_converges_on_the_next_sync(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    for step in range(1, 6):  # sign-in is not counted: answer state, bytes, set, download...
        name = f"killed-{step}"
        device = fresh_device(live_server, take_offline, name)
        credentials = device.task.portal.credentials
        assert credentials is not None
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_SYNC, live_server.url, credentials.access_token,
             str(device.folder), str(step)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert killed.returncode == 9, killed.stderr
        device.sync()
        check_converged(live_server, device, name)
        assert not list(device.folder.rglob("*.part"))
        assert not list(device.folder.glob(".offmaps-sync-*"))
        report = verify_package(device.folder)
        assert report.ok, report.problems


HLC = "1796000000000.000000.server"


def change(kind: str, gid: uuid.UUID, **fields: Any) -> dict[str, Any]:
    """A change as JSON, with a fresh id."""
    hlc = fields.pop("hlc", HLC)
    return {"change_id": str(uuid.uuid4()), "layer": "sites", "global_id": str(gid),
            "kind": kind, "hlc": hlc, **fields}  # fmt: skip


def post(live_server: LiveServer, replica: str, changes: list[dict[str, Any]], **extra: Any) -> Any:
    body = {"change_set_id": str(uuid.uuid4()), "replica_id": replica, "changes": changes}
    return live_server.server.client.post(
        f"/api/replicas/{replica}/changes",
        json={**body, **extra},
        headers=live_server.server.token("editor"),
    )


def test_bad_change_sets_are_refused_or_rejected_change_by_change(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    (entry,) = device.package.manifest.replicas
    replica = entry.replica_id
    site = device.sites()["site 1"]
    node = {"server": site.version}
    answers = post(
        live_server,
        replica,
        [
            change("update", uuid.uuid4(), base_version=1, changed=["status"],
                   values={"status": "x"}, base_values={"status": "ok"}),
            change("update", site.global_id, base_version=site.version + 5, changed=["status"],
                   values={"status": "x"}, base_values={"status": "ok"}, version_vector=node),
            change("update", site.global_id, base_version=site.version, changed=["status"],
                   values={"status": "x"}, base_values={"status": "ok"},
                   version_vector={**node, "f" * 32: 9}),
            change("update", site.global_id, base_version=site.version, changed=["osm_id"],
                   values={"osm_id": "not a number"}, base_values={"osm_id": 1},
                   version_vector=node),
            change("insert", uuid.uuid4(), values={"name": "x", "nope": 1}),
            change("update", site.global_id, base_version=site.version, changed=["geom"],
                   values={"geom": "zz"}, base_values={"geom": None}, version_vector=node),
            {**change("insert", uuid.uuid4(), values={"name": "t"}), "layer": "secret"},
            change("attachment_add", site.global_id, attachment={
                "attachment_id": str(uuid.uuid4()), "name": "big.bin",
                "content_type": "application/octet-stream", "size": 10**12, "sha256": "a" * 64}),
            change("attachment_add", site.global_id, attachment={
                "attachment_id": str(uuid.uuid4()), "name": "missing.bin",
                "content_type": "application/octet-stream", "size": 3, "sha256": "b" * 64}),
        ],
    )  # fmt: skip
    assert answers.status_code == 200, answers.text
    reasons = [(r["status"], r["reason"]) for r in answers.json()["results"]]
    assert all(status == "rejected" for status, _ in reasons), reasons
    texts = [reason for _, reason in reasons]
    assert "has no row" in texts[0]
    assert "forged" in texts[1]
    assert "never had" in texts[2]
    assert "osm_id" in texts[3]
    assert "nope" in texts[4]
    assert "WKB" in texts[5]
    assert "not part of this replica" in texts[6]
    assert "over the limit" in texts[7]
    assert "not uploaded" in texts[8]
    assert server_sites(live_server)["site 1"].properties["status"] == "ok"

    twice = change("insert", uuid.uuid4())
    refused = [
        post(live_server, replica, [{"change_id": "not a uuid"}]),
        post(live_server, replica, [change("update", site.global_id)] * 2),
        # covered ids: malformed, too many, or used twice in the set
        post(live_server, replica, [change("insert", uuid.uuid4(), covers=["nope"])]),
        post(live_server, replica, [change("insert", uuid.uuid4(), covers=[
            str(uuid.uuid4()) for _ in range(1_001)])]),
        post(live_server, replica, [{**twice, "covers": [twice["change_id"]]}]),
        post(live_server, replica, [twice, change("update", site.global_id, covers=[
            twice["change_id"]])]),
        post(live_server, replica, [change("insert", uuid.uuid4(), hlc="yesterday")]),
        post(live_server, replica, [], replica_id="0" * 32),
        live_server.server.client.post(
            f"/api/replicas/{replica}/changes",
            content=b"{" * 100_000,
            headers=live_server.server.token("editor"),
        ),
    ]  # fmt: skip
    for response in refused:
        assert_problem(response, 422)
    too_many = post(live_server, replica, [change("insert", uuid.uuid4())] * 20_001)
    assert_problem(too_many, 413, 422)


def test_a_replayed_change_set_gets_the_same_answers_and_applies_nothing_twice(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    (entry,) = device.package.manifest.replicas
    gid = uuid.uuid4()
    changes = [change("insert", gid, values={"name": "once", "osm_id": 1, "geom": None})]
    body = {"change_set_id": str(uuid.uuid4()), "replica_id": entry.replica_id, "changes": changes}
    client, headers = live_server.server.client, live_server.server.token("editor")
    url = f"/api/replicas/{entry.replica_id}/changes"
    first = client.post(url, json=body, headers=headers)
    again = client.post(url, json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["results"] == again.json()["results"]
    assert first.json()["results"][0]["status"] == "applied"
    assert sum(1 for name in server_sites(live_server) if name == "once") == 1
    status = client.get(f"{url}/{changes[0]['change_id']}", headers=headers)
    assert status.json()["status"] == "applied"
    stolen = {**body, "replica_id": "0" * 32}
    other = take_offline(name="other")
    (other_entry,) = other.package.manifest.replicas
    reused = client.post(
        f"/api/replicas/{other_entry.replica_id}/changes",
        json={**stolen, "replica_id": other_entry.replica_id},
        headers=headers,
    )
    assert_problem(reused, 422)


def test_replicas_are_private_to_their_owner_and_gone_once_unregistered(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    (entry,) = device.package.manifest.replicas
    client = live_server.server.client
    url = f"/api/replicas/{entry.replica_id}"
    assert_problem(client.get(url), 401)
    assert_problem(client.get(url, headers=live_server.server.token("viewer")), 403)
    services = client.app.state.services  # type: ignore[attr-defined]
    services.users.add_user("reader", PASSWORD, scopes=("maps:read", "offline:sync"))
    assert_problem(client.get(url, headers=live_server.server.token("reader")), 404)
    assert client.get(url, headers=live_server.server.token("admin")).status_code == 200
    assert_problem(
        client.get("/api/replicas/..%2F..", headers=live_server.server.token("editor")), 404
    )
    updates = device.task.check_for_updates()
    assert not updates.download_available
    device.task.unregister_geodatabases()
    assert_problem(client.get(url, headers=live_server.server.token("editor")), 404)
    assert_problem(post(live_server, entry.replica_id, []), 404)
    with pytest.raises(SyncFailedError, match=r"city: ReplicaNotFoundError: .*never registered"):
        device.sync()


def test_attachment_uploads_are_checked_against_their_hash_size_and_offset(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    (entry,) = device.package.manifest.replicas
    client, headers = live_server.server.client, live_server.server.token("editor")
    data = b"field photo"
    sha256 = hashlib.sha256(data).hexdigest()
    url = f"/api/replicas/{entry.replica_id}/uploads/{sha256}"
    assert_problem(client.put(f"{url}?offset=5&total=11", content=data, headers=headers), 409)
    assert_problem(client.put(f"{url}?offset=0&total=11", content=b"x" * 11, headers=headers), 422)
    assert client.get(url, headers=headers).json()["received"] == 0  # the bad bytes are gone
    assert_problem(client.put(f"{url}?offset=0&total=5", content=data, headers=headers), 413)
    assert_problem(client.put(f"{url}?offset=0&total={10**12}", content=b"", headers=headers), 413)
    assert_problem(client.put(f"{url[:-1]}?offset=0&total=1", content=b"", headers=headers), 422)
    done = client.put(f"{url}?offset=0&total=11", content=data, headers=headers)
    assert done.json()["complete"]
    assert live_server.server.catalog.blobs.get(sha256) == data


def test_directions_limit_what_a_sync_does_and_layers_sync_one_by_one(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    sites = device.sites()
    device.edit(Update("sites", sites["site 1"].global_id, {"status": "device"}))
    with device.store() as store:
        (row,) = store.apply_edits([Insert("inspections", {"site_osm_id": 1, "result": "new"})])
    server_edit(live_server, Update("sites", sites["site 3"].global_id, {"status": "office"}))

    device.sync(sync_direction=SyncDirection.DOWNLOAD)
    assert device.sites()["site 3"].properties["status"] == "office"
    assert server_sites(live_server)["site 1"].properties["status"] == "ok"
    assert device.sites()["site 1"].properties["status"] == "device"  # pending edits stay

    result = device.sync(sync_direction=SyncDirection.UPLOAD, layers=["inspections"])
    assert set(result.layer_results) == {"inspections"}
    server = live_server.server.catalog.feature_service("city")
    assert row is not None
    assert server.get_feature("inspections", row.global_id).properties["result"] == "new"
    assert server_sites(live_server)["site 1"].properties["status"] == "ok"
    device.sync(sync_direction=SyncDirection.UPLOAD)
    assert server_sites(live_server)["site 1"].properties["status"] == "device"


def test_rollback_on_failure_applies_none_of_a_set_with_a_rejected_change(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    sites = device.sites()
    device.edit(
        Update("sites", sites["site 1"].global_id, {"status": "refused"}),
        Update("sites", sites["site 2"].global_id, {"name": "site 2 renamed"}),
    )
    catalog = live_server.server.catalog
    map_id = device.package.manifest.source_map_id
    assert map_id is not None
    webmap = catalog.webmaps.get(map_id)
    layers = tuple(
        layer.model_copy(
            update={"editing": EditingCapabilities(update=True, editable_fields=("name",))}
        )
        if layer.id == "sites"
        else layer
        for layer in webmap.operational_layers
    )
    catalog.webmaps.replace(map_id, webmap.model_copy(update={"operational_layers": layers}))
    result = device.sync(rollback_on_failure=True, sync_direction=SyncDirection.UPLOAD)
    assert result.layer_results["sites"].rejected == 1
    assert "site 2" in server_sites(live_server)  # rolled back with the refused change
    assert device.sites()["site 1"].properties["status"] == "ok"  # the server's row, taken
    assert device.outbox() == {ChangeStatus.REJECTED: 1, ChangeStatus.PENDING: 1}
    device.sync(rollback_on_failure=True)  # the refused one is settled: the rest goes
    assert "site 2 renamed" in server_sites(live_server)
    assert device.outbox() == {ChangeStatus.REJECTED: 1, ChangeStatus.APPLIED: 1}


def test_the_cli_syncs_shows_the_outbox_and_resolves_conflicts(
    live_server: LiveServer, take_offline: Callable[..., Device], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "config"))
    code, _, err = run("login", live_server.url, "-u", "editor", "--password-stdin",
                       stdin=PASSWORD + "\n")  # fmt: skip
    assert code == 0, err
    device = take_offline()
    sites = device.sites()
    device.edit(Update("sites", sites["site 1"].global_id, {"status": "device"}))
    server_edit(live_server, Update("sites", sites["site 1"].global_id, {"status": "office"}))

    code, out, err = run("sync", "status", str(device.folder), "--check", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["replicas"][0]["changes"]["pending"] == 1
    assert status["updates"]["upload_changes"] == 1
    code, out, err = run("sync", str(device.folder), "--json")
    assert code == 0, err
    assert json.loads(out)["layers"]["sites"]["conflicts"] == 1
    code, out, err = run("sync", "status", str(device.folder))
    assert code == 0, err
    assert "1 conflict" in out

    code, out, err = run("conflicts", "list", "--server", live_server.url, "--json")
    assert code == 0, err
    (conflict,) = json.loads(out)
    code, out, _ = run("conflicts", "show", conflict["id"], "--server", live_server.url)
    assert "status: base 'ok', device 'device', server 'office'" in out
    code, out, err = run("conflicts", "resolve", conflict["id"], "--server", live_server.url,
                         "--side", "merge", "--set", 'status="both"')  # fmt: skip
    assert code == 0, err
    assert server_sites(live_server)["site 1"].properties["status"] == "both"

    code, _, err = run("conflicts", "resolve", conflict["id"], "--server", live_server.url,
                       "--side", "server", "--set", "status=1")  # fmt: skip
    assert code == 1
    assert err.startswith("SyncFailedError: --set goes with --side merge")
    code, _, err = run("sync", str(tmp_path))
    assert (code, err.count("\n")) == (1, 1)
    assert err.startswith("PackageError")
    code, _, err = run("sync", str(device.folder), "--layer", "nope")
    assert (code, err) == (1, "SyncFailedError: no replica of the package has layer 'nope'\n")
    code, _, err = run("conflicts", "show", "0" * 32, "--server", live_server.url)
    assert (code, err.count("\n")) == (1, 1)
    assert err.startswith("ConflictNotFoundError")


def test_the_cli_counts_edits_rejected_on_the_device_and_shows_the_newest_not_applied(
    live_server: LiveServer, take_offline: Callable[..., Device], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "config"))
    code, _, err = run("login", live_server.url, "-u", "editor", "--password-stdin",
                       stdin=PASSWORD + "\n")  # fmt: skip
    assert code == 0, err
    device = take_offline()
    sites = device.sites()
    for n in range(21):  # more applied edits than sync status lists
        device.edit(Update("sites", sites["site 1"].global_id, {"status": f"visit {n}"}))
    (replica,) = device.package.manifest.replicas
    with sqlite3.connect(device.folder / replica.file) as conn:  # another tool's bad geometry
        _register_functions(conn)
        conn.execute(
            "UPDATE sites SET geom = X'0102' WHERE globalid = ?", (str(sites["site 2"].global_id),)
        )
    conn.close()

    code, out, err = run("sync", str(device.folder))
    assert code == 0, err
    assert "sites: 21 uploaded (21 applied, 0 merged, 0 conflicts, 1 rejected)" in out
    assert "unreadable: the geometry is not a GeoPackage blob" in out
    code, out, err = run("sync", "status", str(device.folder), "--json")
    assert code == 0, err
    (status,) = json.loads(out)["replicas"]
    assert (status["changes"]["applied"], status["changes"]["rejected"]) == (21, 1)
    (shown,) = status["not_applied"]
    assert (shown["status"], shown["global_id"]) == ("rejected", str(sites["site 2"].global_id))


def test_the_sync_api_is_in_the_openapi_document(live_server: LiveServer) -> None:
    paths = live_server.server.client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/replicas/{replica_id}",
        "/api/replicas/{replica_id}/changes",
        "/api/replicas/{replica_id}/updates",
        "/api/replicas/{replica_id}/uploads/{sha256}",
        "/api/conflicts",
        "/api/conflicts/{conflict_id}/resolve",
    ):
        assert path in paths, path


def test_a_download_is_used_only_whole_and_matching_its_end_record(tmp_path: Path) -> None:
    from offmaps.client.sync import _check_download, _read_changes  # noqa: PLC0415

    header = DownloadHeader(replica_id="ab" * 16, since=0, generation=3, layers=[])
    rows = [
        ServerChange(layer="sites", global_id=uuid.uuid4(), kind="delete").model_dump_json()
        for _ in range(3)
    ]
    lines = [header.model_dump_json().encode() + b"\n", *(r.encode() + b"\n" for r in rows)]
    end = DownloadEnd(count=3, sha256=hashlib.sha256(b"".join(lines)).hexdigest())
    good = tmp_path / "good"
    good.write_bytes(b"".join(lines) + end.model_dump_json().encode() + b"\n")
    checked = _check_download(good)
    assert checked.counts == {("sites", "delete"): 3}
    assert [r.model_dump_json() for r in _read_changes(good, 3)] == rows

    whole = good.read_bytes()
    bad = {
        "cut": whole[: len(whole) // 2],
        "no end": b"".join(lines),
        "a row lost": b"".join(lines[:-1]) + end.model_dump_json().encode() + b"\n",
        "a row changed": whole.replace(b"delete", b"upsert", 1),
        "after the end": whole + lines[1],
        "not json": b"\x00\xff" * 100,
    }
    for name, data in bad.items():
        path = tmp_path / name.replace(" ", "-")
        path.write_bytes(data)
        with pytest.raises(ConnectionFailedError):
            _check_download(path)


def test_the_async_sdk_syncs_the_same(
    live_server: LiveServer, take_offline: Callable[..., Device]
) -> None:
    device = take_offline()
    gid = device.sites()["site 6"].global_id
    device.edit(Update("sites", gid, {"status": "async"}))
    task = AsyncOfflineMapSyncTask(device.folder, device.task.portal)

    async def sync() -> tuple[int, int]:
        before = await task.check_for_updates()
        parameters = task.create_default_offline_map_sync_parameters()
        result = await task.sync_offline_map(parameters)
        return before.upload_changes, result.layer_results["sites"].applied

    assert asyncio.run(sync()) == (1, 1)
    assert server_sites(live_server)["site 6"].properties["status"] == "async"
