"""The offline package format: manifests, verification and opening, on real files."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from shapely.geometry import Point

from offmaps.cli import main
from offmaps.containers import TilesetMetadata, open_writer
from offmaps.errors import PackageError
from offmaps.features import FieldType
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import Field, GeometryType, Insert, LayerSchema
from offmaps.offline.package import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MobileMapPackage,
    PackageFile,
    PackageItem,
    PackageLayer,
    PackageManifest,
    PackageReplica,
    VerifyReport,
    file_entry,
    read_manifest,
    verify_package,
    write_manifest,
)
from offmaps.storage import LocalBlobStore
from offmaps.types import Tile, TileFormat
from tests.tilegen import make_tile, sample_tiles

GPKG = "features/survey.gpkg"
MBTILES = "tiles/basemap.mbtiles"
THUMBNAIL = "thumbnail.png"
REPLICA_ID = "0123456789abcdef0123456789abcdef"
PHOTO = b"a photo of a site"


def write_store(path: Path, *, with_table: bool = True) -> None:
    """A feature service GeoPackage: point layer ``sites`` and maybe table ``inspections``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with GeoPackageStore.create(path) as store:
        store.create_layer(
            LayerSchema("sites", (Field("name", FieldType.TEXT),), GeometryType.POINT)
        )
        edits = [Insert("sites", {"name": "harbour"}, Point(24.95, 60.17))]
        if with_table:
            store.create_layer(LayerSchema("inspections", (Field("note", FieldType.TEXT),)))
            edits.append(Insert("inspections", {"note": "all fine"}))
        store.apply_edits(edits)


def build_package(folder: Path) -> Path:
    """A small, complete package: one GeoPackage, one MBTiles basemap, a thumbnail, a blob."""
    write_store(folder / GPKG)
    (folder / MBTILES).parent.mkdir(parents=True)
    with open_writer(folder / MBTILES, TilesetMetadata(TileFormat.PNG, name="basemap")) as writer:
        for tile, data in sample_tiles(TileFormat.PNG, maxzoom=1).items():
            writer.write_tile(tile, data)
    (folder / THUMBNAIL).write_bytes(make_tile(Tile(0, 0, 0), TileFormat.PNG))
    LocalBlobStore(folder / "attachments").put(PHOTO)
    listed = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )
    manifest = PackageManifest(
        format_version="1.0",
        created=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        item=PackageItem(title="Harbour survey", tags=["survey"], thumbnail=THUMBNAIL),
        server_url="https://maps.example.org",
        source_map_id="abc123",
        map={"operationalLayers": [], "baseMap": {"baseMapLayers": []}},
        layers=[
            PackageLayer(id="sites-1", title="Sites", kind="feature", file=GPKG, layer="sites"),
            PackageLayer(id="base", title="Basemap", kind="raster_tile", file=MBTILES),
            PackageLayer(id="web", title="Web", kind="online_only", url="https://x.example"),
        ],
        tables=[
            PackageLayer(
                id="insp", title="Inspections", kind="table", file=GPKG, layer="inspections"
            )
        ],
        replicas=[PackageReplica(service="survey", replica_id=REPLICA_ID, generation=1, file=GPKG)],
        files=[file_entry(folder, path) for path in listed],
    )
    write_manifest(folder, manifest)
    return folder


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return build_package(tmp_path / "pkg")


def raw_manifest(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / MANIFEST_NAME).read_text())
    return document


def write_raw(folder: Path, document: object) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(document))


def relist(folder: Path) -> None:
    """Rewrite the manifest's file entries from the files as they are now."""
    manifest = read_manifest(folder)
    files = [file_entry(folder, entry.path) for entry in manifest.files]
    write_manifest(folder, manifest.model_copy(update={"files": files}))


def reasons(report: VerifyReport) -> dict[str, str]:
    return {problem.path: problem.reason for problem in report.problems}


def run(*args: str) -> tuple[int, str, str]:
    with CliRunner().isolation() as (out, err, _):
        try:
            code = main(list(args))
        except SystemExit as exc:  # how click commands exit with a code of their own
            code = int(exc.code or 0)
    return code, out.getvalue().decode(), err.getvalue().decode()


