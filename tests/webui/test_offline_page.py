"""The "take offline" page in a real browser (Debian's Chromium, headless): draw an area with
the mouse, read its estimate, run a small offline job to its end and download its zip, cancel a
job, an area over a layer's export limit, and an expired session that keeps the drawn area.

The browser, the sample server and the guards (no request outside the server's origin, no
console error, no Content-Security-Policy violation) are those of ``test_browser.py``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from offmaps.offline.parameters import area_from_bbox
from tests.webui import test_browser as _browser
from tests.webui.conftest import SampleSite

pytestmark = pytest.mark.xdist_group("webui-browser")

# the fixtures of test_browser.py, for this module: its own browser, a new context per test
browser = _browser.browser
watch = _browser.watch
page = _browser.page

SMALL = (24.944, 60.168, 24.946, 60.169)
"""A few streets of central Helsinki: a few tiles, a job of a second."""


def _open(page: Page, site: SampleSite, map_id: str | None = None) -> None:
    target = f"/ui/offline?map={map_id or site.map_id}"
    _browser._sign_in(page, site, target)
    page.wait_for_url(f"**{target}")
    page.wait_for_selector("body[data-map-ready]", timeout=60_000)


def _screen(page: Page, lon: float, lat: float) -> tuple[float, float]:
    """Where a longitude and latitude are on the screen."""
    x, y = page.evaluate(
        "([lon, lat]) => { const map = window.offmapsMap; const p = map.project([lon, lat]);"
        " const box = map.getCanvas().getBoundingClientRect();"
        " return [box.left + p.x, box.top + p.y]; }",
        [lon, lat],
    )
    return float(x), float(y)


def _drag_rectangle(page: Page, west: float, south: float, east: float, north: float) -> None:
    page.get_by_role("button", name="Draw a rectangle").click()
    start = _screen(page, west, north)
    end = _screen(page, east, south)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    page.mouse.move(*end)
    page.mouse.up()


def _estimate(page: Page, state: str = "ready") -> None:
    page.wait_for_selector(f"body[data-estimate='{state}']", timeout=30_000)


def _token(site: SampleSite, user: str | None = None) -> dict[str, str]:
    form = {"grant_type": "password", "username": user or site.user, "password": site.password}
    token = httpx.post(f"{site.url}/oauth2/token", data=form).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _drawn(page: Page, map_id: str) -> dict[str, Any]:
    stored: dict[str, Any] = json.loads(
        page.evaluate(f"sessionStorage.getItem('offmaps.offline.{map_id}')")
    )
    return stored


def test_a_rectangle_drawn_with_the_mouse_is_estimated_taken_offline_and_zipped(
    page: Page, sample_site: SampleSite, screenshots: Path
) -> None:
    _open(page, sample_site)
    _drag_rectangle(page, *SMALL)
    _estimate(page)
    # the ring drawn is the rectangle asked for, within a pixel or two
    ring = _drawn(page, sample_site.map_id)["ring"]
    lons = [lon for lon, _ in ring]
    lats = [lat for _, lat in ring]
    assert min(lons) == pytest.approx(SMALL[0], abs=1e-4)
    assert max(lats) == pytest.approx(SMALL[3], abs=1e-4)
    assert "A rectangle" in page.locator("#area-summary").inner_text()
    # the page shows what the API estimates for this area and these levels
    body = {
        "parameters": {
            "area_of_interest": {"geometry": {"type": "Polygon", "coordinates": [ring]}},
            "min_scale": 591657527.591555 / 2 ** int(page.locator("#level-min").input_value()),
            "max_scale": 591657527.591555 / 2 ** int(page.locator("#level-max").input_value()),
        }
    }
    url = f"{sample_site.url}/api/maps/{sample_site.map_id}/offline/estimate"
    expected = httpx.post(url, json=body, headers=_token(sample_site)).json()
    basemap = page.locator("#estimate tr[data-layer='basemap'] td")
    assert basemap.nth(0).inner_text().startswith(str(expected["layers"][0]["tiles"]))
    total = page.locator("#estimate tfoot td")
    assert total.nth(0).inner_text() == f"{expected['tiles']:,}"
    assert total.nth(1).inner_text() == f"{expected['features']:,}"
    # two levels fewer (16, the buildings' last, then 15, the basemap's), with the keyboard
    assert page.locator("#level-max").input_value() == "16"
    page.locator("#level-max").focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert "level 14 (1:36,112)" in page.locator("#level-max-out").inner_text()
    _estimate(page)
    assert "levels 12–14" in basemap.nth(0).inner_text()

    page.get_by_role("button", name="Start").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-job='succeeded']", timeout=60_000)
    assert page.get_by_role("progressbar").get_attribute("value") == "1"
    page.evaluate("document.getElementById('scales-title').scrollIntoView()")
    page.screenshot(path=screenshots / "webui-offline.png")
    job_id = _drawn(page, sample_site.map_id)["jobId"]
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the package (zip)").click()
    assert download.value.suggested_filename == f"offline-map-{job_id}.zip"
    with zipfile.ZipFile(io.BytesIO(download.value.path().read_bytes())) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("package.json"))
    assert {entry["path"] for entry in manifest["files"]} <= names
    assert any(name.endswith(".gpkg") for name in names)


def test_a_job_of_a_polygon_is_cancelled_from_the_page(page: Page, sample_site: SampleSite) -> None:
    # the server runs two jobs at once: two of the admin's keep its workers busy, so that the
    # page's job is still waiting when the page cancels it
    admin = _token(sample_site, "admin")
    whole = area_from_bbox(24.93, 60.16, 24.96, 60.18).model_dump(mode="json")
    _open(page, sample_site)
    # a triangle, clicked corner by corner, closed by a double click
    page.get_by_role("button", name="Draw a polygon").click()
    west, south, east, north = SMALL
    page.mouse.click(*_screen(page, west, south))
    page.mouse.click(*_screen(page, east, south))
    page.mouse.dblclick(*_screen(page, (west + east) / 2, north))
    _estimate(page)
    assert len(_drawn(page, sample_site.map_id)["ring"]) == 4  # three corners, closed
    assert "A polygon of 3 corners" in page.locator("#area-summary").inner_text()
    for _ in range(2):
        response = httpx.post(
            f"{sample_site.url}/api/maps/{sample_site.map_id}/offline/jobs",
            json={"parameters": {"area_of_interest": whole}},
            headers=admin,
        )
        assert response.status_code == 201, response.text
    page.get_by_role("button", name="Start").click()
    cancel = page.get_by_role("button", name="Cancel")
    cancel.wait_for()
    cancel.click()
    page.wait_for_selector("body[data-job='cancelled']", timeout=60_000)
    assert not page.get_by_role("button", name="Download the package (zip)").is_visible()
    assert page.get_by_role("button", name="Start").is_enabled()  # and it can start again


def test_an_area_over_the_export_limit_says_which_levels_would_fit(
    page: Page, sample_site: SampleSite, screenshots: Path
) -> None:
    # a copy of the sample map whose basemap may export 10 tiles at most
    editor = _token(sample_site)
    maps = f"{sample_site.url}/api/maps"
    document = httpx.get(f"{maps}/{sample_site.map_id}", headers=editor).json()
    document["basemap"]["layers"][0]["max_export_tile_count"] = 10
    for key in ("id", "owner", "created", "modified"):
        document.pop(key, None)
    created = httpx.post(maps, json=document, headers=editor)
    assert created.status_code == 201, created.text
    map_id = created.json()["id"]
    _open(page, sample_site, map_id)
    page.get_by_role("button", name="Use the map view").focus()
    page.keyboard.press("Enter")
    _estimate(page, "over")
    message = page.get_by_role("alert").inner_text()
    assert message.startswith("Over the limit: Basemap would export")
    assert "over its limit of 10" in message
    assert "would fit: a scale range of 1:" in message
    assert page.get_by_role("button", name="Start").is_disabled()
    assert page.locator("#estimate tr.over").count() == 1
    page.evaluate("document.getElementById('scales-title').scrollIntoView()")
    page.screenshot(path=screenshots / "webui-offline-limit.png")
    # the levels that fit, offered by the message: the area then passes
    page.get_by_role("button", name="Take levels up to 14 only").click()
    _estimate(page)
    assert page.locator("#level-max").input_value() == "14"
    assert page.get_by_role("alert").is_hidden()
    assert page.get_by_role("button", name="Start").is_enabled()


def test_an_expired_session_signs_in_again_and_keeps_the_drawn_area(
    page: Page, sample_site: SampleSite
) -> None:
    # reached from the list of maps; the page links back to the map, whose link comes here
    _browser._sign_in(page, sample_site)
    page.wait_for_url("**/ui/")
    page.get_by_role("link", name="Take offline").first.click()
    page.wait_for_url(f"**/ui/offline?map={sample_site.map_id}")
    page.wait_for_selector("body[data-map-ready]", timeout=60_000)
    back = page.get_by_role("link", name="Back to the map")
    assert back.get_attribute("href") == f"map?id={sample_site.map_id}"
    _drag_rectangle(page, *SMALL)
    _estimate(page)
    drawn = _drawn(page, sample_site.map_id)["ring"]
    page.evaluate(
        "() => { const s = JSON.parse(sessionStorage.getItem('offmaps.session'));"
        " s.expiresAt = 0; sessionStorage.setItem('offmaps.session', JSON.stringify(s)); }"
    )
    page.reload()
    page.wait_for_url("**/ui/signin?next=**")
    page.get_by_label("User name").fill(sample_site.user)
    page.get_by_label("Password").fill(sample_site.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/ui/offline?map={sample_site.map_id}")
    page.wait_for_selector("body[data-map-ready]", timeout=60_000)
    _estimate(page)
    assert _drawn(page, sample_site.map_id)["ring"] == drawn
    assert page.locator("#offline-status").inner_text() == "The area you drew is back."
    assert "A rectangle" in page.locator("#area-summary").inner_text()
    # and the map page links here
    page.get_by_role("link", name="Back to the map").click()
    page.wait_for_url(f"**/ui/map?id={sample_site.map_id}")
    page.wait_for_selector("#take-offline[href^='offline']")
    link = page.get_by_role("link", name="Take this map offline")
    assert link.get_attribute("href") == f"offline?map={sample_site.map_id}"
    page.wait_for_selector("body[data-map-ready]", timeout=60_000)


def test_an_area_across_the_antimeridian_reaches_the_api_and_its_problem_is_shown(
    page: Page, sample_site: SampleSite, watch: _browser.Watch
) -> None:
    path = f"/api/maps/{sample_site.map_id}/offline/estimate"
    watch.allowed.add((path, 400))  # the area is outside the sample map: refused, readably
    _open(page, sample_site)
    page.evaluate("window.offmapsMap.jumpTo({center: [180, 60], zoom: 5})")
    _drag_rectangle(page, 175.0, 58.0, 185.0, 62.0)
    _estimate(page, "refused")
    lons = [lon for lon, _ in _drawn(page, sample_site.map_id)["ring"]]
    # one ring, its longitudes running on past the antimeridian (the API wraps them)
    assert min(lons) < 180 < max(lons) or min(lons) < -180 < max(lons)
    assert max(lons) - min(lons) == pytest.approx(10, abs=0.1)
    assert "across the antimeridian" in page.locator("#area-summary").inner_text()
    # the API took the ring (a valid area) and refused it for this map, with a problem document
    message = page.get_by_role("alert").inner_text()
    assert message.startswith("the area of interest lies outside the map's extent")
    assert page.get_by_role("button", name="Start").is_disabled()


# once the map has stopped moving (polled with timers: a string predicate would be an eval,
# which the pages' policy refuses)
_MOVED = (
    "() => new Promise((done) => { const check = () => window.offmapsMap.isMoving()"
    " ? setTimeout(check, 25) : done(); check(); })"
)


def test_a_polygon_is_drawn_with_the_keyboard_alone(page: Page, sample_site: SampleSite) -> None:
    _open(page, sample_site)
    page.get_by_role("button", name="Draw a polygon").focus()
    page.keyboard.press("Enter")
    add = page.get_by_role("button", name="Add the map centre as a corner")
    for key in ("ArrowRight", "ArrowDown", None):
        add.focus()
        page.keyboard.press("Enter")
        if key:  # then move the map with its own keys
            page.locator("#map canvas").focus()
            page.keyboard.press(key)
            page.keyboard.press(key)
            page.evaluate(_MOVED)
    page.get_by_role("button", name="Finish the polygon").focus()
    page.keyboard.press("Enter")
    _estimate(page)
    ring = _drawn(page, sample_site.map_id)["ring"]
    assert len(ring) == 4
    assert ring[0] == ring[-1]
    assert ring[1][0] > ring[0][0]  # east of the first corner
    assert ring[2][1] < ring[1][1]  # then south
    assert "A polygon of 3 corners" in page.locator("#area-summary").inner_text()
    assert page.get_by_role("button", name="Start").is_enabled()
