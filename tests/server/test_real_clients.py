"""Real clients against a listening server: GDAL's OAPIF driver, and the CLI over HTTP."""

from __future__ import annotations

import json
import re
import sqlite3
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import shapely
from click.testing import CliRunner
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from offmaps.cli import cli
from offmaps.features import FieldType
from offmaps.features.importing import import_features
from offmaps.features.model import Field, GeometryType, Insert, LayerSchema, Relationship
from offmaps.sample._features import find_sites, write_sites, write_streets
from offmaps.sample._osm import read_osm_layer
from offmaps.schemas import WebMap
from tests.data import data_path
from tests.serverkit import PASSWORD, LiveServer, webmap_document

_GDAL_READ = """
import json, sys
import pyogrio, pyogrio.raw, shapely
url = sys.argv[1]
layers = [str(row[0]) for row in pyogrio.list_layers(url)]
meta, _, geometries, columns = pyogrio.raw.read(url, layer="city.sites")
names = dict(zip(meta["fields"], columns))["name"]
kinds = sorted({shapely.from_wkb(g).geom_type for g in geometries})
print(json.dumps({"layers": layers, "names": [str(n) for n in names], "kinds": kinds}))
"""


def test_gdal_lists_and_reads_the_collections(live_server: LiveServer) -> None:
    # GDAL runs in its own process: pyogrio holds the GIL while GDAL waits on HTTP, which
    # would starve the server thread if both ran here.
    done = subprocess.run(
        [sys.executable, "-c", _GDAL_READ, f"OAPIF:{live_server.url}/"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    read = json.loads(done.stdout)
    assert {"city.sites", "city.streets", "city.inspections"} <= set(read["layers"])
    assert sorted(read["names"]) == sorted(f"site {i}" for i in range(25))
    assert read["kinds"] == ["Point"]


def test_login_then_list_maps_as_json(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "config"))
    runner = CliRunner()
    anonymous = runner.invoke(cli, ["maps", "list", "--server", live_server.url, "--json"])
    assert anonymous.exit_code == 0, anonymous.output
    assert [m["title"] for m in json.loads(anonymous.output)] == ["Public"]
    login = runner.invoke(
        cli, ["login", live_server.url, "-u", "editor", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert login.exit_code == 0, login.output
    assert (tmp_path / "config" / "credentials.json").stat().st_mode & 0o777 == 0o600
    listed = runner.invoke(cli, ["maps", "list", "--server", live_server.url, "--json"])
    maps = json.loads(listed.output)
    assert {m["title"] for m in maps} == {"Public", "Private"}
    assert {"id", "title", "owner", "snippet", "tags", "public", "modified"} <= set(maps[0])


def test_a_wrong_password_is_one_line_and_exit_1(live_server: LiveServer, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "offmaps.cli",
            "login",
            live_server.url,
            "-u",
            "editor",
            "--password-stdin",
        ],
        input="wrong password\n",
        capture_output=True,
        text=True,
        env={"OFFMAPS_CONFIG_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("InvalidCredentialsError:")


# --- every field of every collection, read by GDAL's OAPIF driver page by page ------------------

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)

EXTREMES = LayerSchema(
    "extremes",
    (
        Field("label", FieldType.TEXT, max_length=40),
        Field("notes", FieldType.TEXT),
        Field("count", FieldType.INTEGER),
        Field("ratio", FieldType.REAL),
        Field("flag", FieldType.BOOLEAN),
        Field("day", FieldType.DATE),
        Field("moment", FieldType.DATETIME),
    ),
    GeometryType.POINT,
    title="Every field type",
)
"""A layer with a field of every type: the sample map has no real, boolean or date-time field."""

_ODD_VALUES: list[dict[str, object]] = [
    {
        "label": "Åbo – Turku 北京 🚒",
        "notes": "quotes \" ' and\nnew lines\ttabs",
        "count": _INT64_MAX,
        "ratio": 1.7976931348623157e308,
        "flag": True,
        "day": date(9999, 12, 31),
        "moment": datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    },
    {
        "label": "x" * 40,
        "notes": "",
        "count": _INT64_MIN,
        "ratio": -2.2250738585072014e-308,
        "flag": False,
        "day": date(1, 1, 1),
        "moment": datetime(1970, 1, 1, tzinfo=UTC),
    },
    {"label": None, "notes": None, "count": None, "ratio": None, "flag": None, "day": None},
    {"count": 2**31, "ratio": 0.1, "day": date(2024, 2, 29), "label": "ÄÖÜ äöü ß"},
    {"count": -(2**31) - 1, "ratio": 123456789.123456789, "notes": "Ελληνικά русский עברית"},
    {"count": 9_007_199_254_740_993, "ratio": 5e-324, "moment": datetime(2038, 1, 19, 3, 14, 8)},
]


def _odd_point(i: int) -> Point:
    if i % 2:
        return Point(-179.999999999 + i, 89.123456789012)
    return Point(24.941234567890123, 60.171234567890123)


def _extreme_rows() -> list[Insert]:
    """Plain small values on the first pages (what GDAL guesses types from), extremes after."""
    plain = [
        Insert(
            "extremes",
            {
                "label": f"row {i}",
                "count": i,
                "ratio": i / 4,
                "flag": i % 2 == 0,
                "day": date(2024, 1, 1 + i),
                "moment": datetime(2024, 1, 1, i, tzinfo=UTC),
            },
            Point(24.94 + i / 1000, 60.17),
        )
        for i in range(12)
    ]
    odd = [Insert("extremes", values, _odd_point(i)) for i, values in enumerate(_ODD_VALUES)]
    return plain + odd


@dataclass(frozen=True)
class SampleFiles:
    """The sample map's feature sources, built from the real Helsinki extract."""

    sites: Path
    streets: Path


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    """The GeoPackages the sample map imports (sites with inspections, streets)."""
    osm = data_path("osm/Helsinki.osm.pbf")
    folder = tmp_path_factory.mktemp("sample")
    sites = folder / "sites.gpkg"
    streets = folder / "streets.gpkg"
    write_sites(sites, find_sites(read_osm_layer(osm, "points")))
    write_streets(streets, read_osm_layer(osm, "lines"))
    return SampleFiles(sites, streets)


def _layer_entry(layer: str, title: str) -> dict[str, Any]:
    return {
        "type": "feature",
        "id": layer,
        "title": title,
        "service": "helsinki",
        "layer": layer,
        "editing": {"create": False, "update": False, "delete": False},
    }


@pytest.fixture
def sample_server(live_server: LiveServer, sample_files: SampleFiles) -> LiveServer:
    """``live_server`` also serving the sample map's service ``helsinki`` (sites, streets,
    inspections, as ``offmaps serve`` builds them) and the layer :data:`EXTREMES`, publicly."""
    catalog = live_server.server.catalog
    store = catalog.create_feature_service("helsinki")
    import_features(store, sample_files.sites, layer="sites", name="sites", title="Sites")
    import_features(
        store, sample_files.sites, layer="inspections", name="inspections", title="Inspections"
    )
    import_features(store, sample_files.streets, layer="streets", name="streets", title="Streets")
    store.add_relationship(
        Relationship("site_inspections", "sites", "osm_id", "inspections", "site_osm_id")
    )
    store.create_layer(EXTREMES)
    store.apply_edits(_extreme_rows())
    document = webmap_document(
        title="Helsinki",
        public=True,
        layers=[
            _layer_entry("sites", "Sites"),
            _layer_entry("streets", "Streets"),
            _layer_entry("extremes", "Extremes"),
        ],
        tables=[
            {
                "id": "inspections",
                "title": "Inspections",
                "service": "helsinki",
                "layer": "inspections",
                "editing": {"create": False, "update": False, "delete": False},
            }
        ],
    )
    catalog.webmaps.create(WebMap.model_validate(document), owner="editor")
    return live_server


def _gpkg_geometry(blob: bytes | None) -> BaseGeometry | None:
    """A geometry of a GeoPackage geometry blob (header, optional envelope, WKB)."""
    if blob is None:
        return None
    assert blob[:2] == b"GP", blob[:8]
    envelope = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(blob[3] >> 1) & 0b111]
    geometry: BaseGeometry = shapely.from_wkb(blob[8 + envelope :])
    return geometry


def _rows(path: Path, table: str, key: str) -> dict[UUID, dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute(f'SELECT * FROM "{table}"').fetchall()
    rows = {UUID(str(row[key])): dict(row) for row in found}
    assert len(rows) == len(found), f"{table}: {key} is not unique"
    return rows


def _value(kind: FieldType, raw: object) -> object:
    """A value as stored in a GeoPackage, as the value it means (exactly; no tolerance)."""
    if raw is None:
        return None
    if kind is FieldType.BOOLEAN:
        assert raw in (0, 1), raw
        return bool(raw)
    if kind is FieldType.DATE:
        return date.fromisoformat(str(raw))
    if kind is FieldType.DATETIME:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    if kind is FieldType.REAL:
        assert isinstance(raw, float), raw
        return struct.pack("<d", raw)  # bit for bit: 0.1 must stay 0.1
    assert isinstance(raw, int if kind is FieldType.INTEGER else str), raw
    return raw


def test_gdal_reads_every_field_of_every_collection_exactly(
    sample_server: LiveServer, tmp_path: Path
) -> None:
    listed = sample_server.server.client.get("/collections").json()["collections"]
    collections = sorted(c["id"] for c in listed)
    assert {"helsinki.sites", "helsinki.inspections", "helsinki.extremes"} <= set(collections)
    out = tmp_path / "read.gpkg"
    # a small page size: every layer is read in several pages, and the types GDAL would guess
    # from the first page (32-bit integers) do not fit the later ones
    done = subprocess.run(
        ["ogr2ogr", "-f", "GPKG", str(out), f"OAPIF:{sample_server.url}/", "-oo", "PAGE_SIZE=50"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    catalog = sample_server.server.catalog
    beyond_32_bits: dict[str, int] = {}
    for cid in collections:
        service, schema = catalog.get_layer(cid)
        source = sample_server.server.data_dir / "features" / f"{service}.gpkg"
        expected = _rows(source, schema.name, "globalid")
        read = _rows(out, cid, "id")
        assert read.keys() == expected.keys(), cid
        for key, row in expected.items():
            got = read[key]
            for field in schema.fields:
                want = _value(field.type, row[field.name])
                have = _value(field.type, got[field.name])
                assert have == want, f"{cid} {key} {field.name}: {have!r} != {want!r}"
                if isinstance(want, int) and not -(2**31) <= want < 2**31:
                    beyond_32_bits[cid] = beyond_32_bits.get(cid, 0) + 1
            if not schema.is_table:
                want_geometry = _gpkg_geometry(row["geom"])
                have_geometry = _gpkg_geometry(got["geom"])
                if want_geometry is None:
                    assert have_geometry is None, f"{cid} {key}"
                else:
                    assert have_geometry is not None, f"{cid} {key}"
                    assert have_geometry.equals_exact(want_geometry, tolerance=0), f"{cid} {key}"
    # the 64-bit values GDAL used to cut to 2147483647 were there, and came back whole
    assert beyond_32_bits["helsinki.sites"] >= 100, beyond_32_bits
    assert beyond_32_bits["helsinki.inspections"] >= 100, beyond_32_bits
    assert beyond_32_bits["helsinki.extremes"] == 5, beyond_32_bits


# --- GDAL's -where on a date field becomes the datetime parameter --------------------------------


def _gdal_ids(url: str, collection: str, where: str, out: Path) -> tuple[set[UUID], str]:
    """The ids of the features GDAL's OAPIF driver reads with ``-where``, and its debug log."""
    done = subprocess.run(
        [
            "ogr2ogr",
            "-f",
            "GPKG",
            str(out),
            f"OAPIF:{url}/",
            collection,
            "-oo",
            "PAGE_SIZE=1000",
            "-where",
            where,
            "--config",
            "CPL_DEBUG",
            "ON",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert not errors, errors
    with sqlite3.connect(out) as conn:
        ids = {UUID(str(row[0])) for row in conn.execute(f'SELECT id FROM "{collection}"')}
    return ids, done.stderr


@pytest.mark.parametrize(
    ("collection", "field"),
    [("helsinki.sites", "last_inspected"), ("helsinki.inspections", "inspected_on")],
)
def test_gdal_where_on_the_date_field_reads_exactly_the_rows_of_the_same_sql(
    sample_server: LiveServer, tmp_path: Path, collection: str, field: str
) -> None:
    catalog = sample_server.server.catalog
    service, schema = catalog.get_layer(collection)
    temporal = schema.temporal_field
    assert temporal is not None
    assert temporal.name == field
    source = sample_server.server.data_dir / "features" / f"{service}.gpkg"
    with sqlite3.connect(source) as conn:
        days = [
            str(row[0])
            for row in conn.execute(
                f'SELECT DISTINCT "{field}" FROM "{schema.name}" '
                f'WHERE "{field}" IS NOT NULL ORDER BY 1'
            )
        ]
        nulls = conn.execute(
            f'SELECT count(*) FROM "{schema.name}" WHERE "{field}" IS NULL'
        ).fetchone()[0]
    assert len(days) >= 4, days
    if collection == "helsinki.sites":
        assert nulls > 0, "rows without a date are there, and must not be read"
    middle, later = days[len(days) // 2], days[len(days) * 3 // 4]
    for where, sent in [
        (f"{field} = '{middle}'", f"{middle}T"),
        (f"{field} >= '{middle}'", f"{middle}T%2F.."),
        (f"{field} <= '{middle}'", f"..%2F{middle}T"),
        (f"{field} BETWEEN '{middle}' AND '{later}'", f"{middle}T%2F{later}T"),
    ]:
        with sqlite3.connect(source) as conn:
            expected = {
                UUID(str(row[0]))
                for row in conn.execute(f'SELECT globalid FROM "{schema.name}" WHERE {where}')
            }
        assert expected, where
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.gpkg"
        read, log = _gdal_ids(sample_server.url, collection, where, out)
        # the condition went to the server as the datetime parameter (GDAL 3.6 sends a date
        # as "2024-01-31T"), and GDAL took the server's answer as it is
        assert re.search(rf"[?&]datetime={re.escape(sent)}(?=[&)\s])", log), log[-2000:]
        assert read == expected, where
