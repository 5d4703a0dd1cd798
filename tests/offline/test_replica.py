"""The device side of sync: the trigger-filled outbox and atomic downloads of a replica."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import date
from pathlib import Path
from uuid import UUID

import pytest
import shapely
from shapely.geometry import Point

from offmaps.errors import PackageError, SyncFailedError
from offmaps.features import FieldType
from offmaps.features.geopackage import (
    GeoPackageStore,
    _from_sql,
    _register_functions,
    encode_geometry,
)
from offmaps.features.model import (
    Delete,
    Feature,
    Field,
    GeometryType,
    Insert,
    LayerSchema,
    Update,
)
from offmaps.features.wire import value_to_wire
from offmaps.offline.replica import _OWN_WIRE_VALUES, LocalReplica, _WireValue
from offmaps.schemas.changeset import (
    AttachmentRef,
    ChangeResult,
    ChangeStatus,
    DownloadHeader,
    ServerChange,
    SyncChangeKind,
    WireField,
    WireLayer,
)

REPLICA = "0123456789abcdef" * 2
SITES = LayerSchema(
    "sites",
    (
        Field("name", FieldType.TEXT),
        Field("count", FieldType.INTEGER),
        Field("depth", FieldType.REAL),
        Field("surveyed", FieldType.DATE),
        Field("active", FieldType.BOOLEAN),
    ),
    GeometryType.POINT,
)
VISITS = LayerSchema("visits", (Field("site", FieldType.TEXT), Field("note", FieldType.TEXT)))
A, B, C = (UUID(int=n) for n in (0xA, 0xB, 0xC))
V1 = UUID(int=0x1)
SHA = "ab" * 32


def _wkb(x: float, y: float) -> str:
    return str(shapely.to_wkb(Point(x, y), hex=True)).lower()


def _header(
    generation: int = 12, since: int = 7, extra: tuple[WireField, ...] = ()
) -> DownloadHeader:
    wire = [WireField(name=f.name, type=f.type.value) for f in SITES.fields]
    return DownloadHeader(
        replica_id=REPLICA,
        since=since,
        generation=generation,
        layers=[WireLayer(name="sites", fields=[*wire, *extra])],
    )


def _values(name: str, count: int, x: float = 0.0) -> dict[str, object]:
    return {
        "name": name,
        "count": count,
        "depth": 1.5,
        "surveyed": "2024-05-06",
        "active": True,
        "geom": _wkb(x, 0),
    }


def _dump(path: Path) -> list[object]:
    """Every schema entry and every row of every table, as an independent reader sees them."""
    with closing(sqlite3.connect(path)) as conn:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        dump: list[object] = [schema]
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall():
            dump.append((name, conn.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall()))
    return dump


def _capture_flag(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT value FROM offmaps_sync_state WHERE key = 'capture'").fetchone()
    return str(row[0])


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A replica as extracted: rows A and B of ``sites`` (server version 3), a row of ``visits``."""
    path = tmp_path / "service.gpkg"
    with GeoPackageStore.create(path) as store:
        store.create_layer(SITES)
        store.create_layer(VISITS)
        properties = {
            "name": "well",
            "count": 2,
            "depth": 4.0,
            "surveyed": "2024-01-02",
            "active": True,
        }
        store.copy_features(
            "sites",
            [Feature(A, 3, properties, Point(1, 2)), Feature(B, 3, properties, Point(5, 6))],
        )
        store.copy_features("visits", [Feature(C, 3, {"site": "A", "note": "dry"})])
    return path


@pytest.fixture
def replica(path: Path) -> Iterator[LocalReplica]:
    """The sync side of the replica, opened at generation 7."""
    with LocalReplica.open(path, replica_id=REPLICA, generation=7) as opened:
        yield opened


@pytest.fixture
def store(path: Path, replica: LocalReplica) -> Iterator[GeoPackageStore]:
    """The SDK's store on the same file (after the triggers are installed)."""
    with GeoPackageStore.open(path) as opened:
        yield opened


def test_open_records_replica_and_generations(replica: LocalReplica) -> None:
    assert replica.replica_id == REPLICA
    assert replica.generations() == {"sites": 7, "visits": 7}
    assert replica.generation("sites") == 7
    assert replica.pending() == []


