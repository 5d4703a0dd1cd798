"""The map area store contract: the SQLite and the PostgreSQL stores pass these same tests.

The PostgreSQL store needs ``OFFMAPS_TEST_POSTGRES_URL`` (``make test`` starts the server):
without it these tests fail loudly, never skip. Each test gets a schema of its own, dropped
afterwards, so tests run side by side (``pytest -n 2``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from offmaps.errors import MapAreaDeletedError, MapAreaNotFoundError
from offmaps.state import AreaPackage, MapArea, MapAreaStore, SQLiteMapAreaStore
from offmaps.state.postgres_areas import PostgresMapAreaStore
from tests.state.backends import opening

BACKENDS = ["sqlite", "postgres"]

Opener = Callable[[], MapAreaStore]

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
FILES = ({"path": "package.json", "size": 10, "sha256": "0" * 64},)


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one backend on one place: each call is another process's view."""
    opener = opening(
        request.param, lambda: SQLiteMapAreaStore(tmp_path / "areas.sqlite"), PostgresMapAreaStore
    )
    yield from cast(Iterator[Opener], opener)  # the backends' classes, as their protocol


@pytest.fixture
def store(open_store: Opener) -> MapAreaStore:
    """A fresh, empty store of each backend."""
    return open_store()


def new_area(map_id: str = "m1", **fields: object) -> MapArea:
    """An area with the fewest fields, and ``fields``."""
    values: dict[str, object] = {"id": "", "title": "A", **fields}
    return MapArea(
        map_id=map_id, owner="editor", area=SQUARE, source={"kind": "bbox"},
        **values,  # type: ignore[arg-type]
    )  # fmt: skip


def package(area_id: str, number: int, **fields: object) -> AreaPackage:
    """A package of ``area_id`` with one file."""
    return AreaPackage(area_id, number, 1, 0.0, "j" * 32, FILES, **fields)  # type: ignore[arg-type]


def test_an_area_reads_back_as_it_was(store: MapAreaStore) -> None:
    area = store.create(
        new_area(
            title="Flood \u0000 zone ü", description="d", min_scale=1e6, max_scale=500.25,
            overrides={"layers": {"a": {"where": "x = 'y'"}}}, attachments="none",
            tile_format="pmtiles", refresh="daily 04:00", thumbnail="aGk=",
            next_refresh_at=1733630400.123456, server_url="https://x.example/",
        )
    )  # fmt: skip
    assert len(area.id) == 32
    assert store.get(area.id) == area
    assert store.get(area.id, map_id="m1") == area


def test_an_area_takes_the_id_it_is_given(store: MapAreaStore) -> None:
    wanted = uuid.uuid4().hex
    assert store.create(new_area(id=wanted)).id == wanted
    assert store.get(wanted).id == wanted


def test_areas_are_listed_per_map_oldest_first(store: MapAreaStore) -> None:
    titles = [f"area {n}" for n in range(12)]
    for title in titles:
        store.create(new_area(title=title))
    store.create(new_area("m2"))
    assert [a.title for a in store.for_map("m1")] == titles
    assert len(store.for_map("m2")) == 1
    assert store.for_map("m3") == []


def test_another_maps_area_is_no_area_of_this_one(store: MapAreaStore) -> None:
    area = store.create(new_area())
    with pytest.raises(MapAreaNotFoundError):
        store.get(area.id, map_id="m2")


@pytest.mark.parametrize("area_id", ["f" * 32, "nope", "'; DROP TABLE areas; --", ""])
def test_an_unknown_area_is_not_found(store: MapAreaStore, area_id: str) -> None:
    with pytest.raises(MapAreaNotFoundError) as caught:
        store.get(area_id)
    assert not isinstance(caught.value, MapAreaDeletedError)
    with pytest.raises(MapAreaNotFoundError):
        store.update(area_id, title="x")
    store.delete(area_id)  # nothing to delete: no error, no tombstone
    assert not isinstance(caught.value, MapAreaDeletedError)


def test_an_update_changes_only_its_fields(store: MapAreaStore) -> None:
    area = store.create(new_area())
    changed = store.update(area.id, status="complete", latest=1)
    assert (changed.status, changed.latest, changed.title) == ("complete", 1, "A")
    assert changed.updated >= area.updated
    assert store.get(area.id) == changed