# --- a good package ---------------------------------------------------------------------------


def test_a_built_package_verifies_ok(package: Path) -> None:
    seen: list[int] = []
    report = verify_package(package, progress=seen.append)
    assert report.ok, report.problems
    assert report.files == 4
    assert report.bytes == sum(entry.size for entry in read_manifest(package).files)
    assert sum(seen) == report.bytes


def test_manifest_round_trips_and_leaves_no_temporary_file(package: Path) -> None:
    manifest = read_manifest(package)
    write_manifest(package, manifest)
    assert read_manifest(package) == manifest
    assert sorted(p.name for p in package.iterdir()) == [
        "attachments", "features", MANIFEST_NAME, THUMBNAIL, "tiles",
    ]  # fmt: skip


def test_write_manifest_refuses_what_it_could_not_read_back(package: Path) -> None:
    manifest = read_manifest(package)
    huge = manifest.model_copy(update={"map": {"blob": "x" * MAX_MANIFEST_BYTES}})
    with pytest.raises(PackageError, match="the limit is"):
        write_manifest(package, huge)
    assert read_manifest(package) == manifest
    with pytest.raises(PackageError, match="cannot write"):
        write_manifest(package / "nowhere", manifest)


def test_file_entry_hashes_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    entry = file_entry(tmp_path, "a.bin")
    assert entry == PackageFile(
        path="a.bin",
        sha256="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        size=3,
    )


def test_mobile_map_package_opens_features_and_tiles_offline(package: Path) -> None:
    with MobileMapPackage(package).load() as mmpk:
        assert mmpk.item.title == "Harbour survey"
        (offline_map,) = mmpk.maps
        sites, base, web = offline_map.layers
        (inspections,) = offline_map.tables
        assert offline_map.replicas[0].replica_id == REPLICA_ID
        assert sites.path == (package / GPKG).absolute()
        assert web.path is None
        assert web.url == "https://x.example"
        with sites.open_features() as store:
            (feature,) = store.iter_features("sites")
            assert feature.properties["name"] == "harbour"
        with inspections.open_features() as store:
            assert [f.properties["note"] for f in store.iter_features("inspections")] == [
                "all fine"
            ]
        with base.open_tiles() as reader:
            assert reader.metadata.name == "basemap"
            assert reader.get_tile(Tile(1, 1, 1)) == make_tile(Tile(1, 1, 1), TileFormat.PNG)


def test_attachments_are_a_blob_store(package: Path) -> None:
    (blob,) = [e for e in read_manifest(package).files if e.path.startswith("attachments/")]
    assert LocalBlobStore(package / "attachments").get(blob.sha256) == PHOTO


def test_opening_the_wrong_kind_of_layer_is_refused(package: Path) -> None:
    sites, base, web = MobileMapPackage(package).load().maps[0].layers
    with pytest.raises(PackageError, match="not tiles"):
        sites.open_tiles()
    with pytest.raises(PackageError, match="not features"):
        base.open_features()
    with pytest.raises(PackageError, match="not features"):
        web.open_features()


def test_members_need_load_first(package: Path) -> None:
    with pytest.raises(PackageError, match="load"):
        _ = MobileMapPackage(package).manifest


def test_load_refuses_a_missing_file(package: Path) -> None:
    (package / MBTILES).unlink()
    with pytest.raises(PackageError, match=r"basemap\.mbtiles: missing"):
        MobileMapPackage(package).load()


def test_load_refuses_a_truncated_file(package: Path) -> None:
    os.truncate(package / THUMBNAIL, 10)
    with pytest.raises(PackageError, match="size is 10 bytes"):
        MobileMapPackage(package).load()


# --- malformed manifests ----------------------------------------------------------------------


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"no package\.json"):
        read_manifest(tmp_path)
    with pytest.raises(PackageError, match=r"no package\.json"):
        MobileMapPackage(tmp_path / "nowhere").load()


