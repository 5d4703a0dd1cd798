"""Scheduled update files of preplanned areas through the server: each refresh writes them, the
server plans what a device downloads, and a device's copy brought up by the updates holds the
same rows as the new package (docs/preplanned.md, docs/update-files.md)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import Point

from offmaps.containers import TilesetMetadata, open_writer
from offmaps.errors import UpdateChainError
from offmaps.features.model import Delete, FeatureQuery, Insert, Update
from offmaps.offline import preplanned
from offmaps.offline.package import verify_package
from offmaps.offline.updates import (
    BASE_PREFIX,
    ChainState,
    TileUpdateReader,
    apply_feature_update,
    apply_tile_update,
    write_chain_state,
)
from offmaps.services import Services
from offmaps.tiling import get_tms
from offmaps.types import BBox, Tile, TileFormat
from tests.jobs.test_jobs import wait
from tests.serverkit import Server, assert_problem
from tests.tilegen import make_tile

BBOX = [24.895, 60.05, 24.995, 60.15]


def _services(server: Server) -> Services:
    services: Services = server.client.app.state.services  # type: ignore[attr-defined]
    return services


def _href(server: Server, area_id: str = "") -> str:
    return f"/api/maps/{server.public_map}/areas" + (f"/{area_id}" if area_id else "")


def _packaged(server: Server, answer: dict[str, Any]) -> dict[str, Any]:
    wait(_services(server).jobs, answer["job_id"])
    found: dict[str, Any] = server.client.get(_href(server, answer["id"])).json()
    assert found["status"] == "complete", found
    return found


def _new_area(server: Server) -> dict[str, Any]:
    """A new area "North" of the public map, once packaged."""
    answer = server.client.post(
        _href(server), json={"title": "North", "bbox": BBOX}, headers=server.token("editor")
    )
    assert answer.status_code == 201, answer.text
    return _packaged(server, answer.json())


def _download(server: Server, entry: dict[str, Any], folder: Path) -> Path:
    crew = server.token("editor", "maps:read offline:sync")
    response = server.client.get(entry["href"], headers=crew)
    assert response.status_code == 200, response.text
    assert hashlib.sha256(response.content).hexdigest() == entry["sha256"]
    target: Path = folder / entry["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(response.content)
    return target


def _rows(path: Path) -> set[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return set(conn.execute("SELECT globalid, name, status FROM sites"))


def _edit(server: Server) -> None:
    store = server.catalog.feature_service("city")
    page = store.query("sites", FeatureQuery(filters=("osm_id < 25",), limit=100))
    first, second = sorted(page.features, key=lambda f: int(str(f.properties["osm_id"])))[:2]
    store.apply_edits(
        [
            Update("sites", first.global_id, {"status": "broken"}),
            Delete("sites", second.global_id),
            Insert("sites", {"name": "new site", "status": "ok", "osm_id": 99}, Point(24.91, 60.1)),
            Insert("sites", {"name": "far away", "status": "ok", "osm_id": 98}, Point(10.0, 50.0)),
        ]
    )


def test_a_device_brought_up_by_the_update_files_holds_the_new_package(
    server: Server, tmp_path: Path
) -> None:
    editor = server.token("editor")
    area = _new_area(server)
    first = area["package"]
    assert first["number"] == 1
    device = tmp_path / "device"
    replica = next(
        _download(server, entry, device) for entry in first["files"] if entry["path"] == "city.gpkg"
    )
    served = next(entry for entry in first["files"] if entry["path"] == "city.gpkg")

    _edit(server)
    refreshed = server.client.post(f"{_href(server, area['id'])}/refresh", headers=editor)
    area = _packaged(server, refreshed.json())
    assert area["latest"] == 2
    packages = server.client.get(f"{_href(server, area['id'])}/packages").json()["packages"]
    assert [p["number"] for p in packages] == [1, 2]

    plan = server.client.get(
        f"{_href(server, area['id'])}/updates", params={"from": 1, "epoch": 1}
    ).json()
    assert plan["choice"] == "updates", plan
    assert [(f["file"], f["kind"], f["from_number"], f["to_number"]) for f in plan["files"]] == [
        ("city.gpkg", "features", 1, 2)
    ]
    update = plan["files"][0]
    assert update["previous_sha256"] == f"{BASE_PREFIX}{served['sha256']}"
    assert plan["updates_bytes"] == update["size"] < plan["full_bytes"]
    update_file = _download(server, update, tmp_path / "updates")

    # the device records which package its file holds, then applies the chain
    write_chain_state(replica, ChainState(area["id"], 1, 1, update["previous_sha256"]))
    applied = apply_feature_update(replica, update_file, sha256=update["sha256"])
    assert applied.state.package_number == 2
    fresh = next(
        _download(server, entry, tmp_path / "fresh")
        for entry in area["package"]["files"]
        if entry["path"] == "city.gpkg"
    )
    assert _rows(replica) == _rows(fresh)
    names = {row[1] for row in _rows(replica)}
    assert "new site" in names
    assert "far away" not in names  # outside the area: not in the area's update
    with pytest.raises(UpdateChainError):
        apply_feature_update(replica, update_file, sha256=update["sha256"])  # twice

    assert (
        server.client.get(
            f"{_href(server, area['id'])}/updates", params={"from": 2, "epoch": 1}
        ).json()["choice"]
        == "none"
    )


def test_the_full_package_when_the_updates_cannot_reach(server: Server) -> None:
    services = _services(server)
    editor = server.token("editor")
    area = _new_area(server)
    href = _href(server, area["id"])
    for _ in range(services.settings.area_keep_packages + 1):
        _edit(server)
        area = _packaged(server, server.client.post(f"{href}/refresh", headers=editor).json())
    newest = area["latest"]
    plan = server.client.get(f"{href}/updates", params={"from": 1, "epoch": 1}).json()
    assert plan["choice"] == "full"
    assert "package 1 is older than the oldest kept (3)" in plan["reason"]
    # the updates from package 2 are kept with package 3: the smaller of them and the package
    plan = server.client.get(f"{href}/updates", params={"from": 2, "epoch": 1}).json()
    assert len(plan["files"]) == newest - 2
    assert plan["updates_bytes"] == sum(entry["size"] for entry in plan["files"])
    if plan["updates_bytes"] < plan["full_bytes"]:
        assert plan["choice"] == "updates"
    else:
        assert plan["choice"] == "full"
        assert "no smaller than the package" in plan["reason"]
    plan = server.client.get(f"{href}/updates", params={"from": newest - 1, "epoch": 1}).json()
    assert plan["choice"] == "updates"
    assert plan["files"][0]["href"].endswith(f"/updates/{newest}/city.{newest}.update.gpkg")
    # another epoch: the area was repackaged since
    changed = server.client.patch(href, json={"bbox": [24.9, 60.05, 24.99, 60.15]}, headers=editor)
    area = _packaged(server, changed.json())
    plan = server.client.get(f"{href}/updates", params={"from": newest, "epoch": 1}).json()
    assert (plan["choice"], plan["files"]) == ("full", [])
    assert "repackaged" in plan["reason"]
    # a package of the new epoch starts a new chain: no update file reaches it
    assert area["package"]["epoch"] == 2
    assert_problem(
        server.client.get(f"{href}/updates", params={"from": newest + 5, "epoch": 2}), 400
    )
    assert_problem(server.client.get(f"{href}/updates", params={"from": 0, "epoch": 2}), 422)
    assert_problem(server.client.get(f"{href}/updates", params={"from": "x", "epoch": 2}), 422)
    crew = server.token("editor", "maps:read offline:sync")
    assert_problem(server.client.get(f"{href}/updates/1/../../x", headers=crew), 404)
    assert_problem(server.client.get(f"{href}/updates/99/a.gpkg", headers=crew), 404)


def test_an_incremental_refresh_holds_what_a_full_repackage_does(
    server: Server, tmp_path: Path
) -> None:
    editor = server.token("editor")
    area = _new_area(server)
    href = _href(server, area["id"])
    _edit(server)
    incremental = _packaged(server, server.client.post(f"{href}/refresh", headers=editor).json())
    job = _services(server).jobs.get(incremental["job_id"])
    assert job.result is not None
    assert job.result["incremental"] is True
    # the same extent again: a new epoch, extracted from scratch
    full = _packaged(server, server.client.patch(href, json={"bbox": BBOX}, headers=editor).json())
    job = _services(server).jobs.get(full["job_id"])
    assert job.result is not None
    assert job.result["incremental"] is False
    assert full["package"]["epoch"] == 2

    def rows(package: dict[str, Any], where: str) -> set[tuple[Any, ...]]:
        folder = tmp_path / where
        for entry in package["files"]:
            _download(server, entry, folder)
        assert verify_package(folder).ok
        return _rows(folder / "city.gpkg")

    assert rows(incremental["package"], "incremental") == rows(full["package"], "full")


def test_a_refresh_that_cannot_build_on_the_previous_package_extracts_again(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preplanned, "_can_refresh", lambda *args: False)
    editor = server.token("editor")
    area = _new_area(server)
    _edit(server)
    area = _packaged(
        server, server.client.post(f"{_href(server, area['id'])}/refresh", headers=editor).json()
    )
    job = _services(server).jobs.get(area["job_id"])
    assert job.result is not None
    assert (job.result["incremental"], job.result["updates"]) == (False, 1)
    assert [u["file"] for u in area["package"]["updates"]] == ["city.gpkg"]


def _use_basemap(server: Server, service: str) -> None:
    """Make the tile service ``service`` the public map's one basemap layer, ``basemap``."""
    document = server.client.get(f"/api/maps/{server.public_map}").json()
    document["basemap"]["layers"] = [
        {
            "type": "raster_tile",
            "id": "basemap",
            "title": "Basemap",
            "service": service,
            "export_tiles_allowed": True,
        }
    ]
    response = server.client.put(
        f"/api/maps/{server.public_map}", json=document, headers=server.token("editor")
    )
    assert response.status_code == 204, response.text


