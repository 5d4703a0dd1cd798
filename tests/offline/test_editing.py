"""Offline editing of a package's layers under the web map's rules, on real package folders."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from shapely.geometry import Point

from offmaps.errors import (
    AttachmentNotFoundError,
    EditNotAllowedError,
    FeatureNotFoundError,
    InvalidFeatureError,
    PackageError,
)
from offmaps.features import FieldType
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import ChangeKind, Field, GeometryType, Insert, LayerSchema
from offmaps.offline.editing import OfflineFeatureTable, open_feature_table
from offmaps.offline.package import (
    MobileMapPackage,
    PackageItem,
    PackageLayer,
    PackageManifest,
    PackageReplica,
    file_entry,
    read_manifest,
    verify_package,
    write_manifest,
)
from offmaps.schemas import (
    Basemap,
    EditingCapabilities,
    FeatureLayerRef,
    ItemInfo,
    TableRef,
    WebMap,
)

GPKG = "features/survey.gpkg"
SITES = LayerSchema(
    "sites",
    (
        Field("name", FieldType.TEXT),
        Field("status", FieldType.TEXT),
        Field("inspector", FieldType.TEXT),
    ),
    GeometryType.POINT,
)
INSPECTIONS = LayerSchema("inspections", (Field("note", FieldType.TEXT),))
EVERYTHING = EditingCapabilities(create=True, update=True, delete=True)
PHOTO = b"a photo of a site"

MakePackage = Callable[..., MobileMapPackage]


def build_package(
    folder: Path,
    editing: EditingCapabilities = EVERYTHING,
    *,
    attachments_enabled: bool = True,
    webmap: dict[str, object] | None = None,
) -> Path:
    """A package with one replica: point layer ``sites`` (id ``sites-1``, edited under
    ``editing``), table ``inspections`` (id ``insp``, fully editable) and an online-only layer."""
    (folder / GPKG).parent.mkdir(parents=True)
    with GeoPackageStore.create(folder / GPKG) as store:
        store.create_layer(SITES)
        store.create_layer(INSPECTIONS)
        store.apply_edits([Insert("sites", {"name": "harbour"}, Point(24.95, 60.17))])
    document = WebMap(
        format_version="1.0",
        item=ItemInfo(title="Harbour survey"),
        basemap=Basemap(title="No basemap"),
        operational_layers=(
            FeatureLayerRef(
                type="feature",
                id="sites-1",
                title="Sites",
                service="survey",
                layer="sites",
                editing=editing,
                attachments_enabled=attachments_enabled,
            ),
        ),
        tables=(
            TableRef(
                id="insp",
                title="Inspections",
                service="survey",
                layer="inspections",
                editing=EVERYTHING,
            ),
        ),
    )
    manifest = PackageManifest(
        format_version="1.0",
        created=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        item=PackageItem(title="Harbour survey"),
        map=document.model_dump(mode="json", exclude_none=True) if webmap is None else webmap,
        layers=[
            PackageLayer(id="sites-1", title="Sites", kind="feature", file=GPKG, layer="sites"),
            PackageLayer(id="web", title="Web", kind="online_only", url="https://x.example"),
        ],
        tables=[
            PackageLayer(
                id="insp", title="Inspections", kind="table", file=GPKG, layer="inspections"
            ),
        ],
        replicas=[
            PackageReplica(
                service="survey",
                replica_id="0123456789abcdef0123456789abcdef",
                generation=1,
                file=GPKG,
            )
        ],
        files=[file_entry(folder, GPKG)],
    )
    write_manifest(folder, manifest)
    return folder


@pytest.fixture
def make_package(tmp_path: Path) -> MakePackage:
    def make(
        editing: EditingCapabilities = EVERYTHING,
        *,
        attachments_enabled: bool = True,
        webmap: dict[str, object] | None = None,
    ) -> MobileMapPackage:
        folder = tmp_path / f"pkg-{uuid.uuid4().hex[:8]}"
        build_package(folder, editing, attachments_enabled=attachments_enabled, webmap=webmap)
        return MobileMapPackage(folder).load()

    return make


@pytest.fixture
def package(make_package: MakePackage) -> MobileMapPackage:
    return make_package()


@pytest.fixture
def sites(package: MobileMapPackage) -> Iterator[OfflineFeatureTable]:
    with open_feature_table(package, "sites-1") as table:
        yield table


def open_sites(
    make_package: MakePackage, editing: EditingCapabilities, *, attachments_enabled: bool = True
) -> OfflineFeatureTable:
    return open_feature_table(
        make_package(editing, attachments_enabled=attachments_enabled), "sites-1"
    )


def blob_path(package: MobileMapPackage, sha256: str) -> Path:
    return package.path / "attachments" / sha256[:2] / sha256[2:4] / sha256


# --- reading and editing --------------------------------------------------------------------


def test_a_table_reads_the_layer(sites: OfflineFeatureTable) -> None:
    assert sites.schema == SITES
    assert sites.title == "Sites"
    (feature,) = sites.query()
    assert feature.properties["name"] == "harbour"
    assert sites.get_feature(feature.global_id) == feature
    assert sites.attachments(feature.global_id) == ()


def test_edits_land_in_the_geopackage(package: MobileMapPackage) -> None:
    with open_feature_table(package, "sites-1") as sites:
        added = sites.add_feature({"name": "pier", "status": "new"}, Point(25, 60))
        moved = sites.update_feature(added.global_id, {"status": "checked"}, geometry=Point(26, 61))
        (harbour,) = [f for f in sites.query() if f.properties["name"] == "harbour"]
        sites.delete_feature(harbour.global_id)
    assert moved.version == 2
    with GeoPackageStore.open(package.path / GPKG) as store:
        (stored,) = store.iter_features("sites")
        assert stored == moved
        assert stored.properties == {"name": "pier", "status": "checked", "inspector": None}
        assert stored.geometry is not None
        assert stored.geometry.equals(Point(26, 61))
        kinds = [(c.global_id, c.kind) for c in store.iter_changes(since=1)]
        assert kinds == [
            (added.global_id, ChangeKind.INSERT),
            (added.global_id, ChangeKind.UPDATE),
            (harbour.global_id, ChangeKind.DELETE),
        ]
    report = verify_package(package.path)
    assert report.ok, report.problems


def test_update_keeps_or_clears_the_geometry(sites: OfflineFeatureTable) -> None:
    (feature,) = sites.query()
    kept = sites.update_feature(feature.global_id, {"status": "ok"})
    assert kept.geometry is not None
    assert kept.geometry.equals(Point(24.95, 60.17))
    cleared = sites.update_feature(feature.global_id, set_geometry=True)
    assert cleared.geometry is None
    assert sites.get_feature(feature.global_id).geometry is None


def test_tables_are_edited_too(package: MobileMapPackage) -> None:
    with open_feature_table(package, "insp") as inspections:
        row = inspections.add_feature({"note": "all fine"})
        assert inspections.schema.is_table
        assert [r.properties["note"] for r in inspections.query()] == ["all fine"]
        with pytest.raises(InvalidFeatureError):
            inspections.add_feature({"note": "x"}, Point(0, 0))
        inspections.delete_feature(row.global_id)
        assert list(inspections.query()) == []


def test_the_store_still_checks_values(sites: OfflineFeatureTable) -> None:
    with pytest.raises(InvalidFeatureError):
        sites.add_feature({"name": 3})
    with pytest.raises(InvalidFeatureError):
        sites.add_feature({"nope": "x"})
    with pytest.raises(FeatureNotFoundError):
        sites.update_feature(uuid.uuid4(), {"name": "x"})
    with pytest.raises(FeatureNotFoundError):
        sites.delete_feature(uuid.uuid4())
    assert sites.store.generation() == 1


# --- the web map's rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("editing", "refused"),
    [
        (EditingCapabilities(update=True, delete=True), "add"),
        (EditingCapabilities(create=True, delete=True), "update"),
        (EditingCapabilities(create=True, update=True), "delete"),
        (EditingCapabilities(), "add"),
    ],
)
def test_edits_the_map_does_not_allow_are_refused(
    make_package: MakePackage, editing: EditingCapabilities, refused: str
) -> None:
    with open_sites(make_package, editing) as sites:
        (feature,) = sites.query()
        edits: dict[str, Callable[[], object]] = {
            "add": lambda: sites.add_feature({"name": "x"}),
            "update": lambda: sites.update_feature(feature.global_id, {"name": "x"}),
            "delete": lambda: sites.delete_feature(feature.global_id),
        }
        with pytest.raises(EditNotAllowedError) as caught:
            edits[refused]()
        assert caught.value.layer == "sites"
        assert caught.value.field is None
        assert sites.store.generation() == 1
        assert sites.get_feature(feature.global_id) == feature


def test_only_editable_fields_may_be_set(make_package: MakePackage) -> None:
    editing = EditingCapabilities(create=True, update=True, editable_fields=("Name", "status"))
    with open_sites(make_package, editing) as sites:
        added = sites.add_feature({"name": "pier", "status": "new"}, Point(1, 1))
        assert added.properties["inspector"] is None
        for properties in ({"inspector": "me"}, {"name": "x", "inspector": None}):
            with pytest.raises(EditNotAllowedError) as caught:
                sites.add_feature(properties)
            assert (caught.value.layer, caught.value.field) == ("sites", "inspector")
        with pytest.raises(EditNotAllowedError) as caught:
            sites.update_feature(added.global_id, {"status": "ok", "inspector": "me"})
        assert caught.value.field == "inspector"
        moved = sites.update_feature(added.global_id, {"status": "ok"}, geometry=Point(2, 2))
        assert moved.properties == {"name": "pier", "status": "ok", "inspector": None}
        assert moved.geometry is not None
        assert moved.geometry.equals(Point(2, 2))
        with pytest.raises(InvalidFeatureError):  # not a field at all: the store's error
            sites.add_feature({"nope": 1})
        assert sites.store.generation() == 3


def test_no_editable_fields_allows_geometry_only(make_package: MakePackage) -> None:
    editing = EditingCapabilities(create=True, update=True, editable_fields=())
    with open_sites(make_package, editing) as sites:
        added = sites.add_feature({}, Point(1, 1))
        sites.update_feature(added.global_id, geometry=Point(3, 3))
        with pytest.raises(EditNotAllowedError):
            sites.update_feature(added.global_id, {"name": "x"})


# --- attachments ----------------------------------------------------------------------------


def test_attachments_are_content_addressed_and_deduplicated(package: MobileMapPackage) -> None:
    with open_feature_table(package, "sites-1") as sites:
        (feature,) = sites.query()
        first = sites.add_attachment(feature.global_id, "a.jpg", "image/jpeg", PHOTO)
        second = sites.add_attachment(feature.global_id, "b.jpg", "image/jpeg", PHOTO)
        third = sites.add_attachment(feature.global_id, "empty.txt", "text/plain", b"")
        assert sites.attachments(feature.global_id) == (first, second, third)
    sha = hashlib.sha256(PHOTO).hexdigest()
    assert (first.sha256, first.size) == (sha, len(PHOTO))
    assert second.sha256 == sha
    assert blob_path(package, sha).read_bytes() == PHOTO
    assert blob_path(package, third.sha256).read_bytes() == b""
    blobs = sorted(p for p in (package.path / "attachments").rglob("*") if p.is_file())
    assert blobs == sorted([blob_path(package, sha), blob_path(package, third.sha256)])
    report = verify_package(package.path)
    assert report.ok, report.problems
    assert {entry.path for entry in read_manifest(package.path).files} == {GPKG}


def test_deleting_an_attachment_keeps_its_blob(sites: OfflineFeatureTable) -> None:
    (feature,) = sites.query()
    first = sites.add_attachment(feature.global_id, "a.jpg", "image/jpeg", PHOTO)
    second = sites.add_attachment(feature.global_id, "b.jpg", "image/jpeg", PHOTO)
    sites.delete_attachment(first.attachment_id)
    assert sites.attachments(feature.global_id) == (second,)
    assert (sites.attachments_dir / first.sha256[:2] / first.sha256[2:4] / first.sha256).is_file()
    with pytest.raises(AttachmentNotFoundError):
        sites.delete_attachment(first.attachment_id)
    kinds = [c.kind for c in sites.store.iter_changes(since=1)]
    assert kinds == [
        ChangeKind.ATTACHMENT_ADD,
        ChangeKind.ATTACHMENT_ADD,
        ChangeKind.ATTACHMENT_DELETE,
    ]


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("", "image/jpeg"), ("x" * 256, "image/jpeg"), ("../a.jpg", "image/jpeg"), ("a", "jpeg")],
)
def test_bad_attachment_names_and_types_are_refused(
    sites: OfflineFeatureTable, name: str, content_type: str
) -> None:
    (feature,) = sites.query()
    with pytest.raises(InvalidFeatureError):
        sites.add_attachment(feature.global_id, name, content_type, PHOTO)
    assert sites.attachments(feature.global_id) == ()
    assert sites.store.generation() == 1


def test_attachments_of_missing_rows_write_nothing(sites: OfflineFeatureTable) -> None:
    with pytest.raises(FeatureNotFoundError):
        sites.add_attachment(uuid.uuid4(), "a.jpg", "image/jpeg", PHOTO)
    assert not sites.attachments_dir.exists()


@pytest.mark.parametrize(
    ("editing", "enabled"),
    [
        (EVERYTHING, False),
        (EditingCapabilities(create=True, delete=True), True),
    ],
)
def test_attachment_edits_need_attachments_and_updates(
    make_package: MakePackage, editing: EditingCapabilities, enabled: bool
) -> None:
    package = make_package(EVERYTHING)
    with open_feature_table(package, "sites-1") as sites:
        (feature,) = sites.query()
        existing = sites.add_attachment(feature.global_id, "a.jpg", "image/jpeg", PHOTO)
    with open_sites(make_package, editing, attachments_enabled=enabled) as sites:
        (feature,) = sites.query()
        with pytest.raises(EditNotAllowedError) as caught:
            sites.add_attachment(feature.global_id, "b.jpg", "image/jpeg", b"other")
        assert caught.value.layer == "sites"
        with pytest.raises(EditNotAllowedError):
            sites.delete_attachment(existing.attachment_id)
        assert not sites.attachments_dir.exists()


# --- opening --------------------------------------------------------------------------------


def test_opening_what_is_not_an_editable_layer(package: MobileMapPackage) -> None:
    with pytest.raises(PackageError, match="no layer or table 'nope'"):
        open_feature_table(package, "nope")
    with pytest.raises(PackageError, match="online_only"):
        open_feature_table(package, "web")
    with pytest.raises(PackageError, match="load"):
        open_feature_table(MobileMapPackage(package.path), "sites-1")


def test_a_package_whose_map_is_not_a_web_map(make_package: MakePackage) -> None:
    package = make_package(webmap={"operationalLayers": []})
    with pytest.raises(PackageError, match="web map"):
        open_feature_table(package, "sites-1")


def test_a_layer_the_web_map_does_not_describe(make_package: MakePackage) -> None:
    document = WebMap(
        format_version="1.0",
        item=ItemInfo(title="Harbour survey"),
        basemap=Basemap(title="No basemap"),
    )
    package = make_package(webmap=document.model_dump(mode="json", exclude_none=True))
    with pytest.raises(PackageError, match="no feature layer or table 'sites-1'"):
        open_feature_table(package, "sites-1")


def test_a_table_made_by_hand(tmp_path: Path) -> None:
    with GeoPackageStore.create(tmp_path / "a.gpkg") as store:
        store.create_layer(SITES)
    table = OfflineFeatureTable(
        GeoPackageStore.open(tmp_path / "a.gpkg"),
        "sites",
        editing=EditingCapabilities(create=True),
        attachments_enabled=False,
        attachments_dir=tmp_path / "blobs",
    )
    with table:
        assert table.title == "sites"
        table.add_feature({"name": "x"}, Point(0, 0))
    table.close()  # closing twice is fine
    with GeoPackageStore.open(tmp_path / "a.gpkg") as store:
        assert [f.properties["name"] for f in store.iter_features("sites")] == ["x"]
