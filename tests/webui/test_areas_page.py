"""The preplanned areas page in a real browser: the map's owner draws an area, creates it (title,
update mode, schedule, tile format), sees it packaged, its files listed, refreshes it and
deletes it; a reader of the map sees the areas with no button to change them.

The browser, the watch over what the pages ask for, and signing in are test_browser.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Page

from tests.webui import test_browser as shared
from tests.webui.conftest import SampleSite

pytestmark = pytest.mark.xdist_group("webui-browser")

browser = shared.browser
watch = shared.watch
page = shared.page

PACKAGED_S = 120  # the sample's packaging of a small area takes seconds; slow machines more


@pytest.fixture(scope="module")
def viewer_site(sample_site: SampleSite, tmp_path_factory: pytest.TempPathFactory) -> SampleSite:
    """The sample, with a ``viewer`` who may read the map (it is public) and nothing else."""
    sample_site.add_user("viewer", ("maps:read",))
    return SampleSite(sample_site.url, sample_site.map_id, user="viewer")


def _open_areas(page: Page, site: SampleSite) -> None:
    shared._sign_in(page, site, f"/ui/areas?map={site.map_id}")
    page.wait_for_url(f"**/ui/areas?map={site.map_id}")
    page.wait_for_selector("body[data-page-ready]", timeout=30_000)


def _row_status(page: Page, title: str) -> str:
    row = page.locator("#areas tbody tr", has_text=title)
    return row.get_attribute("data-status") or ""


def test_an_area_drawn_on_the_map_is_packaged_listed_refreshed_and_deleted(
    page: Page, sample_site: SampleSite, screenshots: Path, watch: shared.Watch
) -> None:
    _open_areas(page, sample_site)  # the editor owns the sample map
    assert page.get_by_role("heading", level=1).inner_text().startswith("Preplanned areas of")
    canvas = page.locator("#areas-map canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.get_by_role("button", name="Draw a rectangle").click()
    page.mouse.click(cx - 12, cy - 8)
    page.mouse.click(cx + 12, cy + 8)
    assert page.locator("#area-summary").inner_text().startswith("Area drawn: 4 corners")
    page.get_by_label("Title").fill("Harbour crew")
    page.get_by_label("Update mode").select_option("download_scheduled_updates")
    page.get_by_label("Tile format").select_option("pmtiles")
    # a schedule the API refuses: its message, readable
    watch.allowed.add((f"/api/maps/{sample_site.map_id}/areas", 422))
    page.get_by_label("Refresh schedule").fill("every tuesday")
    page.get_by_role("button", name="Create the area").click()
    refused = page.locator("#create-status.error")
    refused.wait_for()
    assert "refresh" in refused.inner_text()
    page.get_by_label("Refresh schedule").fill("1d")
    page.get_by_role("button", name="Create the area").focus()
    page.keyboard.press("Enter")
    row = page.locator("#areas tbody tr", has_text="Harbour crew")
    row.wait_for()
    assert "scheduled updates" in row.inner_text()
    assert "pmtiles" in row.inner_text()
    # the page follows the packaging by itself
    page.wait_for_function(
        "() => [...document.querySelectorAll('#areas tbody tr')]"
        ".some((tr) => tr.dataset.status !== 'packaging')",
        timeout=PACKAGED_S * 1000,
    )
    assert _row_status(page, "Harbour crew") == "complete"
    assert row.locator("td.latest").inner_text().startswith("1")
    page.get_by_role("button", name="Files of Harbour crew").click()
    files = page.locator("#area-files")
    files.get_by_role("heading", name="Package 1", exact=False).wait_for()
    assert any(
        ".pmtiles —" in name for name in files.locator(".package-files li").all_inner_texts()
    )
    page.screenshot(path=screenshots / "webui-areas.png", full_page=True)

    # refreshed: a second package, with the update files from the first
    page.get_by_role("button", name="Refresh Harbour crew").click()
    page.wait_for_function(
        "() => document.querySelector('#areas tbody tr td.latest')?.textContent.startsWith('2')",
        timeout=PACKAGED_S * 1000,
    )
    page.get_by_role("button", name="Files of Harbour crew").click()
    files.get_by_role("heading", name="Package 2", exact=False).wait_for()
    assert files.locator("ul.update-files[data-package='2'] li").count() > 0

    # deleted, once confirmed
    page.once("dialog", Dialog.accept)
    page.get_by_role("button", name="Delete Harbour crew").click()
    page.wait_for_function("() => !document.querySelector('#areas tbody tr')")
    assert (
        page.locator("#areas-status").inner_text()
        == "Deleted Harbour crew. No preplanned areas yet."
    )


def test_a_reader_of_the_map_sees_the_areas_and_no_button_to_change_them(
    page: Page, viewer_site: SampleSite
) -> None:
    # from the list of maps, by keyboard
    shared._sign_in(page, viewer_site)
    page.wait_for_url("**/ui/")
    page.get_by_role("link", name="Preplanned areas of Helsinki field inspections").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/ui/areas?map={viewer_site.map_id}")
    page.wait_for_selector("body[data-page-ready]", timeout=30_000)
    assert not page.locator("#create-title").is_visible()
    for name in ("Create the area", "Draw a rectangle"):
        assert page.get_by_role("button", name=name).count() == 0
    assert page.get_by_role("button", name="Refresh", exact=False).count() == 0
    assert page.get_by_role("button", name="Delete", exact=False).count() == 0
