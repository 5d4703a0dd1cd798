"""The tile cache service: content-addressed tiles, read-through, seeding, figures, cleanup."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from pydantic import ValidationError

from offmaps.cache import (
    CacheDefinition,
    CacheSource,
    SourceKind,
    SQLiteTileIndex,
    TileCacheService,
    TileIndex,
    UpstreamSettings,
    store_tiles,
)
from offmaps.cache.postgres import PostgresTileIndex
from offmaps.errors import (
    CacheExistsError,
    CacheIndexError,
    CacheNotFoundError,
    InvalidTileError,
    InvalidZoomError,
    JobCancelledError,
    SeedFailedError,
    StorageError,
    TileNotFoundError,
    UpstreamError,
)
from offmaps.storage import BlobRef, LocalBlobStore
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, ZoomRange
from tests.features.conftest import postgres_url

PNG = b"\x89PNG\r\n\x1a\n"
SEA = PNG + b"the same blue everywhere"


def png(tile: Tile, salt: str = "") -> bytes:
    """A distinct 'PNG' per tile (the format check reads the signature only)."""
    return PNG + f"{tile.z}/{tile.x}/{tile.y}{salt}".encode()


class Upstream:
    """A loopback-free upstream: an httpx mock transport that counts what it is asked."""

    def __init__(self, answer: Callable[[Tile], httpx.Response] | None = None) -> None:
        self.asked: Counter[Tile] = Counter()
        self.lock = threading.Lock()
        self.answer = answer or (lambda tile: httpx.Response(200, content=png(tile)))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        z, x, y = (int(part) for part in request.url.path.removesuffix(".png").split("/")[1:])
        tile = Tile(x, y, z)
        with self.lock:
            self.asked[tile] += 1
        return self.answer(tile)

    @property
    def requests(self) -> int:
        return sum(self.asked.values())


def definition(name: str = "osm", **upstream: float) -> CacheDefinition:
    settings = UpstreamSettings.model_validate(
        {"backoff_s": 0.0, "requests_per_second": 10_000, **upstream}
    )
    return CacheDefinition(
        name=name,
        source=CacheSource(kind=SourceKind.XYZ, location="https://tiles.test/{z}/{x}/{y}.png"),
        max_zoom=18,
        upstream=settings,
        verify_reads=1.0,
    )


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TileIndex]:
    """The cache index of each backend: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield SQLiteTileIndex(tmp_path / "cache" / "index.sqlite")
        return
    url = postgres_url()
    schema = f"cache_{uuid.uuid4().hex[:12]}"
    yield PostgresTileIndex(url, schema=schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def service(tmp_path: Path, upstream: Upstream, index: TileIndex) -> Iterator[TileCacheService]:
    client = httpx.Client(transport=httpx.MockTransport(upstream))
    found = TileCacheService(index, LocalBlobStore(tmp_path / "cache" / "blobs"), client=client)
    yield found
    found.close()
    client.close()


HELSINKI = AreaOfInterest.from_bbox(24.9, 60.15, 25.0, 60.2)


# --- definitions ----------------------------------------------------------------------------


def test_caches_are_created_listed_and_deleted(service: TileCacheService) -> None:
    service.create(definition("b"))
    service.create(definition("a"))
    assert [d.name for d in service.list()] == ["a", "b"]
    assert service.definition("a").title == "a"
    with pytest.raises(CacheExistsError):
        service.create(definition("a"))
    service.delete("a")
    assert [d.name for d in service.list()] == ["b"]
    with pytest.raises(CacheNotFoundError):
        service.definition("a")
    with pytest.raises(CacheNotFoundError):
        service.cache("a")


@pytest.mark.parametrize(
    "name", ["", "-x", "a/b", "../etc", "x" * 65, "café", "a b", "a\nb", "a.b"]
)
def test_a_cache_name_is_letters_digits_and_separators(name: str) -> None:
    with pytest.raises(ValidationError):
        definition(name)


@pytest.mark.parametrize(
    "location",
    [
        "ftp://tiles.test/{z}/{x}/{y}.png",
        "https://tiles.test/{z}/{x}.png",
        "file:///etc/passwd?{z}{x}{y}",
        "https://tiles.test/{z}/{x}/{y}\n.png",
        "",
    ],
)
def test_an_xyz_source_is_an_http_template_with_its_keys(location: str) -> None:
    with pytest.raises(ValidationError):
        CacheSource(kind=SourceKind.XYZ, location=location)


def test_inverted_zooms_and_unknown_settings_are_refused() -> None:
    source = CacheSource(kind=SourceKind.XYZ, location="https://t.test/{z}/{x}/{y}.png")
    with pytest.raises(ValidationError):
        CacheDefinition(name="x", source=source, min_zoom=5, max_zoom=4)
    with pytest.raises(ValidationError):
        CacheDefinition.model_validate({"name": "x", "source": source, "colour": "red"})
    with pytest.raises(ValidationError):
        UpstreamSettings(concurrency=0)


def test_an_index_file_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(CacheIndexError):
        SQLiteTileIndex(path)


# --- reading through ------------------------------------------------------------------------


def test_a_missing_tile_is_fetched_once_then_served_from_the_cache(
    service: TileCacheService, upstream: Upstream
) -> None:
    service.create(definition())
    cache = service.cache("osm")
    tile = Tile(1, 2, 3)
    assert cache.get_tile(tile) == png(tile)
    assert cache.get_tile(tile) == png(tile)
    assert upstream.asked[tile] == 1
    stats = service.stats("osm")
    assert (stats.tiles, stats.hits, stats.misses, stats.fetches, stats.errors) == (1, 1, 1, 1, 0)
    assert stats.levels[0].z == 3
    assert stats.last_access is not None


def test_concurrent_requests_for_one_tile_make_one_upstream_fetch(
    service: TileCacheService,
) -> None:
    release = threading.Event()
    asked = Counter[Tile]()

    def slow(tile: Tile) -> httpx.Response:
        asked[tile] += 1
        release.wait(10)
        return httpx.Response(200, content=png(tile))

    service._client = httpx.Client(transport=httpx.MockTransport(Upstream(slow)))
    service.create(definition())
    cache = service.cache("osm")
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_tile(Tile(0, 0, 1))))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # let every thread reach the cache before the upstream answers
    release.set()
    for thread in threads:
        thread.join(10)
    assert results == [png(Tile(0, 0, 1))] * 8
    assert asked[Tile(0, 0, 1)] == 1


