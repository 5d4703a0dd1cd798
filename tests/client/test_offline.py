"""On-demand offline maps end to end: the SDK against a listening server, real files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI

from offmaps.cli import cli
from offmaps.client import Portal
from offmaps.client import downloads as downloads_sdk
from offmaps.client.offline import AsyncOfflineMapTask, JobStatus, OfflineMapTask, PortalItem
from offmaps.containers import TilesetMetadata, open_writer
from offmaps.errors import (
    DownloadError,
    ExportLimitError,
    InvalidOfflineParametersError,
    JobFailedError,
    WebMapNotFoundError,
)
from offmaps.features.model import FeatureQuery, Insert
from offmaps.jobs import Job
from offmaps.offline.generate import GENERATE_OFFLINE_MAP
from offmaps.offline.package import verify_package
from offmaps.offline.parameters import (
    CapabilityReason,
    OfflineItemInfo,
    area_from_bbox,
    encode_thumbnail,
)
from offmaps.schemas import WebMap
from offmaps.schemas.jobs import JobStatus as ServerJobStatus
from offmaps.sources import ArchiveTileSource
from offmaps.storage import ObjectStore
from offmaps.tiling import get_tms
from offmaps.types import BBox, Tile, TileFormat
from tests.cli.test_users import run
from tests.serverkit import PASSWORD, LiveServer, Server, webmap_document
from tests.tilegen import make_tile

# sites 0-9 lie at longitudes 24.90-24.99, latitude 60.1 (tests/serverkit.py)
AREA = area_from_bbox(24.895, 60.05, 24.995, 60.15)
EDIT = {"create": True, "update": True, "delete": True}


def offline_map(
    server: LiveServer, *, basemap_limit: int = 100_000, extra: tuple[dict[str, Any], ...] = ()
) -> str:
    """A public web map of the test service made for offline use, with a raster basemap."""
    catalog = server.server.catalog
    store = catalog.feature_service("city")
    store.apply_edits(
        [Insert("inspections", {"site_osm_id": i, "result": "ok"}, None) for i in (1, 2, 20)]
    )
    archive = server.server.data_dir / "tiles" / "basemap.mbtiles"
    with open_writer(str(archive), TilesetMetadata(tile_format=TileFormat.PNG)) as writer:
        for z in range(0, 9):
            for tile in _tiles_over_helsinki(z):
                writer.write_tile(tile, make_tile(tile, TileFormat.PNG))
    catalog.tile_sources["basemap"] = ArchiveTileSource("basemap", archive)
    document: dict[str, Any] = webmap_document(
        title="Offline",
        public=True,
        layers=[
            {
                "type": "feature", "id": "sites", "title": "Sites", "service": "city",
                "layer": "sites", "editing": EDIT, "sync_enabled": True,
                "attachments_enabled": True,
            },
            {
                "type": "online_only", "id": "live", "title": "Live",
                "url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "kind": "xyz",
            },
            *extra,
        ],
        tables=[
            {
                "id": "inspections", "title": "Inspections", "service": "city",
                "layer": "inspections", "editing": EDIT, "sync_enabled": True,
            }
        ],
    )  # fmt: skip
    document["basemap"] = {
        "title": "Basemap",
        "layers": [
            {
                "type": "raster_tile", "id": "basemap", "title": "Basemap",
                "service": "basemap", "export_tiles_allowed": True,
                "max_export_tile_count": basemap_limit,
            }
        ],
    }  # fmt: skip
    document["relationships"] = [
        {
            "id": "site_inspections", "name": "Inspections", "origin": "sites",
            "destination": "inspections", "origin_key": "osm_id",
            "destination_key": "site_osm_id",
        }
    ]  # fmt: skip
    stored = catalog.webmaps.create(WebMap.model_validate(document), owner="editor")
    assert stored.id is not None
    return stored.id


def job_objects(server: LiveServer, job_id: str) -> list[str]:
    """The keys of what job ``job_id`` keeps in the server's object store."""
    objects: ObjectStore = cast(FastAPI, server.server.client.app).state.services.objects
    return [info.key for info in objects.list(f"jobs/{job_id}/")]


