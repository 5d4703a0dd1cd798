"""Feature attachments in S3-compatible storage (SeaweedFS, checking signatures): with
``OFFMAPS_STORAGE_URL``, an attachment's bytes go to the bucket under ``PREFIX/blobs/``, by their
SHA-256, and nothing to the data folder; reading it back streams it from there."""

from __future__ import annotations

import hashlib
import socket
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from offmaps.server.app import create_app
from offmaps.settings import ServerSettings
from offmaps.storage import S3BlobStore
from tests.s3kit import BUCKET, bucket_keys
from tests.serverkit import Server, assert_problem

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SITES = "/collections/city.sites/items"


def test_attachments_live_in_s3(server: Server, storage_url: str, s3_client: S3Client) -> None:
    app = create_app(ServerSettings(data_dir=server.data_dir, storage_url=storage_url))
    assert isinstance(app.state.services.catalog.blobs, S3BlobStore)
    prefix = storage_url.removeprefix(f"s3://{BUCKET}/")
    photo = b"\xff\xd8\xff a photo kept in the bucket"
    sha256 = hashlib.sha256(photo).hexdigest()
    with TestClient(app) as client:
        first = client.get(f"{SITES}?limit=1").json()["features"][0]
        base = f"{SITES}/{first['id']}/attachments"
        uploaded = client.post(
            base, files={"file": ("photo.jpg", photo, "image/jpeg")}, headers=server.token("editor")
        )
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["sha256"] == sha256
        keys = bucket_keys(s3_client, BUCKET, f"{prefix}/blobs/")
        assert [key.rsplit("/", 1)[-1] for key in keys] == [sha256]
        assert not any(p.is_file() for p in (server.data_dir / "blobs").rglob("*"))
        (listed,) = client.get(base).json()["attachments"]
        got = client.get(f"{base}/{listed['id']}")
        assert got.status_code == 200
        assert got.content == photo


def test_storage_away_answers_503_and_records_nothing(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 not reachable (stopped, a network cut): a clear 503 problem, and no attachment row
    left naming bytes that were never stored."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    monkeypatch.setenv("OFFMAPS_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OFFMAPS_S3_ACCESS_KEY_ID", "offmaps-test")
    monkeypatch.setenv("OFFMAPS_S3_SECRET_ACCESS_KEY", "offmaps-test-secret")
    app = create_app(ServerSettings(data_dir=server.data_dir, storage_url=f"s3://{BUCKET}/away"))
    with TestClient(app) as client:
        first = client.get(f"{SITES}?limit=1").json()["features"][0]
        base = f"{SITES}/{first['id']}/attachments"
        answer = client.post(
            base,
            files={"file": ("photo.jpg", b"bytes", "image/jpeg")},
            headers=server.token("editor"),
        )
        problem = assert_problem(answer, 503)
        assert "cannot reach the S3 store" in problem["detail"]
        assert client.get(base).json()["attachments"] == []