@pytest.mark.parametrize(
    ("tile", "error"),
    [
        (Tile(2, 0, 1), InvalidTileError),  # column outside the matrix
        (Tile(0, -1, 1), InvalidTileError),
        (Tile(0, 0, 19), TileNotFoundError),  # beyond the cache's levels
    ],
)
def test_keys_outside_the_matrix_or_the_levels_are_refused_without_a_fetch(
    service: TileCacheService, upstream: Upstream, tile: Tile, error: type[Exception]
) -> None:
    service.create(definition())
    with pytest.raises(error):
        service.cache("osm").get_tile(tile)
    assert upstream.requests == 0


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500),
        httpx.Response(200, content=b"<html>rate limited</html>"),
        httpx.Response(200, content=b""),
        httpx.Response(200, content=PNG + b"x" * (2 * 1024 * 1024)),
    ],
    ids=["5xx", "garbage", "empty", "huge"],
)
def test_an_upstream_failure_is_an_upstream_error_counted_and_never_cached(
    service: TileCacheService, response: httpx.Response
) -> None:
    service._client = httpx.Client(transport=httpx.MockTransport(Upstream(lambda _: response)))
    service.create(definition(max_tile_bytes=1024 * 1024))
    with pytest.raises(UpstreamError):
        service.cache("osm").get_tile(Tile(0, 0, 0))
    stats = service.stats("osm")
    assert (stats.tiles, stats.errors, stats.fetches) == (0, 1, 1)
    assert list(service.blobs.iter_keys()) == []


def test_an_upstream_that_hangs_times_out(service: TileCacheService) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    service._client = httpx.Client(transport=httpx.MockTransport(hang))
    service.create(definition())
    with pytest.raises(UpstreamError, match="timed out"):
        service.cache("osm").get_tile(Tile(0, 0, 0))


def test_an_upstream_404_is_a_missing_tile(service: TileCacheService) -> None:
    service._client = httpx.Client(
        transport=httpx.MockTransport(Upstream(lambda _: httpx.Response(404)))
    )
    service.create(definition())
    with pytest.raises(TileNotFoundError):
        service.cache("osm").get_tile(Tile(0, 0, 0))
    assert service.stats("osm").errors == 0


# --- content addressing ---------------------------------------------------------------------


