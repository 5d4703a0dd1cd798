"""An area's files by SHA-256 (``GET /api/maps/{id}/areas/{area}/files/{sha256}``): what a
device fetches the attachment blobs of its update files by; only what a kept package of that
area names, to whoever may download its packages (docs/preplanned.md)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from shapely.geometry import box

from offmaps.features.model import FeatureQuery, Update
from offmaps.offline import preplanned
from tests.server.test_areas_api import BBOX, _areas, _create, _packaged, _services
from tests.serverkit import Server, assert_problem


def test_a_file_of_a_package_of_the_area_is_served_by_its_sha256(server: Server) -> None:
    area = _packaged(server, _create(server))
    href = f"{_areas(server)}/{area['id']}/files"
    crew = server.token("editor", "maps:read offline:sync")
    for entry in area["package"]["files"]:
        response = server.client.get(f"{href}/{entry['sha256']}", headers=crew)
        assert response.status_code == 200, response.text
        assert hashlib.sha256(response.content).hexdigest() == entry["sha256"]
    entry = area["package"]["files"][0]
    part = server.client.get(f"{href}/{entry['sha256']}", headers={**crew, "Range": "bytes=0-9"})
    assert part.status_code == 206, part.text
    assert len(part.content) == min(10, entry["size"])
    # an update file too, once a refresh wrote one
    refreshed = server.client.post(
        f"{_areas(server)}/{area['id']}/refresh", headers=server.token("editor")
    )
    assert refreshed.status_code == 202, refreshed.text
    updates = _packaged(server, refreshed.json())["package"]["updates"]
    assert updates
    response = server.client.get(f"{href}/{updates[0]['sha256']}", headers=crew)
    assert response.status_code == 200, response.text
    assert hashlib.sha256(response.content).hexdigest() == updates[0]["sha256"]


def test_a_sha256_no_package_of_the_area_names_is_not_found(server: Server) -> None:
    area = _packaged(server, _create(server))
    href = f"{_areas(server)}/{area['id']}/files"
    crew = server.token("editor", "maps:read offline:sync")
    assert_problem(server.client.get(f"{href}/{'0' * 64}", headers=crew), 404)
    # kept among the areas' files, but named by no package of this area
    stray = b"another area's photo"
    sha256 = hashlib.sha256(stray).hexdigest()
    _services(server).areas.files.put(sha256, stray)
    assert_problem(server.client.get(f"{href}/{sha256}", headers=crew), 404)
    # a file of another area's package, asked of this one
    other = _packaged(server, _create(server, title="Other", bbox=[24.9, 60.05, 24.95, 60.1]))
    theirs = {entry["sha256"] for entry in other["package"]["files"]}
    mine = {entry["sha256"] for entry in area["package"]["files"]}
    (only_theirs, *_) = sorted(theirs - mine)
    assert_problem(server.client.get(f"{href}/{only_theirs}", headers=crew), 404)
    served = server.client.get(f"{_areas(server)}/{other['id']}/files/{only_theirs}", headers=crew)
    assert served.status_code == 200, served.text


def test_a_malformed_sha256_is_a_problem(server: Server) -> None:
    area = _packaged(server, _create(server))
    href = f"{_areas(server)}/{area['id']}/files"
    crew = server.token("editor", "maps:read offline:sync")
    sha256 = area["package"]["files"][0]["sha256"]
    for bad in ("abc", sha256.upper(), f"{sha256}0", "z" * 64, "..%2F..%2Fpackage.json"):
        assert_problem(server.client.get(f"{href}/{bad}", headers=crew), 400, 404, 422)
    problem = assert_problem(server.client.get(f"{href}/{'g' * 64}", headers=crew), 400, 422)
    assert "sha256" in str(problem), problem


def test_the_files_need_a_signed_in_user_who_may_take_maps_offline(server: Server) -> None:
    area = _packaged(server, _create(server))
    sha256 = area["package"]["files"][0]["sha256"]
    href = f"{_areas(server)}/{area['id']}/files/{sha256}"
    assert_problem(server.client.get(href), 401, 403)
    assert_problem(server.client.get(href, headers=server.token("viewer")), 403)
    assert_problem(server.client.get(href, headers=server.token("editor", "maps:read")), 403)
    # a private map's areas are as hidden as the map
    private = f"/api/maps/{server.private_map}/areas/{area['id']}/files/{sha256}"
    crew = server.token("editor", "maps:read offline:sync")
    assert_problem(server.client.get(private, headers=crew), 404)


def test_a_photo_added_after_the_extraction_is_kept_for_the_update_that_names_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    area = _packaged(server, _create(server, attachments="include_all"))
    store = server.catalog.feature_service("city")
    inside = next(
        f
        for f in store.query("sites", FeatureQuery(limit=200)).features
        if f.geometry is not None and box(BBOX[0], BBOX[1], BBOX[2], BBOX[3]).contains(f.geometry)
    )
    store.apply_edits([Update("sites", inside.global_id, {"status": "photographed"})])
    photo = server.catalog.blobs.put(b"a photo taken while the area was extracted")
    written = preplanned.write_area_feature_update  # type: ignore[attr-defined]

    def late(*args: Any, **kwargs: Any) -> Any:  # the photo lands after the extraction
        if not store.list_attachments("sites", inside.global_id):
            store.add_attachment(
                "sites", inside.global_id, name="late.jpg", content_type="image/jpeg",
                size=photo.size, sha256=photo.sha256,
            )  # fmt: skip
        return written(*args, **kwargs)

    monkeypatch.setattr(preplanned, "_can_refresh", lambda *args: False)  # the full path
    monkeypatch.setattr(preplanned, "write_area_feature_update", late)
    refreshed = server.client.post(
        f"{_areas(server)}/{area['id']}/refresh", headers=server.token("editor")
    )
    package = _packaged(server, refreshed.json())["package"]
    assert photo.sha256 not in {entry["sha256"] for entry in package["files"]}
    (update,) = (u for u in package["updates"] if u["kind"] == "features")
    assert update["blobs"] == [photo.sha256]
    crew = server.token("editor", "maps:read offline:sync")
    response = server.client.get(
        f"{_areas(server)}/{area['id']}/files/{photo.sha256}", headers=crew
    )
    assert response.status_code == 200, response.text
    assert response.content == b"a photo taken while the area was extracted"
    assert photo.sha256 in _services(server).areas.store.named_files()  # not collected
