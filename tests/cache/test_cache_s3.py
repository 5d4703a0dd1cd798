"""Tile caches at scale: blobs in S3-compatible storage (SeaweedFS, checking signatures), the
index in PostgreSQL."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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
from tests.s3kit import ADMIN, BUCKET, FOREIGN, bucket_keys, empty

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def storage_url(
    s3_client: S3Client, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    prefix = f"t/{uuid.uuid4().hex}"
    monkeypatch.setenv("OFFMAPS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("OFFMAPS_S3_ACCESS_KEY_ID", ADMIN[0])
    monkeypatch.setenv("OFFMAPS_S3_SECRET_ACCESS_KEY", ADMIN[1])
    yield f"s3://{BUCKET}/{prefix}"
    empty(s3_client, BUCKET, prefix + "/")


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
