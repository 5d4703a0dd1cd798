"""The GraphQL API (/graphql) with a real GraphQL client (gql over HTTP) on a live server.

Caches (create from an archive, seed dry run, seed job, stats), sync (a change set of GeoJSON
rows, the download, a change's status, a conflict and its resolution), auth refusals before
anything runs, the depth, cost, alias and token limits, malformed requests, and the printed
schema (docs/schema.graphql), which `python -m tests.server.test_graphql` writes again.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport

from offmaps.containers.base import TilesetMetadata
from offmaps.features.model import Update
from offmaps.server.graphql import FIELD_REQUIREMENTS, MAX_ALIASES, MAX_COST, schema
from offmaps.services import Services
from offmaps.types import TileFormat
from tests.server.test_tiles import write_archive
from tests.serverkit import PASSWORD, LiveServer, Server, assert_problem
from tests.tilegen import sample_tiles

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "schema.graphql"
PNG_TILES = sample_tiles(TileFormat.PNG, maxzoom=3, duplicate=True)
WORLD = {
    "type": "Polygon",
    "coordinates": [[[-180, -85], [180, -85], [180, 85], [-180, 85], [-180, -85]]],
}


def _services(server: Server) -> Services:
    services: Services = server.client.app.state.services  # type: ignore[attr-defined]
    return services


def _token(server: Server, user: str, password: str = PASSWORD) -> dict[str, str]:
    form = {"grant_type": "password", "username": user, "password": password}
    response = server.client.post("/oauth2/token", data=form)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def cacher(server: Server) -> dict[str, str]:
    _services(server).users.add_user("cacher", PASSWORD, scopes=("cache:write",))
    return _token(server, "cacher")


@pytest.fixture
def clients(live_server: LiveServer) -> Iterator[Any]:
    """Makes gql clients (with the schema from introspection) for a caller's headers."""
    made: list[Client] = []

    def make(headers: dict[str, str] | None = None) -> Client:
        transport = HTTPXTransport(url=f"{live_server.url}/graphql", headers=headers or {})
        client = Client(transport=transport, fetch_schema_from_transport=True)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close_sync()  # type: ignore[no-untyped-call]


