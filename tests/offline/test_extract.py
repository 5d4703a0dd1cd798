"""Extraction of replicas and tile archives, against every feature store backend."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import mercantile
import pyogrio
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import Point, Polygon, box

from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.errors import (
    BlobNotFoundError,
    DestinationExistsError,
    InvalidFeatureError,
    InvalidFilterError,
    InvalidLayerSchemaError,
    InvalidOfflineParametersError,
    JobCancelledError,
    LayerNotFoundError,
)
from offmaps.features import FieldType
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import (
    ChangeKind,
    Feature,
    FeatureQuery,
    Field,
    GeometryType,
    Insert,
    LayerSchema,
    Relationship,
    Update,
)
from offmaps.features.store import FeatureStore
from offmaps.offline.extract import (
    LayerExtract,
    ReplicaResult,
    RowFilter,
    extract_feature_service,
    extract_tiles,
)
from offmaps.storage import LocalBlobStore
from offmaps.tiling import AreaOfInterest
from offmaps.types import BBox, Tile, TileFormat, ZoomRange
from tests.features.conftest import BACKENDS, open_backend
from tests.tilegen import sample_tiles

SITES = LayerSchema(
    "sites",
    (Field("code", FieldType.TEXT, nullable=False), Field("kind", FieldType.TEXT)),
    GeometryType.POINT,
)
PARCELS = LayerSchema("parcels", (Field("label", FieldType.TEXT),), GeometryType.POLYGON, 3067)
INSPECTIONS = LayerSchema(
    "inspections", (Field("site_code", FieldType.TEXT), Field("result", FieldType.TEXT))
)
CONTACTS = LayerSchema("contacts", (Field("person", FieldType.TEXT),))
SITE_INSPECTIONS = Relationship("site_inspections", "sites", "code", "inspections", "site_code")

HELSINKI = AreaOfInterest.from_bbox(24.9, 60.1, 25.0, 60.2)
POINTS = {
    "in1": Point(24.95, 60.17),
    "in2": Point(24.91, 60.11),
    "out": Point(25.5, 60.5),
    "fiji_east": Point(179.5, -17.0),
    "fiji_west": Point(-179.5, -17.0),
    "atlantic": Point(0.0, -17.0),
}
PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
NOTE = b"checked the valve; all fine\n"


class Service:
    """A feature service with sites, parcels, inspections and contacts, and its blobs."""

    def __init__(self, store: FeatureStore, blobs: LocalBlobStore) -> None:
        self.store = store
        self.blobs = blobs
        store.create_layer(SITES)
        store.create_layer(PARCELS)
        store.create_layer(INSPECTIONS)
        store.create_layer(CONTACTS)
        store.add_relationship(SITE_INSPECTIONS)
        inserts = [Insert("sites", {"code": c, "kind": "hydrant"}, g) for c, g in POINTS.items()]
        inserts.append(Insert("sites", {"code": "nowhere", "kind": "lost"}, None))
        self.ids: dict[str, UUID] = {}
        for feature in store.apply_edits(inserts):
            assert feature is not None
            self.ids[str(feature.properties["code"])] = feature.global_id
        # versions 3 and 2: the replica must keep them
        store.apply_edits([Update("sites", self.ids["in1"], {"kind": "valve"})])
        store.apply_edits([Update("sites", self.ids["in1"], {"kind": "pump"})])
        store.apply_edits([Update("sites", self.ids["in2"], {"kind": "tap"})])
        # Helsinki and Tampere, in ETRS-TM35FIN
        store.apply_edits(
            [
                Insert("parcels", {"label": "helsinki"}, box(385000, 6672000, 386000, 6673000)),
                Insert("parcels", {"label": "tampere"}, box(327000, 6822000, 328000, 6823000)),
            ]
        )
        store.apply_edits(
            [
                Insert("inspections", {"site_code": "in1", "result": "ok"}),
                Insert("inspections", {"site_code": "in1", "result": "leak"}),
                Insert("inspections", {"site_code": "out", "result": "ok"}),
                Insert("inspections", {"site_code": "fiji_east", "result": "ok"}),
                Insert("contacts", {"person": "Aino"}),
                Insert("contacts", {"person": "Eero"}),
            ]
        )
        photo, note = blobs.put(PHOTO), blobs.put(NOTE)
        self.photo = store.add_attachment(
            "sites",
            self.ids["in1"],
            name="valve.png",
            content_type="image/png",
            size=photo.size,
            sha256=photo.sha256,
        )
        store.add_attachment(
            "sites",
            self.ids["in1"],
            name="note.txt",
            content_type="text/plain",
            size=note.size,
            sha256=note.sha256,
        )
        store.add_attachment(
            "sites",
            self.ids["out"],
            name="far.png",
            content_type="image/png",
            size=photo.size,
            sha256=photo.sha256,
        )


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    store = open_backend(request.param, tmp_path)
    try:
        yield Service(store, LocalBlobStore(tmp_path / "blobs"))
    finally:
        drop = getattr(store, "drop", None)
        if drop is not None:
            drop()
        store.close()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "package"
    folder.mkdir()
    return folder


def extract(
    service: Service,
    out: Path,
    layers: list[LayerExtract],
    area: AreaOfInterest = HELSINKI,
    **options: object,
) -> ReplicaResult:
    return extract_feature_service(
        service.store,
        out / "replica.gpkg",
        layers,
        area,
        blobs=service.blobs,
        attachment_store=LocalBlobStore(out / "attachments"),
        **options,  # type: ignore[arg-type]
    )


def rows(path: Path, layer: str) -> dict[object, Feature]:
    with GeoPackageStore.open(path) as replica:
        return {f.properties.get("code", f.global_id): f for f in replica.iter_features(layer)}


def codes(path: Path) -> set[object]:
    return set(rows(path, "sites"))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "attachments")


# --- rows in the area -------------------------------------------------------------------------


def test_replica_takes_the_rows_in_the_area(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("sites")])
    assert codes(result.path) == {"in1", "in2"}
    assert result.rows == {"sites": 2}


def test_rows_keep_global_ids_versions_and_values(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("sites")])
    copied = rows(result.path, "sites")
    for code in ("in1", "in2"):
        assert copied[code] == service.store.get_feature("sites", service.ids[code])
    assert copied["in1"].version == 3
    assert copied["in2"].version == 2


def test_generation_is_the_servers_and_rows_are_not_journaled(service: Service, out: Path) -> None:
    generation = service.store.generation()
    result = extract(service, out, [LayerExtract("sites")])
    assert result.generation == generation
    with GeoPackageStore.open(result.path) as replica:
        assert [e for e in replica.iter_changes() if e.kind is not ChangeKind.ATTACHMENT_ADD] == []


def test_polygon_area_leaves_out_rows_inside_its_bbox_only(service: Service, out: Path) -> None:
    # a triangle over the Helsinki box: in1 (24.95, 60.17) is inside, in2 (24.91, 60.11) is not
    triangle = Polygon([(24.9, 60.2), (25.0, 60.2), (25.0, 60.1)])
    assert shapely.box(*triangle.bounds).contains(POINTS["in2"])
    area = AreaOfInterest.from_geometry(triangle)
    result = extract(service, out, [LayerExtract("sites")], area)
    assert codes(result.path) == {"in1"}


def test_area_across_the_antimeridian(service: Service, out: Path) -> None:
    area = AreaOfInterest.from_bbox(170.0, -20.0, -170.0, -10.0)
    result = extract(service, out, [LayerExtract("sites")], area)
    assert codes(result.path) == {"fiji_east", "fiji_west"}


def test_area_is_brought_to_each_layers_crs(service: Service, out: Path) -> None:
    area = AreaOfInterest.from_bbox(24.5, 60.0, 25.5, 60.4)
    result = extract(service, out, [LayerExtract("sites"), LayerExtract("parcels")], area)
    assert [f.properties["label"] for f in rows(result.path, "parcels").values()] == ["helsinki"]
    assert codes(result.path) == {"in1", "in2"}


def test_area_in_a_projected_crs(service: Service, out: Path) -> None:
    area = AreaOfInterest.from_bbox(326000, 6821000, 329000, 6824000, crs="EPSG:3067")
    result = extract(service, out, [LayerExtract("sites"), LayerExtract("parcels")], area)
    assert [f.properties["label"] for f in rows(result.path, "parcels").values()] == ["tampere"]
    assert codes(result.path) == set()


def test_layer_area_overrides_the_jobs(service: Service, out: Path) -> None:
    fiji = AreaOfInterest.from_bbox(179.0, -18.0, 180.0, -16.0)
    result = extract(service, out, [LayerExtract("sites", area=fiji)])
    assert codes(result.path) == {"fiji_east"}


def test_where_filter(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("sites", where="kind = 'pump'")])
    assert codes(result.path) == {"in1"}


def test_null_geometry_rows_only_when_asked(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("sites", include_null_geometry=True)])
    assert codes(result.path) == {"in1", "in2", "nowhere"}
    assert rows(result.path, "sites")["nowhere"].geometry is None


def test_schema_only(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("sites", schema_only=True, attachments=True)])
    assert result.rows == {"sites": 0}
    with GeoPackageStore.open(result.path) as replica:
        assert replica.list_layers() == (SITES,)


# --- tables and relationships -----------------------------------------------------------------


def results(path: Path) -> list[tuple[object, object]]:
    found = rows(path, "inspections").values()
    return sorted((f.properties["site_code"], f.properties["result"]) for f in found)


def test_related_only_takes_the_rows_of_extracted_origins(service: Service, out: Path) -> None:
    layers = [LayerExtract("inspections"), LayerExtract("contacts"), LayerExtract("sites")]
    result = extract(service, out, layers)
    assert results(result.path) == [("in1", "leak"), ("in1", "ok")]
    assert len(rows(result.path, "contacts")) == 2  # no relationship: every row


def test_all_takes_every_row_of_tables(service: Service, out: Path) -> None:
    layers = [LayerExtract("sites"), LayerExtract("inspections", where="result = 'ok'")]
    result = extract(service, out, layers, row_filter=RowFilter.ALL)
    assert results(result.path) == [("fiji_east", "ok"), ("in1", "ok"), ("out", "ok")]


def test_related_only_follows_the_origins_filters(service: Service, out: Path) -> None:
    layers = [LayerExtract("sites", where="kind = 'tap'"), LayerExtract("inspections")]
    assert results(extract(service, out, layers).path) == []


def test_table_without_its_origin_takes_every_row(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("inspections")])
    assert len(results(result.path)) == 4
    with GeoPackageStore.open(result.path) as replica:
        assert replica.list_relationships() == ()


def test_table_related_to_itself_takes_every_row(service: Service, out: Path) -> None:
    service.store.add_relationship(
        Relationship("referrals", "contacts", "person", "contacts", "person")
    )
    result = extract(service, out, [LayerExtract("contacts")])
    assert result.rows == {"contacts": 2}


def test_relationships_between_extracted_layers_are_copied(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("sites"), LayerExtract("inspections")])
    with GeoPackageStore.open(result.path) as replica:
        assert replica.list_relationships() == (SITE_INSPECTIONS,)
        assert replica.get_layer("inspections") == INSPECTIONS


# --- attachments ------------------------------------------------------------------------------


def test_attachments_are_copied_with_their_bytes(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("sites", attachments=True)])
    assert result.attachments == 2
    assert result.attachment_bytes == len(PHOTO) + len(NOTE)
    copied = LocalBlobStore(out / "attachments")
    site = service.ids["in1"]
    with GeoPackageStore.open(result.path) as replica:
        records = replica.list_attachments("sites", site)
    originals = service.store.list_attachments("sites", site)
    assert [(a.attachment_id, a.name, a.content_type, a.size, a.sha256) for a in records] == [
        (a.attachment_id, a.name, a.content_type, a.size, a.sha256) for a in originals
    ]
    assert copied.get(service.photo.sha256) == PHOTO
    assert sorted(copied.iter_keys()) == sorted(a.sha256 for a in originals)


def test_attachments_are_not_copied_unless_asked(service: Service, out: Path) -> None:
    result = extract(service, out, [LayerExtract("sites")])
    assert (result.attachments, result.attachment_bytes) == (0, 0)
    assert not (out / "attachments").exists()


def test_missing_blob_is_an_error_and_leaves_nothing(service: Service, out: Path) -> None:
    service.blobs.delete(service.photo.sha256)
    with pytest.raises(BlobNotFoundError, match=r"valve\.png"):
        extract(service, out, [LayerExtract("sites", attachments=True)])
    assert leftovers(out) == []


def test_attachments_need_both_blob_stores(service: Service, out: Path) -> None:
    with pytest.raises(InvalidOfflineParametersError):
        extract_feature_service(
            service.store, out / "r.gpkg", [LayerExtract("sites", attachments=True)], HELSINKI
        )


# --- the file ---------------------------------------------------------------------------------


def test_replica_is_a_geopackage_gdal_reads(service: Service, out: Path) -> None:
    layers = [LayerExtract("sites"), LayerExtract("parcels"), LayerExtract("inspections")]
    result = extract(service, out, layers, AreaOfInterest.from_bbox(24.5, 60.0, 25.5, 60.4))
    assert leftovers(out) == ["replica.gpkg"]  # no -wal, -shm or partial file
    listed = {str(name) for name, _ in pyogrio.list_layers(result.path)}
    assert {"sites", "parcels", "inspections"} <= listed
    meta, _, geometry, values = pyogrio.raw.read(result.path, layer="sites")
    assert sorted(values[list(meta["fields"]).index("code")]) == ["in1", "in2"]
    assert len(geometry) == 2
    assert pyogrio.read_info(result.path, layer="parcels")["crs"] == "EPSG:3067"
    with sqlite3.connect(result.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_existing_destination_is_refused(service: Service, out: Path) -> None:
    (out / "replica.gpkg").write_bytes(b"mine")
    with pytest.raises(DestinationExistsError):
        extract(service, out, [LayerExtract("sites")])
    assert (out / "replica.gpkg").read_bytes() == b"mine"


def test_cancellation_leaves_nothing(service: Service, out: Path) -> None:
    polls: list[int] = []

    def cancelled() -> bool:
        polls.append(1)
        return len(polls) > 2

    layers = [LayerExtract("sites"), LayerExtract("inspections")]
    with pytest.raises(JobCancelledError):
        extract(service, out, layers, cancelled=cancelled)
    assert leftovers(out) == []


@pytest.mark.parametrize(
    ("layer", "error"),
    [(LayerExtract("nope"), LayerNotFoundError), (LayerExtract("sites", "nope = 1"), Exception)],
)
def test_bad_layers_and_filters_leave_nothing(
    service: Service, out: Path, layer: LayerExtract, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        extract(service, out, [layer])
    if layer.where is not None:
        assert isinstance(raised.value, InvalidFilterError)
    assert leftovers(out) == []


def test_progress_grows_to_one(service: Service, out: Path) -> None:
    reports: list[tuple[float, str]] = []
    layers = [LayerExtract("sites"), LayerExtract("inspections")]
    extract(service, out, layers, progress=lambda f, m: reports.append((f, m)))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert "sites: 2 of 2 rows" in [m for _, m in reports]


# --- GeoPackageStore.copy_features ------------------------------------------------------------


def test_copy_features_keeps_ids_and_versions_without_journal(tmp_path: Path) -> None:
    rows_in = [
        Feature(UUID(int=1), 7, {"code": "a", "kind": None}, Point(1, 2)),
        Feature(UUID(int=2), 1, {"code": "b", "kind": "x"}, None),
    ]
    with GeoPackageStore.create(tmp_path / "r.gpkg") as replica:
        replica.create_layer(SITES)
        assert replica.copy_features("sites", rows_in) == 2
        assert list(replica.iter_features("sites")) == rows_in
        assert replica.generation() == 0
        assert list(replica.iter_changes()) == []


@pytest.mark.parametrize(
    "bad",
    [
        Feature(UUID(int=1), 3, {"code": "again"}, Point(0, 0)),  # global id taken
        Feature(UUID(int=9), 0, {"code": "v0"}, Point(0, 0)),
        Feature(UUID(int=9), 1, {"kind": "no code"}, Point(0, 0)),
        Feature(UUID(int=9), 1, {"code": "line"}, shapely.LineString([(0, 0), (1, 1)])),
    ],
)
def test_copy_features_is_all_or_nothing(tmp_path: Path, bad: Feature) -> None:
    with GeoPackageStore.create(tmp_path / "r.gpkg") as replica:
        replica.create_layer(SITES)
        replica.copy_features("sites", [Feature(UUID(int=1), 1, {"code": "a"}, Point(1, 2))])
        good = Feature(UUID(int=5), 1, {"code": "b"}, Point(3, 4))
        with pytest.raises(InvalidFeatureError):
            replica.copy_features("sites", [good, bad])
        assert [f.global_id for f in replica.iter_features("sites")] == [UUID(int=1)]


# --- tiles ------------------------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, dict[Tile, bytes]]:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=3)
    path = tmp_path / "world.mbtiles"
    with open_writer(path, TilesetMetadata(tile_format=TileFormat.PNG)) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return path, tiles


def expected_tiles(tiles: dict[Tile, bytes], area: Polygon, zooms: ZoomRange) -> set[Tile]:
    """The tiles whose interior meets the area, told by mercantile's tile bounds."""
    return {
        t
        for t in tiles
        if t.z in zooms and shapely.box(*mercantile.bounds(t.x, t.y, t.z)).intersection(area).area
    }


