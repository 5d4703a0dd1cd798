"""Seeds spread over worker processes: the same tiles and bytes as one process would store,
with the failure budget, cancel, resume and errors of a seed, from a real loopback upstream."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from offmaps.cache import (
    CacheDefinition,
    CacheSource,
    SourceKind,
    SQLiteTileIndex,
    TileCacheService,
    TileIndex,
    UpstreamSettings,
)
from offmaps.cache.index import cover_spans
from offmaps.cache.postgres import PostgresTileIndex
from offmaps.cache.seed import SeedProcesses
from offmaps.cache.tiles import Fetch, TileCache
from offmaps.errors import BlobTooLargeError, CacheError, JobCancelledError, SeedFailedError
from offmaps.storage import BlobStore, S3BlobStore, S3Config, SQLiteBlobStore
from offmaps.tiling import AreaOfInterest, tile_cover
from offmaps.types import Tile, ZoomRange
from tests.features.conftest import postgres_url
from tests.upstream import TileServer, tile_png

seed_module = importlib.import_module("offmaps.cache.seed")  # the package names a function seed

HELSINKI = AreaOfInterest.from_bbox(24.9, 60.15, 25.0, 60.2)
LEVELS = ZoomRange(0, 13)


def definition(url: str, **upstream: float) -> CacheDefinition:
    settings = UpstreamSettings.model_validate(
        {"backoff_s": 0.0, "requests_per_second": 10_000, **upstream}
    )
    return CacheDefinition(
        name="osm",
        source=CacheSource(kind=SourceKind.XYZ, location=url),
        max_zoom=18,
        upstream=settings,
    )


@pytest.fixture(autouse=True)
def _processes_for_any_area(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seed_module, "PROCESS_MIN_TILES", 0)


@pytest.fixture
def upstream() -> Iterator[TileServer]:
    server = TileServer()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TileIndex]:
    if request.param == "sqlite":
        yield SQLiteTileIndex(tmp_path / "index.sqlite")
        return
    url = postgres_url()
    schema = f"cache_{uuid.uuid4().hex[:12]}"
    yield PostgresTileIndex(url, schema=schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def service_of(index: TileIndex, blobs: BlobStore, processes: int = 2) -> TileCacheService:
    return TileCacheService(index, blobs, seed_processes=processes)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TileCacheService]:
    """Seeds over two workers, the index and the blobs in SQLite files."""
    found = service_of(
        SQLiteTileIndex(tmp_path / "index.sqlite"), SQLiteBlobStore(tmp_path / "blobs.sqlite")
    )
    yield found
    found.close()


def stored(service: TileCacheService) -> dict[Tile, bytes]:
    """Every tile of the area the cache holds, with its bytes."""
    cover = tile_cover(HELSINKI, service.cache("osm").tms, LEVELS)
    return {
        row.tile: service.blobs.get(row.sha256)
        for row in service.index.find_spans("osm", cover_spans(cover))
    }


def test_workers_store_what_one_process_stores_and_a_rerun_fetches_nothing(
    tmp_path: Path, upstream: TileServer, index: TileIndex
) -> None:
    alone = service_of(SQLiteTileIndex(tmp_path / "alone.sqlite"), SQLiteBlobStore(tmp_path / "a"))
    spread = service_of(index, SQLiteBlobStore(tmp_path / "blobs.sqlite"))
    for service in (alone, spread):
        service.create(definition(upstream.url))
    reports: list[float] = []
    one = alone.seed("osm", HELSINKI, LEVELS)
    asked_alone = upstream.requests
    many = spread.seed("osm", HELSINKI, LEVELS, progress=lambda p: reports.append(p.fraction))
    assert (many.fetched, many.written, many.skipped, many.errors) == (
        one.fetched, one.written, 0, 0,
    )  # fmt: skip
    assert many.done == many.total == one.total
    assert upstream.requests == 2 * asked_alone  # each tile once per cache
    assert reports[0] == 0.0
    assert reports[-1] == 1.0
    assert reports == sorted(reports)
    tiles = stored(spread)
    assert tiles == stored(alone)
    assert all(data == tile_png(t.z, t.x, t.y) for t, data in tiles.items())
    assert spread.stats("osm").fetches == one.fetched  # the workers' counters reach the index
    again = spread.seed("osm", HELSINKI, LEVELS)
    assert (again.fetched, again.skipped) == (0, one.total)
    assert upstream.requests == 2 * asked_alone
    alone.close()
    spread.close()


def test_a_service_seeds_an_upstream_in_workers_unless_told_otherwise(
    tmp_path: Path, upstream: TileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    here: list[str] = []
    seed_here = seed_module._seed_here

    def spy(cache: TileCache, *args: Any) -> None:
        here.append(cache.name)
        seed_here(cache, *args)

    monkeypatch.setattr(seed_module, "_seed_here", spy)
    for name, processes in (("spread", 2), ("alone", 1)):
        service = service_of(
            SQLiteTileIndex(tmp_path / f"{name}.sqlite"),
            SQLiteBlobStore(tmp_path / f"{name}-blobs.sqlite"),
            processes,
        )
        service.create(definition(upstream.url).model_copy(update={"name": name}))
        assert service.seed(name, HELSINKI, ZoomRange(0, 8)).fetched == 9
        service.close()
    assert here == ["alone"]


def test_workers_put_blobs_into_s3(
    tmp_path: Path, upstream: TileServer, s3_config: S3Config
) -> None:
    service = service_of(SQLiteTileIndex(tmp_path / "index.sqlite"), S3BlobStore(s3_config))
    service.create(definition(upstream.url))
    done = service.seed("osm", HELSINKI, ZoomRange(0, 10))
    assert done.fetched == done.total == upstream.requests
    assert service.verify().damaged == ()
    assert service.store_stats().blobs == done.fetched - 1  # levels 0 and 1: one 'sea' blob
    service.close()


def test_the_failure_budget_stops_the_workers_and_keeps_what_came(
    service: TileCacheService,
) -> None:
    upstream = TileServer(status=lambda z, x, y: 500 if z >= 13 else 200)
    service.create(definition(upstream.url, retries=1, failure_budget=3))
    area = AreaOfInterest.from_bbox(24.0, 60.0, 25.5, 60.5)  # z13: 4 chunks, z14: 12
    with pytest.raises(SeedFailedError, match="failure budget of 3") as caught:
        service.seed("osm", area, ZoomRange(0, 14))
    assert caught.value.errors > 3
    assert service.plan("osm", area, ZoomRange(0, 12)).to_fetch == 0  # what came is kept
    # the first failed chunk stops the seed: of level 14 (3,174 tiles), only what fitted in the
    # window of tiles in flight (two chunks per worker) was handed out
    level_14 = service.plan("osm", area, ZoomRange(14, 14)).tiles
    asked_14 = [path for path in upstream.asked if path.startswith("/14/")]
    assert len(asked_14) <= 2 * 2 * seed_module.CHUNK_TILES < level_14
    upstream.close()


def test_a_cancelled_seed_stops_and_a_rerun_resumes_without_refetching(
    tmp_path: Path, upstream: TileServer
) -> None:
    service = service_of(
        SQLiteTileIndex(tmp_path / "index.sqlite"), SQLiteBlobStore(tmp_path / "b")
    )
    service.create(definition(upstream.url))
    asked = iter(range(1_000_000))
    with pytest.raises(JobCancelledError):
        service.seed("osm", HELSINKI, LEVELS, cancelled=lambda: next(asked) > 12)
    partial = upstream.requests
    total = service.plan("osm", HELSINKI, LEVELS).tiles
    assert 0 < partial < total
    done = service.seed("osm", HELSINKI, LEVELS)
    assert done.fetched == total - partial
    assert upstream.requests == total  # nothing fetched twice


def test_an_error_in_a_worker_reaches_the_caller_as_it_was_raised(
    tmp_path: Path, upstream: TileServer
) -> None:
    blobs = SQLiteBlobStore(tmp_path / "blobs.sqlite", max_blob_bytes=16)
    service = service_of(SQLiteTileIndex(tmp_path / "index.sqlite"), blobs)
    service.create(definition(upstream.url))
    with pytest.raises(BlobTooLargeError):
        service.seed("osm", HELSINKI, LEVELS)
    stored = service.index.blob_sizes()
    assert all(blobs.exists(key) for key in stored)  # no row without its blob
    assert all(size <= 16 for size in stored.values())
    service.close()


def dying_fetcher(definition: CacheDefinition, rate: float) -> tuple[Fetch, Callable[[], None]]:
    """A worker's fetch that kills its process at level 8 (a crash, an out-of-memory kill)."""

    def fetch(tile: Tile) -> bytes:
        if tile.z == 8:
            os._exit(9)
        return tile_png(tile.z, tile.x, tile.y)

    return fetch, lambda: None


def test_a_worker_that_dies_stops_the_seed_with_an_error_and_a_rerun_completes_it(
    tmp_path: Path, upstream: TileServer
) -> None:
    service = service_of(
        SQLiteTileIndex(tmp_path / "index.sqlite"), SQLiteBlobStore(tmp_path / "b")
    )
    service.create(definition(upstream.url))
    cache = service.cache("osm")
    with pytest.raises(CacheError, match="worker process died"):
        seed_module.seed(
            cache,
            service.index,
            lambda tile: b"",
            HELSINKI,
            LEVELS,
            processes=SeedProcesses(2, dying_fetcher),
        )
    # the pool stops every worker when one dies, so what was stored depends on timing; but no
    # tile names a missing blob, and a rerun fetches exactly what is missing
    assert service.verify().damaged == ()
    before = service.plan("osm", HELSINKI, LEVELS)
    done = service.seed("osm", HELSINKI, LEVELS)
    assert (done.skipped, done.fetched) == (before.tiles - before.to_fetch, before.to_fetch)
    assert done.skipped + done.fetched == done.total