def test_only_the_replica_layers_are_captured(path: Path) -> None:
    with (
        LocalReplica.open(path, replica_id=REPLICA, generation=1, layers=["visits"]) as replica,
        GeoPackageStore.open(path) as store,
    ):
        store.apply_edits([Update("sites", A, {"count": 1}), Update("visits", C, {"note": "y"})])
        assert [c.layer for c in replica.pending()] == ["visits"]
        assert replica.generations() == {"visits": 1}


def test_a_table_row_comes_down_without_geometry(path: Path, replica: LocalReplica) -> None:
    header = DownloadHeader(
        replica_id=REPLICA,
        since=7,
        generation=8,
        layers=[WireLayer(name="visits", fields=[WireField(name="site", type="text")])],
    )
    values = {"site": "B", "note": "ok", "geom": None}
    change = ServerChange(layer="visits", global_id=C, kind="upsert", version=4, values=values)

    replica.apply_download(header, [change])

    with GeoPackageStore.open(path) as store:
        assert store.get_feature("visits", C).properties == {"site": "B", "note": "ok"}
    assert replica.generations() == {"sites": 7, "visits": 8}
    bad = change.model_copy(update={"values": {**values, "geom": _wkb(1, 1)}})
    with pytest.raises(SyncFailedError):
        replica.apply_download(header, [bad])


def test_reopen_keeps_state_and_refuses_another_replica(path: Path, replica: LocalReplica) -> None:
    replica.close()
    with LocalReplica.open(path, replica_id=REPLICA, generation=99) as again:
        assert again.generations() == {"sites": 7, "visits": 7}
    with pytest.raises(PackageError):
        LocalReplica.open(path, replica_id="f" * 32, generation=7)


def test_open_refuses_a_file_that_is_not_a_replica(tmp_path: Path) -> None:
    other = tmp_path / "x.gpkg"
    other.write_bytes(b"not a database" * 100)
    with pytest.raises(PackageError):
        LocalReplica.open(other, replica_id=REPLICA, generation=0)


def test_sdk_edits_are_captured_in_order(replica: LocalReplica, store: GeoPackageStore) -> None:
    store.apply_edits([Update("sites", A, {"name": "pump"}, Point(9, 9), set_geometry=True)])
    store.apply_edits([Insert("sites", {"name": "new", "active": False}, Point(0, 1))])
    store.apply_edits([Delete("sites", B)])

    update, insert, delete = replica.pending()

    assert [c.kind for c in (update, insert, delete)] == [
        SyncChangeKind.UPDATE,
        SyncChangeKind.INSERT,
        SyncChangeKind.DELETE,
    ]
    assert update.changed == ["name", "geom"]
    assert update.base_values == {"name": "well", "geom": _wkb(1, 2)}
    assert update.values == {
        "name": "pump",
        "count": 2,
        "depth": 4.0,
        "surveyed": "2024-01-02",
        "active": True,
        "geom": _wkb(9, 9),
    }
    assert insert.values["active"] is False
    assert insert.values["geom"] == _wkb(0, 1)
    assert insert.base_version == 0
    assert insert.version_vector == {REPLICA: 1}
    # the SDK bumped row_version to 4: the server version the edit started from is still 3
    assert update.base_version == 3
    assert update.version_vector == {REPLICA: 1, "server": 3}
    assert delete.version_vector == {REPLICA: 1, "server": 3}
    assert delete.base_values["name"] == "well"
    assert update.hlc < insert.hlc < delete.hlc
    assert [c.hlc for c in replica.pending()] == [update.hlc, insert.hlc, delete.hlc]
    assert [c.change_id for c in replica.pending()] == [
        update.change_id,
        insert.change_id,
        delete.change_id,
    ]
    assert [c.covers for c in (update, insert, delete)] == [[], [], []]


