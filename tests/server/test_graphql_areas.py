"""Preplanned map areas through a real GraphQL client (gql over HTTP): the same areas, checks and
refusals as ``/api/maps/{id}/areas``."""

from __future__ import annotations

import time
from typing import Any

from offmaps.schemas.jobs import JobStatus
from tests.server.test_graphql import _errors, _run, _services, _token, clients
from tests.serverkit import LiveServer

__all__ = ["clients"]  # the fixture, used by name

BBOX = [24.895, 60.05, 24.995, 60.15]
FIELDS = "id mapId title status reason updateMode refresh epoch latest jobId document"


def _finished(live_server: LiveServer, job_id: str) -> None:
    jobs = _services(live_server.server).jobs
    deadline = time.monotonic() + 60
    while not jobs.get(job_id).status.done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert jobs.get(job_id).status is JobStatus.SUCCEEDED, jobs.get(job_id).error


def test_map_areas_through_graphql(live_server: LiveServer, clients: Any) -> None:
    server = live_server.server
    map_id = server.public_map
    editor = clients(_token(server, "editor"))
    created = _run(
        editor,
        f"""mutation Create($mapId: String!, $area: JSON!) {{
              createMapArea(mapId: $mapId, area: $area) {{ {FIELDS} }} }}""",
        {"mapId": map_id, "area": {"title": "North", "bbox": BBOX, "refresh": "1d"}},
    )["createMapArea"]
    assert (created["title"], created["status"], created["refresh"]) == ("North", "packaging", "1d")
    _finished(live_server, created["jobId"])

    anyone = clients()
    found = _run(
        anyone,
        f"query Area($mapId: String!, $id: String!) {{ mapArea(mapId: $mapId, id: $id) "
        f"{{ {FIELDS} }} }}",
        {"mapId": map_id, "id": created["id"]},
    )["mapArea"]
    assert (found["status"], found["latest"]) == ("complete", 1)
    paths = [entry["path"] for entry in found["document"]["package"]["files"]]
    assert paths[-1] == "package.json"
    listed = _run(
        anyone,
        "query Areas($mapId: String!) { mapAreas(mapId: $mapId) { id title status } }",
        {"mapId": map_id},
    )["mapAreas"]
    assert listed == [{"id": created["id"], "title": "North", "status": "complete"}]

    renamed = _run(
        editor,
        """mutation Rename($mapId: String!, $id: String!, $changes: JSON!) {
              updateMapArea(mapId: $mapId, id: $id, changes: $changes) { title epoch } }""",
        {"mapId": map_id, "id": created["id"], "changes": {"title": "North bay"}},
    )["updateMapArea"]
    assert renamed == {"title": "North bay", "epoch": 1}
    refreshed = _run(
        editor,
        """mutation Refresh($mapId: String!, $id: String!) {
              refreshMapArea(mapId: $mapId, id: $id) { jobId } }""",
        {"mapId": map_id, "id": created["id"]},
    )["refreshMapArea"]
    _finished(live_server, refreshed["jobId"])

    # who may: a viewer reads but does not write, an anonymous caller does not write either
    viewer = clients(_token(server, "viewer"))
    delete = """mutation Delete($mapId: String!, $id: String!) {
                  deleteMapArea(mapId: $mapId, id: $id) }"""
    for caller in (viewer, anyone):
        (error,) = _errors(caller, delete, mapId=map_id, id=created["id"])
        assert "maps:write" in error["message"] or "log in" in error["message"], error
    assert _run(editor, delete, {"mapId": map_id, "id": created["id"]}) == {"deleteMapArea": True}
    (gone,) = _errors(
        anyone,
        "query Area($mapId: String!, $id: String!) { mapArea(mapId: $mapId, id: $id) { id } }",
        mapId=map_id,
        id=created["id"],
    )
    assert "was deleted by its author" in gone["message"]


def test_bad_areas_through_graphql_are_errors_not_areas(
    live_server: LiveServer, clients: Any
) -> None:
    server = live_server.server
    editor = clients(_token(server, "editor"))
    create = """mutation Create($mapId: String!, $area: JSON!) {
                  createMapArea(mapId: $mapId, area: $area) { id } }"""
    for body, says in [
        ({"title": "x"}, "exactly one of area, bbox and bookmark"),
        ({"title": "x", "bbox": BBOX, "refresh": "61 * * * *"}, "does not parse"),
        ({"title": "x", "bookmark": "Nowhere"}, "no bookmark 'Nowhere'"),
        ("not an object", "valid dictionary"),
    ]:
        (error,) = _errors(editor, create, mapId=server.public_map, area=body)
        assert says in error["message"], error
    (error,) = _errors(editor, create, mapId="f" * 32, area={"title": "x", "bbox": BBOX})
    assert "no web map" in error["message"]
    assert _services(server).areas.store.for_map(server.public_map) == []
