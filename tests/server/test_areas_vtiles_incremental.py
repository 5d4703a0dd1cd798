"""A refresh of a preplanned area holding vector tiles made from a feature service (``city-vt``)
is incremental: only the tiles the changed rows can touch are made again, and the archive is
tile for tile what a fresh extraction gives (docs/preplanned.md, "Incremental refreshes")."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from shapely.geometry import LineString, Point

from offmaps.features import FieldType
from offmaps.features.model import (
    Delete,
    Feature,
    FeatureQuery,
    Field,
    GeometryType,
    Insert,
    LayerSchema,
    Update,
)
from offmaps.features.store import FeatureStore
from offmaps.offline.area_vtiles import VectorTilesRefresh, refresh_vector_tiles, vector_tiles_mark
from offmaps.offline.generate import export_tiles
from offmaps.offline.parameters import area_from_bbox
from offmaps.offline.plan import TileLayerPlan
from offmaps.offline.updates import (
    ChainState,
    TileUpdateInfo,
    TileUpdateReader,
    UpdateLink,
    apply_tile_update,
    write_chain_state,
)
from offmaps.sources import FeatureVectorTiles, vector
from offmaps.tiling import get_tms, tile_cover
from offmaps.types import Tile, ZoomRange
from tests.features.conftest import BACKENDS, open_backend
from tests.server.test_areas_updates import _download, _href, _packaged, _services, _tiles
from tests.serverkit import Server

AREA = {"bbox": [24.895, 60.05, 24.995, 60.15]}
LAYER = "sites-vt"
ARCHIVE = f"{LAYER}.mbtiles"

Key = tuple[int, int, int]  # zoom_level, tile_column, tile_row as MBTiles keeps them


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Tile]:
    """The tiles the vector tile services are asked for, in order (cleared at will)."""
    asked: list[Tile] = []
    get_tile = FeatureVectorTiles.get_tile

    def counted(self: FeatureVectorTiles, tile: Tile) -> bytes:
        asked.append(tile)
        return get_tile(self, tile)

    monkeypatch.setattr(FeatureVectorTiles, "get_tile", counted)
    return asked


def _store(server: Server) -> FeatureStore:
    return server.catalog.feature_service("city")


def _area(server: Server, where: dict[str, Any] = AREA) -> dict[str, Any]:
    """The public map gains the vector tiles of ``city`` (levels 11-15), then an area of it is
    packaged."""
    editor = server.token("editor")
    document = server.client.get(f"/api/maps/{server.public_map}").json()
    layer = {
        "type": "vector_tile", "id": LAYER, "title": "Sites as tiles", "service": "city-vt",
        "export_tiles_allowed": True, "min_scale": 300_000, "max_scale": 20_000,
    }  # fmt: skip
    document["operational_layers"].append(layer)
    response = server.client.put(f"/api/maps/{server.public_map}", json=document, headers=editor)
    assert response.status_code == 204, response.text
    answer = server.client.post(_href(server), json={"title": "North", **where}, headers=editor)
    assert answer.status_code == 201, answer.text
    return _packaged(server, answer.json())


def _refresh(server: Server, area: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Refresh an area; the area once packaged and its job's result."""
    href = f"{_href(server, area['id'])}/refresh"
    done = _packaged(server, server.client.post(href, headers=server.token("editor")).json())
    job = _services(server).jobs.get(done["job_id"])
    assert job.result is not None
    return done, job.result


def _fresh(server: Server, area: dict[str, Any], where: dict[str, Any] = AREA) -> dict[str, Any]:
    """The same extent again: a new epoch, extracted from scratch."""
    href = _href(server, area["id"])
    answer = server.client.patch(href, json=where, headers=server.token("editor"))
    done = _packaged(server, answer.json())
    job = _services(server).jobs.get(done["job_id"])
    assert job.result is not None
    assert job.result["incremental"] is False
    return done


def _archive(server: Server, area: dict[str, Any], folder: Path) -> Path:
    entry = next(e for e in area["package"]["files"] if e["path"] == ARCHIVE)
    return _download(server, entry, folder)


def _sha(area: dict[str, Any]) -> str:
    return str(next(e["sha256"] for e in area["package"]["files"] if e["path"] == ARCHIVE))


