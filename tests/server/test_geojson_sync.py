"""A plain GeoJSON client syncs through both APIs: REST in the GeoJSON form, and GraphQL.

The client is httpx and dicts: it reads rows as GeoJSON Features, edits them as Features,
uploads change sets with ``Content-Type: application/geo+json``, downloads the server's changes
as a GeoJSON text sequence (RFC 8142), meets conflicts with office edits made through OGC API
Features, settles them in the review queue, and reads the result back through OGC API
Features. Only the replica is made on the server's side, as taking a map offline would.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from shapely.geometry import LineString, Point

from offmaps.replicas.geojson import GeoJSONChangeResult, GeoJSONChangeSetResult
from offmaps.services import Services
from tests.serverkit import PASSWORD, LiveServer, assert_problem

GEOJSON = "application/geo+json"
GEOJSON_SEQ = "application/geo+json-seq"
RS = b"\x1e"
SITES = "/collections/city.sites/items"


# --- the client: httpx and dicts --------------------------------------------------------------


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    """Signed in as the editor, over HTTP."""
    with httpx.Client(base_url=live_server.url) as http:
        form = {"grant_type": "password", "username": "editor", "password": PASSWORD}
        token = http.post("/oauth2/token", data=form).raise_for_status().json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


def _hlc(replica: str, n: int) -> str:
    return f"{1796000000000 + n:013d}.000000.{replica}"


def _sequence(response: httpx.Response) -> list[dict[str, Any]]:
    """The records of a GeoJSON text sequence, the end record checked and left out."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == GEOJSON_SEQ
    body = response.content
    assert body.startswith(RS)
    *texts, last = body.split(RS)[1:]
    assert all(text.endswith(b"\n") for text in [*texts, last])
    end = json.loads(last)
    assert end["type"] == "end"
    records = [json.loads(text) for text in texts]
    assert end["count"] == len(records) - 1  # the header is no row
    assert end["sha256"] == hashlib.sha256(body[: body.rindex(RS)]).hexdigest()
    assert records[0]["type"] == "header"
    return records


def _download(client: httpx.Client, replica: str, since: int) -> dict[str, dict[str, Any]]:
    """The rows a download since ``since`` brings, by id: Features, or delete records."""
    records = _sequence(
        client.get(
            f"/api/replicas/{replica}/changes",
            params={"since": since},
            headers={"Accept": GEOJSON_SEQ},
        )
    )
    rows: dict[str, dict[str, Any]] = {}
    for record in records[1:]:
        if record["type"] == "Feature":
            rows[record["id"]] = record
        else:
            assert record["kind"] == "delete"
            rows[record["global_id"]] = record
    return rows