def _tiles_over_helsinki(z: int) -> list[Any]:
    tms = get_tms("WebMercatorQuad")
    return [Tile(t.x, t.y, t.z) for t in tms.tiles(24.8, 60.0, 25.2, 60.2, [z])]


def test_capabilities_and_an_estimate_before_any_work(
    live_server: LiveServer, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server))
    capabilities = task.get_offline_map_capabilities()
    assert capabilities.has_errors  # the online-only layer
    reasons = {c.layer_id: c.reason for c in capabilities.layers}
    assert reasons == {"basemap": None, "sites": None, "live": CapabilityReason.ONLINE_ONLY}

    parameters = task.create_default_generate_offline_map_parameters(AREA)
    estimate = task.estimate_offline_map(parameters)
    layers = {layer.layer_id: layer for layer in estimate.layers}
    assert layers["sites"].features == 10
    assert layers["basemap"].tiles is not None
    assert layers["basemap"].tiles > 0
    assert layers["basemap"].measured
    assert estimate.bytes > 0
    assert "live" in estimate.omitted


def test_generate_downloads_a_package_that_opens_offline(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    job = task.generate_offline_map(parameters, tmp_path / "download")
    seen: list[float] = []
    result = job.wait(poll_seconds=0.05, on_progress=lambda f, _: seen.append(f))
    assert job.status is JobStatus.SUCCEEDED
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert not result.has_errors

    report = verify_package(tmp_path / "download")
    assert report.ok, report.problems
    offline = result.offline_map
    layers = {layer.id: layer for layer in offline.layers}
    assert set(layers) == {"basemap", "sites"}
    with layers["sites"].open_features() as replica:
        sites = list(replica.iter_features("sites", FeatureQuery(limit=1000)))
        inspections = list(replica.iter_features("inspections", FeatureQuery(limit=1000)))
    assert sorted(int(str(f.properties["osm_id"])) for f in sites) == list(range(10))
    # related rows only: site 20 is outside the area
    assert sorted(int(str(r.properties["site_osm_id"])) for r in inspections) == [1, 2]
    with layers["basemap"].open_tiles() as reader:
        assert sum(1 for _ in reader.iter_tiles()) > 0
    (replica_entry,) = offline.replicas
    app = cast(FastAPI, live_server.server.client.app)
    registered = app.state.services.replicas.get(replica_entry.replica_id)
    assert registered.service == "city"
    assert registered.generation == replica_entry.generation >= 1
    assert (replica_entry.sync_model, registered.sync_model) == ("per_layer", "per_layer")
    assert replica_entry.attachment_sync_direction == "bidirectional"
    assert list((tmp_path / "download").rglob("*.part")) == []
    assert result.mobile_map_package.item.thumbnail == "thumbnail.png"
    assert (tmp_path / "download" / "thumbnail.png").read_bytes().startswith(b"\x89PNG")

    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 64  # the crew's own picture, and title
    item = OfflineItemInfo(title="Crew A", tags=("north",), thumbnail=encode_thumbnail(jpeg))
    own = parameters.model_copy(update={"item_info": item})
    mine = task.generate_offline_map(own, tmp_path / "own").wait(poll_seconds=0.05)
    assert (mine.mobile_map_package.item.title, mine.mobile_map_package.item.tags) == (
        "Crew A",
        ["north"],
    )
    assert (tmp_path / "own" / "thumbnail.jpg").read_bytes() == jpeg


QGIS_PYTHON = "/usr/bin/python3"  # Debian's: the only one that sees QGIS (scripts/clients.sh)


def test_the_package_opens_and_renders_in_qgis(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    task.generate_offline_map(parameters, tmp_path / "map").wait(poll_seconds=0.05)
    script = Path(__file__).parents[2] / "scripts" / "qgis_package.py"
    done = subprocess.run(
        [QGIS_PYTHON, str(script), str(tmp_path / "map"), str(tmp_path / "map.png")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert done.returncode == 0, (
        f"QGIS could not open the package (make test installs QGIS with scripts/clients.sh):\n"
        f"{done.stdout}\n{done.stderr[-2000:]}"
    )
    assert "ok   sites: 10 features" in done.stdout
    assert "ok   basemap: QgsRasterLayer" in done.stdout
    assert (tmp_path / "map.png").stat().st_size > 1000


def test_an_export_over_the_limit_fails_before_any_work(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server, basemap_limit=3))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    job = task.generate_offline_map(parameters, tmp_path / "download")
    with pytest.raises(
        ExportLimitError, match=r"would export [\d,]+ tiles .* levels 0-\d would fit"
    ):
        job.start()
    assert not (tmp_path / "download").exists()
    assert list((live_server.server.data_dir / "jobs").iterdir()) == []
    assert not (live_server.server.data_dir / "objects" / "jobs").exists()


def test_bad_requests_are_refused_before_any_work(
    live_server: LiveServer,
    tmp_path: Path,
    task_for: Callable[[LiveServer, str], OfflineMapTask],
    portals: list[Portal],
) -> None:
    map_id = offline_map(live_server)
    task = task_for(live_server, map_id)
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(InvalidOfflineParametersError, match="must be empty"):
        task.generate_offline_map(parameters, busy).start()
    overrides = task.create_generate_offline_map_parameter_overrides(parameters)
    overrides = overrides.model_copy(update={"online_only_layers": ("nope",)})
    with pytest.raises(InvalidOfflineParametersError, match="no layer 'nope'"):
        task.estimate_offline_map(parameters, overrides)
    far = task.create_default_generate_offline_map_parameters(area_from_bbox(10, 10, 11, 11))
    placed = task.webmap  # the fixture map has no extent: every area is inside it
    assert placed.initial_extent is None
    far_layers = {layer.layer_id: layer for layer in task.estimate_offline_map(far).layers}
    assert far_layers["sites"].features == 0
    missing = parameters.model_copy(
        update={
            "reference_basemap_directory": str(tmp_path),
            "reference_basemap_filename": "a.mbtiles",
        }
    )
    with pytest.raises(InvalidOfflineParametersError, match="no such reference basemap"):
        task.generate_offline_map(missing, tmp_path / "d").start()
    anonymous = Portal(live_server.url)
    portals.append(anonymous)
    stranger = OfflineMapTask(PortalItem(anonymous, "0" * 32))
    with pytest.raises(WebMapNotFoundError):
        stranger.estimate_offline_map(parameters)


def test_an_interrupted_download_resumes_with_ranges_and_checks_hashes(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    download = tmp_path / "download"
    job = task.generate_offline_map(parameters, download)
    job.start()
    while job.refresh()["status"] not in ("succeeded", "failed"):
        pass
    assert job.server_job is not None
    files = {entry["path"]: entry for entry in job.server_job["result"]["files"]}
    entry = files["city.gpkg"]
    with job.portal.stream(entry["href"], {}) as response:  # the reference bytes
        whole = response.read()
    assert hashlib.sha256(whole).hexdigest() == entry["sha256"]
    (download / "city.gpkg.part").write_bytes(whole[: len(whole) // 2])  # cut off midway
    result = job.resume()
    assert (download / "city.gpkg").read_bytes() == whole
    assert result.offline_map.layers

    corrupt = tmp_path / "again"
    job2 = task.generate_offline_map(parameters, corrupt)
    job2.start()
    while job2.refresh()["status"] != "succeeded":
        pass
    (corrupt / "city.gpkg.part").write_bytes(b"\x00" * (len(whole) // 2))  # wrong bytes
    with pytest.raises(DownloadError, match="SHA-256"):
        job2.resume()
    assert not (corrupt / "city.gpkg.part").exists()


def test_cancel_leaves_nothing_behind(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    job = task.generate_offline_map(parameters, tmp_path / "download")
    job.start()
    job.cancel()
    assert job.status is JobStatus.CANCELLED
    assert not (tmp_path / "download").exists()
    assert job.server_job is not None
    job_id = job.server_job["id"]
    for _ in range(200):
        state = job.portal.request("GET", f"/api/jobs/{job_id}")
        if state["status"] in ("cancelled", "succeeded"):
            break
    assert state["status"] in ("cancelled", "succeeded")
    if state["status"] == "cancelled":
        assert job_objects(live_server, job_id) == []
        assert not (live_server.server.data_dir / "scratch" / job_id).exists()


def test_the_cli_estimates_and_generates(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "config"))
    map_id = offline_map(live_server)
    common = ["--server", live_server.url, "--map", map_id, "--bbox", "24.895,60.05,24.995,60.15"]
    runner = CliRunner()
    login = runner.invoke(
        cli, ["login", live_server.url, "-u", "editor", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert login.exit_code == 0, login.output
    estimate = runner.invoke(cli, ["offline", "estimate", *common, "--json"])
    assert estimate.exit_code == 0, estimate.output
    assert json.loads(estimate.output)["features"] >= 10
    out = tmp_path / "map"
    generated = runner.invoke(cli, ["offline", "generate", *common, "--out", str(out), "--json"])
    assert generated.exit_code == 0, generated.output
    summary = json.loads(generated.output.strip().splitlines()[-1])
    assert summary["layers"] == ["basemap", "sites"]
    assert verify_package(out).ok


@pytest.mark.parametrize(
    "args",
    [
        ["--bbox", "1,2,3"],
        ["--bbox", "0,0,0,0"],
        ["--bbox", "24,60,25,61", "--min-scale", "5000", "--max-scale", "90000"],
        [],
    ],
)
def test_the_cli_refuses_bad_areas_and_scales_in_one_line(
    live_server: LiveServer, args: list[str]
) -> None:
    map_id = offline_map(live_server)
    code, _, err = run("offline", "estimate", "--server", live_server.url, "--map", map_id, *args)
    assert code != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_reference_basemap_on_the_device_replaces_the_download(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server))
    device = tmp_path / "device"
    device.mkdir()
    small = device / "small.mbtiles"
    metadata = TilesetMetadata(tile_format=TileFormat.PNG, bounds=BBox(24.9, 60.1, 24.91, 60.11))
    with open_writer(str(small), metadata) as writer:
        for tile in _tiles_over_helsinki(8)[:1]:
            writer.write_tile(tile, make_tile(tile, TileFormat.PNG))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    tiny = parameters.model_copy(
        update={
            "reference_basemap_directory": str(device),
            "reference_basemap_filename": "small.mbtiles",
        }
    )
    with pytest.raises(InvalidOfflineParametersError, match="not the whole area"):
        task.generate_offline_map(tiny, tmp_path / "a").start()
    (device / "junk.mbtiles").write_bytes(b"junk" * 100)
    junk = tiny.model_copy(update={"reference_basemap_filename": "junk.mbtiles"})
    with pytest.raises(InvalidOfflineParametersError, match="not a tile archive"):
        task.generate_offline_map(junk, tmp_path / "b").start()
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()

    # a device archive in another tiling scheme that covers the area: the map uses it, and its
    # spatial reference
    crs84 = device / "crs84.gpkg"
    metadata = TilesetMetadata(
        tile_format=TileFormat.PNG, tms=get_tms("WorldCRS84Quad"), bounds=BBox(24, 59, 26, 61)
    )
    with open_writer(str(crs84), metadata) as writer:
        writer.write_tile(Tile(0, 0, 0), make_tile(Tile(0, 0, 0), TileFormat.PNG))
    own = tiny.model_copy(update={"reference_basemap_filename": "crs84.gpkg"})
    result = task.generate_offline_map(own, tmp_path / "c").wait(poll_seconds=0.05)
    offline = result.offline_map
    assert offline.spatial_reference == "WorldCRS84Quad"
    assert offline.layers[0].path == crs84
    assert "basemap" not in [layer.id for layer in offline.layers]
    assert result.omitted["basemap"] == "a basemap on the device is used instead"
    assert verify_package(tmp_path / "c").ok


def test_a_world_sized_area_is_over_the_limit(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server, basemap_limit=5))
    world = task.create_default_generate_offline_map_parameters(area_from_bbox(-180, -85, 180, 85))
    estimate = task.estimate_offline_map(world)
    (basemap,) = [layer for layer in estimate.layers if layer.layer_id == "basemap"]
    # counted where the archive has tiles (its bounds, around Helsinki): one per level 0-8
    assert basemap.tiles == 9
    assert basemap.error is not None
    with pytest.raises(ExportLimitError, match="levels 0-4 would fit"):
        task.generate_offline_map(world, tmp_path / "world").start()


def test_continue_on_errors_decides_whether_a_failing_layer_stops_the_job(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server))
    store = live_server.server.catalog.feature_service("city")
    (site,) = store.query("sites", FeatureQuery(filters=("osm_id = 1",))).features
    lost = "0" * 64  # an attachment whose bytes are not in the blob store
    store.add_attachment(
        "sites", site.global_id, name="lost.jpg", content_type="image/jpeg", size=3, sha256=lost
    )
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    overrides = None
    result = task.generate_offline_map(parameters, tmp_path / "go-on").wait(poll_seconds=0.05)
    assert result.has_errors
    assert lost in result.layer_errors["sites"]
    assert "inspections" in result.table_errors
    assert [layer.id for layer in result.offline_map.layers] == ["basemap"]

    stop = parameters.model_copy(update={"continue_on_errors": False})
    job = task.generate_offline_map(stop, tmp_path / "stop", overrides)
    with pytest.raises(JobFailedError, match=lost):
        job.wait(poll_seconds=0.05)
    assert not (tmp_path / "stop").exists()
    assert job.server_job is not None
    assert job_objects(live_server, job.server_job["id"]) == []
    assert not (live_server.server.data_dir / "scratch" / job.server_job["id"]).exists()


def test_a_full_disk_on_the_device_is_a_clear_error_that_resume_continues(
    live_server: LiveServer,
    full_disk: Path,
    task_for: Callable[[LiveServer, str], OfflineMapTask],
) -> None:
    task = task_for(live_server, offline_map(live_server))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    (full_disk / "filler").write_bytes(b"\0" * 150_000)  # leaves less room than the map needs
    job = task.generate_offline_map(parameters, full_disk / "map")
    with pytest.raises(DownloadError, match=r"cannot write .* make room, then resume"):
        job.wait(poll_seconds=0.05)
    assert not (full_disk / "map" / "package.json").exists()


def test_the_async_sdk_does_the_same(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    item = task_for(live_server, offline_map(live_server)).item

    async def take_offline() -> tuple[bool, list[str]]:
        task = AsyncOfflineMapTask(item)
        parameters = await task.create_default_generate_offline_map_parameters(AREA)
        capabilities = await task.get_offline_map_capabilities(parameters)
        job = task.generate_offline_map(parameters, tmp_path / "map")
        result = await job.wait(poll_seconds=0.05)
        return capabilities.has_errors, [layer.id for layer in result.offline_map.layers]

    has_errors, layers = asyncio.run(take_offline())
    assert has_errors  # the online-only layer
    assert layers == ["basemap", "sites"]


def test_vector_tiles_built_from_feature_layers_are_exported_for_the_area(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    live = {
        "type": "vector_tile", "id": "sites-vt", "title": "Sites as tiles", "service": "city-vt",
        "export_tiles_allowed": True, "min_scale": 300_000, "max_scale": 20_000,
    }  # fmt: skip
    task = task_for(live_server, offline_map(live_server, extra=(live,)))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    result = task.generate_offline_map(parameters, tmp_path / "map").wait(poll_seconds=0.05)
    (layer,) = [layer for layer in result.offline_map.layers if layer.id == "sites-vt"]
    assert layer.kind == "vector_tile"
    with layer.open_tiles() as reader:
        tiles = dict(reader.iter_tiles())
        assert reader.metadata.tile_format is TileFormat.MVT
    assert tiles
    assert {tile.z for tile in tiles} <= set(range(11, 16))
    assert verify_package(tmp_path / "map").ok


def test_layers_kept_online_only_point_back_to_the_server(
    live_server: LiveServer, tmp_path: Path, task_for: Callable[[LiveServer, str], OfflineMapTask]
) -> None:
    task = task_for(live_server, offline_map(live_server))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    overrides = task.create_generate_offline_map_parameter_overrides(parameters)
    overrides = overrides.model_copy(update={"online_only_layers": ("inspections", "live")})
    result = task.generate_offline_map(parameters, tmp_path / "map", overrides).wait(
        poll_seconds=0.05
    )
    (table,) = result.offline_map.tables
    assert (table.id, table.kind) == ("inspections", "online_only")
    assert table.url == f"{live_server.url}/collections/city.inspections/items"
    live = [layer for layer in result.offline_map.layers if layer.id == "live"]
    assert [layer.url for layer in live] == ["https://tile.openstreetmap.org/{z}/{x}/{y}.png"]
    with next(
        layer for layer in result.offline_map.layers if layer.id == "sites"
    ).open_features() as replica:
        assert [s.name for s in replica.list_layers()] == ["sites"]


# --- job files over HTTP: whole, one range, resumed ---------------------------------------------

FILE = bytes(range(256)) * 40  # 10,240 bytes
FILE_PATH = "tiles/basemap.mbtiles"


@pytest.fixture
def stored_job(server: Server) -> str:
    """A finished job of the editor's with one file, put straight into the server's stores."""
    services = cast(FastAPI, server.client.app).state.services
    entry = {"path": FILE_PATH, "size": len(FILE), "sha256": hashlib.sha256(FILE).hexdigest()}
    job = Job(
        id=uuid.uuid4().hex,
        kind=GENERATE_OFFLINE_MAP,
        owner="editor",
        status=ServerJobStatus.SUCCEEDED,
        finished=time.time(),
        result={"files": [entry]},
    )
    services.jobs.store.create(job)
    services.jobs.output(job.id).put(FILE_PATH, FILE)
    return job.id


@pytest.fixture
def editor(server: Server) -> dict[str, str]:
    return server.token("editor")


def get_file(server: Server, job_id: str, auth: dict[str, str], **headers: str | bytes) -> Any:
    """GET the stored job's file with ``headers`` (``if_range`` for ``If-Range``; bytes are sent
    as they are)."""
    raw = [(name.encode(), value.encode()) for name, value in auth.items()]
    for name, value in headers.items():
        raw.append((name.replace("_", "-").encode(), _latin1(value)))
    return server.client.get(f"/api/jobs/{job_id}/files/{FILE_PATH}", headers=raw)


def _latin1(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def test_a_job_file_is_served_whole_from_the_object_store(
    server: Server, stored_job: str, editor: dict[str, str]
) -> None:
    response = get_file(server, stored_job, editor)
    assert response.status_code == 200
    assert response.content == FILE
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(FILE))
    assert response.headers["etag"].startswith('"')
    assert "content-range" not in response.headers
    assert response.headers["content-disposition"] == 'attachment; filename="basemap.mbtiles"'
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, 10_239),
        ("bytes=-10", 10_230, 10_239),
        ("bytes=-99999", 0, 10_239),  # longer than the file: all of it
        ("bytes=10239-10239", 10_239, 10_239),
        ("bytes=5000-" + "9" * 40, 5000, 10_239),  # clamped to the last byte
        ("Bytes = 7-8 ,", 7, 8),  # units are case-insensitive; empty list elements skipped
    ],
)
def test_one_range_of_a_job_file_is_206(
    server: Server, stored_job: str, editor: dict[str, str], header: str, start: int, end: int
) -> None:
    whole = get_file(server, stored_job, editor)
    response = get_file(server, stored_job, editor, range=header)
    assert response.status_code == 206
    assert response.content == FILE[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(FILE)}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == whole.headers["etag"]


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=-0", "bytes=" + "1" * 5000 + "-"])
def test_a_range_with_no_byte_of_the_file_is_416(
    server: Server, stored_job: str, editor: dict[str, str], header: str
) -> None:
    response = get_file(server, stored_job, editor, range=header)
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(FILE)}"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 416


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-9",  # several ranges: the whole file, never multipart
        "bytes=0-1" + ",0-1" * 2000,
        "bytes=9-5",
        "bytes=abc",
        "bytes=0x10-",
        "bytes=+1-2",
        "bytes=1-2-3",
        "bytes=--1",
        "bytes=-",
        "bytes=",
        "bytes",
        "items=0-1",
        "",
        "bytes=\u0661-\u0662".encode(),  # Arabic-Indic digits, as raw header bytes
        b"bytes=\xff-\x00",
    ],
)
def test_a_range_header_the_server_ignores_gets_the_whole_file(
    server: Server, stored_job: str, editor: dict[str, str], header: str | bytes
) -> None:
    response = get_file(server, stored_job, editor, range=header)
    assert response.status_code == 200
    assert response.content == FILE
    assert "content-range" not in response.headers


def test_if_range_honours_a_range_only_for_the_current_file(
    server: Server, stored_job: str, editor: dict[str, str]
) -> None:
    whole = get_file(server, stored_job, editor)
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    for current in (etag, modified):
        response = get_file(server, stored_job, editor, range="bytes=5-", if_range=current)
        assert response.status_code == 206
        assert response.content == FILE[5:]
    for stale in ('"another"', f"W/{etag}", "Thu, 01 Jan 1970 00:00:00 GMT"):
        response = get_file(server, stored_job, editor, range="bytes=5-", if_range=stale)
        assert response.status_code == 200
        assert response.content == FILE


def test_only_listed_files_of_a_visible_succeeded_job_are_served(
    server: Server, stored_job: str, editor: dict[str, str]
) -> None:
    services = cast(FastAPI, server.client.app).state.services
    services.jobs.output(stored_job).put("unlisted.bin", b"not in the result")
    unlisted = server.client.get(f"/api/jobs/{stored_job}/files/unlisted.bin", headers=editor)
    assert unlisted.status_code == 404
    assert get_file(server, stored_job, server.token("viewer")).status_code == 403  # no scope
    job = services.jobs.get(stored_job)
    job.status = ServerJobStatus.RUNNING
    services.jobs.store.save(job)
    assert get_file(server, stored_job, editor).status_code == 404


def test_deleting_a_job_removes_its_objects(
    server: Server, stored_job: str, editor: dict[str, str]
) -> None:
    objects: ObjectStore = cast(FastAPI, server.client.app).state.services.objects
    assert [info.key for info in objects.list(f"jobs/{stored_job}/")] == [
        f"jobs/{stored_job}/files/{FILE_PATH}"
    ]
    assert server.client.delete(f"/api/jobs/{stored_job}", headers=editor).status_code == 204
    assert list(objects.list(f"jobs/{stored_job}/")) == []
    assert get_file(server, stored_job, editor).status_code == 404


class _CutStream(httpx.SyncByteStream):
    """A response body that stops after ``limit`` bytes as a dropped connection does."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self.inner = inner
        self.limit = limit

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            part = chunk[: self.limit - sent]
            sent += len(part)
            if part:
                yield part
            if sent >= self.limit:
                raise httpx.ReadError("the connection dropped")

    def close(self) -> None:
        self.inner.close()


class CuttingTransport(httpx.BaseTransport):
    """Cuts the first download of the file ``name`` halfway; records each download of it (its
    ``Range`` header and the status it got)."""

    def __init__(self, name: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.name = name
        self.seen: list[tuple[str | None, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith(f"/files/{self.name}"):
            return response
        self.seen.append((request.headers.get("range"), response.status_code))
        if len(self.seen) > 1:
            return response
        stream = cast(httpx.SyncByteStream, response.stream)
        half = int(response.headers["content-length"]) // 2
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_CutStream(stream, half)
        )

    def close(self) -> None:
        self.inner.close()


def test_the_sdk_resumes_a_download_cut_midway_with_a_range(
    live_server: LiveServer,
    tmp_path: Path,
    portals: list[Portal],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the SDK writes what it receives in chunks of this size: smaller than half the file
    monkeypatch.setattr(downloads_sdk, "CHUNK_BYTES", 4096)
    transport = CuttingTransport("city.gpkg")
    portal = Portal(live_server.url, transport=transport)
    portals.append(portal)
    portal.login("editor", PASSWORD)
    task = OfflineMapTask(PortalItem(portal, offline_map(live_server)))
    parameters = task.create_default_generate_offline_map_parameters(AREA)
    download = tmp_path / "download"
    job = task.generate_offline_map(parameters, download)
    with pytest.raises(DownloadError, match="the download stopped"):
        job.wait(poll_seconds=0.05)
    half = (download / "city.gpkg.part").stat().st_size
    assert half > 0
    assert not (download / "city.gpkg").exists()

    result = job.resume()
    assert transport.seen == [(None, 200), (f"bytes={half}-", 206)]
    assert job.server_job is not None
    objects: ObjectStore = cast(FastAPI, live_server.server.client.app).state.services.objects
    stored = objects.get(f"jobs/{job.server_job['id']}/files/city.gpkg")
    assert (download / "city.gpkg").read_bytes() == stored
    assert result.offline_map.layers
    assert verify_package(download).ok
