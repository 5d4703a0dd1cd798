"""The sync state store: one contract suite, run against every implementation (SQLite today)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from offmaps.schemas.changeset import ChangeResult, ChangeStatus, ConflictPolicy
from offmaps.state import (
    Answer,
    Conflict,
    RowState,
    SQLiteSyncStateStore,
    SyncStateStore,
)

REPLICA = "ab" * 16
OTHER = "cd" * 16


def _sqlite(tmp_path: Path) -> SyncStateStore:
    return SQLiteSyncStateStore(tmp_path / "sync.sqlite")


IMPLEMENTATIONS: dict[str, Callable[[Path], SyncStateStore]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncStateStore]:
    opened = IMPLEMENTATIONS[str(request.param)](tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def conflict(
    *, owner: str | None = "editor", status: str = "open", created: float = 1.0, **changes: object
) -> Conflict:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()), "replica_id": REPLICA, "owner": owner, "map_id": "m1",
        "service": "s", "layer": "points", "global_id": str(uuid.uuid4()),
        "kind": "update_update", "change_id": str(uuid.uuid4()), "fields": ["a"],
        "base": {"a": "x"}, "client": {"a": "y"}, "server": {"a": "z", "b": 2},
        "server_version": 3, "client_vector": {REPLICA: 2, "server": 1}, "status": status,
        "resolution": None if status == "open" else "server_wins", "created": created,
        "resolved": None if status == "open" else created, "resolved_by": None,
    }  # fmt: skip
    values.update(changes)
    return Conflict(**values)  # type: ignore[arg-type]


def record(
    store: SyncStateStore,
    *,
    states: dict[tuple[str, str], RowState | None] | None = None,
    answers: list[Answer] | None = None,
    conflicts: list[Conflict] | None = None,
) -> None:
    store.record(
        "s",
        uuid.uuid4(),
        states=states or {},
        answers=answers or [],
        conflicts=conflicts or [],
    )


def applied(change_id: uuid.UUID, **changes: object) -> ChangeResult:
    return ChangeResult.model_validate(
        {"change_id": change_id, "status": ChangeStatus.APPLIED, **changes}
    )


def test_the_sqlite_store_is_a_sync_state_store(store: SyncStateStore) -> None:
    assert isinstance(store, SyncStateStore)


def test_states_are_recorded_replaced_and_dropped(store: SyncStateStore) -> None:
    a, b = ("points", "a" * 8), ("points", "b" * 8)
    record(store, states={a: RowState(1, {REPLICA: 1}, "h1"), b: RowState(2, {"server": 2}, None)})
    record(store, states={a: RowState(2, {REPLICA: 2}, "h2"), b: None})
    found = store.load_states("s", [a, b, ("points", "missing")])
    assert found == {a: RowState(2, {REPLICA: 2}, "h2")}
    assert store.load_states("other service", [a]) == {}


def test_states_load_for_many_keys_at_once(store: SyncStateStore) -> None:
    keys = [("points" if i % 2 else "lines", f"{i:06d}") for i in range(1_234)]
    record(store, states={key: RowState(i, {"server": i}, None) for i, key in enumerate(keys)})
    found = store.load_states("s", reversed(keys))
    assert found == {key: RowState(i, {"server": i}, None) for i, key in enumerate(keys)}


def test_states_iterate_in_global_id_order_across_pages(store: SyncStateStore) -> None:
    gids = [f"{i:06d}" for i in range(1_100)]
    record(store, states={("points", g): RowState(1, {"server": 1}, None) for g in gids})
    record(store, states={("lines", "x"): RowState(1, {}, None)})
    listed = [gid for gid, _ in store.iter_states("s", "points")]
    assert listed == gids


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


def test_conflicts_round_trip(store: SyncStateStore) -> None:
    parked = conflict()
    settled = conflict(status="resolved", server=None, server_version=None)
    record(store, conflicts=[parked, settled])
    assert store.find_conflict(parked.id) == parked
    assert store.find_conflict(settled.id) == settled
    assert store.find_conflict("no such id") is None


def test_conflicts_are_listed_newest_first_by_filter(store: SyncStateStore) -> None:
    old = conflict(created=1.0)
    new = conflict(created=2.0)
    others = conflict(created=3.0, owner="someone else")
    done = conflict(created=4.0, status="resolved")
    elsewhere = conflict(created=5.0, replica_id=OTHER)
    record(store, conflicts=[old, new, others, done, elsewhere])

    def ids(**filters: object) -> list[str]:
        arguments: dict[str, object] = {
            "owner": None,
            "status": None,
            "replica_id": None,
            "limit": 100,
        }
        arguments.update(filters)
        return [c.id for c in store.list_conflicts(**arguments)]  # type: ignore[arg-type]

    assert ids() == [elsewhere.id, done.id, others.id, new.id, old.id]
    assert ids(owner="editor", status="open", replica_id=REPLICA) == [new.id, old.id]
    assert ids(status="resolved") == [done.id]
    assert ids(replica_id=OTHER) == [elsewhere.id]
    assert ids(limit=2) == [elsewhere.id, done.id]


def test_resolving_settles_the_answers_that_name_the_conflict(store: SyncStateStore) -> None:
    parked = conflict()
    change, covered, unrelated, foreign = (uuid.uuid4() for _ in range(4))
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
    found = store.find_answers([change, covered, unrelated, foreign])
    assert [found[i].result.status for i in (change, covered)] == [ChangeStatus.MERGED] * 2
    assert [found[i].result.version for i in (change, covered)] == [7, 7]
    assert found[unrelated].result == applied(unrelated)
    assert found[foreign].result.status is ChangeStatus.CONFLICT


# --- the embedded file ---------------------------------------------------------------------


def test_a_file_written_before_the_store_existed_reads_back(tmp_path: Path) -> None:
    """``DATA/sync.sqlite`` as the sync service wrote it itself (the same tables, filled
    with plain SQL) opens and reads as it was: no migration."""
    path = tmp_path / "sync.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE rows (service TEXT NOT NULL, layer TEXT NOT NULL, globalid TEXT NOT NULL,
            version INTEGER NOT NULL, vector TEXT NOT NULL, hlc TEXT,
            PRIMARY KEY (service, layer, globalid));
        CREATE TABLE changes (change_id TEXT PRIMARY KEY, replica_id TEXT NOT NULL,
            change_set_id TEXT NOT NULL, result TEXT NOT NULL, at REAL NOT NULL);
        CREATE INDEX changes_replica ON changes (replica_id);
        CREATE TABLE conflicts (id TEXT PRIMARY KEY, replica_id TEXT NOT NULL, owner TEXT,
            map_id TEXT, service TEXT NOT NULL, layer TEXT NOT NULL, globalid TEXT NOT NULL,
            kind TEXT NOT NULL, change_id TEXT NOT NULL, fields TEXT NOT NULL,
            base TEXT NOT NULL, client TEXT NOT NULL, server TEXT, server_version INTEGER,
            client_vector TEXT NOT NULL, status TEXT NOT NULL, resolution TEXT,
            created REAL NOT NULL, resolved REAL, resolved_by TEXT);
        CREATE INDEX conflicts_status ON conflicts (status, created);
        """
    )
    gid, change = str(uuid.uuid4()), uuid.uuid4()
    conn.execute("INSERT INTO rows VALUES ('s', 'points', ?, 3, ?, NULL)", (gid, '{"server": 3}'))
    conn.execute(
        "INSERT INTO changes VALUES (?, ?, 'set', ?, 1.0)",
        (str(change), REPLICA, applied(change, version=3).model_dump_json(exclude_defaults=True)),
    )
    conn.execute(
        "INSERT INTO conflicts VALUES ('c1', ?, 'editor', NULL, 's', 'points', ?, "
        "'delete_update', ?, '[]', '{}', '{}', ?, 3, ?, 'open', NULL, 2.0, NULL, NULL)",
        (REPLICA, gid, str(change), json.dumps({"a": 1}), json.dumps({REPLICA: 1})),
    )
    conn.commit()
    conn.close()
    store = SQLiteSyncStateStore(path)
    try:
        assert store.load_states("s", [("points", gid)]) == {
            ("points", gid): RowState(3, {"server": 3}, None)
        }
        assert store.find_answers([change]) == {change: Answer(REPLICA, applied(change, version=3))}
        found = store.find_conflict("c1")
        assert found is not None
        assert (found.kind, found.server, found.client_vector) == (
            "delete_update",
            {"a": 1},
            {REPLICA: 1},
        )
    finally:
        store.close()


def test_a_failed_record_leaves_nothing(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)
    change = uuid.uuid4()
    record(store, answers=[Answer(REPLICA, applied(change))])
    key = ("points", "a")
    with pytest.raises(sqlite3.IntegrityError):  # the change id is answered already
        record(
            store,
            states={key: RowState(1, {}, None)},
            answers=[Answer(REPLICA, applied(change))],
            conflicts=[conflict()],
        )
    assert store.load_states("s", [key]) == {}
    assert store.list_conflicts(owner=None, status=None, replica_id=None, limit=10) == []
    store.close()
