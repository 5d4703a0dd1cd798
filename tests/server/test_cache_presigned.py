"""Presigned URLs of tile caches: downloads straight from storage, uploads with a grant and a
commit, on the data folder (this server's /storage route) and on S3 (SeaweedFS checks them)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from offmaps.containers.base import TilesetMetadata
from offmaps.server.app import create_app
from offmaps.services import Services
from offmaps.settings import ServerSettings
from offmaps.types import Tile, TileFormat
from tests.jobs.test_jobs import wait
from tests.s3kit import ADMIN, BUCKET, empty
from tests.server.test_tiles import write_archive
from tests.serverkit import PASSWORD, assert_problem
from tests.tilegen import sample_tiles

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PNG_TILES = sample_tiles(TileFormat.PNG, maxzoom=2, duplicate=False)
WORLD = {"geometry": {"type": "Polygon", "coordinates": [
    [[-180, -85], [180, -85], [180, 85], [-180, 85], [-180, -85]]]}}  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"


class App:
    """A server with a seeded cache ``world`` and users ``cacher`` (cache:write), ``reader``
    (cache:read), ``other`` (cache:write) and ``viewer`` (maps:read)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.services: Services = client.app.state.services  # type: ignore[attr-defined]

    def token(self, user: str) -> dict[str, str]:
        response = self.client.post(
            "/oauth2/token",
            data={"grant_type": "password", "username": user, "password": PASSWORD},
        )
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _app(tmp_path: Path, **settings: Any) -> Iterator[App]:
    app = create_app(ServerSettings(data_dir=tmp_path / "data", **settings))
    users = app.state.services.users
    users.add_user("cacher", PASSWORD, scopes=("cache:write",))
    users.add_user("other", PASSWORD, scopes=("cache:write",))
    users.add_user("reader", PASSWORD, scopes=("cache:read",))
    users.add_user("viewer", PASSWORD, scopes=("maps:read",))
    users.add_user("admin", PASSWORD, scopes=("admin",))
    archive = write_archive(
        tmp_path / "source.mbtiles",
        TilesetMetadata(tile_format=TileFormat.PNG, minzoom=0, maxzoom=2),
        PNG_TILES,
    )
    with TestClient(app) as client:
        found = App(client)
        cacher = found.token("cacher")
        created = client.post(
            "/api/caches",
            json={
                "name": "world",
                "source": {"kind": "archive", "location": str(archive)},
                "max_zoom": 2,
            },
            headers=cacher,
        )
        assert created.status_code == 201, created.text
        seeded = client.post(
            "/api/caches/world/seed",
            json={"area": WORLD, "min_zoom": 0, "max_zoom": 2},
            headers=cacher,
        )
        assert wait(found.services.jobs, seeded.json()["id"]).status.value == "succeeded"
        yield found


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    yield from _app(tmp_path)


def _all_urls(app: App, **body: Any) -> list[dict[str, Any]]:
    urls: list[dict[str, Any]] = []
    after = None
    while True:
        page = app.client.post(
            "/api/caches/world/urls",
            json={"area": WORLD, "min_zoom": 0, "max_zoom": 2, **body, "after": after},
            headers=app.token("reader"),
        )
        assert page.status_code == 200, page.text
        urls += page.json()["urls"]
        after = page.json()["next"]
        if after is None:
            return urls


def _tampered(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- downloads ----------------------------------------------------------------------------


def test_presigned_urls_of_an_area_page_through_every_stored_tile(app: App) -> None:
    urls = _all_urls(app, limit=5)
    assert len(urls) == len(PNG_TILES)
    assert len({(u["z"], u["x"], u["y"]) for u in urls}) == len(urls)  # no tile twice
    for url in urls:
        fetched = app.client.get(url["url"])  # no bearer token: the URL is the credential
        assert fetched.status_code == 200, fetched.text
        assert hashlib.sha256(fetched.content).hexdigest() == url["sha256"]
        assert fetched.content == PNG_TILES[Tile(url["x"], url["y"], url["z"])]


def test_presigned_urls_of_listed_tiles_leave_out_what_is_not_stored(app: App) -> None:
    tile = next(iter(PNG_TILES))
    absent = next(
        {"z": z, "x": x, "y": y}
        for z in range(3)
        for x in range(2**z)
        for y in range(2**z)
        if Tile(x, y, z) not in PNG_TILES
    )
    answer = app.client.post(
        "/api/caches/world/urls",
        json={"tiles": [{"z": tile.z, "x": tile.x, "y": tile.y}, absent]},
        headers=app.token("reader"),
    )
    urls = answer.json()["urls"]
    assert [(u["z"], u["x"], u["y"]) for u in urls] == [(tile.z, tile.x, tile.y)]


def test_a_tampered_foreign_or_other_method_url_is_refused(app: App) -> None:
    url = _all_urls(app)[0]["url"]
    token = dict(parse_qsl(urlsplit(url).query))["token"]
    other = _all_urls(app)[1]["url"]
    attempts = [
        app.client.get(_tampered(url, token=token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))),
        app.client.get(urlunsplit(urlsplit(other)._replace(query=urlsplit(url).query))),
        app.client.put(url, content=PNG + b"x"),
        app.client.get(url.split("?")[0]),
    ]
    for response in attempts:
        assert_problem(response, 403)


