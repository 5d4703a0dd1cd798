from __future__ import annotations

import json

import pytest

from offmaps.errors import IncompatibleTileMatrixSetError, UnknownTileMatrixSetError
from offmaps.tiling import check_compatible, find_incompatibility, get_tms, list_tms, tms_from_json


def test_registered_sets_are_listed_and_found() -> None:
    assert {"WebMercatorQuad", "WorldCRS84Quad"} <= set(list_tms())
    assert get_tms().id == "WebMercatorQuad"
    assert get_tms("WorldCRS84Quad").id == "WorldCRS84Quad"


def test_unknown_id_names_the_known_ones() -> None:
    with pytest.raises(
        UnknownTileMatrixSetError, match=r"unknown tile matrix set 'Nope'.*WebMercatorQuad"
    ):
        get_tms("Nope")


def test_custom_set_from_json_is_compatible_whatever_its_title() -> None:
    document = json.loads(get_tms().model_dump_json(exclude_none=True, by_alias=True))
    document["id"] = "MyGrid"
    document["title"] = "A title of my own"
    custom = tms_from_json(json.dumps(document))
    assert custom.id == "MyGrid"
    assert find_incompatibility(custom, get_tms()) is None
    check_compatible(custom, get_tms())


def test_different_sets_are_incompatible_with_a_reason() -> None:
    with pytest.raises(IncompatibleTileMatrixSetError, match="different CRS"):
        check_compatible(get_tms("WebMercatorQuad"), get_tms("WorldCRS84Quad"))
    document = json.loads(get_tms().model_dump_json(exclude_none=True, by_alias=True))
    document["tileMatrices"][3]["tileWidth"] = 512
    other = tms_from_json(json.dumps(document))
    assert find_incompatibility(get_tms(), other) == "level 3: tile size 256x256 vs 512x256"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"id": "x"}', "not a valid TileMatrixSet"),
        ('{"id": "x", "crs": "EPSG:4326", "tileMatrices": "no"}', "not a valid TileMatrixSet"),
    ],
)
def test_invalid_json_is_refused(content: str, message: str) -> None:
    with pytest.raises(UnknownTileMatrixSetError, match=message):
        tms_from_json(content)
