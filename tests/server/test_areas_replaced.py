"""A package whose files changed where no update file reaches (a GeoPackage that is no replica,
a file that came or went) is taken whole by devices: the server's plan says ``full`` with the
files, never ``updates`` that would leave the device's copy of them stale. A changed MBTiles or
PMTiles archive is reached by its tile update."""

from __future__ import annotations

from typing import Any

import pytest

from offmaps.offline import preplanned
from offmaps.offline.generate import ExtractedService
from offmaps.state.areas import AreaPackage
from tests.server.test_areas_updates import _edit, _href, _new_area, _packaged, _services
from tests.serverkit import Server


def _files(**shas: str) -> tuple[dict[str, Any], ...]:
    return tuple({"path": path.replace("__", "/").replace("_", "."), "size": 1, "sha256": sha}
                 for path, sha in shas.items())  # fmt: skip


def test_only_changed_files_no_update_reaches_are_replaced() -> None:
    extracted = {"city": ExtractedService("city.gpkg", 1, {}, False)}
    before = _files(
        city_gpkg="a", basemap_mbtiles="b", roads_gpkg="c", old_gpkg="d", relief_pmtiles="i",
        package_json="e", thumbnail_png="f", attachments__ab__cd="g",
    )  # fmt: skip
    previous = AreaPackage("area", 1, 1, 0.0, "job", before)
    after = _files(
        city_gpkg="A", basemap_mbtiles="B", roads_gpkg="C", new_gpkg="x", relief_pmtiles="I",
        package_json="E", thumbnail_png="F", attachments__ab__cd="g", attachments__ef__01="h",
    )  # fmt: skip
    assert preplanned._replaced(previous, after, extracted) == (
        "new.gpkg", "old.gpkg", "roads.gpkg",
    )  # fmt: skip
    assert preplanned._replaced(previous, before, extracted) == ()
    assert preplanned._replaced(None, after, extracted) == ()


def test_the_plan_takes_a_package_that_replaced_files_whole(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = server.token("editor")
    area = _new_area(server)
    href = _href(server, area["id"])
    monkeypatch.setattr(preplanned, "_can_refresh", lambda *args: False)  # the full path
    monkeypatch.setattr(preplanned, "_replaced", lambda *args: ("roads.pmtiles",))
    _edit(server)
    area = _packaged(server, server.client.post(f"{href}/refresh", headers=editor).json())
    stored = _services(server).areas.package(_services(server).areas.store.get(area["id"]))
    assert stored.replaced == ("roads.pmtiles",)  # kept through the store
    plan = server.client.get(f"{href}/updates", params={"from": 1, "epoch": 1}).json()
    assert plan["choice"] == "full", plan
    assert "roads.pmtiles" in plan["reason"]
    monkeypatch.undo()
    _edit(server)
    area = _packaged(server, server.client.post(f"{href}/refresh", headers=editor).json())
    assert (
        _services(server).areas.package(_services(server).areas.store.get(area["id"])).replaced
        == ()
    )
    plan = server.client.get(f"{href}/updates", params={"from": 2, "epoch": 1}).json()
    assert plan["choice"] == "updates", plan  # from package 2 on, the updates reach
    plan = server.client.get(f"{href}/updates", params={"from": 1, "epoch": 1}).json()
    assert plan["choice"] == "full", plan  # the step to package 2 still cannot be made
