"""Feature update files of preplanned areas over the sample sites: written from sync's download
of the area, read back by GDAL, applied to a package's replica as a fresh packaging would have
it, and refused, the replica untouched, when out of order, twice, foreign, truncated or
tampered."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pyogrio
import pytest
import shapely
from shapely.geometry import Point, shape

from offmaps.catalog import Catalog
from offmaps.errors import SyncFailedError, UpdateChainError, UpdateIntegrityError
from offmaps.features import FieldType
from offmaps.features.geopackage import GeoPackageStore, read_schemas
from offmaps.features.importing import import_features
from offmaps.features.model import Delete, Edit, Field, Insert, Update
from offmaps.offline.extract import LayerExtract, RowFilter, extract_feature_service
from offmaps.offline.replica import LocalReplica
from offmaps.offline.updates import (
    BASE_PREFIX,
    ChainState,
    FeatureUpdateReader,
    UpdateFile,
    UpdateLink,
    apply_feature_update,
    file_sha256,
    read_chain_state,
    write_chain_state,
)
from offmaps.offline.updates import features as feature_updates
from offmaps.offline.updates.server import (
    area_replica,
    area_replica_id,
    iter_area_download,
    write_area_feature_update,
)
from offmaps.replicas import SyncService
from offmaps.sample._features import find_sites, write_sites
from offmaps.sample._osm import read_osm_layer
from offmaps.schemas.changeset import DownloadHeader, ServerChange
from offmaps.state.replicas import LayerScope, Replica
from offmaps.storage.local import LocalBlobStore
from offmaps.tiling import AreaOfInterest
from tests.data import data_path

AREA = {
    "type": "Polygon",
    "coordinates": [[[24.92, 60.155], [24.97, 60.155], [24.97, 60.18], [24.92, 60.18],
                     [24.92, 60.155]]],
}  # fmt: skip
AREA_SHAPE = shape(AREA)
AREA_ID, MAP_ID, SERVICE = "harbour", "map-1", "helsinki"
SCOPE = {"sites": LayerScope(area=AREA), "inspections": LayerScope()}
OUTSIDE = Point(25.2, 60.3)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample sites and inspections (real OSM sites) as a feature service, with photos
    attached to a few sites of the area; and the blob store holding the photos."""
    root = tmp_path_factory.mktemp("update-files")
    sources = root / "sites.gpkg"
    write_sites(sources, find_sites(read_osm_layer(data_path("osm/Helsinki.osm.pbf"), "points")))
    path = root / "service.gpkg"
    blobs = LocalBlobStore(root / "blobs")
    with GeoPackageStore.create(path) as store:
        import_features(store, sources, layer="sites", name="sites")
        import_features(store, sources, layer="inspections", name="inspections")
        inside = [f for f in store.iter_features("sites") if AREA_SHAPE.intersects(f.geometry)]
        for n, feature in enumerate(inside[:5]):
            ref = blobs.put(f"photo {n}".encode())
            store.add_attachment(
                "sites", feature.global_id, name=f"p{n}.jpg", content_type="image/jpeg",
                size=ref.size, sha256=ref.sha256,
            )  # fmt: skip
    return path, root / "blobs"


@dataclass
class World:
    """A copy of the sample service, sync over it, and the area's packages."""

    root: Path
    store: GeoPackageStore
    sync: SyncService
    blobs: LocalBlobStore

    def replica(self, generation: int) -> Replica:
        return area_replica(
            AREA_ID, SERVICE, SCOPE, map_id=MAP_ID, generation=generation, attachments=True
        )

    def package(self, name: str) -> tuple[Path, int]:
        """A package's replica as the server serves it (syncable, checkpointed), and the
        generation it was taken at."""
        path = self.root / name
        result = extract_feature_service(
            self.store,
            path,
            [LayerExtract("sites", attachments=True), LayerExtract("inspections")],
            AreaOfInterest.from_geojson(AREA),
            row_filter=RowFilter.ALL,
            blobs=self.blobs,
            attachment_store=LocalBlobStore(self.root / "device-blobs"),
        )
        replica_id = area_replica_id(AREA_ID, SERVICE)
        with LocalReplica.open(path, replica_id=replica_id, generation=result.generation):
            pass
        return path, result.generation

    def update(self, name: str, since: int, link: UpdateLink) -> UpdateFile:
        written, header = write_area_feature_update(
            self.root / name, self.sync, self.replica(since), link, since
        )
        assert header.since == since
        return written


