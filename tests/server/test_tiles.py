"""Tile services and their routes: archives, upstream XYZ through the cache, functions; XYZ,
TileJSON, OGC API – Tiles; ETags; hostile keys and failing upstreams as problem documents."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import morecantile
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from offmaps import __version__
from offmaps.cache import (
    CacheDefinition,
    CacheSource,
    SourceKind,
    SQLiteTileIndex,
    TileCache,
    store_tiles,
)
from offmaps.containers.base import TilesetMetadata
from offmaps.containers.registry import open_writer
from offmaps.errors import (
    ContainerError,
    InvalidTileError,
    InvalidTokenError,
    InvalidZoomError,
    TileNotFoundError,
    UpstreamError,
)
from offmaps.server.fastpath import TileFastPath
from offmaps.server.problems import install_problem_handlers
from offmaps.server.rest.tiles import tiles_router
from offmaps.sources import (
    MAX_UPSTREAM_TILE_BYTES,
    ArchiveTileSource,
    FunctionTileSource,
    TileSource,
    TileSourceInfo,
    UpstreamTileSource,
)
from offmaps.storage import LocalBlobStore
from offmaps.types import BBox, Tile, TileCompression, TileFormat
from tests.serverkit import assert_problem
from tests.tilegen import make_tile, sample_tiles

PNG_TILES = sample_tiles(TileFormat.PNG, duplicate=False)
MVT_TILES = sample_tiles(TileFormat.MVT, TileCompression.GZIP, maxzoom=2, duplicate=False)
TEMPLATE = "https://tiles.example.org/{z}/{x}/{y}.png?key=s3cret"


def write_archive(path: Path, metadata: TilesetMetadata, tiles: dict[Tile, bytes]) -> Path:
    with open_writer(path, metadata) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return path


class Upstream:
    """A mock upstream tile server that counts requests; ``respond`` decides each answer."""

    def __init__(self) -> None:
        self.calls = 0
        self.user_agents: list[str] = []
        self.respond: Callable[[httpx.Request], httpx.Response] = self.tile

    @staticmethod
    def tile(request: httpx.Request) -> httpx.Response:
        z, x, y = (int(part) for part in request.url.path.removesuffix(".png").split("/")[1:])
        return httpx.Response(200, content=make_tile(Tile(x, y, z), TileFormat.PNG))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.user_agents.append(request.headers.get("user-agent", ""))
        return self.respond(request)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def sources(tmp_path: Path, upstream: Upstream) -> Iterator[dict[str, TileSource]]:
    basemap = write_archive(
        tmp_path / "basemap.mbtiles",
        TilesetMetadata(tile_format=TileFormat.PNG, name="Basemap", attribution="© OSM"),
        PNG_TILES,
    )
    buildings = write_archive(
        tmp_path / "buildings.pmtiles",
        TilesetMetadata(
            tile_format=TileFormat.MVT,
            tile_compression=TileCompression.GZIP,
            name="Buildings",
            vector_layers=[{"id": "points", "fields": {}}],
        ),
        MVT_TILES,
    )
    archives = {
        "basemap": ArchiveTileSource("basemap", basemap),
        "buildings": ArchiveTileSource("buildings", str(buildings)),
    }
    client = httpx.Client(transport=httpx.MockTransport(upstream))
    osm = UpstreamTileSource(
        "osm",
        TEMPLATE,
        tmp_path / "cache",
        tile_format=TileFormat.PNG,
        min_zoom=0,
        max_zoom=5,
        client=client,
    )
    yield {**archives, "osm": osm}
    for archive in archives.values():
        archive.close()
    osm.close()
    client.close()


def make_client(sources: dict[str, TileSource], **router_options: Any) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.state.tile_sources = sources
    app.include_router(tiles_router(**router_options))
    return TestClient(app)


@pytest.fixture
def client(sources: dict[str, TileSource]) -> TestClient:
    return make_client(sources)


# --- XYZ ------------------------------------------------------------------------------------


def test_an_mbtiles_tile_is_served_with_its_type_etag_and_cache_control(
    client: TestClient,
) -> None:
    response = client.get("/tiles/basemap/2/1/0")
    data = PNG_TILES[Tile(1, 0, 2)]
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response.headers["cache-control"] == "public, max-age=3600"


def test_the_extension_of_the_format_is_accepted_and_another_is_not(client: TestClient) -> None:
    assert client.get("/tiles/basemap/1/1/1.png").content == PNG_TILES[Tile(1, 1, 1)]
    assert_problem(client.get("/tiles/basemap/1/1/1.pbf"), 404)
    assert client.get("/tiles/buildings/1/1/1.mvt").status_code == 200


def test_a_gzipped_vector_tile_is_served_as_mvt_with_content_encoding(
    client: TestClient,
) -> None:
    response = client.get("/tiles/buildings/2/2/1.pbf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == gzip.decompress(MVT_TILES[Tile(2, 1, 2)])


@pytest.mark.parametrize("header", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_a_matching_if_none_match_gets_304_without_a_body(client: TestClient, header: str) -> None:
    etag = client.get("/tiles/basemap/0/0/0").headers["etag"]
    response = client.get(
        "/tiles/basemap/0/0/0", headers={"If-None-Match": header.format(etag=etag)}
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag


def test_a_stale_if_none_match_gets_the_tile(client: TestClient) -> None:
    response = client.get("/tiles/basemap/0/0/0", headers={"If-None-Match": '"stale"'})
    assert response.status_code == 200
    assert response.content == PNG_TILES[Tile(0, 0, 0)]


def test_a_missing_tile_or_level_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/tiles/basemap/3/7/7"), 404)
    body = assert_problem(client.get("/tiles/basemap/4/0/0"), 404)
    assert body["title"] == "TileNotFoundError"


def test_an_unknown_layer_is_a_404_problem_on_every_route(client: TestClient) -> None:
    for path in (
        "/tiles/nope/0/0/0",
        "/tiles/nope/tilejson.json",
        "/collections/nope/tiles",
        "/collections/nope/tiles/WebMercatorQuad",
        "/collections/nope/tiles/WebMercatorQuad/0/0/0",
    ):
        assert_problem(client.get(path), 404)


HOSTILE_KEYS = [
    "abc/0/0",
    "0/abc/0",
    "0/0/abc",
    "-1/0/0",
    "0/-1/0",
    "0/0/-1",
    f"{10**30}/0/0",
    f"0/{10**30}/0",
    "1.5/0/0",
    "1/2/0",
    "1/0/2",
    "3/8/0",
    "99/0/0",
    "0/0/0.png.png",
    "0/0/.png",
    "0/0/0%00",
    "%20/0/0",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_hostile_xyz_key_is_a_4xx_problem(client: TestClient, key: str) -> None:
    for name in ("basemap", "osm"):
        assert_problem(client.get(f"/tiles/{name}/{key}"), 400, 404)


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_hostile_ogc_key_is_a_4xx_problem(client: TestClient, key: str) -> None:
    z, x, y = key.split("/")
    response = client.get(f"/collections/basemap/tiles/WebMercatorQuad/{z}/{y}/{x}")
    assert_problem(response, 400, 404)


def test_a_key_outside_the_matrix_is_a_400_naming_the_range(client: TestClient) -> None:
    body = assert_problem(client.get("/tiles/basemap/1/2/0"), 400)
    assert body["title"] == "InvalidTileError"
    assert "2x2" in body["detail"]


def test_a_huge_level_is_refused_before_any_arithmetic(client: TestClient) -> None:
    body = assert_problem(client.get(f"/tiles/basemap/{10**30}/0/0"), 400)
    assert "level" in body["detail"]


# --- TileJSON -------------------------------------------------------------------------------


def test_tilejson_describes_a_raster_layer_with_absolute_tile_urls(client: TestClient) -> None:
    document = client.get("/tiles/basemap/tilejson.json").json()
    assert document["tilejson"] == "3.0.0"
    assert document["tiles"] == ["http://testserver/tiles/basemap/{z}/{x}/{y}.png"]
    assert (document["minzoom"], document["maxzoom"]) == (0, 3)
    assert document["attribution"] == "© OSM"
    assert document["name"] == "Basemap"
    west, south, east, north = document["bounds"]
    assert west == pytest.approx(-180)
    assert north == pytest.approx(85.0511287798066)
    assert east < 0 < south
    assert "vector_layers" not in document


def test_tilejson_of_a_vector_layer_lists_its_layers(client: TestClient) -> None:
    document = client.get("/tiles/buildings/tilejson.json").json()
    assert document["tiles"] == ["http://testserver/tiles/buildings/{z}/{x}/{y}.pbf"]
    assert document["vector_layers"] == [{"id": "points", "fields": {}}]


def test_tilejson_of_a_layer_without_bounds_covers_the_whole_matrix(client: TestClient) -> None:
    document = client.get("/tiles/osm/tilejson.json").json()
    assert document["bounds"] == pytest.approx([-180, -85.0511287798066, 180, 85.0511287798066])
    assert (document["minzoom"], document["maxzoom"]) == (0, 5)


# --- OGC API – Tiles ------------------------------------------------------------------------


def test_the_tileset_list_links_the_tileset_and_its_tiling_scheme(client: TestClient) -> None:
    document = client.get("/collections/basemap/tiles").json()
    (tileset,) = document["tilesets"]
    assert tileset["dataType"] == "map"
    assert tileset["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    hrefs = {link["rel"]: link["href"] for link in tileset["links"]}
    assert hrefs["self"] == "http://testserver/collections/basemap/tiles/WebMercatorQuad"
    tiling_scheme = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
    assert hrefs[tiling_scheme] == "http://testserver/tileMatrixSets/WebMercatorQuad"


def test_tileset_metadata_has_limits_per_level_from_the_bounds(client: TestClient) -> None:
    document = client.get("/collections/basemap/tiles/WebMercatorQuad").json()
    assert document["dataType"] == "map"
    assert document["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    limits = {
        entry["tileMatrix"]: (
            entry["minTileCol"],
            entry["maxTileCol"],
            entry["minTileRow"],
            entry["maxTileRow"],
        )
        for entry in document["tileMatrixSetLimits"]
    }
    assert limits == {"0": (0, 0, 0, 0), "1": (0, 0, 0, 0), "2": (0, 1, 0, 1), "3": (0, 2, 0, 2)}
    (item,) = [link for link in document["links"] if link["rel"] == "item"]
    assert item["templated"] is True
    assert item["type"] == "image/png"
    assert item["href"] == (
        "http://testserver/collections/basemap/tiles/WebMercatorQuad/"
        "{tileMatrix}/{tileRow}/{tileCol}"
    )


def test_tile_layers_say_whether_offline_maps_may_export_them(client: TestClient) -> None:
    for name, allowed, most in [("basemap", True, 100_000), ("osm", False, 10_000)]:
        tileset = client.get(f"/collections/{name}/tiles/WebMercatorQuad").json()
        tilejson = client.get(f"/tiles/{name}/tilejson.json").json()
        for document in (tileset, tilejson):
            assert document["exportTilesAllowed"] is allowed
            assert document["maxExportTileCount"] == most


def test_tileset_metadata_of_a_vector_layer_names_its_layers(client: TestClient) -> None:
    document = client.get("/collections/buildings/tiles/WebMercatorQuad").json()
    assert document["dataType"] == "vector"
    assert document["layers"] == [{"id": "points", "dataType": "vector"}]


def test_an_ogc_tile_is_the_same_tile_as_xyz_with_row_before_column(client: TestClient) -> None:
    response = client.get("/collections/basemap/tiles/WebMercatorQuad/3/1/2")
    assert response.status_code == 200
    assert response.content == PNG_TILES[Tile(2, 1, 3)]
    assert response.headers["etag"] == client.get("/tiles/basemap/3/2/1").headers["etag"]


def test_a_tiling_scheme_the_layer_is_not_in_is_a_404_problem(client: TestClient) -> None:
    for path in (
        "/collections/basemap/tiles/WorldCRS84Quad",
        "/collections/basemap/tiles/NoSuchTMS",
        "/collections/basemap/tiles/NoSuchTMS/0/0/0",
    ):
        body = assert_problem(client.get(path), 404)
        assert body["title"] == "UnknownTileMatrixSetError"


def test_tile_matrix_sets_are_listed_and_served_as_ogc_json(client: TestClient) -> None:
    listed = client.get("/tileMatrixSets").json()["tileMatrixSets"]
    entry = next(e for e in listed if e["id"] == "WebMercatorQuad")
    assert entry["links"][0]["href"] == "http://testserver/tileMatrixSets/WebMercatorQuad"
    document = client.get("/tileMatrixSets/WebMercatorQuad").json()
    assert document["id"] == "WebMercatorQuad"
    assert len(document["tileMatrices"]) == 25
    assert morecantile.TileMatrixSet.model_validate(document).id == "WebMercatorQuad"


def test_an_unknown_tile_matrix_set_is_a_404_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/tileMatrixSets/" + "x" * 5000), 404)
    assert body["tms_id"] == "x" * 64


# --- upstream -------------------------------------------------------------------------------


def test_an_upstream_tile_is_fetched_once_then_served_from_the_cache(
    client: TestClient, upstream: Upstream, tmp_path: Path
) -> None:
    first = client.get("/tiles/osm/3/4/2")
    second = client.get("/tiles/osm/3/4/2.png")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == make_tile(Tile(4, 2, 3), TileFormat.PNG)
    assert upstream.calls == 1
    assert upstream.user_agents == [f"offmaps/{__version__}"]
    assert (tmp_path / "cache" / "osm.cache.sqlite").is_file()


def test_the_upstream_cache_outlives_its_source(tmp_path: Path, upstream: Upstream) -> None:
    with httpx.Client(transport=httpx.MockTransport(upstream)) as http:
        for _ in range(2):
            source = UpstreamTileSource(
                "osm",
                TEMPLATE,
                tmp_path,
                tile_format=TileFormat.PNG,
                min_zoom=0,
                max_zoom=5,
                client=http,
            )
            assert source.get_tile(Tile(1, 1, 1)) == make_tile(Tile(1, 1, 1), TileFormat.PNG)
            assert source.cached_tile_count == 1
            source.close()
    assert upstream.calls == 1


def test_levels_outside_the_upstream_range_are_not_fetched(
    client: TestClient, upstream: Upstream
) -> None:
    assert_problem(client.get("/tiles/osm/6/0/0"), 404)
    assert upstream.calls == 0


def test_an_upstream_404_is_a_404_and_is_not_cached(client: TestClient, upstream: Upstream) -> None:
    upstream.respond = lambda request: httpx.Response(404)
    assert_problem(client.get("/tiles/osm/1/0/0"), 404)
    assert_problem(client.get("/tiles/osm/1/0/0"), 404)
    assert upstream.calls == 2


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("upstream too slow", request=request)


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _oversize_streamed(request: httpx.Request) -> httpx.Response:
    chunk = b"\x89PNG\r\n\x1a\n" + bytes(1024 * 1024)
    return httpx.Response(200, content=iter([chunk] * 5))


UPSTREAM_FAILURES: dict[str, Callable[[httpx.Request], httpx.Response]] = {
    "server error": lambda request: httpx.Response(500, content=b"boom"),
    "bad gateway": lambda request: httpx.Response(503),
    "forbidden": lambda request: httpx.Response(403),
    "timeout": _timeout,
    "connection refused": _refused,
    "jpeg for png": lambda request: httpx.Response(
        200, content=make_tile(Tile(0, 0, 0), TileFormat.JPEG)
    ),
    "html page": lambda request: httpx.Response(200, content=b"<html>rate limited</html>"),
    "empty body": lambda request: httpx.Response(200, content=b""),
    "oversize": lambda request: httpx.Response(
        200, content=b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPSTREAM_TILE_BYTES)
    ),
    "oversize streamed": _oversize_streamed,
}


@pytest.mark.parametrize("failure", list(UPSTREAM_FAILURES))
def test_an_upstream_failure_is_a_502_problem_and_nothing_is_cached(
    client: TestClient, upstream: Upstream, failure: str
) -> None:
    upstream.respond = UPSTREAM_FAILURES[failure]
    body = assert_problem(client.get("/tiles/osm/2/1/1"), 502)
    assert body["title"] == "UpstreamError"
    assert "s3cret" not in body["detail"]
    upstream.respond = Upstream.tile
    assert client.get("/tiles/osm/2/1/1").status_code == 200
    assert upstream.calls == 2


def test_a_gzipped_upstream_vector_tile_is_cached_uncompressed(
    tmp_path: Path, upstream: Upstream
) -> None:
    raw = make_tile(Tile(0, 0, 0), TileFormat.MVT)
    upstream.respond = lambda request: httpx.Response(200, content=gzip.compress(raw))
    with httpx.Client(transport=httpx.MockTransport(upstream)) as http:
        source = UpstreamTileSource(
            "vector",
            "http://tiles.example.org/{z}/{x}/{y}.pbf",
            tmp_path,
            tile_format=TileFormat.MVT,
            min_zoom=0,
            max_zoom=14,
            client=http,
        )
        try:
            assert source.get_tile(Tile(0, 0, 0)) == raw
            upstream.respond = lambda request: httpx.Response(200, content=b"<html></html>")
            with pytest.raises(UpstreamError):
                source.get_tile(Tile(1, 0, 1))
        finally:
            source.close()


@pytest.mark.parametrize(
    ("name", "template"),
    [
        ("osm", "ftp://tiles.example.org/{z}/{x}/{y}.png"),
        ("osm", "file:///etc/{z}/{x}/{y}"),
        ("osm", "https:///{z}/{x}/{y}.png"),
        ("osm", "https://tiles.example.org/{z}/{x}.png"),
        ("../escape", "https://tiles.example.org/{z}/{x}/{y}.png"),
        ("", "https://tiles.example.org/{z}/{x}/{y}.png"),
    ],
)
def test_an_unusable_upstream_name_or_template_is_refused(
    tmp_path: Path, name: str, template: str
) -> None:
    with pytest.raises(ContainerError):
        UpstreamTileSource(
            name, template, tmp_path, tile_format=TileFormat.PNG, min_zoom=0, max_zoom=5
        )
    assert list(tmp_path.iterdir()) == []


# --- functions, sources, router options ------------------------------------------------------


def vector_info(**changes: Any) -> TileSourceInfo:
    values: dict[str, Any] = {
        "name": "made",
        "title": "Made on the fly",
        "tms_id": "WebMercatorQuad",
        "tile_format": TileFormat.MVT,
        "min_zoom": 0,
        "max_zoom": 14,
        "vector_layers": ["points"],
    }
    return TileSourceInfo(**(values | changes))


def test_a_function_source_is_called_once_per_tile_with_a_memory_cache() -> None:
    calls: list[Tile] = []

    def build(tile: Tile) -> bytes:
        calls.append(tile)
        return make_tile(tile, TileFormat.MVT)

    source = FunctionTileSource(vector_info(), build, cache_bytes=1024 * 1024)
    client = make_client({"made": source})
    for _ in range(3):
        response = client.get("/tiles/made/5/3/4.pbf")
        assert response.content == make_tile(Tile(3, 4, 5), TileFormat.MVT)
        assert "content-encoding" not in response.headers
    assert calls == [Tile(3, 4, 5)]


def test_a_function_source_without_cache_is_called_every_time() -> None:
    calls: list[Tile] = []

    def build(tile: Tile) -> bytes:
        calls.append(tile)
        if tile.z > 2:
            raise TileNotFoundError("nothing here")
        return make_tile(tile, TileFormat.MVT)

    source = FunctionTileSource(vector_info(), build)
    assert source.get_tile(Tile(0, 0, 0)) == source.get_tile(Tile(0, 0, 0))
    with pytest.raises(TileNotFoundError):
        source.get_tile(Tile(0, 0, 3))
    with pytest.raises(InvalidTileError):
        source.get_tile(Tile(4, 0, 2))
    with pytest.raises(TileNotFoundError):
        source.get_tile(Tile(0, 0, 15))
    assert calls == [Tile(0, 0, 0), Tile(0, 0, 0), Tile(0, 0, 3)]


def test_tileset_limits_follow_bounds_that_end_on_tile_edges() -> None:
    edge = morecantile.tms.get("WebMercatorQuad").bounds(morecantile.Tile(1, 1, 2))
    info = vector_info(max_zoom=3, bounds=BBox(edge.left, edge.bottom, edge.right, edge.top))
    source = FunctionTileSource(info, lambda tile: b"")
    document = make_client({"made": source}).get("/collections/made/tiles/WebMercatorQuad").json()
    limits = [
        (e["minTileCol"], e["maxTileCol"], e["minTileRow"], e["maxTileRow"])
        for e in document["tileMatrixSetLimits"]
    ]
    assert limits == [(0, 0, 0, 0), (0, 0, 0, 0), (1, 1, 1, 1), (2, 3, 2, 3)]


def test_an_inverted_zoom_range_is_refused() -> None:
    with pytest.raises(InvalidZoomError):
        vector_info(min_zoom=5, max_zoom=4)
    assert vector_info(vector_layers=["a", "b"]).vector_layers == ("a", "b")


def test_layers_added_after_the_router_is_built_are_served() -> None:
    sources: dict[str, TileSource] = {}
    client = make_client(sources)
    assert_problem(client.get("/tiles/made/0/0/0"), 404)
    sources["made"] = FunctionTileSource(vector_info(), lambda tile: b"\x1a\x00")
    assert client.get("/tiles/made/0/0/0").content == b"\x1a\x00"


def test_router_dependencies_guard_every_route(sources: dict[str, TileSource]) -> None:
    def deny() -> None:
        raise InvalidTokenError("no token")

    client = make_client(sources, dependencies=[Depends(deny)])
    for path in (
        "/tiles/basemap/0/0/0",
        "/tiles/basemap/tilejson.json",
        "/collections/basemap/tiles",
        "/collections/basemap/tiles/WebMercatorQuad",
        "/collections/basemap/tiles/WebMercatorQuad/0/0/0",
        "/tileMatrixSets",
        "/tileMatrixSets/WebMercatorQuad",
    ):
        assert_problem(client.get(path), 401)


def test_an_archive_source_serves_concurrent_requests_correctly(
    sources: dict[str, TileSource],
) -> None:
    basemap = sources["basemap"]
    tiles = list(PNG_TILES) * 10

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(basemap.get_tile, tiles))
    assert found == [PNG_TILES[tile] for tile in tiles]


def test_an_archive_source_reads_its_metadata(sources: dict[str, TileSource]) -> None:
    info = sources["buildings"].info
    assert info.tile_format is TileFormat.MVT
    assert info.tile_compression is TileCompression.GZIP
    assert (info.min_zoom, info.max_zoom) == (0, 2)
    assert info.vector_layers == ("points",)
    assert info.tms_id == "WebMercatorQuad"
    assert isinstance(sources["basemap"], TileSource)


def test_a_missing_archive_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerError):
        ArchiveTileSource("gone", tmp_path / "gone.mbtiles")


def test_a_layer_in_another_tiling_scheme_has_ogc_metadata_but_no_tilejson() -> None:
    source = FunctionTileSource(
        vector_info(tms_id="WorldCRS84Quad", max_zoom=1), lambda tile: b"\x1a\x00"
    )
    client = make_client({"geo": source})
    assert_problem(client.get("/tiles/geo/tilejson.json"), 400)
    document = client.get("/collections/geo/tiles/WorldCRS84Quad").json()
    assert document["crs"] == "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    assert document["tileMatrixSetLimits"][0] == {
        "tileMatrix": "0",
        "minTileRow": 0,
        "maxTileRow": 0,
        "minTileCol": 0,
        "maxTileCol": 1,
    }
    assert client.get("/collections/geo/tiles/WorldCRS84Quad/0/0/1").content == b"\x1a\x00"
    assert_problem(client.get("/tiles/geo/0/2/0"), 400)


# --- the ASGI fast path ----------------------------------------------------------------------


class CountingApp:
    """An ASGI app that counts the requests reaching it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


