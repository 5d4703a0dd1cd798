"""A refresh of a preplanned area whose MBTiles tile source changed is incremental: the previous
package's archive with the tiles that differ applied, tile for tile what a fresh extraction
gives (docs/preplanned.md, "Incremental refreshes")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import morecantile
import pytest
from shapely.geometry import Polygon, box

from offmaps.containers import TilesetMetadata, open_writer
from offmaps.containers.mbtiles import MBTilesWriter, tms_row
from offmaps.errors import PackageError
from offmaps.offline.extract import extract_tiles
from offmaps.offline.updates import (
    ChainState,
    TileUpdateInfo,
    TileUpdateReader,
    UpdateLink,
    apply_tile_update,
    write_chain_state,
)
from offmaps.offline.updates.tiles import build_cover_tile_update
from offmaps.tiling import TileCover, get_tms, tile_cover
from offmaps.tiling.area import area_from_bbox
from offmaps.types import BBox, Tile, TileFormat, ZoomRange
from tests.server.test_areas_updates import (
    _download,
    _href,
    _packaged,
    _services,
    _tiles,
    _use_basemap,
)
from tests.serverkit import Server
from tests.tilegen import make_tile

SOURCE = (24.85, 60.0, 25.05, 60.2)  # the archive's tiles: wider than the area
LEVELS = (10, 11, 12, 13, 14)
AREA_BBOX = (24.895, 60.05, 24.995, 60.15)
TRIANGLE = Polygon([(24.895, 60.05), (24.995, 60.05), (24.895, 60.15)])
SHAPES: dict[str, tuple[dict[str, Any], Polygon]] = {
    "bbox": ({"bbox": list(AREA_BBOX)}, box(*AREA_BBOX)),
    "polygon": (
        {
            "area": {
                "geometry": {"type": "Polygon", "coordinates": [list(TRIANGLE.exterior.coords)]}
            }
        },
        TRIANGLE,
    ),
}

CHAIN_STATE = "offmaps_sync_state"  # the table a device records its chain in

Key = tuple[int, int, int]  # zoom_level, tile_column, tile_row as MBTiles keeps them


def _key(tile: Tile) -> Key:
    return tile.z, tile.x, tms_row(tile.y, tile.z)


def _centre_in(tile: Tile, shape: Polygon) -> bool:
    """Whether a tile's centre is in ``shape``: then its interior meets it, so it is in the
    area's cover."""
    bounds = get_tms("WebMercatorQuad").bounds(morecantile.Tile(tile.x, tile.y, tile.z))
    return bool(shape.contains(box(*bounds).centroid))


def _source(server: Server, shape: Polygon) -> tuple[Path, list[Tile], list[Tile]]:
    """A raster tile layer ``basemap`` (levels 10-14 over SOURCE) added to the public map, and
    the tiles it lacks for now, inside the area and outside it."""
    tms = get_tms("WebMercatorQuad")
    path = server.data_dir / "tiles" / "basemap.mbtiles"
    tiles = [Tile(t.x, t.y, t.z) for t in tms.tiles(*SOURCE, list(LEVELS))]
    inside = [t for t in tiles if t.z == 14 and _centre_in(t, shape)]
    outside = [t for t in tiles if t.z == 14 and not _centre_in(t, shape.buffer(0.02))]
    missing_inside, missing_outside = inside[::7][:4], outside[:2]
    metadata = TilesetMetadata(
        tile_format=TileFormat.PNG, tms=tms, name="basemap", minzoom=LEVELS[0],
        maxzoom=LEVELS[-1], bounds=BBox(*SOURCE), attribution="test tiles",
    )  # fmt: skip
    with open_writer(str(path), metadata) as writer:
        for tile in tiles:
            if tile not in missing_inside and tile not in missing_outside:
                writer.write_tile(tile, make_tile(tile, TileFormat.PNG))
    server.catalog._load_tile_sources()
    _use_basemap(server, "basemap")
    return path, missing_inside, missing_outside