def test_identical_tiles_are_stored_once_across_caches(service: TileCacheService) -> None:
    service.create(definition("a"))
    service.create(definition("b"))
    tiles = [Tile(x, y, 2) for x in range(4) for y in range(4)]
    store_tiles(service.index, service.blobs, "a", [(t, SEA) for t in tiles])
    store_tiles(service.index, service.blobs, "b", [(t, SEA) for t in tiles[:4]])
    assert list(service.blobs.iter_keys()) == [hashlib.sha256(SEA).hexdigest()]
    stats = service.stats("a")
    assert (stats.tiles, stats.blobs, stats.bytes) == (16, 1, 16 * len(SEA))
    assert stats.dedup_saving == 15 * len(SEA)
    assert service.stats("b").tiles == 4
    store = service.store_stats()
    assert (store.blobs, store.bytes, store.orphans) == (1, len(SEA), 0)


class CountingBlobs(LocalBlobStore):
    def __init__(self, root: Path, fail_after: int | None = None) -> None:
        super().__init__(root)
        self.puts = 0
        self.fail_after = fail_after
        self.lock = threading.Lock()  # a seed puts several blobs at once

    def put(self, data: bytes) -> BlobRef:
        with self.lock:
            if self.fail_after is not None and self.puts >= self.fail_after:
                raise StorageError("the disk is full")
            self.puts += 1
        return super().put(data)


class GatedBlobs(LocalBlobStore):
    """Each put waits until ``width`` puts are under way at once (BrokenBarrierError if not)."""

    def __init__(self, root: Path, width: int) -> None:
        super().__init__(root)
        self.barrier = threading.Barrier(width, timeout=5)

    def put(self, data: bytes) -> BlobRef:
        self.barrier.wait()
        return super().put(data)


def test_a_pool_puts_the_new_blobs_of_a_batch_at_once(tmp_path: Path) -> None:
    blobs = GatedBlobs(tmp_path / "blobs", width=4)
    index = SQLiteTileIndex(tmp_path / "index.sqlite")
    index.create_cache(definition())
    tiles = [(Tile(x, 0, 2), png(Tile(x, 0, 2))) for x in range(4)]
    tiles.append((Tile(0, 1, 2), png(Tile(0, 0, 2))))  # the same bytes: one put
    with ThreadPoolExecutor(4) as pool:
        assert store_tiles(index, blobs, "osm", tiles, pool=pool) == 5
    assert sorted(blobs.iter_keys()) == sorted({hashlib.sha256(d).hexdigest() for _, d in tiles})
    assert all(index.find("osm", tile) is not None for tile, _ in tiles)
    index.close()


def test_a_put_failing_in_the_pool_writes_no_row(tmp_path: Path) -> None:
    blobs = CountingBlobs(tmp_path / "blobs", fail_after=2)
    index = SQLiteTileIndex(tmp_path / "index.sqlite")
    index.create_cache(definition())
    tiles = [(Tile(x, 0, 2), png(Tile(x, 0, 2))) for x in range(4)]
    with ThreadPoolExecutor(4) as pool, pytest.raises(StorageError, match="disk is full"):
        store_tiles(index, blobs, "osm", tiles, pool=pool)
    assert all(index.find("osm", tile) is None for tile, _ in tiles)
    index.close()


def test_a_seed_stores_a_chunk_while_it_fetches_the_next(tmp_path: Path) -> None:
    next_asked = threading.Event()

    def answer(tile: Tile) -> httpx.Response:
        if tile.z == 1:  # level 1 is the second chunk
            next_asked.set()
        return httpx.Response(200, content=png(tile))

    first = png(Tile(0, 0, 0))
    overlapped: list[bool] = []

    class WaitingBlobs(LocalBlobStore):
        def put(self, data: bytes) -> BlobRef:
            if data == first:  # storing the first chunk waits for the second's fetch
                overlapped.append(next_asked.wait(5))
            return super().put(data)

    client = httpx.Client(transport=httpx.MockTransport(Upstream(answer)))
    blobs = WaitingBlobs(tmp_path / "blobs")
    service = TileCacheService(SQLiteTileIndex(tmp_path / "index.sqlite"), blobs, client=client)
    service.create(definition())
    done = service.seed("osm", HELSINKI, ZoomRange(0, 1))
    assert overlapped == [True]
    assert (done.fetched, done.written, done.done) == (2, 2, 2)
    assert service.stats("osm").tiles == 2
    service.close()
    client.close()


