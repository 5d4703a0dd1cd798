"""Downloads handed over to storage (``OFFMAPS_DOWNLOAD_REDIRECT_S``): a package's or a job's
file answers ``307`` to a presigned URL of the object store, after the same access checks; the
bytes then come from S3 itself (SeaweedFS, checking signatures) or from the data folder's
``/storage/...`` route, ranges included, and the SDK follows the redirect without sending its
token to another origin."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from offmaps.client import Portal
from offmaps.client.areas import OfflineMapAreaManager
from offmaps.offline.package import verify_package
from offmaps.server.app import create_app
from offmaps.settings import ServerSettings
from tests.client.test_preplanned import BBOX, _device_area, map_id, signed_in
from tests.jobs.test_jobs import wait
from tests.server.test_areas_updates import BBOX as SERVER_BBOX
from tests.server.test_areas_updates import _href
from tests.server.test_offline_access import BODY
from tests.serverkit import LiveServer, Server, assert_problem

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["map_id", "signed_in"]  # the fixtures, used by name


def test_a_package_file_redirects_to_s3_which_serves_it(
    server: Server, storage_url: str, s3_client: S3Client, s3_endpoint: str
) -> None:
    settings = ServerSettings(
        data_dir=server.data_dir, storage_url=storage_url, download_redirect_s=600
    )
    with TestClient(create_app(settings)) as client:
        editor = server.token("editor")
        answer = client.post(
            _href(server), json={"title": "A", "bbox": SERVER_BBOX}, headers=editor
        )
        assert answer.status_code == 201, answer.text
        area = _packaged_with(client, server, answer.json())
        entry = next(e for e in area["package"]["files"] if e["path"].endswith(".gpkg"))
        crew = server.token("editor", "maps:read offline:sync")
        assert_problem(client.get(entry["href"], follow_redirects=False), 401)  # checks first
        moved = client.get(entry["href"], headers=crew, follow_redirects=False)
        assert moved.status_code == 307
        assert moved.headers["cache-control"] == "no-store"
        location = moved.headers["location"]
        assert location.startswith(s3_endpoint)  # the bytes come from the bucket
        whole = httpx.get(location)  # no token: the URL is the credential
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).hexdigest() == entry["sha256"]
        part = httpx.get(location, headers={"Range": "bytes=10-19"})
        assert (part.status_code, part.content) == (206, whole.content[10:20])
        tampered = location.replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert httpx.get(tampered).status_code == 403


def _packaged_with(client: TestClient, server: Server, answer: dict[str, Any]) -> dict[str, Any]:
    """The area once packaged, read through ``client``'s server."""
    wait(client.app.state.services.jobs, answer["job_id"])  # type: ignore[attr-defined]
    found: dict[str, Any] = client.get(_href(server, answer["id"])).json()
    assert found["status"] == "complete", found
    return found


class Recording(httpx.BaseTransport):
    """Records each request's URL path and whether it carried a token."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[tuple[str, bool, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        path = urlsplit(str(request.url)).path
        self.seen.append((path, "authorization" in request.headers, response.status_code))
        return response

    def close(self) -> None:
        self.inner.close()


def test_the_sdk_downloads_a_package_through_the_redirects(
    live_server: LiveServer,
    signed_in: Callable[..., Portal],
    map_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = live_server.server.client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(services.settings, "download_redirect_s", 600)
    OfflineMapAreaManager(signed_in(), map_id).create(title="North", bbox=BBOX, wait=True)
    transport = Recording()
    task, area = _device_area(signed_in(transport=transport), map_id)
    area.load()
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    task.download_preplanned_offline_map(parameters, tmp_path / "device").wait()
    assert verify_package(tmp_path / "device").ok
    files = [
        seen for seen in transport.seen if seen[0].startswith("/api/") and "/files/" in seen[0]
    ]
    stored = [seen for seen in transport.seen if seen[0].startswith("/storage/")]
    assert files
    assert all(status == 307 for _, _, status in files), files
    assert len(stored) == len(files)
    assert all(status == 200 for _, _, status in stored)


def test_a_job_file_redirects_to_the_data_folders_storage_route(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = server.client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(services.settings, "download_redirect_s", 600)
    editor = server.token("editor")
    started = server.client.post(
        f"/api/maps/{server.public_map}/offline/jobs", json=BODY, headers=editor
    )
    assert started.status_code == 201, started.text
    job = wait(services.jobs, started.json()["id"])
    entry = job.result["files"][0]  # type: ignore[index]
    url = f"/api/jobs/{job.id}/files/{entry['path']}"
    assert_problem(server.client.get(url, follow_redirects=False), 401)
    moved = server.client.get(url, headers=editor, follow_redirects=False)
    assert moved.status_code == 307
    location = urlsplit(moved.headers["location"])
    assert location.path.startswith(f"/storage/jobs/{job.id}/files/")
    got = server.client.get(f"{location.path}?{location.query}")  # the token is in the URL
    assert hashlib.sha256(got.content).hexdigest() == entry["sha256"]
    forged = server.client.get(location.path)
    assert forged.status_code == 403
