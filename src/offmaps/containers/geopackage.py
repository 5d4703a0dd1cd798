"""GeoPackage tiles (OGC GeoPackage 1.2.1, clause 2.2): one tile pyramid table in a SQLite file.

GeoPackage rows count from the top like ``Tile.y``, and any tile matrix set whose levels share a
top-left origin and a full extent fits, in any CRS with an EPSG code. WebP tiles use the
``gpkg_webp`` extension; Mapbox vector tiles follow the *draft* OGC GeoPackage vector tiles
extensions (Image Matters' ``im_vector_tiles`` and ``im_vector_tiles_mapbox`` from the OGC Vector
Tiles Pilot and Testbed-15), which are not adopted standards: GDAL reads those files as plain
SQLite, not as tiles.

What GeoPackage has no column for (tile format and compression, attribution, center,
``vector_layers``, the OGC TileMatrixSet JSON) goes into a small ``offmaps_tileset`` table of
key/value rows, registered in ``gpkg_extensions`` as the ``offmaps_tileset`` extension. Files
without it (written by GDAL and others) are read from the core tables alone.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import morecantile
import pydantic
import pyproj
from morecantile import TileMatrixSet
from pyproj.enums import WktVersion

from offmaps.containers._common import ReaderBase, archive_refusal
from offmaps.containers._sqlite import (
    SQLiteWriterBase,
    open_read_only,
    quick_check,
    quote_identifier,
    read_error,
    table_exists,
    tile_blob,
)
from offmaps.containers.base import (
    TilesetMetadata,
    detect_tile_format,
    is_web_mercator_quad,
    tms_to_json,
    web_mercator_quad,
)
from offmaps.errors import (
    ContainerCorruptError,
    ContainerError,
    InvalidTileError,
    OffmapsError,
    UnknownTileMatrixSetError,
    UnsupportedTileFormatError,
    UnsupportedTileMatrixSetError,
)
from offmaps.geopackage import APPLICATION_ID, USER_VERSION, create_core
from offmaps.tiling.tms import tms_crs, tms_from_json
from offmaps.types import BBox, Tile, TileCompression, TileFormat

__all__ = ["GeoPackageReader", "GeoPackageWriter"]

_OLD_APPLICATION_IDS = (0x47503130, 0x47503131)  # GP10, GP11

METADATA_TABLE = "offmaps_tileset"
"""The extension table holding what GeoPackage has no column for."""
_DEFAULT_TABLE = "tiles"
_MAX_PROBLEMS = 20
_REL_TOL = 1e-6

_WEBP_DEFINITION = "http://www.geopackage.org/spec121/#extension_tiles_webp"
_ZOOM_OTHER_DEFINITION = "http://www.geopackage.org/spec121/#extension_zoom_other_intervals"
_VT_DEFINITION = "https://github.com/jyutzler/ogc-tb-15-opf/blob/master/spec/1-vte.adoc"
_MVT_DEFINITION = "https://github.com/jyutzler/ogc-tb-15-opf/blob/master/spec/2-mvte.adoc"
_OFFMAPS_DEFINITION = (
    "offmaps tile set metadata: key/value rows per tile table (format, compression, name, "
    "attribution, center, vector_layers, OGC TileMatrixSet JSON); see the offmaps docs"
)

_TILE_TABLES = (
    "CREATE TABLE gpkg_tile_matrix_set (table_name TEXT NOT NULL PRIMARY KEY, "
    "srs_id INTEGER NOT NULL, min_x DOUBLE NOT NULL, min_y DOUBLE NOT NULL, "
    "max_x DOUBLE NOT NULL, max_y DOUBLE NOT NULL, "
    "CONSTRAINT fk_gtms_table_name FOREIGN KEY (table_name) "
    "REFERENCES gpkg_contents(table_name), "
    "CONSTRAINT fk_gtms_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id))",
    "CREATE TABLE gpkg_tile_matrix (table_name TEXT NOT NULL, zoom_level INTEGER NOT NULL, "
    "matrix_width INTEGER NOT NULL, matrix_height INTEGER NOT NULL, "
    "tile_width INTEGER NOT NULL, tile_height INTEGER NOT NULL, "
    "pixel_x_size DOUBLE NOT NULL, pixel_y_size DOUBLE NOT NULL, "
    "CONSTRAINT pk_ttm PRIMARY KEY (table_name, zoom_level), "
    "CONSTRAINT fk_tmm_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name))",
)
_METADATA_SCHEMA = (
    "CREATE TABLE offmaps_tileset (table_name TEXT NOT NULL, key TEXT NOT NULL, "
    "value TEXT NOT NULL, PRIMARY KEY (table_name, key))"
)

_VT_SCHEMA = (
    "CREATE TABLE gpkgext_vt_layers (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "table_name TEXT NOT NULL, name TEXT NOT NULL, description TEXT, minzoom INTEGER, "
    "maxzoom INTEGER, attributes_table_name TEXT, UNIQUE (table_name, name))",
    "CREATE TABLE gpkgext_vt_fields (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "layer_id INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, "
    "UNIQUE (layer_id, name), CONSTRAINT fk_vt_layer FOREIGN KEY (layer_id) "
    "REFERENCES gpkgext_vt_layers(id))",
)

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RESERVED_PREFIXES = ("gpkg", "sqlite", "rtree", "offmaps_")


class _Matrix(NamedTuple):
    """One row of ``gpkg_tile_matrix``."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    pixel_x: float
    pixel_y: float