def test_a_tile_is_rewritten_only_when_its_bytes_change(tmp_path: Path) -> None:
    blobs = CountingBlobs(tmp_path / "blobs")
    index = SQLiteTileIndex(tmp_path / "index.sqlite")
    index.create_cache(definition())
    tile = Tile(0, 0, 0)
    assert store_tiles(index, blobs, "osm", [(tile, png(tile))], now=100.0) == 1
    assert store_tiles(index, blobs, "osm", [(tile, png(tile))], now=200.0) == 0
    assert blobs.puts == 1
    row = index.find("osm", tile)
    assert row is not None
    assert (row.stored, row.checked) == (100.0, 200.0)
    assert store_tiles(index, blobs, "osm", [(tile, png(tile, "new"))], now=300.0) == 1
    row = index.find("osm", tile)
    assert row is not None
    assert row.stored == 300.0
    assert blobs.puts == 2
    assert row.sha256 == hashlib.sha256(png(tile, "new")).hexdigest()
    index.close()


def test_a_damaged_blob_is_found_on_read_and_fetched_again(
    service: TileCacheService, upstream: Upstream
) -> None:
    service.create(definition())
    cache = service.cache("osm")
    tile = Tile(0, 0, 0)
    cache.get_tile(tile)
    (key,) = service.blobs.iter_keys()
    path = Path(service.blobs.root) / key[:2] / key[2:4] / key  # type: ignore[attr-defined]
    path.write_bytes(PNG + b"bit rot")
    assert cache.get_tile(tile) == png(tile)  # verify_reads=1.0: every read is checked
    assert upstream.asked[tile] == 2
    assert path.read_bytes() == png(tile)


def test_verify_hashes_every_blob_and_drops_damaged_ones(service: TileCacheService) -> None:
    service.create(definition())
    tiles = [Tile(x, 0, 1) for x in range(2)]
    store_tiles(service.index, service.blobs, "osm", [(t, png(t)) for t in tiles])
    bad = hashlib.sha256(png(tiles[0])).hexdigest()
    path = Path(service.blobs.root) / bad[:2] / bad[2:4] / bad  # type: ignore[attr-defined]
    path.write_bytes(b"damaged")
    report = service.verify("osm")
    assert (report.checked, report.damaged) == (2, (bad,))
    assert service.index.find("osm", tiles[0]) is None
    assert service.index.find("osm", tiles[1]) is not None
    assert service.verify().damaged == ()


# --- seeding --------------------------------------------------------------------------------


def test_a_dry_run_counts_and_estimates_before_any_fetch(
    service: TileCacheService, upstream: Upstream
) -> None:
    service.create(definition())
    plan = service.plan("osm", HELSINKI, ZoomRange(0, 12))
    assert plan.tiles == sum(plan.levels.values())
    assert plan.levels[0] == 1
    assert plan.to_fetch == plan.tiles
    assert plan.estimated_bytes == plan.tiles * 25_000
    assert upstream.requests == 0


def test_seeding_fetches_the_area_once_and_a_rerun_fetches_nothing(
    service: TileCacheService, upstream: Upstream
) -> None:
    service.create(definition())
    reports: list[float] = []
    done = service.seed(
        "osm", HELSINKI, ZoomRange(0, 12), progress=lambda p: reports.append(p.fraction)
    )
    plan = service.plan("osm", HELSINKI, ZoomRange(0, 12))
    assert done.fetched == plan.tiles == upstream.requests
    assert plan.to_fetch == 0
    assert reports[0] == 0.0
    assert reports[-1] == 1.0
    assert reports == sorted(reports)
    again = service.seed("osm", HELSINKI, ZoomRange(0, 12))
    assert (again.fetched, again.skipped) == (0, plan.tiles)
    assert upstream.requests == plan.tiles
    assert service.stats("osm").fetches == plan.tiles


def test_refresh_before_refetches_older_tiles_but_rewrites_only_changed_ones(
    service: TileCacheService, upstream: Upstream
) -> None:
    service.create(definition())
    service.seed("osm", HELSINKI, ZoomRange(0, 6))
    first = upstream.requests
    upstream.answer = lambda tile: httpx.Response(
        200, content=png(tile, "v2" if tile.z == 6 else "")
    )
    later = datetime.now(UTC) + timedelta(seconds=1)
    again = service.seed("osm", HELSINKI, ZoomRange(0, 6), refresh_before=later)
    assert again.fetched == first
    assert upstream.requests == 2 * first
    assert again.written == service.plan("osm", HELSINKI, ZoomRange(6, 6)).tiles


