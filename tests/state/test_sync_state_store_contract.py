"""The sync state store contract: the SQLite and the PostgreSQL stores pass these same tests.

The PostgreSQL store needs ``OFFMAPS_TEST_POSTGRES_URL`` (``make test`` starts the server):
without it these tests fail loudly, never skip. Each test gets a schema of its own, dropped
afterwards, so tests run side by side (``pytest -n 2``). ``tests/state/test_syncstate.py``
keeps the embedded file's own tests.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from offmaps.errors import FeatureStoreError
from offmaps.schemas.changeset import ChangeResult, ChangeStatus, ConflictPolicy
from offmaps.state import Answer, RowState, SQLiteSyncStateStore, SyncStateStore
from offmaps.state.postgres_syncstate import PostgresSyncStateStore
from tests.state.backends import opening
from tests.state.test_syncstate import OTHER, REPLICA, applied, conflict, record

BACKENDS = ["sqlite", "postgres"]

Opener = Callable[[], SyncStateStore]


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one backend on one place: each call is another process's view."""
    opener = opening(
        request.param,
        lambda: SQLiteSyncStateStore(tmp_path / "sync.sqlite"),
        PostgresSyncStateStore,
    )
    yield from cast(Iterator[Opener], opener)  # the backends' classes, as their protocol


@pytest.fixture
def store(open_store: Opener) -> SyncStateStore:
    """A fresh, empty store of each backend."""
    return open_store()


def test_each_store_is_a_sync_state_store(store: SyncStateStore) -> None:
    assert isinstance(store, SyncStateStore)


def test_states_are_recorded_replaced_and_dropped(store: SyncStateStore) -> None:
    a, b = ("points", "a" * 8), ("points", "b" * 8)
    record(store, states={a: RowState(1, {REPLICA: 1}, "h1"), b: RowState(2, {"server": 2}, None)})
    record(store, states={a: RowState(2, {REPLICA: 2}, "h2"), b: None})
    found = store.load_states("s", [a, b, ("points", "missing")])
    assert found == {a: RowState(2, {REPLICA: 2}, "h2")}
    assert store.load_states("other service", [a]) == {}
    assert store.load_states("s", []) == {}


def test_a_rows_origin_is_kept_and_replaced(store: SyncStateStore) -> None:
    a, b = ("points", "a"), ("lines", "a")
    record(
        store,
        states={
            a: RowState(1, {REPLICA: 1}, "h1", REPLICA),
            b: RowState(4, {OTHER: 2}, None, OTHER),
        },
    )
    assert store.load_states("s", [a, b]) == {
        a: RowState(1, {REPLICA: 1}, "h1", REPLICA),
        b: RowState(4, {OTHER: 2}, None, OTHER),
    }
    record(store, states={a: RowState(2, {REPLICA: 1, "server": 2}, "h2", None)})
    assert store.load_states("s", [a])[a].origin is None
    assert dict(store.iter_states("s", "lines")) == {"a": RowState(4, {OTHER: 2}, None, OTHER)}


def test_states_load_for_many_keys_at_once(store: SyncStateStore) -> None:
    keys = [("points" if i % 2 else "lines", f"{i:06d}") for i in range(1_234)]
    record(store, states={key: RowState(i, {"server": i}, None) for i, key in enumerate(keys)})
    found = store.load_states("s", reversed([*keys, *keys[:10]]))  # a key asked twice too
    assert found == {key: RowState(i, {"server": i}, None) for i, key in enumerate(keys)}


def test_states_iterate_in_global_id_order_across_pages(store: SyncStateStore) -> None:
    gids = [f"{i:06d}" for i in range(2_100)]
    record(store, states={("points", g): RowState(1, {"server": 1}, None) for g in gids})
    record(store, states={("lines", "x"): RowState(1, {}, None)})
    listed = [gid for gid, _ in store.iter_states("s", "points")]
    assert listed == gids
    assert list(store.iter_states("s", "nothing")) == []


def test_global_ids_iterate_in_byte_order_whatever_the_locale(store: SyncStateStore) -> None:
    gids = ["b", "B", "a", "A", "é", "Z", "_", "{0ab}", "{0AB}", "-1", "ä", "z"]
    record(store, states={("points", g): RowState(1, {}, None) for g in gids})
    listed = [gid for gid, _ in store.iter_states("s", "points")]
    assert listed == sorted(gids, key=lambda gid: gid.encode())


