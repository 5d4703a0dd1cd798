"""The GeoPackage core both GeoPackage writers start from."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from offmaps.geopackage import create_core


def test_create_core_writes_the_header_and_the_core_tables_in_order(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "core.gpkg")
    try:
        create_core(conn, ["CREATE TABLE gpkg_geometry_columns (table_name TEXT)"])
        conn.commit()
        assert conn.execute("PRAGMA application_id").fetchone() == (0x47504B47,)
        assert conn.execute("PRAGMA user_version").fetchone() == (10200,)
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master ORDER BY rowid")]
    finally:
        conn.close()
    assert [t for t in tables if not t.startswith("sqlite_")] == [
        "gpkg_spatial_ref_sys",
        "gpkg_contents",
        "gpkg_geometry_columns",
        "gpkg_extensions",
    ]
