"""The tile cache API: scopes, create, seed (dry run and job), stats, tiles served, cleanup."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from offmaps.cache import CacheDefinition
from offmaps.containers.base import TilesetMetadata
from offmaps.services import Services, build_services
from offmaps.settings import ServerSettings
from offmaps.tiling import area_from_bbox
from offmaps.types import Tile, TileFormat
from tests.jobs.test_jobs import wait
from tests.server.test_tiles import write_archive
from tests.serverkit import Server, assert_problem, webmap_document
from tests.tilegen import sample_tiles

PNG_TILES = sample_tiles(TileFormat.PNG, maxzoom=3, duplicate=True)
WORLD = area_from_bbox(-180, -85, 180, 85).model_dump(mode="json")


def _services(server: Server) -> Services:
    services: Services = server.client.app.state.services  # type: ignore[attr-defined]
    return services


@pytest.fixture
def cacher(server: Server) -> dict[str, str]:
    _services(server).users.add_user("cacher", "pw-cacher-123", scopes=("cache:write",))
    response = server.client.post(
        "/oauth2/token",
        data={"grant_type": "password", "username": "cacher", "password": "pw-cacher-123"},
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write_archive(
        tmp_path / "source.mbtiles",
        TilesetMetadata(tile_format=TileFormat.PNG, minzoom=0, maxzoom=3),
        PNG_TILES,
    )


def _definition(archive: Path, name: str = "world") -> dict[str, Any]:
    return {
        "name": name,
        "source": {"kind": "archive", "location": str(archive)},
        "format": "png",
        "max_zoom": 3,
    }


def test_reading_needs_cache_read_and_changing_cache_write(
    server: Server, cacher: dict[str, str], archive: Path
) -> None:
    assert_problem(server.client.get("/api/caches"), 401)
    assert_problem(server.client.get("/api/caches", headers=server.token("viewer")), 403)
    problem = assert_problem(
        server.client.post(
            "/api/caches", json=_definition(archive), headers=server.token("editor")
        ),
        403,
    )
    assert problem["required_scopes"] == ["cache:write"]
    created = server.client.post("/api/caches", json=_definition(archive), headers=cacher)
    assert created.status_code == 201, created.text
    assert created.headers["Location"].endswith("/api/caches/world")
    listed = server.client.get("/api/caches", headers=cacher).json()["caches"]
    assert [c["name"] for c in listed] == ["world"]
    assert server.client.get("/api/caches", headers=server.token("admin")).status_code == 200


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"name": "../etc"}, 422),
        ({"name": "x" * 65}, 422),
        ({"source": {"kind": "xyz", "location": "file:///etc/passwd"}}, 422),
        ({"source": {"kind": "archive", "location": "/no/such/file.mbtiles"}}, 400),
        ({"format": "jpg"}, 400),  # the archive is PNG
        ({"tms": "NoSuchMatrixSet"}, 400),
        ({"min_zoom": 5, "max_zoom": 2}, 422),
        ({"extra": True}, 422),
    ],
)
def test_a_bad_definition_is_a_problem_and_creates_nothing(
    server: Server, cacher: dict[str, str], archive: Path, change: dict[str, Any], status: int
) -> None:
    response = server.client.post(
        "/api/caches", json={**_definition(archive), **change}, headers=cacher
    )
    assert_problem(response, status)
    assert server.client.get("/api/caches", headers=cacher).json()["caches"] == []


def test_a_name_taken_by_a_cache_or_a_tile_layer_is_a_conflict(
    server: Server, cacher: dict[str, str], archive: Path
) -> None:
    assert server.client.post("/api/caches", json=_definition(archive), headers=cacher).is_success
    again = server.client.post("/api/caches", json=_definition(archive), headers=cacher)
    assert_problem(again, 409)


def test_seed_dry_run_then_job_then_tiles_served_and_stats(
    server: Server, cacher: dict[str, str], archive: Path
) -> None:
    server.client.post("/api/caches", json=_definition(archive), headers=cacher)
    body = {"area": WORLD, "min_zoom": 0, "max_zoom": 3}
    plan = server.client.post(
        "/api/caches/world/seed", json={**body, "dry_run": True}, headers=cacher
    )
    assert plan.status_code == 200, plan.text
    assert plan.json()["tiles"] == 1 + 4 + 16 + 64
    assert plan.json()["to_fetch"] == plan.json()["tiles"]
    started = server.client.post("/api/caches/world/seed", json=body, headers=cacher)
    assert started.status_code == 201, started.text
    job = wait(_services(server).jobs, started.json()["id"])
    assert job.status.value == "succeeded", job.error
    followed = server.client.get(f"/api/jobs/{job.id}", headers=cacher).json()
    assert followed["progress"] == 1.0
    assert followed["result"]["fetched"] == len(PNG_TILES)
    assert followed["result"]["missing"] == 85 - len(PNG_TILES)
    # another user may not follow it
    assert_problem(server.client.get(f"/api/jobs/{job.id}", headers=server.token("editor")), 404)
    stats = server.client.get("/api/caches/world/stats", headers=cacher).json()
    distinct = {hashlib.sha256(data).hexdigest() for data in PNG_TILES.values()}
    assert stats["tiles"] == len(PNG_TILES)
    assert stats["blobs"] == len(distinct) < len(PNG_TILES)  # the sample repeats tiles
    assert stats["dedup_saving"] > 0
    # the cache is a tile layer (admins read every tile layer)
    tile = next(iter(PNG_TILES))
    served = server.client.get(
        f"/tiles/world/{tile.z}/{tile.x}/{tile.y}", headers=server.token("admin")
    )
    assert served.status_code == 200, served.text
    assert served.content == PNG_TILES[tile]
    assert server.client.get("/api/caches/world/stats", headers=cacher).json()["hits"] == 1


def test_seed_requests_are_checked(server: Server, cacher: dict[str, str], archive: Path) -> None:
    server.client.post("/api/caches", json=_definition(archive), headers=cacher)
    bad = [
        {"area": WORLD, "min_zoom": 0, "max_zoom": 9},  # beyond the cache's levels
        {"area": WORLD, "min_zoom": 3, "max_zoom": 1},
        {
            "area": {"geometry": {"type": "Point", "coordinates": [0, 0]}},
            "min_zoom": 0,
            "max_zoom": 1,
        },
        {"area": WORLD, "min_zoom": 0, "max_zoom": 1, "refresh_before": "yesterday"},
    ]
    for body in bad:
        response = server.client.post("/api/caches/world/seed", json=body, headers=cacher)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert_problem(response, response.status_code)
    missing = server.client.post(
        "/api/caches/nope/seed",
        json={"area": WORLD, "min_zoom": 0, "max_zoom": 1},
        headers=cacher,
    )
    assert_problem(missing, 404)


def test_clean_verify_gc_and_delete(server: Server, cacher: dict[str, str], archive: Path) -> None:
    server.client.post("/api/caches", json=_definition(archive), headers=cacher)
    started = server.client.post(
        "/api/caches/world/seed",
        json={"area": WORLD, "min_zoom": 0, "max_zoom": 3},
        headers=cacher,
    )
    wait(_services(server).jobs, started.json()["id"])
    verified = server.client.post("/api/caches/world/verify", headers=cacher).json()
    assert verified["damaged"] == []
    assert verified["checked"] > 0
    cleaned = server.client.post(
        "/api/caches/world/clean",
        json={"min_zoom": 3, "max_zoom": 3, "gc": True},
        headers=cacher,
    )
    assert cleaned.status_code == 201, cleaned.text
    job = wait(_services(server).jobs, cleaned.json()["id"])
    assert job.status.value == "succeeded", job.error
    level3 = sum(1 for tile in PNG_TILES if tile.z == 3)
    assert job.result is not None
    assert job.result["removed_tiles"] == level3
    store = server.client.get("/api/cache-store", headers=cacher).json()
    assert store["orphans"] == 0
    assert_problem(server.client.post("/api/caches/world/clean", json={}, headers=cacher), 422)
    assert server.client.delete("/api/caches/world", headers=cacher).status_code == 204
    assert_problem(server.client.get("/api/caches/world", headers=cacher), 404)
    assert_problem(server.client.get("/tiles/world/0/0/0", headers=server.token("admin")), 404)
    gc = server.client.post("/api/cache-store/gc", headers=cacher)
    assert gc.status_code == 201
    job = wait(_services(server).jobs, gc.json()["id"])
    assert job.result is not None
    assert job.result["deleted_blobs"] == store["blobs"]


def test_a_cache_survives_a_restart_as_a_tile_layer(tmp_path: Path, archive: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data")
    services = build_services(settings)
    services.caches.create(CacheDefinition.model_validate(_definition(archive)))
    services.close()
    again = build_services(settings)
    try:
        source = again.catalog.tile_sources["world"]
        tile = Tile(0, 0, 0)
        assert source.get_tile(tile) == PNG_TILES[tile]
    finally:
        again.close()


def test_a_web_map_basemap_may_be_a_cache_read_through_by_anyone_who_sees_the_map(
    server: Server, cacher: dict[str, str], archive: Path
) -> None:
    server.client.post("/api/caches", json=_definition(archive), headers=cacher)
    document = webmap_document(title="Cached", public=True, layers=[], tables=[])
    document["basemap"] = {
        "title": "cached",
        "layers": [{"type": "raster_tile", "id": "base", "title": "base", "service": "world"}],
    }
    created = server.client.post("/api/maps", json=document, headers=server.token("editor"))
    assert created.status_code == 201, created.text
    tile = next(iter(PNG_TILES))
    anonymous = server.client.get(f"/tiles/world/{tile.z}/{tile.x}/{tile.y}")
    assert anonymous.status_code == 200, anonymous.text  # fetched from the archive, stored
    assert anonymous.content == PNG_TILES[tile]
    stats = server.client.get("/api/caches/world/stats", headers=cacher).json()
    assert (stats["tiles"], stats["misses"], stats["fetches"]) == (1, 1, 1)
    tilejson = server.client.get("/tiles/world/tilejson.json").json()
    assert "/tiles/world/{z}/{x}/{y}" in tilejson["tiles"][0]
