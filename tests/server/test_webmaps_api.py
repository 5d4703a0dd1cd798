"""Web map items: listing by sharing, creating with checked references, owner-only changes."""

from __future__ import annotations

import json
from typing import Any

from tests.serverkit import Server, assert_problem, feature_layer, webmap_document


def document(**changes: Any) -> dict[str, Any]:
    doc = webmap_document(
        title="New", public=False, layers=[feature_layer("sites", edit=False)], tables=[]
    )
    doc.update(changes)
    return doc


def create(server: Server, doc: object, headers: dict[str, str]) -> Any:
    return server.client.post(
        "/api/maps",
        content=json.dumps(doc),
        headers={**headers, "Content-Type": "application/json"},
    )


def test_maps_are_listed_by_sharing(server: Server) -> None:
    anonymous = {m["title"] for m in server.client.get("/api/maps").json()["maps"]}
    assert anonymous == {"Public"}
    crew = server.client.get("/api/maps", headers=server.token("editor")).json()["maps"]
    assert {m["title"] for m in crew} == {"Public", "Private"}
    admin = server.client.get("/api/maps", headers=server.token("admin")).json()["maps"]
    assert len(admin) == 2


def test_a_private_map_is_not_found_by_others(server: Server) -> None:
    assert_problem(server.client.get(f"/api/maps/{server.private_map}"), 404)
    assert_problem(
        server.client.get(f"/api/maps/{server.private_map}", headers=server.token("viewer")), 404
    )
    found = server.client.get(f"/api/maps/{server.private_map}", headers=server.token("editor"))
    assert found.json()["item"]["title"] == "Private"


def test_create_read_replace_delete(server: Server) -> None:
    auth = server.token("editor")
    created = create(server, document(), auth)
    assert created.status_code == 201, created.text
    map_id = created.json()["id"]
    got = server.client.get(f"/api/maps/{map_id}", headers=auth).json()
    assert got["sharing"]["owner"] == "editor"
    renamed = document(item={"title": "Renamed"})
    put = server.client.put(
        f"/api/maps/{map_id}",
        content=json.dumps(renamed),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert put.status_code == 204, put.text
    assert (
        server.client.get(f"/api/maps/{map_id}", headers=auth).json()["item"]["title"] == "Renamed"
    )
    assert server.client.delete(f"/api/maps/{map_id}", headers=auth).status_code == 204
    assert_problem(server.client.get(f"/api/maps/{map_id}", headers=auth), 404)


def test_only_writers_create_and_only_owners_change(server: Server) -> None:
    assert_problem(create(server, document(), {}), 401)
    assert_problem(create(server, document(), server.token("viewer")), 403)
    public = f"/api/maps/{server.public_map}"
    assert_problem(server.client.delete(public, headers=server.token("viewer")), 403)
    assert server.client.delete(public, headers=server.token("admin")).status_code == 204


def test_references_to_missing_layers_are_refused(server: Server) -> None:
    missing = document(operational_layers=[{**feature_layer("nowhere", edit=False)}])
    assert_problem(create(server, missing, server.token("editor")), 400)


def test_malformed_documents_are_refused(server: Server) -> None:
    auth = {**server.token("editor"), "Content-Type": "application/json"}
    for body in (b"{", b"[]", b'{"format_version": "9"}', json.dumps(document(extra=1)).encode()):
        assert_problem(server.client.post("/api/maps", content=body, headers=auth), 400)
    assert_problem(server.client.get("/api/maps/..%2f..%2fusers"), 404)
