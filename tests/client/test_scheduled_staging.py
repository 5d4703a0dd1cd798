"""How a device stages its scheduled updates (docs/preplanned.md, "On the device"): each file
copied in the kernel and brought through its own chain beside the others, only the files
``verify_package`` checks hashed again for the manifest, and a failure in any of them leaves
the package as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from offmaps.cli import main
from offmaps.client import OfflineMapAreaManager, Portal
from offmaps.client import scheduled as scheduled_module
from offmaps.client.scheduled import package_state
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.errors import SyncFailedError
from offmaps.offline.package import file_entry, read_manifest, verify_package
from offmaps.offline.updates import apply_tile_update
from offmaps.offline.updates import tiles as tiles_module
from tests.client.test_preplanned import map_id, signed_in
from tests.client.test_scheduled_updates import (
    BBOX,
    Crew,
    _download,
    _edit,
    _rows,
    scheduled_area,
)
from tests.serverkit import LiveServer

__all__ = ["map_id", "scheduled_area", "signed_in"]  # the fixtures, used by name


def _files(folder: Path) -> dict[str, bytes]:
    """The package's files; not SQLite's files beside a database that was read."""
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def test_a_replicas_file_is_not_hashed_again_and_the_package_verifies(
    live_server: LiveServer,
    signed_in: Callable[..., Portal],
    map_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manager = OfflineMapAreaManager(signed_in(), map_id)
    area = manager.create(
        title="North",
        bbox=BBOX,
        update_mode="download_scheduled_updates_and_upload_new_features",
        wait=True,
    )
    portal = signed_in()
    device = tmp_path / "device"
    _download(portal, map_id, device)
    (replica,) = read_manifest(device).replicas
    listed_before = {entry.path: entry for entry in read_manifest(device).files}
    _edit(live_server, 1)
    manager.refresh(area["id"], wait=True)

    result = OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    applied = result.scheduled_updates
    assert applied is not None
    assert (applied.choice, applied.to_number) == ("updates", 2)
    listed = {entry.path: entry for entry in read_manifest(device).files}
    # the replica's entry is the package's as delivered (its bytes change with every edit)
    assert listed[replica.file] == listed_before[replica.file]
    assert file_entry(device, replica.file) != listed[replica.file]
    # the tile archive's is its bytes now
    assert listed["basemap.mbtiles"] == file_entry(device, "basemap.mbtiles")
    assert listed["basemap.mbtiles"] != listed_before["basemap.mbtiles"]
    report = verify_package(device)
    assert report.ok, report.problems
    assert main(["package", "verify", str(device), "--json"]) == 0  # offmaps package verify
    assert json.loads(capsys.readouterr().out)["ok"]
    fresh = tmp_path / "fresh"
    _download(portal, map_id, fresh)
    assert _rows(device) == _rows(fresh)


def test_a_failure_in_one_file_leaves_every_file_as_it_was(
    live_server: LiveServer,
    scheduled_area: Crew,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager, area, portal, device = scheduled_area
    _edit(live_server, 1)
    manager.refresh(area["id"], wait=True)
    before = _files(device)
    staged: list[str] = []

    def tiles(target: Path, *args: Any, **kwargs: Any) -> Any:
        found = apply_tile_update(target, *args, **kwargs)
        staged.append(target.name)
        return found

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiles_module, "apply_tile_update", tiles)  # imported where applied
    monkeypatch.setattr(scheduled_module, "apply_feature_update", broken)
    with pytest.raises(SyncFailedError, match="No space left"):
        OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    assert staged == ["basemap.mbtiles"]  # the other file was staged, and is not moved in
    assert _files(device) == before
    assert not (device / scheduled_module.STAGING_FOLDER).exists()
    monkeypatch.undo()
    result = OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    assert result.scheduled_updates is not None
    assert result.scheduled_updates.to_number == 2
    state = package_state(device)
    assert state is not None
    assert state.number == 2
    assert verify_package(device).ok


def test_a_damaged_last_update_changes_nothing(
    live_server: LiveServer,
    scheduled_area: Crew,
    map_id: str,
) -> None:
    manager, area, portal, device = scheduled_area
    _edit(live_server, 1)
    manager.refresh(area["id"], wait=True)
    plan = portal.request(
        "GET", f"/api/maps/{map_id}/areas/{area['id']}/updates", params={"from": 1, "epoch": 1}
    )
    # the last update downloaded, after the others are checked: nothing is staged before it
    last = plan["files"][-1]
    files = live_server.server.client.app.state.services.areas.files  # type: ignore[attr-defined]
    good = files.get(last["sha256"])
    files.put(last["sha256"], good[:-1] + bytes([good[-1] ^ 1]))
    before = _files(device)
    task = OfflineMapSyncTask(device, portal)
    with pytest.raises(SyncFailedError, match="SHA-256"):
        task.sync_offline_map(SyncOfflineMapParameters()).wait()
    assert _files(device) == before
    assert not (device / scheduled_module.STAGING_FOLDER).exists()
    files.put(last["sha256"], good)
    result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
    assert result.scheduled_updates is not None
    assert result.scheduled_updates.to_number == 2
    assert verify_package(device).ok
