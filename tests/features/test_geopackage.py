"""What only the GeoPackage backend promises: a valid GeoPackage 1.2 that GDAL reads as it is."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import Point, box

from offmaps.errors import FeatureNotFoundError, FeatureStoreError, VersionConflictError
from offmaps.features import FieldType
from offmaps.features.geopackage import (
    GeoPackageStore,
    decode_geometry,
    encode_geometries,
    encode_geometry,
)
from offmaps.features.model import (
    ChangeKind,
    Delete,
    Edit,
    FeatureQuery,
    Field,
    GeometryType,
    Insert,
    LayerSchema,
    Update,
)


@pytest.fixture
def service(tmp_path: Path) -> Path:
    path = tmp_path / "service.gpkg"
    with GeoPackageStore.create(path) as store:
        store.create_layer(
            LayerSchema(
                "sites",
                (
                    Field("name", FieldType.TEXT, max_length=10),
                    Field("opened", FieldType.DATE),
                    Field("active", FieldType.BOOLEAN),
                ),
                GeometryType.POINT,
            )
        )
        store.create_layer(LayerSchema("zones", (), GeometryType.MULTIPOLYGON, srid=3067))
        store.create_layer(LayerSchema("visits", (Field("site", FieldType.INTEGER),)))
        store.apply_edits(
            [
                Insert(
                    "sites", {"name": "a", "opened": date(2020, 1, 2), "active": True}, Point(1, 2)
                ),
                Insert("zones", {}, box(0, 0, 1000, 1000)),
                Insert("visits", {"site": 1}),
            ]
        )
    return path


def test_passes_gdals_geopackage_validator(service: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "osgeo_utils.samples.validate_gpkg", str(service)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_gdal_reads_layers_tables_and_values(service: Path) -> None:
    layers = {str(name): kind for name, kind in pyogrio.list_layers(service)}
    assert layers == {"sites": "Point", "zones": "MultiPolygon", "visits": None}
    meta, _, geometry, values = pyogrio.raw.read(service, layer="sites")
    assert list(meta["fields"]) == ["globalid", "row_version", "name", "opened", "active"]
    assert shapely.from_wkb(geometry[0]).equals(Point(1, 2))
    assert values[2][0] == "a"
    assert bool(values[4][0]) is True
    info = pyogrio.read_info(service, layer="zones")
    assert "3067" in info["crs"]


def test_file_is_geopackage_1_2(service: Path) -> None:
    with sqlite3.connect(service) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 10200
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_create_refuses_an_existing_file(service: Path) -> None:
    with pytest.raises(FeatureStoreError, match="exists"):
        GeoPackageStore.create(service)


@pytest.mark.parametrize("content", [b"", b"not sqlite at all" * 100])
def test_open_refuses_what_is_not_a_store(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.gpkg"
    path.write_bytes(content)
    with pytest.raises(FeatureStoreError):
        GeoPackageStore.open(path)


def test_open_refuses_a_plain_geopackage(tmp_path: Path) -> None:
    path = tmp_path / "plain.gpkg"
    pyogrio.raw.write(
        path,
        geometry=[shapely.to_wkb(Point(0, 0))],
        field_data=[],
        fields=[],
        geometry_type="Point",
        crs="EPSG:4326",
        driver="GPKG",
    )
    with pytest.raises(FeatureStoreError, match="not an offmaps feature store"):
        GeoPackageStore.open(path)
    with pytest.raises(FeatureStoreError, match="no such file"):
        GeoPackageStore.open(tmp_path / "missing.gpkg")


def test_rtree_follows_edits_made_by_other_writers(service: Path) -> None:
    """GDAL and QGIS write through the same R-tree triggers: the store's index stays right."""
    with GeoPackageStore.open(service) as store:
        gid = store.query("sites", FeatureQuery(limit=1)).features[0].global_id
    with sqlite3.connect(service) as conn:
        conn.create_function("ST_MinX", 1, lambda b: decode_bounds(b, 0))
        conn.create_function("ST_MaxX", 1, lambda b: decode_bounds(b, 2))
        conn.create_function("ST_MinY", 1, lambda b: decode_bounds(b, 1))
        conn.create_function("ST_MaxY", 1, lambda b: decode_bounds(b, 3))
        conn.create_function("ST_IsEmpty", 1, lambda b: 0)
        conn.execute(
            "UPDATE sites SET geom = ? WHERE globalid = ?",
            (encode_geometry(Point(50, 60), 4326), str(gid)),
        )
    with GeoPackageStore.open(service) as store:
        assert store.extent("sites") == (50.0, 60.0, 50.0, 60.0)