def test_an_expired_url_is_refused(app: App) -> None:
    url = _all_urls(app, expires_s=1)[0]["url"]
    assert app.client.get(url).status_code == 200
    time.sleep(2.1)
    assert_problem(app.client.get(url), 403)


def test_a_tile_request_may_be_redirected_to_a_presigned_url(app: App) -> None:
    tile = next(iter(PNG_TILES))
    path = f"/tiles/world/{tile.z}/{tile.x}/{tile.y}"
    admin = app.token("admin")
    redirected = app.client.get(f"{path}?redirect=presigned", headers=admin, follow_redirects=False)
    assert redirected.status_code == 307
    assert "/storage/tile-blobs/" in redirected.headers["location"]
    assert app.client.get(redirected.headers["location"]).content == PNG_TILES[tile]
    assert app.client.get(path, headers=admin).content == PNG_TILES[tile]  # no redirect asked
    assert_problem(app.client.get(f"{path}?redirect=elsewhere", headers=admin), 422)


def test_urls_need_cache_read(app: App) -> None:
    body = {"area": WORLD, "min_zoom": 0, "max_zoom": 1}
    assert_problem(app.client.post("/api/caches/world/urls", json=body), 401)
    assert_problem(
        app.client.post("/api/caches/world/urls", json=body, headers=app.token("viewer")), 403
    )


# --- uploads ------------------------------------------------------------------------------


