"""Tile caches at scale: blobs in S3-compatible storage (SeaweedFS, checking signatures), the
index in PostgreSQL."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from psycopg import sql

from offmaps.cache import SQLiteTileIndex, TileCacheService
from offmaps.cache.postgres import PostgresTileIndex
from offmaps.errors import StorageError
from offmaps.services import build_services
from offmaps.settings import ServerSettings
from offmaps.storage import BlobRef, S3BlobStore, S3Config, S3ObjectStore
from offmaps.tiling import AreaOfInterest, get_tms, tile_cover
from offmaps.types import ZoomRange
from tests.cache.test_cache import HELSINKI, Upstream, definition
from tests.features.conftest import postgres_url
from tests.s3kit import BUCKET, FOREIGN, bucket_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def test_the_storage_url_puts_tiles_and_job_files_in_s3(
    tmp_path: Path, storage_url: str, s3_client: S3Client
) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data", storage_url=storage_url)
    services = build_services(settings)
    try:
        assert isinstance(services.objects, S3ObjectStore)
        assert isinstance(services.caches.blobs, S3BlobStore)
        services.caches._client = httpx.Client(transport=httpx.MockTransport(Upstream()))
        services.caches.create(definition())
        done = services.caches.seed("osm", HELSINKI, ZoomRange(0, 6))
        prefix = storage_url.removeprefix(f"s3://{BUCKET}/") + "/tile-caches/blobs/"
        keys = bucket_keys(s3_client, BUCKET, prefix)
        assert len(keys) == done.fetched == services.caches.stats("osm").blobs
        assert services.caches.verify("osm").damaged == ()
        # the cache is a tile layer, read from S3
        tile = next(iter(tile_cover(HELSINKI, get_tms(), [6])))
        served = services.catalog.tile_sources["osm"].get_tile(tile)
        assert served == services.caches.blobs.get(hashlib.sha256(served).hexdigest())
    finally:
        services.close()


class FailingAfter(S3BlobStore):
    """An S3 blob store whose puts go through another identity after ``n`` of them: one the
    service refuses (403), as when keys are revoked or a bucket policy changes mid-seed."""

    def __init__(self, config: S3Config, refused: S3BlobStore, n: int) -> None:
        super().__init__(config)
        self.refused = refused
        self.left = n

    def put(self, data: bytes) -> BlobRef:
        if self.left <= 0:
            return self.refused.put(data)
        self.left -= 1
        return super().put(data)


def test_an_s3_store_failing_mid_seed_leaves_no_tile_without_its_blob(
    tmp_path: Path, s3_config: S3Config
) -> None:
    foreign = dataclasses.replace(
        s3_config, access_key_id=FOREIGN[0], secret_access_key=FOREIGN[1], max_attempts=1
    )
    blobs = FailingAfter(s3_config, S3BlobStore(foreign), n=10)
    client = httpx.Client(transport=httpx.MockTransport(Upstream()))
    service = TileCacheService(SQLiteTileIndex(tmp_path / "index.sqlite"), blobs, client=client)
    try:
        service.create(definition())
        with pytest.raises(StorageError):
            service.seed("osm", AreaOfInterest.from_bbox(24.9, 60.1, 25.1, 60.3), ZoomRange(0, 12))
        named = service.index.blob_sizes()
        assert 0 < len(named) <= 10
        assert all(blobs.exists(key) for key in named)
        assert service.verify().damaged == ()
        for key, size in named.items():
            assert len(blobs.get(key)) == size
            assert hashlib.sha256(blobs.get(key)).hexdigest() == key
    finally:
        service.close()
        client.close()


def test_the_database_url_puts_the_cache_index_in_postgresql(tmp_path: Path) -> None:
    url = postgres_url()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = ServerSettings(data_dir=tmp_path / "data", database_url=url, database_schema=prefix)
    services = build_services(settings)
    try:
        assert isinstance(services.caches.index, PostgresTileIndex)
        services.caches._client = httpx.Client(transport=httpx.MockTransport(Upstream()))
        services.caches.create(definition())
        done = services.caches.seed("osm", HELSINKI, ZoomRange(0, 6))
    finally:
        services.close()
    assert not (tmp_path / "data" / "tile-caches" / "index.sqlite").exists()
    again = build_services(settings)  # another process, on another host, sees the same index
    try:
        assert again.caches.stats("osm").tiles == done.fetched
        assert "osm" in again.catalog.tile_sources
    finally:
        again.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(f"{prefix}_cache"))
            )


def test_export_and_import_jobs_run_on_s3_and_postgresql(
    tmp_path: Path, storage_url: str, s3_client: S3Client
) -> None:
    """The archive uploaded for an import, and an export's files, live in S3; the index in
    PostgreSQL: what another process of the server reads."""
    import time  # noqa: PLC0415

    from offmaps.cache import store_tiles  # noqa: PLC0415
    from offmaps.cache.jobs import ExportSteps, ImportSteps  # noqa: PLC0415
    from offmaps.containers import TilesetMetadata, open_reader, open_writer  # noqa: PLC0415
    from offmaps.containers.registry import ContainerKind  # noqa: PLC0415
    from offmaps.server.rest.caches import start_export, start_import  # noqa: PLC0415
    from offmaps.tiling import area_from_bbox  # noqa: PLC0415
    from offmaps.types import Tile, TileFormat  # noqa: PLC0415
    from tests.tilegen import make_tile  # noqa: PLC0415

    url = postgres_url()
    schema = f"t{uuid.uuid4().hex[:10]}"
    settings = ServerSettings(
        data_dir=tmp_path / "data",
        storage_url=storage_url,
        database_url=url,
        database_schema=schema,
    )
    services = build_services(settings)
    keys = [Tile(x, y, 2) for x in range(4) for y in range(4)]
    tiles = {tile: make_tile(tile, TileFormat.PNG, size=256) for tile in keys}

    def finished(job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while not (job := services.jobs.get(job_id)).status.done:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job.status.value == "succeeded", job.error
        assert job.result is not None
        return job.result

    try:
        services.caches._client = httpx.Client(transport=httpx.MockTransport(Upstream()))
        services.caches.create(definition())
        store_tiles(services.caches.index, services.caches.blobs, "osm", list(tiles.items()))
        # an archive uploaded in two parts lands in S3
        archive = tmp_path / "overlay.mbtiles"
        with open_writer(archive, TilesetMetadata(TileFormat.PNG)) as writer:
            writer.write_tile(Tile(1, 1, 2), tiles[Tile(2, 2, 2)])
        data = archive.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        for start, end in ((0, 5000), (5000, len(data))):
            with services.archives.open_part("u", sha256, offset=start, total=len(data)) as part:
                part.write(data[start:end])
                state = part.finish()
        assert state.complete
        prefix = storage_url.removeprefix(f"s3://{BUCKET}/")
        assert bucket_keys(s3_client, BUCKET, f"{prefix}/objects/cache-archives/") != []
        steps = ImportSteps(archive=sha256, overwrite=True)
        job = start_import(services, services.jobs, "u", "osm", steps)
        assert finished(job.id)["overwritten"] == 1
        assert not services.archives.objects.exists(sha256)  # removed once imported
        # an export's files land in S3, under the job
        area = area_from_bbox(-170, 10, 170, 80)
        export = ExportSteps(area=area, min_zoom=2, max_zoom=2, format=ContainerKind.GEOPACKAGE)
        job, plan = start_export(services, services.jobs, "u", "osm", export)
        result = finished(job.id)
        assert plan["tiles"] == result["tiles"]
        assert result["clipped"] > 0
        files = result["files"]
        assert isinstance(files, list)
        assert [entry["path"] for entry in files] == ["osm.gpkg"]
        stored_keys = bucket_keys(s3_client, BUCKET, f"{prefix}/objects/jobs/{job.id}/files/")
        assert len(stored_keys) == 1
        copy = tmp_path / "copy.gpkg"
        with services.jobs.output(job.id).open("osm.gpkg") as stored:
            copy.write_bytes(stored.read())
        with open_reader(copy) as reader:
            assert len(dict(reader.iter_tiles())) == result["written"]
    finally:
        services.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(f"{schema}_cache"))
            )