def test_a_rows_edits_go_as_one_change(replica: LocalReplica, store: GeoPackageStore) -> None:
    """As geodiff ships net changes: a row's pending edits go as one change, the last edit's,
    with the values after it, the base before the first, and the others' ids as covers."""
    store.apply_edits([Update("sites", A, {"name": "pump"})])
    new = store.apply_edits([Insert("sites", {"name": "new"}, Point(0, 1))])[0]
    assert new is not None
    store.apply_edits([Update("sites", A, {"count": 7}, Point(9, 9), set_geometry=True)])
    store.apply_edits([Update("sites", new.global_id, {"name": "newer"})])
    store.apply_edits([Update("sites", B, {"name": "x"})])
    store.apply_edits([Update("sites", B, {"name": "well"})])  # back as it was
    gone = store.apply_edits([Insert("visits", {"site": "B"})])[0]
    assert gone is not None
    store.apply_edits([Delete("visits", gone.global_id)])
    ids = [entry.change_id for entry in replica.outbox()]

    update, insert = replica.pending()

    assert (update.change_id, update.covers) == (ids[2], [ids[0]])
    assert update.changed == ["name", "count", "geom"]
    assert update.base_values == {"name": "well", "count": 2, "geom": _wkb(1, 2)}
    assert (update.values["name"], update.values["count"]) == ("pump", 7)
    assert update.version_vector == {REPLICA: 2, "server": 3}
    assert (insert.change_id, insert.covers, insert.kind) == (ids[3], [ids[1]], "insert")
    assert insert.values["name"] == "newer"
    assert insert.version_vector == {REPLICA: 2}
    # nothing to send: B's edits undo each other, the visit was added and deleted
    settled = [(e.status, e.reason) for e in replica.outbox() if e.seq > 4]
    assert (
        settled
        == [(ChangeStatus.APPLIED, "no change")] * 2
        + [(ChangeStatus.APPLIED, "nothing to send: the row was added and deleted")] * 2
    )

    # read again, as after an upload whose answer was lost: each edit goes on its own, under
    # the id the server recorded its answer by
    again = replica.pending()
    assert [(c.change_id, c.covers) for c in again] == [(i, []) for i in ids[:4]]
    assert again[2].version_vector == {REPLICA: 2, "server": 3}
    store.apply_edits([Delete("sites", A)])
    assert [c.kind for c in replica.pending()][-1] == "delete"


def test_an_attachment_edit_ends_a_rows_change(
    replica: LocalReplica, store: GeoPackageStore
) -> None:
    store.apply_edits([Update("sites", A, {"name": "pump"})])
    attachment = store.add_attachment(
        "sites", A, name="a.jpg", content_type="image/jpeg", size=1, sha256="0" * 64
    )
    store.apply_edits([Update("sites", A, {"count": 9})])
    kinds = [(c.kind, len(c.covers)) for c in replica.pending()]
    assert kinds == [("update", 0), ("attachment_add", 0), ("update", 0)]
    assert attachment.attachment_id is not None


def test_pending_can_skip_the_set_in_flight(replica: LocalReplica, store: GeoPackageStore) -> None:
    store.apply_edits([Update("sites", A, {"name": "pump"})])
    store.apply_edits([Delete("sites", B)])
    first, second = replica.pending()
    (following,) = replica.pending(limit=5, skip={first.change_id})
    assert following == second
    # an edit made while a row's change is in flight goes on its own, counted after it
    store.apply_edits([Update("sites", A, {"count": 5})])
    (later,) = replica.pending(skip={first.change_id, second.change_id})
    assert (later.covers, later.version_vector) == ([], {REPLICA: 2, "server": 3})
    assert following.version_vector == {REPLICA: 1, "server": 3}


def test_pending_filters_by_layer_and_limit(replica: LocalReplica, store: GeoPackageStore) -> None:
    store.apply_edits([Update("visits", C, {"note": "wet"}), Update("sites", B, {"count": 5})])

    assert [c.layer for c in replica.pending(layers=["visits"])] == ["visits"]
    assert len(replica.pending(limit=1)) == 1
    assert replica.pending_count() == 2
    assert replica.pending_count(layers=["sites"]) == 1


