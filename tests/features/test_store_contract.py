"""The feature store contract: every backend (GeoPackage, PostGIS) passes these same tests."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box

from offmaps.errors import (
    AttachmentNotFoundError,
    FeatureNotFoundError,
    InvalidFeatureError,
    InvalidFilterError,
    InvalidLayerSchemaError,
    LayerExistsError,
    LayerNotFoundError,
    VersionConflictError,
)
from offmaps.features import FieldType
from offmaps.features.model import (
    ChangeKind,
    Delete,
    Edit,
    Feature,
    FeatureQuery,
    Field,
    GeometryType,
    Insert,
    LayerSchema,
    Relationship,
    Update,
)
from offmaps.features.store import MAX_PAGE_SIZE, FeatureStore
from offmaps.features.wire import wire_to_edit_values
from offmaps.types import BBox

SHA = "ab" * 32

HYDRANTS = LayerSchema(
    "hydrants",
    (
        Field("name", FieldType.TEXT, max_length=20),
        Field("pressure", FieldType.REAL),
        Field("count", FieldType.INTEGER),
        Field("working", FieldType.BOOLEAN),
        Field("installed", FieldType.DATE),
        Field("checked_at", FieldType.DATETIME),
        Field("zone", FieldType.TEXT, nullable=False),
    ),
    GeometryType.POINT,
    title="Fire hydrants",
)
INSPECTIONS = LayerSchema(
    "inspections",
    (Field("hydrant_name", FieldType.TEXT), Field("result", FieldType.TEXT)),
)


def insert(store: FeatureStore, **properties: object) -> Feature:
    props = {"zone": "north", **properties}
    geometry = props.pop("geometry", Point(24.9, 60.2))
    (feature,) = store.apply_edits([Insert("hydrants", props, geometry)])  # type: ignore[arg-type]
    assert feature is not None
    return feature


@pytest.fixture
def hydrants(store: FeatureStore) -> FeatureStore:
    store.create_layer(HYDRANTS)
    return store


# --- schema -------------------------------------------------------------------------------


def test_new_store_is_empty(store: FeatureStore) -> None:
    assert store.list_layers() == ()
    assert store.list_relationships() == ()
    assert store.generation() == 0
    assert list(store.iter_changes()) == []


def test_layers_keep_their_schema_and_order(store: FeatureStore) -> None:
    store.create_layer(HYDRANTS)
    store.create_layer(INSPECTIONS)
    assert store.list_layers() == (HYDRANTS, INSPECTIONS)
    assert store.get_layer("hydrants") == HYDRANTS
    assert store.get_layer("inspections").is_table


def test_create_layer_twice_fails(hydrants: FeatureStore) -> None:
    with pytest.raises(LayerExistsError):
        hydrants.create_layer(HYDRANTS)
    with pytest.raises(LayerExistsError):
        hydrants.create_layer(LayerSchema("HYDRANTS", ()))


@pytest.mark.parametrize(
    "schema",
    [
        LayerSchema("1bad", ()),
        LayerSchema("bad name", ()),
        LayerSchema('x"; DROP TABLE y; --', ()),
        LayerSchema("a" * 64, ()),
        LayerSchema("gpkg_contents", ()),
        LayerSchema("ok", (Field("fid", FieldType.TEXT),)),
        LayerSchema("ok", (Field("GlobalID", FieldType.TEXT),)),
        LayerSchema("ok", (Field("a", FieldType.TEXT), Field("A", FieldType.INTEGER))),
        LayerSchema("ok", (Field("n", FieldType.INTEGER, max_length=3),)),
        LayerSchema("ok", (), GeometryType.POINT, srid=0),
    ],
)
def test_bad_schemas_are_refused(store: FeatureStore, schema: LayerSchema) -> None:
    with pytest.raises(InvalidLayerSchemaError):
        store.create_layer(schema)
    assert store.list_layers() == ()


def test_unknown_crs_is_refused(store: FeatureStore) -> None:
    with pytest.raises(InvalidLayerSchemaError):
        store.create_layer(LayerSchema("ok", (), GeometryType.POINT, srid=999_999))
    assert store.list_layers() == ()


def test_unknown_layer(store: FeatureStore) -> None:
    with pytest.raises(LayerNotFoundError):
        store.get_layer("nope")
    with pytest.raises(LayerNotFoundError):
        store.query("nope", FeatureQuery())
    with pytest.raises(LayerNotFoundError):
        store.apply_edits([Insert("nope", {})])
    with pytest.raises(LayerNotFoundError):
        store.drop_layer("nope")


def test_drop_layer_removes_rows_relationships_and_journal(hydrants: FeatureStore) -> None:
    hydrants.create_layer(INSPECTIONS)
    hydrants.add_relationship(
        Relationship("checks", "hydrants", "name", "inspections", "hydrant_name")
    )
    insert(hydrants)
    hydrants.drop_layer("hydrants")
    assert [s.name for s in hydrants.list_layers()] == ["inspections"]
    assert hydrants.list_relationships() == ()
    assert list(hydrants.iter_changes()) == []
    hydrants.create_layer(HYDRANTS)
    assert hydrants.query("hydrants", FeatureQuery()).number_matched == 0


def test_relationships(hydrants: FeatureStore) -> None:
    hydrants.create_layer(INSPECTIONS)
    rel = Relationship("checks", "hydrants", "name", "inspections", "hydrant_name")
    hydrants.add_relationship(rel)
    assert hydrants.list_relationships() == (rel,)
    with pytest.raises(InvalidLayerSchemaError):
        hydrants.add_relationship(rel)
    with pytest.raises(InvalidLayerSchemaError):
        hydrants.add_relationship(Relationship("x", "hydrants", "nope", "inspections", "result"))
    with pytest.raises(InvalidLayerSchemaError):
        hydrants.add_relationship(Relationship("y", "nope", "name", "inspections", "result"))


def test_add_field_adds_a_nullable_column(hydrants: FeatureStore) -> None:
    before = insert(hydrants, name="H1")
    generation = hydrants.generation()
    colour = Field("colour", FieldType.TEXT, alias="Colour", max_length=10)
    hydrants.add_field("hydrants", colour)
    schema = hydrants.get_layer("hydrants")
    assert schema.fields == (*HYDRANTS.fields, colour)
    assert hydrants.list_layers() == (schema,)
    assert hydrants.generation() == generation
    assert list(hydrants.iter_changes(since=generation)) == []
    stored = hydrants.get_feature("hydrants", before.global_id)
    assert stored.properties == {**before.properties, "colour": None}
    after = insert(hydrants, colour="red")
    assert hydrants.get_feature("hydrants", after.global_id).properties["colour"] == "red"
    with pytest.raises(InvalidFeatureError):
        insert(hydrants, colour="x" * 11)
    page = hydrants.query("hydrants", FeatureQuery(filters=("colour = 'red'",)))
    assert [f.global_id for f in page.features] == [after.global_id]


def test_add_field_to_a_table_survives_reopening(store: FeatureStore) -> None:
    store.create_layer(INSPECTIONS)
    store.add_field("inspections", Field("score", FieldType.INTEGER))
    (row,) = store.apply_edits([Insert("inspections", {"score": 3})])
    assert row is not None
    again: FeatureStore = getattr(store, "reopen")()  # noqa: B009 - every backend has reopen()
    try:
        assert again.get_layer("inspections").fields[-1] == Field("score", FieldType.INTEGER)
        assert again.get_feature("inspections", row.global_id).properties["score"] == 3
    finally:
        again.close()


@pytest.mark.parametrize(
    "field",
    [
        Field("depth", FieldType.REAL, nullable=False),
        Field("NAME", FieldType.TEXT),
        Field("zone", FieldType.INTEGER),
        Field("GlobalId", FieldType.TEXT),
        Field("geom", FieldType.TEXT),
        Field("row_version", FieldType.INTEGER),
        Field("1st", FieldType.TEXT),
        Field("a b", FieldType.TEXT),
        Field("n", FieldType.INTEGER, max_length=3),
    ],
)
def test_add_field_refuses_bad_fields(hydrants: FeatureStore, field: Field) -> None:
    with pytest.raises(InvalidLayerSchemaError):
        hydrants.add_field("hydrants", field)
    assert hydrants.get_layer("hydrants") == HYDRANTS
    insert(hydrants)  # the layer works as before


def test_add_field_to_an_unknown_layer(store: FeatureStore) -> None:
    with pytest.raises(LayerNotFoundError):
        store.add_field("nope", Field("a", FieldType.TEXT))


# --- rows ---------------------------------------------------------------------------------


def test_insert_and_read_back_every_type(hydrants: FeatureStore) -> None:
    checked = datetime(2026, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    feature = insert(
        hydrants,
        name="H1",
        pressure=4.5,
        count=3,
        working=True,
        installed=date(2001, 2, 3),
        checked_at=checked,
    )
    assert feature.version == 1
    stored = hydrants.get_feature("hydrants", feature.global_id)
    assert stored == feature
    assert stored.properties == {
        "name": "H1",
        "pressure": 4.5,
        "count": 3,
        "working": True,
        "installed": date(2001, 2, 3),
        "checked_at": checked,
        "zone": "north",
    }
    assert isinstance(stored.properties["working"], bool)
    assert stored.geometry is not None
    assert stored.geometry.equals(Point(24.9, 60.2))


def test_missing_fields_are_null_and_strings_parse(hydrants: FeatureStore) -> None:
    feature = insert(hydrants, installed="2020-01-02", checked_at="2020-01-02T03:04:05+02:00")
    stored = hydrants.get_feature("hydrants", feature.global_id)
    assert stored.properties["name"] is None
    assert stored.properties["installed"] == date(2020, 1, 2)
    assert stored.properties["checked_at"] == datetime(2020, 1, 2, 1, 4, 5, tzinfo=UTC)


def test_datetimes_keep_milliseconds_and_the_edit_result_matches_the_store(
    hydrants: FeatureStore,
) -> None:
    feature = insert(hydrants, checked_at=datetime(2026, 5, 1, 12, 30, 15, 123_456, tzinfo=UTC))
    expected = datetime(2026, 5, 1, 12, 30, 15, 123_000, tzinfo=UTC)
    assert feature.properties["checked_at"] == expected
    assert hydrants.get_feature("hydrants", feature.global_id) == feature


def test_naive_and_offset_datetimes_are_stored_in_utc(hydrants: FeatureStore) -> None:
    local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    feature = insert(hydrants, checked_at=local)
    stored = hydrants.get_feature("hydrants", feature.global_id).properties["checked_at"]
    assert stored == local
    assert isinstance(stored, datetime)
    assert stored.utcoffset() == timedelta(0)


def test_given_global_id_is_kept_and_must_be_unique(hydrants: FeatureStore) -> None:
    gid = uuid.uuid4()
    hydrants.apply_edits([Insert("hydrants", {"zone": "a"}, Point(0, 0), global_id=gid)])
    assert hydrants.get_feature("hydrants", gid).global_id == gid
    with pytest.raises(InvalidFeatureError):
        hydrants.apply_edits([Insert("hydrants", {"zone": "b"}, Point(0, 0), global_id=gid)])


@pytest.mark.parametrize("read_back", [True, False])
def test_a_row_brought_back_goes_on_from_the_version_it_was_deleted_at(
    hydrants: FeatureStore, read_back: bool
) -> None:
    """An insert may give its row a version (sync brings a deleted row back under its global
    id at the version after the one it was deleted at); the journal says the same."""
    feature = insert(hydrants)
    gid = feature.global_id
    hydrants.apply_edits([Update("hydrants", gid, {"count": 1})])
    hydrants.apply_edits([Delete("hydrants", gid)])
    back = Insert("hydrants", {"zone": "b"}, Point(0, 0), global_id=gid, version=3)
    hydrants.apply_edits([back], read_back=read_back)
    assert hydrants.get_feature("hydrants", gid).version == 3
    entry = hydrants.last_change("hydrants", gid)
    assert entry is not None
    assert (entry.kind, entry.version) == (ChangeKind.INSERT, 3)
    for version in (0, -1, True, 2.0):
        bad = Insert("hydrants", {"zone": "c"}, None, version=version)  # type: ignore[arg-type]
        with pytest.raises(InvalidFeatureError):
            hydrants.apply_edits([bad], read_back=read_back)


def test_edits_without_read_back_end_as_edits_read_back(hydrants: FeatureStore) -> None:
    """``read_back=False`` (how sync writes: inserts, checked updates and deletes at their
    base versions, several per row) leaves the rows and journal as edits one by one do."""
    rows = [insert(hydrants, name=f"h{i}", count=i) for i in range(6)]
    new = uuid.uuid4()
    edits: list[Edit] = [
        Update("hydrants", rows[0].global_id, {"name": "a"}, base_version=1, checked=True),
        Insert("hydrants", {"zone": "x", "name": "new"}, Point(1, 1), new),
        Update("hydrants", rows[0].global_id, {"count": 7}, Point(2, 2), True, 2, checked=True),
        Delete("hydrants", rows[1].global_id, 1),
        Update("hydrants", new, {"name": "newer"}, base_version=1, checked=True),
        Delete("hydrants", new, 2),
        Update("hydrants", rows[2].global_id, {"name": None}, base_version=1, checked=True),
    ]
    generation = hydrants.generation()
    assert hydrants.apply_edits(edits, read_back=False) == ()
    first = hydrants.get_feature("hydrants", rows[0].global_id)
    assert (first.version, first.properties["name"], first.properties["count"]) == (3, "a", 7)
    assert first.geometry is not None
    assert first.geometry.equals(Point(2, 2))
    assert hydrants.get_feature("hydrants", rows[2].global_id).properties["name"] is None
    for gone in (rows[1].global_id, new):
        with pytest.raises(FeatureNotFoundError):
            hydrants.get_feature("hydrants", gone)
    moved = hydrants.query("hydrants", FeatureQuery(bbox=BBox(1.9, 1.9, 2.1, 2.1)))
    assert moved.number_matched == 1
    journal = [(e.kind, e.global_id, e.version) for e in hydrants.iter_changes(generation)]
    assert journal == [
        (ChangeKind.UPDATE, rows[0].global_id, 2),
        (ChangeKind.INSERT, new, 1),
        (ChangeKind.UPDATE, rows[0].global_id, 3),
        (ChangeKind.DELETE, rows[1].global_id, 1),
        (ChangeKind.UPDATE, new, 2),
        (ChangeKind.DELETE, new, 2),
        (ChangeKind.UPDATE, rows[2].global_id, 2),
    ]
    assert hydrants.row_versions(
        "hydrants", [rows[0].global_id, rows[1].global_id, rows[3].global_id]
    ) == {str(rows[0].global_id): 3, str(rows[3].global_id): 1}


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (Update("hydrants", uuid.uuid4(), {"name": "x"}, base_version=1, checked=True),
         FeatureNotFoundError),
        (Delete("hydrants", uuid.uuid4(), 1), FeatureNotFoundError),
        ("stale update", VersionConflictError),
        ("stale delete", VersionConflictError),
        ("taken id", InvalidFeatureError),
    ],
)  # fmt: skip
def test_a_bad_edit_without_read_back_applies_nothing(
    hydrants: FeatureStore, bad: Edit | str, error: type[Exception]
) -> None:
    row = insert(hydrants, name="a")
    other = insert(hydrants, name="b")
    if bad == "stale update":
        bad = Update("hydrants", row.global_id, {"name": "x"}, base_version=5, checked=True)
    elif bad == "stale delete":
        bad = Delete("hydrants", row.global_id, 5)
    elif bad == "taken id":
        bad = Insert("hydrants", {"zone": "x"}, Point(0, 0), other.global_id)
    assert not isinstance(bad, str)
    generation = hydrants.generation()
    good = Update("hydrants", other.global_id, {"name": "z"}, base_version=1, checked=True)
    with pytest.raises(error):
        hydrants.apply_edits([good, bad], read_back=False)
    assert hydrants.generation() == generation
    assert hydrants.get_feature("hydrants", other.global_id).properties["name"] == "b"


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"zone": "n", "nope": 1}, "nope"),
        ({"zone": "n", "count": "three"}, "count"),
        ({"zone": "n", "count": True}, "count"),
        ({"zone": "n", "count": 2**63}, "count"),
        ({"zone": "n", "pressure": float("nan")}, "pressure"),
        ({"zone": "n", "working": 1}, "working"),
        ({"zone": "n", "name": "x" * 21}, "name"),
        ({"zone": "n", "installed": "yesterday"}, "installed"),
        ({"zone": "n", "checked_at": "not a time"}, "checked_at"),
        ({"zone": None}, "zone"),
        ({}, "zone"),
    ],
)
def test_bad_values_are_refused(
    hydrants: FeatureStore, properties: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidFeatureError) as caught:
        hydrants.apply_edits([Insert("hydrants", properties, Point(0, 0))])
    assert caught.value.field == field
    assert hydrants.query("hydrants", FeatureQuery()).number_matched == 0
    assert hydrants.generation() == 0


@pytest.mark.parametrize(
    "geometry",
    [
        LineString([(0, 0), (1, 1)]),
        Point(),
        Point(float("inf"), 0),
        MultiPoint([(0, 0), (1, 1)]),
    ],
)
def test_bad_geometries_are_refused(hydrants: FeatureStore, geometry: object) -> None:
    with pytest.raises(InvalidFeatureError):
        hydrants.apply_edits([Insert("hydrants", {"zone": "n"}, geometry)])  # type: ignore[arg-type]


def test_geometry_on_a_table_is_refused(store: FeatureStore) -> None:
    store.create_layer(INSPECTIONS)
    with pytest.raises(InvalidFeatureError):
        store.apply_edits([Insert("inspections", {}, Point(0, 0))])


def test_single_parts_are_promoted_and_z_dropped(store: FeatureStore) -> None:
    store.create_layer(LayerSchema("wells", (), GeometryType.MULTIPOINT))
    (feature,) = store.apply_edits([Insert("wells", {}, Point(1, 2, 3))])
    assert feature is not None
    stored = store.get_feature("wells", feature.global_id).geometry
    assert stored is not None
    assert stored.geom_type == "MultiPoint"
    assert not stored.has_z


def test_polygons_and_lines_round_trip(store: FeatureStore) -> None:
    store.create_layer(LayerSchema("parcels", (), GeometryType.POLYGON, srid=3067))
    hole = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (3, 2), (3, 3)]])
    (feature,) = store.apply_edits([Insert("parcels", {}, hole)])
    assert feature is not None
    stored = store.get_feature("parcels", feature.global_id).geometry
    assert stored is not None
    assert stored.equals(hole)
    assert store.extent("parcels") == (0.0, 0.0, 10.0, 10.0)


def test_null_geometry(hydrants: FeatureStore) -> None:
    (feature,) = hydrants.apply_edits([Insert("hydrants", {"zone": "n"}, None)])
    assert feature is not None
    assert hydrants.get_feature("hydrants", feature.global_id).geometry is None
    assert hydrants.extent("hydrants") is None


def test_update_merges_and_bumps_version(hydrants: FeatureStore) -> None:
    feature = insert(hydrants, name="H1", count=1)
    (updated,) = hydrants.apply_edits(
        [Update("hydrants", feature.global_id, {"count": 2}, base_version=1)]
    )
    assert updated is not None
    assert updated.version == 2
    assert updated.properties["name"] == "H1"
    assert updated.properties["count"] == 2
    assert updated.geometry is not None
    assert updated.geometry.equals(Point(24.9, 60.2))
    assert hydrants.get_feature("hydrants", feature.global_id) == updated


def test_update_geometry_and_replace(hydrants: FeatureStore) -> None:
    feature = insert(hydrants, name="H1", count=1)
    hydrants.apply_edits(
        [Update("hydrants", feature.global_id, geometry=Point(1, 1), set_geometry=True)]
    )
    moved = hydrants.get_feature("hydrants", feature.global_id)
    assert moved.geometry is not None
    assert moved.geometry.equals(Point(1, 1))
    hydrants.apply_edits(
        [Update("hydrants", feature.global_id, {"zone": "south"}, Point(2, 2), replace=True)]
    )
    replaced = hydrants.get_feature("hydrants", feature.global_id)
    assert replaced.properties["name"] is None
    assert replaced.properties["count"] is None
    assert replaced.properties["zone"] == "south"
    assert replaced.version == 3
    with pytest.raises(InvalidFeatureError):
        hydrants.apply_edits([Update("hydrants", feature.global_id, {}, replace=True)])


def test_stale_edits_conflict(hydrants: FeatureStore) -> None:
    feature = insert(hydrants)
    hydrants.apply_edits([Update("hydrants", feature.global_id, {"count": 2})])
    with pytest.raises(VersionConflictError) as caught:
        hydrants.apply_edits([Update("hydrants", feature.global_id, {"count": 3}, base_version=1)])
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    with pytest.raises(VersionConflictError):
        hydrants.apply_edits([Delete("hydrants", feature.global_id, base_version=1)])
    assert hydrants.get_feature("hydrants", feature.global_id).properties["count"] == 2


def test_delete(hydrants: FeatureStore) -> None:
    feature = insert(hydrants)
    assert hydrants.apply_edits([Delete("hydrants", feature.global_id)]) == (None,)
    with pytest.raises(FeatureNotFoundError):
        hydrants.get_feature("hydrants", feature.global_id)
    with pytest.raises(FeatureNotFoundError):
        hydrants.apply_edits([Delete("hydrants", feature.global_id)])
    with pytest.raises(FeatureNotFoundError):
        hydrants.apply_edits([Update("hydrants", uuid.uuid4(), {"count": 1})])


def test_edits_are_atomic(hydrants: FeatureStore) -> None:
    feature = insert(hydrants, count=1)
    generation = hydrants.generation()
    with pytest.raises(InvalidFeatureError):
        hydrants.apply_edits(
            [
                Update("hydrants", feature.global_id, {"count": 5}),
                Insert("hydrants", {"zone": "x"}, Point(0, 0)),
                Insert("hydrants", {"zone": "x", "count": "bad"}, Point(0, 0)),
            ]
        )
    assert hydrants.generation() == generation
    assert hydrants.query("hydrants", FeatureQuery()).number_matched == 1
    assert hydrants.get_feature("hydrants", feature.global_id).properties["count"] == 1
    assert len(list(hydrants.iter_changes())) == 1


def test_edits_of_one_call_see_each_other(hydrants: FeatureStore) -> None:
    gid = uuid.uuid4()
    results = hydrants.apply_edits(
        [
            Insert("hydrants", {"zone": "a"}, Point(0, 0), global_id=gid),
            Update("hydrants", gid, {"count": 7}, base_version=1),
        ]
    )
    assert [r.version for r in results if r is not None] == [1, 2]
    assert hydrants.get_feature("hydrants", gid).properties["count"] == 7


# --- queries ------------------------------------------------------------------------------


@pytest.fixture
def grid(hydrants: FeatureStore) -> FeatureStore:
    edits = [
        Insert(
            "hydrants",
            {"zone": "east" if x >= 5 else "west", "count": x * 10 + y, "name": f"H{x}{y}"},
            Point(x, y),
        )
        for x in range(10)
        for y in range(10)
    ]
    hydrants.apply_edits(edits)
    return hydrants


def test_pages_are_stable_and_counted(grid: FeatureStore) -> None:
    first = grid.query("hydrants", FeatureQuery(limit=30))
    second = grid.query("hydrants", FeatureQuery(limit=30, offset=30))
    assert first.number_matched == 100
    assert len(first.features) == len(second.features) == 30
    counts = [f.properties["count"] for f in first.features + second.features]
    assert counts == list(range(60))
    assert grid.query("hydrants", FeatureQuery(limit=0)).features == ()
    assert grid.query("hydrants", FeatureQuery(offset=500)).features == ()


def test_bbox_filter_and_ids(grid: FeatureStore) -> None:
    page = grid.query("hydrants", FeatureQuery(bbox=BBox(1.5, 1.5, 3.5, 2.5), limit=100))
    assert sorted(str(f.properties["name"]) for f in page.features) == ["H22", "H32"]
    page = grid.query("hydrants", FeatureQuery(filters=("zone = 'east'", "count < 60"), limit=100))
    assert page.number_matched == 10
    assert all(f.properties["zone"] == "east" for f in page.features)
    ids = tuple(f.global_id for f in page.features[:3])
    by_id = grid.query("hydrants", FeatureQuery(global_ids=ids, limit=100))
    assert {f.global_id for f in by_id.features} == set(ids)
    assert grid.query("hydrants", FeatureQuery(global_ids=())).number_matched == 0
    combined = FeatureQuery(bbox=BBox(0, 0, 9, 0.5), filters=("count >= 50",), limit=100)
    assert grid.query("hydrants", combined).number_matched == 5


def test_filter_values_are_bound_not_spliced(grid: FeatureStore) -> None:
    hostile = "name = 'x'' OR 1=1 --'"
    with pytest.raises(InvalidFilterError):
        grid.query("hydrants", FeatureQuery(filters=(hostile,)))
    page = grid.query("hydrants", FeatureQuery(filters=("name = 'x\" OR 1=1 --'",)))
    assert page.number_matched == 0
    with pytest.raises(InvalidFilterError):
        grid.query("hydrants", FeatureQuery(filters=("nope = 1",)))
    assert grid.query("hydrants", FeatureQuery()).number_matched == 100


def test_bad_page_sizes_are_refused(grid: FeatureStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        grid.query("hydrants", FeatureQuery(limit=MAX_PAGE_SIZE + 1))
    with pytest.raises(ValueError, match="limit"):
        grid.query("hydrants", FeatureQuery(offset=-1))


def test_iter_features_streams_everything(grid: FeatureStore) -> None:
    every = list(grid.iter_features("hydrants"))
    assert len(every) == 100
    west = list(grid.iter_features("hydrants", FeatureQuery(filters=("zone = 'west'",), limit=1)))
    assert len(west) == 50


def test_iter_features_beyond_one_batch(hydrants: FeatureStore) -> None:
    hydrants.apply_edits([Insert("hydrants", {"zone": "z", "count": i}) for i in range(1234)])
    counts = [f.properties["count"] for f in hydrants.iter_features("hydrants")]
    assert counts == list(range(1234))


def test_extent(grid: FeatureStore) -> None:
    assert grid.extent("hydrants") == (0.0, 0.0, 9.0, 9.0)


# --- journal ------------------------------------------------------------------------------


def test_journal_records_every_change_with_generations(hydrants: FeatureStore) -> None:
    a = insert(hydrants)
    b = insert(hydrants)
    hydrants.apply_edits(
        [Update("hydrants", a.global_id, {"count": 1}), Delete("hydrants", b.global_id)]
    )
    assert hydrants.generation() == 3
    changes = list(hydrants.iter_changes())
    assert [(c.generation, c.global_id, c.kind, c.version) for c in changes] == [
        (1, a.global_id, ChangeKind.INSERT, 1),
        (2, b.global_id, ChangeKind.INSERT, 1),
        (3, a.global_id, ChangeKind.UPDATE, 2),
        (3, b.global_id, ChangeKind.DELETE, 1),
    ]
    assert all(c.changed_at.tzinfo is not None for c in changes)
    assert [c.generation for c in hydrants.iter_changes(since=2)] == [3, 3]
    assert list(hydrants.iter_changes(since=3)) == []
    assert list(hydrants.iter_changes(layers=["inspections"])) == []
    assert hydrants.apply_edits([]) == ()
    assert hydrants.generation() == 3


def test_iter_changes_of_some_layers(hydrants: FeatureStore) -> None:
    hydrants.create_layer(INSPECTIONS)
    a = insert(hydrants)
    (note,) = hydrants.apply_edits([Insert("inspections", {"result": "ok"})])
    assert note is not None
    b = insert(hydrants)
    assert [c.global_id for c in hydrants.iter_changes(layers=["hydrants"])] == [
        a.global_id,
        b.global_id,
    ]
    assert [c.global_id for c in hydrants.iter_changes(layers=["inspections", "nope"])] == [
        note.global_id
    ]
    assert list(hydrants.iter_changes(layers=[])) == []


def test_last_change_is_the_newest_row_change(hydrants: FeatureStore) -> None:
    feature = insert(hydrants)
    entry = hydrants.last_change("hydrants", feature.global_id)
    assert entry is not None
    assert (entry.generation, entry.layer, entry.global_id, entry.kind, entry.version) == (
        1,
        "hydrants",
        feature.global_id,
        ChangeKind.INSERT,
        1,
    )
    assert entry.attachment_id is None
    hydrants.apply_edits([Update("hydrants", feature.global_id, {"count": 1})])
    hydrants.apply_edits([Update("hydrants", feature.global_id, {"count": 2})])
    entry = hydrants.last_change("hydrants", feature.global_id)
    assert entry is not None
    assert (entry.generation, entry.kind, entry.version) == (3, ChangeKind.UPDATE, 3)
    assert entry == list(hydrants.iter_changes())[-1]


def test_last_change_of_a_deleted_row_is_its_delete(hydrants: FeatureStore) -> None:
    feature = insert(hydrants)
    hydrants.apply_edits([Update("hydrants", feature.global_id, {"count": 1})])
    hydrants.apply_edits([Delete("hydrants", feature.global_id)])
    entry = hydrants.last_change("hydrants", feature.global_id)
    assert entry is not None
    assert (entry.generation, entry.kind, entry.version) == (3, ChangeKind.DELETE, 2)


def test_last_change_ignores_attachments_and_other_rows(hydrants: FeatureStore) -> None:
    feature = insert(hydrants)
    other = insert(hydrants)
    hydrants.add_attachment(
        "hydrants", feature.global_id, name="a.jpg", content_type="image/jpeg", size=3, sha256=SHA
    )
    entry = hydrants.last_change("hydrants", feature.global_id)
    assert entry is not None
    assert (entry.generation, entry.kind) == (1, ChangeKind.INSERT)
    other_entry = hydrants.last_change("hydrants", other.global_id)
    assert other_entry is not None
    assert other_entry.generation == 2


def test_last_change_of_an_unknown_row_is_none(hydrants: FeatureStore) -> None:
    assert hydrants.last_change("hydrants", uuid.uuid4()) is None
    hydrants.create_layer(INSPECTIONS)
    feature = insert(hydrants)
    assert hydrants.last_change("inspections", feature.global_id) is None
    with pytest.raises(LayerNotFoundError):
        hydrants.last_change("nope", feature.global_id)


def test_concurrent_writers_get_distinct_generations(hydrants: FeatureStore) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                insert(hydrants)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    generations = [c.generation for c in hydrants.iter_changes()]
    assert sorted(generations) == list(range(1, 41))
    assert hydrants.generation() == 40


# --- attachments --------------------------------------------------------------------------


def test_attachments(hydrants: FeatureStore) -> None:
    feature = insert(hydrants)
    first = hydrants.add_attachment(
        "hydrants", feature.global_id, name="a.jpg", content_type="image/jpeg", size=3, sha256=SHA
    )
    second = hydrants.add_attachment(
        "hydrants",
        feature.global_id,
        name="b.pdf",
        content_type="application/pdf",
        size=0,
        sha256="cd" * 32,
    )
    assert hydrants.list_attachments("hydrants", feature.global_id) == (first, second)
    assert hydrants.get_attachment("hydrants", first.attachment_id) == first
    hydrants.delete_attachment("hydrants", first.attachment_id)
    assert hydrants.list_attachments("hydrants", feature.global_id) == (second,)
    with pytest.raises(AttachmentNotFoundError):
        hydrants.get_attachment("hydrants", first.attachment_id)
    with pytest.raises(AttachmentNotFoundError):
        hydrants.delete_attachment("hydrants", first.attachment_id)
    kinds = [c.kind for c in hydrants.iter_changes()]
    assert kinds == [
        ChangeKind.INSERT,
        ChangeKind.ATTACHMENT_ADD,
        ChangeKind.ATTACHMENT_ADD,
        ChangeKind.ATTACHMENT_DELETE,
    ]
    last = list(hydrants.iter_changes())[-1]
    assert last.attachment_id == first.attachment_id
    hydrants.apply_edits([Delete("hydrants", feature.global_id)])
    with pytest.raises(AttachmentNotFoundError):
        hydrants.get_attachment("hydrants", second.attachment_id)


def test_ids_that_are_not_uuids_are_refused_or_found_nowhere(hydrants: FeatureStore) -> None:
    feature = insert(hydrants)
    attachment = hydrants.add_attachment(
        "hydrants", feature.global_id, name="a.jpg", content_type="image/jpeg", size=3, sha256=SHA
    )
    as_text = str(attachment.attachment_id)
    with pytest.raises(AttachmentNotFoundError):
        hydrants.get_attachment("hydrants", as_text)  # type: ignore[arg-type]
    assert hydrants.last_change("hydrants", str(feature.global_id)) is None  # type: ignore[arg-type]
    with pytest.raises(InvalidFeatureError, match="UUID"):
        hydrants.add_attachment(
            "hydrants",
            feature.global_id,
            name="b.jpg",
            content_type="image/jpeg",
            size=3,
            sha256=SHA,
            attachment_id=str(uuid.uuid4()),  # type: ignore[arg-type]
        )
    assert hydrants.list_attachments("hydrants", feature.global_id) == (attachment,)


@pytest.mark.parametrize(
    ("name", "content_type", "size", "sha256"),
    [
        ("", "image/jpeg", 1, SHA),
        ("../etc/passwd", "image/jpeg", 1, SHA),
        ("a.jpg", "jpeg", 1, SHA),
        ("a.jpg", "image/jpeg", -1, SHA),
        ("a.jpg", "image/jpeg", 1, "xyz"),
        ("a.jpg", "image/jpeg", 1, "AB" * 32),
    ],
)
def test_bad_attachments_are_refused(
    hydrants: FeatureStore, name: str, content_type: str, size: int, sha256: str
) -> None:
    feature = insert(hydrants)
    with pytest.raises(InvalidFeatureError):
        hydrants.add_attachment(
            "hydrants",
            feature.global_id,
            name=name,
            content_type=content_type,
            size=size,
            sha256=sha256,
        )
    assert hydrants.list_attachments("hydrants", feature.global_id) == ()


def test_attachments_of_missing_rows(hydrants: FeatureStore) -> None:
    with pytest.raises(FeatureNotFoundError):
        hydrants.add_attachment(
            "hydrants", uuid.uuid4(), name="a", content_type="a/b", size=1, sha256=SHA
        )
    with pytest.raises(FeatureNotFoundError):
        hydrants.list_attachments("hydrants", uuid.uuid4())


def test_store_reopens_with_everything(hydrants: FeatureStore) -> None:
    reopen = getattr(hydrants, "reopen", None)
    assert reopen is not None, "every backend offers reopen() for this test"
    feature = insert(hydrants, name="kept")
    again: FeatureStore = reopen()
    try:
        assert again.list_layers() == (HYDRANTS,)
        assert again.get_feature("hydrants", feature.global_id) == feature
        assert again.generation() == 1
    finally:
        again.close()


def test_polygon_layers_index_by_envelope(store: FeatureStore) -> None:
    store.create_layer(LayerSchema("zones", (), GeometryType.POLYGON))
    store.apply_edits([Insert("zones", {}, box(0, 0, 10, 10))])
    assert store.query("zones", FeatureQuery(bbox=BBox(9, 9, 20, 20))).number_matched == 1
    assert store.query("zones", FeatureQuery(bbox=BBox(11, 11, 20, 20))).number_matched == 0


def test_checked_edits_land_as_given(hydrants: FeatureStore) -> None:
    schema = hydrants.get_layer("hydrants")
    values = {"zone": "south", "count": 3, "installed": "2024-05-06", "geom": None}
    properties, geometry, _ = wire_to_edit_values(schema, values, complete=True)
    gid = uuid.uuid4()
    hydrants.apply_edits([Insert("hydrants", properties, geometry, gid, checked=True)])
    changes, moved, _ = wire_to_edit_values(
        schema, {"count": 4, "geom": "0101000000000000000000f03f0000000000000040"}, complete=False
    )
    hydrants.apply_edits(
        [Update("hydrants", gid, changes, moved, set_geometry=True, base_version=1, checked=True)]
    )
    stored = hydrants.get_feature("hydrants", gid)
    assert (stored.version, stored.properties["count"], stored.properties["zone"]) == (
        2,
        4,
        "south",
    )
    assert stored.properties["installed"] == date(2024, 5, 6)
    assert stored.geometry == Point(1, 2)