PUBLIC = frozenset({"basemap", "buildings", "osm"})


def _compare(fast: TestClient, plain: TestClient, method: str, url: str, **kw: Any) -> None:
    a, b = fast.request(method, url, **kw), plain.request(method, url, **kw)
    assert (a.status_code, a.content) == (b.status_code, b.content), url
    for header in ("content-type", "etag", "cache-control", "content-encoding", "content-length"):
        assert a.headers.get(header) == b.headers.get(header), (url, header)


def test_the_fast_path_answers_archive_tiles_exactly_like_the_route(
    sources: dict[str, TileSource],
) -> None:
    plain = make_client(sources)
    behind = CountingApp(plain.app)
    fast = TestClient(TileFastPath(behind, sources, public=lambda: PUBLIC))
    png = next(iter(PNG_TILES))
    mvt = next(iter(MVT_TILES))
    etag = plain.get(f"/tiles/basemap/{png.z}/{png.x}/{png.y}").headers["etag"]
    for method, url, headers in [
        ("GET", f"/tiles/basemap/{png.z}/{png.x}/{png.y}", {}),
        ("GET", f"/tiles/basemap/{png.z}/{png.x}/{png.y}.png", {}),
        ("GET", f"/tiles/basemap/{png.z}/{png.x}/{png.y}", {"If-None-Match": etag}),
        ("GET", f"/tiles/buildings/{mvt.z}/{mvt.x}/{mvt.y}.pbf", {}),
    ]:
        _compare(fast, plain, method, url, headers=headers)
    assert behind.calls == 0


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/tiles/basemap/20/0/0"),  # not in the archive
        ("GET", "/tiles/basemap/0/5/5"),  # outside the matrix
        ("GET", "/tiles/basemap/0/0/0.pbf"),  # wrong extension
        ("GET", "/tiles/basemap/0/0/0.png.png"),
        ("GET", "/tiles/basemap/999/0/0"),
        ("GET", "/tiles/nope/0/0/0"),
        ("GET", "/tiles/osm/1/0/0"),  # upstream: belongs in the thread pool
        ("GET", "/tiles/basemap/tilejson.json"),
        ("POST", "/tiles/basemap/0/0/0"),
        ("HEAD", "/tiles/basemap/0/0/0"),
        ("GET", "/tiles/basemap/-1/0/0"),
        ("GET", "/tiles/private/0/0/0"),  # not public: the route checks access
    ],
)
def test_everything_else_goes_to_the_application(
    sources: dict[str, TileSource], method: str, url: str
) -> None:
    sources = {**sources, "private": sources["basemap"]}
    plain = make_client(sources)
    behind = CountingApp(plain.app)
    fast = TestClient(TileFastPath(behind, sources, public=lambda: PUBLIC))
    _compare(fast, plain, method, url)
    assert behind.calls == 1