@pytest.fixture
def world(pristine: tuple[Path, Path], tmp_path: Path) -> Iterator[World]:
    path = tmp_path / "service.gpkg"
    shutil.copyfile(pristine[0], path)
    store = GeoPackageStore.open(path)
    catalog = SimpleNamespace(feature_service=lambda _: store)
    sync = SyncService.open(tmp_path / "sync.sqlite", cast(Catalog, catalog))
    try:
        yield World(tmp_path, store, sync, LocalBlobStore(pristine[1]))
    finally:
        sync.close()
        store.close()


def begin(path: Path, epoch: int = 0) -> ChainState:
    """Record package 1's chain in its replica, as the device does once it has it."""
    state = ChainState(AREA_ID, epoch, 1, BASE_PREFIX + file_sha256(path)[0])
    write_chain_state(path, state)
    return state


def link(from_number: int, previous: str, *, area: str = AREA_ID, epoch: int = 0) -> UpdateLink:
    return UpdateLink(area, MAP_ID, epoch, from_number, from_number + 1, previous)


def edit_randomly(store: GeoPackageStore, seed: int) -> None:
    """Inserts, updates and deletes in and around the area: rows moving out and in, rows
    changed, new rows, deleted rows, inspections changed, attachments added and removed."""
    rng = random.Random(seed)
    sites = list(store.iter_features("sites"))
    inside = [f for f in sites if AREA_SHAPE.intersects(f.geometry)]
    outside = [f for f in sites if not AREA_SHAPE.intersects(f.geometry)]
    rng.shuffle(inside)
    rng.shuffle(outside)
    centre = AREA_SHAPE.centroid
    edits: list[Edit] = []
    for feature in inside[:6]:
        edits.append(Update("sites", feature.global_id, {"name": f"renamed {rng.random()}"}))
    for feature in inside[6:9]:
        edits.append(Update("sites", feature.global_id, geometry=OUTSIDE, set_geometry=True))
    for feature in outside[:3]:
        edits.append(Update("sites", feature.global_id, geometry=centre, set_geometry=True))
    for feature in outside[3:6]:  # changes the area never held
        edits.append(Update("sites", feature.global_id, {"name": "far away"}))
    for feature in inside[9:12]:
        edits.append(Delete("sites", feature.global_id))
    template = dict(inside[12].properties)
    for n in range(4):
        x = rng.uniform(24.93, 24.96)
        where = Point(x, 60.165) if n % 2 else Point(x + 0.5, 60.4)
        edits.append(Insert("sites", {**template, "name": f"new {n}"}, where))
    inspections = list(store.iter_features("inspections"))
    rng.shuffle(inspections)
    for feature in inspections[:5]:
        edits.append(Update("inspections", feature.global_id, {"notes": f"seen {seed}"}))
    for feature in inspections[5:7]:
        edits.append(Delete("inspections", feature.global_id))
    store.apply_edits(edits)
    attached = [f for f in inside[12:] if store.list_attachments("sites", f.global_id)]
    for feature in attached[:1]:
        (first, *_) = store.list_attachments("sites", feature.global_id)
        store.delete_attachment("sites", first.attachment_id)


def rows(path: Path) -> dict[str, dict[str, tuple[Any, ...]]]:
    """Every row of the replica's layers by global id (version, values, geometry), and its
    attachment records, read with sqlite3."""
    found: dict[str, dict[str, tuple[Any, ...]]] = {}
    with closing(sqlite3.connect(path)) as conn:
        for layer in ("sites", "inspections"):
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{layer}")')]
            wanted = [c for c in columns if c != "fid"]
            sql = f'SELECT {", ".join(map(repr, wanted))} FROM "{layer}"'
            found[layer] = {}
            for row in conn.execute(sql.replace("'", '"')):
                values = dict(zip(wanted, row, strict=True))
                found[layer][values.pop("globalid")] = tuple(sorted(values.items()))
        found["attachments"] = {
            str(r[0]): tuple(r[1:])
            for r in conn.execute(
                "SELECT attachment_id, layer, globalid, name, content_type, size, sha256 "
                "FROM offmaps_attachments"
            )
        }
    return found


# --- round trip -------------------------------------------------------------------------------


