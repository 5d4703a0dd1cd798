"""The tile format of a preplanned map area (``tile_format``: ``mbtiles`` by default, or
``pmtiles``): asked for at creation by REST, the CLI or the SDK, changed by a PATCH (which
repackages the area), shown in the area's document, and refused when it is neither."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_areas_cli import BBOX as CLI_BBOX
from tests.cli.test_areas_cli import at, create, run
from tests.server.test_areas_tiles_incremental import SHAPES, _source
from tests.server.test_areas_updates import _href, _packaged
from tests.serverkit import Server, assert_problem

__all__ = ["at"]  # the fixture, used by name


def _archives(area: dict[str, Any]) -> list[str]:
    return sorted(
        entry["path"]
        for entry in area["package"]["files"]
        if entry["path"].endswith((".mbtiles", ".pmtiles"))
    )


def test_an_area_is_packaged_in_the_tile_format_it_asks_for(server: Server) -> None:
    where, geometry = SHAPES["bbox"]
    _source(server, geometry)  # the map's basemap: a raster tile layer
    editor = server.token("editor")
    default = server.client.post(_href(server), json={"title": "A", **where}, headers=editor)
    assert default.status_code == 201, default.text
    assert default.json()["tile_format"] == "mbtiles"
    assert _archives(_packaged(server, default.json())) == ["basemap.mbtiles"]

    body = {"title": "B", **where, "tile_format": "pmtiles"}
    answer = server.client.post(_href(server), json=body, headers=editor)
    assert answer.status_code == 201, answer.text
    area = _packaged(server, answer.json())
    assert (area["tile_format"], _archives(area)) == ("pmtiles", ["basemap.pmtiles"])

    # a new format is a new epoch, packaged again from scratch
    changed = server.client.patch(
        _href(server, area["id"]), json={"tile_format": "mbtiles"}, headers=editor
    )
    assert changed.status_code == 200, changed.text
    again = _packaged(server, changed.json())
    assert (again["tile_format"], again["epoch"]) == ("mbtiles", area["epoch"] + 1)
    assert _archives(again) == ["basemap.mbtiles"]


@pytest.mark.parametrize("value", ["tpkx", "", 3, "PMTILES", ["pmtiles"]])
def test_another_tile_format_is_refused(server: Server, value: Any) -> None:
    body = {"title": "C", **SHAPES["bbox"][0], "tile_format": value}
    problem = assert_problem(
        server.client.post(_href(server), json=body, headers=server.token("editor")), 422
    )
    assert "tile_format" in json.dumps(problem)
    assert server.client.get(_href(server)).json()["areas"] == []


def test_the_cli_asks_for_a_tile_format(
    at: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    area = create(capsys, at, "--bbox", CLI_BBOX, "--tile-format", "pmtiles", "--wait")
    assert area["tile_format"] == "pmtiles"
    archives = _archives(area)
    assert archives
    assert all(path.endswith(".pmtiles") for path in archives)
    code, _, err = run(capsys, "areas", "create", *at, "--title", "x", "--bbox", CLI_BBOX,
                       "--tile-format", "tpkx")  # fmt: skip
    assert code == 2
    assert "tpkx" in err
