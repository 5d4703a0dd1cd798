"""Preplanned map areas through the REST API: create, package, download, change, refresh, delete,
and who may do each (docs/preplanned.md)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from offmaps.errors import PackageError
from offmaps.offline import preplanned
from offmaps.offline.package import file_entry, verify_package
from offmaps.server.app import create_app
from offmaps.services import Services
from offmaps.settings import ServerSettings
from tests.jobs.test_jobs import wait
from tests.serverkit import Server, assert_problem

BBOX = [24.895, 60.05, 24.995, 60.15]


def _services(server: Server) -> Services:
    services: Services = server.client.app.state.services  # type: ignore[attr-defined]
    return services


def _areas(server: Server) -> str:
    return f"/api/maps/{server.public_map}/areas"


def _create(server: Server, **body: Any) -> dict[str, Any]:
    body = {"title": "North district", "bbox": BBOX, **body}
    response = server.client.post(_areas(server), json=body, headers=server.token("editor"))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert response.headers["location"].endswith(f"/areas/{created['id']}")
    return created


def _packaged(server: Server, area: dict[str, Any]) -> dict[str, Any]:
    """The area once its packaging job has ended."""
    assert area["job_id"]
    wait(_services(server).jobs, area["job_id"])
    response = server.client.get(f"{_areas(server)}/{area['id']}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_an_author_creates_an_area_and_every_crew_downloads_the_same_package(
    server: Server, tmp_path: Any
) -> None:
    created = _create(server, description="Sites north of the bay", refresh="1d")
    assert created["status"] == "packaging"
    assert created["source"] == {"kind": "bbox"}
    assert created["refresh"] == "1d"
    assert created["next_refresh_at"] is not None
    area = _packaged(server, created)
    assert area["status"] == "complete", area
    assert area["latest"] == 1
    package = area["package"]
    paths = [entry["path"] for entry in package["files"]]
    assert "city.gpkg" in paths
    assert paths[-1] == "package.json"
    assert package["bytes"] == sum(entry["size"] for entry in package["files"])

    crew = server.token("editor", "maps:read offline:sync")
    folder = tmp_path / "device"
    for entry in package["files"]:
        response = server.client.get(entry["href"], headers=crew)
        assert response.status_code == 200, response.text
        assert hashlib.sha256(response.content).hexdigest() == entry["sha256"]
        target = folder / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)
    assert verify_package(folder).ok
    manifest = json.loads((folder / "package.json").read_text())
    assert manifest["item"]["title"] == "North district"
    assert manifest["item"]["description"] == "Sites north of the bay"
    assert manifest["replicas"] == []  # a shared package registers no replica
    assert _services(server).replicas.count_owned("editor") == 0

    # a range, as a resumed download asks
    first = package["files"][0]
    part = server.client.get(first["href"], headers={**crew, "Range": "bytes=10-19"})
    assert part.status_code == 206
    assert len(part.content) == 10

    listed = server.client.get(_areas(server)).json()["areas"]
    assert [(a["id"], a["title"], a["status"]) for a in listed] == [
        (area["id"], "North district", "complete")
    ]


def test_an_area_from_a_bookmark_or_a_polygon_across_the_antimeridian(server: Server) -> None:
    editor = server.token("editor")
    document = server.client.get(f"/api/maps/{server.public_map}").json()
    document["bookmarks"] = [{"name": "Harbour", "extent": BBOX}]
    response = server.client.put(f"/api/maps/{server.public_map}", json=document, headers=editor)
    assert response.status_code == 204, response.text
    area = _create(server, bbox=None, bookmark="Harbour")
    assert area["source"] == {"kind": "bookmark", "bookmark": "Harbour"}
    assert area["area"]["type"] == "Polygon"

    missing = server.client.post(
        _areas(server), json={"title": "x", "bookmark": "Nowhere"}, headers=editor
    )
    assert "no bookmark 'Nowhere'" in assert_problem(missing, 400)["detail"]
    assert "'Harbour'" in missing.json()["detail"]

    across = _create(server, bbox=[179.0, -1.0, -179.0, 1.0], title="Date line")
    assert across["area"]["type"] == "MultiPolygon"
    _packaged(server, across)  # the map has no extent: far away is allowed, and empty


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"title": "x"}, "exactly one of area, bbox and bookmark"),
        ({"title": "x", "bbox": BBOX, "bookmark": "b"}, "exactly one of area, bbox and bookmark"),
        ({"title": "x", "bbox": BBOX, "refresh": "61 * * * *"}, "does not parse"),
        ({"title": "x", "bbox": BBOX, "refresh": "daily"}, "a refresh schedule is"),
        ({"title": "x", "bbox": BBOX, "refresh": "1m"}, "at least 5m"),
        ({"title": "x", "bbox": [1, 2, 3]}, "bbox"),
        ({"title": "x", "bbox": [0, 10, 1, 5]}, "south"),
        ({"title": "x", "bbox": [0, 0, 0, 0]}, ""),
        ({"title": "", "bbox": BBOX}, "title"),
        ({"title": "x\ny", "bbox": BBOX}, "one line"),
        ({"title": "x", "bbox": BBOX, "min_scale": 1000, "max_scale": 5000}, "max_scale"),
        ({"title": "x", "bbox": BBOX, "update_mode": "sometimes"}, "update_mode"),
        ({"title": "x", "bbox": BBOX, "thumbnail": "not base64!"}, "thumbnail"),
        ({"title": "x", "bbox": BBOX, "unknown": 1}, "unknown"),
        (
            {"title": "x", "area": {"geometry": {"type": "Polygon", "coordinates": [[[0, 0]]]}}},
            "area",
        ),
    ],
)
def test_a_malformed_area_is_a_problem_and_creates_nothing(
    server: Server, body: dict[str, Any], says: str
) -> None:
    response = server.client.post(_areas(server), json=body, headers=server.token("editor"))
    problem = assert_problem(response, 400, 422)
    assert says in problem["detail"] + json.dumps(problem.get("errors", "")), problem
    assert _services(server).areas.store.for_map(server.public_map) == []


def test_an_area_outside_the_map_is_refused(server: Server) -> None:
    editor = server.token("editor")
    document = server.client.get(f"/api/maps/{server.public_map}").json()
    document["initial_extent"] = BBOX
    server.client.put(f"/api/maps/{server.public_map}", json=document, headers=editor)
    response = server.client.post(
        _areas(server), json={"title": "x", "bbox": [10, 10, 11, 11]}, headers=editor
    )
    assert "outside the map's extent" in assert_problem(response, 400)["detail"]


def test_only_the_owner_or_an_admin_creates_changes_or_deletes_an_area(server: Server) -> None:
    area = _packaged(server, _create(server))
    href = f"{_areas(server)}/{area['id']}"
    body = {"title": "x", "bbox": BBOX}
    viewer, admin = server.token("viewer"), server.token("admin")
    assert_problem(server.client.post(_areas(server), json=body), 401)
    assert_problem(server.client.post(_areas(server), json=body, headers=viewer), 403)
    assert_problem(server.client.patch(href, json={"title": "y"}, headers=viewer), 403)
    assert_problem(server.client.delete(href, headers=viewer), 403)
    assert_problem(server.client.post(f"{href}/refresh", headers=viewer), 403)
    assert_problem(server.client.delete(href), 401)
    # the files need a signed-in user who may take maps offline
    file_href = area["package"]["files"][0]["href"]
    assert_problem(server.client.get(file_href), 401, 403)
    assert_problem(server.client.get(file_href, headers=viewer), 403)
    # a private map's areas are as hidden as the map
    private = f"/api/maps/{server.private_map}/areas"
    assert_problem(server.client.get(private), 404)
    # an admin may change anyone's
    renamed = server.client.patch(href, json={"title": "Renamed"}, headers=admin)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "Renamed"
    assert renamed.json()["epoch"] == 1  # a new title: no repackaging
    assert server.client.delete(href, headers=admin).status_code == 204


def test_a_change_of_extent_repackages_and_a_refresh_adds_a_package(server: Server) -> None:
    editor = server.token("editor")
    area = _packaged(server, _create(server))
    href = f"{_areas(server)}/{area['id']}"
    changed = server.client.patch(href, json={"bbox": [24.9, 60.05, 24.95, 60.15]}, headers=editor)
    assert changed.status_code == 200, changed.text
    assert changed.json()["epoch"] == 2
    area = _packaged(server, changed.json())
    assert (area["status"], area["latest"], area["package"]["epoch"]) == ("complete", 2, 2)

    refreshed = server.client.post(f"{href}/refresh", headers=editor)
    assert refreshed.status_code == 202, refreshed.text
    area = _packaged(server, refreshed.json())
    assert area["latest"] == 3
    packages = server.client.get(f"{href}/packages").json()["packages"]
    assert [p["number"] for p in packages] == [1, 2, 3]
    assert server.client.get(f"{href}/packages/2").json()["number"] == 2
    assert server.client.get(f"{href}/packages/latest").json()["number"] == 3
    assert_problem(server.client.get(f"{href}/packages/9"), 404)
    assert_problem(server.client.get(f"{href}/packages/..%2F..%2Fx"), 404)


def test_only_the_newest_packages_are_kept(server: Server) -> None:
    services = _services(server)
    area = _packaged(server, _create(server))
    href = f"{_areas(server)}/{area['id']}"
    for _ in range(services.settings.area_keep_packages + 1):
        refreshed = server.client.post(f"{href}/refresh", headers=server.token("editor"))
        area = _packaged(server, refreshed.json())
    packages = server.client.get(f"{href}/packages").json()["packages"]
    numbers = [p["number"] for p in packages]
    assert numbers == [2, 3, 4, 5][-services.settings.area_keep_packages :]
    named = {e["sha256"] for p in packages for e in [*p["files"], *p["updates"]]}
    stored = {info.key for info in services.areas.files.list()}
    assert named <= stored  # each kept once, by its SHA-256
    # files of the forgotten package no other names go once they are older than the grace
    assert preplanned.collect(services.areas.services) == 0
    later = time.time() + services.settings.job_keep_s + 1
    preplanned.collect(services.areas.services, now=later)
    assert {info.key for info in services.areas.files.list()} == named


def test_a_download_while_packaging_is_a_clear_409(server: Server, held: threading.Event) -> None:
    area = _create(server)
    crew = server.token("editor", "maps:read offline:sync")
    href = f"{_areas(server)}/{area['id']}/packages/latest"
    problem = assert_problem(server.client.get(f"{href}/files/package.json", headers=crew), 409)
    assert "still packaging" in problem["detail"]
    assert_problem(server.client.get(href), 409)
    held.set()
    assert _packaged(server, area)["status"] == "complete"
    assert server.client.get(f"{href}/files/package.json", headers=crew).status_code == 200


def test_a_refresh_or_a_new_extent_while_packaging_is_a_409(
    server: Server, held: threading.Event
) -> None:
    area = _create(server)
    editor = server.token("editor")
    href = f"{_areas(server)}/{area['id']}"
    response = server.client.post(f"{href}/refresh", headers=editor)
    assert "being packaged" in assert_problem(response, 409)["detail"]
    response = server.client.patch(href, json={"min_scale": 50000}, headers=editor)
    assert "being packaged" in assert_problem(response, 409)["detail"]
    # what needs no packaging may change meanwhile
    assert server.client.patch(href, json={"title": "T"}, headers=editor).status_code == 200
    held.set()
    assert _packaged(server, area)["title"] == "T"


def test_a_failed_packaging_says_why(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise PackageError("the disk is full")

    monkeypatch.setattr(preplanned, "build_package", fail)
    area = _packaged(server, _create(server))
    assert (area["status"], area["reason"], area["latest"]) == ("failed", "the disk is full", None)
    crew = server.token("editor", "maps:read offline:sync")
    href = f"{_areas(server)}/{area['id']}/packages/latest/files/package.json"
    assert (
        "packaging failed (the disk is full)"
        in assert_problem(server.client.get(href, headers=crew), 409)["detail"]
    )
    assert not list(_services(server).areas.files.list())


def test_a_deleted_area_is_gone_with_its_files(server: Server) -> None:
    services = _services(server)
    area = _packaged(server, _create(server))
    href = f"{_areas(server)}/{area['id']}"
    file_href = area["package"]["files"][0]["href"]
    assert server.client.delete(href, headers=server.token("editor")).status_code == 204
    assert "deleted by its author" in assert_problem(server.client.get(href), 410)["detail"]
    crew = server.token("editor", "maps:read offline:sync")
    assert_problem(server.client.get(file_href, headers=crew), 410)
    later = time.time() + services.settings.job_keep_s + 1
    assert preplanned.collect(services.areas.services, now=later) > 0
    assert not list(services.areas.files.list())
    assert server.client.get(_areas(server)).json()["areas"] == []


def test_a_map_holds_two_hundred_overlapping_areas(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the packages are not the point here: each job publishes one small file
    def small(
        webmap: Any, *args: Any, publish: Any, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        context = args[-1]
        path = context.scratch / "package.json"
        path.write_text("{}")
        entry = file_entry(context.scratch, "package.json")
        publish(entry, path)
        return {"files": [entry.model_dump()], "layer_errors": {}, "table_errors": {}}, {}

    monkeypatch.setattr(preplanned, "build_package", small)
    editor = server.token("editor")
    for index in range(200):
        body = {"title": f"Sector {index}", "bbox": [24.9, 60.05 + index / 10_000, 25.0, 60.15]}
        response = server.client.post(_areas(server), json=body, headers=editor)
        assert response.status_code == 201, response.text
    listed = server.client.get(_areas(server)).json()["areas"]
    assert [a["title"] for a in listed] == [f"Sector {i}" for i in range(200)]
    for area in listed:
        wait(_services(server).jobs, area["job_id"])
    statuses = {a["status"] for a in server.client.get(_areas(server)).json()["areas"]}
    assert statuses == {"complete"}


def test_a_due_refresh_packages_the_area_again_once(server: Server) -> None:
    services = _services(server)
    area = _packaged(server, _create(server, refresh="1h"))
    due = area["next_refresh_at"]
    assert services.areas.refresh_due(due - 1) == []
    assert services.areas.refresh_due(due + 1) == [area["id"]]
    assert services.areas.refresh_due(due + 2) == []  # moved on an hour
    area = _packaged(server, server.client.get(f"{_areas(server)}/{area['id']}").json())
    assert area["latest"] == 2
    assert area["next_refresh_at"] == pytest.approx(due + 1 + 3600)


def test_serve_refreshes_areas_on_their_schedule(server: Server) -> None:
    area = _packaged(server, _create(server, refresh="1d"))
    # a second server process on the same data folder, looking every second
    settings = ServerSettings(data_dir=server.data_dir, area_scheduler_tick_s=1)
    app = create_app(settings)
    services: Services = app.state.services
    with TestClient(app):
        services.areas.store.update(area["id"], next_refresh_at=time.time() - 1)
        deadline = time.monotonic() + 30
        while services.areas.store.get(area["id"]).latest != 2:
            assert time.monotonic() < deadline, services.areas.store.get(area["id"])
            time.sleep(0.1)
        refreshed = services.areas.store.get(area["id"])
    assert refreshed.status == "complete"
    assert refreshed.next_refresh_at is not None
    assert refreshed.next_refresh_at > time.time() + 86_000