def _basemap(server: Server) -> Path:
    """A raster tile layer ``basemap`` over the area, levels 10-12, added to the public map."""
    tms = get_tms("WebMercatorQuad")
    path = server.data_dir / "tiles" / "basemap.mbtiles"
    metadata = TilesetMetadata(
        tile_format=TileFormat.PNG, tms=tms, name="basemap", minzoom=10, maxzoom=12,
        bounds=BBox(*BBOX),
    )  # fmt: skip
    with open_writer(str(path), metadata) as writer:
        west, south, east, north = BBOX
        for found in tms.tiles(west, south, east, north, [10, 11, 12]):
            tile = Tile(found.x, found.y, found.z)
            writer.write_tile(tile, make_tile(tile, TileFormat.PNG))
    server.catalog._load_tile_sources()
    _use_basemap(server, "basemap")
    return path


def _tiles(path: Path) -> dict[tuple[int, int, int], bytes]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
        return {(z, x, y): bytes(data) for z, x, y, data in rows}


def test_tiles_come_as_updates_of_only_the_tiles_that_changed(
    server: Server, tmp_path: Path
) -> None:
    archive = _basemap(server)
    editor = server.token("editor")
    area = _new_area(server)
    href = _href(server, area["id"])
    entries = {entry["path"]: entry for entry in area["package"]["files"]}
    device = _download(server, entries["basemap.mbtiles"], tmp_path / "device")
    head = area["package"]["chains"]["basemap.mbtiles"]
    assert head == f"{BASE_PREFIX}{entries['basemap.mbtiles']['sha256']}"

    # nothing changed in the archive: built from the previous package, an empty tile update
    same = _packaged(server, server.client.post(f"{href}/refresh", headers=editor).json())
    job = _services(server).jobs.get(same["job_id"])
    assert job.result is not None
    assert job.result["incremental"] is True
    tiles_update = next(u for u in same["package"]["updates"] if u["kind"] == "tiles")
    assert tiles_update["file"] == "basemap.mbtiles"
    # the unchanged archive is the same file in both packages, stored once by its SHA-256
    unchanged = next(e for e in same["package"]["files"] if e["path"] == "basemap.mbtiles")
    assert unchanged["sha256"] == entries["basemap.mbtiles"]["sha256"]
    assert _services(server).areas.files.exists(unchanged["sha256"])

    # one tile redrawn, one removed: the next update holds just those
    with sqlite3.connect(archive) as conn:
        z, x, y = conn.execute("SELECT zoom_level, tile_column, tile_row FROM tiles").fetchone()
        conn.execute(
            "UPDATE tiles SET tile_data = ? WHERE zoom_level = ? AND tile_column = ? "
            "AND tile_row = ?",
            (make_tile(Tile(0, 0, 0), TileFormat.PNG), z, x, y),
        )
        gone = conn.execute(
            "SELECT zoom_level, tile_column, tile_row FROM tiles WHERE zoom_level = 12"
        ).fetchone()
        conn.execute(
            "DELETE FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?", gone
        )
    changed = _packaged(server, server.client.post(f"{href}/refresh", headers=editor).json())
    job = _services(server).jobs.get(changed["job_id"])
    assert job.result is not None
    assert job.result["incremental"] is True  # the archive changed: its tiles compared
    plan = server.client.get(f"{href}/updates", params={"from": 1, "epoch": 1}).json()
    tile_updates = [u for u in plan["files"] if u["kind"] == "tiles"]
    assert [(u["from_number"], u["to_number"]) for u in tile_updates] == [(1, 2), (2, 3)]
    write_chain_state(device, ChainState(area["id"], 1, 1, head))
    for update in tile_updates:
        path = _download(server, update, tmp_path / "updates")
        with TileUpdateReader(path) as reader:
            if update["to_number"] == 3:
                assert len(list(reader.iter_tiles())) == 1
                assert len(list(reader.iter_removed())) == 1
        apply_tile_update(device, path, sha256=update["sha256"])
    fresh = _download(
        server,
        next(e for e in changed["package"]["files"] if e["path"] == "basemap.mbtiles"),
        tmp_path / "fresh",
    )
    assert _tiles(device) == _tiles(fresh)


def test_a_tile_change_still_in_the_archives_write_ahead_log_is_seen(server: Server) -> None:
    archive = _basemap(server)
    with sqlite3.connect(archive) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    editor = server.token("editor")
    area = _new_area(server)
    before = archive.stat()
    writer = sqlite3.connect(archive, isolation_level=None)
    try:  # a writer that keeps its connection: the change stays in the -wal file
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute(
            "UPDATE tiles SET tile_data = ? WHERE zoom_level = 12",
            (make_tile(Tile(0, 0, 0), TileFormat.PNG),),
        )
        after = archive.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        refreshed = _packaged(
            server,
            server.client.post(f"{_href(server, area['id'])}/refresh", headers=editor).json(),
        )
    finally:
        writer.close()
    job = _services(server).jobs.get(refreshed["job_id"])
    assert job.result is not None
    assert job.result["incremental"] is True  # the -wal counts in the mark: tiles compared
    tiles = next(u for u in refreshed["package"]["updates"] if u["kind"] == "tiles")
    assert tiles["size"] > 0