def test_manifest_that_is_not_json(package: Path) -> None:
    (package / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(PackageError, match="is not JSON"):
        read_manifest(package)


def test_manifest_over_the_limit_is_refused_unread(package: Path) -> None:
    (package / MANIFEST_NAME).write_bytes(b" " * (9 * 1024 * 1024))
    with pytest.raises(PackageError, match=f"limited to {MAX_MANIFEST_BYTES:,}"):
        read_manifest(package)


def test_unknown_format_version(package: Path) -> None:
    document = raw_manifest(package)
    document["format_version"] = "2.0"
    write_raw(package, document)
    with pytest.raises(PackageError, match=r"unknown format_version '2\.0'"):
        read_manifest(package)


def test_duplicate_json_keys_are_refused(package: Path) -> None:
    text = (package / MANIFEST_NAME).read_text()
    (package / MANIFEST_NAME).write_text(text.replace("{", '{"map": {}, ', 1))
    with pytest.raises(PackageError, match="duplicate key 'map'"):
        read_manifest(package)


def test_a_manifest_that_is_not_an_object(package: Path) -> None:
    write_raw(package, [1, 2])
    with pytest.raises(PackageError, match="not a JSON object"):
        read_manifest(package)


def test_schema_errors_name_the_first_error_on_one_line(package: Path) -> None:
    document = raw_manifest(package)
    document["files"][0]["size"] = "12"
    write_raw(package, document)
    with pytest.raises(PackageError, match=r"files\.0\.size") as caught:
        read_manifest(package)
    assert "\n" not in str(caught.value)


def test_naive_created_time_is_refused(package: Path) -> None:
    document = raw_manifest(package)
    document["created"] = "2024-05-01T12:00:00"
    write_raw(package, document)
    with pytest.raises(PackageError, match="created"):
        read_manifest(package)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../x", "'..' part"),
        ("/etc/passwd", "absolute"),
        ("a/../../b", "'..' part"),
        ("a\\b", "backslash"),
        ("a//b", "empty part"),
        ("a/./b", "'.' or '..' part"),
        ("", "empty"),
        ("C:/windows", "colon"),
        ("a\x00b", "NUL"),
    ],
)
def test_paths_that_could_leave_the_folder_are_refused(
    package: Path, path: str, reason: str
) -> None:
    document = raw_manifest(package)
    document["files"][0]["path"] = path
    write_raw(package, document)
    with pytest.raises(PackageError, match=reason):
        read_manifest(package)
    with pytest.raises(PackageError):
        verify_package(package)
    with pytest.raises(PackageError, match=reason):
        file_entry(package, path)


def edit(package: Path, change: str) -> None:
    document = raw_manifest(package)
    if change == "file listed twice":
        document["files"].append(dict(document["files"][0]))
    elif change == "layer file not listed":
        document["files"] = [f for f in document["files"] if f["path"] != MBTILES]
    elif change == "thumbnail not listed":
        document["files"] = [f for f in document["files"] if f["path"] != THUMBNAIL]
    elif change == "layer id used twice":
        document["tables"][0]["id"] = "sites-1"
    elif change == "manifest lists itself":
        document["files"].append({"path": MANIFEST_NAME, "sha256": "0" * 64, "size": 1})
    elif change == "misnamed attachment":
        blob = next(f for f in document["files"] if f["path"].startswith("attachments/"))
        blob["path"] = "attachments/photo.jpg"
    elif change == "online layer with a file":
        document["layers"][2]["file"] = GPKG
    elif change == "bad replica id":
        document["replicas"][0]["replica_id"] = "XYZ"
    elif change == "unknown field":
        document["extra"] = 1
    write_raw(package, document)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("file listed twice", "listed twice"),
        ("layer file not listed", "layer 'base' file 'tiles/basemap.mbtiles' is not listed"),
        ("thumbnail not listed", "thumbnail file 'thumbnail.png' is not listed"),
        ("layer id used twice", "layer id 'sites-1' is used twice"),
        ("manifest lists itself", "lists package.json itself"),
        ("misnamed attachment", "not named attachments/ab/cd/<its sha256>"),
        ("online layer with a file", "cannot have a file"),
        ("bad replica id", r"replicas\.0\.replica_id"),
        ("unknown field", "extra"),
    ],
)
def test_inconsistent_manifests_are_refused(package: Path, change: str, reason: str) -> None:
    edit(package, change)
    with pytest.raises(PackageError, match=reason):
        read_manifest(package)


