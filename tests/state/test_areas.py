"""The preplanned map area store, and refresh schedules (docs/preplanned.md)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.errors import MapAreaDeletedError, MapAreaNotFoundError
from offmaps.offline.areas import next_refresh, parse_refresh
from offmaps.state import AreaPackage, MapArea, SQLiteMapAreaStore

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}


def _area(map_id: str = "m1", **fields: object) -> MapArea:
    values: dict[str, object] = {"title": "A", **fields}
    return MapArea(
        id="", map_id=map_id, owner="editor", area=SQUARE, source={"kind": "bbox"},
        **values,  # type: ignore[arg-type]
    )  # fmt: skip


def test_areas_are_kept_listed_per_map_and_changed_field_by_field(tmp_path: Path) -> None:
    store = SQLiteMapAreaStore(tmp_path / "areas.sqlite")
    first = store.create(_area())
    second = store.create(_area(title="B"))
    store.create(_area("m2"))
    assert len(first.id) == 32
    assert [a.title for a in store.for_map("m1")] == ["A", "B"]
    assert store.get(first.id, map_id="m1") == first
    with pytest.raises(MapAreaNotFoundError):
        store.get(first.id, map_id="m2")  # another map's area is no area of this one
    changed = store.update(first.id, status="complete", latest=1)
    assert (changed.status, changed.latest, changed.title) == ("complete", 1, "A")
    store.close()
    reopened = SQLiteMapAreaStore(tmp_path / "areas.sqlite")
    assert reopened.get(first.id).latest == 1
    assert reopened.get(second.id).title == "B"


def test_a_package_and_the_area_change_together(tmp_path: Path) -> None:
    store = SQLiteMapAreaStore(tmp_path / "areas.sqlite")
    area = store.create(_area())
    files = ({"path": "package.json", "size": 10, "sha256": "0" * 64},)
    package = AreaPackage(area.id, 1, 1, 0.0, "j" * 32, files)
    store.add_package(package, latest=1, status="complete")
    assert store.packages(area.id) == [package]
    assert package.bytes == 10
    assert store.get(area.id).latest == 1
    store.delete(area.id)
    with pytest.raises(MapAreaNotFoundError):
        store.add_package(AreaPackage(area.id, 2, 1, 0.0, "j" * 32, files), latest=2)
    assert store.packages(area.id) == []


def test_a_deleted_area_leaves_a_tombstone(tmp_path: Path) -> None:
    store = SQLiteMapAreaStore(tmp_path / "areas.sqlite")
    area = store.create(_area(title="Flood zone"))
    store.delete(area.id)
    with pytest.raises(MapAreaDeletedError, match=r"'Flood zone'.* was deleted"):
        store.get(area.id)
    with pytest.raises(MapAreaNotFoundError):
        store.update(area.id, title="x")
    with pytest.raises(MapAreaNotFoundError) as caught:
        store.get("f" * 32)
    assert not isinstance(caught.value, MapAreaDeletedError)


def test_a_due_refresh_is_claimed_once_however_many_processes_ask(tmp_path: Path) -> None:
    path = tmp_path / "areas.sqlite"
    stores = [SQLiteMapAreaStore(path) for _ in range(4)]
    ids = {stores[0].create(_area(next_refresh_at=100.0, refresh="1h")).id for _ in range(20)}
    stores[0].create(_area(next_refresh_at=10_000.0))  # not due
    stores[0].create(_area())  # never
    claimed: list[str] = []
    lock = threading.Lock()

    def claim(store: SQLiteMapAreaStore) -> None:
        found = store.claim_due(200.0, lambda area, now: now + 3600)
        with lock:
            claimed.extend(area.id for area in found)

    threads = [threading.Thread(target=claim, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)
    assert {stores[1].get(i).next_refresh_at for i in ids} == {3800.0}
    assert stores[2].claim_due(200.0, lambda area, now: None) == []


def test_refresh_schedules() -> None:
    monday = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    assert next_refresh(parse_refresh("never"), monday) is None
    assert next_refresh(parse_refresh("1d"), monday) == monday + timedelta(days=1)
    assert next_refresh(parse_refresh("90m"), monday) == monday + timedelta(minutes=90)
    weekly = parse_refresh("0 3 * * 1")
    assert next_refresh(weekly, monday) == datetime(2026, 12, 14, 3, 0, tzinfo=UTC)
    for bad, says in [
        ("1m", "at least 5m"),
        ("0s", "a refresh schedule is"),
        ("* * * *", "five fields"),
        ("60 * * * *", "does not parse"),
        ("* 25 * * *", "does not parse"),
        ("* * * * 8", "does not parse"),
        ("9999999d", "a refresh schedule is"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_refresh(bad)


@given(
    st.sampled_from(["5m", "1h", "1d", "2w", "*/15 * * * *", "0 3 * * 1", "30 2 1 * *"]),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_the_next_refresh_is_always_later(text: str, after: datetime) -> None:
    schedule = parse_refresh(text)
    found = next_refresh(schedule, after)
    assert found is not None
    assert found > after
    again = next_refresh(schedule, found)
    assert again is not None
    assert again > found