class _TileSQL(NamedTuple):
    """The statements on one tile pyramid table."""

    create: str
    insert: str
    first: str
    zooms: str
    find: str
    scan: str
    count_all: str


def _tile_sql(table: str) -> _TileSQL:
    """SQL for the tile table ``table``; the name is quoted, so any name read from a file is
    safe."""
    t = quote_identifier(table)
    return _TileSQL(
        create=(
            f"CREATE TABLE {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "zoom_level INTEGER NOT NULL, tile_column INTEGER NOT NULL, "
            "tile_row INTEGER NOT NULL, tile_data BLOB NOT NULL, "
            "UNIQUE (zoom_level, tile_column, tile_row))"
        ),
        insert=(
            f"INSERT OR REPLACE INTO {t} (zoom_level, tile_column, tile_row, tile_data) "  # noqa: S608
            "VALUES (?, ?, ?, ?)"
        ),
        first=f"SELECT tile_data FROM {t} LIMIT 1",  # noqa: S608
        zooms=f"SELECT min(zoom_level), max(zoom_level) FROM {t}",  # noqa: S608
        find=(
            f"SELECT tile_data FROM {t} WHERE zoom_level = ? AND tile_column = ? "  # noqa: S608
            "AND tile_row = ?"
        ),
        scan=f"SELECT zoom_level, tile_column, tile_row, tile_data FROM {t}",  # noqa: S608
        count_all=f"SELECT count(*) FROM {t}",  # noqa: S608
    )


class _Grid(NamedTuple):
    """What the GeoPackage tables say about a tile matrix set."""

    epsg: int
    extent: tuple[float, float, float, float]  # min_x, min_y, max_x, max_y in x/y order


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= _REL_TOL * scale


def _epsg_of(tms: TileMatrixSet) -> int | None:
    crs = tms_crs(tms)
    code = crs.to_epsg()
    if code is None and crs.to_authority() == ("OGC", "CRS84"):
        # GeoPackage stores x/y (lon/lat) whatever the axis order: CRS84 is EPSG:4326 there.
        code = 4326
    return code


def _matrix_size(tms: TileMatrixSet, z: int) -> tuple[int, int] | None:
    """Width and height of level ``z`` of ``tms`` (None when it has no such level).

    Looked up by id rather than with ``tms.matrix``, which invents missing levels.
    """
    for matrix in tms.tileMatrices:
        if matrix.id == str(z):
            return matrix.matrixWidth, matrix.matrixHeight
    return None


def _level_extent(tms: TileMatrixSet, z: int) -> tuple[float, float, float, float]:
    matrix = tms.matrix(z)
    top_left = tms.xy_bounds(morecantile.Tile(0, 0, z))
    bottom_right = tms.xy_bounds(
        morecantile.Tile(matrix.matrixWidth - 1, matrix.matrixHeight - 1, z)
    )
    return top_left.left, bottom_right.bottom, bottom_right.right, top_left.top


def _grid_for(tms: TileMatrixSet, path: Path | str) -> _Grid:
    """The GeoPackage grid of ``tms``, or UnsupportedTileMatrixSetError saying why not."""

    def refuse(reason: str) -> UnsupportedTileMatrixSetError:
        return UnsupportedTileMatrixSetError(
            f"GeoPackage cannot hold tiles of {tms.id}: {reason}", path=path
        )

    try:
        code = _epsg_of(tms)
    except pyproj.exceptions.CRSError as exc:
        raise refuse(f"its CRS is not understood ({exc})") from exc
    if code is None:
        raise refuse(f"its CRS {tms.crs.srs} has no EPSG code")
    extent: tuple[float, float, float, float] | None = None
    for matrix in tms.tileMatrices:
        if matrix.cornerOfOrigin != "topLeft":
            raise refuse(f"level {matrix.id} has its origin at the {matrix.cornerOfOrigin}")
        if matrix.variableMatrixWidths:
            raise refuse(f"level {matrix.id} has variable matrix widths")
        level = _level_extent(tms, int(matrix.id))
        if extent is None:
            extent = level
            continue
        scale = max(extent[2] - extent[0], extent[3] - extent[1])
        if not all(_close(a, b, scale) for a, b in zip(extent, level, strict=True)):
            raise refuse(
                f"level {matrix.id} covers {level}, not the extent {extent} of the first level "
                "(GeoPackage needs one origin and extent for every level)"
            )
    if extent is None:
        raise refuse("it has no tile matrix")
    return _Grid(code, extent)


def _check_table_name(name: str) -> str:
    if not _TABLE_NAME.match(name) or name.lower().startswith(_RESERVED_PREFIXES):
        raise ContainerError(
            f"{name!r} cannot name a GeoPackage tile table: use letters, digits and _, "
            f"not starting with a digit or with {', '.join(_RESERVED_PREFIXES)}"
        )
    return name


