"""A preplanned package in ``sync_with_feature_services`` mode: the device registers replicas of
its own at the package's generations, adopts them, and then syncs both ways as an on-demand map
does; its first download brings only what changed since the package was built."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import Point

from offmaps.client import Portal
from offmaps.client.offline import OfflineMapTask, PortalItem
from offmaps.client.scheduled import apply_scheduled_updates
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.errors import PackageError, ReplicaNotFoundError
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import FeatureQuery, Insert, Update
from offmaps.offline.adopt import adopt_replicas
from offmaps.offline.editing import open_feature_table
from offmaps.offline.package import PackageReplica, read_manifest, verify_package
from offmaps.services import Services
from tests.client.test_sync import server_edit, server_sites
from tests.serverkit import PASSWORD, LiveServer, assert_problem

BBOX = [24.895, 60.05, 24.995, 60.15]


def _services(server: LiveServer) -> Services:
    services: Services = server.server.client.app.state.services  # type: ignore[attr-defined]
    return services


def _download(server: LiveServer, area: dict[str, Any], folder: Path) -> None:
    client = server.server.client
    crew = server.server.token("editor", "maps:read offline:sync features:edit")
    for entry in area["package"]["files"]:
        response = client.get(entry["href"], headers=crew)
        assert response.status_code == 200, response.text
        assert hashlib.sha256(response.content).hexdigest() == entry["sha256"]
        target = folder / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)


def _area(server: LiveServer, **body: Any) -> dict[str, Any]:
    client = server.server.client
    href = f"/api/maps/{server.server.public_map}/areas"
    created = client.post(
        href, json={"title": "North", "bbox": BBOX, **body}, headers=server.server.token("editor")
    ).json()
    jobs = _services(server).jobs
    deadline = time.monotonic() + 60
    while not jobs.get(created["job_id"]).status.done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    found: dict[str, Any] = client.get(f"{href}/{created['id']}").json()
    assert found["status"] == "complete", found
    return found


def _names(folder: Path) -> set[str]:
    (replica,) = read_manifest(folder).replicas
    with GeoPackageStore.open(folder / replica.file) as store:
        return {str(f.properties["name"]) for f in store.iter_features("sites", FeatureQuery())}


def test_a_device_of_a_sync_area_syncs_its_package_both_ways(
    live_server: LiveServer, tmp_path: Path
) -> None:
    area = _area(live_server)
    folder = tmp_path / "device"
    _download(live_server, area, folder)
    before = set(_names_of_package(folder))
    sites = server_sites(live_server)
    server_edit(
        live_server,
        Update("sites", sites["site 3"].global_id, {"name": "site 3 renamed"}),
        Insert("sites", {"name": "added later", "status": "ok", "osm_id": 77}, Point(24.92, 60.1)),
    )

    client = live_server.server.client
    crew = live_server.server.token("editor", "maps:read offline:sync features:edit")
    href = f"/api/maps/{live_server.server.public_map}/areas/{area['id']}/replicas"
    answer = client.post(href, json={"package": area["latest"]}, headers=crew)
    assert answer.status_code == 201, answer.text
    replicas = [PackageReplica.model_validate(r) for r in answer.json()["replicas"]]
    assert [r.service for r in replicas] == ["city"]
    registered = _services(live_server).replicas.get(replicas[0].replica_id)
    assert registered.owner == "editor"
    assert registered.generation == replicas[0].generation
    manifest = adopt_replicas(folder, replicas)
    assert manifest.update_mode == "sync_with_feature_services"
    assert adopt_replicas(folder, replicas).replicas == replicas  # again: the same

    portal = Portal(live_server.url)
    portal.login("editor", PASSWORD)
    try:
        task = OfflineMapSyncTask(folder, portal)
        updates = task.check_for_updates()
        assert updates.download_changes == 2  # only what changed since the package was built
        with GeoPackageStore.open(folder / replicas[0].file) as store:
            store.apply_edits(
                [Insert("sites", {"name": "from the field", "osm_id": 500}, Point(24.93, 60.1))]
            )
        result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
        assert not result.has_errors, result.as_dict()
    finally:
        portal.close()
    names = _names(folder)
    assert {"site 3 renamed", "added later", "from the field"} <= names
    assert "site 3" in before
    assert "site 3" not in names
    assert "from the field" in server_sites(live_server)


def _names_of_package(folder: Path) -> set[str]:
    manifest = read_manifest(folder)
    (layer,) = [layer for layer in manifest.layers if layer.id == "sites"]
    assert layer.file is not None
    with GeoPackageStore.open(folder / layer.file) as store:
        return {str(f.properties["name"]) for f in store.iter_features("sites", FeatureQuery())}


def test_replicas_only_for_a_sync_area_and_a_signed_in_crew(
    live_server: LiveServer, tmp_path: Path
) -> None:
    client = live_server.server.client
    area = _area(live_server, update_mode="download_scheduled_updates")
    href = f"/api/maps/{live_server.server.public_map}/areas/{area['id']}/replicas"
    crew = live_server.server.token("editor", "maps:read offline:sync")
    problem = assert_problem(client.post(href, json={"package": 1}, headers=crew), 400)
    assert "download_scheduled_updates mode" in problem["detail"]
    assert_problem(client.post(href, json={"package": 1}), 401)
    viewer = live_server.server.token("viewer")
    assert_problem(client.post(href, json={"package": 1}, headers=viewer), 403)
    assert_problem(client.post(href, json={"package": 0}, headers=crew), 422)
    assert_problem(client.post(href, json={"package": "x"}, headers=crew), 422)

    sync_area = _area(live_server, title="South")
    href = f"/api/maps/{live_server.server.public_map}/areas/{sync_area['id']}/replicas"
    assert_problem(client.post(href, json={"package": 9}, headers=crew), 404)

    # a file holding edits of another replica is not taken over
    folder = tmp_path / "device"
    _download(live_server, sync_area, folder)
    replicas = [
        PackageReplica.model_validate(r)
        for r in client.post(href, json={"package": 1}, headers=crew).json()["replicas"]
    ]
    adopt_replicas(folder, replicas)
    with GeoPackageStore.open(folder / replicas[0].file) as store:
        store.apply_edits([Insert("sites", {"name": "x", "osm_id": 1}, Point(24.93, 60.1))])
    other = [r.model_copy(update={"replica_id": "e" * 32}) for r in replicas]
    with pytest.raises(PackageError, match="local edits"):
        adopt_replicas(folder, other)


def test_the_sdk_download_of_a_sync_area_gives_a_package_that_syncs(
    live_server: LiveServer, tmp_path: Path
) -> None:
    _area(live_server)  # sync_with_feature_services, the default
    portal = Portal(live_server.url)
    portal.login("editor", PASSWORD)
    try:
        task = OfflineMapTask(PortalItem(portal, live_server.server.public_map))
        (area,) = task.get_preplanned_map_areas()
        parameters = task.create_default_download_preplanned_offline_map_parameters(area)
        folder = tmp_path / "device"
        result = task.download_preplanned_offline_map(parameters, folder).wait()
        (replica,) = result.mobile_map_package.manifest.replicas
        assert _services(live_server).replicas.get(replica.replica_id).owner == "editor"
        sites = server_sites(live_server)
        server_edit(live_server, Update("sites", sites["site 4"].global_id, {"name": "four"}))
        synced = OfflineMapSyncTask(folder, portal).sync_offline_map(SyncOfflineMapParameters())
        assert not synced.wait().has_errors
    finally:
        portal.close()
    assert "four" in _names(folder)


def _download_with_sdk(portal: Portal, server: LiveServer, folder: Path) -> Path:
    """The map's one area downloaded by the device SDK into ``folder``."""
    task = OfflineMapTask(PortalItem(portal, server.server.public_map))
    (area,) = task.get_preplanned_map_areas()
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    task.download_preplanned_offline_map(parameters, folder).wait()
    return folder