def decode_bounds(blob: bytes, index: int) -> float:
    geometry = decode_geometry(blob)
    assert geometry is not None
    return float(geometry.bounds[index])


def test_geometries_encode_at_once_as_one_by_one() -> None:
    shapes = [Point(1, 2), None, box(0, 0, 1, 1), shapely.MultiPoint([(0, 0), (3, 4)]), None]
    assert encode_geometries(shapes, 3067) == [
        None if shape is None else encode_geometry(shape, 3067) for shape in shapes
    ]
    assert encode_geometries([], 4326) == []
    assert encode_geometries([None], 4326) == [None]


def test_geometry_blobs_round_trip() -> None:
    for geometry in (Point(1, 2), box(0, 0, 1, 1)):
        blob = encode_geometry(geometry, 4326)
        assert blob[:2] == b"GP"
        decoded = decode_geometry(blob)
        assert decoded is not None
        assert decoded.equals(geometry)
    assert decode_geometry(None) is None


def register_st_functions(conn: sqlite3.Connection) -> None:
    """The functions GDAL and QGIS bring, which the R-tree triggers call."""
    conn.create_function("ST_MinX", 1, lambda b: decode_bounds(b, 0))
    conn.create_function("ST_MaxX", 1, lambda b: decode_bounds(b, 2))
    conn.create_function("ST_MinY", 1, lambda b: decode_bounds(b, 1))
    conn.create_function("ST_MaxY", 1, lambda b: decode_bounds(b, 3))
    conn.create_function("ST_IsEmpty", 1, lambda b: 0)


def test_rows_inserted_without_a_global_id_get_a_uuid4(service: Path) -> None:
    """QGIS and sqlite3 insert rows knowing nothing of globalid and row_version."""
    conn = sqlite3.connect(service)
    try:
        register_st_functions(conn)
        with conn:
            conn.execute(
                "INSERT INTO sites (name, geom) VALUES ('raw', ?)",
                (encode_geometry(Point(5, 6), 4326),),
            )
            conn.executemany("INSERT INTO visits (site) VALUES (?)", [(n,) for n in range(50)])
        site = conn.execute("SELECT globalid FROM sites WHERE name = 'raw'").fetchone()[0]
        visits = [row[0] for row in conn.execute("SELECT globalid FROM visits WHERE site >= 0")]
    finally:
        conn.close()
    texts = [site, *visits]
    assert len(set(texts)) == len(texts)
    for text in texts:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert str(parsed) == text  # lower case, 8-4-4-4-12
    with GeoPackageStore.open(service) as store:
        feature = store.get_feature("sites", uuid.UUID(site))
        assert feature.version == 1
        assert feature.properties["name"] == "raw"
        assert feature.geometry is not None
        assert feature.geometry.equals(Point(5, 6))
        assert store.get_feature("visits", uuid.UUID(visits[0])).version == 1


def journal_indexes(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'offmaps_journal'"
            " ORDER BY name"
        ).fetchall()
    conn.close()
    return [row[0] for row in rows]


def test_the_journal_is_indexed_by_row(service: Path) -> None:
    assert "offmaps_journal_row" in journal_indexes(service)


def test_opening_an_older_store_adds_the_journal_index(service: Path) -> None:
    with sqlite3.connect(service) as conn:
        conn.execute("DROP INDEX offmaps_journal_row")
    conn.close()
    with GeoPackageStore.open(service) as store:
        (site,) = store.iter_features("sites")
        entry = store.last_change("sites", site.global_id)
        assert entry is not None
        assert entry.kind is ChangeKind.INSERT
    assert "offmaps_journal_row" in journal_indexes(service)