def test_a_seed_across_the_antimeridian_covers_both_sides(
    service: TileCacheService, upstream: Upstream
) -> None:
    service.create(definition())
    fiji = AreaOfInterest.from_bbox(177.0, -19.0, -179.0, -16.0)
    service.seed("osm", fiji, ZoomRange(4, 4))
    columns = {tile.x for tile in upstream.asked}
    assert columns == {0, 15}


def test_retries_ride_out_a_flaky_upstream(service: TileCacheService) -> None:
    calls = Counter[Tile]()

    def flaky(tile: Tile) -> httpx.Response:
        calls[tile] += 1
        return httpx.Response(503 if calls[tile] <= 2 else 200, content=png(tile))

    service._client = httpx.Client(transport=httpx.MockTransport(Upstream(flaky)))
    service.create(definition(retries=2))
    done = service.seed("osm", HELSINKI, ZoomRange(0, 3))
    assert (done.fetched, done.errors) == (4, 0)
    assert set(calls.values()) == {3}


def test_a_failing_upstream_stops_the_seed_at_its_failure_budget(
    service: TileCacheService,
) -> None:
    upstream = Upstream(lambda tile: httpx.Response(500 if tile.z >= 3 else 200, content=png(tile)))
    service._client = httpx.Client(transport=httpx.MockTransport(upstream))
    service.create(definition(retries=1, failure_budget=5))
    with pytest.raises(SeedFailedError, match="failure budget of 5") as caught:
        service.seed("osm", AreaOfInterest.from_bbox(-180, -80, 180, 80), ZoomRange(0, 6))
    assert caught.value.errors > 5
    # it stopped: at most one chunk of level 3 was tried, twice each (one retry), never level 6
    assert max(t.z for t in upstream.asked) == 3
    assert upstream.requests <= 1 + 4 + 16 + 2 * 64
    assert service.stats("osm").tiles == 1 + 4 + 16  # what came is kept


def test_a_cancelled_seed_resumes_without_refetching(
    service: TileCacheService, upstream: Upstream
) -> None:
    service.create(definition())
    asked = iter(range(1_000_000))
    with pytest.raises(JobCancelledError):
        service.seed("osm", HELSINKI, ZoomRange(0, 14), cancelled=lambda: next(asked) > 3)
    partial = upstream.requests
    assert partial > 0
    done = service.seed("osm", HELSINKI, ZoomRange(0, 14))
    plan = service.plan("osm", HELSINKI, ZoomRange(0, 14))
    assert done.fetched == plan.tiles - partial
    assert upstream.requests == plan.tiles  # nothing fetched twice


def test_a_store_failing_mid_seed_leaves_no_row_without_its_blob(
    tmp_path: Path, upstream: Upstream
) -> None:
    blobs = CountingBlobs(tmp_path / "blobs", fail_after=20)
    client = httpx.Client(transport=httpx.MockTransport(upstream))
    service = TileCacheService(SQLiteTileIndex(tmp_path / "index.sqlite"), blobs, client=client)
    service.create(definition())
    with pytest.raises(StorageError, match="disk is full"):
        service.seed("osm", HELSINKI, ZoomRange(0, 14))
    stored = service.index.blob_sizes()
    assert 0 < len(stored) <= 20
    assert all(blobs.exists(key) for key in stored)
    assert service.verify().damaged == ()
    service.close()


def test_seeding_levels_outside_the_cache_is_refused(service: TileCacheService) -> None:
    service.create(definition())
    with pytest.raises(InvalidZoomError):
        service.seed("osm", HELSINKI, ZoomRange(17, 19))


# --- cleanup and garbage collection ---------------------------------------------------------


def test_truncate_by_area_and_levels(service: TileCacheService) -> None:
    service.create(definition())
    service.seed("osm", HELSINKI, ZoomRange(0, 8))
    before = service.stats("osm").tiles
    east = AreaOfInterest.from_bbox(24.99, 60.15, 25.0, 60.2)
    removed = service.truncate("osm", east, ZoomRange(8, 8))
    assert removed == 1
    assert service.stats("osm").tiles == before - 1
    assert service.truncate("osm", zooms=ZoomRange(0, 1)) == 2
    assert service.truncate("osm") == before - 3
    assert service.stats("osm").tiles == 0