def test_writers_of_other_fields_do_not_undo_each_other(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    area = here.create(new_area())
    start = threading.Barrier(2)

    def bump(store: MapAreaStore, field: str) -> None:
        start.wait()
        for n in range(1, 26):
            store.update(area.id, **{field: n})

    threads = [
        threading.Thread(target=bump, args=(here, "epoch")),
        threading.Thread(target=bump, args=(there, "latest")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = here.get(area.id)
    assert (final.epoch, final.latest) == (25, 25)


def test_a_package_and_the_area_change_together(store: MapAreaStore) -> None:
    area = store.create(new_area())
    first = package(area.id, 1, generations={"water": 7}, chains={"a.gpkg": "base:" + "1" * 64})
    store.add_package(first, latest=1, status="complete")
    second = package(
        area.id, 2, incremental=True, replaced=("tiles.pmtiles",),
        updates=({"file": "a.gpkg", "sha256": "2" * 64, "blobs": ["3" * 64]},),
    )  # fmt: skip
    after = store.add_package(second, latest=2)
    assert (after.latest, after.status) == (2, "complete")
    assert store.packages(area.id) == [first, second]
    assert store.get(area.id).latest == 2
    assert first.bytes == 10


def test_a_package_of_a_deleted_area_is_refused(store: MapAreaStore) -> None:
    area = store.create(new_area())
    store.add_package(package(area.id, 1), latest=1)
    store.delete(area.id)
    with pytest.raises(MapAreaNotFoundError):
        store.add_package(package(area.id, 2), latest=2)
    assert store.packages(area.id) == []


def test_removed_packages_are_forgotten(store: MapAreaStore) -> None:
    area = store.create(new_area())
    for number in range(1, 5):
        store.add_package(package(area.id, number), latest=number)
    store.remove_packages(area.id, [1, 3, 99])
    store.remove_packages(area.id, [])
    assert [p.number for p in store.packages(area.id)] == [2, 4]


def test_named_files_are_every_packages_files_updates_and_blobs(store: MapAreaStore) -> None:
    one, two = store.create(new_area()), store.create(new_area("m2"))
    update = {"file": "a.gpkg", "sha256": "b" * 64, "blobs": ["c" * 64]}
    store.add_package(package(one.id, 1))
    store.add_package(package(two.id, 1, updates=(update,)))
    assert store.named_files() == {"0" * 64, "b" * 64, "c" * 64}
    store.delete(two.id)
    assert store.named_files() == {"0" * 64}


def test_a_deleted_area_leaves_a_tombstone(store: MapAreaStore) -> None:
    area = store.create(new_area(title="Flood zone"))
    store.delete(area.id)
    with pytest.raises(MapAreaDeletedError, match=r"'Flood zone'.* was deleted"):
        store.get(area.id)
    with pytest.raises(MapAreaDeletedError):
        store.get(area.id, map_id="m1")
    with pytest.raises(MapAreaNotFoundError) as caught:
        store.get(area.id, map_id="m2")  # not deleted from that map: it never was there
    assert not isinstance(caught.value, MapAreaDeletedError)
    with pytest.raises(MapAreaNotFoundError):
        store.update(area.id, title="x")
    assert store.for_map("m1") == []


def test_another_process_sees_the_same_areas(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    area = here.create(new_area())
    here.update(area.id, latest=3)
    assert there.get(area.id).latest == 3
    there.delete(area.id)
    with pytest.raises(MapAreaDeletedError):
        here.get(area.id)


def test_due_refreshes_are_claimed_and_moved_on(store: MapAreaStore) -> None:
    due = [store.create(new_area(next_refresh_at=t, refresh="1h")) for t in (150.0, 100.0)]
    store.create(new_area(next_refresh_at=10_000.0))  # not due
    never = store.create(new_area())  # never
    claimed = store.claim_due(200.0, lambda area, now: now + 3600)
    assert [a.id for a in claimed] == [due[1].id, due[0].id]  # the longest due first
    assert all(a.next_refresh_at == 3800.0 for a in claimed)
    assert [store.get(a.id) for a in claimed] == claimed
    assert store.claim_due(200.0, lambda area, now: now + 3600) == []
    last = store.claim_due(5000.0, lambda area, now: None)  # a schedule that ends
    assert sorted(a.id for a in last) == sorted(a.id for a in due)
    assert store.claim_due(1e9, lambda area, now: None)[0].next_refresh_at is None
    assert store.claim_due(1e10, lambda area, now: None) == []
    assert store.get(never.id).next_refresh_at is None


def test_a_due_refresh_is_claimed_once_however_many_processes_ask(open_store: Opener) -> None:
    stores = [open_store() for _ in range(3)]  # three processes, two threads each
    ids = {stores[0].create(new_area(next_refresh_at=100.0, refresh="1h")).id for _ in range(40)}
    stores[0].create(new_area(next_refresh_at=10_000.0))
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def claim(store: MapAreaStore) -> None:
        start.wait()
        for tick in range(5):  # several ticks each, all at the same moment
            found = store.claim_due(200.0 + tick, lambda area, now: now + 3600)
            with lock:
                claimed.extend(area.id for area in found)

    threads = [threading.Thread(target=claim, args=(stores[n % 3],)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)  # every due area once, none twice
    assert all(3800.0 <= (stores[1].get(i).next_refresh_at or 0) <= 3804.0 for i in ids)
    assert stores[2].claim_due(300.0, lambda area, now: None) == []


def test_a_claim_does_not_undo_a_concurrent_update(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    areas = [here.create(new_area(next_refresh_at=100.0, refresh="1h")) for _ in range(20)]
    start = threading.Barrier(2)

    def claim() -> None:
        start.wait()
        for tick in range(20):
            here.claim_due(200.0 + tick, lambda area, now: now + 3600)

    def update() -> None:
        start.wait()
        for area in areas:
            there.update(area.id, status="complete")

    threads = [threading.Thread(target=claim), threading.Thread(target=update)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for area in areas:
        found = here.get(area.id)
        assert found.status == "complete"