def test_an_update_reads_back_as_the_download_it_was_written_from(world: World) -> None:
    _, generation = world.package("p1.gpkg")
    edit_randomly(world.store, seed=1)
    records = list(iter_area_download(world.sync, world.replica(generation), generation))
    header, changes = records[0], records[1:]
    assert isinstance(header, DownloadHeader)
    written = world.update("u2.gpkg", generation, link(1, BASE_PREFIX + "0" * 64))
    with FeatureUpdateReader(written.path) as reader:
        assert reader.info.link == link(1, BASE_PREFIX + "0" * 64)
        assert (reader.info.service, reader.info.from_generation) == (SERVICE, generation)
        assert reader.info.to_generation == world.store.generation()
        assert reader.download_header(header.replica_id) == header
        read = list(reader.iter_changes())
        assert reader.blobs() == {
            a.sha256: a.size
            for c in changes
            if isinstance(c, ServerChange)
            for a in c.attachments or ()
        }
    key = lambda c: (c.layer, c.kind, str(c.global_id))  # noqa: E731
    assert sorted(read, key=key) == sorted(cast(list[ServerChange], changes), key=key)
    kinds = {c.kind for c in read}
    assert kinds == {"upsert", "delete"}
    assert written.sha256 == file_sha256(written.path)[0]