def test_raw_sql_edits_are_captured(path: Path, replica: LocalReplica) -> None:
    new = uuid.uuid4()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        _register_functions(conn)  # as QGIS and GDAL bring their own ST_ functions
        conn.execute(
            "INSERT INTO sites (globalid, name, count, geom) VALUES (?, 'raw', 7, ?)",
            (str(new), encode_geometry(Point(3, 3), 4326)),
        )
        conn.execute("UPDATE visits SET note = 'flooded' WHERE globalid = ?", (str(C),))
        conn.execute("DELETE FROM sites WHERE globalid = ?", (str(B),))

    insert, update, delete = replica.pending()

    assert insert.kind is SyncChangeKind.INSERT
    assert insert.global_id == new
    assert insert.values["count"] == 7
    assert insert.values["geom"] == _wkb(3, 3)
    assert (update.layer, update.changed, update.base_values) == (
        "visits",
        ["note"],
        {"note": "dry"},
    )
    assert update.values == {"site": "A", "note": "flooded"}
    assert (delete.kind, delete.global_id, delete.base_version) == (SyncChangeKind.DELETE, B, 3)


def test_an_update_that_changes_nothing_is_not_sent(
    path: Path, replica: LocalReplica, store: GeoPackageStore
) -> None:
    store.apply_edits([Update("sites", A, {"name": "well"})])  # same value: no trigger
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        _register_functions(conn)
        conn.execute("UPDATE sites SET active = 2 WHERE globalid = ?", (str(A),))  # still true

    assert replica.pending_count() == 1
    assert replica.pending() == []
    (entry,) = replica.outbox()
    assert (entry.status, entry.reason) == (ChangeStatus.APPLIED, "no change")
    assert replica.pending_count() == 0


def test_attachment_changes_are_captured(replica: LocalReplica, store: GeoPackageStore) -> None:
    added = store.add_attachment(
        "sites", A, name="a.jpg", content_type="image/jpeg", size=3, sha256=SHA
    )
    store.delete_attachment("sites", added.attachment_id)
    store.add_attachment("sites", B, name="b.jpg", content_type="image/jpeg", size=3, sha256=SHA)
    store.apply_edits([Delete("sites", B)])  # its attachment records go with the row's delete

    changes = replica.pending()

    assert [c.kind for c in changes] == [
        SyncChangeKind.ATTACHMENT_ADD,
        SyncChangeKind.ATTACHMENT_DELETE,
        SyncChangeKind.ATTACHMENT_ADD,
        SyncChangeKind.DELETE,
    ]
    assert changes[0].attachment == AttachmentRef(
        attachment_id=added.attachment_id,
        name="a.jpg",
        content_type="image/jpeg",
        size=3,
        sha256=SHA,
    )
    assert changes[0].base_version == 3
    assert changes[1].version_vector == {REPLICA: 2, "server": 3}


def test_record_results_sets_statuses_and_versions(
    replica: LocalReplica, store: GeoPackageStore
) -> None:
    store.apply_edits([Update("sites", A, {"count": 3}), Update("sites", B, {"count": 4})])
    store.apply_edits([Update("visits", C, {"note": "x"})])
    first, second, third = replica.pending()
    conflict = uuid.uuid4()

    replica.record_results(
        [
            ChangeResult(
                change_id=first.change_id,
                status=ChangeStatus.APPLIED,
                version=4,
                version_vector={"server": 3, REPLICA: 1},
            ),
            ChangeResult(
                change_id=second.change_id, status=ChangeStatus.CONFLICT, conflict_id=conflict
            ),
            ChangeResult(change_id=uuid.uuid4(), status=ChangeStatus.REJECTED),
        ]
    )

    counts = replica.status_counts()
    assert (counts[ChangeStatus.APPLIED], counts[ChangeStatus.CONFLICT]) == (1, 1)
    assert counts[ChangeStatus.PENDING] == 1
    assert [c.change_id for c in replica.pending()] == [third.change_id]
    (parked,) = replica.outbox(ChangeStatus.CONFLICT)
    assert (parked.change_id, parked.conflict_id, parked.global_id) == (
        second.change_id,
        conflict,
        B,
    )
    store.apply_edits([Update("sites", A, {"count": 9})])
    later = replica.pending(layers=["sites"])[-1]
    assert later.base_version == 4
    assert later.version_vector == {"server": 3, REPLICA: 2}


