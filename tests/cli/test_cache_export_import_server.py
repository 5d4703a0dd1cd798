"""``offmaps cache export|import --server``: exports and imports as jobs of a server, with the
export's files downloaded (resumably) and the import's archive uploaded in resumable parts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from offmaps.cache import CacheDefinition, CacheSource, SourceKind, store_tiles
from offmaps.cache.export import CacheTileReader
from offmaps.cli import main
from offmaps.client import Portal
from offmaps.client import caches as caches_sdk
from offmaps.client.caches import TileCaches
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers.export import export_tiles, plan_export
from offmaps.services import Services
from offmaps.tiling import AreaOfInterest, area_from_bbox, get_tms, tile_cover
from offmaps.types import Tile, TileFormat, ZoomRange
from tests.serverkit import PASSWORD, LiveServer
from tests.tilegen import make_tile

# levels 3-4 of northern Europe and Siberia; the area holds some tiles whole and cuts others
TILES = {
    tile: make_tile(tile, TileFormat.PNG, size=256)
    for z in (3, 4)
    for tile in (Tile(x, y, z) for x in range(2**z // 2, 2**z // 2 + 3) for y in range(1, 4))
}
BBOX = "0,40,70,75"
ZOOMS = "3-4"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def services_of(live_server: LiveServer) -> Services:
    services: Services = live_server.server.client.app.state.services  # type: ignore[attr-defined]
    return services


@pytest.fixture
def at(
    live_server: LiveServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[str, str]:
    """``--server URL`` of a server with cache ``base`` (PNG tiles of levels 3-4), signed in
    as ``cacher`` (cache:write)."""
    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "config"))
    # the test server takes bodies of at most 256 KiB: send the archive in small parts
    monkeypatch.setattr(caches_sdk, "ARCHIVE_PART_BYTES", 4096)
    services = services_of(live_server)
    services.users.add_user("cacher", PASSWORD, scopes=("cache:write",))
    services.users.add_user("reader", PASSWORD, scopes=("cache:read",))
    source = CacheSource(kind=SourceKind.XYZ, location="http://127.0.0.1:9/{z}/{x}/{y}.png")
    services.caches.index.create_cache(CacheDefinition(name="base", source=source, max_zoom=10))
    store_tiles(services.caches.index, services.caches.blobs, "base", list(TILES.items()))
    login("cacher", live_server, monkeypatch, capsys)
    return ("--server", live_server.url)


def login(
    user: str,
    live_server: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, _, err = run(capsys, "login", live_server.url, "-u", user, "--password-stdin")
    assert code == 0, err


def local_export(live_server: LiveServer, destination: Path) -> dict[Tile, bytes]:
    """The same export, run on the server's own stores: what the download must hold."""
    caches = services_of(live_server).caches
    reader = CacheTileReader(caches.index, caches.blobs, "base")
    aoi = AreaOfInterest.from_bbox(0, 40, 70, 75)
    export_tiles(reader, str(destination), plan_export(reader, aoi=aoi, zooms=ZoomRange(3, 4)))
    with open_reader(destination) as exported:
        return dict(exported.iter_tiles())


def tiles_of(location: str) -> dict[Tile, bytes]:
    with open_reader(location) as reader:
        return dict(reader.iter_tiles())