def test_an_update_is_a_geopackage_gdal_reads(world: World) -> None:
    _, generation = world.package("p1.gpkg")
    edit_randomly(world.store, seed=2)
    written = world.update("u2.gpkg", generation, link(1, BASE_PREFIX + "0" * 64))
    layers = {str(name) for name, _ in pyogrio.list_layers(written.path)}
    assert layers == {"sites", "inspections"}
    _, _, geometries, fields = pyogrio.raw.read(written.path, layer="sites")
    assert len(geometries) == len(fields[0]) > 0
    assert {shapely.from_wkb(g).geom_type for g in geometries} == {"Point"}
    done = subprocess.run(
        ["ogrinfo", "-ro", "-so", "-al", str(written.path)], capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert "Layer name: sites" in done.stdout
    with closing(sqlite3.connect(written.path)) as conn:
        header = dict(conn.execute("SELECT key, value FROM offmaps_update"))
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
    assert (header["kind"], header["format_version"], check) == ("features", "1.0", "ok")
    # the schema digest as docs/update-files.md spells it out
    sites = next(layer for layer in json.loads(header["layers"]) if layer["name"] == "sites")
    document = {"fields": sites["fields"], "geometry_type": "Point", "name": "sites", "srid": 4326}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert sites["schema_sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_an_incremental_package_equals_a_fresh_one_row_by_row(world: World) -> None:
    package, generation = world.package("p1.gpkg")
    state = begin(package)
    head = state.chain_head
    for number, seed in enumerate((3, 4, 5), start=1):
        edit_randomly(world.store, seed)
        written = world.update(f"u{number + 1}.gpkg", generation, link(number, head))
        applied = apply_feature_update(package, written.path, sha256=written.sha256)
        assert applied.state == ChainState(AREA_ID, 0, number + 1, written.sha256)
        assert applied.summary.upserted > 10
        assert applied.summary.deleted > 5
        head, generation = written.sha256, world.store.generation()
        fresh, _ = world.package(f"fresh{number}.gpkg")
        assert rows(package) == rows(fresh)
    assert read_chain_state(package) == ChainState(AREA_ID, 0, 4, head)
    assert rows(package)["attachments"]
    with LocalReplica.open(package, replica_id=area_replica_id(AREA_ID, SERVICE), generation=0):
        pass  # still a replica: nothing went to its outbox
    with closing(sqlite3.connect(package)) as conn:
        assert conn.execute("SELECT count(*) FROM offmaps_outbox").fetchone() == (0,)
        generations = set(conn.execute("SELECT generation FROM offmaps_sync_layers"))
    assert generations == {(generation,)}


def test_an_empty_update_moves_the_chain_only(world: World) -> None:
    package, generation = world.package("p1.gpkg")
    state = begin(package)
    before = rows(package)
    written = world.update("u2.gpkg", generation, link(1, state.chain_head))
    applied = apply_feature_update(package, written.path, sha256=written.sha256)
    assert (applied.summary.upserted, applied.summary.deleted) == (0, 0)
    assert applied.state.package_number == 2
    assert rows(package) == before


def test_fields_the_service_gained_are_listed_and_added(world: World) -> None:
    package, generation = world.package("p1.gpkg")
    state = begin(package)
    with closing(sqlite3.connect(package)) as conn:
        previous = read_schemas(conn)
    world.store.add_field("sites", Field("colour", FieldType.TEXT))
    (site, *_) = (
        f for f in world.store.iter_features("sites") if AREA_SHAPE.intersects(f.geometry)
    )
    world.store.apply_edits([Update("sites", site.global_id, {"colour": "red"})])
    path = world.root / "u2.gpkg"
    written, _ = write_area_feature_update(
        path, world.sync, world.replica(generation), link(1, state.chain_head), generation,
        previous=previous,
    )  # fmt: skip
    with FeatureUpdateReader(written.path) as reader:
        assert reader.info.fields_added == {"sites": ("colour",)}
    applied = apply_feature_update(package, written.path, sha256=written.sha256)
    assert applied.summary.fields_added == ("sites.colour",)
    fresh, _ = world.package("fresh.gpkg")
    assert rows(package) == rows(fresh)


def test_a_failed_write_leaves_no_file(world: World) -> None:
    _, generation = world.package("p1.gpkg")
    header = next(iter_area_download(world.sync, world.replica(generation), generation))
    assert isinstance(header, DownloadHeader)
    stray = ServerChange(layer="streets", global_id=uuid.uuid4(), kind="delete")
    before = set(world.root.iterdir())
    with pytest.raises(ValueError, match="which the header does not name"):
        feature_updates.write_feature_update(
            world.root / "u2.gpkg", link(1, BASE_PREFIX + "0" * 64), SERVICE, header,
            [stray], world.store.list_layers(),
        )  # fmt: skip
    assert set(world.root.iterdir()) == before


# --- bad updates --------------------------------------------------------------------------------


@pytest.fixture
def chain(world: World) -> tuple[Path, list[UpdateFile], bytes]:
    """Package 1's replica with its chain begun, two updates after it, and its bytes."""
    package, generation = world.package("p1.gpkg")
    head = begin(package).chain_head
    updates = []
    for number in (1, 2):
        edit_randomly(world.store, seed=10 + number)
        written = world.update(f"u{number + 1}.gpkg", generation, link(number, head))
        updates.append(written)
        head, generation = written.sha256, world.store.generation()
    return package, updates, package.read_bytes()


def test_an_update_out_of_order_is_refused(chain: tuple[Path, list[UpdateFile], bytes]) -> None:
    package, (_, second), before = chain
    with pytest.raises(UpdateChainError, match="apply the updates before it") as caught:
        apply_feature_update(package, second.path, sha256=second.sha256)
    assert caught.value.package_number == 1
    assert package.read_bytes() == before


def test_an_update_applied_twice_is_refused(chain: tuple[Path, list[UpdateFile], bytes]) -> None:
    package, (first, _), _ = chain
    apply_feature_update(package, first.path, sha256=first.sha256)
    once = package.read_bytes()
    with pytest.raises(UpdateChainError, match="applied already"):
        apply_feature_update(package, first.path, sha256=first.sha256)
    assert package.read_bytes() == once


def test_two_applies_at_once_apply_the_update_once(
    chain: tuple[Path, list[UpdateFile], bytes],
) -> None:
    package, (first, _), _ = chain

    def apply() -> str:
        try:
            return str(apply_feature_update(package, first.path, sha256=first.sha256).state)
        except UpdateChainError as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(lambda _: apply(), range(2)))
    assert outcomes[1] == "UpdateChainError"
    assert outcomes[0] == str(ChainState(AREA_ID, 0, 2, first.sha256))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"area": "another-area"}, "is for area"),
        ({"epoch": 1}, "epoch"),
        ({"previous": BASE_PREFIX + "1" * 64}, "follows"),
    ],
)
def test_an_update_of_another_area_epoch_or_chain_is_refused(
    world: World, change: dict[str, Any], message: str
) -> None:
    package, generation = world.package("p1.gpkg")
    state = begin(package)
    before = package.read_bytes()
    edit_randomly(world.store, seed=20)
    arguments: dict[str, Any] = {"previous": state.chain_head, **change}
    previous = arguments.pop("previous")
    written = world.update("u2.gpkg", generation, link(1, previous, **arguments))
    with pytest.raises(UpdateChainError, match=message):
        apply_feature_update(package, written.path, sha256=written.sha256)
    assert package.read_bytes() == before


def test_a_replica_without_a_chain_is_refused(world: World) -> None:
    package, generation = world.package("p1.gpkg")
    written = world.update("u2.gpkg", generation, link(1, BASE_PREFIX + "0" * 64))
    with pytest.raises(UpdateChainError, match="holds no update chain"):
        apply_feature_update(package, written.path, sha256=written.sha256)