@dataclass
class UploadCrew:
    """An area in upload-new-features mode, a signed-in crew and its package, downloaded by
    the device SDK."""

    area: dict[str, Any]
    portal: Portal
    folder: Path


@pytest.fixture
def upload_crew(live_server: LiveServer, tmp_path: Path) -> Iterator[UploadCrew]:
    area = _area(live_server, update_mode="download_scheduled_updates_and_upload_new_features")
    portal = Portal(live_server.url)
    portal.login("editor", PASSWORD)
    try:
        yield UploadCrew(area, portal, _download_with_sdk(portal, live_server, tmp_path / "device"))
    finally:
        portal.close()


def test_a_device_uploads_new_features_and_gets_the_rest_as_updates(
    live_server: LiveServer, upload_crew: UploadCrew
) -> None:
    portal, folder = upload_crew.portal, upload_crew.folder
    (replica,) = read_manifest(folder).replicas
    assert replica.sync_direction == "upload"
    assert _services(live_server).replicas.get(replica.replica_id).inserts_only
    sites = server_sites(live_server)
    with GeoPackageStore.open(folder / replica.file) as store:
        local = {str(f.properties["name"]): f for f in store.iter_features("sites")}
        store.apply_edits(
            [
                Insert("sites", {"name": "found in the field", "osm_id": 600}, Point(24.93, 60.1)),
                Update("sites", local["site 5"].global_id, {"name": "edited in the field"}),
            ]
        )
    synced = OfflineMapSyncTask(folder, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    assert synced.has_errors  # the edit of a package feature is refused, with the reason
    (layer,) = synced.layer_results.values()
    assert layer.uploaded == 2
    assert layer.applied == 1
    assert layer.rejected == 1
    assert "read-only" in layer.rejections[0]
    on_server = server_sites(live_server)
    assert "found in the field" in on_server
    assert on_server["site 5"].properties["name"] == sites["site 5"].properties["name"]


def test_a_feature_added_in_the_field_takes_attachments_in_later_syncs(
    live_server: LiveServer, upload_crew: UploadCrew
) -> None:
    portal, folder = upload_crew.portal, upload_crew.folder
    sync = OfflineMapSyncTask(folder, portal)
    with open_feature_table(sync.package, "sites") as sites:
        (added,) = sites.store.apply_edits(
            [Insert("sites", {"name": "found in the field", "osm_id": 601}, Point(24.93, 60.1))]
        )
        assert added is not None
    assert not sync.sync_offline_map(SyncOfflineMapParameters()).wait().has_errors
    package_site = server_sites(live_server)["site 5"].global_id
    with open_feature_table(sync.package, "sites") as sites:
        sites.add_attachment(added.global_id, "later.jpg", "image/jpeg", b"taken later")
        sites.add_attachment(package_site, "other.jpg", "image/jpeg", b"not ours")
    synced = sync.sync_offline_map(SyncOfflineMapParameters()).wait()
    (layer,) = synced.layer_results.values()
    assert (layer.applied, layer.rejected) == (1, 1)  # ours went up, the package's refused
    assert "read-only" in layer.rejections[0]
    (replica,) = read_manifest(folder).replicas
    store = _services(live_server).catalog.feature_service(replica.service)
    assert [a.name for a in store.list_attachments("sites", added.global_id)] == ["later.jpg"]
    assert store.list_attachments("sites", package_site) == ()


def test_a_package_replaced_whole_releases_its_replicas(
    live_server: LiveServer, upload_crew: UploadCrew
) -> None:
    area, portal, folder = upload_crew.area, upload_crew.portal, upload_crew.folder
    (old,) = read_manifest(folder).replicas
    _move_area(live_server, area)
    synced = OfflineMapSyncTask(folder, portal).sync_offline_map(SyncOfflineMapParameters())
    applied = synced.wait().scheduled_updates
    assert applied is not None
    assert applied.full_package_replaced
    assert applied.released == [old.replica_id]
    (new,) = read_manifest(folder).replicas
    assert new.replica_id != old.replica_id
    replicas = _services(live_server).replicas
    assert replicas.get(new.replica_id).inserts_only
    with pytest.raises(ReplicaNotFoundError):
        replicas.get(old.replica_id)


def _files(folder: Path) -> dict[str, bytes]:
    """The package's files; not SQLite's files beside a database that was read."""
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def _move_area(server: LiveServer, area: dict[str, Any]) -> None:
    """The author moves the area: a new epoch, which no update reaches."""
    moved = server.server.client.patch(
        f"/api/maps/{server.server.public_map}/areas/{area['id']}",
        json={"bbox": [24.9, 60.1, 25.0, 60.2]},
        headers=server.server.token("editor"),
    )
    assert moved.status_code == 200, moved.text
    jobs = _services(server).jobs
    deadline = time.monotonic() + 60
    while not jobs.get(moved.json()["job_id"]).status.done:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_features_added_and_not_uploaded_are_carried_into_a_package_replaced_whole(
    live_server: LiveServer, upload_crew: UploadCrew
) -> None:
    area, portal, folder = upload_crew.area, upload_crew.portal, upload_crew.folder
    package = OfflineMapSyncTask(folder, portal).package
    with open_feature_table(package, "sites") as sites:
        (added,) = sites.store.apply_edits(
            [Insert("sites", {"name": "not uploaded", "osm_id": 602}, Point(24.95, 60.15))]
        )
        assert added is not None
        sites.add_attachment(added.global_id, "field.jpg", "image/jpeg", b"taken offline")
    _move_area(live_server, area)
    applied = apply_scheduled_updates(portal, folder)  # the updates step alone: no upload
    assert applied is not None
    assert applied.full_package_replaced
    assert applied.carried == 1
    assert verify_package(folder).ok
    (replica,) = read_manifest(folder).replicas
    with GeoPackageStore.open(folder / replica.file) as store:
        kept = store.get_feature("sites", added.global_id)
        (photo,) = store.list_attachments("sites", added.global_id)
    assert kept.properties["name"] == "not uploaded"
    assert photo.name == "field.jpg"
    synced = OfflineMapSyncTask(folder, portal).sync_offline_map(SyncOfflineMapParameters())
    assert not synced.wait().has_errors  # and it goes up with the next sync
    server = _services(live_server).catalog.feature_service(replica.service)
    assert server.get_feature("sites", added.global_id).properties["name"] == "not uploaded"
    assert [a.name for a in server.list_attachments("sites", added.global_id)] == ["field.jpg"]


def test_a_package_is_not_replaced_while_edits_of_its_features_wait(
    live_server: LiveServer, upload_crew: UploadCrew
) -> None:
    area, portal, folder = upload_crew.area, upload_crew.portal, upload_crew.folder
    (replica,) = read_manifest(folder).replicas
    with GeoPackageStore.open(folder / replica.file) as store:
        site = next(iter(store.iter_features("sites")))
        store.apply_edits([Update("sites", site.global_id, {"name": "edited offline"})])
    before = _files(folder)
    _move_area(live_server, area)
    with pytest.raises(PackageError, match="1 edits of the package's features"):
        apply_scheduled_updates(portal, folder)
    assert _files(folder) == before


def test_a_carried_feature_whose_upload_was_answered_but_not_heard_is_not_doubled(
    live_server: LiveServer, upload_crew: UploadCrew
) -> None:
    area, portal, folder = upload_crew.area, upload_crew.portal, upload_crew.folder
    task = OfflineMapSyncTask(folder, portal)
    with open_feature_table(task.package, "sites") as sites:
        (added,) = sites.store.apply_edits(
            [Insert("sites", {"name": "sent once", "osm_id": 603}, Point(24.95, 60.15))]
        )
        assert added is not None
    assert not task.sync_offline_map(SyncOfflineMapParameters()).wait().has_errors
    (old,) = read_manifest(folder).replicas
    with sqlite3.connect(folder / old.file) as conn:  # the answer never reached the device
        conn.execute("UPDATE offmaps_outbox SET status = 'pending'")
    _move_area(live_server, area)
    applied = apply_scheduled_updates(portal, folder)
    assert applied is not None
    assert applied.carried == 1
    synced = OfflineMapSyncTask(folder, portal).sync_offline_map(SyncOfflineMapParameters())
    assert not synced.wait().has_errors  # the insert again: answered applied, as a retry
    server = _services(live_server).catalog.feature_service(old.service)
    named = [f for f in server.iter_features("sites") if f.properties["name"] == "sent once"]
    assert [f.global_id for f in named] == [added.global_id]
