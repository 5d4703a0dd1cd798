"""The web map store contract: the folder and the PostgreSQL stores pass these same tests.

The PostgreSQL store needs ``OFFMAPS_TEST_POSTGRES_URL`` (``make test`` starts the server):
without it these tests fail loudly, never skip. Each test gets a schema of its own, dropped
afterwards, so tests run side by side (``pytest -n 2``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from offmaps.errors import WebMapNotFoundError
from offmaps.schemas import WebMap
from offmaps.state.postgres_webmaps import PostgresWebMapStore
from offmaps.state.webmaps import FolderWebMapStore, WebMapStore
from tests.serverkit import feature_layer, webmap_document
from tests.state.backends import opening

BACKENDS = ["folder", "postgres"]

Opener = Callable[[], WebMapStore]


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one backend on one place: each call is another process's view."""
    opener = opening(
        request.param, lambda: FolderWebMapStore(tmp_path / "webmaps"), PostgresWebMapStore
    )
    yield from cast(Iterator[Opener], opener)  # the backends' classes, as their protocol


@pytest.fixture
def store(open_store: Opener) -> WebMapStore:
    """A fresh, empty store of each backend."""
    return open_store()


def new_map(title: str = "Water", **item: object) -> WebMap:
    """A web map with one editable layer."""
    document = webmap_document(
        title=title, public=False, layers=[feature_layer("hydrants", edit=True)], tables=[]
    )
    document["item"].update(item)
    return WebMap.model_validate(document)


def test_each_store_is_a_webmap_store(store: WebMapStore) -> None:
    assert isinstance(store, WebMapStore)


def test_a_created_map_reads_back_as_it_was(store: WebMapStore) -> None:
    before = datetime.now(UTC)
    created = store.create(new_map('Vesi "ü" \\ ✓'), owner="ada")
    assert created.id is not None
    assert len(created.id) == 32
    assert (created.sharing.owner, created.item.owner) == ("ada", "ada")
    assert created.item.created is not None
    assert before - timedelta(seconds=1) <= created.item.created <= datetime.now(UTC)
    assert created.item.modified == created.item.created
    assert store.get(created.id) == created
    assert store.list() == [created]


def test_maps_are_listed_oldest_first(store: WebMapStore) -> None:
    made = [store.create(new_map(f"map {n}"), owner="ada") for n in range(5)]
    assert [m.item.title for m in store.list()] == [m.item.title for m in made]


def test_a_replaced_map_keeps_its_id_owner_and_creation(store: WebMapStore) -> None:
    created = store.create(new_map(), owner="ada")
    assert created.id is not None
    replaced = store.replace(created.id, new_map("Renamed"))
    assert (replaced.id, replaced.sharing.owner) == (created.id, "ada")
    assert replaced.item.created == created.item.created
    assert replaced.item.modified is not None
    assert created.item.modified is not None
    assert replaced.item.modified >= created.item.modified
    assert store.get(created.id) == replaced
    assert [m.item.title for m in store.list()] == ["Renamed"]


def test_a_deleted_map_is_gone(store: WebMapStore) -> None:
    kept, gone = store.create(new_map("a"), owner="ada"), store.create(new_map("b"), owner="ada")
    assert gone.id is not None
    store.delete(gone.id)
    with pytest.raises(WebMapNotFoundError):
        store.get(gone.id)
    with pytest.raises(WebMapNotFoundError):
        store.delete(gone.id)
    with pytest.raises(WebMapNotFoundError):
        store.replace(gone.id, new_map())
    assert store.list() == [kept]


@pytest.mark.parametrize("map_id", ["0" * 32, "nope", "../" + "0" * 29, "", "A" * 32, "0" * 31])
def test_an_unknown_or_malformed_id_is_not_found(store: WebMapStore, map_id: str) -> None:
    with pytest.raises(WebMapNotFoundError):
        store.get(map_id)
    with pytest.raises(WebMapNotFoundError):
        store.replace(map_id, new_map())
    with pytest.raises(WebMapNotFoundError):
        store.delete(map_id)


def test_concurrent_replacements_keep_the_owner_and_creation(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    created = here.create(new_map(), owner="ada")
    assert created.id is not None
    map_id = created.id
    start = threading.Barrier(4)

    def work(store: WebMapStore, n: int) -> None:
        start.wait()
        for round_ in range(10):
            store.replace(map_id, new_map(f"{n}.{round_}"))

    threads = [threading.Thread(target=work, args=([here, there][n % 2], n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = open_store().get(map_id)  # a fresh view: the folder store caches by mtime
    assert (final.sharing.owner, final.item.created) == ("ada", created.item.created)
    assert final.item.title is not None
    assert final.item.title.endswith(".9")


def test_another_process_sees_the_same_maps(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    created = here.create(new_map(), owner="ada")
    assert created.id is not None
    assert there.get(created.id) == created
    there.delete(created.id)
    with pytest.raises(WebMapNotFoundError):
        here.get(created.id)
