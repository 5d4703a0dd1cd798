"""The tile caches page in a real browser: a cache listed, an area drawn on its map and seeded
(the job followed to its end), the statistics' charts and tables changed by it, a cleanup; and a
reader (``cache:read`` only) sees the figures with no button to change them.

The browser, the watch over what the pages ask for, and signing in are test_browser.py's.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from tests.webui import test_browser as shared
from tests.webui.conftest import SampleSite

pytestmark = pytest.mark.xdist_group("webui-browser")

browser = shared.browser
watch = shared.watch
page = shared.page

CACHE = "helsinki-basemap"
BAR_COLOUR = (0x0B, 0x53, 0x94)  # the first series of a chart (tools.css)
# the operator reads the sample map too: its basemap is what the area is drawn on
USERS = {"operator": ("maps:read", "cache:write"), "reader": ("cache:read",)}


def _token(site: SampleSite, user: str) -> str:
    form = {"grant_type": "password", "username": user, "password": site.password}
    answer = httpx.post(f"{site.url}/oauth2/token", data=form)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


@pytest.fixture(scope="module")
def cache_site(sample_site: SampleSite, tmp_path_factory: pytest.TempPathFactory) -> SampleSite:
    """The sample, with an operator and a reader, and a cache of its basemap layer."""
    for name, scopes in USERS.items():
        sample_site.add_user(name, scopes)
    headers = {"Authorization": f"Bearer {_token(sample_site, 'operator')}"}
    definition = {
        "name": CACHE,
        "title": "Helsinki basemap",
        "source": {"kind": "layer", "location": "basemap"},
        "format": "png",
        "min_zoom": 12,
        "max_zoom": 15,
    }
    created = httpx.post(f"{sample_site.url}/api/caches", json=definition, headers=headers)
    assert created.status_code == 201, created.text
    return SampleSite(sample_site.url, sample_site.map_id, user="operator")


def _open_cache(page: Page, site: SampleSite) -> None:
    shared._sign_in(page, site, f"/ui/caches?cache={CACHE}")
    page.wait_for_url(f"**/ui/caches?cache={CACHE}")
    page.wait_for_selector(f"body[data-cache-ready='{CACHE}']", timeout=30_000)


def _levels(page: Page, chart: str, key: str) -> dict[str, int]:
    rows = page.locator(f"#{chart}-table tbody tr").all()
    return {
        row.locator("th").inner_text(): int(
            row.locator(f"td[data-key='{key}']").get_attribute("data-value") or "-1"
        )
        for row in rows
    }


def _bar_pixels(page: Page, chart: str) -> int:
    shot = page.locator(f"#{chart} svg").screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(BAR_COLOUR)).max(axis=2) <= 12).sum())


def _stats(site: SampleSite) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {_token(site, 'reader')}"}
    stats: dict[str, object] = httpx.get(
        f"{site.url}/api/caches/{CACHE}/stats", headers=headers
    ).json()
    return stats


def test_an_area_drawn_on_the_map_is_seeded_and_the_charts_show_it(
    page: Page, cache_site: SampleSite, screenshots: Path, watch: shared.Watch
) -> None:
    _open_cache(page, cache_site)
    assert page.locator("[data-total='tiles']").inner_text() == "0"
    assert page.locator("#chart-tiles").count() == 0  # no levels yet
    # a rectangle: two clicks on the map, around its centre
    page.get_by_role("button", name="Draw a rectangle").click()
    canvas = page.locator("#seed-map canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(cx - 40, cy - 30)
    page.mouse.click(cx + 40, cy + 30)
    assert page.locator("#area-summary").inner_text().startswith("Area drawn: 4 corners")
    # a bad range: the API's own message, readable
    watch.allowed.add((f"/api/caches/{CACHE}/seed", 422))
    page.get_by_label("Lowest level", exact=True).fill("14")
    page.get_by_label("Highest level", exact=True).fill("12")
    page.get_by_role("button", name="Estimate").click()
    refused = page.locator("#seed-plan.error")
    refused.wait_for()
    assert "14-12 is inverted" in refused.inner_text()
    page.get_by_label("Lowest level", exact=True).fill("12")
    page.get_by_label("Highest level", exact=True).fill("13")
    page.get_by_role("button", name="Estimate").click()
    plan = page.locator(".plan-total")
    plan.wait_for()
    assert "to fetch" in plan.inner_text()
    # seeded by keyboard, and followed to its end
    page.get_by_role("button", name="Seed", exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#seed-message[data-status]", timeout=60_000)
    assert page.locator("#seed-message").get_attribute("data-status") == "succeeded"
    page.wait_for_selector("#chart-tiles")
    tiles = _levels(page, "chart-tiles", "tiles")
    stats = _stats(cache_site)
    levels = stats["levels"]
    assert isinstance(levels, list)
    assert tiles == {f"z{level['z']}": level["tiles"] for level in levels}
    assert set(tiles) == {"z12", "z13"}
    assert all(count > 0 for count in tiles.values())
    assert f"{sum(tiles.values())} tiles fetched" in page.locator("#seed-message").inner_text()
    assert page.locator("[data-total='tiles']").inner_text() == str(stats["tiles"])
    assert _bar_pixels(page, "chart-tiles") > 200  # the bars are drawn
    assert _levels(page, "chart-bytes", "bytes")["z13"] > 0
    row = page.locator(f"tr[data-cache='{CACHE}'] td.tiles")
    assert row.inner_text() == str(stats["tiles"])  # the list follows
    page.screenshot(path=screenshots / "webui-caches.png", full_page=True)

    # a polygon drawn by keyboard: corners at the map's centre, moved with the arrow keys
    page.get_by_role("button", name="Draw a polygon").click()
    for key in ("ArrowRight", "ArrowDown", None):
        page.get_by_role("button", name="Add a corner at the map centre").press("Enter")
        if key:
            before = page.evaluate("() => window.offmapsMap.getCenter().toArray()")
            page.locator("#seed-map canvas").focus()  # MapLibre's keyboard handler's element
            page.keyboard.press(key)
            page.wait_for_function(
                "(before) => !window.offmapsMap.isMoving()"
                " && window.offmapsMap.getCenter().toArray().join() !== before.join()",
                arg=before,
            )
    page.get_by_role("button", name="Finish the polygon").press("Enter")
    assert page.locator("#area-summary").inner_text().startswith("Area drawn: 3 corners")

    # clean up level 13 only
    page.get_by_label("Lowest level to remove").fill("13")
    page.get_by_label("Highest level to remove").fill("13")
    page.get_by_role("button", name="Clean up").click()
    page.wait_for_selector("#clean-message[data-status]", timeout=60_000)
    assert page.locator("#clean-message").get_attribute("data-status") == "succeeded"
    assert "tiles removed" in page.locator("#clean-message").inner_text()
    page.wait_for_function(
        "() => !document.querySelector('#chart-tiles-table td[data-key=tiles]')"
        " || [...document.querySelectorAll('#chart-tiles-table tbody th')]"
        ".every((th) => th.textContent !== 'z13' || th.nextSibling.textContent === '0')"
    )
    assert _levels(page, "chart-tiles", "tiles").get("z13", 0) == 0
    assert _levels(page, "chart-tiles", "tiles")["z12"] == tiles["z12"]


def test_a_reader_sees_the_figures_and_no_button_to_change_them(
    page: Page, cache_site: SampleSite, screenshots: Path
) -> None:
    reader = SampleSite(cache_site.url, cache_site.map_id, user="reader")
    _open_cache(page, reader)
    assert page.get_by_role("heading", name="Statistics of Helsinki basemap").is_visible()
    for name in ("Seed", "Estimate", "Clean up", "Draw a rectangle"):
        assert page.get_by_role("button", name=name, exact=True).count() == 0
    assert not page.locator("#seed-map").is_visible()
    page.screenshot(path=screenshots / "webui-caches-reader.png", full_page=True)


def test_a_user_without_cache_scopes_is_told_so(page: Page, cache_site: SampleSite) -> None:
    _open_cache_list = SampleSite(cache_site.url, cache_site.map_id)  # the editor
    shared._sign_in(page, _open_cache_list, "/ui/caches")
    page.wait_for_url("**/ui/caches")
    assert "no cache:read scope" in page.get_by_role("status").first.inner_text()