def _run(client: Client, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = client.execute(GraphQLRequest(query, variable_values=variables))
    return answer


def _errors(client: Client, query: str, **variables: Any) -> list[dict[str, Any]]:
    with pytest.raises(TransportQueryError) as caught:
        _run(client, query, variables or None)
    errors = caught.value.errors
    assert errors
    return errors


# --- caches ---------------------------------------------------------------------------------


def test_caches_through_a_graphql_client(
    live_server: LiveServer, clients: Any, cacher: dict[str, str], tmp_path: Path
) -> None:
    archive = write_archive(
        tmp_path / "source.mbtiles",
        TilesetMetadata(tile_format=TileFormat.PNG, minzoom=0, maxzoom=3),
        PNG_TILES,
    )
    client = clients(cacher)
    created = _run(
        client,
        """mutation Create($location: String!) {
              createCache(definition: {name: "world", source: {kind: "archive",
                location: $location}, format: "png", maxZoom: 3}) { name format maxZoom tilesUrl }
            }""",
        {"location": str(archive)},
    )["createCache"]
    assert created["name"] == "world"
    assert created["format"] == "PNG"
    assert created["tilesUrl"].endswith("/tiles/world/{z}/{x}/{y}")

    plan = _run(
        client,
        """query Plan($area: JSON!) { seedPlan(name: "world", area: $area, minZoom: 0,
              maxZoom: 2) { tiles stored toFetch estimatedBytes levels { z tiles } } }""",
        {"area": WORLD},
    )["seedPlan"]
    assert plan["tiles"] == 1 + 4 + 16
    assert plan["stored"] == 0
    assert plan["toFetch"] == 21
    assert [level["tiles"] for level in plan["levels"]] == [1, 4, 16]

    started = _run(
        client,
        """mutation Seed($area: JSON!) { seedCache(name: "world", area: $area, minZoom: 0,
              maxZoom: 2) { job { id status kind } plan { tiles } } }""",
        {"area": WORLD},
    )["seedCache"]
    assert started["plan"]["tiles"] == 21
    job_query = "query Job($id: String!) { job(id: $id) { status progress result } }"
    deadline = time.monotonic() + 60
    job = _run(client, job_query, {"id": started["job"]["id"]})["job"]
    while job["status"] not in {"SUCCEEDED", "FAILED", "CANCELLED"}:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = _run(client, job_query, {"id": started["job"]["id"]})["job"]
    assert job["status"] == "SUCCEEDED", job

    found = _run(
        client,
        """{ cache(name: "world") { stats { tiles bytes blobs dedupSaving
                 levels { z tiles } } } cacheStore { blobs orphans } }""",
    )
    stats = found["cache"]["stats"]
    levels = [(level["z"], level["tiles"]) for level in stats["levels"]]
    assert stats["tiles"] == sum(tiles for _, tiles in levels) > 0  # what the archive has
    assert stats["blobs"] < stats["tiles"]
    assert stats["dedupSaving"] > 0
    assert found["cacheStore"] == {"blobs": stats["blobs"], "orphans": 0}
    # the same figures as REST's
    rest = live_server.server.client.get("/api/caches/world/stats", headers=cacher).json()
    assert (rest["tiles"], rest["blobs"], rest["dedup_saving"]) == (
        stats["tiles"], stats["blobs"], stats["dedupSaving"],
    )  # fmt: skip
    assert [(level["z"], level["tiles"]) for level in rest["levels"]] == levels

    # presigned URLs: downloads, then an upload granted, put and committed
    page = _run(
        client,
        """query Urls($area: JSON!) { tileUrls(name: "world", area: $area, minZoom: 0,
              maxZoom: 2, limit: 5) { urls { z x y sha256 url method } next { z x y } } }""",
        {"area": WORLD},
    )["tileUrls"]
    assert len(page["urls"]) == 5
    assert page["next"] is not None
    first = page["urls"][0]
    fetched = httpx.get(first["url"])
    assert hashlib.sha256(fetched.content).hexdigest() == first["sha256"]
    fresh = b"\x89PNG\r\n\x1a\nfrom the field"
    grant = _run(
        client,
        """mutation Grant($sha: String!, $size: Long!) { grantUploads(name: "world",
              tiles: [{z: 2, x: 0, y: 0, sha256: $sha, size: $size}]) {
              id uploads { url method headers } } }""",
        {"sha": hashlib.sha256(fresh).hexdigest(), "size": len(fresh)},
    )["grantUploads"]
    (upload,) = grant["uploads"]
    assert httpx.put(upload["url"], content=fresh, headers=upload["headers"]).status_code == 201
    committed = _run(
        client,
        """mutation Commit($id: String!) { commitUploads(name: "world", grantId: $id) {
              committed changed } }""",
        {"id": grant["id"]},
    )["commitUploads"]
    assert committed == {"committed": True, "changed": 1}
    served = live_server.server.client.get("/tiles/world/2/0/0", headers=_token(
        live_server.server, "admin"))  # fmt: skip
    assert served.content == fresh


def test_errors_carry_the_rest_codes(clients: Any, cacher: dict[str, str]) -> None:
    client = clients(cacher)
    [error] = _errors(client, '{ cache(name: "nothing") { name } }')
    assert error["extensions"] == {"code": "CacheNotFoundError", "status": 404}
    [error] = _errors(
        client,
        'mutation { createCache(definition: {name: "x", source: {kind: "xyz", '
        'location: "ftp://nowhere"}}) { name } }',
    )
    assert error["extensions"] == {"code": "RequestValidationError", "status": 422}
    assert "http or https" in error["message"]


# --- auth -----------------------------------------------------------------------------------


def test_mutations_need_a_token_with_the_scope_checked_before_anything_runs(
    live_server: LiveServer, clients: Any, cacher: dict[str, str], tmp_path: Path
) -> None:
    server = live_server.server
    create = (
        'mutation { createCache(definition: {name: "refused", source: {kind: "xyz", '
        'location: "https://tile.example.org/{z}/{x}/{y}.png"}}) { name } }'
    )
    [anonymous] = _errors(clients(), create)
    assert anonymous["extensions"] == {"code": "InvalidTokenError", "status": 401}
    [bad] = _errors(clients({"Authorization": "Bearer not-a-token"}), "{ caches { name } }")
    assert bad["extensions"]["code"] == "InvalidTokenError"
    [editor] = _errors(clients(_token(server, "editor")), create)
    assert editor["extensions"] == {
        "code": "InsufficientScopeError", "status": 403, "required_scopes": ["cache:write"],
    }  # fmt: skip
    # a document with a field the caller may run and one they may not runs neither
    mixed = create.replace("mutation {", 'mutation { deleteCache(name: "x")', 1)
    [viewer] = _errors(clients(_token(server, "viewer")), mixed)
    assert viewer["extensions"]["status"] == 403
    assert "path" not in viewer  # refused as a whole, before any field
    assert _services(server).caches.list() == []
    # a cache writer may not upload edits, nor read the review queue
    [cache_only] = _errors(clients(cacher), "{ conflicts { id } }")
    assert cache_only["extensions"]["code"] == "InsufficientScopeError"
    # and introspection is open
    assert _run(clients(), "{ __schema { queryType { name } } }")


def test_every_root_field_has_the_scope_of_its_rest_route() -> None:
    roots = {
        field.name
        for kind in (schema.query, schema.mutation)
        for field in schema.get_type_by_name(kind.__name__).fields  # type: ignore[union-attr]
    }
    camel = {schema.config.name_converter.apply_naming_config(name) for name in roots}
    assert camel == set(FIELD_REQUIREMENTS)


# --- sync -----------------------------------------------------------------------------------


def _hlc(replica: str, n: int) -> str:
    return f"{1796000000000 + n:013d}.000000.{replica}"


UPLOAD = """
mutation Upload($replica: String!, $set: ChangeSetInput!) {
  uploadChanges(replicaId: $replica, changeSet: $set) {
    generation
    results { changeId status reason version versionVector conflictId conflictFields
              row { kind feature } }
  }
}"""


def test_sync_with_geojson_rows_through_a_graphql_client(
    live_server: LiveServer, clients: Any
) -> None:
    server = live_server.server
    services = _services(server)
    store = services.catalog.feature_service("city")
    replica = services.replicas.register(
        "city", ("sites",), store.generation(), owner="editor", map_id=server.public_map,
        sync_direction="bidirectional",
    ).id  # fmt: skip
    client = clients(_token(server, "editor"))
    info = _run(
        client,
        "query R($id: String!) { replica(id: $id) { id layers openConflicts } }",
        {"id": replica},
    )["replica"]
    assert info == {"id": replica, "layers": ["sites"], "openConflicts": 0}
    since = store.generation()

    gid = str(uuid.uuid4())
    insert: dict[str, Any] = {
        "changeId": str(uuid.uuid4()), "layer": "sites", "kind": "insert",
        "hlc": _hlc(replica, 1), "versionVector": {replica: 1},
        "feature": {
            "type": "Feature", "id": gid,
            "geometry": {"type": "Point", "coordinates": [24.9441, 60.1691]},
            "properties": {"name": "from graphql", "status": "ok", "osm_id": 900},
        },
    }  # fmt: skip
    answer = _run(
        client,
        UPLOAD,
        {
            "replica": replica,
            "set": {"changeSetId": str(uuid.uuid4()), "changes": [insert]},
        },
    )["uploadChanges"]
    [result] = answer["results"]
    assert result["status"] == "APPLIED", result
    version = result["version"]

    download = _run(
        client,
        """query D($replica: String!, $since: Long!) { changes(replicaId: $replica,
              since: $since) { generation count changes { globalId kind version feature } } }""",
        {"replica": replica, "since": since},
    )["changes"]
    [row] = [c for c in download["changes"] if c["globalId"] == gid]
    assert row["kind"] == "upsert"
    assert download["generation"] == answer["generation"]
    assert row["feature"]["type"] == "Feature"
    assert row["feature"]["id"] == gid
    assert row["feature"]["geometry"]["type"] == "Point"
    assert row["feature"]["geometry"]["coordinates"] == pytest.approx([24.9441, 60.1691])
    assert row["feature"]["properties"]["name"] == "from graphql"

    status = _run(
        client,
        "query S($r: String!, $c: UUID!) { changeStatus(replicaId: $r, changeId: $c) "
        "{ status version } }",
        {"r": replica, "c": insert["changeId"]},
    )["changeStatus"]
    assert status == {"status": "APPLIED", "version": version}

    # the office changes the status, the device too (from the version it had): a conflict
    store.apply_edits([Update("sites", uuid.UUID(gid), {"status": "office"}, base_version=version)])
    update = {
        "changeId": str(uuid.uuid4()), "layer": "sites", "kind": "update",
        "hlc": _hlc(replica, 2), "baseVersion": version, "versionVector": {replica: 2},
        "changed": ["status"],
        "feature": {**insert["feature"], "properties": {
            **insert["feature"]["properties"], "status": "broken"}},
        "base": {"type": "Feature", "id": gid, "properties": {"status": "ok"}},
    }  # fmt: skip
    [parked] = _run(
        client,
        UPLOAD,
        {
            "replica": replica,
            "set": {"changeSetId": str(uuid.uuid4()), "changes": [update]},
        },
    )["uploadChanges"]["results"]
    assert parked["status"] == "CONFLICT", parked
    assert parked["conflictFields"] == ["status"]
    assert parked["row"]["feature"]["properties"]["status"] == "office"

    queue = _run(client, "{ conflicts { id kind fields base client server } }")["conflicts"]
    [conflict] = queue
    assert conflict["id"] == parked["conflictId"]
    assert conflict["client"]["properties"] == {"status": "broken"}
    assert conflict["server"]["type"] == "Feature"
    settled = _run(
        client,
        """mutation M($id: String!) { resolveConflict(id: $id, side: MERGE,
              properties: {status: "checked"}) { status resolution } }""",
        {"id": conflict["id"]},
    )["resolveConflict"]
    assert settled == {"status": "resolved", "resolution": "manual:merge"}
    assert store.get_feature("sites", uuid.UUID(gid)).properties["status"] == "checked"
    # REST sees the same queue
    rest = server.client.get(
        "/api/conflicts", params={"status": "resolved"}, headers=_token(server, "editor")
    ).json()
    assert [c["id"] for c in rest["conflicts"]] == [conflict["id"]]


def test_uploads_need_features_edit_and_the_replica_owner(
    live_server: LiveServer, clients: Any
) -> None:
    server = live_server.server
    services = _services(server)
    services.users.add_user("reader", PASSWORD, scopes=("maps:read", "offline:sync"))
    replica = services.replicas.register(
        "city", ("sites",), 0, owner="editor", map_id=server.public_map,
        sync_direction="bidirectional",
    ).id  # fmt: skip
    variables = {"replica": replica, "set": {"changeSetId": str(uuid.uuid4()), "changes": []}}
    [reader] = _errors(clients(_token(server, "reader")), UPLOAD, **variables)
    assert reader["extensions"]["code"] == "InsufficientScopeError"
    services.users.add_user("other", PASSWORD, scopes=("features:edit",))
    [other] = _errors(clients(_token(server, "other")), UPLOAD, **variables)
    assert other["extensions"] == {"code": "ReplicaNotFoundError", "status": 404}


# --- limits and malformed requests ----------------------------------------------------------


def _post(live_server: LiveServer, query: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{live_server.url}/graphql", json={"query": query}, headers=headers)


def _graphql_errors(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None
    errors: list[dict[str, Any]] = body["errors"]
    assert all(e["extensions"]["status"] == 400 for e in errors), errors
    assert "Traceback" not in response.text
    return errors


def test_too_deep_too_costly_and_too_many_aliases_are_refused(
    live_server: LiveServer, cacher: dict[str, str]
) -> None:
    deep = "{ caches { " + "stats { " * 11 + "tiles" + " }" * 11 + " } }"
    messages = [e["message"] for e in _graphql_errors(_post(live_server, deep, cacher))]
    assert any("exceeds maximum operation depth" in m for m in messages), messages

    fragments = ["fragment F0 on Cache { name title tms }"] + [
        f"fragment F{i} on Cache {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 12)
    ]
    costly = "{ caches { ...F11 } } " + " ".join(fragments)
    [error] = _graphql_errors(_post(live_server, costly, cacher))
    assert f"over the limit of {MAX_COST:,}" in error["message"]

    aliases = " ".join(f"a{i}: caches {{ name }}" for i in range(MAX_ALIASES + 1))
    [error] = _graphql_errors(_post(live_server, "{ " + aliases + " }", cacher))
    assert "aliases" in error["message"]

    tokens = "{ " + "caches { name } " * 2000 + "}"
    [error] = _graphql_errors(_post(live_server, tokens, cacher))
    assert "tokens" in error["message"]
    # nothing of these ran: an allowed query still works
    assert _post(live_server, "{ caches { name } }", cacher).json() == {"data": {"caches": []}}


def test_malformed_requests_are_graphql_errors_or_problems_never_500(
    live_server: LiveServer, cacher: dict[str, str]
) -> None:
    [error] = _graphql_errors(_post(live_server, "{ caches { name ", cacher))
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    [error] = _graphql_errors(_post(live_server, "{ caches { nope } }", cacher))
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    errors = _graphql_errors(
        _post(live_server, '{ seedPlan(name: 1, area: {}, minZoom: "a", maxZoom: 0) { tiles } }',
              cacher)
    )  # fmt: skip
    assert {e["extensions"]["code"] for e in errors} == {"GRAPHQL_VALIDATION_FAILED"}
    url = f"{live_server.url}/graphql"
    not_json = httpx.post(
        url, content=b"{bad", headers={**cacher, "content-type": "application/json"}
    )
    assert_problem(not_json, 400)
    assert_problem(httpx.post(url, json={"variables": {}}, headers=cacher), 400)
    by_get = httpx.get(url, params={"query": 'mutation { deleteCache(name: "x") }'}, headers=cacher)
    assert_problem(by_get, 405)
    assert by_get.headers["allow"] == "POST"
    huge = httpx.post(url, json={"query": "{ caches { name } }" + " " * 300_000}, headers=cacher)
    assert_problem(huge, 413)  # over the test server's max body
    # queries by GET work
    assert httpx.get(url, params={"query": "{ caches { name } }"}, headers=cacher).json() == {
        "data": {"caches": []}
    }


# --- the schema file ------------------------------------------------------------------------


def test_the_schema_file_is_the_printed_schema() -> None:
    assert SCHEMA_FILE.read_text() == schema.as_str() + "\n", (
        "docs/schema.graphql is out of date: run `python -m tests.server.test_graphql`"
    )


if __name__ == "__main__":
    SCHEMA_FILE.write_text(schema.as_str() + "\n")
    print(f"wrote {SCHEMA_FILE}")
