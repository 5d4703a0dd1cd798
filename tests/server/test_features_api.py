"""OGC API – Features over the feature store: reading, paging, filters, edits, attachments."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.serverkit import Server, assert_problem

GEOJSON = "application/geo+json"
SITES = "/collections/city.sites/items"


def new_site(name: str = "new", lon: float = 24.95, lat: float = 60.17) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"name": name, "status": "ok"},
    }


def post(server: Server, body: object, headers: dict[str, str], url: str = SITES) -> Any:
    return server.client.post(
        url, content=json.dumps(body), headers={**headers, "Content-Type": GEOJSON}
    )


def test_landing_page_and_conformance_point_to_the_collections(server: Server) -> None:
    links = {link["rel"]: link["href"] for link in server.client.get("/").json()["links"]}
    assert links["data"].endswith("/collections")
    assert links["service-desc"].endswith("/openapi.json")
    conforms = server.client.get("/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in conforms


def test_anonymous_users_see_the_collections_of_public_maps_only(server: Server) -> None:
    ids = {c["id"] for c in server.client.get("/collections").json()["collections"]}
    assert ids == {"city.sites", "city.streets", "city.inspections"}
    assert_problem(server.client.get("/collections/city.secret/items"), 404)


def test_a_group_member_sees_the_private_map_layers(server: Server) -> None:
    response = server.client.get("/collections", headers=server.token("editor"))
    assert "city.secret" in {c["id"] for c in response.json()["collections"]}
    assert_problem(
        server.client.get("/collections/city.secret", headers=server.token("viewer")), 404
    )


def test_items_page_with_next_links_until_every_feature_was_seen(server: Server) -> None:
    seen: list[str] = []
    url: str | None = f"{SITES}?limit=10"
    while url is not None:
        response = server.client.get(url)
        assert response.headers["content-type"] == GEOJSON
        page = response.json()
        assert page["numberMatched"] == 25
        seen.extend(f["id"] for f in page["features"])
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    assert len(seen) == len(set(seen)) == 25


def test_items_filter_by_bbox_and_cql2(server: Server) -> None:
    in_box = server.client.get(f"{SITES}?bbox=24.895,60.0,24.925,60.2").json()
    assert {f["properties"]["name"] for f in in_box["features"]} == {"site 0", "site 1", "site 2"}
    filtered = server.client.get(SITES, params={"filter": "osm_id >= 20 AND name LIKE 'site%'"})
    assert filtered.json()["numberMatched"] == 5


@pytest.mark.parametrize(
    "query",
    [
        "filter=name = 'x'' OR 1=1 --'",
        "filter=nope = 1",
        "filter=osm_id = 'text'",
        "filter=((((",
        "filter-lang=sql&filter=1=1",
        "bbox=2.5e6,6.6e6,2.6e6,6.7e6&bbox-crs=http://www.opengis.net/def/crs/EPSG/0/3067",
        "bbox=60,24,61,25&bbox-crs=EPSG:4326",
        "bbox=1,2,3",
        "bbox=a,b,c,d",
        "bbox=0,80,10,70",
        "bbox=nan,0,1,1",
        "unknown=1",
    ],
)
def test_bad_queries_get_a_400_assert_problem(server: Server, query: str) -> None:
    assert_problem(server.client.get(f"{SITES}?{query}"), 400)


@pytest.mark.parametrize("query", ["limit=0", "limit=x", "offset=-1"])
def test_bad_paging_gets_a_422_assert_problem(server: Server, query: str) -> None:
    assert_problem(server.client.get(f"{SITES}?{query}"), 422)


def test_a_huge_limit_is_clamped(server: Server) -> None:
    assert server.client.get(f"{SITES}?limit=999999").json()["numberReturned"] == 25


def test_one_item_carries_its_version_as_etag(server: Server) -> None:
    first = server.client.get(f"{SITES}?limit=1").json()["features"][0]
    response = server.client.get(f"{SITES}/{first['id']}")
    assert response.headers["etag"] == '"1"'
    assert response.json()["properties"] == first["properties"]


@pytest.mark.parametrize("fid", ["nope", "00000000-0000-0000-0000-000000000000", "1' OR '1"])
def test_unknown_items_are_404(server: Server, fid: str) -> None:
    assert_problem(server.client.get(f"{SITES}/{fid}"), 404)


def test_create_update_replace_delete(server: Server) -> None:
    auth = server.token("editor")
    created = post(server, new_site(), auth)
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    path = location[location.index("/collections") :]
    patched = server.client.patch(
        path,
        content=json.dumps({"properties": {"status": "broken"}}),
        headers={**auth, "Content-Type": "application/merge-patch+json", "If-Match": '"1"'},
    )
    assert patched.status_code == 204, patched.text
    item = server.client.get(path).json()
    assert item["properties"]["status"] == "broken"
    assert item["properties"]["name"] == "new"
    replaced = server.client.put(
        path,
        content=json.dumps(new_site("renamed")),
        headers={**auth, "Content-Type": GEOJSON},
    )
    assert replaced.status_code == 204
    assert server.client.get(path).json()["properties"]["name"] == "renamed"
    assert server.client.delete(path, headers=auth).status_code == 204
    assert_problem(server.client.get(path), 404)


def test_a_stale_if_match_is_a_409_conflict(server: Server) -> None:
    auth = server.token("editor")
    path = post(server, new_site(), auth).headers["location"].split("testserver")[-1]
    headers = {**auth, "Content-Type": "application/merge-patch+json", "If-Match": '"1"'}
    body = json.dumps({"properties": {"status": "a"}})
    assert server.client.patch(path, content=body, headers=headers).status_code == 204
    assert_problem(server.client.patch(path, content=body, headers=headers), 409)


def test_editing_needs_a_token_the_scope_and_an_editable_layer(server: Server) -> None:
    assert_problem(post(server, new_site(), {}), 401)
    assert_problem(post(server, new_site(), server.token("viewer")), 403)
    streets = "/collections/city.streets/items"
    line = {"type": "Feature", "geometry": None, "properties": {"name": "x"}}
    assert_problem(post(server, line, server.token("editor"), streets), 403)
    assert post(server, line, server.token("admin"), streets).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0]}},
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [0, 0]},
            "properties": {"x": 1},
        },
        {"type": "Feature", "properties": {"osm_id": "not a number"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [999, 0]}},
        ["not", "a", "feature"],
        "text",
    ],
)
def test_invalid_features_are_refused_with_400(server: Server, body: object) -> None:
    assert_problem(post(server, body, server.token("editor")), 400)


def test_bodies_that_are_not_json_or_not_geojson_are_refused(server: Server) -> None:
    auth = server.token("editor")
    bad_json = server.client.post(SITES, content=b"{", headers={**auth, "Content-Type": GEOJSON})
    assert_problem(bad_json, 400)
    xml = server.client.post(SITES, content=b"<a/>", headers={**auth, "Content-Type": "text/xml"})
    assert_problem(xml, 415)
    deep = "[" * 100_000 + "]" * 100_000
    assert_problem(
        server.client.post(SITES, content=deep, headers={**auth, "Content-Type": GEOJSON}), 400
    )


def test_a_crs_other_than_crs84_is_refused_and_crs84_accepted(server: Server) -> None:
    auth = {**server.token("editor"), "Content-Type": GEOJSON}
    crs84 = "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"
    etrs = "<http://www.opengis.net/def/crs/EPSG/0/3067>"
    other = server.client.post(SITES, json=new_site(), headers={**auth, "Content-Crs": etrs})
    assert "CRS84" in assert_problem(other, 400)["detail"]
    legacy = {**new_site(), "crs": {"type": "name", "properties": {"name": "EPSG:3067"}}}
    assert_problem(server.client.post(SITES, json=legacy, headers=auth), 400)
    ok = server.client.post(SITES, json=new_site(), headers={**auth, "Content-Crs": crs84})
    assert ok.status_code == 201, ok.text
    named = {**new_site(), "crs": {"type": "name", "properties": {"name": crs84[1:-1]}}}
    assert server.client.post(SITES, json=named, headers=auth).status_code == 201
    query = f"{SITES}?bbox=24,60,25,61&bbox-crs={crs84[1:-1]}"
    assert server.client.get(query).status_code == 200


def test_oversized_bodies_are_refused_with_413(server: Server) -> None:
    auth = server.token("editor")
    huge = json.dumps(new_site("x" * 300_000))
    assert_problem(
        server.client.post(SITES, content=huge, headers={**auth, "Content-Type": GEOJSON}), 413
    )


def test_attachments_round_trip_content_addressed(server: Server) -> None:
    auth = server.token("editor")
    first = server.client.get(f"{SITES}?limit=1").json()["features"][0]
    base = f"{SITES}/{first['id']}/attachments"
    photo = b"\xff\xd8\xff fake jpeg bytes"
    uploaded = server.client.post(
        base, files={"file": ("../../etc/photo.jpg", photo, "image/jpeg")}, headers=auth
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["sha256"] == hashlib.sha256(photo).hexdigest()
    listed = server.client.get(base).json()["attachments"]
    assert [(a["name"], a["size"]) for a in listed] == [("photo.jpg", len(photo))]
    got = server.client.get(f"{base}/{listed[0]['id']}")
    assert got.content == photo
    assert got.headers["content-type"] == "image/jpeg"
    assert server.client.delete(f"{base}/{listed[0]['id']}", headers=auth).status_code == 204
    assert server.client.get(base).json()["attachments"] == []


def test_attachments_need_edit_rights_and_an_existing_feature(server: Server) -> None:
    first = server.client.get(f"{SITES}?limit=1").json()["features"][0]
    files = {"file": ("a.txt", b"x", "text/plain")}
    assert_problem(server.client.post(f"{SITES}/{first['id']}/attachments", files=files), 401)
    missing = f"{SITES}/00000000-0000-0000-0000-000000000000/attachments"
    assert_problem(server.client.post(missing, files=files, headers=server.token("editor")), 404)


# --- schemas (Part 5), queryables (Part 3), and the XML Schema GDAL reads --------------------

JSON_SCHEMA = "application/schema+json"
SCHEMA_RELS = {
    "http://www.opengis.net/def/rel/ogc/1.0/schema": ("schema", JSON_SCHEMA),
    "http://www.opengis.net/def/rel/ogc/1.0/queryables": ("queryables", JSON_SCHEMA),
    "describedBy": ("schema.xsd", "application/xml"),
}


def test_collections_link_their_schema_queryables_and_xml_schema(server: Server) -> None:
    conforms = server.client.get("/conformance").json()["conformsTo"]
    for uri in (
        "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
        "http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/schemas",
        "http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/core-roles-features",
    ):
        assert uri in conforms
    for collection in server.client.get("/collections").json()["collections"]:
        links = {link["rel"]: link for link in collection["links"]}
        for rel, (path, media_type) in SCHEMA_RELS.items():
            assert links[rel]["type"] == media_type
            assert links[rel]["href"].endswith(f"/collections/{collection['id']}/{path}")
            response = server.client.get(links[rel]["href"])
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].split(";")[0] == media_type


def test_the_schema_describes_the_items_as_served(server: Server) -> None:
    response = server.client.get("/collections/city.sites/schema")
    document = response.json()
    Draft202012Validator.check_schema(document)
    assert document["$id"] == "http://testserver/collections/city.sites/schema"
    properties = document["properties"]
    assert properties["globalid"]["x-ogc-role"] == "id"
    assert properties["geom"] == {
        "title": "Geometry",
        "format": "geometry-point",
        "x-ogc-role": "primary-geometry",
    }
    assert properties["osm_id"]["format"] == "int64"
    assert properties["checked_on"]["format"] == "date"
    server.client.patch(
        f"{SITES}/{_first_site(server)}",
        content=json.dumps({"properties": {"checked_on": "2024-02-29", "osm_id": 2**63 - 1}}),
        headers={**server.token("editor"), "Content-Type": GEOJSON},
    ).raise_for_status()
    validator = Draft202012Validator(document, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for feature in server.client.get(f"{SITES}?limit=100").json()["features"]:
        present = {k: v for k, v in feature["properties"].items() if v is not None}
        validator.validate({"globalid": feature["id"], **present})


def _first_site(server: Server) -> str:
    feature_id: str = server.client.get(f"{SITES}?limit=1").json()["features"][0]["id"]
    return feature_id


def test_every_queryable_can_be_filtered_on_and_nothing_else(server: Server) -> None:
    for cid in ("city.sites", "city.inspections", "city.streets"):
        document = server.client.get(f"/collections/{cid}/queryables").json()
        Draft202012Validator.check_schema(document)
        assert document["additionalProperties"] is False
        assert "globalid" not in document["properties"]
        for name in document["properties"]:
            response = server.client.get(
                f"/collections/{cid}/items", params={"filter": f'"{name}" IS NULL'}
            )
            assert response.status_code == 200, response.text
        for name in ("globalid", "geom", "fid", "row_version", "nonexistent"):
            response = server.client.get(
                f"/collections/{cid}/items", params={"filter": f'"{name}" IS NULL'}
            )
            assert_problem(response, 400)


def test_the_xml_schema_gives_gdal_64_bit_integers(server: Server) -> None:
    response = server.client.get("/collections/city.sites/schema.xsd")
    root = ET.fromstring(response.content)
    xs = "{http://www.w3.org/2001/XMLSchema}"
    types = {e.get("name"): e.get("type") for e in root.iter(f"{xs}element")}
    assert types["osm_id"] == "xs:long"
    assert types["checked_on"] == "xs:date"
    assert types["geom"] == "gml:PointPropertyType"


@pytest.mark.parametrize("path", ["schema", "queryables", "schema.xsd"])
def test_schemas_of_hidden_or_unknown_collections_are_404(server: Server, path: str) -> None:
    assert_problem(server.client.get(f"/collections/city.secret/{path}"), 404)
    assert_problem(server.client.get(f"/collections/nope.nothing/{path}"), 404)
    editor = server.token("editor")
    assert server.client.get(f"/collections/city.secret/{path}", headers=editor).status_code == 200