def test_requests_with_a_token_go_to_the_application(sources: dict[str, TileSource]) -> None:
    plain = make_client(sources)
    behind = CountingApp(plain.app)
    fast = TestClient(TileFastPath(behind, sources, public=lambda: PUBLIC))
    _compare(fast, plain, "GET", "/tiles/basemap/0/0/0", headers={"Authorization": "Bearer x"})
    assert behind.calls == 1


# --- the fast path and tile caches ------------------------------------------------------------


class CachedFetch:
    """The source of a tile cache: PNG_TILES, counting the fetches."""

    def __init__(self) -> None:
        self.fetches = 0

    def __call__(self, tile: Tile) -> bytes:
        self.fetches += 1
        if tile not in PNG_TILES:
            raise TileNotFoundError(f"no tile {tile}")
        return PNG_TILES[tile]


@pytest.fixture
def tile_cache(tmp_path: Path) -> Iterator[tuple[TileCache, CachedFetch, SQLiteTileIndex]]:
    """A tile cache ``cached`` of PNG_TILES holding one tile, 2/1/0; its source; its index."""
    index = SQLiteTileIndex(tmp_path / "index.sqlite")
    definition = CacheDefinition(
        name="cached",
        source=CacheSource(kind=SourceKind.XYZ, location="https://tiles.test/{z}/{x}/{y}.png"),
        max_zoom=2,
        verify_reads=1.0,
    )
    index.create_cache(definition)
    blobs = LocalBlobStore(tmp_path / "blobs")
    store_tiles(index, blobs, "cached", [(Tile(1, 0, 2), PNG_TILES[Tile(1, 0, 2)])])
    fetch = CachedFetch()
    yield TileCache(definition, index, blobs, fetch), fetch, index
    index.close()