def _upload(
    client: httpx.Client, replica: str, changes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    document = {"change_set_id": str(uuid.uuid4()), "replica_id": replica, "changes": changes}
    response = client.post(
        f"/api/replicas/{replica}/changes",
        content=json.dumps(document),
        headers={"Content-Type": GEOJSON},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == GEOJSON  # answered in the form it was sent
    GeoJSONChangeSetResult.model_validate(response.json())  # as the OpenAPI document says
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def _graphql(client: httpx.Client, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "errors" not in answer, answer
    data: dict[str, Any] = answer["data"]
    return data


UPLOAD = """
mutation Upload($replica: String!, $set: ChangeSetInput!) {
  uploadChanges(replicaId: $replica, changeSet: $set) {
    results { changeId status reason version versionVector conflictId conflictFields
              row { feature } }
  }
}"""


def _graphql_change(change: dict[str, Any]) -> dict[str, Any]:
    """A change of the GeoJSON form as GraphQL's ``ChangeInput`` names its members."""
    names = {
        "change_id": "changeId",
        "base_version": "baseVersion",
        "version_vector": "versionVector",
    }
    return {names.get(key, key): value for key, value in change.items()}


def _update(
    replica: str, row: dict[str, Any], n: int, properties: dict[str, Any], **more: Any
) -> dict[str, Any]:
    """The device's update of ``row`` (a downloaded Feature, with its version and vector)."""
    vector = {**row["version_vector"], replica: row["version_vector"].get(replica, 0) + 1}
    feature = {
        "type": "Feature",
        "id": row["id"],
        "geometry": more.get("geometry", row["geometry"]),
        "properties": {**row["properties"], **properties},
    }
    base: dict[str, Any] = {
        "type": "Feature",
        "id": row["id"],
        "properties": {k: row["properties"][k] for k in properties},
    }
    changed = list(properties)
    if "geometry" in more:
        base["geometry"] = row["geometry"]
        changed.append("geom")
    return {
        "change_id": str(uuid.uuid4()), "layer": "sites", "kind": "update",
        "base_version": row["version"], "version_vector": vector, "hlc": _hlc(replica, n),
        "changed": changed, "feature": feature, "base": base,
    }  # fmt: skip


def _office_edit(client: httpx.Client, gid: str, properties: dict[str, Any]) -> None:
    client.patch(
        f"{SITES}/{gid}",
        content=json.dumps({"properties": properties}),
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()


# --- the server's side: a replica, as taking the map offline registers one --------------------


def _replica(live_server: LiveServer) -> str:
    server = live_server.server
    services: Services = server.client.app.state.services  # type: ignore[attr-defined]
    return services.replicas.register(
        "city", ("sites",), 0, owner="editor", map_id=server.public_map,
        sync_direction="bidirectional",
    ).id  # fmt: skip


# --- the tests ----------------------------------------------------------------------------------


def test_a_geojson_client_syncs_through_rest_and_graphql_conflicts_included(
    live_server: LiveServer, client: httpx.Client
) -> None:
    replica = _replica(live_server)
    rows = _download(client, replica, 0)  # the device's first copy
    assert len(rows) == 25
    start = client.get(f"/api/replicas/{replica}").json()["generation"]
    moved, gone = sorted(rows)[:2]
    assert rows[moved]["geometry"]["type"] == "Point"
    assert set(rows[moved]["properties"]) >= {"name", "status", "osm_id"}

    # REST, in the GeoJSON form: an insert, an update moving a site, a delete
    new = str(uuid.uuid4())
    insert = {
        "change_id": str(uuid.uuid4()), "layer": "sites", "kind": "insert",
        "hlc": _hlc(replica, 1), "version_vector": {replica: 1},
        "feature": {
            "type": "Feature", "id": new,
            "geometry": {"type": "Point", "coordinates": [24.9441, 60.1691]},
            "properties": {"name": "found in the field", "status": "ok", "osm_id": 900},
        },
    }  # fmt: skip
    update = _update(
        replica, rows[moved], 2, {"status": "broken"},
        geometry={"type": "Point", "coordinates": [24.95, 60.17]},
    )  # fmt: skip
    delete = {
        "change_id": str(uuid.uuid4()), "layer": "sites", "kind": "delete",
        "base_version": rows[gone]["version"], "hlc": _hlc(replica, 3),
        "version_vector": {**rows[gone]["version_vector"], replica: 1},
        "base": {k: rows[gone][k] for k in ("type", "id", "geometry", "properties")},
    }  # fmt: skip
    results = _upload(client, replica, [insert, update, delete])
    assert [r["status"] for r in results] == ["applied"] * 3, results
    status = client.get(
        f"/api/replicas/{replica}/changes/{insert['change_id']}", headers={"Accept": GEOJSON}
    )
    assert status.headers["content-type"] == GEOJSON
    assert status.json()["status"] == "applied"
    GeoJSONChangeResult.model_validate(status.json())

    # the server's changes since the replica was taken, as GeoJSON texts
    down = _download(client, replica, start)
    assert down[new]["properties"]["name"] == "found in the field"
    assert down[new]["geometry"]["coordinates"] == pytest.approx([24.9441, 60.1691])
    assert down[new]["layer"] == "sites"
    assert down[moved]["properties"]["status"] == "broken"
    assert down[moved]["geometry"]["coordinates"] == pytest.approx([24.95, 60.17])
    assert down[gone]["kind"] == "delete"
    assert down[gone]["feature"] is None

    # the office edits the moved site; the device too, from the row it has: a conflict
    _office_edit(client, moved, {"status": "office"})
    clash = _update(replica, down[moved], 4, {"status": "fixed"})
    [parked] = _upload(client, replica, [clash])
    assert parked["status"] == "conflict", parked
    assert parked["conflict_fields"] == ["status"]
    assert parked["row"]["feature"]["properties"]["status"] == "office"

    # GraphQL, the same form: an update of the inserted site, then a conflict on it too
    graphql_update = _update(replica, down[new], 5, {"name": "renamed over GraphQL"})
    change_set = {"changeSetId": str(uuid.uuid4()), "changes": [_graphql_change(graphql_update)]}
    [renamed] = _graphql(client, UPLOAD, replica=replica, set=change_set)["uploadChanges"][
        "results"
    ]
    assert renamed["status"] == "APPLIED", renamed
    after = {**down[new], "version": renamed["version"], "version_vector": renamed["versionVector"]}
    after["properties"] = {**after["properties"], "name": "renamed over GraphQL"}
    _office_edit(client, new, {"name": "named at the office"})
    graphql_clash = _graphql_change(_update(replica, after, 6, {"name": "named in the field"}))
    change_set = {"changeSetId": str(uuid.uuid4()), "changes": [graphql_clash]}
    [second] = _graphql(client, UPLOAD, replica=replica, set=change_set)["uploadChanges"]["results"]
    assert second["status"] == "CONFLICT", second
    assert second["row"]["feature"]["properties"]["name"] == "named at the office"

    # the review queue, in GeoJSON
    queue = client.get("/api/conflicts", headers={"Accept": GEOJSON})
    assert queue.headers["content-type"] == GEOJSON
    conflicts = {c["id"]: c for c in queue.json()["conflicts"]}
    assert set(conflicts) == {parked["conflict_id"], second["conflictId"]}
    shown = client.get(f"/api/conflicts/{parked['conflict_id']}", headers={"Accept": GEOJSON})
    first = shown.json()
    assert first["client"] == {"type": "Feature", "id": moved, "properties": {"status": "fixed"}}
    assert first["base"]["properties"] == {"status": "broken"}
    assert first["server"]["type"] == "Feature"
    assert first["server"]["properties"]["status"] == "office"
    assert first["server"]["geometry"]["coordinates"] == pytest.approx([24.95, 60.17])

    # settled: by REST with a merge given as a partial Feature, by GraphQL taking the device's
    settled = client.post(
        f"/api/conflicts/{parked['conflict_id']}/resolve",
        content=json.dumps(
            {"side": "merge", "feature": {"type": "Feature", "properties": {"status": "checked"}}}
        ),
        headers={"Content-Type": GEOJSON},
    )
    assert settled.status_code == 200, settled.text
    assert settled.headers["content-type"] == GEOJSON
    assert settled.json()["status"] == "resolved"
    assert settled.json()["server"]["properties"]["status"] == "office"  # what the device met
    resolved = _graphql(
        client,
        "mutation M($id: String!) { resolveConflict(id: $id, side: CLIENT) { status } }",
        id=second["conflictId"],
    )
    assert resolved == {"resolveConflict": {"status": "resolved"}}

    # the server's rows, through OGC API Features
    items = client.get(SITES, params={"limit": 100}).json()["features"]
    by_id = {f["id"]: f for f in items}
    assert gone not in by_id
    assert client.get(f"{SITES}/{gone}").status_code == 404
    assert by_id[moved]["properties"]["status"] == "checked"
    assert by_id[moved]["geometry"]["coordinates"] == pytest.approx([24.95, 60.17])
    assert by_id[new]["properties"]["name"] == "named in the field"
    assert by_id[new]["properties"]["osm_id"] == 900
    assert len(items) == 25
    # and the device's next download brings them
    last = _download(client, replica, start)
    assert last[moved]["properties"]["status"] == "checked"
    assert last[new]["properties"]["name"] == "named in the field"


def _compact(change: dict[str, Any], wkb: str | None) -> dict[str, Any]:
    """The same change in the compact form, its geometry given as hex WKB."""
    compact = {k: v for k, v in change.items() if k != "feature"}
    feature = change["feature"]
    compact["global_id"] = feature["id"]
    compact["values"] = {**feature["properties"], "geom": wkb}
    return compact


def _insert(replica: str, n: int, **feature: Any) -> dict[str, Any]:
    return {
        "change_id": str(uuid.uuid4()), "layer": "sites", "kind": "insert",
        "hlc": _hlc(replica, n), "version_vector": {replica: 1},
        "feature": {
            "type": "Feature", "id": str(uuid.uuid4()),
            "geometry": {"type": "Point", "coordinates": [24.94, 60.17]},
            "properties": {"name": "x", "status": "ok"}, **feature,
        },
    }  # fmt: skip


def test_the_geojson_form_gets_the_checks_and_answers_of_the_compact_one(
    live_server: LiveServer, client: httpx.Client
) -> None:
    replica = _replica(live_server)
    path = f"/api/replicas/{replica}/changes"
    vertices = [[24.9, 60.1], [24.95, 60.2]]
    line = {"type": "LineString", "coordinates": vertices}
    unknown_field = _insert(replica, 1, properties={"name": "x", "colour": "red"})
    wrong_type = _insert(replica, 2, geometry=line)
    wrong_value = _insert(replica, 3, properties={"name": "x", "osm_id": "many"})
    cases = [
        (unknown_field, Point(24.94, 60.17).wkb_hex),
        (wrong_type, LineString(vertices).wkb_hex),
        (wrong_value, Point(24.94, 60.17).wkb_hex),
    ]
    geojson = _upload(client, replica, [change for change, _ in cases])
    compact_set = {
        "change_set_id": str(uuid.uuid4()),
        "replica_id": replica,
        "changes": [
            _compact({**change, "change_id": str(uuid.uuid4())}, wkb) for change, wkb in cases
        ],
    }
    compact = client.post(path, json=compact_set).raise_for_status().json()["results"]
    assert [r["status"] for r in geojson] == ["rejected"] * 3, geojson
    assert [r["reason"] for r in geojson] == [r["reason"] for r in compact]
    assert "colour" in geojson[0]["reason"]

    # Accept decides the answer's form, whatever the body's
    compact_set["change_set_id"] = str(uuid.uuid4())
    answer = client.post(path, json=compact_set, headers={"Accept": GEOJSON})
    assert answer.headers["content-type"] == GEOJSON
    assert answer.headers["vary"] == "Accept"

    def refused(*changes: dict[str, Any], **headers: str) -> str:
        document = {"change_set_id": str(uuid.uuid4()), "replica_id": replica, "changes": changes}
        response = client.post(
            path, content=json.dumps(document), headers={"Content-Type": GEOJSON, **headers}
        )
        detail: str = assert_problem(response, 422)["detail"]
        return detail

    malformed = _insert(replica, 4, geometry={"type": "Point", "coordinates": [24.9]})
    assert "malformed Point coordinates" in refused(malformed)
    outside = _insert(replica, 5, geometry={"type": "Point", "coordinates": [2_500_000, 6_600_000]})
    assert "CRS84" in refused(outside)
    other_crs = _insert(
        replica, 6, crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3067"}}
    )
    assert "EPSG::3067" in refused(other_crs)
    assert "EPSG" in refused(
        _insert(replica, 7), **{"Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/3067>"}
    )
    assert "compact form" in refused({**_insert(replica, 8), "values": {"name": "x"}})
    # GraphQL refuses the same Feature with the same code
    change_set = {"changeSetId": str(uuid.uuid4()), "changes": [_graphql_change(other_crs)]}
    response = client.post(
        "/graphql", json={"query": UPLOAD, "variables": {"replica": replica, "set": change_set}}
    )
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "InvalidChangeSetError"
    assert "EPSG::3067" in error["message"]
    # nothing of it was written
    names = [
        f["properties"]["name"] for f in client.get(SITES, params={"limit": 100}).json()["features"]
    ]
    assert "x" not in names
