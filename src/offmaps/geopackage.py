"""The GeoPackage core (OGC GeoPackage 1.2, clause 1.1) that every GeoPackage offmaps writes shares.

A GeoPackage is a SQLite file whose header carries the application id ``GPKG`` and the version
written, and which holds the core tables ``gpkg_spatial_ref_sys``, ``gpkg_contents`` and
``gpkg_extensions``. The tile container (:mod:`offmaps.containers.geopackage`) and the feature
store (:mod:`offmaps.features.geopackage`) both start their files with :func:`create_core`, and
add the tables of their content (tile matrices; geometry columns and R-trees) and the rows of
the spatial reference systems they use.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["APPLICATION_ID", "CORE_TABLES", "USER_VERSION", "create_core"]

APPLICATION_ID = 0x47504B47
"""``GPKG``: the SQLite application id of GeoPackage 1.2 and later."""
USER_VERSION = 10200
"""GeoPackage 1.2.0, the version written."""

_SPATIAL_REF_SYS = (
    "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, "
    "srs_id INTEGER NOT NULL PRIMARY KEY, organization TEXT NOT NULL, "
    "organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT)"
)
_CONTENTS = (
    "CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, "
    "data_type TEXT NOT NULL, identifier TEXT UNIQUE, description TEXT DEFAULT '', "
    "last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), "
    "min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER, "
    "CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id))"
)
_EXTENSIONS = (
    "CREATE TABLE gpkg_extensions (table_name TEXT, column_name TEXT, "
    "extension_name TEXT NOT NULL, definition TEXT NOT NULL, scope TEXT NOT NULL, "
    "CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))"
)
CORE_TABLES = (_SPATIAL_REF_SYS, _CONTENTS, _EXTENSIONS)
"""The ``CREATE TABLE`` statements of the core tables, as the standard defines them."""


def create_core(conn: sqlite3.Connection, content_tables: Sequence[str] = ()) -> None:
    """Make the empty SQLite database of ``conn`` a GeoPackage: set its application id and
    version and create the core tables.

    Args:
        conn: a connection to a new, empty database (in a transaction or not).
        content_tables: ``CREATE`` statements of the tables of the file's content
            (``gpkg_geometry_columns``, the tile matrix tables), run after ``gpkg_contents``
            and before ``gpkg_extensions``, the order in which the standard lists them.
    """
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {USER_VERSION}")
    for statement in (_SPATIAL_REF_SYS, _CONTENTS, *content_tables, _EXTENSIONS):
        conn.execute(statement)