def test_answers_are_found_with_their_replica(store: SyncStateStore) -> None:
    first, second, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    record(
        store,
        answers=[
            Answer(REPLICA, applied(first, version=2, version_vector={REPLICA: 1})),
            Answer(OTHER, applied(second)),
        ],
    )
    found = store.find_answers([first, second, unknown])
    assert found == {
        first: Answer(REPLICA, applied(first, version=2, version_vector={REPLICA: 1})),
        second: Answer(OTHER, applied(second)),
    }
    assert store.find_answers([]) == {}


def test_covered_edits_get_the_answer_of_their_change_unless_answered(
    store: SyncStateStore,
) -> None:
    early, change, covered = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    record(store, answers=[Answer(REPLICA, applied(early, version=1))])
    record(store, answers=[Answer(REPLICA, applied(change, version=5), (early, covered))])
    found = store.find_answers([early, change, covered])
    assert found[early].result == applied(early, version=1)
    assert found[covered].result == applied(covered, version=5)
    assert found[change].result == applied(change, version=5)


def test_an_edit_covered_twice_in_one_change_set_takes_the_first_answer(
    store: SyncStateStore,
) -> None:
    one, two, covered = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    record(
        store,
        answers=[
            Answer(REPLICA, applied(one, version=3), (covered,)),
            Answer(REPLICA, applied(two, version=4), (covered, one)),
        ],
    )
    found = store.find_answers([one, two, covered])
    assert (found[covered].result.version, found[one].result.version) == (3, 3)


def test_a_failed_record_leaves_nothing(store: SyncStateStore) -> None:
    change = uuid.uuid4()
    record(store, answers=[Answer(REPLICA, applied(change))])
    key = ("points", "a")
    with pytest.raises((sqlite3.IntegrityError, FeatureStoreError)):  # answered already
        record(
            store,
            states={key: RowState(1, {}, None)},
            answers=[Answer(REPLICA, applied(uuid.uuid4())), Answer(REPLICA, applied(change))],
            conflicts=[conflict()],
        )
    assert store.load_states("s", [key]) == {}
    assert store.list_conflicts(owner=None, status=None, replica_id=None, limit=10) == []


def test_conflicts_round_trip(store: SyncStateStore) -> None:
    parked = conflict(
        base={"z": 1, "a": "x\u0000y", "m": None}, client={"é": [1, 2.5]}, fields=["z", "a"]
    )
    settled = conflict(status="resolved", server=None, server_version=None, map_id=None)
    record(store, conflicts=[parked, settled])
    found = store.find_conflict(parked.id)
    assert found == parked
    assert found is not None
    assert list(found.base) == ["z", "a", "m"]
    assert store.find_conflict(settled.id) == settled
    assert store.find_conflict("no such id") is None


def test_conflicts_are_listed_newest_first_by_filter(store: SyncStateStore) -> None:
    old = conflict(created=1.0)
    new = conflict(created=2.0)
    others = conflict(created=3.0, owner="someone else")
    done = conflict(created=4.0, status="resolved")
    elsewhere = conflict(created=5.0, replica_id=OTHER)
    nobody = conflict(created=6.0, owner=None)
    record(store, conflicts=[old, new, others, done, elsewhere, nobody])

    def ids(**filters: object) -> list[str]:
        arguments: dict[str, object] = {
            "owner": None,
            "status": None,
            "replica_id": None,
            "limit": 100,
        }
        arguments.update(filters)
        return [c.id for c in store.list_conflicts(**arguments)]  # type: ignore[arg-type]

    assert ids() == [nobody.id, elsewhere.id, done.id, others.id, new.id, old.id]
    assert ids(owner="editor", status="open", replica_id=REPLICA) == [new.id, old.id]
    assert ids(status="resolved") == [done.id]
    assert ids(replica_id=OTHER) == [elsewhere.id]
    assert ids(limit=2) == [nobody.id, elsewhere.id]