def _area(server: Server, where: dict[str, Any]) -> dict[str, Any]:
    answer = server.client.post(
        _href(server), json={"title": "North", **where}, headers=server.token("editor")
    )
    assert answer.status_code == 201, answer.text
    return _packaged(server, answer.json())


def _refresh(server: Server, area: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Refresh an area; the area once packaged and its job's result."""
    href = f"{_href(server, area['id'])}/refresh"
    done = _packaged(server, server.client.post(href, headers=server.token("editor")).json())
    job = _services(server).jobs.get(done["job_id"])
    assert job.result is not None
    return done, job.result


def _repackage(server: Server, area: dict[str, Any], where: dict[str, Any]) -> dict[str, Any]:
    """The same extent again: a new epoch, extracted from scratch."""
    href = _href(server, area["id"])
    done = _packaged(
        server, server.client.patch(href, json=where, headers=server.token("editor")).json()
    )
    job = _services(server).jobs.get(done["job_id"])
    assert job.result is not None
    assert job.result["incremental"] is False
    return done


def _archive(server: Server, area: dict[str, Any], folder: Path) -> Path:
    entry = next(e for e in area["package"]["files"] if e["path"] == "basemap.mbtiles")
    return _download(server, entry, folder)


def _files(area: dict[str, Any]) -> dict[str, str]:
    """The SHA-256 of each file of an area's newest package."""
    return {entry["path"]: entry["sha256"] for entry in area["package"]["files"]}


def _tile_update(area: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(u for u in area["package"]["updates"] if u["kind"] == "tiles")
    return found


def _metadata(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT name, value FROM metadata"))


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def _redraw(conn: sqlite3.Connection, tile: Tile) -> None:
    conn.execute(
        "UPDATE tiles SET tile_data = ? WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
        (make_tile(tile, TileFormat.PNG, size=32), *_key(tile)),
    )


def _delete(conn: sqlite3.Connection, keys: list[Key]) -> None:
    conn.executemany(
        "DELETE FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?", keys
    )


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_refresh_after_the_tiles_changed_applies_only_them_and_equals_a_fresh_extraction(
    server: Server, tmp_path: Path, shape: str
) -> None:
    where, geometry = SHAPES[shape]
    source, missing_inside, missing_outside = _source(server, geometry)
    area = _area(server, where)
    first = _archive(server, area, tmp_path / "p1")
    before = _tiles(first)
    (low_column,) = (
        sqlite3.connect(first)
        .execute("SELECT min(tile_column) FROM tiles WHERE zoom_level = 14")
        .fetchone()
    )

    inside = [Tile(x, tms_row(row, z), z) for z, x, row in sorted(before)]
    redrawn = [inside[0], inside[len(inside) // 2], inside[-1]]
    # a whole column of the highest level gone: the archive's bounds change
    gone = [_key(inside[1]), _key(inside[-2])]
    gone += [k for k in before if k[0] == 14 and k[1] == low_column and k not in gone]
    with sqlite3.connect(source) as conn:
        for tile in redrawn:
            _redraw(conn, tile)
        _redraw(conn, Tile(*get_tms("WebMercatorQuad").tile(25.04, 60.19, 14)))  # outside
        _delete(conn, gone)
        for tile in [*missing_inside, *missing_outside, Tile(0, 0, 15)]:  # added, in and out
            conn.execute(
                "INSERT INTO tiles VALUES (?, ?, ?, ?)",
                (*_key(tile), make_tile(tile, TileFormat.PNG)),
            )

    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    new = _archive(server, refreshed, tmp_path / "p2")
    assert CHAIN_STATE not in _tables(new)  # as served: a device records its own
    repackaged = _repackage(server, area, where)
    fresh = _archive(server, repackaged, tmp_path / "fresh")
    after = _tiles(fresh)
    assert _tiles(new) == after
    assert _metadata(new) == _metadata(fresh)
    assert _metadata(new)["bounds"] != _metadata(first)["bounds"]
    # the thumbnail is the archive's tile over the area's centre, redrawn: taken again
    thumbnails = [_files(found)["thumbnail.png"] for found in (area, refreshed, repackaged)]
    assert thumbnails[0] != thumbnails[1] == thumbnails[2]
    assert {_key(t) for t in missing_inside} <= set(after)
    assert not {_key(t) for t in missing_outside} & set(after)
    assert (15, 0, tms_row(0, 15)) not in after

    # the update holds exactly the tiles that differ, and brings a device's copy to them
    update = _tile_update(refreshed)
    path = _download(server, update, tmp_path / "updates")
    with TileUpdateReader(path) as reader:
        written = {_key(tile): data for tile, data in reader.iter_tiles()}
        removed = {_key(tile) for tile in reader.iter_removed()}
    assert written == {k: v for k, v in after.items() if before.get(k) != v}
    assert removed == set(before) - set(after)
    assert {_key(t) for t in [*redrawn, *missing_inside]} - set(gone) <= set(written)
    assert removed == set(gone)
    device = tmp_path / "device.mbtiles"
    device.write_bytes(first.read_bytes())
    write_chain_state(device, ChainState(area["id"], 1, 1, update["previous_sha256"]))
    apply_tile_update(device, path, sha256=update["sha256"], size=update["size"])
    assert _tiles(device) == after


def test_a_refresh_with_the_tiles_unchanged_since_keeps_the_archive(
    server: Server, tmp_path: Path
) -> None:
    where, geometry = SHAPES["bbox"]
    source, _, _ = _source(server, geometry)
    area = _area(server, where)
    with sqlite3.connect(source) as conn:
        _delete(
            conn, [conn.execute("SELECT zoom_level, tile_column, tile_row FROM tiles").fetchone()]
        )
        _redraw(conn, Tile(*get_tms("WebMercatorQuad").tile(24.94, 60.1, 12)))
    changed, result = _refresh(server, area)
    assert result["incremental"] is True
    # the source's mark is recorded: the next refresh does no work for the archive
    same, result = _refresh(server, changed)
    assert result["incremental"] is True
    assert _files(changed)["basemap.mbtiles"] == _files(same)["basemap.mbtiles"]
    with TileUpdateReader(_download(server, _tile_update(same), tmp_path)) as reader:
        assert (list(reader.iter_tiles()), list(reader.iter_removed())) == ([], [])


def test_a_refresh_after_the_sources_tile_format_changed_extracts_again(
    server: Server, tmp_path: Path
) -> None:
    where, geometry = SHAPES["bbox"]
    source, _, _ = _source(server, geometry)
    area = _area(server, where)
    with sqlite3.connect(source) as conn:
        keys = conn.execute("SELECT zoom_level, tile_column, tile_row FROM tiles").fetchall()
        for z, x, row in keys:
            tile = Tile(x, tms_row(row, z), z)
            conn.execute(
                "UPDATE tiles SET tile_data = ? WHERE zoom_level = ? AND tile_column = ? "
                "AND tile_row = ?",
                (make_tile(tile, TileFormat.JPEG), z, x, row),
            )
        conn.execute("UPDATE metadata SET value = 'jpg' WHERE name = 'format'")
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is False
    new = _archive(server, refreshed, tmp_path / "p2")
    assert _metadata(new)["format"] == "jpg"
    fresh = _archive(server, _repackage(server, area, where), tmp_path / "fresh")
    assert _tiles(new) == _tiles(fresh)
    assert _metadata(new) == _metadata(fresh)


def test_tiles_still_in_the_sources_write_ahead_log_are_compared_too(
    server: Server, tmp_path: Path
) -> None:
    where, geometry = SHAPES["bbox"]
    source, missing_inside, _ = _source(server, geometry)
    with sqlite3.connect(source) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    area = _area(server, where)
    before = _tiles(_archive(server, area, tmp_path / "p1"))
    stat = source.stat()
    writer = sqlite3.connect(source, isolation_level=None)
    try:  # a writer that keeps its connection: its changes stay in the -wal file
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("BEGIN")
        _redraw(writer, Tile(*get_tms("WebMercatorQuad").tile(24.94, 60.1, 13)))
        _delete(writer, [max(before)])
        tile = missing_inside[0]
        writer.execute(
            "INSERT INTO tiles VALUES (?, ?, ?, ?)", (*_key(tile), make_tile(tile, TileFormat.PNG))
        )
        writer.execute("COMMIT")
        assert (source.stat().st_size, source.stat().st_mtime_ns) == (
            stat.st_size,
            stat.st_mtime_ns,
        )
        refreshed, result = _refresh(server, area)
        fresh = _archive(server, _repackage(server, area, where), tmp_path / "fresh")
    finally:
        writer.close()
    assert result["incremental"] is True
    after = _tiles(fresh)
    assert _tiles(_archive(server, refreshed, tmp_path / "p2")) == after
    assert max(before) not in after
    assert _key(tile) in after
    with TileUpdateReader(_download(server, _tile_update(refreshed), tmp_path)) as reader:
        assert len(list(reader.iter_tiles())) == 2
        assert [_key(t) for t in reader.iter_removed()] == [max(before)]


def _comparison_archives(tmp_path: Path, *, dedup: bool) -> tuple[Path, Path, TileCover]:
    """A source archive (levels 10-14 over SOURCE, some tiles redrawn), an archive extracted
    from it before the redraw, and the cover of the area they share."""
    tms = get_tms("WebMercatorQuad")
    aoi = area_from_bbox(*AREA_BBOX).aoi()
    cover = tile_cover(aoi, tms, ZoomRange(10, 14))
    metadata = TilesetMetadata(tile_format=TileFormat.PNG, tms=tms, name="source")
    source = tmp_path / "source.mbtiles"
    tiles = [Tile(t.x, t.y, t.z) for t in tms.tiles(*SOURCE, list(LEVELS))]
    with MBTilesWriter(source, metadata, dedup=dedup) as writer:
        for index, tile in enumerate(tiles):
            writer.write_tile(tile, make_tile(tile, TileFormat.PNG, size=32 + index % 2))
    previous = tmp_path / "previous.mbtiles"
    extract_tiles(source, previous, aoi, cover.zooms)
    (tmp_path / "source.mbtiles").unlink()
    with MBTilesWriter(source, metadata, dedup=dedup) as writer:
        for tile in tiles[::3]:  # two thirds gone, the rest redrawn or not
            writer.write_tile(tile, make_tile(tile, TileFormat.PNG, size=32))
    return source, previous, cover


@pytest.mark.parametrize("dedup", [False, True])
def test_the_comparison_gives_what_extract_tiles_gives(tmp_path: Path, dedup: bool) -> None:
    source, previous, cover = _comparison_archives(tmp_path, dedup=dedup)
    link = UpdateLink("a" * 32, "m", 1, 1, 2, f"base:{'0' * 64}")
    info = TileUpdateInfo(link, "basemap", "png")
    update, diff = build_cover_tile_update(tmp_path / "u.mbtiles", info, previous, source, cover)
    fresh = tmp_path / "fresh.mbtiles"
    extract_tiles(source, fresh, area_from_bbox(*AREA_BBOX).aoi(), cover.zooms)
    want, had = _tiles(fresh), _tiles(previous)
    assert {_key(t) for t in diff.changed} == {k for k, v in want.items() if had.get(k) != v}
    assert {_key(t) for t in diff.removed} == set(had) - set(want)
    assert diff.changed
    assert diff.removed
    write_chain_state(previous, ChainState("a" * 32, 1, 1, link.previous_sha256))
    apply_tile_update(previous, update.path, sha256=update.sha256)
    assert _tiles(previous) == want


def test_the_comparison_refuses_a_tile_of_the_cover_without_bytes(tmp_path: Path) -> None:
    source, previous, cover = _comparison_archives(tmp_path, dedup=False)
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE tiles SET tile_data = NULL WHERE zoom_level = 12")
    info = TileUpdateInfo(UpdateLink("a" * 32, "m", 1, 1, 2, f"base:{'0' * 64}"), "b", "png")
    with pytest.raises(PackageError, match="no tile data"):
        build_cover_tile_update(tmp_path / "u.mbtiles", info, previous, source, cover)
    assert not (tmp_path / "u.mbtiles").exists()
