"""Scheduled updates on the device: a sync brings a preplanned package to its area's newest
package by the update files (checked, applied atomically across the package's files), or by the
newest package whole when the server says so; a failure leaves the package as it was, and an
interrupted move is finished by the next sync (docs/preplanned.md)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from shapely.geometry import Point

from offmaps.client import OfflineMapAreaManager, Portal
from offmaps.client import scheduled as scheduled_module
from offmaps.client.offline import OfflineMapTask, PortalItem
from offmaps.client.scheduled import package_state, recover
from offmaps.client.sync import (
    OfflineMapSyncTask,
    PreplannedScheduledUpdatesOption,
    SyncOfflineMapParameters,
)
from offmaps.errors import MapAreaDeletedError, SyncFailedError
from offmaps.features.model import Delete, Insert, Update
from offmaps.offline.package import verify_package
from offmaps.offline.updates import tiles as tiles_module
from tests.client.test_preplanned import map_id, signed_in
from tests.client.test_sync import server_edit, server_sites
from tests.serverkit import LiveServer

__all__ = ["map_id", "signed_in"]  # the fixtures, used by name

BBOX = (24.895, 60.05, 24.995, 60.15)


def _rows(folder: Path) -> set[tuple[Any, ...]]:
    with sqlite3.connect(folder / "city.gpkg") as conn:
        return set(conn.execute("SELECT globalid, name, status FROM sites"))


def _tiles(folder: Path) -> dict[tuple[int, int, int], bytes]:
    with sqlite3.connect(folder / "basemap.mbtiles") as conn:
        rows = conn.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
        return {(z, x, y): bytes(data) for z, x, y, data in rows}


def _download(portal: Portal, map_id: str, folder: Path) -> None:
    task = OfflineMapTask(PortalItem(portal, map_id))
    (area,) = task.get_preplanned_map_areas()
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    task.download_preplanned_offline_map(parameters, folder).wait()


def _edit(live_server: LiveServer, n: int) -> None:
    sites = server_sites(live_server)
    server_edit(
        live_server,
        Update("sites", sites[f"site {n}"].global_id, {"status": f"checked {n}"}),
        Delete("sites", sites[f"site {n + 1}"].global_id),
        Insert(
            "sites", {"name": f"new {n}", "status": "ok", "osm_id": 900 + n}, Point(24.91, 60.1)
        ),
    )


class Crew(NamedTuple):
    """An area in download_scheduled_updates mode, and a device that downloaded package 1."""

    manager: OfflineMapAreaManager
    area: dict[str, Any]
    portal: Portal
    device: Path


@pytest.fixture
def scheduled_area(signed_in: Callable[..., Portal], map_id: str, tmp_path: Path) -> Crew:
    manager = OfflineMapAreaManager(signed_in(), map_id)
    area = manager.create(
        title="North", bbox=BBOX, update_mode="download_scheduled_updates", wait=True
    )
    portal = signed_in()
    device = tmp_path / "device"
    _download(portal, map_id, device)
    return Crew(manager, area, portal, device)


def test_a_sync_applies_the_update_files_of_each_refresh(
    live_server: LiveServer,
    map_id: str,
    scheduled_area: Crew,
    tmp_path: Path,
) -> None:
    manager, area, portal, device = scheduled_area
    assert package_state(device) is not None
    for n in (1, 3):  # two refreshes: a chain of two updates per file
        _edit(live_server, n)
        manager.refresh(area["id"], wait=True)
    task = OfflineMapSyncTask(device, portal)
    info = task.check_for_updates()
    plan = portal.request(
        "GET", f"/api/maps/{map_id}/areas/{area['id']}/updates", params={"from": 1, "epoch": 1}
    )
    assert plan["choice"] == "updates", plan
    assert info.scheduled_updates_download_size == plan["updates_bytes"] > 0
    assert not info.full_package_required
    assert info.download_available

    result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
    applied = result.scheduled_updates
    assert applied is not None
    assert (applied.choice, applied.from_number, applied.to_number) == ("updates", 1, 3)
    assert applied.updates_applied == len(plan["files"]) == 4  # features and tiles, twice
    assert not result.mobile_map_package_reopen_required
    assert verify_package(device).ok
    state = package_state(device)
    assert state is not None
    assert state.number == 3

    fresh = tmp_path / "fresh"
    _download(portal, map_id, fresh)
    assert _rows(device) == _rows(fresh)
    assert _tiles(device) == _tiles(fresh)
    assert not any(p.name.startswith(".offmaps-") for p in device.iterdir())
    # nothing more to do
    again = OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    assert again.scheduled_updates is not None
    assert again.scheduled_updates.choice == "none"


def test_no_updates_leaves_the_package_as_it_is(
    live_server: LiveServer,
    scheduled_area: Crew,
) -> None:
    manager, area, portal, device = scheduled_area
    before = _rows(device)
    _edit(live_server, 1)
    manager.refresh(area["id"], wait=True)
    option = PreplannedScheduledUpdatesOption.NO_UPDATES
    parameters = SyncOfflineMapParameters(preplanned_scheduled_updates_option=option)
    result = OfflineMapSyncTask(device, portal).sync_offline_map(parameters).wait()
    assert result.scheduled_updates is None
    assert _rows(device) == before


def test_a_package_older_than_the_kept_ones_is_replaced_whole(
    live_server: LiveServer,
    map_id: str,
    scheduled_area: Crew,
    tmp_path: Path,
) -> None:
    manager, area, portal, device = scheduled_area
    keep = live_server.server.client.app.state.services.settings.area_keep_packages  # type: ignore[attr-defined]
    for n in range(keep + 1):
        _edit(live_server, 2 * n + 1)
        manager.refresh(area["id"], wait=True)
    task = OfflineMapSyncTask(device, portal)
    info = task.check_for_updates()
    assert info.full_package_required
    assert info.mobile_map_package_reopen_required
    result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
    applied = result.scheduled_updates
    assert applied is not None
    assert applied.full_package_replaced
    assert applied.reason is not None
    assert "older than the oldest kept" in applied.reason
    assert result.mobile_map_package_reopen_required
    assert applied.to_number == keep + 2
    assert verify_package(device).ok
    fresh = tmp_path / "fresh"
    _download(portal, map_id, fresh)
    assert _rows(device) == _rows(fresh)
    assert not (tmp_path / "device.offmaps-new").exists()
    assert not (tmp_path / "device.offmaps-old").exists()


def test_a_failure_while_applying_leaves_the_package_as_it_was(
    live_server: LiveServer,
    scheduled_area: Crew,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager, area, portal, device = scheduled_area
    before = {p.name: p.read_bytes() for p in device.iterdir() if p.is_file()}
    _edit(live_server, 1)
    manager.refresh(area["id"], wait=True)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiles_module, "apply_tile_update", broken)  # imported where applied
    with pytest.raises(SyncFailedError, match="No space left"):
        OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    after = {p.name: p.read_bytes() for p in device.iterdir() if p.is_file()}
    assert after == before  # the feature update applied in staging only
    monkeypatch.undo()
    result = OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    assert result.scheduled_updates is not None
    assert result.scheduled_updates.to_number == 2


def test_a_move_cut_short_is_finished_by_the_next_sync(
    live_server: LiveServer,
    map_id: str,
    scheduled_area: Crew,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager, area, portal, device = scheduled_area
    _edit(live_server, 1)
    manager.refresh(area["id"], wait=True)
    move_in = scheduled_module._move_in

    def cut(folder: Path, names: list[str]) -> None:
        move_in(folder, names[:1])  # the first file moved, then the power went
        raise KeyboardInterrupt

    monkeypatch.setattr(scheduled_module, "_move_in", cut)
    with pytest.raises(KeyboardInterrupt):
        OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    assert (device / scheduled_module.INTENT_FILE).exists()
    monkeypatch.undo()
    recover(device)  # what the next sync does first
    assert not (device / scheduled_module.INTENT_FILE).exists()
    assert verify_package(device).ok
    state = package_state(device)
    assert state is not None
    assert state.number == 2
    fresh = tmp_path / "fresh"
    _download(portal, map_id, fresh)
    assert _rows(device) == _rows(fresh)


def test_a_deleted_area_leaves_the_package_and_says_so(
    scheduled_area: Crew,
) -> None:
    manager, area, portal, device = scheduled_area
    before = _rows(device)
    manager.delete(area["id"])
    with pytest.raises(MapAreaDeletedError):
        OfflineMapSyncTask(device, portal).check_for_updates()
    with pytest.raises(SyncFailedError, match="deleted by its author"):
        OfflineMapSyncTask(device, portal).sync_offline_map(SyncOfflineMapParameters()).wait()
    assert _rows(device) == before