def _metadata(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT name, value FROM metadata"))


def _tile_update(
    server: Server, area: dict[str, Any], folder: Path
) -> tuple[dict[str, Any], dict[Key, bytes], set[Key]]:
    """The area's tile update of the vector tiles: its entry, its tiles and those it removes."""
    entry = next(u for u in area["package"]["updates"] if u["file"] == ARCHIVE)
    with TileUpdateReader(_download(server, entry, folder)) as reader:
        written = {_key(tile): data for tile, data in reader.iter_tiles()}
        removed = {_key(tile) for tile in reader.iter_removed()}
    return entry, written, removed


def _key(tile: Tile) -> Key:
    return tile.z, tile.x, (1 << tile.z) - 1 - tile.y


def _site(store: FeatureStore, osm_id: int) -> Feature:
    (found,) = store.query("sites", FeatureQuery(filters=(f"osm_id = {osm_id}",))).features
    return found


def _holding(tiles: dict[Key, bytes], global_id: UUID) -> set[Key]:
    return {key for key, data in tiles.items() if str(global_id).encode() in data}


def test_a_refresh_with_the_features_unchanged_writes_an_empty_tile_update(
    server: Server, tmp_path: Path, made: list[Tile]
) -> None:
    area = _area(server)
    assert made  # the extraction made the tiles
    made.clear()
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    assert made == []  # no tile work
    assert _sha(refreshed) == _sha(area)
    _, written, removed = _tile_update(server, refreshed, tmp_path)
    assert (written, removed) == ({}, set())


def test_an_edit_far_from_the_area_makes_no_tile_again(
    server: Server, tmp_path: Path, made: list[Tile]
) -> None:
    area = _area(server)
    _store(server).apply_edits([Insert("sites", {"name": "far", "osm_id": 90}, Point(10, 50))])
    made.clear()
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    assert made == []  # the feature service's generation moved, but no tile of the area
    assert _sha(refreshed) == _sha(area)
    _, written, removed = _tile_update(server, refreshed, tmp_path)
    assert (written, removed) == ({}, set())


def test_edits_make_only_their_tiles_again_and_equal_a_fresh_extraction(
    server: Server, tmp_path: Path, made: list[Tile]
) -> None:
    store = _store(server)
    area = _area(server)
    extracted = len(made)
    first = _archive(server, area, tmp_path / "p1")
    before = _tiles(first)
    moved, gone, renamed, away = (_site(store, i) for i in (2, 5, 7, 8))
    assert _holding(before, moved.global_id)
    assert _holding(before, gone.global_id)
    street = store.query("streets", FeatureQuery()).features[0]
    store.apply_edits(
        [
            Insert("sites", {"name": "new", "status": "ok", "osm_id": 91}, Point(24.96, 60.07)),
            Update(
                "sites", moved.global_id, set_geometry=True, geometry=Point(24.985, 60.145)
            ),  # far: both
            Delete("sites", gone.global_id),
            Update("sites", renamed.global_id, {"name": "renamed"}),
            Update(
                "sites", away.global_id, set_geometry=True, geometry=Point(10, 50)
            ),  # out of the area
            Update(
                "streets",
                street.global_id,
                set_geometry=True,
                geometry=LineString([(24.9, 60.06), (25, 60.06)]),
            ),
        ]
    )
    made.clear()
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    assert 0 < len(made) < extracted / 2  # only the tiles the changed rows touch
    new = _archive(server, refreshed, tmp_path / "p2")
    fresh = _archive(server, _fresh(server, area), tmp_path / "fresh")
    after = _tiles(fresh)
    assert _tiles(new) == after
    assert _metadata(new) == _metadata(fresh)
    assert "offmaps_sync_state" not in {
        name for (name,) in sqlite3.connect(new).execute("SELECT name FROM sqlite_master")
    }
    # the moved site left its tiles and reached others; the deleted one left its tiles
    moved_before, moved_after = _holding(before, moved.global_id), _holding(after, moved.global_id)
    assert moved_before - moved_after
    assert moved_after - moved_before
    assert not _holding(after, gone.global_id)
    assert not _holding(after, away.global_id)

    # the update holds exactly the tiles that differ, and brings a device's copy to them
    entry, written, removed = _tile_update(server, refreshed, tmp_path / "updates")
    assert written == {k: v for k, v in after.items() if before.get(k) != v}
    assert removed == set(before) - set(after)
    assert written
    assert removed  # a tile held only the deleted or moved rows
    device = tmp_path / "device.mbtiles"
    device.write_bytes(first.read_bytes())
    write_chain_state(device, ChainState(area["id"], 1, 1, entry["previous_sha256"]))
    path = tmp_path / "updates" / entry["path"]
    apply_tile_update(device, path, sha256=entry["sha256"], size=entry["size"])
    assert _tiles(device) == after


def test_a_tile_at_the_feature_cap_is_made_again_as_an_extraction_makes_it(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector, "MAX_FEATURES_PER_TILE", 4)  # a tile keeps its first 4 rows
    store = _store(server)
    store.apply_edits(
        [
            Insert("sites", {"name": f"dense {i}", "osm_id": 100 + i}, Point(24.95 + i / 1e4, 60.1))
            for i in range(8)
        ]
    )
    area = _area(server)
    first = _tiles(_archive(server, area, tmp_path / "p1"))
    dense = [_site(store, 100 + i) for i in range(8)]
    # two of a full tile's first rows go (one deleted, one moved), and one beyond the cap moves
    store.apply_edits(
        [
            Delete("sites", dense[0].global_id),
            Update("sites", dense[1].global_id, set_geometry=True, geometry=Point(24.93, 60.13)),
            Update("sites", dense[6].global_id, set_geometry=True, geometry=Point(24.97, 60.12)),
        ]
    )
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    new = _tiles(_archive(server, refreshed, tmp_path / "p2"))
    after = _tiles(_archive(server, _fresh(server, area), tmp_path / "fresh"))
    assert new == after != first
    # a tile holds a row beyond its cap before, once two of its first rows went
    assert _holding(after, dense[2].global_id) - _holding(first, dense[2].global_id)


def test_a_refresh_after_a_schema_changed_extracts_again(server: Server, tmp_path: Path) -> None:
    area = _area(server)
    store = _store(server)
    store.add_field("sites", Field("colour", FieldType.TEXT))
    store.apply_edits([Update("sites", _site(store, 3).global_id, {"colour": "red"})])
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is False  # the layers' schemas are part of the tiles' mark
    new = _tiles(_archive(server, refreshed, tmp_path / "p2"))
    assert new == _tiles(_archive(server, _fresh(server, area), tmp_path / "fresh"))
    assert any(b"colour" in data for data in new.values())


def test_a_changed_row_of_a_layer_in_another_crs_extracts_again(
    server: Server, tmp_path: Path
) -> None:
    store = _store(server)
    store.create_layer(
        LayerSchema("wells", (Field("name", FieldType.TEXT),), GeometryType.POINT, srid=3067)
    )
    store.apply_edits([Insert("wells", {"name": "well"}, Point(385_000, 6_670_000))])
    area = _area(server)
    (well,) = store.query("wells", FeatureQuery()).features
    same, result = _refresh(server, area)  # no row changed: nothing to be unsure of
    assert result["incremental"] is True
    store.apply_edits(
        [Update("wells", well.global_id, set_geometry=True, geometry=Point(386_000, 6_671_000))]
    )
    refreshed, result = _refresh(server, same)
    assert result["incremental"] is False  # its tiles are not found from a box in EPSG:3067
    new = _tiles(_archive(server, refreshed, tmp_path / "p2"))
    assert new == _tiles(_archive(server, _fresh(server, area), tmp_path / "fresh"))


def test_the_mark_follows_the_generation_the_schemas_and_the_encoder(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = server.catalog.tile_sources.get("city-vt")
    assert isinstance(source, FeatureVectorTiles)
    mark = vector_tiles_mark(source)
    assert mark is not None
    assert mark.startswith(f"vt:{_store(server).generation()}:")
    _store(server).apply_edits([Insert("sites", {"name": "far"}, Point(10, 50))])
    moved = vector_tiles_mark(source)
    assert moved is not None
    assert moved != mark
    assert moved.rsplit(":", 1)[-1] == mark.rsplit(":", 1)[-1]  # the same layers and encoder
    monkeypatch.setattr(vector, "MAX_FEATURES_PER_TILE", 10)
    capped = vector_tiles_mark(source)
    assert capped is not None
    assert capped.rsplit(":", 1)[-1] != moved.rsplit(":", 1)[-1]


def test_vector_tiles_of_a_store_of_another_kind_have_no_mark(server: Server) -> None:
    class Wrapped:  # reads rows in an order of its own, perhaps
        def __init__(self, store: FeatureStore) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

    source = FeatureVectorTiles("city-vt", cast(FeatureStore, Wrapped(_store(server))))
    assert source.info.vector_layers  # it still makes tiles
    assert vector_tiles_mark(source) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_tiles_made_again_bring_the_archive_to_a_fresh_extraction_on_both_stores(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector, "MAX_FEATURES_PER_TILE", 5)  # dense tiles keep their first 5
    rng = random.Random(18)
    store = open_backend(backend, tmp_path)
    try:
        store.create_layer(
            LayerSchema("spots", (Field("name", FieldType.TEXT),), GeometryType.POINT)
        )
        west, south, east, north = AREA["bbox"]

        def somewhere() -> Point:
            return Point(
                rng.uniform(west - 0.02, east + 0.02), rng.uniform(south - 0.02, north + 0.02)
            )

        store.apply_edits([Insert("spots", {"name": f"spot {i}"}, somewhere()) for i in range(300)])
        source = FeatureVectorTiles("spots-vt", store)
        plan = TileLayerPlan(
            "spots-vt",
            "spots-vt",
            "vector_tile",
            ZoomRange(11, 15),
            area_from_bbox(*AREA["bbox"]),
            10**6,
            False,
        )
        quiet = (lambda fraction, message: None, lambda: None)
        export_tiles(source, tmp_path / "before.mbtiles", plan, *quiet)
        before = vector_tiles_mark(source)
        rows = list(store.iter_features("spots"))
        picked = rng.sample(rows, 30)
        store.apply_edits(
            [
                Update("spots", f.global_id, set_geometry=True, geometry=somewhere())
                for f in picked[:10]
            ]
            + [Update("spots", f.global_id, {"name": "renamed"}) for f in picked[10:20]]
            + [Delete("spots", f.global_id) for f in picked[20:]]
            + [Insert("spots", {"name": "new"}, somewhere()) for _ in range(10)]
        )
        link = UpdateLink(uuid4().hex, uuid4().hex, 1, 1, 2, "base:" + "0" * 64)
        done = refresh_vector_tiles(
            source,
            plan,
            before=before,
            after=vector_tiles_mark(source),
            archive=tmp_path / "before.mbtiles",
            update=tmp_path / "update.mbtiles",
            info=TileUpdateInfo(link, "spots-vt", "pbf"),
            check_cancelled=lambda: None,
        )
        assert isinstance(done, VectorTilesRefresh)
        export_tiles(source, tmp_path / "fresh.mbtiles", plan, *quiet)
        tiles, fresh = _tiles(tmp_path / "before.mbtiles"), _tiles(tmp_path / "fresh.mbtiles")
        with TileUpdateReader(done.update.path) as reader:
            tiles.update({_key(tile): data for tile, data in reader.iter_tiles()})
            for tile in reader.iter_removed():
                del tiles[_key(tile)]
        assert tiles == fresh
        cover = tile_cover(plan.area.aoi(), get_tms("WebMercatorQuad"), plan.zooms)
        assert 0 < done.made < cover.total
    finally:
        drop = getattr(store, "drop", None)
        if drop is not None:
            drop()
        store.close()


def test_a_pmtiles_archive_of_vector_tiles_is_refreshed_byte_for_byte(
    server: Server, tmp_path: Path, made: list[Tile]
) -> None:
    store = _store(server)
    area = _area(server, {**AREA, "tile_format": "pmtiles"})
    extracted = len(made)
    moved, gone = _site(store, 2), _site(store, 5)
    store.apply_edits(
        [
            Update("sites", moved.global_id, set_geometry=True, geometry=Point(24.985, 60.145)),
            Delete("sites", gone.global_id),
            Insert("sites", {"name": "new", "osm_id": 91}, Point(24.96, 60.07)),
        ]
    )
    made.clear()
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    assert 0 < len(made) < extracted / 2
    name = f"{LAYER}.pmtiles"
    new = {e["path"]: e["sha256"] for e in refreshed["package"]["files"]}[name]
    fresh = _fresh(server, area, {**AREA, "tile_format": "pmtiles"})
    assert new == {e["path"]: e["sha256"] for e in fresh["package"]["files"]}[name]
    assert new != {e["path"]: e["sha256"] for e in area["package"]["files"]}[name]
