"""``exportCache`` and ``importCache`` through a real GraphQL client (gql over HTTP): the same
jobs, checks and refusals as ``POST /api/caches/{name}/export|import``."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from gql import Client

from offmaps.cache import CacheDefinition, CacheSource, SourceKind, store_tiles
from offmaps.cache.export import CacheTileReader
from offmaps.containers import TilesetMetadata, open_writer
from offmaps.types import Tile, TileFormat
from tests.server.test_graphql import _errors, _run, _services, _token, cacher, clients
from tests.serverkit import PASSWORD, LiveServer
from tests.tilegen import make_tile

__all__ = ["cacher", "clients"]  # the fixtures, used by name

TILES = {
    Tile(x, y, 2): make_tile(Tile(x, y, 2), TileFormat.PNG, size=256)
    for x in range(4)
    for y in range(4)
}
NORTH = {
    "type": "Polygon",
    "coordinates": [[[-170, 10], [170, 10], [170, 80], [-170, 80], [-170, 10]]],
}
JOB = "query Job($id: String!) { job(id: $id) { status error result } }"


def finished(client: Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = _run(client, JOB, {"id": job_id})["job"]
        if job["status"] in {"SUCCEEDED", "FAILED", "CANCELLED"}:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_export_and_import_through_graphql(
    live_server: LiveServer, clients: Any, cacher: dict[str, str], tmp_path: Any
) -> None:
    server = live_server.server
    caches = _services(server).caches
    source = CacheSource(kind=SourceKind.XYZ, location="http://127.0.0.1:9/{z}/{x}/{y}.png")
    caches.index.create_cache(CacheDefinition(name="world", source=source, max_zoom=5))
    store_tiles(caches.index, caches.blobs, "world", list(TILES.items()))
    client = clients(cacher)

    started = _run(
        client,
        """mutation Export($area: JSON!) { exportCache(name: "world", area: $area, minZoom: 2,
              maxZoom: 2, format: "pmtiles") { id kind status } }""",
        {"area": NORTH},
    )["exportCache"]
    assert started["kind"] == "export_tile_cache"
    job = finished(client, started["id"])
    assert job["status"] == "SUCCEEDED", job
    (entry,) = job["result"]["files"]
    assert entry["path"] == "world.pmtiles"
    download = httpx_get(entry["href"], cacher)
    assert hashlib.sha256(download).hexdigest() == entry["sha256"]
    assert job["result"]["clipped"] > 0

    # an archive uploaded over REST, imported through GraphQL
    archive = tmp_path / "overlay.mbtiles"
    with open_writer(archive, TilesetMetadata(TileFormat.PNG)) as writer:
        writer.write_tile(Tile(1, 1, 2), TILES[Tile(2, 2, 2)])
    data = archive.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    put = server.client.put(
        f"/api/cache-archives/{sha256}",
        params={"offset": 0, "total": len(data)},
        content=data,
        headers={**cacher, "Content-Type": "application/octet-stream"},
    )
    assert put.json()["complete"], put.text
    imported = _run(
        client,
        """mutation Import($archive: String!) { importCache(name: "world", archive: $archive,
              overwrite: true) { id kind } }""",
        {"archive": sha256},
    )["importCache"]
    job = finished(client, imported["id"])
    assert job["status"] == "SUCCEEDED", job
    assert job["result"]["overwritten"] == 1
    reader = CacheTileReader(caches.index, caches.blobs, "world")
    assert reader.get_tile(Tile(1, 1, 2)) == TILES[Tile(2, 2, 2)]


def httpx_get(url: str, headers: dict[str, str]) -> bytes:
    import httpx  # noqa: PLC0415

    response = httpx.get(url, headers=headers)
    response.raise_for_status()
    return response.content


def test_graphql_refuses_what_rest_refuses(
    live_server: LiveServer, clients: Any, cacher: dict[str, str]
) -> None:
    server = live_server.server
    caches = _services(server).caches
    source = CacheSource(kind=SourceKind.XYZ, location="http://127.0.0.1:9/{z}/{x}/{y}.png")
    caches.index.create_cache(
        CacheDefinition(name="world", source=source, max_zoom=5, export_max_tiles=3)
    )
    store_tiles(caches.index, caches.blobs, "world", list(TILES.items()))
    client = clients(cacher)
    export = """mutation Export($area: JSON!, $format: String!) { exportCache(name: "world",
                  area: $area, minZoom: 2, maxZoom: 2, format: $format) { id } }"""
    (error,) = _errors(client, export, area=NORTH, format="mbtiles")
    assert "limit of 3" in error["message"]
    (error,) = _errors(client, export, area=NORTH, format="zip")
    assert "format" in error["message"]
    _services(server).users.add_user("reader", PASSWORD, scopes=("cache:read",))
    reader = clients(_token(server, "reader"))
    (error,) = _errors(
        reader,
        """mutation { importCache(name: "world", archive: "%s") { id } }""" % ("0" * 64),
    )
    assert "cache:write" in error["message"]
    (error,) = _errors(
        client, """mutation { importCache(name: "world", archive: "%s") { id } }""" % ("0" * 64)
    )
    assert "no uploaded tile archive" in error["message"]