def _srs_rows(code: int) -> list[tuple[str, int, str, int, str, str]]:
    wgs84 = pyproj.CRS.from_epsg(4326)
    rows = [
        ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian SRS"),
        ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic SRS"),
        (
            "WGS 84 geodetic",
            4326,
            "EPSG",
            4326,
            wgs84.to_wkt(WktVersion.WKT1_GDAL),
            "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid",
        ),
    ]
    if code != 4326:
        crs = pyproj.CRS.from_epsg(code)
        rows.append((crs.name, code, "EPSG", code, crs.to_wkt(WktVersion.WKT1_GDAL), crs.name))
    return rows


class GeoPackageWriter(SQLiteWriterBase):
    """Writes a GeoPackage 1.2 with one tile pyramid table, atomically.

    Raster tiles (PNG, JPEG, WebP) make a standard ``tiles`` content that GDAL, QGIS and the
    OGC validator accept. Mapbox vector tiles are stored per the *draft* GeoPackage vector tiles
    extensions (``vector-tiles`` data type, ``im_vector_tiles`` and ``im_vector_tiles_mapbox``
    rows in ``gpkg_extensions``, layers in ``gpkgext_vt_layers``/``gpkgext_vt_fields``).

    Args:
        path: the ``.gpkg`` file to create.
        metadata: the tile set's metadata; any tile matrix set whose levels share a top-left
            origin and extent, in a CRS with an EPSG code.
        overwrite: replace an existing file on commit.
        table_name: the tile pyramid table (``tiles`` by default).

    Raises:
        UnsupportedTileMatrixSetError: for tile matrix sets GeoPackage cannot describe.
        DestinationExistsError: when ``path`` exists and ``overwrite`` is false.
        ContainerWriteError: when the file cannot be written (read-only folder, full disk).
    """

    what = "GeoPackage"
    kind_name = "a GeoPackage of tiles"

    @classmethod
    def refusal(cls, path: Path) -> str | None:
        """Why ``path`` is not a GeoPackage of tiles only, or ``None`` when it is: a GeoPackage
        holding feature or attribute tables too is never replaced, as they would be lost."""
        reason = archive_refusal(path, GeoPackageReader)
        if reason is not None:
            return reason
        try:
            conn = open_read_only(path, what="GeoPackage")
        except ContainerError as exc:
            return str(exc).removeprefix(f"{path}: ")
        try:
            others = [
                f"{name} ({kind})"
                for name, kind in conn.execute(
                    "SELECT table_name, data_type FROM gpkg_contents "
                    "WHERE data_type NOT IN ('tiles', 'vector-tiles') ORDER BY table_name"
                )
            ]
        except sqlite3.Error as exc:
            return str(read_error(path, exc, what="GeoPackage")).removeprefix(f"{path}: ")
        finally:
            conn.close()
        if others:
            return f"it holds other tables than tiles: {', '.join(others[:5])}"
        return None

    def __init__(
        self,
        path: Path | str,
        metadata: TilesetMetadata,
        *,
        overwrite: bool = False,
        table_name: str = _DEFAULT_TABLE,
    ) -> None:
        self.grid = _grid_for(metadata.tms, path)
        self.table_name = _check_table_name(table_name)
        self._sql = _tile_sql(self.table_name)
        super().__init__(path, metadata, overwrite=overwrite)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        create_core(conn, _TILE_TABLES)
        conn.execute(_METADATA_SCHEMA)
        conn.execute(self._sql.create)

    def _add(self, tile: Tile, data: bytes) -> None:
        self._buffer((tile.z, tile.x, tile.y, data), len(data))

    def _insert(self, conn: sqlite3.Connection, rows: list[Sequence[Any]]) -> None:
        conn.executemany(self._sql.insert, rows)

    def _data_extent(self, meta: TilesetMetadata) -> tuple[float, float, float, float] | None:
        """Bounds of the content in the tile matrix set's CRS (x/y order)."""
        tms = meta.tms
        if self._extent:
            z = max(self._extent)
            x0, y0, x1, y1 = self._extent[z]
            top_left = tms.xy_bounds(morecantile.Tile(x0, y0, z))
            bottom_right = tms.xy_bounds(morecantile.Tile(x1, y1, z))
            return top_left.left, bottom_right.bottom, bottom_right.right, top_left.top
        if meta.bounds is None:
            return None
        to_crs = pyproj.Transformer.from_crs(
            pyproj.CRS.from_epsg(4326), pyproj.CRS.from_epsg(self.grid.epsg), always_xy=True
        )
        values = to_crs.transform_bounds(*meta.bounds)
        if not all(math.isfinite(v) for v in values):
            return None
        return values[0], values[1], values[2], values[3]

    def _complete(self, conn: sqlite3.Connection, metadata: TilesetMetadata) -> None:
        table = self.table_name
        vector = metadata.tile_format is TileFormat.MVT
        conn.executemany(
            "INSERT INTO gpkg_spatial_ref_sys (srs_name, srs_id, organization, "
            "organization_coordsys_id, definition, description) VALUES (?, ?, ?, ?, ?, ?)",
            _srs_rows(self.grid.epsg),
        )
        extent = self._data_extent(metadata)
        conn.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
            "min_x, min_y, max_x, max_y, srs_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                table,
                "vector-tiles" if vector else "tiles",
                metadata.name,
                metadata.description,
                *(extent if extent is not None else (None, None, None, None)),
                self.grid.epsg,
            ),
        )
        conn.execute(
            "INSERT INTO gpkg_tile_matrix_set (table_name, srs_id, min_x, min_y, max_x, max_y) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (table, self.grid.epsg, *self.grid.extent),
        )
        levels = sorted(self._extent)
        rows = []
        for z in levels:
            matrix = metadata.tms.matrix(z)
            rows.append(
                (
                    table,
                    z,
                    matrix.matrixWidth,
                    matrix.matrixHeight,
                    matrix.tileWidth,
                    matrix.tileHeight,
                    matrix.cellSize,
                    matrix.cellSize,
                )
            )
        conn.executemany("INSERT INTO gpkg_tile_matrix VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        extensions: list[tuple[str, str | None, str, str, str]] = [
            (METADATA_TABLE, None, "offmaps_tileset", _OFFMAPS_DEFINITION, "read-write"),
        ]
        if metadata.tile_format is TileFormat.WEBP:
            extensions.append((table, "tile_data", "gpkg_webp", _WEBP_DEFINITION, "read-write"))
        if self._zoom_other(rows):
            extensions.append(
                (table, "tile_data", "gpkg_zoom_other", _ZOOM_OTHER_DEFINITION, "read-write")
            )
        if vector:
            for statement in _VT_SCHEMA:
                conn.execute(statement)
            extensions += [
                ("gpkgext_vt_layers", None, "im_vector_tiles", _VT_DEFINITION, "read-write"),
                ("gpkgext_vt_fields", None, "im_vector_tiles", _VT_DEFINITION, "read-write"),
                (table, "tile_data", "im_vector_tiles", _VT_DEFINITION, "read-write"),
                (table, "tile_data", "im_vector_tiles_mapbox", _MVT_DEFINITION, "read-write"),
            ]
            self._write_vector_layers(conn, metadata.vector_layers or [])
        conn.executemany("INSERT INTO gpkg_extensions VALUES (?, ?, ?, ?, ?)", extensions)
        conn.executemany(
            "INSERT INTO offmaps_tileset (table_name, key, value) VALUES (?, ?, ?)",
            [(table, key, value) for key, value in _offmaps_rows(metadata).items()],
        )

    @staticmethod
    def _zoom_other(rows: list[tuple[Any, ...]]) -> bool:
        """Whether consecutive levels do not halve the pixel size (needs gpkg_zoom_other)."""
        for previous, current in itertools.pairwise(rows):
            if current[1] == previous[1] + 1 and not math.isclose(
                current[6] * 2, previous[6], rel_tol=1e-5
            ):
                return True
        return False

    def _write_vector_layers(self, conn: sqlite3.Connection, layers: list[dict[str, Any]]) -> None:
        for layer in layers:
            name = layer.get("id")
            if not isinstance(name, str):
                continue
            cursor = conn.execute(
                "INSERT OR IGNORE INTO gpkgext_vt_layers (table_name, name, description, "
                "minzoom, maxzoom) VALUES (?, ?, ?, ?, ?)",
                (
                    self.table_name,
                    name,
                    str(layer.get("description", "")),
                    layer.get("minzoom") if isinstance(layer.get("minzoom"), int) else None,
                    layer.get("maxzoom") if isinstance(layer.get("maxzoom"), int) else None,
                ),
            )
            fields = layer.get("fields")
            if cursor.rowcount != 1 or not isinstance(fields, dict):
                continue
            conn.executemany(
                "INSERT OR IGNORE INTO gpkgext_vt_fields (layer_id, name, type) VALUES (?, ?, ?)",
                [(cursor.lastrowid, str(k), str(v)) for k, v in fields.items()],
            )


