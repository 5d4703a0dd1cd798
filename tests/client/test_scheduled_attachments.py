"""Scheduled updates bring the bytes of the attachments their rows name: a photo added in the
office comes down with the update files (each blob checked against its SHA-256, fetched by it
from the area's files), goes into the package with the updated files, and a blob that does not
arrive intact fails the sync with the package as it was (docs/preplanned.md)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from shapely.geometry import Point

from offmaps.cli import main
from offmaps.client import scheduled as scheduled_module
from offmaps.client.scheduled import package_state, recover
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.errors import SyncFailedError
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import Insert
from offmaps.offline import preplanned
from offmaps.offline.package import read_manifest, verify_package
from offmaps.services import Services
from tests.client.test_preplanned import map_id, signed_in
from tests.client.test_scheduled_updates import Crew, scheduled_area
from tests.client.test_sync import server_edit, server_sites
from tests.serverkit import LiveServer

__all__ = ["map_id", "scheduled_area", "signed_in"]  # the fixtures, used by name


def _services(live_server: LiveServer) -> Services:
    services: Services = live_server.server.client.app.state.services  # type: ignore[attr-defined]
    return services


def _blob(sha256: str) -> str:
    return f"attachments/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _office_photos(live_server: LiveServer) -> dict[str, bytes]:
    """The office adds a site with a photo and a photo to a site the device holds; the photos'
    bytes by the name of the site they are on."""
    server_edit(
        live_server,
        Insert("sites", {"name": "shed", "status": "ok", "osm_id": 950}, Point(24.91, 60.1)),
    )
    sites = server_sites(live_server)
    catalog = live_server.server.catalog
    store = catalog.feature_service("city")
    photos = {"shed": os.urandom(70_000), "site 3": os.urandom(40_000)}
    for name, data in photos.items():
        blob = catalog.blobs.put(data)
        store.add_attachment(
            "sites", sites[name].global_id, name=f"{name}.jpg", content_type="image/jpeg",
            size=blob.size, sha256=blob.sha256,
        )  # fmt: skip
    return photos


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The package's files and their bytes; not the work folders, nor what SQLite keeps beside
    a database in WAL mode that was read (an empty log and its index)."""
    found = {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".offmaps-")
    }
    assert not any(data for name, data in found.items() if name.endswith("-wal"))
    return {name: data for name, data in found.items() if not name.endswith(("-wal", "-shm"))}


@pytest.mark.parametrize("refresh", ["incremental", "full"])
def test_a_sync_brings_the_photos_the_office_added(
    live_server: LiveServer,
    scheduled_area: Crew,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    refresh: str,
) -> None:
    manager, area, portal, device = scheduled_area
    photos = _office_photos(live_server)
    if refresh == "full":  # the package extracted again, the update files written beside it
        monkeypatch.setattr(preplanned, "_can_refresh", lambda *args: False)
    manager.refresh(area["id"], wait=True)
    newest = _services(live_server).areas.store.packages(area["id"])[-1]
    assert (newest.number, newest.incremental) == (2, refresh == "incremental")

    task = OfflineMapSyncTask(device, portal)
    planned = task.check_for_updates().scheduled_updates_download_size  # the photos counted
    result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
    applied = result.scheduled_updates
    assert applied is not None
    assert (applied.choice, applied.to_number) == ("updates", 2)
    assert applied.bytes_downloaded > sum(len(data) for data in photos.values())
    assert planned == applied.bytes_downloaded
    report = verify_package(device)
    assert report.ok, report.problems
    assert main(["package", "verify", str(device), "--json"]) == 0  # offmaps package verify
    assert json.loads(capsys.readouterr().out)["ok"]
    listed = {entry.path: entry for entry in read_manifest(device).files}
    with GeoPackageStore.open(device / "city.gpkg") as store:
        sites = {str(f.properties["name"]): f for f in store.iter_features("sites")}
        for name, data in photos.items():
            sha256 = hashlib.sha256(data).hexdigest()
            assert (device / _blob(sha256)).read_bytes() == data
            assert listed[_blob(sha256)].size == len(data)
            (attachment,) = store.list_attachments("sites", sites[name].global_id)
            assert attachment.sha256 == sha256
    state = package_state(device)
    assert state is not None
    assert state.number == 2
    assert not any(p.name.startswith(".offmaps-") for p in device.iterdir())


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_a_photo_that_does_not_arrive_intact_fails_the_sync_and_changes_nothing(
    live_server: LiveServer,
    scheduled_area: Crew,
    damage: str,
) -> None:
    manager, area, portal, device = scheduled_area
    photos = _office_photos(live_server)
    manager.refresh(area["id"], wait=True)
    files = _services(live_server).areas.files
    sha256 = hashlib.sha256(photos["shed"]).hexdigest()
    assert files.exists(sha256)
    good = files.get(sha256)
    bad = bytes([good[0] ^ 0xFF]) + good[1:] if damage == "tampered" else good[: len(good) // 2]
    files.put(sha256, bad)
    before = _snapshot(device)
    manifest = (device / "package.json").read_text(encoding="utf-8")

    task = OfflineMapSyncTask(device, portal)
    with pytest.raises(SyncFailedError, match="SHA-256"):
        task.sync_offline_map(SyncOfflineMapParameters()).wait()
    assert _snapshot(device) == before
    assert (device / "package.json").read_text(encoding="utf-8") == manifest
    state = package_state(device)
    assert state is not None
    assert state.number == 1
    # what verify finds besides the package is what the next sync resumes from
    problems = verify_package(device).problems
    assert problems
    assert all(problem.path.startswith(".offmaps-updates/") for problem in problems), problems

    files.put(sha256, good)  # the server's copy mended: the next sync goes on
    result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
    assert result.scheduled_updates is not None
    assert result.scheduled_updates.to_number == 2
    assert (device / _blob(sha256)).read_bytes() == photos["shed"]
    assert verify_package(device).ok
    assert json.loads((device / "package.json").read_text(encoding="utf-8"))["files"]


def test_a_move_cut_short_after_a_photo_is_finished_by_the_next_sync(
    live_server: LiveServer,
    scheduled_area: Crew,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager, area, portal, device = scheduled_area
    photos = _office_photos(live_server)
    manager.refresh(area["id"], wait=True)
    move_in = scheduled_module._move_in
    moved: list[str] = []

    def cut(folder: Path, names: list[str]) -> None:
        moved.extend(names[:1])
        move_in(folder, names[:1])  # the first file moved, then the power went
        raise KeyboardInterrupt

    monkeypatch.setattr(scheduled_module, "_move_in", cut)
    with pytest.raises(KeyboardInterrupt):
        OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    assert moved[0].startswith("attachments/")  # the blobs go first, the manifest last
    assert (device / moved[0]).is_file()
    monkeypatch.undo()
    recover(device)  # what the next sync does first
    assert not (device / scheduled_module.INTENT_FILE).exists()
    for data in photos.values():
        assert (device / _blob(hashlib.sha256(data).hexdigest())).read_bytes() == data
    report = verify_package(device)
    assert report.ok, report.problems
    state = package_state(device)
    assert state is not None
    assert state.number == 2
