"""Preplanned map areas from the SDK, against a listening server: the author's
``OfflineMapAreaManager`` makes them, a device lists, loads and downloads them
(docs/preplanned.md)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI

from offmaps.client import Portal
from offmaps.client import downloads as downloads_sdk
from offmaps.client.areas import (
    MANIFEST_FOLDER,
    AsyncOfflineMapAreaManager,
    OfflineMapAreaManager,
    PreplannedMapArea,
    PreplannedPackagingStatus,
    PreplannedUpdateMode,
)
from offmaps.client.offline import AsyncOfflineMapTask, JobStatus, OfflineMapTask, PortalItem
from offmaps.errors import (
    AccessDeniedError,
    DownloadError,
    InsufficientScopeError,
    InvalidAOIError,
    InvalidOfflineParametersError,
    JobFailedError,
    MapAreaBusyError,
    MapAreaDeletedError,
    OffmapsError,
)
from offmaps.features.model import FeatureQuery
from offmaps.offline import preplanned
from offmaps.offline.package import MobileMapPackage, verify_package
from offmaps.offline.updates import ChainState, read_chain_state
from tests.client.test_offline import CuttingTransport, offline_map
from tests.serverkit import PASSWORD, LiveServer

BBOX = (24.895, 60.05, 24.995, 60.15)


@pytest.fixture
def signed_in(live_server: LiveServer, portals: list[Portal]) -> Callable[..., Portal]:
    """A connection to the live server signed in as ``user`` (``transport`` optional)."""

    def make(user: str = "editor", **options: Any) -> Portal:
        portal = Portal(live_server.url, **options)
        portals.append(portal)
        portal.login(user, PASSWORD)
        return portal

    return make


@pytest.fixture
def map_id(live_server: LiveServer) -> str:
    """A public map with a raster basemap, sites, an online-only layer and a table."""
    return offline_map(live_server)


def _area(signed_in: Callable[..., Portal], map_id: str, **options: Any) -> dict[str, Any]:
    manager = OfflineMapAreaManager(signed_in(), map_id)
    options = {"title": "North district", "bbox": BBOX, **options}
    return manager.create(wait=True, poll_seconds=0.05, **options)


def _device_area(portal: Portal, map_id: str) -> tuple[OfflineMapTask, PreplannedMapArea]:
    task = OfflineMapTask(PortalItem(portal, map_id))
    (area,) = task.get_preplanned_map_areas()
    return task, area


def test_an_author_creates_an_area_and_a_device_downloads_its_package(
    signed_in: Callable[..., Portal], map_id: str, tmp_path: Path
) -> None:
    manager = OfflineMapAreaManager(signed_in(), map_id)
    seen: list[float] = []
    created = manager.create(
        title="North district",
        bbox=BBOX,
        description="Sites north of the bay",
        update_mode=PreplannedUpdateMode.DOWNLOAD_SCHEDULED_UPDATES,
        refresh="0 3 * * 1",
        wait=True,
        poll_seconds=0.05,
        on_progress=lambda fraction, _: seen.append(fraction),
    )
    assert created["status"] == "complete", created
    assert seen
    assert seen[-1] == 1.0

    task, area = _device_area(signed_in(), map_id)
    assert area.id == created["id"]
    assert area.packaging_status == "unknown"
    assert area.package_items == []
    area.load()
    assert area.packaging_status is PreplannedPackagingStatus.COMPLETE
    item = area.portal_item
    assert (item.title, item.description) == ("North district", "Sites north of the bay")
    assert item.thumbnail is not None
    assert item.thumbnail.startswith(b"\x89PNG")
    sizes = {entry.path: entry.size for entry in area.package_items}
    assert {"city.gpkg", "package.json"} <= set(sizes)
    assert all(size > 0 for size in sizes.values())
    assert area.area_of_interest.aoi().to_wgs84().bounds == pytest.approx(BBOX)
    capabilities = area.update_capabilities
    assert capabilities.supports_scheduled_updates_to_features
    assert not capabilities.supports_sync_with_feature_services
    assert not capabilities.supports_upload_new_features

    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    assert parameters.update_mode is PreplannedUpdateMode.DOWNLOAD_SCHEDULED_UPDATES
    assert (parameters.continue_on_errors, parameters.include_basemap) == (True, True)
    download = tmp_path / "device"
    job = task.download_preplanned_offline_map(parameters, download)
    progress: list[float] = []
    result = job.wait(on_progress=lambda fraction, _: progress.append(fraction))
    assert job.status is JobStatus.SUCCEEDED
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert not result.has_errors
    assert verify_package(download).ok
    assert not (download / MANIFEST_FOLDER).exists()
    assert {layer.id for layer in result.offline_map.layers} == {"basemap", "sites"}
    with MobileMapPackage(download).load() as package:
        (offline,) = package.maps
        sites = next(layer for layer in offline.layers if layer.id == "sites")
        with sites.open_features() as store:
            found = list(store.iter_features("sites", FeatureQuery(limit=100)))
        assert sorted(int(str(f.properties["osm_id"])) for f in found) == list(range(10))
    # the device holds the server's bytes, except that the files update files keep fresh
    # record their place in their chain (and package.json lists them as they are now)
    package_document = area.latest_package()
    chains = package_document["chains"]
    assert chains
    for entry in area.package_items:
        if entry.path in chains:
            state = read_chain_state(download / entry.path)
            assert state == ChainState(area.id, 1, package_document["number"], chains[entry.path])
        elif entry.path != "package.json":
            assert (download / entry.path).stat().st_size == entry.size


def test_a_device_may_leave_the_basemap_out_or_use_its_own(
    signed_in: Callable[..., Portal], map_id: str, tmp_path: Path
) -> None:
    _area(signed_in, map_id)
    task, area = _device_area(signed_in(), map_id)
    area.load()
    tiles = [entry.path for entry in area.package_items if entry.path.endswith(".mbtiles")]
    assert tiles
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    parameters.include_basemap = False
    download = tmp_path / "no-basemap"
    result = task.download_preplanned_offline_map(parameters, download).wait()
    assert result.omitted == {"basemap": "the basemap is not included"}
    assert {layer.id for layer in result.offline_map.layers} == {"sites"}
    assert not any((download / path).exists() for path in tiles)
    assert verify_package(download).ok

    # the basemap of an earlier download, as the device's own
    own = tmp_path / "own"
    basemap = task.create_default_download_preplanned_offline_map_parameters(area)
    task.download_preplanned_offline_map(basemap, own).wait()
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    parameters.reference_basemap_directory = str(own)
    parameters.reference_basemap_filename = tiles[0]
    referenced = tmp_path / "referenced"
    result = task.download_preplanned_offline_map(parameters, referenced).wait()
    assert result.omitted == {"basemap": "a basemap on the device is used instead"}
    assert result.offline_map.layers[0].id == "reference-basemap"
    assert not any((referenced / path).exists() for path in tiles)

    missing = task.create_default_download_preplanned_offline_map_parameters(area)
    missing.reference_basemap_filename = "nowhere.mbtiles"
    with pytest.raises(InvalidOfflineParametersError, match="no such reference basemap"):
        task.download_preplanned_offline_map(missing, tmp_path / "x").start()


def test_a_cut_download_resumes_with_a_range_and_checks_hashes(
    signed_in: Callable[..., Portal],
    map_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(downloads_sdk, "CHUNK_BYTES", 4096)
    _area(signed_in, map_id)
    transport = CuttingTransport("city.gpkg")
    task, area = _device_area(signed_in(transport=transport), map_id)
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    download = tmp_path / "device"
    job = task.download_preplanned_offline_map(parameters, download)
    with pytest.raises(DownloadError, match="the download stopped"):
        job.wait()
    half = (download / "city.gpkg.part").stat().st_size
    assert half > 0
    assert not (download / "package.json").exists()  # not a package until it is whole

    result = job.resume()
    assert transport.seen == [(None, 200), (f"bytes={half}-", 206)]
    assert result.offline_map.layers
    assert verify_package(download).ok

    again = tmp_path / "again"
    job = task.download_preplanned_offline_map(parameters, again)
    job.start()
    again.joinpath("city.gpkg.part").write_bytes(b"\x00" * half)  # wrong bytes
    with pytest.raises(DownloadError, match="SHA-256"):
        job.wait()
    assert not again.joinpath("city.gpkg.part").exists()
    job.resume()
    assert verify_package(again).ok
    job.cancel()
    assert not again.exists()


def test_a_deleted_area_is_a_clear_410(
    signed_in: Callable[..., Portal], map_id: str, tmp_path: Path
) -> None:
    created = _area(signed_in, map_id)
    task, area = _device_area(signed_in(), map_id)
    OfflineMapAreaManager(signed_in(), map_id).delete(created["id"])
    with pytest.raises(MapAreaDeletedError, match="deleted by its author"):
        area.load()
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    job = task.download_preplanned_offline_map(parameters, tmp_path / "device")
    with pytest.raises(MapAreaDeletedError):
        job.start()
    assert not (tmp_path / "device").exists()
    assert task.get_preplanned_map_areas() == []


def test_a_download_while_packaging_is_a_clear_409(
    signed_in: Callable[..., Portal], map_id: str, tmp_path: Path, held: threading.Event
) -> None:
    manager = OfflineMapAreaManager(signed_in(), map_id)
    created = manager.create(title="North district", bbox=BBOX)
    task, area = _device_area(signed_in(), map_id)
    area.load()
    assert area.packaging_status is PreplannedPackagingStatus.PACKAGING
    assert area.package_items == []
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    job = task.download_preplanned_offline_map(parameters, tmp_path / "device")
    with pytest.raises(MapAreaBusyError, match="still packaging"):
        job.start()
    with pytest.raises(MapAreaBusyError, match="being packaged"):
        manager.refresh(created["id"])
    held.set()
    manager.wait(created["id"], poll_seconds=0.05)
    assert area.load().packaging_status is PreplannedPackagingStatus.COMPLETE
    assert job.wait().offline_map.layers


def test_the_author_lists_changes_refreshes_and_deletes_areas(
    signed_in: Callable[..., Portal], map_id: str
) -> None:
    manager = OfflineMapAreaManager(signed_in(), map_id)
    first = manager.create(title="North", bbox=BBOX, wait=True, poll_seconds=0.05)
    polygon = {
        "type": "Polygon",
        "coordinates": [[[24.9, 60.1], [24.95, 60.1], [24.95, 60.15], [24.9, 60.1]]],
    }
    feature = {"type": "Feature", "properties": {}, "geometry": polygon}
    second = manager.create(title="Triangle", area=feature, min_scale=50_000, max_scale=1_000)
    assert second["source"] == {"kind": "polygon"}
    manager.wait(second, poll_seconds=0.05)
    listed = [(a["id"], a["title"]) for a in manager.list()]
    assert listed == [(first["id"], "North"), (second["id"], "Triangle")]

    renamed = manager.update(first["id"], title="North district", description="new")
    assert (renamed["title"], renamed["epoch"]) == ("North district", 1)
    scheduled = manager.modify_refresh_schedule(first["id"], "12h")
    assert scheduled["refresh"] == "12h"
    assert scheduled["next_refresh_at"] is not None
    refreshed = manager.refresh(first["id"], wait=True, poll_seconds=0.05)
    assert refreshed["latest"] == 2
    assert [p["number"] for p in manager.list_packages(first["id"])] == [1, 2]
    moved = manager.update(first["id"], bbox=(24.9, 60.05, 24.95, 60.15))
    assert moved["epoch"] == 2
    assert manager.wait(moved, poll_seconds=0.05)["latest"] == 3

    manager.delete(second["id"])
    with pytest.raises(MapAreaDeletedError):
        manager.get(second["id"])
    assert [a["id"] for a in manager.list()] == [first["id"]]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({}, "exactly one of area, bbox and bookmark"),
        ({"bbox": BBOX, "bookmark": "Harbour"}, "exactly one of area, bbox and bookmark"),
        ({"bbox": BBOX, "refresh": "61 * * * *"}, "does not parse"),
        ({"bbox": BBOX, "refresh": "daily"}, "a refresh schedule is"),
        ({"bbox": (0, 10, 1, 5)}, "south"),
        ({"bbox": BBOX, "update_mode": "sometimes"}, "update_mode"),
        ({"bbox": BBOX, "thumbnail": b"GIF89a"}, "thumbnail"),
        ({"bbox": BBOX, "min_scale": 1000, "max_scale": 5000}, "max_scale"),
    ],
)
def test_a_malformed_area_is_refused_before_it_is_sent(
    signed_in: Callable[..., Portal], map_id: str, options: dict[str, Any], says: str
) -> None:
    manager = OfflineMapAreaManager(signed_in(), map_id)
    with pytest.raises((InvalidOfflineParametersError, InvalidAOIError), match=says):
        manager.create(title="x", **options)
    assert manager.list() == []


def test_the_server_refuses_a_missing_bookmark_and_a_non_owner(
    live_server: LiveServer, signed_in: Callable[..., Portal], map_id: str
) -> None:
    manager = OfflineMapAreaManager(signed_in(), map_id)
    with pytest.raises(OffmapsError, match="no bookmark 'Nowhere'"):
        manager.create(title="x", bookmark="Nowhere")
    area = manager.create(title="North", bbox=BBOX, wait=True, poll_seconds=0.05)
    users = cast(FastAPI, live_server.server.client.app).state.services.users
    users.add_user("other", PASSWORD, scopes=("maps:read", "maps:write"))
    other = OfflineMapAreaManager(signed_in("other"), map_id)
    with pytest.raises(AccessDeniedError):
        other.create(title="x", bbox=BBOX)
    with pytest.raises(AccessDeniedError):
        other.delete(area["id"])
    viewer = OfflineMapAreaManager(signed_in("viewer"), map_id)
    with pytest.raises(InsufficientScopeError):
        viewer.update(area["id"], title="mine")
    # a viewer may list and load an area, without its thumbnail (no offline:sync)
    _, seen = _device_area(signed_in("viewer"), map_id)
    assert seen.load().packaging_status is PreplannedPackagingStatus.COMPLETE
    assert seen.portal_item.thumbnail is None
    admin = OfflineMapAreaManager(signed_in("admin"), map_id)
    assert admin.update(area["id"], title="Renamed")["title"] == "Renamed"


def test_a_failed_packaging_says_why(
    signed_in: Callable[..., Portal], map_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError("the disk is full")

    monkeypatch.setattr(preplanned, "build_package", fail)
    manager = OfflineMapAreaManager(signed_in(), map_id)
    with pytest.raises(JobFailedError, match="packaging failed"):
        manager.create(title="North", bbox=BBOX, wait=True, poll_seconds=0.05)
    _, area = _device_area(signed_in(), map_id)
    assert area.load().packaging_status is PreplannedPackagingStatus.FAILED
    assert area.reason


def test_the_async_twins(signed_in: Callable[..., Portal], map_id: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        manager = AsyncOfflineMapAreaManager(signed_in(), map_id)
        created = await manager.create(title="North", bbox=BBOX, wait=True, poll_seconds=0.05)
        assert [a["id"] for a in await manager.list()] == [created["id"]]
        task = AsyncOfflineMapTask(PortalItem(signed_in(), map_id))
        (area,) = await task.get_preplanned_map_areas()
        assert area.packaging_status == "unknown"
        await area.load()
        assert area.packaging_status is PreplannedPackagingStatus.COMPLETE
        parameters = task.create_default_download_preplanned_offline_map_parameters(area)
        job = task.download_preplanned_offline_map(parameters, tmp_path / "device")
        result = await job.wait()
        assert job.status is JobStatus.SUCCEEDED
        assert result.offline_map.layers
        await manager.delete(created["id"])

    asyncio.run(scenario())
    assert verify_package(tmp_path / "device").ok
