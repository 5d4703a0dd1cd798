"""OGC API – Features over the feature store: reading, paging, filters, edits, attachments."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from datetime import date
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from offmaps.features.model import FeatureQuery, Update
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


# --- datetime (OGC API - Features Part 1) -------------------------------------------------------


@pytest.fixture
def dated_sites(server: Server) -> Server:
    """``server`` with ``checked_on`` set on 20 of the 25 sites: 2024-01-01 + (osm_id mod 4)."""
    store = server.catalog.feature_service("city")
    page = store.query("sites", FeatureQuery(limit=25))
    store.apply_edits(
        [
            Update(
                "sites",
                f.global_id,
                {"checked_on": date(2024, 1, 1 + int(str(f.properties["osm_id"])) % 4)},
            )
            for f in page.features
            if int(str(f.properties["osm_id"])) < 20
        ]
    )
    return server


def _osm_ids(server: Server, url: str, **params: str) -> list[int]:
    ids: list[int] = []
    next_url: str | None = url
    first = True
    while next_url is not None:
        response = server.client.get(next_url, params=params if first else None)
        assert response.status_code == 200, response.text
        page = response.json()
        ids.extend(f["properties"]["osm_id"] for f in page["features"])
        next_url = next((lk["href"] for lk in page["links"] if lk["rel"] == "next"), None)
        first = False
    return ids


def test_datetime_selects_sites_by_their_date(dated_sites: Server) -> None:
    assert _osm_ids(dated_sites, SITES, datetime="2024-01-02") == [1, 5, 9, 13, 17]
    assert _osm_ids(dated_sites, SITES, datetime="2024-01-02T") == [1, 5, 9, 13, 17]
    assert _osm_ids(dated_sites, SITES, datetime="2024-01-02T23:30:00-02:00") == [
        2,
        6,
        10,
        14,
        18,
    ]
    late = [i for i in range(20) if i % 4 >= 2]
    assert _osm_ids(dated_sites, SITES, datetime="2024-01-03/..") == late
    assert _osm_ids(dated_sites, SITES, datetime="2024-01-03T00:00:00Z/") == late
    early = [i for i in range(20) if i % 4 < 2]
    assert _osm_ids(dated_sites, SITES, datetime="../2024-01-02") == early
    assert _osm_ids(dated_sites, SITES, datetime="2024-01-03/2024-01-02") == []


def test_datetime_pages_and_combines_with_bbox_and_filter(dated_sites: Server) -> None:
    first = dated_sites.client.get(
        SITES, params={"datetime": "2024-01-01/2024-01-02", "limit": "3"}
    )
    page = first.json()
    assert page["numberMatched"] == 10
    next_link = next(lk["href"] for lk in page["links"] if lk["rel"] == "next")
    assert "datetime=2024-01-01%2F2024-01-02" in next_link
    every = _osm_ids(dated_sites, SITES, datetime="2024-01-01/2024-01-02", limit="3")
    assert every == [i for i in range(20) if i % 4 < 2]
    both = _osm_ids(
        dated_sites,
        SITES,
        datetime="2024-01-01/2024-01-02",
        bbox="24.895,60.0,24.985,60.2",
        filter="osm_id > 4",
    )
    assert both == [5, 8]


def test_collections_declare_their_primary_temporal_property(dated_sites: Server) -> None:
    sites = dated_sites.client.get("/collections/city.sites").json()
    assert sites["extent"]["temporal"] == {
        "interval": [["2024-01-01T00:00:00.000Z", "2024-01-04T23:59:59.999Z"]],
        "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
    }
    assert "spatial" in sites["extent"]
    schema = dated_sites.client.get("/collections/city.sites/schema").json()
    roles = {name: p.get("x-ogc-role") for name, p in schema["properties"].items()}
    assert roles["checked_on"] == "primary-instant"
    assert list(roles.values()).count("primary-instant") == 1
    streets = dated_sites.client.get("/collections/city.streets").json()
    assert "temporal" not in streets["extent"]
    street_schema = dated_sites.client.get("/collections/city.streets/schema").json()
    assert all(
        p.get("x-ogc-role") != "primary-instant" for p in street_schema["properties"].values()
    )


def test_without_dated_rows_a_collection_has_no_temporal_extent(server: Server) -> None:
    assert "temporal" not in server.client.get("/collections/city.sites").json()["extent"]


def test_datetime_matches_every_feature_of_a_collection_without_temporal_property(
    server: Server,
) -> None:
    # Part 1, /req/core/fc-time-response C: features without temporal information match
    response = server.client.get(
        "/collections/city.streets/items", params={"datetime": "1900-01-01"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["numberMatched"] == 1


@pytest.mark.parametrize(
    "value",
    [
        "",
        "../..",
        "2024-01-31T10:00:00",
        "2024-02-30",
        "2024-01-01/2024-01-02/2024-01-03",
        "yesterday",
        "2024-01-01' OR 1=1 --",
        "9" * 5000,
    ],
)
def test_malformed_datetimes_get_a_400_problem(server: Server, value: str) -> None:
    body = assert_problem(server.client.get(SITES, params={"datetime": value}), 400)
    assert "datetime" in body["detail"]


def test_the_openapi_document_types_and_patterns_datetime(server: Server) -> None:
    document = server.client.get("/openapi.json").json()
    parameters = document["paths"]["/collections/{collection_id}/items"]["get"]["parameters"]
    (described,) = [p for p in parameters if p["name"] == "datetime"]
    assert described["in"] == "query"
    assert described["required"] is False
    schema = described["schema"]
    # beside the anyOf of string and null: a pattern constrains strings only
    pattern = schema["pattern"]
    assert {"type": "string"} in schema["anyOf"]
    for accepted in ("2024-01-31", "2024-01-31T10:00:00Z", "2024-01-01/..", "../2024-01-31T"):
        assert re.fullmatch(pattern, accepted), accepted
    for refused in ("2024-02-30", "../..", "2024-01-31T10:00:00"):
        assert re.fullmatch(pattern, refused) is None, refused