@pytest.mark.parametrize("container", ["out.mbtiles", "esri-compact:out", "out.pmtiles"])
def test_an_export_through_the_server_downloads_what_a_local_export_writes(
    at: tuple[str, str],
    live_server: LiveServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    container: str,
) -> None:
    kind, _, name = container.rpartition(":")
    dst = f"{kind}:{tmp_path / name}" if kind else str(tmp_path / name)
    code, out, err = run(
        capsys, "cache", "export", "base", dst, "--bbox", BBOX, "--zooms", ZOOMS, "--json", *at
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["clipped"] > 0
    assert result["copied"] > 0
    assert result["written"] == result["copied"] + result["clipped"]
    expected = local_export(live_server, tmp_path / "expected.mbtiles")
    assert tiles_of(dst) == expected
    assert not list(tmp_path.glob(".*download"))  # the download folder is gone
    if kind == "esri-compact":
        assert (tmp_path / name / "conf.xml").is_file()
        assert (tmp_path / name / "conf.cdi").is_file()
    # the files stay on the server for download until the job is removed
    job = services_of(live_server).jobs.get(result["job"])
    assert job.result is not None
    assert [f["path"] for f in job.result["files"]] == [f["path"] for f in result["files"]]


def test_an_interrupted_download_goes_on_with_the_job_id(
    at: tuple[str, str], live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Portal(live_server.url) as portal:
        portal.login("cacher", PASSWORD)
        caches = TileCaches(portal)
        job = caches.export("base", area_from_bbox(0, 40, 70, 75), ZoomRange(3, 4))
        result = caches.wait(job)
    (entry,) = result["files"]
    assert entry["path"] == "base.mbtiles"
    whole = live_server.server.client.get(
        f"/api/jobs/{job['id']}/files/base.mbtiles",
        headers=live_server.server.token("cacher"),
    ).content
    assert hashlib.sha256(whole).hexdigest() == entry["sha256"]
    # what an interrupted first try left: half the file
    download = tmp_path / f".out.mbtiles.{job['id']}.download"
    download.mkdir()
    (download / "base.mbtiles.part").write_bytes(whole[: len(whole) // 2])
    dst = str(tmp_path / "out.mbtiles")
    code, _, err = run(capsys, "cache", "export", "base", dst, "--job", job["id"], *at)
    assert code == 0, err
    assert (tmp_path / "out.mbtiles").read_bytes() == whole
    assert not download.exists()


def test_the_export_limit_of_the_cache_is_checked_before_the_job(
    at: tuple[str, str], live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    caches = services_of(live_server).caches
    definition = caches.definition("base")
    caches.index.delete_cache("base")
    caches.index.create_cache(definition.model_copy(update={"export_max_tiles": 5}))
    dst = str(tmp_path / "out.mbtiles")
    code, _, err = run(
        capsys, "cache", "export", "base", dst, "--bbox", BBOX, "--zooms", ZOOMS, *at
    )
    assert code == 1
    assert "limit of 5" in err or "5 tiles" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not Path(dst).exists()
    assert list(services_of(live_server).jobs.store.iter_jobs()) == []


def test_an_export_over_http_refuses_bad_bodies_and_callers(
    at: tuple[str, str], live_server: LiveServer
) -> None:
    client = live_server.server.client
    url = "/api/caches/base/export"
    area = area_from_bbox(0, 40, 70, 75).model_dump(mode="json")
    body = {"area": area, "min_zoom": 3, "max_zoom": 4}
    assert client.post(url, json=body).status_code == 401  # signed in, first
    reader = live_server.server.token("reader")
    counted = client.post(url, json={**body, "dry_run": True}, headers=reader)
    assert counted.status_code == 200
    cover = tile_cover(
        AreaOfInterest.from_bbox(0, 40, 70, 75), get_tms("WebMercatorQuad"), ZoomRange(3, 4)
    )
    assert counted.json()["tiles"] == cover.total
    assert counted.json()["max_tiles"] == 100_000
    for bad in (
        {**body, "format": "zip"},
        {**body, "background": "purple"},
        {**body, "min_zoom": 5, "max_zoom": 4},
        {**body, "area": {"geometry": {"type": "Point", "coordinates": [0, 0]}}},
        {**body, "cache": "other"},
        {"min_zoom": 3, "max_zoom": 4},
    ):
        answer = client.post(url, json=bad, headers=reader)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    missing = client.post("/api/caches/nope/export", json=body, headers=reader)
    assert missing.status_code == 404
    far = {**body, "area": area_from_bbox(-120, -40, -110, -30).model_dump(mode="json")}
    assert client.post(url, json=far, headers=reader).status_code == 400


def overlay(path: Path) -> dict[Tile, bytes]:
    """An MBTiles of level 4 tiles that are transparent but for a red square each."""
    from PIL import Image  # noqa: PLC0415

    tiles = {}
    for x, y in ((8, 2), (9, 2), (8, 3)):
        image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
        image.paste((255, 0, 0, 255), (100, 100, 140, 140))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        tiles[Tile(x, y, 4)] = buffer.getvalue()
    meta = TilesetMetadata(
        tile_format=TileFormat.PNG, tms=get_tms("WebMercatorQuad"), minzoom=4, maxzoom=4
    )
    with open_writer(path, meta) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return tiles


def test_an_import_through_the_server_uploads_the_archive_and_merges(
    at: tuple[str, str], live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image  # noqa: PLC0415

    archive = tmp_path / "overlay.mbtiles"
    incoming = overlay(archive)
    assert archive.stat().st_size > 4096  # more than one part
    code, out, err = run(capsys, "cache", "import", str(archive), "base", "--json", *at)
    assert code == 0, err
    result = json.loads(out)
    assert (result["imported"], result["merged"], result["failures"]) == (3, 3, 0)
    caches = services_of(live_server).caches
    reader = CacheTileReader(caches.index, caches.blobs, "base")
    for tile in incoming:
        merged = Image.open(io.BytesIO(reader.get_tile(tile))).convert("RGBA")
        base = Image.open(io.BytesIO(TILES[tile])).convert("RGBA")
        assert merged.getpixel((120, 120)) == (255, 0, 0, 255)  # the overlay's square
        assert merged.getpixel((10, 10)) == base.getpixel((10, 10))  # the basemap around it
    # the archive is removed once imported
    assert list(services_of(live_server).archives.objects.list()) == []


def test_an_interrupted_upload_goes_on_from_what_the_server_has(
    at: tuple[str, str], live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "overlay.mbtiles"
    overlay(archive)
    data = archive.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    client = live_server.server.client
    headers = {**live_server.server.token("cacher"), "Content-Type": "application/octet-stream"}
    url = f"/api/cache-archives/{sha256}"
    third = len(data) // 3
    first = client.put(
        url, params={"offset": 0, "total": len(data)}, content=data[:third], headers=headers
    )
    assert first.json() == {"sha256": sha256, "received": third, "complete": False}
    wrong = client.put(
        url, params={"offset": 10, "total": len(data)}, content=data[10:20], headers=headers
    )
    assert wrong.status_code == 409  # the server says where to go on from
    sent: list[int] = []
    with Portal(live_server.url) as portal:
        portal.login("cacher", PASSWORD)
        assert TileCaches(portal).upload_archive(archive, on_progress=lambda n, _: sent.append(n))
    assert sent[0] > third
    assert sent[-1] == len(data)
    assert client.get(url, headers=headers).json()["complete"] is True


def test_bad_archives_and_callers_are_refused(
    at: tuple[str, str], live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = live_server.server.client
    data = b"not a tile archive" * 100
    sha256 = hashlib.sha256(data).hexdigest()
    url = f"/api/cache-archives/{sha256}"
    params = {"offset": 0, "total": len(data)}
    assert client.put(url, params=params, content=data).status_code == 401
    reader = live_server.server.token("reader")
    assert client.put(url, params=params, content=data, headers=reader).status_code == 403
    writer = live_server.server.token("cacher")
    named = client.put("/api/cache-archives/xyz", params=params, content=data, headers=writer)
    assert named.status_code == 422
    lying = hashlib.sha256(b"other").hexdigest()
    refused = client.put(
        f"/api/cache-archives/{lying}", params=params, content=data, headers=writer
    )
    assert refused.status_code == 422  # the bytes do not hash to the name
    big = client.put(url, params={"offset": 0, "total": 10**15}, content=b"", headers=writer)
    assert big.status_code == 413
    body = {"archive": sha256, "archive_format": "mbtiles"}
    assert client.post("/api/caches/base/import", json=body, headers=writer).status_code == 404
    assert client.put(url, params=params, content=data, headers=writer).json()["complete"]
    for bad in (
        {**body, "archive_format": "esri-compact"},
        {**body, "archive": "../../etc/passwd"},
        {**body, "min_zoom": 3},
        {**body, "background": "#12"},
    ):
        answer = client.post("/api/caches/base/import", json=bad, headers=writer)
        assert answer.status_code in (400, 422), (bad, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    answer = client.post("/api/caches/base/import", json=body, headers=reader)
    assert answer.status_code == 403
    job = client.post("/api/caches/base/import", json=body, headers=writer).json()
    done = wait(live_server, job["id"])
    assert done["status"] == "failed"
    assert "traceback" not in done["error"].lower()
    # a failed import keeps the archive, for another try
    assert services_of(live_server).archives.objects.exists(sha256)


def wait(live_server: LiveServer, job_id: str) -> dict[str, Any]:
    client = live_server.server.client
    headers = live_server.server.token("cacher")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state: dict[str, Any] = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if state["status"] in ("succeeded", "failed", "cancelled"):
            return state
        time.sleep(0.05)
    pytest.fail(f"job {job_id} did not end")


def test_the_cli_refuses_what_a_server_cannot_import_before_uploading(
    at: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "overlay.mbtiles"
    overlay(archive)
    code, _, err = run(capsys, "cache", "import", str(archive), "nope", *at)
    assert code == 1
    assert "nope" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "cache", "import", f"esri-compact:{tmp_path}", "base", *at)
    assert code == 1
    assert "offmaps tiles convert" in err
    code, _, err = run(capsys, "cache", "import", str(tmp_path / "gone.mbtiles"), "base", *at)
    assert code == 1
    assert "no such file" in err
    out = str(tmp_path / "o.mbtiles")
    for job in ("0" * 32, "../../etc/passwd"):  # no such job; a path, not a job id
        code, _, err = run(capsys, "cache", "export", "base", out, "--job", job, *at)
        assert code == 1
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o.mbtiles").exists()
    code, _, err = run(capsys, "cache", "export", "base", str(archive), "--bbox", BBOX, *at)
    assert code == 1
    assert "exists" in err  # never overwritten without --overwrite-tiles


def test_expired_jobs_archives_and_parts_are_removed(
    at: tuple[str, str], live_server: LiveServer, tmp_path: Path
) -> None:
    services = services_of(live_server)
    data = b"archive bytes"
    sha256 = hashlib.sha256(data).hexdigest()
    services.archives.objects.put(sha256, data)
    part = services.archives.folder / "someone" / f"{'0' * 64}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half")
    services.cleanup()  # young: kept
    assert services.archives.objects.exists(sha256)
    assert part.exists()
    old = time.time() - services.settings.job_keep_s - 10
    os.utime(part, (old, old))
    stored = services.settings.data_dir / "objects" / "cache-archives" / sha256
    os.utime(stored, (old, old))
    services.cleanup()
    assert not services.archives.objects.exists(sha256)
    assert not part.exists()
