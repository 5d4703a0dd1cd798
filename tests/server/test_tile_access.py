"""Tile layers are shared like the web maps that show them, as feature collections are."""

from __future__ import annotations

import morecantile

from offmaps.schemas import WebMap
from tests.serverkit import Server, assert_problem, feature_layer, webmap_document

VT = "city-vt"
TILE = morecantile.tms.get("WebMercatorQuad").tile(24.94, 60.17, 12)
TILE_URL = f"/tiles/{VT}/{TILE.z}/{TILE.x}/{TILE.y}"


def share(server: Server, *, public: bool) -> None:
    """Show the service's vector tiles in the private map, made public or not."""
    document = webmap_document(
        title="Private",
        public=public,
        layers=[
            feature_layer("secret", edit=False),
            {"type": "vector_tile", "id": "vt", "title": "Vector tiles", "service": VT},
        ],
        tables=[],
    )
    server.catalog.webmaps.replace(server.private_map, WebMap.model_validate(document))


def test_a_tile_layer_in_no_web_map_is_for_admins_only(server: Server) -> None:
    for headers in ({}, server.token("viewer"), server.token("editor")):
        assert_problem(server.client.get(TILE_URL, headers=headers), 404)
        assert_problem(server.client.get(f"/tiles/{VT}/tilejson.json", headers=headers), 404)
        assert_problem(server.client.get(f"/collections/{VT}/tiles", headers=headers), 404)
    admin = server.token("admin")
    assert server.client.get(TILE_URL, headers=admin).status_code == 200
    assert server.client.get(f"/tiles/{VT}/tilejson.json", headers=admin).status_code == 200


def test_tile_layers_follow_the_sharing_of_their_web_maps(server: Server) -> None:
    share(server, public=False)
    tile = server.client.get(TILE_URL, headers=server.token("editor"))  # group crew
    assert tile.status_code == 200
    assert tile.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    assert_problem(server.client.get(TILE_URL, headers=server.token("viewer")), 404)
    assert_problem(server.client.get(TILE_URL), 404)

    share(server, public=True)
    anonymous = server.client.get(TILE_URL)
    assert anonymous.status_code == 200
    assert anonymous.content == tile.content

    share(server, public=False)
    assert_problem(server.client.get(TILE_URL), 404)


def test_a_bad_token_is_refused_even_for_public_tiles(server: Server) -> None:
    share(server, public=True)
    bad = {"Authorization": "Bearer not-a-token"}
    assert_problem(server.client.get(TILE_URL, headers=bad), 401)