def test_models_validate_in_python_too() -> None:
    with pytest.raises(ValidationError, match="absolute"):
        PackageFile(path="/etc/passwd", sha256="0" * 64, size=1)
    with pytest.raises(ValidationError):
        PackageFile(path="a", sha256="A" * 64, size=1)
    with pytest.raises(ValidationError, match="needs the GeoPackage layer name"):
        PackageLayer(id="a", title="A", kind="feature", file="a.gpkg")


# --- verification -----------------------------------------------------------------------------


def test_a_missing_file_is_reported(package: Path) -> None:
    (package / MBTILES).unlink()
    assert reasons(verify_package(package)) == {MBTILES: "missing"}


def test_a_truncated_file_is_reported(package: Path) -> None:
    size = (package / MBTILES).stat().st_size
    os.truncate(package / MBTILES, size - 100)
    problems = reasons(verify_package(package))
    assert problems == {MBTILES: f"size is {size - 100} bytes, the manifest says {size}"}


def test_a_flipped_byte_is_reported(package: Path) -> None:
    data = bytearray((package / THUMBNAIL).read_bytes())
    data[40] ^= 0xFF
    (package / THUMBNAIL).write_bytes(bytes(data))
    problems = reasons(verify_package(package))
    assert list(problems) == [THUMBNAIL]
    assert problems[THUMBNAIL].startswith("SHA-256 is ")


def test_an_unlisted_file_is_reported(package: Path) -> None:
    (package / "tiles" / "extra.txt").write_text("hello")
    assert reasons(verify_package(package)) == {"tiles/extra.txt": "not listed in package.json"}


def test_a_fifo_is_reported_without_blocking(package: Path) -> None:
    os.mkfifo(package / "pipe")
    (package / THUMBNAIL).unlink()
    os.mkfifo(package / THUMBNAIL)
    problems = reasons(verify_package(package))
    assert problems == {
        THUMBNAIL: "not a regular file",
        "pipe": "not a regular file, and not listed",
    }