def test_resolving_settles_the_answers_that_name_the_conflict(store: SyncStateStore) -> None:
    parked = conflict()
    change, covered, unrelated, foreign, mentions = (uuid.uuid4() for _ in range(5))
    cid = uuid.UUID(parked.id)
    waiting = ChangeResult(
        change_id=change,
        status=ChangeStatus.CONFLICT,
        conflict_id=cid,
        resolution=ConflictPolicy.MANUAL,
    )
    record(
        store,
        answers=[
            Answer(REPLICA, waiting, (covered,)),
            Answer(REPLICA, applied(unrelated)),
            # an answer that holds the id as text only does not name the conflict
            Answer(REPLICA, applied(mentions, reason=f"see {parked.id} \u0000")),
            # another replica's answer naming the id is not this conflict's
            Answer(OTHER, waiting.model_copy(update={"change_id": foreign})),
        ],
        conflicts=[parked],
    )
    store.resolve_conflict(
        parked.id,
        resolution="manual:client",
        resolved_by="admin",
        settle=lambda r: r.model_copy(update={"status": ChangeStatus.MERGED, "version": 7}),
    )
    resolved = store.find_conflict(parked.id)
    assert resolved is not None
    assert (resolved.status, resolved.resolution, resolved.resolved_by) == (
        "resolved",
        "manual:client",
        "admin",
    )
    assert resolved.resolved is not None
    found = store.find_answers([change, covered, unrelated, foreign, mentions])
    assert [found[i].result.status for i in (change, covered)] == [ChangeStatus.MERGED] * 2
    assert [found[i].result.version for i in (change, covered)] == [7, 7]
    assert found[unrelated].result == applied(unrelated)
    assert found[mentions].result.status is ChangeStatus.APPLIED
    assert found[foreign].result.status is ChangeStatus.CONFLICT


def test_refreshing_an_open_conflict_records_the_servers_row_now(store: SyncStateStore) -> None:
    parked, settled = conflict(), conflict(status="resolved")
    record(store, conflicts=[parked, settled])
    store.refresh_conflict(parked.id, kind="update_delete", server=None, server_version=None)
    found = store.find_conflict(parked.id)
    assert found is not None
    assert (found.kind, found.server, found.server_version) == ("update_delete", None, None)
    assert (found.client, found.status) == (parked.client, "open")
    store.refresh_conflict(
        parked.id, kind="update_update", server={"b": 1, "a": 2}, server_version=9
    )
    again = store.find_conflict(parked.id)
    assert again is not None
    assert (again.server, again.server_version) == ({"b": 1, "a": 2}, 9)
    store.refresh_conflict(settled.id, kind="update_delete", server=None, server_version=None)
    assert store.find_conflict(settled.id) == settled  # a resolved conflict keeps what it had
    store.refresh_conflict("nope", kind="update_delete", server=None, server_version=None)


def test_resolving_an_unknown_conflict_changes_nothing(store: SyncStateStore) -> None:
    change = uuid.uuid4()
    record(store, answers=[Answer(REPLICA, applied(change))])
    store.resolve_conflict("nope", resolution="x", resolved_by="admin", settle=lambda r: r)
    assert store.find_answers([change])[change].result == applied(change)


def test_another_process_sees_the_same_state(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    key, change = ("points", "a"), uuid.uuid4()
    parked = conflict()
    record(here, states={key: RowState(3, {REPLICA: 3}, "h", REPLICA)}, conflicts=[parked])
    record(here, answers=[Answer(REPLICA, applied(change))])
    assert there.load_states("s", [key]) == {key: RowState(3, {REPLICA: 3}, "h", REPLICA)}
    assert there.find_answers([change])[change].replica_id == REPLICA
    there.resolve_conflict(parked.id, resolution="server", resolved_by="a", settle=lambda r: r)
    found = here.find_conflict(parked.id)
    assert found is not None
    assert found.status == "resolved"


def test_records_of_overlapping_rows_from_two_processes_all_land(open_store: Opener) -> None:
    stores = [open_store(), open_store()]
    keys = [("points", f"{n:03d}") for n in range(60)]
    answered: list[uuid.UUID] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(store: SyncStateStore, worker: int) -> None:
        start.wait()
        try:
            for round_ in range(10):  # each record rewrites or drops every row, in its own order
                order = keys if (worker + round_) % 2 else list(reversed(keys))
                states: dict[tuple[str, str], RowState | None] = {
                    key: None
                    if (int(key[1]) + round_) % 7 == 0
                    else RowState(round_, {"w": worker}, None)
                    for key in order
                }
                change = uuid.uuid4()
                record(store, states=states, answers=[Answer(REPLICA, applied(change))])
                answered.append(change)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(stores[n % 2], n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(stores[1].find_answers(answered)) == 40
    final = stores[0].load_states("s", keys)
    assert {state.version for state in final.values()} <= {8, 9}  # a last record's rows