def test_cleanup_by_age_and_by_least_recent_use(service: TileCacheService) -> None:
    service.create(definition())
    old, recent, used = Tile(0, 0, 1), Tile(1, 0, 1), Tile(0, 1, 1)
    store_tiles(service.index, service.blobs, "osm", [(old, png(old))], now=1_000.0)
    store_tiles(service.index, service.blobs, "osm", [(recent, png(recent))], now=2_000.0)
    store_tiles(service.index, service.blobs, "osm", [(used, png(used))], now=1_500.0)
    removed = service.cleanup("osm", older_than=datetime.fromtimestamp(1_200.0, UTC))
    assert removed == 1
    assert service.index.find("osm", old) is None
    service.cache("osm").get_tile(used)  # read: the most recently used now
    size = len(png(used))
    assert service.cleanup("osm", max_bytes=size) == 1
    assert service.index.find("osm", recent) is None
    assert service.index.find("osm", used) is not None


def test_gc_removes_only_blobs_no_tile_names(service: TileCacheService) -> None:
    service.create(definition("a"))
    service.create(definition("b"))
    store_tiles(service.index, service.blobs, "a", [(Tile(0, 0, 0), SEA)])
    store_tiles(service.index, service.blobs, "b", [(Tile(0, 0, 0), SEA)])
    store_tiles(service.index, service.blobs, "a", [(Tile(0, 0, 1), png(Tile(0, 0, 1)))])
    service.delete("b")
    service.truncate("a", zooms=ZoomRange(1, 1))
    assert service.store_stats().orphans == 1
    collected = service.gc()
    assert (collected.examined, collected.deleted) == (2, 1)
    assert list(service.blobs.iter_keys()) == [hashlib.sha256(SEA).hexdigest()]
    assert service.cache("a").get_tile(Tile(0, 0, 0)) == SEA


def test_gc_never_collects_a_blob_being_written(service: TileCacheService) -> None:
    service.create(definition())
    data = png(Tile(0, 0, 0))
    key = hashlib.sha256(data).hexdigest()
    token, known = service.index.begin_writes([key])
    assert known == frozenset()
    service.blobs.put(data)  # written, its row not yet committed
    assert service.gc().deleted == 0
    assert service.blobs.exists(key)
    service.index.commit_writes(token, "osm", [(Tile(0, 0, 0), key, len(data))], time.time())
    assert service.gc().deleted == 0
    assert service.cache("osm").get_tile(Tile(0, 0, 0)) == data


def test_gc_racing_writers_never_leaves_a_row_without_its_blob(
    service: TileCacheService,
) -> None:
    service.create(definition())
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            n = 0
            while not stop.is_set():
                tile = Tile(n % 4, 0, 2)
                store_tiles(
                    service.index, service.blobs, "osm", [(tile, SEA if n % 2 else png(tile))]
                )
                service.truncate("osm", zooms=ZoomRange(2, 2)) if n % 7 == 0 else None
                n += 1
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)

    writers = [threading.Thread(target=churn) for _ in range(2)]
    for writer in writers:
        writer.start()
    for _ in range(30):
        service.gc()
    stop.set()
    for writer in writers:
        writer.join(10)
    assert errors == []
    assert all(service.blobs.exists(key) for key in service.index.blob_sizes())


def test_a_deleted_cache_gives_its_blobs_to_gc(service: TileCacheService) -> None:
    service.create(definition())
    service.seed("osm", HELSINKI, ZoomRange(0, 4))
    service.delete("osm")
    assert service.gc().deleted == 5
    assert list(service.blobs.iter_keys()) == []


def test_a_full_disk_mid_seed_leaves_no_tile_without_its_blob(
    tmp_path: Path, full_disk: Path
) -> None:
    big = Upstream(lambda tile: httpx.Response(200, content=png(tile) + b"x" * 20_000))
    client = httpx.Client(transport=httpx.MockTransport(big))
    blobs = LocalBlobStore(full_disk / "blobs")  # 192 KiB: a few tiles fit
    service = TileCacheService(SQLiteTileIndex(tmp_path / "index.sqlite"), blobs, client=client)
    service.create(definition())
    with pytest.raises(StorageError):
        service.seed("osm", HELSINKI, ZoomRange(0, 14))
    named = service.index.blob_sizes()
    assert 0 < len(named) < big.requests
    assert all(blobs.exists(key) for key in named)
    assert service.verify().damaged == ()
    assert not [p for p in (full_disk / "blobs").iterdir() if p.name.endswith(".partial")]
    service.close()
    client.close()