def _grant(app: App, tiles: dict[tuple[int, int, int], bytes], user: str = "cacher",
           **body: Any) -> dict[str, Any]:  # fmt: skip
    answer = app.client.post(
        "/api/caches/world/uploads",
        json={
            "tiles": [
                {"z": z, "x": x, "y": y, "sha256": hashlib.sha256(data).hexdigest(),
                 "size": len(data)}
                for (z, x, y), data in tiles.items()
            ],
            **body,
        },
        headers=app.token(user),
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    grant: dict[str, Any] = answer.json()
    return grant


def _put(app: App, upload: dict[str, Any], data: bytes) -> Any:
    return app.client.put(upload["url"], content=data, headers=upload["headers"])


def test_an_upload_is_invisible_until_committed_then_served(app: App) -> None:
    fresh = {(2, 0, 0): PNG + b"field render a", (2, 1, 0): PNG + b"field render b"}
    grant = _grant(app, fresh)
    for upload in grant["uploads"]:
        assert _put(app, upload, fresh[(upload["z"], upload["x"], upload["y"])]).status_code == 201
    admin = app.token("admin")
    assert app.client.get("/tiles/world/2/0/0", headers=admin).content != fresh[(2, 0, 0)]
    assert app.services.caches.gc().deleted == 0  # uploaded, not committed: kept
    committed = app.client.post(grant["commit"], headers=app.token("cacher"))
    assert committed.status_code == 200, committed.text
    assert committed.json()["changed"] == 2
    assert app.client.get("/tiles/world/2/0/0", headers=admin).content == fresh[(2, 0, 0)]
    assert app.client.get("/tiles/world/2/1/0", headers=admin).content == fresh[(2, 1, 0)]
    assert_problem(app.client.post(grant["commit"], headers=app.token("cacher")), 409)  # replay


def test_bytes_that_do_not_hash_to_the_declared_sha256_are_refused(app: App) -> None:
    grant = _grant(app, {(2, 0, 0): PNG + b"declared"})
    (upload,) = grant["uploads"]
    assert_problem(_put(app, upload, PNG + b"something else"), 422)
    refused = app.client.post(grant["commit"], headers=app.token("cacher"))
    problem = assert_problem(refused, 422)
    assert problem["failures"] == ["2/0/0: not uploaded"]
    stored = app.client.get("/tiles/world/2/0/0", headers=app.token("admin"))
    assert stored.content == PNG_TILES[Tile(0, 0, 2)]


def test_a_commit_with_a_tile_missing_changes_nothing(app: App) -> None:
    fresh = {(2, 0, 0): PNG + b"one", (2, 1, 0): PNG + b"two"}
    grant = _grant(app, fresh)
    first = grant["uploads"][0]
    _put(app, first, fresh[(first["z"], first["x"], first["y"])])
    assert_problem(app.client.post(grant["commit"], headers=app.token("cacher")), 422)
    admin = app.token("admin")
    for z, x, y in fresh:
        served = app.client.get(f"/tiles/world/{z}/{x}/{y}", headers=admin)
        assert served.content == PNG_TILES[Tile(x, y, z)]


def test_an_expired_or_foreign_grant_is_refused(app: App) -> None:
    fresh = {(1, 0, 0): PNG + b"late"}
    grant = _grant(app, fresh, expires_s=1)
    _put(app, grant["uploads"][0], fresh[(1, 0, 0)])
    assert_problem(app.client.post(grant["commit"], headers=app.token("other")), 404)
    time.sleep(2.1)
    assert_problem(app.client.post(grant["commit"], headers=app.token("cacher")), 410)
    unknown = grant["commit"].replace(grant["id"], uuid.uuid4().hex)
    assert_problem(app.client.post(unknown, headers=app.token("cacher")), 404)


@pytest.mark.parametrize(
    "tile",
    [
        {"z": 9, "x": 0, "y": 0, "sha256": "0" * 64, "size": 10},  # beyond the cache's levels
        {"z": 1, "x": 2, "y": 0, "sha256": "0" * 64, "size": 10},  # outside the matrix
        {"z": 1, "x": 0, "y": 0, "sha256": "../../etc/passwd", "size": 10},
        {"z": 1, "x": 0, "y": 0, "sha256": "0" * 64, "size": 0},
        {"z": 1, "x": 0, "y": 0, "sha256": "0" * 64, "size": 10**9},
    ],
)
def test_a_bad_upload_request_is_refused(app: App, tile: dict[str, Any]) -> None:
    answer = app.client.post(
        "/api/caches/world/uploads", json={"tiles": [tile]}, headers=app.token("cacher")
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert_problem(answer, answer.status_code)


def test_uploads_need_cache_write_before_the_body(app: App) -> None:
    for headers, status in (({}, 401), (app.token("reader"), 403)):
        answer = app.client.post("/api/caches/world/uploads", content=b"{not json", headers=headers)
        assert_problem(answer, status)


# --- on S3: SeaweedFS checks the signatures ---------------------------------------------------


@pytest.fixture
def s3_app(
    tmp_path: Path, s3_client: S3Client, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    prefix = f"t/{uuid.uuid4().hex}"
    monkeypatch.setenv("OFFMAPS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("OFFMAPS_S3_ACCESS_KEY_ID", ADMIN[0])
    monkeypatch.setenv("OFFMAPS_S3_SECRET_ACCESS_KEY", ADMIN[1])
    yield from _app(tmp_path, storage_url=f"s3://{BUCKET}/{prefix}")
    empty(s3_client, BUCKET, prefix + "/")


def test_on_s3_devices_download_and_upload_straight_from_storage(
    s3_app: App, s3_endpoint: str
) -> None:
    urls = _all_urls(s3_app)
    assert len(urls) == len(PNG_TILES)
    with httpx.Client() as direct:
        for url in urls[:5]:
            assert url["url"].startswith(s3_endpoint)
            fetched = direct.get(url["url"])
            assert fetched.status_code == 200
            assert hashlib.sha256(fetched.content).hexdigest() == url["sha256"]
        signature = dict(parse_qsl(urlsplit(urls[0]["url"]).query))["X-Amz-Signature"]
        forged = _tampered(urls[0]["url"], **{"X-Amz-Signature": signature[::-1]})
        assert direct.get(forged).status_code == 403
        fresh = {(2, 0, 0): PNG + b"from the field"}
        grant = _grant(s3_app, fresh)
        (upload,) = grant["uploads"]
        assert upload["url"].startswith(s3_endpoint)
        wrong = direct.put(upload["url"], content=PNG + b"other", headers=upload["headers"])
        assert wrong.status_code in (400, 403)  # S3 refuses bytes of another SHA-256
        assert_problem(s3_app.client.post(grant["commit"], headers=s3_app.token("cacher")), 422)
        put = direct.put(upload["url"], content=fresh[(2, 0, 0)], headers=upload["headers"])
        assert put.status_code == 200, put.text
    committed = s3_app.client.post(grant["commit"], headers=s3_app.token("cacher"))
    assert committed.status_code == 200, committed.text
    served = s3_app.client.get("/tiles/world/2/0/0", headers=s3_app.token("admin"))
    assert served.content == fresh[(2, 0, 0)]
    redirected = s3_app.client.get(
        "/tiles/world/2/0/0?redirect=presigned",
        headers=s3_app.token("admin"),
        follow_redirects=False,
    )
    assert redirected.status_code == 307
    assert redirected.headers["location"].startswith(s3_endpoint)
    assert httpx.get(redirected.headers["location"]).content == fresh[(2, 0, 0)]