def test_apply_download_upserts_deletes_and_sets_generations(
    path: Path, replica: LocalReplica
) -> None:
    new = uuid.uuid4()
    photo = AttachmentRef(
        attachment_id=uuid.uuid4(), name="p.png", content_type="image/png", size=9, sha256=SHA
    )
    changes = [
        ServerChange(
            layer="sites",
            global_id=A,
            kind="upsert",
            version=5,
            version_vector={"server": 5},
            values=_values("renamed", 11, x=7),
            attachments=[photo],
        ),
        ServerChange(
            layer="sites", global_id=new, kind="upsert", version=1, values=_values("n", 1)
        ),
        ServerChange(layer="sites", global_id=B, kind="delete"),
    ]

    summary = replica.apply_download(_header(), changes)

    assert (summary.upserted, summary.deleted, summary.fields_added, summary.kept_local) == (
        2,
        1,
        (),
        0,
    )
    assert replica.generations() == {"sites": 12, "visits": 7}
    assert replica.pending_count() == 0
    assert replica.outbox() == []
    with GeoPackageStore.open(path) as store:
        row = store.get_feature("sites", A)
        assert (row.version, row.properties["name"], row.properties["count"]) == (5, "renamed", 11)
        assert row.geometry == Point(7, 0)
        assert store.get_feature("sites", new).properties["surveyed"] == date(2024, 5, 6)
        (attachment,) = store.list_attachments("sites", A)
        assert attachment.attachment_id == photo.attachment_id
        assert [f.global_id for f in store.iter_features("sites")] == [A, new]
        store.apply_edits([Update("sites", A, {"count": 12})])
    (change,) = replica.pending()
    assert (change.base_version, change.version_vector) == (5, {"server": 5, REPLICA: 1})


def test_apply_download_keeps_pending_local_edits(
    path: Path, replica: LocalReplica, store: GeoPackageStore
) -> None:
    store.apply_edits([Update("sites", A, {"name": "mine"}), Update("sites", B, {"count": 8})])

    summary = replica.apply_download(
        _header(),
        [
            ServerChange(
                layer="sites", global_id=A, kind="upsert", version=6, values=_values("theirs", 40)
            ),
            ServerChange(layer="sites", global_id=B, kind="delete"),
        ],
    )

    assert (summary.upserted, summary.deleted, summary.kept_local) == (1, 0, 2)
    row = store.get_feature("sites", A)
    assert (row.properties["name"], row.properties["count"]) == ("mine", 40)
    assert store.get_feature("sites", B).properties["count"] == 8
    # the upload still names the version its edits started from, for the server to merge
    assert [c.base_version for c in replica.pending()] == [3, 3]


def test_apply_download_adds_fields_and_captures_their_edits(
    path: Path, replica: LocalReplica
) -> None:
    extra = (WireField(name="priority", type="integer"),)
    values = {**_values("well", 2), "priority": 3}
    change = ServerChange(layer="sites", global_id=A, kind="upsert", version=4, values=values)

    summary = replica.apply_download(_header(extra=extra), [change])

    assert summary.fields_added == ("sites.priority",)
    assert replica.pending_count() == 0
    with GeoPackageStore.open(path) as store:
        assert store.get_layer("sites").fields[-1] == Field("priority", FieldType.INTEGER)
        assert store.get_feature("sites", A).properties["priority"] == 3
        store.apply_edits([Update("sites", A, {"priority": 1})])
    (edit,) = replica.pending()
    assert (edit.changed, edit.base_values, edit.values["priority"]) == (
        ["priority"],
        {"priority": 3},
        1,
    )


def test_a_bad_download_changes_nothing(path: Path, replica: LocalReplica) -> None:
    before = _dump(path)
    extra = (WireField(name="priority", type="integer"),)
    changes = [
        ServerChange(layer="sites", global_id=A, kind="upsert", version=5, values=_values("x", 1)),
        ServerChange(
            layer="sites",
            global_id=B,
            kind="upsert",
            version=5,
            values=_values("y", 1) | {"count": "many"},
        ),
    ]

    with pytest.raises(SyncFailedError, match="count"):
        replica.apply_download(_header(extra=extra), changes)

    assert _dump(path) == before
    assert _capture_flag(path) == "1"