def test_the_fast_path_answers_tiles_a_cache_holds_exactly_like_the_route(
    tile_cache: tuple[TileCache, CachedFetch, SQLiteTileIndex],
) -> None:
    cache, fetch, index = tile_cache
    sources: dict[str, TileSource] = {"cached": cache}
    plain = make_client(sources)
    behind = CountingApp(plain.app)
    fast = TestClient(TileFastPath(behind, sources, public=lambda: frozenset({"cached"})))
    etag = plain.get("/tiles/cached/2/1/0").headers["etag"]
    for headers in ({}, {"If-None-Match": etag}):
        _compare(fast, plain, "GET", "/tiles/cached/2/1/0", headers=headers)
        _compare(fast, plain, "GET", "/tiles/cached/2/1/0.png", headers=headers)
    assert behind.calls == 0
    assert fetch.fetches == 0
    cache.flush()
    assert index.stats("cached").hits == 9  # the fast path's 4, the route's 4 and the ETag


@pytest.mark.parametrize(
    "url",
    [
        "/tiles/cached/2/2/0",  # not held: fetched by the route, once
        "/tiles/cached/2/3/3",  # neither held nor upstream: the route's 404
        "/tiles/cached/5/0/0",  # beyond the cache's levels
        "/tiles/cached/2/1/0?redirect=presigned",  # a query: the route's
        "/tiles/cached/2/1/0.pbf",
    ],
)
def test_cache_misses_and_queries_go_to_the_route(
    tile_cache: tuple[TileCache, CachedFetch, SQLiteTileIndex], url: str
) -> None:
    cache, fetch, _ = tile_cache
    sources: dict[str, TileSource] = {"cached": cache}
    behind = CountingApp(make_client(sources).app)
    fast = TestClient(TileFastPath(behind, sources, public=lambda: frozenset({"cached"})))
    answer = fast.get(url, follow_redirects=False)
    assert behind.calls == 1
    assert fetch.fetches == (1 if url in ("/tiles/cached/2/2/0", "/tiles/cached/2/3/3") else 0)
    if url == "/tiles/cached/2/2/0":
        assert answer.content == PNG_TILES[Tile(2, 0, 2)]
