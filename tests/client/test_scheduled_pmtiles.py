"""Scheduled updates of a preplanned package whose tile archive is PMTiles: the device records
the archive's chain in its JSON metadata, and a sync rewrites the archive with each tile update
in staging (PMTiles is immutable and clustered) and swaps it in with the rest; a damaged update
or a failed rewrite leaves the package as it was (docs/preplanned.md, "On the device")."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from offmaps.client import Portal
from offmaps.client import scheduled as scheduled_module
from offmaps.client.areas import OfflineMapAreaManager
from offmaps.client.scheduled import package_state
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.containers import pmtiles as pmtiles_module
from offmaps.containers.mbtiles import tms_row
from offmaps.containers.pmtiles import PMTilesReader
from offmaps.errors import SyncFailedError
from offmaps.offline.package import verify_package
from offmaps.offline.parameters import TileArchiveFormat
from offmaps.offline.updates.tiles import PMTILES_CHAIN_KEY, read_archive_chain_state
from offmaps.tiling import get_tms
from offmaps.types import Tile, TileFormat
from tests.client.test_preplanned import map_id, signed_in
from tests.client.test_scheduled_updates import BBOX, Crew, _download, _edit, _rows
from tests.serverkit import LiveServer
from tests.tilegen import make_tile

__all__ = ["map_id", "signed_in"]  # the fixtures, used by name

ARCHIVE = "basemap.pmtiles"


@pytest.fixture
def scheduled_area(signed_in: Callable[..., Portal], map_id: str, tmp_path: Path) -> Crew:
    """An area the author asked to be packaged as PMTiles, downloaded by a crew."""
    manager = OfflineMapAreaManager(signed_in(), map_id)
    area = manager.create(
        title="North",
        bbox=BBOX,
        update_mode="download_scheduled_updates",
        tile_format=TileArchiveFormat.PMTILES.value,
        wait=True,
    )
    assert area["tile_format"] == "pmtiles"
    portal = signed_in()
    device = tmp_path / "device"
    _download(portal, map_id, device)
    return Crew(manager, area, portal, device)


def _tiles(folder: Path) -> dict[Tile, bytes]:
    with PMTilesReader(folder / ARCHIVE) as reader:
        assert reader.verify() == []
        return dict(reader.iter_tiles())


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def _redraw(live_server: LiveServer, n: int) -> Tile:
    """Redraw one tile of the area in the basemap's source archive; the tile."""
    tile = Tile(*get_tms("WebMercatorQuad").tile(24.94 + 0.01 * n, 60.1, 8))
    source = live_server.server.data_dir / "tiles" / "basemap.mbtiles"
    with sqlite3.connect(source) as conn:
        changed = conn.execute(
            "UPDATE tiles SET tile_data = ? WHERE zoom_level = ? AND tile_column = ? "
            "AND tile_row = ?",
            (make_tile(tile, TileFormat.PNG, size=32 + n), tile.z, tile.x, tms_row(tile.y, 8)),
        ).rowcount
    assert changed == 1
    return tile


def _refresh(live_server: LiveServer, crew: Crew, n: int) -> None:
    _edit(live_server, n)
    _redraw(live_server, n)
    crew.manager.refresh(crew.area["id"], wait=True)


def test_a_sync_rewrites_the_pmtiles_archive_with_its_updates(
    live_server: LiveServer, map_id: str, scheduled_area: Crew, tmp_path: Path
) -> None:
    crew = scheduled_area
    state = package_state(crew.device)
    assert state is not None
    assert state.files[ARCHIVE].package_number == 1  # recorded in its JSON metadata
    before = _tiles(crew.device)
    for n in (1, 3):  # a chain of two updates per file
        _refresh(live_server, crew, n)
    task = OfflineMapSyncTask(crew.device, crew.portal)
    info = task.check_for_updates()
    assert not info.full_package_required
    assert info.download_available

    result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
    applied = result.scheduled_updates
    assert applied is not None
    assert (applied.choice, applied.from_number, applied.to_number) == ("updates", 1, 3)
    assert applied.updates_applied == 4  # features and tiles, twice
    assert not result.mobile_map_package_reopen_required
    assert verify_package(crew.device).ok
    chain = read_archive_chain_state(crew.device / ARCHIVE)
    assert chain is not None
    assert chain.package_number == 3

    fresh = tmp_path / "fresh"
    _download(crew.portal, map_id, fresh)
    after = _tiles(crew.device)
    assert after == _tiles(fresh)
    assert after != before
    assert _rows(crew.device) == _rows(fresh)
    with PMTilesReader(crew.device / ARCHIVE) as reader:
        assert PMTILES_CHAIN_KEY in reader.metadata.extra
    assert not any(p.name.startswith((".offmaps-", f".{ARCHIVE}")) for p in crew.device.iterdir())


def test_a_tampered_pmtiles_update_leaves_the_package_as_it_was(
    live_server: LiveServer, map_id: str, scheduled_area: Crew
) -> None:
    crew = scheduled_area
    _refresh(live_server, crew, 1)
    plan = crew.portal.request(
        "GET",
        f"/api/maps/{map_id}/areas/{crew.area['id']}/updates",
        params={"from": 1, "epoch": 1},
    )
    (update,) = [entry for entry in plan["files"] if entry["file"] == ARCHIVE]
    files = live_server.server.client.app.state.services.areas.files  # type: ignore[attr-defined]
    good = files.get(update["sha256"])
    before = _files(crew.device)
    task = OfflineMapSyncTask(crew.device, crew.portal)
    for damaged in (good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 1])):
        files.put(update["sha256"], damaged)
        with pytest.raises(SyncFailedError):
            task.sync_offline_map(SyncOfflineMapParameters()).wait()
        assert _files(crew.device) == before
        assert not (crew.device / scheduled_module.STAGING_FOLDER).exists()
        (crew.device / scheduled_module.UPDATES_FOLDER / update["path"]).unlink(missing_ok=True)
    files.put(update["sha256"], good)
    result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
    assert result.scheduled_updates is not None
    assert result.scheduled_updates.to_number == 2
    assert verify_package(crew.device).ok


def test_a_full_disk_while_rewriting_the_archive_leaves_the_package_as_it_was(
    live_server: LiveServer, scheduled_area: Crew, monkeypatch: pytest.MonkeyPatch
) -> None:
    crew = scheduled_area
    _refresh(live_server, crew, 1)
    before = _files(crew.device)

    def full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    real = pmtiles_module._copy_range
    monkeypatch.setattr(pmtiles_module, "_copy_range", full)
    task = OfflineMapSyncTask(crew.device, crew.portal)
    with pytest.raises(SyncFailedError, match="No space left"):
        task.sync_offline_map(SyncOfflineMapParameters()).wait()
    assert _files(crew.device) == before  # the replica's update applied in staging only
    monkeypatch.setattr(pmtiles_module, "_copy_range", real)
    result = task.sync_offline_map(SyncOfflineMapParameters()).wait()
    assert result.scheduled_updates is not None
    assert result.scheduled_updates.to_number == 2
    assert verify_package(crew.device).ok