@pytest.mark.parametrize("suffix", [".mbtiles", ".pmtiles"])
def test_extract_tiles_clips_to_area_and_zooms(
    archive: tuple[Path, dict[Tile, bytes]], tmp_path: Path, suffix: str
) -> None:
    source, tiles = archive
    area = box(-170.0, 10.0, -100.0, 80.0)
    zooms = ZoomRange(1, 2)
    expected = expected_tiles(tiles, area, zooms)
    assert 0 < len(expected) < sum(1 for t in tiles if t.z in zooms)
    reports: list[float] = []
    result = extract_tiles(
        source,
        tmp_path / f"clip{suffix}",
        AreaOfInterest.from_geometry(area),
        zooms,
        progress=lambda f, _: reports.append(f),
    )
    assert result.tiles == len(expected)
    assert result.bytes == result.path.stat().st_size
    with open_reader(result.path) as reader:
        assert dict(reader.iter_tiles()) == {t: tiles[t] for t in expected}
    assert reports[-1] == 1.0


def test_extract_tiles_cancelled_leaves_nothing(
    archive: tuple[Path, dict[Tile, bytes]], tmp_path: Path
) -> None:
    source, _ = archive
    polls = iter([False])  # cancelled once the tiles are read, as the archive is finished
    with pytest.raises(JobCancelledError):
        extract_tiles(
            source,
            tmp_path / "clip.mbtiles",
            HELSINKI,
            ZoomRange(0, 3),
            cancelled=lambda: next(polls, True),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world.mbtiles"]


def test_extract_tiles_refuses_other_formats_and_existing_files(
    archive: tuple[Path, dict[Tile, bytes]], tmp_path: Path
) -> None:
    source, _ = archive
    with pytest.raises(InvalidOfflineParametersError):
        extract_tiles(source, tmp_path / "clip.tpk", HELSINKI, ZoomRange(0, 3))
    with pytest.raises(DestinationExistsError):
        extract_tiles(source, source, HELSINKI, ZoomRange(0, 3))


def test_bulk_copies_keep_the_rtree_and_refuse_mismatches(tmp_path: Path) -> None:
    schema = LayerSchema("pts", (Field("name", FieldType.TEXT),), GeometryType.POINT)
    source = GeoPackageStore.create(tmp_path / "source.gpkg")
    source.create_layer(schema)
    source.apply_edits([Insert("pts", {"name": str(i)}, Point(i, i)) for i in range(10)])
    rows = [row for batch in source.scan_rows("pts", FeatureQuery(), ["name"]) for row in batch]
    assert [row.values for row in rows] == [(str(i),) for i in range(10)]
    copy = GeoPackageStore.create(tmp_path / "copy.gpkg")
    copy.create_layer(schema)
    assert copy.copy_rows_from(source, "pts", [r.fid for r in rows if str(r.values[0]) < "5"]) == 5
    with pytest.raises(InvalidFeatureError):
        copy.copy_rows_from(source, "pts", [rows[0].fid])
    inside = copy.query("pts", FeatureQuery(bbox=BBox(1.5, 1.5, 3.5, 3.5), limit=100))
    assert sorted(str(f.properties["name"]) for f in inside.features) == ["2", "3"]
    copy.apply_edits([Insert("pts", {"name": "new"}, Point(2.5, 2.5))])  # the trigger is back
    inside = copy.query("pts", FeatureQuery(bbox=BBox(1.5, 1.5, 3.5, 3.5), limit=100))
    assert sorted(str(f.properties["name"]) for f in inside.features) == ["2", "3", "new"]
    other = GeoPackageStore.create(tmp_path / "other.gpkg")
    other.create_layer(LayerSchema("pts", (Field("name", FieldType.INTEGER),), GeometryType.POINT))
    with pytest.raises(InvalidLayerSchemaError):
        other.copy_rows_from(source, "pts", [rows[0].fid])
    for store in (source, copy, other):
        store.close()