def _offmaps_rows(meta: TilesetMetadata) -> dict[str, str]:
    rows = {
        "format": meta.tile_format.value,
        "compression": meta.tile_compression.value,
        "name": meta.name,
        "description": meta.description,
        "attribution": meta.attribution,
        "tms_id": meta.tms.id or "",
        "tms": tms_to_json(meta.tms),
        "extra": json.dumps(meta.extra, sort_keys=True),
    }
    if meta.bounds is not None:
        rows["bounds"] = json.dumps(list(meta.bounds))
    if meta.center is not None:
        rows["center"] = json.dumps(list(meta.center))
    if meta.minzoom is not None:
        rows["minzoom"] = str(meta.minzoom)
    if meta.maxzoom is not None:
        rows["maxzoom"] = str(meta.maxzoom)
    if meta.vector_layers is not None:
        rows["vector_layers"] = json.dumps(meta.vector_layers)
    return rows


def _json_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _finite_numbers(value: Any, count: int) -> list[float] | None:
    if not isinstance(value, list) or len(value) != count:
        return None
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


class GeoPackageReader(ReaderBase):
    """Reads the tiles of a GeoPackage (written by offmaps, GDAL or others), opened read-only.

    Args:
        path: the ``.gpkg`` file.
        table_name: which tile table to read when there are several (the first by name when
            not given).

    Raises:
        ContainerError: when the file does not exist.
        ContainerCorruptError: when it is not a SQLite database, lacks the GeoPackage tile
            tables, or they are inconsistent.
        UnsupportedTileMatrixSetError: when the tile matrix set cannot be described (a CRS
            without EPSG code, non-square pixels).
    """

    def __init__(self, path: Path | str, *, table_name: str | None = None) -> None:
        self.path = Path(path)
        self._conn = open_read_only(self.path, what="GeoPackage")
        try:
            self._read_structure(table_name)
        except sqlite3.Error as exc:
            self.close()
            raise read_error(self.path, exc, what="GeoPackage") from exc
        except OffmapsError:
            self.close()
            raise

    # --- structure and metadata -------------------------------------------------------------

    def _corrupt(self, message: str) -> ContainerCorruptError:
        return ContainerCorruptError(f"{self.path}: {message}", path=self.path)

    def _read_structure(self, table_name: str | None) -> None:
        conn = self._conn
        for table in ("gpkg_contents", "gpkg_spatial_ref_sys", "gpkg_tile_matrix_set"):
            if not table_exists(conn, table):
                raise self._corrupt(f"not a GeoPackage tile set: it has no {table!r} table")
        if not table_exists(conn, "gpkg_tile_matrix"):
            raise self._corrupt("not a GeoPackage tile set: it has no 'gpkg_tile_matrix' table")
        contents = conn.execute(
            "SELECT table_name, data_type, identifier, description, min_x, min_y, max_x, max_y "
            "FROM gpkg_contents WHERE data_type IN ('tiles', 'vector-tiles') "
            "ORDER BY table_name"
        ).fetchall()
        if table_name is not None:
            contents = [row for row in contents if row[0] == table_name]
        if not contents or not isinstance(contents[0][0], str):
            which = f"no tile table {table_name!r}" if table_name else "no tile table"
            raise self._corrupt(f"the GeoPackage has {which} in gpkg_contents")
        table, data_type, identifier, description, *content_extent = contents[0]
        self.table_name: str = table
        self._sql = _tile_sql(table)
        if not table_exists(conn, table):
            raise self._corrupt(f"tile table {table!r} is listed in gpkg_contents but missing")
        set_row = conn.execute(
            "SELECT srs_id, min_x, min_y, max_x, max_y FROM gpkg_tile_matrix_set "
            "WHERE table_name = ?",
            (table,),
        ).fetchone()
        if set_row is None:
            raise self._corrupt(f"tile table {table!r} has no row in gpkg_tile_matrix_set")
        srs_id, *set_extent = set_row
        if not isinstance(srs_id, int) or not all(
            isinstance(v, int | float) and math.isfinite(v) for v in set_extent
        ):
            raise self._corrupt(f"gpkg_tile_matrix_set row of {table!r} is malformed")
        min_x, min_y, max_x, max_y = (float(v) for v in set_extent)
        if not (min_x < max_x and min_y < max_y):
            raise self._corrupt(f"gpkg_tile_matrix_set extent of {table!r} is empty")
        self._matrices = self._read_matrices(table)
        extra_rows: dict[str, str] = {}
        if table_exists(conn, METADATA_TABLE):
            for key, value in conn.execute(
                "SELECT key, value FROM offmaps_tileset WHERE table_name = ?", (table,)
            ):
                if isinstance(key, str) and isinstance(value, str):
                    extra_rows[key] = value
        first = self._first_tile()
        tms = self._read_tms(extra_rows, srs_id, (min_x, min_y, max_x, max_y))
        tile_format, compression = self._read_format(extra_rows, data_type, first)
        self._declared_format = "format" in extra_rows
        bounds = self._read_bounds(extra_rows, srs_id, content_extent, set_extent)
        low, high = conn.execute(self._sql.zooms).fetchone()
        minzoom = _int_or_none(extra_rows.get("minzoom"))
        maxzoom = _int_or_none(extra_rows.get("maxzoom"))
        center = _finite_numbers(_json_value(extra_rows.get("center")), 3)
        layers = _json_value(extra_rows.get("vector_layers"))
        extra = _json_value(extra_rows.get("extra"))
        self._metadata = TilesetMetadata(
            tile_format=tile_format,
            tms=tms,
            name=extra_rows.get("name") or (identifier if isinstance(identifier, str) else table),
            tile_compression=compression,
            bounds=bounds,
            minzoom=minzoom if minzoom is not None else low if isinstance(low, int) else None,
            maxzoom=maxzoom if maxzoom is not None else high if isinstance(high, int) else None,
            center=(center[0], center[1], int(center[2])) if center is not None else None,
            description=extra_rows.get(
                "description", description if isinstance(description, str) else ""
            ),
            attribution=extra_rows.get("attribution", ""),
            vector_layers=(
                [layer for layer in layers if isinstance(layer, dict)]
                if isinstance(layers, list)
                else None
            ),
            extra=({str(k): str(v) for k, v in extra.items()} if isinstance(extra, dict) else {}),
        )

    def _read_matrices(self, table: str) -> dict[int, _Matrix]:
        matrices: dict[int, _Matrix] = {}
        for row in self._conn.execute(
            "SELECT zoom_level, matrix_width, matrix_height, tile_width, tile_height, "
            "pixel_x_size, pixel_y_size FROM gpkg_tile_matrix WHERE table_name = ? "
            "ORDER BY zoom_level",
            (table,),
        ):
            z, *ints = row[:5]
            sizes = row[5:]
            if not (
                isinstance(z, int)
                and 0 <= z <= 64
                and all(isinstance(v, int) and 0 < v < 2**53 for v in ints)
                and all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in sizes)
            ):
                raise self._corrupt(f"gpkg_tile_matrix row {tuple(row)!r} of {table!r} is invalid")
            width, height, tile_width, tile_height = ints
            matrices[z] = _Matrix(
                width, height, tile_width, tile_height, float(sizes[0]), float(sizes[1])
            )
        return matrices

    def _first_tile(self) -> bytes | None:
        row = self._conn.execute(self._sql.first).fetchone()
        if row is None or not isinstance(row[0], bytes) or not row[0]:
            return None
        data: bytes = row[0]
        return data

    def _read_tms(
        self,
        rows: dict[str, str],
        srs_id: int,
        extent: tuple[float, float, float, float],
    ) -> TileMatrixSet:
        if "tms" in rows:
            try:
                tms = tms_from_json(rows["tms"], source=f"{self.path} ({METADATA_TABLE})")
            except UnknownTileMatrixSetError as exc:
                raise self._corrupt(str(exc)) from exc
            return web_mercator_quad() if is_web_mercator_quad(tms) else tms
        code = self._epsg_code(srs_id)
        if code == 3857 and self._is_web_mercator_quad(extent):
            return web_mercator_quad()
        return self._custom_tms(code, extent)

    def _epsg_code(self, srs_id: int) -> int:
        row = self._conn.execute(
            "SELECT organization, organization_coordsys_id, definition FROM "
            "gpkg_spatial_ref_sys WHERE srs_id = ?",
            (srs_id,),
        ).fetchone()
        if row is None:
            raise self._corrupt(f"srs_id {srs_id} is not in gpkg_spatial_ref_sys")
        organization, code, definition = row
        if (
            isinstance(organization, str)
            and organization.upper() == "EPSG"
            and isinstance(code, int)
        ):
            return code
        found: int | None = None
        if isinstance(definition, str) and definition != "undefined":
            try:
                found = pyproj.CRS.from_wkt(definition).to_epsg()
            except pyproj.exceptions.CRSError:
                found = None
        if found is None:
            raise UnsupportedTileMatrixSetError(
                f"{self.path}: the tile matrix set's CRS (srs_id {srs_id}, {organization}) has "
                "no EPSG code",
                path=self.path,
            )
        return found

    def _is_web_mercator_quad(self, extent: tuple[float, float, float, float]) -> bool:
        reference = web_mercator_quad()
        world = _level_extent(reference, 0)
        scale = world[2] - world[0]
        if not all(_close(a, b, scale) for a, b in zip(extent, world, strict=True)):
            return False
        for z, matrix in self._matrices.items():
            if z > reference.maxzoom:
                return False
            level = reference.matrix(z)
            if (matrix.width, matrix.height, matrix.tile_width, matrix.tile_height) != (
                level.matrixWidth,
                level.matrixHeight,
                level.tileWidth,
                level.tileHeight,
            ) or not math.isclose(matrix.pixel_x, level.cellSize, rel_tol=1e-6):
                return False
        return True

    def _custom_tms(self, code: int, extent: tuple[float, float, float, float]) -> TileMatrixSet:
        """A TileMatrixSet built from ``gpkg_tile_matrix`` (files not written by offmaps)."""
        try:
            crs = pyproj.CRS.from_epsg(code)
        except pyproj.exceptions.CRSError as exc:
            raise UnsupportedTileMatrixSetError(
                f"{self.path}: EPSG:{code} is not known to PROJ", path=self.path
            ) from exc
        first_axis = crs.axis_info[0] if crs.axis_info else None
        north_first = first_axis is not None and first_axis.direction in ("north", "south")
        if crs.is_geographic:
            meters_per_unit = 2 * math.pi * 6378137 / 360
        else:
            meters_per_unit = first_axis.unit_conversion_factor if first_axis else 1.0
        min_x, _, _, max_y = extent
        origin = [max_y, min_x] if north_first else [min_x, max_y]
        levels = []
        for z, matrix in sorted(self._matrices.items()):
            if not math.isclose(matrix.pixel_x, matrix.pixel_y, rel_tol=1e-9):
                raise UnsupportedTileMatrixSetError(
                    f"{self.path}: level {z} has non-square pixels "
                    f"({matrix.pixel_x} x {matrix.pixel_y})",
                    path=self.path,
                )
            levels.append(
                {
                    "id": str(z),
                    "scaleDenominator": matrix.pixel_x * meters_per_unit / 0.00028,
                    "cellSize": matrix.pixel_x,
                    "cornerOfOrigin": "topLeft",
                    "pointOfOrigin": origin,
                    "tileWidth": matrix.tile_width,
                    "tileHeight": matrix.tile_height,
                    "matrixWidth": matrix.width,
                    "matrixHeight": matrix.height,
                }
            )
        if not levels:
            raise self._corrupt(f"tile table {self.table_name!r} has no gpkg_tile_matrix row")
        name = re.sub(r"[^\w\-]", "_", self.table_name)
        try:
            return TileMatrixSet.model_validate(
                {
                    "id": f"GeoPackage_{name}",
                    "title": f"tile matrix set of {self.path.name}:{self.table_name}",
                    "crs": f"http://www.opengis.net/def/crs/EPSG/0/{code}",
                    "tileMatrices": levels,
                }
            )
        except (pydantic.ValidationError, ValueError) as exc:
            raise self._corrupt(f"the tile matrices do not form a tile matrix set: {exc}") from exc

    def _read_format(
        self, rows: dict[str, str], data_type: object, first: bytes | None
    ) -> tuple[TileFormat, TileCompression]:
        if "format" in rows:
            try:
                tile_format = TileFormat(rows["format"])
                compression = TileCompression(rows.get("compression", "none"))
            except ValueError as exc:
                raise UnsupportedTileFormatError(
                    f"{self.path}: unknown tile format in {METADATA_TABLE}: {exc}",
                    path=self.path,
                ) from exc
            return tile_format, compression
        if first is not None:
            tile_format, compression = detect_tile_format(first)
            if data_type == "tiles" and not tile_format.is_raster:
                raise UnsupportedTileFormatError(
                    f"{self.path}: the first tile of {self.table_name!r} is not PNG, JPEG or WebP",
                    path=self.path,
                )
            return tile_format, compression
        if data_type == "vector-tiles":
            return TileFormat.MVT, TileCompression.NONE
        return TileFormat.PNG, TileCompression.NONE

    def _read_bounds(
        self,
        rows: dict[str, str],
        srs_id: int,
        content_extent: list[object],
        set_extent: list[object],
    ) -> BBox | None:
        stored = _finite_numbers(_json_value(rows.get("bounds")), 4)
        if stored is not None:
            return BBox(*stored)
        extent = content_extent
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in extent):
            extent = set_extent
        values = [float(v) for v in extent if isinstance(v, int | float)]
        if len(values) != 4:
            return None
        try:
            code = self._epsg_code(srs_id)
            to_wgs84 = pyproj.Transformer.from_crs(
                pyproj.CRS.from_epsg(code), pyproj.CRS.from_epsg(4326), always_xy=True
            )
            west, south, east, north = to_wgs84.transform_bounds(
                values[0], values[1], values[2], values[3]
            )
        except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError, OffmapsError):
            return None
        if not all(math.isfinite(v) for v in (west, south, east, north)):
            return None
        return BBox(max(west, -180.0), max(south, -90.0), min(east, 180.0), min(north, 90.0))

    @property
    def metadata(self) -> TilesetMetadata:
        """The tile set's metadata (from ``offmaps_tileset`` when present, else the core
        tables and the first tile)."""
        return self._metadata

    # --- tiles ------------------------------------------------------------------------------

    def _check_key(self, tile: Tile) -> bool:
        """Whether the level of ``tile`` is in the file; raises for keys outside the matrix."""
        if not all(type(v) is int for v in tile):
            raise InvalidTileError(f"tile key {tuple(tile)} is not made of integers")
        matrix = self._matrices.get(tile.z)
        size = (matrix.width, matrix.height) if matrix else _matrix_size(self._metadata.tms, tile.z)
        if size is None:
            raise InvalidTileError(
                f"tile {tile.z}/{tile.x}/{tile.y}: level {tile.z} is not in {self._metadata.tms.id}"
            )
        if not (0 <= tile.x < size[0] and 0 <= tile.y < size[1]):
            raise InvalidTileError(
                f"tile {tile.z}/{tile.x}/{tile.y} is outside the level's matrix "
                f"({size[0]}x{size[1]})"
            )
        return matrix is not None

    def _tile_from_row(self, row: Sequence[object]) -> tuple[Tile, bytes]:
        z, x, y, data = row
        matrix = self._matrices.get(z) if type(z) is int else None
        if (
            matrix is None
            or type(x) is not int
            or type(y) is not int
            or not (0 <= x < matrix.width and 0 <= y < matrix.height)
        ):
            raise ContainerCorruptError(
                f"{self.path}: tile row zoom_level={z!r}, tile_column={x!r}, tile_row={y!r} of "
                f"{self.table_name!r} is outside its tile matrix",
                path=self.path,
            )
        tile = Tile(x, y, z)  # type: ignore[arg-type]  # z checked above
        return tile, tile_blob(self.path, tile, data)

    def find_tile(self, tile: Tile) -> bytes | None:
        """The bytes of ``tile``, or None if the table does not hold it.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            ContainerCorruptError: when the row is unreadable or holds no bytes.
        """
        if not self._check_key(tile):
            return None
        try:
            row = self._conn.execute(self._sql.find, (tile.z, tile.x, tile.y)).fetchone()
        except sqlite3.Error as exc:
            raise read_error(self.path, exc, tile=tile, what="GeoPackage") from exc
        if row is None:
            return None
        return tile_blob(self.path, tile, row[0])

    def iter_tiles(self, zooms: Iterable[int] | None = None) -> Iterator[tuple[Tile, bytes]]:
        """Every tile with its bytes, streamed from SQLite in storage order.

        Raises:
            ContainerCorruptError: at the first unreadable or invalid row, naming it.
        """
        sql = self._sql.scan
        params: list[int] = []
        if zooms is not None:
            params = sorted({int(z) for z in zooms})
            if not params:
                return
            sql += f" WHERE zoom_level IN ({','.join('?' * len(params))})"
        try:
            for row in self._conn.execute(sql, params):
                yield self._tile_from_row(row)
        except sqlite3.Error as exc:
            raise read_error(self.path, exc, what="GeoPackage") from exc

    def count_tiles(self) -> int:
        """How many tiles the table holds."""
        try:
            (count,) = self._conn.execute(self._sql.count_all).fetchone()
        except sqlite3.Error as exc:
            raise read_error(self.path, exc, what="GeoPackage") from exc
        return int(count)

    def check(self) -> list[str]:
        """Problems SQLite's ``PRAGMA quick_check`` finds (it reads each page once)."""
        try:
            return [f"{self.path}: {problem}" for problem in quick_check(self._conn)]
        except sqlite3.Error as exc:
            return [str(read_error(self.path, exc, what="GeoPackage"))]

    def verify(self) -> list[str]:
        """Problems found by a full check: SQLite integrity, GeoPackage header and tables, and
        every tile's key, bytes and format."""
        try:
            return self._verify()
        except sqlite3.Error as exc:
            return [str(read_error(self.path, exc, what="GeoPackage"))]

    def _verify(self) -> list[str]:
        conn = self._conn
        problems = quick_check(conn)
        (application_id,) = conn.execute("PRAGMA application_id").fetchone()
        (user_version,) = conn.execute("PRAGMA user_version").fetchone()
        if application_id == APPLICATION_ID:
            if user_version < USER_VERSION:
                problems.append(
                    f"{self.path}: user_version {user_version} is not a GeoPackage version "
                    f"(expected {USER_VERSION} or later)"
                )
        elif application_id not in _OLD_APPLICATION_IDS:
            problems.append(
                f"{self.path}: application_id {application_id:#x} is not GeoPackage's "
                f"({APPLICATION_ID:#x}, 'GPKG')"
            )
        for table in (
            "gpkg_spatial_ref_sys",
            "gpkg_contents",
            "gpkg_tile_matrix_set",
            "gpkg_tile_matrix",
        ):
            if not table_exists(conn, table):
                problems.append(f"{self.path}: required table {table!r} is missing")
        found = {
            row[0]
            for row in conn.execute(
                "SELECT srs_id FROM gpkg_spatial_ref_sys WHERE srs_id IN (-1, 0, 4326)"
            )
        }
        for srs_id in sorted({-1, 0, 4326} - found):
            problems.append(f"{self.path}: gpkg_spatial_ref_sys lacks the required srs_id {srs_id}")
        meta = self._metadata
        tile_problems = 0
        webp = False
        for row in conn.execute(self._sql.scan):
            problem: str | None = None
            try:
                tile, data = self._tile_from_row(row)
                fmt, compression = detect_tile_format(data)
                webp = webp or fmt is TileFormat.WEBP
                # GeoPackage lets one table mix PNG and JPEG (GDAL's TILE_FORMAT=AUTO does);
                # only a format declared in offmaps_tileset must hold for every tile.
                mixed_raster = (
                    not self._declared_format and fmt.is_raster and meta.tile_format.is_raster
                )
                if not mixed_raster and (
                    fmt is not meta.tile_format
                    or (fmt is TileFormat.MVT and compression is not meta.tile_compression)
                ):
                    problem = (
                        f"{self.path}: tile {tile.z}/{tile.x}/{tile.y} holds {fmt.value} "
                        f"({compression.value}) but the tile set is {meta.tile_format.value} "
                        f"({meta.tile_compression.value})"
                    )
            except OffmapsError as exc:
                problem = str(exc)
            if problem is not None:
                tile_problems += 1
                if tile_problems <= _MAX_PROBLEMS:
                    problems.append(problem)
        if tile_problems > _MAX_PROBLEMS:
            problems.append(f"{self.path}: ... and {tile_problems - _MAX_PROBLEMS} more tiles")
        if webp and (
            not table_exists(conn, "gpkg_extensions")
            or conn.execute(
                "SELECT 1 FROM gpkg_extensions WHERE table_name = ? AND "
                "column_name = 'tile_data' AND extension_name = 'gpkg_webp'",
                (self.table_name,),
            ).fetchone()
            is None
        ):
            problems.append(f"{self.path}: WebP tiles without the gpkg_webp extension registered")
        return problems

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()