def test_a_download_for_another_replica_or_with_a_gap_is_refused(replica: LocalReplica) -> None:
    other = _header().model_copy(update={"replica_id": "f" * 32})
    with pytest.raises(SyncFailedError):
        replica.apply_download(other, [])
    with pytest.raises(SyncFailedError):
        replica.apply_download(_header(since=9), [])
    assert replica.generations() == {"sites": 7, "visits": 7}


def test_the_capture_flag_is_never_seen_off(path: Path, replica: LocalReplica) -> None:
    seen: list[str] = []

    def changes() -> Iterator[ServerChange]:
        seen.append(_capture_flag(path))
        yield ServerChange(
            layer="sites", global_id=A, kind="upsert", version=5, values=_values("x", 1)
        )
        seen.append(_capture_flag(path))

    replica.apply_download(_header(), changes())

    assert seen == ["1", "1"]
    assert _capture_flag(path) == "1"


@pytest.mark.parametrize("kind", list(FieldType))
def test_recorded_values_read_as_the_store_reads_them(kind: FieldType) -> None:
    values: list[object] = [None, True, False, 0, 2, 1.5, 4.0, "", "1", "yes", "2024-05-06"]
    values += ["2024-05-06T10:11:12.345+02:00", "2024-05-06 10:11", "not a date", ["a"], {"b": 1}]
    convert = None if kind in _OWN_WIRE_VALUES else _WireValue(kind)
    for value in values * 2:  # the second time, texts come from what was remembered
        expected = value_to_wire(_from_sql(kind, value))
        got = value if convert is None else convert(value)
        assert (got, type(got)) == (expected, type(expected))


def test_rows_other_tools_wrote_into_the_outbox(path: Path, replica: LocalReplica) -> None:
    spelled = uuid.uuid4()  # an id written in capitals
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executemany(
            "INSERT INTO offmaps_outbox (change_id, layer, globalid, kind, old, at_ms) "
            "VALUES (?, ?, ?, 'delete', '{}', 0)",
            [
                (str(uuid.uuid4()), "sites", "not an id"),
                (str(uuid.uuid4()), "no such layer!", str(A)),
                (str(spelled).upper(), "visits", str(C)),
            ],
        )

    (change,) = replica.pending()

    assert (change.change_id, change.layer, change.global_id) == (spelled, "visits", C)
    counts = replica.status_counts()
    assert (counts[ChangeStatus.REJECTED], counts[ChangeStatus.PENDING]) == (2, 1)
    assert replica.pending(skip={spelled}) == []
    assert replica.pending() == [change]
    listed = replica.outbox()  # the device lists them all, the unreadable id as None
    assert [entry.global_id for entry in listed] == [None, A, C]


def test_the_last_answer_to_a_change_is_the_one_kept(
    path: Path, replica: LocalReplica, store: GeoPackageStore
) -> None:
    store.apply_edits([Update("sites", A, {"count": 3}), Delete("sites", B)])
    update, delete = replica.pending()
    conflict = uuid.uuid4()

    replica.record_results(
        [
            ChangeResult(
                change_id=update.change_id,
                status=ChangeStatus.APPLIED,
                version=4,
                version_vector={"server": 3, REPLICA: 1},
            ),
            ChangeResult(change_id=delete.change_id, status=ChangeStatus.APPLIED),
            ChangeResult(
                change_id=update.change_id, status=ChangeStatus.CONFLICT, conflict_id=conflict
            ),
        ]
    )

    (parked,) = replica.outbox(ChangeStatus.CONFLICT)
    assert (parked.change_id, parked.conflict_id) == (update.change_id, conflict)
    assert replica.status_counts()[ChangeStatus.APPLIED] == 1
    with closing(sqlite3.connect(path)) as conn:
        known = conn.execute("SELECT globalid, version, vector FROM offmaps_sync_rows").fetchall()
    # the applied answer said what the server holds; the deleted row is forgotten
    assert known == [(str(A), 4, f'{{"server": 3, "{REPLICA}": 1}}')]


SQL_DEFAULT_TEXT = (  # what QGIS's Add Feature and ogr2ogr -append write as the global id
    "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))"
)