def test_a_read_only_older_store_opens_without_the_index(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite3.connect(service) as conn:
        conn.execute("DROP INDEX offmaps_journal_row")
    conn.close()

    def read_only(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        register_st_functions(conn)
        return conn

    monkeypatch.setattr(GeoPackageStore, "_connect", staticmethod(read_only))
    with GeoPackageStore.open(service) as store:
        (site,) = store.iter_features("sites")
        entry = store.last_change("sites", site.global_id)
        assert entry is not None
        assert entry.version == 1
    assert "offmaps_journal_row" not in journal_indexes(service)


def rtree_and_triggers(path: Path, layer: str) -> tuple[list[tuple[object, ...]], list[object]]:
    """The R-tree's entries, as (global id, bounds), and the SQL of the layer's triggers."""
    with sqlite3.connect(path) as conn:
        entries = conn.execute(
            f"SELECT t.globalid, r.minx, r.maxx, r.miny, r.maxy FROM rtree_{layer}_geom r "
            f"JOIN {layer} t ON t.fid = r.id ORDER BY t.globalid"
        ).fetchall()
        orphans = conn.execute(
            f"SELECT count(*) FROM rtree_{layer}_geom WHERE id NOT IN (SELECT fid FROM {layer})"
        ).fetchone()[0]
        triggers = [
            row[0]
            for row in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? "
                "ORDER BY name",
                (layer,),
            )
        ]
    assert orphans == 0
    return entries, triggers


def test_a_large_write_keeps_the_rtree_as_the_triggers_would(tmp_path: Path) -> None:
    """From 256 edits on, the R-tree is brought up to date once at the end of the write, with
    its triggers dropped meanwhile, whether the edits are written in order or in groups: the
    index ends as row-by-row triggers leave it, the triggers are back, and a failed write
    leaves both as they were."""
    rng = np.random.default_rng(7)
    schema = LayerSchema("sites", (Field("name", FieldType.TEXT),), GeometryType.POINT)
    gids = [uuid.uuid4() for _ in range(400)]
    first = [
        Insert("sites", {"name": f"s{i}"}, Point(*rng.uniform(0, 10, 2)), gid)
        for i, gid in enumerate(gids)
    ]
    versions = dict.fromkeys(gids, 1)
    later: list[Edit] = []

    def update(gid: uuid.UUID, properties: dict[str, object], *geometry: Point | None) -> None:
        later.append(
            Update("sites", gid, properties, geometry[0] if geometry else None, bool(geometry),
                   versions[gid], checked=True)
        )  # fmt: skip
        versions[gid] += 1

    for i, gid in enumerate(gids[:300]):
        match i % 5:
            case 0:  # moved
                update(gid, {}, Point(*rng.uniform(0, 10, 2)))
            case 1:  # renamed only
                update(gid, {"name": "renamed"})
            case 2:
                later.append(Delete("sites", gid, versions[gid]))
            case 3:  # geometry removed
                update(gid, {}, None)
            case _:  # moved twice, then deleted
                update(gid, {}, Point(1, 1))
                update(gid, {}, Point(2, 2))
                later.append(Delete("sites", gid, versions[gid]))
    fresh = uuid.uuid4()  # inserted and deleted in one write
    later += [Insert("sites", {"name": "x"}, Point(5, 5), fresh), Delete("sites", fresh, 1)]
    results: list[tuple[list[tuple[object, ...]], list[object]]] = []
    variants = (
        ("one_by_one", 1, True),
        ("in_order", len(later), True),
        ("grouped", len(later), False),
    )
    for name, size, read_back in variants:
        path = tmp_path / f"{name}.gpkg"
        with GeoPackageStore.create(path) as store:
            store.create_layer(schema)
            store.apply_edits(first)
            before = rtree_and_triggers(path, "sites")
            assert len(before[0]) == 400
            for start in range(0, len(later), size):
                store.apply_edits(later[start : start + size], read_back=read_back)
            if size > 1:  # a failing large write changes nothing, R-tree and triggers included
                after = rtree_and_triggers(path, "sites")
                failing: list[Edit] = [
                    Update("sites", gid, {}, Point(9, 9), True, 1, checked=True)
                    for gid in gids[300:]
                ]
                failing += [Insert("sites", {}, Point(8, 8)) for _ in range(200)]
                with pytest.raises(FeatureNotFoundError):
                    store.apply_edits(
                        [*failing, Delete("sites", uuid.uuid4(), 1)], read_back=read_back
                    )
                assert rtree_and_triggers(path, "sites") == after
        results.append(rtree_and_triggers(path, "sites"))
    assert results[0] == results[1] == results[2]
    assert len(results[0][0]) == 400 - 60 - 60 - 60  # deleted twice over, geometries removed
    assert len(results[2][1]) == 6  # GeoPackage's R-tree triggers
    assert results[2][1] == before[1]


def test_read_back_false_returns_nothing(service: Path) -> None:
    with GeoPackageStore.open(service) as store:
        gid = store.query("sites", FeatureQuery(limit=1)).features[0].global_id
        done = store.apply_edits(
            [Update("sites", gid, {"name": "b"}, checked=True, base_version=1)], read_back=False
        )
        assert done == ()
        feature = store.get_feature("sites", gid)
        assert (feature.version, feature.properties["name"]) == (2, "b")
        with pytest.raises(VersionConflictError):
            store.apply_edits(
                [Update("sites", gid, {"name": "c"}, checked=True, base_version=1)],
                read_back=False,
            )
