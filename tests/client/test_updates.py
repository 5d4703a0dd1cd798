"""``check_for_updates`` against a real sync: the rows and bytes it announces are the ones that
travel."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from shapely.geometry import Point

from offmaps.client import Portal
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.features.model import Delete, Insert, Update
from offmaps.schemas import SyncDirection
from tests.client.test_sync import Device, attach, server_edit, server_sites
from tests.serverkit import PASSWORD, LiveServer


@dataclass
class Traffic:
    """The bodies a client sent and received, by method and path."""

    sent: dict[tuple[str, str], int] = field(default_factory=dict)
    received: dict[tuple[str, str], int] = field(default_factory=dict)

    def clear(self) -> None:
        self.sent.clear()
        self.received.clear()

    def total(self, which: dict[tuple[str, str], int], method: str, *suffixes: str) -> int:
        return sum(
            n
            for (m, path), n in which.items()
            if m == method and any(path.split("/")[4] == s for s in suffixes)
        )


class _Counted(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, add: Callable[[int], None]) -> None:
        self.inner = inner
        self.add = add

    def __iter__(self) -> Any:
        for chunk in self.inner:
            self.add(len(chunk))
            yield chunk

    def close(self) -> None:
        self.inner.close()


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts every body byte each way."""

    def __init__(self, traffic: Traffic) -> None:
        super().__init__()
        self.traffic = traffic

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.path)
        self.traffic.sent[key] = self.traffic.sent.get(key, 0) + len(request.read())
        response = super().handle_request(request)

        def add(n: int) -> None:
            self.traffic.received[key] = self.traffic.received.get(key, 0) + n

        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _Counted(response.stream, add)
        return response


def _counted_task(
    server: LiveServer, device: Device, traffic: Traffic, portals: list[Portal]
) -> OfflineMapSyncTask:
    portal = Portal(server.url, transport=CountingTransport(traffic))
    portals.append(portal)
    portal.login("editor", PASSWORD)
    return OfflineMapSyncTask(device.folder, portal)


def _edit_both_sides(server: LiveServer, device: Device) -> None:
    sites = device.sites()
    device.edit(
        Insert("sites", {"name": "new", "status": "new", "osm_id": 100}, Point(24.91, 60.1)),
        Update("sites", sites["site 1"].global_id, {"status": "broken"}),
        Delete("sites", sites["site 2"].global_id),
    )
    # two edits of one row travel as one change
    device.edit(Update("sites", sites["site 4"].global_id, {"status": "a"}))
    device.edit(Update("sites", sites["site 4"].global_id, {"status": "b"}))
    attach(device, sites["site 5"].global_id, os.urandom(150_000))
    catalog = server.server.catalog
    store = catalog.feature_service("city")
    on_server = server_sites(server)
    photo = catalog.blobs.put(os.urandom(90_000))
    store.add_attachment(
        "sites", on_server["site 6"].global_id, name="office.jpg",
        content_type="image/jpeg", size=photo.size, sha256=photo.sha256,
    )  # fmt: skip
    server_edit(
        server,
        Update("sites", on_server["site 3"].global_id, {"status": "fixed"}),
        Insert("sites", {"name": "inside", "status": "ok", "osm_id": 200}, Point(24.93, 60.1)),
        # outside the device's area: sent as a deletion, which the device finds nothing to do
        Insert("sites", {"name": "far", "status": "ok", "osm_id": 300}, Point(26.0, 61.0)),
        Delete("sites", on_server["site 7"].global_id),
        Insert("inspections", {"site_osm_id": 3, "result": "late"}, None),
    )


def test_updates_announce_the_rows_and_bytes_a_sync_moves(
    live_server: LiveServer, take_offline: Callable[..., Device], portals: list[Portal]
) -> None:
    device = take_offline()
    _edit_both_sides(live_server, device)
    traffic = Traffic()
    task = _counted_task(live_server, device, traffic, portals)

    # the upload, measured then done
    upload = SyncOfflineMapParameters(sync_direction=SyncDirection.UPLOAD, batch_size=2)
    before = task.check_for_updates(upload)
    traffic.clear()
    result = task.sync_offline_map(upload).wait()
    assert not result.has_errors
    sent = traffic.total(traffic.sent, "POST", "changes") + traffic.total(
        traffic.sent, "PUT", "uploads"
    )
    assert before.upload_bytes == sent
    assert before.upload_bytes > 150_000  # the photo's bytes
    assert before.upload_attachments == 1
    assert before.upload_edits == sum(r.uploaded for r in result.layer_results.values()) == 6
    assert before.upload_changes == 5  # site 4's two edits as one change
    assert (before.download_changes, before.download_bytes) == (0, 0)  # not asked for

    # the download, with what the upload changed on the server too, measured then done
    download = SyncOfflineMapParameters(sync_direction=SyncDirection.DOWNLOAD)
    before = task.check_for_updates(download)
    traffic.clear()
    result = task.sync_offline_map(download).wait()
    assert not result.has_errors
    received = traffic.total(traffic.received, "GET", "changes", "blobs")
    assert before.download_bytes == received
    assert before.download_bytes > 90_000  # the office's photo
    assert before.download_attachments == 1  # the device's own photo it has already
    downloaded = sum(r.downloaded + r.deleted for r in result.layer_results.values())
    assert before.download_changes == downloaded
    # site 7, the far site, and site 2 whose deletion the device uploaded
    assert before.download_deletes == sum(r.deleted for r in result.layer_results.values()) == 3
    assert (before.upload_changes, before.upload_bytes) == (0, 0)

    # nothing left but the empty streams' headers and end records, which a sync still fetches
    after = task.check_for_updates(download)
    assert (after.download_available, after.download_changes) == (False, 0)
    traffic.clear()
    assert not task.sync_offline_map(download).wait().has_errors
    assert after.download_bytes == traffic.total(traffic.received, "GET", "changes", "blobs")
    assert not task.check_for_updates().upload_available


def test_a_two_way_sync_moves_what_was_announced_and_no_more(
    live_server: LiveServer, take_offline: Callable[..., Device], portals: list[Portal]
) -> None:
    device = take_offline()
    _edit_both_sides(live_server, device)
    traffic = Traffic()
    task = _counted_task(live_server, device, traffic, portals)
    before = task.check_for_updates()
    traffic.clear()
    assert not task.sync_offline_map(SyncOfflineMapParameters()).wait().has_errors
    sent = traffic.total(traffic.sent, "POST", "changes") + traffic.total(
        traffic.sent, "PUT", "uploads"
    )
    assert before.upload_bytes == sent
    assert before.download_bytes <= traffic.total(traffic.received, "GET", "changes", "blobs")
