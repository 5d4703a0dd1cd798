"""Mixed caches (ArcGIS's MIXED format): PNG tiles where there is transparency, JPEG elsewhere.
Defined as ``"format": "mixed"``, each tile served with the media type of its bytes, seeded with
what the upstream gives (PNG or JPEG, nothing else), and merged into by imports as PNG where the
result is transparent and JPEG where it is opaque."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from PIL import Image
from pydantic import ValidationError

from offmaps.cache import (
    CacheDefinition,
    CacheSource,
    SourceKind,
    SQLiteTileIndex,
    TileCache,
    TileCacheService,
    store_tiles,
)
from offmaps.cache.export import CacheTileReader
from offmaps.cache.imports import import_tiles
from offmaps.containers import TilesetMetadata, open_reader
from offmaps.containers.base import detect_tile_format
from offmaps.errors import CacheError, UpstreamError
from offmaps.server.fastpath import TileFastPath
from offmaps.sources import TileSource
from offmaps.storage import MemoryBlobStore
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, TileFormat, ZoomRange
from tests.cache.test_import import HALF, SIZE, TILES, archive, overlay, png
from tests.server.test_tiles import make_client, write_archive
from tests.serverkit import Server, assert_problem

PNG_TILE, JPEG_TILE = Tile(0, 0, 1), Tile(1, 0, 1)


def jpeg(colour: tuple[int, int, int], size: int = SIZE) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "JPEG", quality=95)
    return out.getvalue()


def rgba(data: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).astype(np.uint8)


def mixed(name: str = "m", **fields: Any) -> CacheDefinition:
    source = {"kind": "xyz", "location": "https://tiles.test/{z}/{x}/{y}"}
    return CacheDefinition.model_validate(
        {"name": name, "source": source, "format": "mixed", **fields}
    )


def kind(data: bytes) -> TileFormat:
    return detect_tile_format(data)[0]


# --- the model ----------------------------------------------------------------------------


def test_format_mixed_is_png_and_jpeg_tiles_and_survives_the_index(tmp_path: Path) -> None:
    definition = mixed()
    assert (definition.format, definition.mixed, definition.format_name) == (
        TileFormat.PNG,
        True,
        "mixed",
    )
    assert definition.tile_formats == {TileFormat.PNG, TileFormat.JPEG}
    assert definition.model_dump(mode="json")["format"] == "mixed"
    assert CacheDefinition.model_validate_json(definition.model_dump_json()) == definition
    index = SQLiteTileIndex(tmp_path / "index.sqlite")
    index.create_cache(definition)
    assert index.definition("m") == definition
    index.close()
    plain = CacheDefinition.model_validate(
        {**definition.model_dump(), "format": "png", "mixed": False}
    )
    assert (plain.tile_formats, plain.format_name) == (frozenset({TileFormat.PNG}), "png")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"format": "jpg", "mixed": True}, 'give format "mixed"'),
        ({"format": "pbf", "mixed": True}, 'give format "mixed"'),
        ({"format": "mixed", "mixed": False}, "mixed cannot be false"),
        ({"format": "MIXED"}, "format"),
    ],
)
def test_a_mixed_cache_of_another_format_is_refused(fields: dict[str, Any], message: str) -> None:
    source = {"kind": "xyz", "location": "https://tiles.test/{z}/{x}/{y}"}
    with pytest.raises(ValidationError, match=message):
        CacheDefinition.model_validate({"name": "m", "source": source, **fields})


# --- serving ------------------------------------------------------------------------------


@pytest.fixture
def held(tmp_path: Path) -> Iterator[TileCache]:
    """Mixed cache ``m`` holding a PNG tile and a JPEG tile, fetching nothing."""
    index = SQLiteTileIndex(tmp_path / "index.sqlite")
    index.create_cache(mixed(max_zoom=2))
    blobs = MemoryBlobStore()
    store_tiles(
        index,
        blobs,
        "m",
        [(PNG_TILE, overlay(slice(0, 8), (255, 0, 0))), (JPEG_TILE, jpeg((0, 0, 255)))],
    )
    yield TileCache(index.definition("m"), index, blobs, None)
    index.close()


def test_the_tile_route_serves_each_tile_of_a_mixed_cache_as_its_bytes(held: TileCache) -> None:
    client = make_client({"m": held})
    for tile, media_type in ((PNG_TILE, "image/png"), (JPEG_TILE, "image/jpeg")):
        answer = client.get(f"/tiles/m/{tile.z}/{tile.x}/{tile.y}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == media_type
        assert kind(answer.content).media_type == media_type


def test_the_fast_path_serves_a_mixed_cache_jpeg_tile_as_jpeg(held: TileCache) -> None:
    sources: dict[str, TileSource] = {"m": held}
    fast = TestClient(
        TileFastPath(make_client(sources).app, sources, public=lambda: frozenset({"m"}))
    )
    answer = fast.get(f"/tiles/m/{JPEG_TILE.z}/{JPEG_TILE.x}/{JPEG_TILE.y}")
    assert answer.headers["content-type"] == "image/jpeg"


def test_a_mixed_cache_answers_urls_with_either_extension(held: TileCache) -> None:
    sources: dict[str, TileSource] = {"m": held}
    route = make_client(sources)
    fast = TestClient(TileFastPath(route.app, sources, public=lambda: frozenset({"m"})))
    for client in (route, fast):
        for extension in ("png", "jpg", "jpeg"):
            url = f"/tiles/m/{JPEG_TILE.z}/{JPEG_TILE.x}/{JPEG_TILE.y}.{extension}"
            answer = client.get(url)
            assert answer.status_code == 200, (extension, answer.text)
            assert answer.headers["content-type"] == "image/jpeg"
        assert (
            client.get(f"/tiles/m/{JPEG_TILE.z}/{JPEG_TILE.x}/{JPEG_TILE.y}.webp").status_code
            == 404
        )


def test_the_api_creates_a_mixed_cache_read_through_from_an_archive(
    server: Server, tmp_path: Path
) -> None:
    tiles = {PNG_TILE: overlay(slice(0, 8), (255, 0, 0)), JPEG_TILE: jpeg((0, 0, 255))}
    source = write_archive(
        tmp_path / "source.mbtiles",
        TilesetMetadata(tile_format=TileFormat.PNG, minzoom=0, maxzoom=1),
        tiles,
    )
    admin = server.token("admin")
    body = {
        "name": "m",
        "source": {"kind": "archive", "location": str(source)},
        "format": "mixed",
        "max_zoom": 1,
    }
    refused = server.client.post("/api/caches", json={**body, "mixed": False}, headers=admin)
    assert_problem(refused, 422)
    created = server.client.post("/api/caches", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert (created.json()["format"], created.json()["mixed"]) == ("mixed", True)
    listed = server.client.get("/api/caches", headers=admin).json()["caches"]
    assert [(c["name"], c["format"]) for c in listed] == [("m", "mixed")]
    for tile, data in tiles.items():
        for _ in range(2):  # read through, then from the cache
            answer = server.client.get(f"/tiles/m/{tile.z}/{tile.x}/{tile.y}", headers=admin)
            assert answer.status_code == 200, answer.text
            assert answer.content == data
            assert answer.headers["content-type"] == kind(data).media_type


# --- seeding ------------------------------------------------------------------------------


def test_a_mixed_cache_stores_png_and_jpeg_from_its_upstream_and_refuses_webp(
    tmp_path: Path,
) -> None:
    webp = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (9, 9, 9)).save(webp, "WEBP")
    answers = {
        PNG_TILE: overlay(slice(0, 8), (255, 0, 0)),
        JPEG_TILE: jpeg((0, 0, 255)),
        Tile(0, 1, 1): webp.getvalue(),
    }

    def upstream(request: httpx.Request) -> httpx.Response:
        z, x, y = (int(part) for part in request.url.path.strip("/").split("/"))
        data = answers.get(Tile(x, y, z))
        return httpx.Response(404) if data is None else httpx.Response(200, content=data)

    client = httpx.Client(transport=httpx.MockTransport(upstream))
    service = TileCacheService(
        SQLiteTileIndex(tmp_path / "index.sqlite"), MemoryBlobStore(), client=client
    )
    service.create(mixed(max_zoom=1, upstream={"retries": 0}))
    world = AreaOfInterest.from_bbox(-179, -85, 179, 85)
    done = service.seed("m", world, ZoomRange(1, 1))
    assert (done.fetched, done.missing, done.errors) == (2, 1, 1)
    cache = service.cache("m")
    assert kind(cache.get_tile(PNG_TILE)) is TileFormat.PNG
    assert kind(cache.get_tile(JPEG_TILE)) is TileFormat.JPEG
    with pytest.raises(UpstreamError, match="sent webp content, not png or jpg"):
        cache.get_tile(Tile(0, 1, 1))
    service.close()
    client.close()


# --- import -------------------------------------------------------------------------------


def new_mixed_cache(
    tmp_path: Path, tiles: dict[Tile, bytes]
) -> tuple[SQLiteTileIndex, MemoryBlobStore]:
    index, blobs = SQLiteTileIndex(tmp_path / "index.sqlite"), MemoryBlobStore()
    source = CacheSource(kind=SourceKind.ARCHIVE, location="x.mbtiles")
    index.create_cache(CacheDefinition(name="c", source=source, format=TileFormat.PNG, mixed=True))
    store_tiles(index, blobs, "c", list(tiles.items()))
    return index, blobs


def test_a_png_overlay_over_jpeg_tiles_is_jpeg_where_opaque_and_png_where_transparent(
    tmp_path: Path,
) -> None:
    basemap = {tile: jpeg((0, 0, 200)) for tile in TILES[:3]}
    index, blobs = new_mixed_cache(tmp_path, basemap)
    src = archive(
        tmp_path / "o.mbtiles", {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
    )
    result = run(index, blobs, src)
    assert (result.merged, result.new) == (3, 3)
    reader = CacheTileReader(index, blobs, "c")
    for tile in TILES:
        data = reader.get_tile(tile)
        got = rgba(data)
        if tile in basemap:  # composited over the basemap: opaque, so JPEG
            assert kind(data) is TileFormat.JPEG
            assert (abs(got[:6].astype(int) - (255, 0, 0, 255)) < 12).all()
            assert (abs(got[10:].astype(int) - (0, 0, 200, 255)) < 12).all()
        else:  # nothing under it: transparent, stored as given
            assert kind(data) is TileFormat.PNG
            assert (got[8:, :, 3] == 0).all()
    index.close()


def test_a_jpeg_source_clipped_into_a_mixed_cache_keeps_the_cache_outside_the_area(
    tmp_path: Path,
) -> None:
    cut = Tile(3, 2, 3)  # the area ends half way across column 3
    index, blobs = new_mixed_cache(tmp_path, {cut: png(np.full((SIZE, SIZE, 3), 200, np.uint8))})
    src = archive(
        tmp_path / "j.mbtiles",
        {cut: jpeg((0, 0, 255)), Tile(2, 2, 3): jpeg((0, 0, 255))},
        TilesetMetadata(TileFormat.JPEG),
    )
    aoi = AreaOfInterest.from_bbox(-HALF, -HALF, -HALF / 8, HALF, "EPSG:3857")
    result = run(index, blobs, src, aoi=aoi)
    assert (result.merged, result.new, result.clipped) == (1, 1, 1)
    reader = CacheTileReader(index, blobs, "c")
    inside = reader.get_tile(Tile(2, 2, 3))
    assert inside == jpeg((0, 0, 255))  # wholly inside: as given
    data = reader.get_tile(cut)
    assert kind(data) is TileFormat.JPEG  # composited, opaque
    got = rgba(data).astype(int)
    assert (abs(got[:, : SIZE // 2 - 2] - (0, 0, 255, 255)) < 12).all()
    assert (abs(got[:, SIZE // 2 + 2 :] - (200, 200, 200, 255)) < 12).all()  # the cache's
    index.close()


def test_a_mixed_cache_takes_png_and_jpeg_sources_only(tmp_path: Path) -> None:
    index, blobs = new_mixed_cache(tmp_path, {})
    tile = TILES[0]
    webp = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (9, 9, 9)).save(webp, "WEBP")
    src = archive(tmp_path / "w.mbtiles", {tile: webp.getvalue()}, TilesetMetadata(TileFormat.WEBP))
    with pytest.raises(CacheError, match="source's tiles are webp, cache 'c' holds mixed"):
        run(index, blobs, src)
    # a tile of neither format in a PNG source is listed, the rest imported
    bad = archive(
        tmp_path / "b.mbtiles",
        {tile: webp.getvalue(), TILES[1]: jpeg((1, 2, 3))},
        TilesetMetadata(TileFormat.PNG),
    )
    result = run(index, blobs, bad)
    assert [f.tile for f in result.failed] == [tile]
    assert result.new == 1
    index.close()


def run(index: SQLiteTileIndex, blobs: MemoryBlobStore, src: str, **options: Any) -> Any:
    with open_reader(src) as reader:
        return import_tiles(index, blobs, "c", reader, **options)


# --- export -------------------------------------------------------------------------------


def test_a_mixed_cache_exports_as_png_its_jpeg_tiles_the_same_pixels(tmp_path: Path) -> None:
    from offmaps.containers.export import export_tiles, plan_export  # noqa: PLC0415

    tiles = {TILES[0]: overlay(slice(0, 8), (255, 0, 0)), TILES[1]: jpeg((0, 0, 200))}
    index, blobs = new_mixed_cache(tmp_path, tiles)
    as_held = CacheTileReader(index, blobs, "c")
    assert kind(as_held.get_tile(TILES[1])) is TileFormat.JPEG  # imports merge what is held
    reader = CacheTileReader(index, blobs, "c", one_format=True)
    assert reader.metadata.tile_format is TileFormat.PNG
    out = tmp_path / "out.mbtiles"
    result = export_tiles(reader, str(out), plan_export(reader))
    assert (result.written, result.failures) == (2, 0)
    with open_reader(str(out)) as exported:
        got = dict(exported.iter_tiles())
    assert got[TILES[0]] == tiles[TILES[0]]  # a PNG tile byte for byte
    assert kind(got[TILES[1]]) is TileFormat.PNG
    assert (rgba(got[TILES[1]]) == rgba(tiles[TILES[1]])).all()  # the JPEG's own pixels
    index.close()