def _rows(path: Path, table: str) -> dict[str, str]:
    """The global id of each row of ``table``, by its ``name`` or ``note``."""
    column = "name" if table == "sites" else "note"
    with closing(sqlite3.connect(path)) as conn:
        found = conn.execute(f"SELECT {column}, globalid FROM {table}").fetchall()
    return {str(name): str(global_id) for name, global_id in found}


def test_inserts_without_a_uuid_global_id_get_one_before_capture(
    path: Path, replica: LocalReplica
) -> None:
    spelled = uuid.uuid4()
    bare = uuid.uuid4()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        _register_functions(conn)
        conn.execute("BEGIN")
        conn.executemany(  # two rows with the same text: the UNIQUE column takes both
            "INSERT INTO sites (globalid, name, geom) VALUES (?, ?, ?)",
            [
                (SQL_DEFAULT_TEXT, "qgis", encode_geometry(Point(1, 1), 4326)),
                (SQL_DEFAULT_TEXT, "ogr2ogr", encode_geometry(Point(2, 2), 4326)),
                (f"{{{str(spelled).upper()}}}", "braces", None),
                (bare.hex, "bare", None),
            ],
        )
        # a plain PyQGIS QgsFeature writes NULL in every field it was not given
        conn.execute("INSERT INTO visits (globalid, row_version, note) VALUES (NULL, NULL, 'n')")
        conn.execute("COMMIT")

    ids = {**_rows(path, "sites"), **_rows(path, "visits")}
    assert (ids["braces"], ids["bare"]) == (str(spelled), str(bare))
    for name in ("qgis", "ogr2ogr", "n"):
        assert str(UUID(ids[name])) == ids[name], name
    assert len(set(ids.values())) == len(ids)
    changes = replica.pending()
    assert [c.kind for c in changes] == [SyncChangeKind.INSERT] * 5
    assert [str(c.global_id) for c in changes] == [
        ids[n] for n in ("qgis", "ogr2ogr", "braces", "bare", "n")
    ]
    assert [e.global_id for e in replica.outbox()] == [c.global_id for c in changes]
    with closing(sqlite3.connect(path)) as conn:
        recorded = conn.execute("SELECT globalid FROM offmaps_sync_rows ORDER BY rowid").fetchall()
        (version,) = conn.execute("SELECT row_version FROM visits WHERE note = 'n'").fetchone()
    assert [r[0] for r in recorded] == [str(c.global_id) for c in changes]
    assert version == 1


def test_an_older_replicas_rows_without_a_uuid_get_one_when_opened(path: Path) -> None:
    with LocalReplica.open(path, replica_id=REPLICA, generation=7):
        pass
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        _register_functions(conn)
        # the insert trigger of an older replica: it kept the global id written
        conn.execute('DROP TRIGGER "offmaps_sync_sites_insert"')
        conn.execute(
            'CREATE TRIGGER "offmaps_sync_sites_insert" AFTER INSERT ON "sites" BEGIN '
            "INSERT INTO offmaps_outbox (change_id, layer, globalid, kind, new, at_ms) VALUES "
            "(lower(hex(randomblob(16))), 'sites', NEW.globalid, 'insert', "
            "json_object('name', NEW.name), 0); END"
        )
        for name in ("kept", "rejected"):
            conn.execute(
                "INSERT INTO sites (globalid, name) VALUES (?, ?)",
                (f"{SQL_DEFAULT_TEXT} {name}", name),
            )
        conn.execute(
            "UPDATE offmaps_outbox SET status = 'rejected', reason = 'unreadable: not a UUID' "
            "WHERE json_extract(new, '$.name') = 'rejected'"
        )

    with LocalReplica.open(path, replica_id=REPLICA, generation=7) as reopened:
        changes = reopened.pending()
        ids = _rows(path, "sites")
        assert [(c.kind, str(c.global_id)) for c in changes] == [
            (SyncChangeKind.INSERT, ids["kept"]),
            (SyncChangeKind.INSERT, ids["rejected"]),
        ]
        assert reopened.status_counts()[ChangeStatus.REJECTED] == 0
    with closing(sqlite3.connect(path)) as conn:  # rows with a UUID keep it
        kept = conn.execute("SELECT globalid FROM sites WHERE name = 'well' ORDER BY fid")
        assert [r[0] for r in kept.fetchall()] == [str(A), str(B)]