def test_a_truncated_or_tampered_update_is_refused(
    chain: tuple[Path, list[UpdateFile], bytes],
) -> None:
    package, (first, _), before = chain
    data = first.path.read_bytes()
    truncated = first.path.with_name("truncated.gpkg")
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UpdateIntegrityError, match="SHA-256"):
        apply_feature_update(package, truncated, sha256=first.sha256)
    with pytest.raises(UpdateIntegrityError, match="bytes, not"):
        apply_feature_update(package, truncated, sha256=first.sha256, size=first.size)
    # a truncated file listed with its own hash still does not apply
    with pytest.raises(UpdateIntegrityError):
        apply_feature_update(package, truncated, sha256=file_sha256(truncated)[0])
    tampered = first.path.with_name("tampered.gpkg")
    tampered.write_bytes(data[:-100] + bytes(b ^ 0xFF for b in data[-100:]))
    with pytest.raises(UpdateIntegrityError, match="SHA-256"):
        apply_feature_update(package, tampered, sha256=first.sha256)
    assert package.read_bytes() == before


def test_a_file_that_is_no_feature_update_is_refused(
    chain: tuple[Path, list[UpdateFile], bytes],
) -> None:
    package, _, before = chain
    for name, data in (("empty.gpkg", b""), ("text.gpkg", b"not sqlite" * 100)):
        bogus = package.with_name(name)
        bogus.write_bytes(data)
        with pytest.raises(UpdateIntegrityError):
            apply_feature_update(package, bogus, sha256=file_sha256(bogus)[0])
    # a replica is a GeoPackage, but not an update
    copy = package.with_name("copy.gpkg")
    shutil.copyfile(package, copy)
    with pytest.raises(UpdateIntegrityError, match="not an update file"):
        apply_feature_update(package, copy, sha256=file_sha256(copy)[0])
    assert package.read_bytes() == before


def test_a_failure_mid_apply_leaves_the_replica_as_it_was(
    chain: tuple[Path, list[UpdateFile], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    package, (first, _), before = chain
    contents = rows(package)

    def fail(conn: sqlite3.Connection, state: ChainState) -> None:
        raise OSError("the device was switched off")

    monkeypatch.setattr(feature_updates, "store_chain_state", fail)
    with pytest.raises(SyncFailedError, match="switched off"):
        apply_feature_update(package, first.path, sha256=first.sha256)
    assert package.read_bytes() == before
    assert rows(package) == contents
    monkeypatch.undo()
    apply_feature_update(package, first.path, sha256=first.sha256)  # and it applies after


APPLY_UNDER_LIMIT = """
import resource, signal, sys
from pathlib import Path
from offmaps.offline.updates import apply_feature_update, apply_tile_update
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
kind, target, update, sha256, limit = sys.argv[1:]
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
apply = apply_feature_update if kind == "features" else apply_tile_update
try:
    apply(Path(target), Path(update), sha256=sha256)
except Exception as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
print("applied")
"""


def apply_with_file_size_limit(
    kind: str, target: Path, update: UpdateFile, limit: int
) -> subprocess.CompletedProcess[str]:
    """Apply an update in a process that may write no file past ``limit`` bytes (a full disk,
    as far as SQLite can tell)."""
    arguments = [kind, str(target), str(update.path), update.sha256, str(limit)]
    return subprocess.run(
        [sys.executable, "-c", APPLY_UNDER_LIMIT, *arguments],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_a_full_disk_while_applying_leaves_the_replica_as_it_was(world: World) -> None:
    package, generation = world.package("p1.gpkg")
    state = begin(package)
    before = package.read_bytes()
    # an update bigger than the limit: every site of the area renamed
    world.store.apply_edits(
        [
            Update("sites", f.global_id, {"name": "x" * 2000})
            for f in world.store.iter_features("sites")
            if AREA_SHAPE.intersects(f.geometry)
        ]
    )
    written = world.update("u2.gpkg", generation, link(1, state.chain_head))
    done = apply_with_file_size_limit("features", package, written, 64 * 1024)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith("SyncFailedError"), done.stdout
    assert "cannot rollback" not in done.stdout, done.stdout  # the cause, not a 2nd ROLLBACK
    assert package.read_bytes() == before
    assert read_chain_state(package) == state
    applied = apply_feature_update(package, written.path, sha256=written.sha256)
    assert applied.state.package_number == 2


def test_updates_name_rows_as_a_shared_file(world: World) -> None:
    """Every device applies the same file: the header takes the replica's own id."""
    _, generation = world.package("p1.gpkg")
    written = world.update("u2.gpkg", generation, link(1, BASE_PREFIX + "0" * 64))
    other = uuid.uuid4().hex
    with FeatureUpdateReader(written.path) as reader:
        assert reader.download_header(other).replica_id == other