def test_a_symlink_pointing_outside_is_reported(package: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes((package / THUMBNAIL).read_bytes())
    (package / THUMBNAIL).unlink()
    (package / THUMBNAIL).symlink_to(outside)
    (package / "etc").symlink_to("/etc")
    problems = reasons(verify_package(package))
    assert problems == {
        THUMBNAIL: "symbolic link pointing outside the package",
        "etc": "symbolic link pointing outside the package",
    }
    with pytest.raises(PackageError, match="symbolic link"):
        MobileMapPackage(package).load()
    with pytest.raises(PackageError, match="symbolic link"):
        file_entry(package, THUMBNAIL)


def test_a_symlinked_folder_is_not_followed(package: Path, tmp_path: Path) -> None:
    (package / "tiles").rename(tmp_path / "elsewhere")
    (package / "tiles").symlink_to(tmp_path / "elsewhere")
    problems = reasons(verify_package(package))
    assert problems == {
        MBTILES: "tiles: symbolic link pointing outside the package",
        "tiles": "symbolic link pointing outside the package",
    }


def test_a_symlink_to_the_manifest_is_refused(package: Path, tmp_path: Path) -> None:
    (package / MANIFEST_NAME).rename(tmp_path / "real.json")
    (package / MANIFEST_NAME).symlink_to(tmp_path / "real.json")
    with pytest.raises(PackageError, match="symbolic link"):
        read_manifest(package)


def test_a_corrupt_geopackage_is_reported(package: Path) -> None:
    size = (package / GPKG).stat().st_size
    (package / GPKG).write_bytes(os.urandom(size))
    relist(package)
    problems = reasons(verify_package(package))
    assert list(problems) == [GPKG]
    assert "not a GeoPackage" in problems[GPKG] or "not a valid GeoPackage" in problems[GPKG]


def test_a_sqlite_file_that_is_not_a_geopackage_is_reported(package: Path) -> None:
    (package / GPKG).unlink()
    with sqlite3.connect(package / GPKG) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    relist(package)
    assert reasons(verify_package(package)) == {
        GPKG: "not a GeoPackage: application_id is 0x00000000"
    }


def test_a_geopackage_lacking_a_layer_of_the_manifest_is_reported(package: Path) -> None:
    (package / GPKG).unlink()
    write_store(package / GPKG, with_table=False)
    relist(package)
    assert reasons(verify_package(package)) == {
        GPKG: "GeoPackage has no layer 'inspections' in gpkg_contents"
    }
    with pytest.raises(PackageError, match="inspections"):
        MobileMapPackage(package).load().maps[0].tables[0].open_features()


def test_a_corrupt_tile_archive_is_reported(package: Path) -> None:
    (package / MBTILES).write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    relist(package)
    problems = reasons(verify_package(package))
    assert list(problems) == [MBTILES]
    assert str(package) not in problems[MBTILES]


def test_verify_leaves_the_package_untouched(package: Path) -> None:
    before = sorted(p.relative_to(package) for p in package.rglob("*"))
    verify_package(package)
    assert sorted(p.relative_to(package) for p in package.rglob("*")) == before


# --- packages edited on the device ------------------------------------------------------------


def listed(package: Path, path: str) -> PackageFile:
    return next(entry for entry in read_manifest(package).files if entry.path == path)


def test_a_replica_edited_with_sqlite3_loads_and_verifies(package: Path) -> None:
    delivered = listed(package, GPKG)
    with sqlite3.connect(package / GPKG) as conn:  # as QGIS or a script would
        conn.executemany(
            "INSERT INTO inspections (note) VALUES (?)", [(f"note {i} " * 20,) for i in range(300)]
        )
    conn.close()
    assert file_entry(package, GPKG).size != delivered.size
    with (
        MobileMapPackage(package).load() as mmpk,
        mmpk.maps[0].tables[0].open_features() as store,
    ):
        assert len(list(store.iter_features("inspections"))) == 301
    report = verify_package(package)
    assert report.ok, report.problems
    assert report.bytes == sum(entry.size for entry in read_manifest(package).files)


def test_a_replica_open_for_writing_is_checked_with_its_wal(package: Path) -> None:
    """Committed edits still in the -wal file are what verify checks, not the stale main file."""
    (package / GPKG).unlink()
    write_store(package / GPKG, with_table=False)
    relist(package)
    with GeoPackageStore.open(package / GPKG) as store:
        store.create_layer(LayerSchema("inspections", (Field("note", FieldType.TEXT),)))
        assert (package / f"{GPKG}-wal").is_file()
        assert (package / f"{GPKG}-shm").is_file()
        report = verify_package(package)
        assert report.ok, report.problems
        MobileMapPackage(package).load()


def test_a_damaged_replica_is_still_reported(package: Path) -> None:
    size = (package / GPKG).stat().st_size
    os.truncate(package / GPKG, size - 100)
    problems = reasons(verify_package(package))
    assert list(problems) == [GPKG]
    assert problems[GPKG].startswith("SQLite integrity check failed")
    (package / GPKG).write_bytes(os.urandom(size))
    problems = reasons(verify_package(package))
    assert list(problems) == [GPKG]
    assert "not a GeoPackage" in problems[GPKG] or "not a valid GeoPackage" in problems[GPKG]
    (package / GPKG).unlink()
    assert reasons(verify_package(package)) == {GPKG: "missing"}
    with pytest.raises(PackageError, match=r"survey\.gpkg: missing"):
        MobileMapPackage(package).load()


def test_a_replica_reached_through_a_symlink_is_refused(package: Path, tmp_path: Path) -> None:
    (package / GPKG).rename(tmp_path / "elsewhere.gpkg")
    (package / GPKG).symlink_to(tmp_path / "elsewhere.gpkg")
    assert reasons(verify_package(package)) == {GPKG: "symbolic link pointing outside the package"}
    with pytest.raises(PackageError, match="symbolic link"):
        MobileMapPackage(package).load()


def test_sqlite_files_beside_a_replica_are_not_strays(package: Path, tmp_path: Path) -> None:
    for suffix in ("-shm", "-journal"):
        (package / f"{GPKG}{suffix}").write_bytes(b"")
    (package / f"{MBTILES}-journal").write_bytes(b"")
    (tmp_path / "x").write_bytes(b"")
    (package / "features" / "other.gpkg-wal").symlink_to(tmp_path / "x")
    assert reasons(verify_package(package)) == {
        f"{MBTILES}-journal": "not listed in package.json",
        "features/other.gpkg-wal": "symbolic link pointing outside the package",
    }


def test_attachment_blobs_added_offline_are_fine(package: Path) -> None:
    blobs = LocalBlobStore(package / "attachments")
    ref = blobs.put(b"a new photo")
    blobs.put(PHOTO)  # the listed one again
    report = verify_package(package)
    assert report.ok, report.problems
    key = ref.sha256
    assert f"attachments/{key[:2]}/{key[2:4]}/{key}" not in {
        entry.path for entry in read_manifest(package).files
    }


def test_unlisted_attachment_files_that_are_not_blobs_are_reported(package: Path) -> None:
    blobs = LocalBlobStore(package / "attachments")
    good = blobs.put(b"a new photo").sha256
    other = blobs.put(b"another photo").sha256
    (package / "attachments" / good[:2] / good[2:4] / good).write_bytes(b"tampered")
    misplaced = package / "attachments" / "00" / "00" / other
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes(b"another photo")
    (package / "attachments" / "notes.txt").write_text("hello")
    (package / "attachments" / ".blob-x.partial").write_bytes(b"half")
    problems = reasons(verify_package(package))
    tampered = f"attachments/{good[:2]}/{good[2:4]}/{good}"
    assert problems == {
        tampered: problems[tampered],
        f"attachments/00/00/{other}": "not listed in package.json",
        "attachments/notes.txt": "not listed in package.json",
        "attachments/.blob-x.partial": "not listed in package.json",
    }
    assert problems[tampered].startswith("not listed in package.json, and its bytes hash to ")


def test_other_listed_files_must_still_match_the_manifest(package: Path) -> None:
    blob = next(e for e in read_manifest(package).files if e.path.startswith("attachments/"))
    (package / blob.path).write_bytes(b"x" * blob.size)
    problems = reasons(verify_package(package))
    assert list(problems) == [blob.path]
    assert problems[blob.path].startswith("SHA-256 is ")
    os.truncate(package / THUMBNAIL, 10)
    with pytest.raises(PackageError, match="size is 10 bytes"):
        MobileMapPackage(package).load()


# --- CLI --------------------------------------------------------------------------------------


def test_cli_verify_ok(package: Path) -> None:
    code, out, _ = run("package", "verify", str(package))
    report = verify_package(package)
    assert code == 0
    assert out.strip() == f"{package}: OK ({report.files} files, {report.bytes} bytes)"


def test_cli_verify_names_each_problem_and_exits_1(package: Path) -> None:
    (package / MBTILES).unlink()
    (package / "extra").write_text("x")
    code, out, err = run("package", "verify", str(package))
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"{package}: {MBTILES}: missing",
        f"{package}: extra: not listed in package.json",
    ]


def test_cli_verify_json(package: Path) -> None:
    (package / MBTILES).unlink()
    code, out, _ = run("package", "verify", "--json", str(package))
    assert code == 1
    document = json.loads(out)
    assert document["ok"] is False
    assert document["problems"] == [{"path": MBTILES, "reason": "missing"}]


@pytest.mark.parametrize("damage", ["not json", "no manifest", "traversal"])
def test_cli_verify_malformed_package_is_one_line(package: Path, damage: str) -> None:
    if damage == "not json":
        (package / MANIFEST_NAME).write_bytes(b"\x00\xff garbage")
    elif damage == "no manifest":
        (package / MANIFEST_NAME).unlink()
    else:
        document = raw_manifest(package)
        document["files"][0]["path"] = "../../etc/passwd"
        write_raw(package, document)
    code, out, err = run("package", "verify", str(package))
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("PackageError: ")
    assert "Traceback" not in err
