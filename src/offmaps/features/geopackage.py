"""The embedded feature store: one GeoPackage 1.2 file per feature service.

Each layer is a GeoPackage features table (or an attributes table, for non-spatial tables) with
an R-tree spatial index, so GDAL, QGIS and any GeoPackage reader open the file as it is. What
GeoPackage has no place for lives in ``offmaps_*`` extension tables, registered in
``gpkg_extensions``:

- ``offmaps_layers``: each layer's fields with their offmaps types, title and order;
- ``offmaps_relationships``: the 1:N relationships;
- ``offmaps_journal``: every change, with the generation of its transaction;
- ``offmaps_attachments``: attachment records (the bytes live in the server's blob store);
- ``offmaps_store``: the generation counter and the store format.

Every row carries ``globalid`` (a UUID, as text) and ``row_version``. Both have SQL defaults (a
random version 4 UUID in lower case, and 1; layers created before the first had none), so that a
tool which inserts rows on its own (QGIS, GDAL, ``sqlite3``) still writes well-formed rows. The
journal is indexed by generation and by row; opening a store made before the second index adds
it, when the file can be written. Writes take SQLite's write
lock (``BEGIN IMMEDIATE``) so generations are handed out in commit order; the database is in WAL
mode, so readers in other processes never block on a write.

Values are stored the GeoPackage way: booleans as 0/1, dates as ``YYYY-MM-DD``, date-times as
``YYYY-MM-DDTHH:MM:SS.SSSZ`` in UTC, geometries as GeoPackage binary (header + WKB).
"""

from __future__ import annotations

import json
import math
import sqlite3
import struct
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID

from offmaps.errors import (
    FeatureNotFoundError,
    FeatureStoreError,
    InvalidFeatureError,
    InvalidLayerSchemaError,
    LayerExistsError,
    LayerNotFoundError,
)
from offmaps.features.attachments import AttachmentsBase
from offmaps.features.filters import FieldType, SQLDialect, compile_filter
from offmaps.features.model import (
    ChangeKind,
    Delete,
    Edit,
    Feature,
    FeaturePage,
    FeatureQuery,
    Field,
    GeometryType,
    Insert,
    LayerSchema,
    Relationship,
    Update,
)
from offmaps.features.store import MAX_PAGE_SIZE, fields_from_stored, fields_json
from offmaps.features.temporal import TimeInterval, compile_time_filter
from offmaps.features.validation import (
    check_added_field,
    check_insert_version,
    check_layer_schema,
    check_properties,
    check_relationship,
    check_version,
    normalise_geometry,
    parse_datetime,
)
from offmaps.geopackage import create_core
from offmaps.types import BBox

# shapely (and numpy under it) is imported where geometries are handled, not with the module: it
# takes ~0.1-0.2 s, which reading a package's outbox does not need (docs/cli.md, "Start-up")
if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

__all__ = ["GeoPackageStore", "ScannedRow"]

STORE_FORMAT = "1"
_BATCH = 500
CACHE_KIB = 64 * 1024
"""SQLite page cache of each connection, in KiB."""
_SCAN_BATCH = 10_000  # rows a bulk copy chooses and copies at a time
_RTREE_DEFINITION = "http://www.geopackage.org/spec120/#extension_rtree"
_RTREE_TRIGGERS = ("insert", "update1", "update2", "update3", "update4", "delete")
_BULK_EDITS = 256
"""From this many edits in one :meth:`GeoPackageStore.apply_edits`, the R-tree is brought up to
date once at the end (:class:`_DeferredRTree`) instead of by its triggers row by row."""
_OFFMAPS_DEFINITION = "offmaps feature store tables: see docs/features.md"
_SQL_TYPES = {
    FieldType.TEXT: "TEXT",
    FieldType.INTEGER: "INTEGER",
    FieldType.REAL: "DOUBLE",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.DATE: "DATE",
    FieldType.DATETIME: "DATETIME",
}
ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
"""Bytes of a GeoPackage geometry blob's envelope, by its envelope indicator."""

_JOURNAL_ROW_INDEX = (
    "CREATE INDEX IF NOT EXISTS offmaps_journal_row ON offmaps_journal (layer, globalid)"
)


def _hex(digits: int) -> str:
    return f"lower(hex(randomblob({digits // 2})))"


# A random version 4 UUID as lower-case 8-4-4-4-12 text, for rows inserted without a global id:
# the version nibble is 4 and the variant nibble one of 8, 9, a, b (RFC 9562). random() & 3 and
# not abs(random()) % 4, since abs() overflows on the smallest 64-bit integer.
_GLOBALID_DEFAULT = (
    f"({_hex(8)} || '-' || {_hex(4)} || '-4' || substr({_hex(4)}, 2) || '-' || "
    f"substr('89ab', 1 + (random() & 3), 1) || substr({_hex(4)}, 2) || '-' || {_hex(12)})"
)

_GEOMETRY_COLUMNS = (
    "CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL, "
    "geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, "
    "m TINYINT NOT NULL, CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name), "
    "CONSTRAINT uk_gc_table_name UNIQUE (table_name), "
    "CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name), "
    "CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id))"
)
_SCHEMA = (
    "CREATE TABLE offmaps_store (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE offmaps_layers (name TEXT NOT NULL PRIMARY KEY, position INTEGER NOT NULL, "
    "title TEXT, geometry_type TEXT, srid INTEGER NOT NULL, fields TEXT NOT NULL)",
    "CREATE TABLE offmaps_relationships (name TEXT NOT NULL PRIMARY KEY, "
    "position INTEGER NOT NULL, origin TEXT NOT NULL, origin_key TEXT NOT NULL, "
    "destination TEXT NOT NULL, destination_key TEXT NOT NULL)",
    "CREATE TABLE offmaps_journal (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "generation INTEGER NOT NULL, layer TEXT NOT NULL, globalid TEXT NOT NULL, "
    "kind TEXT NOT NULL, version INTEGER NOT NULL, changed_at DATETIME NOT NULL, "
    "attachment_id TEXT)",
    "CREATE INDEX offmaps_journal_generation ON offmaps_journal (generation)",
    _JOURNAL_ROW_INDEX,
    "CREATE TABLE offmaps_attachments (attachment_id TEXT NOT NULL PRIMARY KEY, "
    "layer TEXT NOT NULL, globalid TEXT NOT NULL, name TEXT NOT NULL, "
    "content_type TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, "
    "created_at DATETIME NOT NULL)",
    "CREATE INDEX offmaps_attachments_row ON offmaps_attachments (layer, globalid)",
)
_OFFMAPS_TABLES = (
    "offmaps_store",
    "offmaps_layers",
    "offmaps_relationships",
    "offmaps_journal",
    "offmaps_attachments",
)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- GeoPackage binary geometry -------------------------------------------------------------


def encode_geometry(geometry: BaseGeometry, srid: int) -> bytes:
    """A geometry as a GeoPackage binary blob: little-endian header with an XY envelope
    (none for points), then ISO WKB."""
    import shapely  # noqa: PLC0415

    wkb: bytes = shapely.to_wkb(geometry, byte_order=1, flavor="iso")
    if geometry.geom_type == "Point":
        return b"GP\x00" + bytes([0b0000_0001]) + struct.pack("<i", srid) + wkb
    minx, miny, maxx, maxy = geometry.bounds
    header = b"GP\x00" + bytes([0b0000_0011]) + struct.pack("<i", srid)
    return header + struct.pack("<4d", minx, maxx, miny, maxy) + wkb


def encode_geometries(geometries: Sequence[BaseGeometry | None], srid: int) -> list[bytes | None]:
    """:func:`encode_geometry` of many geometries at once, with shapely's vectorised WKB
    writer (``None`` stays ``None``)."""
    import numpy as np  # noqa: PLC0415
    import shapely  # noqa: PLC0415

    present = np.empty(sum(g is not None for g in geometries), dtype=object)
    present[:] = [g for g in geometries if g is not None]
    encoded = iter(())
    if len(present):
        wkbs = shapely.to_wkb(present, byte_order=1, flavor="iso")
        kinds = shapely.get_type_id(present)
        bounds = shapely.bounds(present)
        point = b"GP\x00" + bytes([0b0000_0001]) + struct.pack("<i", srid)
        boxed = b"GP\x00" + bytes([0b0000_0011]) + struct.pack("<i", srid)
        encoded = iter(
            point + wkb
            if kind == _POINT_TYPE_ID
            else boxed + struct.pack("<4d", minx, maxx, miny, maxy) + wkb
            for wkb, kind, (minx, miny, maxx, maxy) in zip(wkbs, kinds, bounds, strict=True)
        )
    return [None if g is None else next(encoded) for g in geometries]


def _split(blob: bytes) -> tuple[int, bytes, tuple[float, float, float, float] | None]:
    """(flags, WKB, XY envelope as minx, maxx, miny, maxy) of a GeoPackage geometry blob."""
    if len(blob) < 8 or blob[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry")
    flags = blob[3]
    size = ENVELOPE_BYTES.get((flags >> 1) & 0b111)
    if size is None:
        raise ValueError("bad envelope indicator")
    order = "<" if flags & 1 else ">"
    envelope = struct.unpack(order + "4d", blob[8:40]) if size else None
    return flags, blob[8 + size :], envelope


@dataclass(frozen=True, slots=True)
class ScannedRow:
    """A row as :meth:`GeoPackageStore.scan_rows` reads it."""

    fid: int
    global_id: str
    """As stored: parse it with ``UUID(...)`` when needed."""
    geometry: BaseGeometry | None
    values: tuple[object, ...]


def _wkb_of(blob: bytes | None) -> bytes | None:
    """The WKB of a GeoPackage geometry blob; ``None`` for NULL, empty or malformed."""
    if blob is None:
        return None
    try:
        flags, wkb, _ = _split(blob)
    except ValueError:
        return None
    return None if flags & 0b1_0000 else wkb


def decode_geometry(blob: bytes | None) -> BaseGeometry | None:
    """A GeoPackage binary blob as a shapely geometry (``None`` for NULL or empty)."""
    if blob is None:
        return None
    flags, wkb, _ = _split(blob)
    if flags & 0b1_0000:
        return None
    import shapely  # noqa: PLC0415

    geometry: BaseGeometry = shapely.from_wkb(wkb)
    return geometry


_POINT_WKB_BYTES = 21
_POINT_TYPE_ID = 0  # shapely.get_type_id of a Point
_POINT_WKB_PREFIXES = (b"\x01\x01\x00\x00\x00", b"\x00\x00\x00\x00\x01")


def _envelope(blob: bytes | None) -> tuple[float, float, float, float] | None:
    if blob is None:
        return None
    try:
        flags, wkb, envelope = _split(blob)
    except ValueError:
        return None
    if flags & 0b1_0000:
        return None
    if envelope is not None:
        return envelope
    if len(wkb) == _POINT_WKB_BYTES and wkb[:5] in _POINT_WKB_PREFIXES:
        # a 2D point, the common case without a header envelope: no shapely round trip
        x, y = struct.unpack("<2d" if wkb[0] == 1 else ">2d", wkb[5:])
        return x, x, y, y
    import shapely  # noqa: PLC0415 - not for the common case above

    minx, miny, maxx, maxy = shapely.from_wkb(wkb).bounds
    return minx, maxx, miny, maxy


def _st_function(index: int) -> Any:
    def function(blob: bytes | None) -> float | None:
        envelope = _envelope(blob)
        return None if envelope is None else envelope[index]

    return function


def _st_is_empty(blob: bytes | None) -> int | None:
    if blob is None:
        return None
    try:
        flags, wkb, envelope = _split(blob)
    except ValueError:
        return None
    if flags & 0b1_0000:
        return 1
    if envelope is not None:  # an envelope of numbers bounds something: not empty
        return 0 if all(math.isfinite(v) for v in envelope) else 1
    if len(wkb) == _POINT_WKB_BYTES and wkb[:5] in _POINT_WKB_PREFIXES:
        x, y = struct.unpack("<2d" if wkb[0] == 1 else ">2d", wkb[5:])
        return 0 if math.isfinite(x) and math.isfinite(y) else 1
    import shapely  # noqa: PLC0415 - not for the common case above

    return 1 if shapely.from_wkb(wkb).is_empty else 0


def _register_functions(conn: sqlite3.Connection) -> None:
    """The SQL functions GeoPackage's R-tree triggers call (GDAL and QGIS bring their own)."""
    for index, name in enumerate(("ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY")):
        conn.create_function(name, 1, _st_function(index), deterministic=True)
    conn.create_function("ST_IsEmpty", 1, _st_is_empty, deterministic=True)


def read_schemas(conn: sqlite3.Connection) -> dict[str, LayerSchema]:
    """Every layer of an offmaps GeoPackage, in order, from ``offmaps_layers``."""
    rows = conn.execute(
        "SELECT name, title, geometry_type, srid, fields FROM offmaps_layers ORDER BY position"
    ).fetchall()
    return {
        name: LayerSchema(
            name,
            fields_from_stored(json.loads(stored)),
            GeometryType(geometry_type) if geometry_type else None,
            srid,
            title,
        )
        for name, title, geometry_type, srid, stored in rows
    }


def _rtree_trigger(table: str, suffix: str) -> str:
    return f"rtree_{table}_geom_{suffix}"


def _rtree_entry(blob: bytes | None) -> tuple[float, float, float, float] | None:
    """What the R-tree triggers index for a geometry blob: its (minx, maxx, miny, maxy), or
    ``None`` for a NULL or empty geometry (no entry)."""
    if blob is None or _st_is_empty(blob) != 0:
        return None
    return _envelope(blob)


class _DeferredRTree:
    """The R-tree upkeep of one large write transaction.

    The GeoPackage triggers keep the R-tree in step row by row, calling the ``ST_*`` functions
    (Python here) five times per written geometry: most of the cost of a bulk write. For a
    large :meth:`GeoPackageStore.apply_edits`, the layer's R-tree triggers are dropped inside
    the transaction, the rows written, then the entries of deleted rows removed and those of
    written rows set from their final geometries, and the triggers re-created as they were,
    all before the commit: other connections never see the triggers missing, and a failure
    rolls everything back (SQLite's schema changes are transactional). GDAL's GeoPackage
    driver defers its spatial index the same way on bulk loads.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._layers: dict[str, _Layer | None] = {}
        self._triggers: list[str] = []
        self._written: dict[str, set[str]] = {}
        self._removed: dict[str, list[int]] = {}

    def take(self, layer: _Layer) -> bool:
        """Drop the layer's R-tree triggers (once); ``False`` when it has no R-tree to keep."""
        name = layer.schema.name
        if name not in self._layers:
            names = [_rtree_trigger(name, suffix) for suffix in _RTREE_TRIGGERS]
            found = self._conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                f"AND name IN ({', '.join('?' * len(names))})",
                names,
            ).fetchall()
            self._layers[name] = layer if found and not layer.schema.is_table else None
            if self._layers[name] is not None:
                for trigger, sql in found:
                    self._conn.execute(f"DROP TRIGGER {_q(trigger)}")
                    self._triggers.append(sql)
        return self._layers[name] is not None

    def written(self, layer: _Layer, global_id: UUID) -> None:
        """A row whose geometry was written."""
        if self.take(layer):
            self._written.setdefault(layer.schema.name, set()).add(str(global_id))

    def removed(self, layer: _Layer, fid: int) -> None:
        """A row deleted."""
        if self.take(layer):
            self._removed.setdefault(layer.schema.name, []).append(fid)

    def finish(self) -> None:
        """Bring the R-trees up to date and re-create the triggers."""
        conn = self._conn
        for name, layer in self._layers.items():
            if layer is None:
                continue
            conn.executemany(
                f"DELETE FROM {layer.rtree} WHERE id = ?",
                [(fid,) for fid in self._removed.get(name, ())],
            )
            written = sorted(self._written.get(name, ()))
            entries = [
                (fid, _rtree_entry(blob))
                for _, fid, blob in _rows_by_global_id(conn, layer, "fid, geom", written)
            ]
            conn.executemany(
                f"INSERT OR REPLACE INTO {layer.rtree} VALUES (?, ?, ?, ?, ?)",
                [(fid, *entry) for fid, entry in entries if entry is not None],
            )
            conn.executemany(
                f"DELETE FROM {layer.rtree} WHERE id = ?",
                [(fid,) for fid, entry in entries if entry is None],
            )
        for sql in self._triggers:
            conn.execute(sql)


def _rtree_sql(table: str) -> list[str]:
    """The R-tree table and the GeoPackage 1.2 triggers that keep it in step with ``table``."""
    rtree, t = _q(f"rtree_{table}_geom"), _q(table)
    values = "NEW.fid, ST_MinX(NEW.geom), ST_MaxX(NEW.geom), ST_MinY(NEW.geom), ST_MaxY(NEW.geom)"

    def trigger(suffix: str, when: str, body: str) -> str:
        return f"CREATE TRIGGER {_q(_rtree_trigger(table, suffix))} {when} BEGIN {body}; END"

    upsert = f"INSERT OR REPLACE INTO {rtree} VALUES ({values})"
    present = "(NEW.geom NOT NULL AND NOT ST_IsEmpty(NEW.geom))"
    absent = "(NEW.geom ISNULL OR ST_IsEmpty(NEW.geom))"
    return [
        f"CREATE VIRTUAL TABLE {rtree} USING rtree(id, minx, maxx, miny, maxy)",
        trigger("insert", f"AFTER INSERT ON {t} WHEN {present}", upsert),
        trigger(
            "update1",
            f"AFTER UPDATE OF geom ON {t} WHEN OLD.fid = NEW.fid AND {present}",
            upsert,
        ),
        trigger(
            "update2",
            f"AFTER UPDATE OF geom ON {t} WHEN OLD.fid = NEW.fid AND {absent}",
            f"DELETE FROM {rtree} WHERE id = OLD.fid",
        ),
        trigger(
            "update3",
            f"AFTER UPDATE ON {t} WHEN OLD.fid != NEW.fid AND {present}",
            f"DELETE FROM {rtree} WHERE id = OLD.fid; {upsert}",
        ),
        trigger(
            "update4",
            f"AFTER UPDATE ON {t} WHEN OLD.fid != NEW.fid AND {absent}",
            f"DELETE FROM {rtree} WHERE id IN (OLD.fid, NEW.fid)",
        ),
        trigger(
            "delete",
            f"AFTER DELETE ON {t} WHEN OLD.geom NOT NULL",
            f"DELETE FROM {rtree} WHERE id = OLD.fid",
        ),
    ]


def _srs_row(code: int) -> tuple[str, int, str, int, str, str]:
    # pyproj is imported only when a layer is created (~0.1 s: reading a store does not need it)
    import pyproj  # noqa: PLC0415
    from pyproj.enums import WktVersion  # noqa: PLC0415

    try:
        crs = pyproj.CRS.from_epsg(code)
    except pyproj.exceptions.CRSError:
        raise InvalidLayerSchemaError(f"EPSG:{code} is not a known CRS") from None
    return (crs.name, code, "EPSG", code, crs.to_wkt(WktVersion.WKT1_GDAL) or "undefined", crs.name)


def _column_sql(field: Field) -> str:
    """The column definition of a field."""
    sql_type = _SQL_TYPES[field.type]
    if field.max_length is not None:
        sql_type += f"({int(field.max_length)})"
    return f"{_q(field.name)} {sql_type}{'' if field.nullable else ' NOT NULL'}"


# --- values -------------------------------------------------------------------------------


def _to_sql(kind: FieldType, value: object) -> object:
    if value is None:
        return None
    if kind is FieldType.BOOLEAN:
        return 1 if value else 0
    if kind is FieldType.DATETIME and isinstance(value, datetime):
        return _timestamp(value)
    if kind is FieldType.DATE and isinstance(value, date):
        return value.isoformat()
    return value


def _from_sql(kind: FieldType, value: object) -> object:
    """A stored value as its Python type; text that does not parse is returned as it is."""
    if value is None:
        return None
    try:
        if kind is FieldType.BOOLEAN:
            return bool(value)
        if kind is FieldType.DATETIME and isinstance(value, str):
            return parse_datetime(value)
        if kind is FieldType.DATE and isinstance(value, str):
            return date.fromisoformat(value[:10])
        if kind is FieldType.REAL and isinstance(value, int):
            return float(value)
    except (ValueError, InvalidFeatureError):
        return value
    return value


class _Layer:
    """A layer's schema with its prepared SQL."""

    def __init__(self, schema: LayerSchema) -> None:
        self.schema = schema
        self.table = _q(schema.name)
        self.rtree = _q(f"rtree_{schema.name}_geom")
        names = [f.name for f in schema.fields]
        self.kinds = [f.type for f in schema.fields]
        columns = ["fid", "globalid", "row_version", *map(_q, names)]
        if not schema.is_table:
            columns.append("geom")
        self.select = f"SELECT {', '.join(columns)} FROM {self.table}"
        self.names = names
        self.kinds_by_name = dict(zip(names, self.kinds, strict=True))

    def row_to_feature(self, row: Sequence[Any], *, geometry: bool = True) -> Feature:
        """A selected row as a feature; ``geometry=False`` skips decoding the geometry (for
        callers about to replace it)."""
        values = row[3 : 3 + len(self.names)]
        properties = {
            name: _from_sql(kind, value)
            for name, kind, value in zip(self.names, self.kinds, values, strict=True)
        }
        shape = decode_geometry(row[-1]) if geometry and not self.schema.is_table else None
        return Feature(UUID(row[1]), int(row[2]), properties, shape)


@dataclass(frozen=True, slots=True)
class _SQLiteDialect:
    """The store's SQL for the shared journal and attachment code (a
    :class:`~offmaps.features.dialect.StoreDialect`): global ids as text, date-times as
    GeoPackage ``DATETIME`` text."""

    mark: str = "?"
    journal_table: str = "offmaps_journal"
    attachments_table: str = "offmaps_attachments"
    attachment_order: str = "rowid"
    duplicate_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    value_errors: tuple[type[Exception], ...] = ()

    def bind_id(self, value: UUID) -> object:
        return str(value)

    def read_id(self, value: Any) -> UUID:
        return UUID(value)

    def bind_time(self, moment: datetime) -> object:
        return _timestamp(moment)

    def read_time(self, value: Any) -> datetime:
        return parse_datetime(value)

    def any_of(self, column: str, values: Sequence[object]) -> tuple[str, list[object]]:
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)


class GeoPackageStore(AttachmentsBase[sqlite3.Connection]):
    """A feature service kept in one GeoPackage file (see the module docs).

    Open with :meth:`create` or :meth:`open`; safe to share between threads.
    """

    _dialect = _SQLiteDialect()

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self._layers: dict[str, _Layer] = {}
        self._load_layers()

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path | str) -> GeoPackageStore:
        """A new, empty store at ``path``; raises ``FeatureStoreError`` if the file exists."""
        path = Path(path)
        if path.exists():
            raise FeatureStoreError(f"{path} exists already")
        try:
            conn = cls._connect(path)
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"{path}: cannot create the GeoPackage: {exc}") from None
        try:
            with conn:
                conn.execute("BEGIN")
                create_core(conn, [_GEOMETRY_COLUMNS])
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined"),
                        ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined"),
                        _srs_row(4326),
                    ],
                )
                conn.executemany(
                    "INSERT INTO gpkg_extensions VALUES (?, NULL, 'offmaps_features', ?, "
                    "'read-write')",
                    [(table, _OFFMAPS_DEFINITION) for table in _OFFMAPS_TABLES],
                )
                conn.executemany(
                    "INSERT INTO offmaps_store VALUES (?, ?)",
                    [("format", STORE_FORMAT), ("generation", "0")],
                )
        except BaseException:
            conn.close()
            path.unlink(missing_ok=True)
            raise
        conn.execute("PRAGMA journal_mode = WAL")
        return cls(path, conn)

    def stop_syncing(self) -> None:
        """Stop flushing every commit to disk (``PRAGMA synchronous = OFF``): for a file being
        filled that is worthless until it is finished (an offline replica), whose writer makes
        it durable at the end. A crash may corrupt the file meanwhile."""
        with self._lock:
            self._conn.execute("PRAGMA synchronous = OFF")

    @classmethod
    def open(cls, path: Path | str) -> GeoPackageStore:
        """The store at ``path``; raises ``FeatureStoreError`` if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise FeatureStoreError(f"{path}: no such file")
        try:
            conn = cls._connect(path)
            row = conn.execute("SELECT value FROM offmaps_store WHERE key = 'format'").fetchone()
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"{path}: not an offmaps feature store ({exc})") from None
        if row is None or row[0] != STORE_FORMAT:
            conn.close()
            raise FeatureStoreError(f"{path}: unknown feature store format {row}")
        conn.execute("PRAGMA journal_mode = WAL")
        cls._upgrade(conn)
        return cls(path, conn)

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> None:
        """Add what stores made by earlier versions lack: the journal's index by row.

        Best effort: a file opened read-only (or locked for longer than the busy timeout) stays
        as it is, and works, only slower to answer :meth:`last_change`.
        """
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'offmaps_journal_row'"
        ).fetchone()
        if exists is not None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return
        try:
            conn.execute(_JOURNAL_ROW_INDEX)
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        _register_functions(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        # rows are found by random global ids: SQLite's default 2 MB page cache misses often
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return conn

    def reopen(self) -> GeoPackageStore:
        """Another store on the same file (a new connection)."""
        return GeoPackageStore.open(self.path)

    def close(self) -> None:
        """Close the database. Closing twice is fine."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GeoPackageStore({str(self.path)!r})"

    @contextmanager
    def _write(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """A write transaction and the generation it will commit as."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{self.path}: cannot start a write: {exc}") from None
            try:
                generation = self._generation(conn) + 1
                yield conn, generation
                conn.execute(
                    "UPDATE offmaps_store SET value = ? WHERE key = 'generation'",
                    (str(generation),),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection, held for one read."""
        with self._lock:
            yield self._conn

    @contextmanager
    def _schema_change(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    conn.execute("ROLLBACK")
                self._load_layers()
                raise

    @staticmethod
    def _generation(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM offmaps_store WHERE key = 'generation'").fetchone()
        return int(row[0])

    # --- schema ----------------------------------------------------------------------------

    def _load_layers(self) -> None:
        self._layers = {name: _Layer(schema) for name, schema in read_schemas(self._conn).items()}

    def _layer(self, name: str) -> _Layer:
        layer = self._layers.get(name)
        if layer is None:
            raise LayerNotFoundError(f"no layer or table {str(name)[:80]!r}", layer=name)
        return layer

    def list_layers(self) -> tuple[LayerSchema, ...]:
        """Every layer and table, in creation order."""
        with self._lock:
            return tuple(layer.schema for layer in self._layers.values())

    def get_layer(self, name: str) -> LayerSchema:
        """The layer or table called ``name``; raises ``LayerNotFoundError``."""
        with self._lock:
            return self._layer(name).schema

    def create_layer(self, schema: LayerSchema) -> None:
        """Create an empty layer or table: a GeoPackage features table with an R-tree index,
        or an attributes table."""
        check_layer_schema(schema)
        with self._schema_change() as conn:
            if any(name.lower() == schema.name.lower() for name in self._layers):
                raise LayerExistsError(f"layer {schema.name!r} exists already")
            self._create_table(conn, schema)
            self._layers[schema.name] = _Layer(schema)

    def _create_table(self, conn: sqlite3.Connection, schema: LayerSchema) -> None:
        name, srid = schema.name, schema.srid
        columns = [
            "fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
            # a NULL written (as a plain PyQGIS QgsFeature does) takes the default; UNIQUE
            # keeps its ABORT. The expression stays in one pair of parentheses: QGIS 3.22's
            # form then fills in its text (a second pair makes GDAL 3.6 call the default
            # driver-specific, and QGIS's form then refuses the NULL it shows), and the
            # replica's insert trigger replaces that text with a UUID
            f"globalid TEXT NOT NULL ON CONFLICT REPLACE UNIQUE DEFAULT {_GLOBALID_DEFAULT}",
            "row_version INTEGER NOT NULL ON CONFLICT REPLACE DEFAULT 1",
        ]
        columns += [_column_sql(field) for field in schema.fields]
        if schema.geometry_type is not None:
            columns.append(f"geom {schema.geometry_type.value.upper()}")
            if (
                conn.execute(
                    "SELECT 1 FROM gpkg_spatial_ref_sys WHERE srs_id = ?", (srid,)
                ).fetchone()
                is None
            ):
                conn.execute(
                    "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", _srs_row(srid)
                )
        conn.execute(f"CREATE TABLE {_q(name)} ({', '.join(columns)})")
        position = conn.execute(
            "SELECT coalesce(max(position), 0) + 1 FROM offmaps_layers"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO offmaps_layers VALUES (?, ?, ?, ?, ?, ?)",
            (
                name,
                position,
                schema.title,
                schema.geometry_type.value if schema.geometry_type else None,
                srid,
                fields_json(schema.fields),
            ),
        )
        if schema.geometry_type is None:
            conn.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description) "
                "VALUES (?, 'attributes', ?, '')",
                (name, schema.title or name),
            )
            return
        conn.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
            "VALUES (?, 'features', ?, '', ?)",
            (name, schema.title or name, srid),
        )
        conn.execute(
            "INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)",
            (name, schema.geometry_type.value.upper(), srid),
        )
        for statement in _rtree_sql(name):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', ?, 'write-only')",
            (name, _RTREE_DEFINITION),
        )

    def add_field(self, layer: str, field: Field) -> None:
        """Add a nullable field (``ALTER TABLE ... ADD COLUMN``) and record it in the layer's
        schema; existing rows get null. Takes no generation (see the protocol)."""
        with self._schema_change() as conn:
            schema = self._layer(layer).schema
            changed = check_added_field(schema, field)
            try:
                conn.execute(f"ALTER TABLE {_q(schema.name)} ADD COLUMN {_column_sql(field)}")
            except sqlite3.OperationalError as exc:  # a column added behind our back
                raise InvalidLayerSchemaError(
                    f"layer {schema.name!r}: cannot add field {field.name!r}: {exc}"
                ) from None
            conn.execute(
                "UPDATE offmaps_layers SET fields = ? WHERE name = ?",
                (fields_json(changed.fields), schema.name),
            )
            self._layers[schema.name] = _Layer(changed)

    def drop_layer(self, name: str) -> None:
        """Delete a layer, its rows, relationships, journal entries and attachment records."""
        with self._schema_change() as conn:
            layer = self._layer(name)
            conn.execute(f"DROP TABLE {layer.table}")
            if not layer.schema.is_table:
                conn.execute(f"DROP TABLE {layer.rtree}")
                conn.execute("DELETE FROM gpkg_geometry_columns WHERE table_name = ?", (name,))
            conn.execute("DELETE FROM gpkg_extensions WHERE table_name = ?", (name,))
            conn.execute("DELETE FROM gpkg_contents WHERE table_name = ?", (name,))
            conn.execute("DELETE FROM offmaps_layers WHERE name = ?", (name,))
            conn.execute(
                "DELETE FROM offmaps_relationships WHERE origin = ? OR destination = ?",
                (name, name),
            )
            conn.execute("DELETE FROM offmaps_journal WHERE layer = ?", (name,))
            conn.execute("DELETE FROM offmaps_attachments WHERE layer = ?", (name,))
            del self._layers[name]

    def add_relationship(self, relationship: Relationship) -> None:
        """Record a 1:N relationship between two existing layers/tables and fields."""
        with self._schema_change() as conn:
            check_relationship(relationship, {n: la.schema for n, la in self._layers.items()})
            exists = conn.execute(
                "SELECT 1 FROM offmaps_relationships WHERE name = ?", (relationship.name,)
            ).fetchone()
            if exists:
                raise InvalidLayerSchemaError(f"relationship {relationship.name!r} exists already")
            conn.execute(
                "INSERT INTO offmaps_relationships VALUES (?, "
                "(SELECT coalesce(max(position), 0) + 1 FROM offmaps_relationships), ?, ?, ?, ?)",
                (
                    relationship.name,
                    relationship.origin,
                    relationship.origin_key,
                    relationship.destination,
                    relationship.destination_key,
                ),
            )

    def list_relationships(self) -> tuple[Relationship, ...]:
        """Every relationship, in creation order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, origin, origin_key, destination, destination_key "
                "FROM offmaps_relationships ORDER BY position"
            ).fetchall()
        return tuple(Relationship(*row) for row in rows)

    # --- rows ------------------------------------------------------------------------------

    def apply_edits(
        self, edits: Sequence[Edit], *, read_back: bool = True
    ) -> tuple[Feature | None, ...]:
        """Apply edits atomically as one transaction with one new generation (see the protocol).

        An empty sequence changes nothing and takes no generation. With ``read_back=False``,
        nothing is returned, and when every edit is an insert, a checked update or a delete
        with its base version (what sync writes), the edits are written in groups
        (:meth:`_apply_grouped`) instead of one by one.
        """
        if not edits:
            return ()
        results: list[Feature | None] = []
        with self._write() as (conn, generation):
            rtree = _DeferredRTree(conn) if len(edits) >= _BULK_EDITS else None
            changed_at = _timestamp(_now())
            if not read_back and all(map(_groupable, edits)):
                written = self._apply_grouped(conn, edits, rtree)
            else:
                written, results = self._apply_in_order(conn, edits, rtree)
            if rtree is not None:
                rtree.finish()
            conn.executemany(
                "INSERT INTO offmaps_journal (generation, layer, globalid, kind, version, "
                "changed_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(generation, *entry, changed_at) for entry in written],
            )
            conn.executemany(
                "UPDATE gpkg_contents SET last_change = ? WHERE table_name = ?",
                [(changed_at, name) for name in {edit.layer for edit in edits}],
            )
        return tuple(results) if read_back else ()

    def _apply_in_order(
        self, conn: sqlite3.Connection, edits: Sequence[Edit], rtree: _DeferredRTree | None
    ) -> tuple[list[tuple[str, str, str, int]], list[Feature | None]]:
        """Write edits one by one; returns the journal entries (layer, global id, kind,
        version) and the rows the edits leave (``None`` for deletes)."""
        journal: list[tuple[str, str, str, int]] = []
        results: list[Feature | None] = []
        # consecutive inserts into one layer go out together; anything else sends them first
        run: list[tuple[Feature, list[object]]] = []
        run_layer: _Layer | None = None
        for edit in edits:
            layer = self._layer(edit.layer)
            if run and (layer is not run_layer or not isinstance(edit, Insert)):
                self._insert_rows(conn, run_layer, run)
                run = []
            run_layer = layer
            result: Feature | None
            if isinstance(edit, Insert):
                result = self._insert_values(layer, edit, run)
                kind = ChangeKind.INSERT
                if rtree is not None and result.geometry is not None:
                    rtree.written(layer, result.global_id)
            elif isinstance(edit, Update):
                result, kind = self._update(conn, layer, edit), ChangeKind.UPDATE
                if rtree is not None and (edit.set_geometry or edit.replace):
                    rtree.written(layer, edit.global_id)
            elif isinstance(edit, Delete):
                fid, version = self._delete(conn, layer, edit)
                result, kind = Feature(edit.global_id, version, {}), ChangeKind.DELETE
                if rtree is not None:
                    rtree.removed(layer, fid)
            else:
                raise InvalidFeatureError(f"not an edit: {type(edit).__name__}")
            journal.append((edit.layer, str(result.global_id), kind.value, result.version))
            results.append(None if kind is ChangeKind.DELETE else result)
        if run:
            self._insert_rows(conn, run_layer, run)
        return journal, results

    def _apply_grouped(
        self, conn: sqlite3.Connection, edits: Sequence[Edit], rtree: _DeferredRTree | None
    ) -> list[tuple[str, str, str, int]]:
        """Write edits that need no reading back (see :func:`_groupable`) in groups; returns
        the journal entries, in the edits' order.

        Edits of different rows commute, so the edits are split into waves (an edit's wave is
        the number of earlier edits of its row) and each wave is written as one ``executemany``
        per layer and kind (and, for updates, set of columns), the versions of the rows it
        updates and deletes checked with one query per 500 rows. Errors are those of writing
        the edits one by one, though with several bad edits another may be named first.
        """
        edits = [
            replace(edit, global_id=uuid.uuid4())
            if isinstance(edit, Insert) and edit.global_id is None
            else edit
            for edit in edits
        ]
        waves: list[list[Edit]] = []
        seen: dict[tuple[str, object], int] = {}
        for edit in edits:
            wave = seen.get((edit.layer, edit.global_id), 0)
            seen[edit.layer, edit.global_id] = wave + 1
            if wave == len(waves):
                waves.append([])
            waves[wave].append(edit)
        for batch in waves:
            inserts: dict[str, list[Insert]] = {}
            updates: dict[tuple[str, tuple[str, ...], bool], list[Update]] = {}
            deletes: dict[str, list[Delete]] = {}
            for edit in batch:
                if isinstance(edit, Insert):
                    inserts.setdefault(edit.layer, []).append(edit)
                elif isinstance(edit, Update):
                    shape = (edit.layer, tuple(edit.properties), edit.set_geometry)
                    updates.setdefault(shape, []).append(edit)
                elif isinstance(edit, Delete):
                    deletes.setdefault(edit.layer, []).append(edit)
            for name, added in inserts.items():
                layer = self._layer(name)
                run: list[tuple[Feature, list[object]]] = []
                for insert in added:
                    feature = self._insert_values(layer, insert, run)
                    if rtree is not None and feature.geometry is not None:
                        rtree.written(layer, feature.global_id)
                self._insert_rows(conn, layer, run)
            for (name, names, set_geometry), changed in updates.items():
                self._update_rows(conn, self._layer(name), names, set_geometry, changed, rtree)
            for name, group in deletes.items():
                layer = self._layer(name)
                fids = self._checked_fids(conn, layer, group)
                conn.executemany(f"DELETE FROM {layer.table} WHERE fid = ?", [(f,) for f in fids])
                conn.executemany(
                    "DELETE FROM offmaps_attachments WHERE layer = ? AND globalid = ?",
                    [(name, str(edit.global_id)) for edit in group],
                )
                if rtree is not None:
                    for fid in fids:
                        rtree.removed(layer, fid)
        return [_journal_of(edit) for edit in edits]

    def _update_rows(
        self,
        conn: sqlite3.Connection,
        layer: _Layer,
        names: tuple[str, ...],
        set_geometry: bool,
        group: Sequence[Update],
        rtree: _DeferredRTree | None,
    ) -> None:
        """Checked updates of distinct rows setting the same fields, at once."""
        fids = self._checked_fids(conn, layer, group)
        kinds = [layer.kinds_by_name[name] for name in names]
        assignments = ["row_version = ?", *(f"{_q(name)} = ?" for name in names)]
        geometry = set_geometry and not layer.schema.is_table
        if geometry:
            assignments.append("geom = ?")
        blobs: list[bytes | None] = []
        if geometry:
            blobs = encode_geometries([edit.geometry for edit in group], layer.schema.srid)
        rows: list[list[object]] = []
        for index, (edit, fid) in enumerate(zip(group, fids, strict=True)):
            values = edit.properties
            row: list[object] = [(edit.base_version or 0) + 1]
            row += [_to_sql(kind, values[name]) for name, kind in zip(names, kinds, strict=True)]
            if geometry:
                row.append(blobs[index])
                if rtree is not None:
                    rtree.written(layer, edit.global_id)
            row.append(fid)
            rows.append(row)
        conn.executemany(f"UPDATE {layer.table} SET {', '.join(assignments)} WHERE fid = ?", rows)

    @staticmethod
    def _checked_fids(
        conn: sqlite3.Connection, layer: _Layer, group: Sequence[Update | Delete]
    ) -> list[int]:
        """The fids of the rows of ``group``, each checked to be at its edit's base version.

        Raises:
            FeatureNotFoundError: a row that does not exist.
            VersionConflictError: a row at another version.
        """
        keys = [str(edit.global_id) for edit in group]
        found = {
            gid: (fid, version)
            for gid, fid, version in _rows_by_global_id(conn, layer, "fid, row_version", keys)
        }
        fids: list[int] = []
        for edit, key in zip(group, keys, strict=True):
            row = found.get(key)
            if row is None:
                raise _not_found(layer, edit.global_id)
            check_version(edit.global_id, edit.base_version, row[1])
            fids.append(row[0])
        return fids

    def scan_rows(
        self, layer: str, query: FeatureQuery, fields: Sequence[str] = ()
    ) -> Iterator[list[ScannedRow]]:
        """The rows matching ``query`` in batches, with only their fid, global id, geometry and
        the values of ``fields``: what a bulk copy (:meth:`copy_rows_from`) needs to choose
        rows, without building whole features. Geometries are decoded a batch at a time."""
        with self._lock:
            found = self._layer(layer)
            where, params = self._where(found, query)
            kinds = found.schema.field_types()
            for name in fields:
                if name not in kinds:
                    raise InvalidFeatureError(f"{layer!r} has no field {name!r}")
        import shapely  # noqa: PLC0415

        geometry = "NULL" if found.schema.is_table else "geom"
        wanted = "".join(", " + _q(name) for name in fields)
        select = f"SELECT fid, globalid, {geometry}{wanted} FROM {found.table}"
        joiner = " AND " if where else " WHERE "
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    f"{select}{where}{joiner}fid > ? ORDER BY fid LIMIT ?",
                    [*params, last, _SCAN_BATCH],
                ).fetchall()
            if not rows:
                return
            wkbs = [_wkb_of(row[2]) for row in rows]
            geometries: list[BaseGeometry | None] = list(shapely.from_wkb(wkbs))
            yield [
                ScannedRow(
                    row[0],
                    row[1],
                    geometries[i],
                    tuple(_from_sql(kinds[f], v) for f, v in zip(fields, row[3:], strict=True)),
                )
                for i, row in enumerate(rows)
            ]
            if len(rows) < _SCAN_BATCH:
                return
            last = rows[-1][0]

    def copy_rows_from(self, source: GeoPackageStore, layer: str, fids: Sequence[int]) -> int:
        """Copy rows of ``source``'s layer, by fid, as they are stored: fids, global ids,
        versions, values, geometry blobs and R-tree entries; returns how many were copied.

        The bulk path of :meth:`copy_features` between two GeoPackage stores, done by SQLite
        alone: the values were checked when ``source`` stored them, and both layers must have
        the same schema. Nothing is journaled; all rows go in one transaction.

        Raises:
            InvalidLayerSchemaError: the layers' schemas differ.
            InvalidFeatureError: a fid the layer holds already.
        """
        with self._lock:
            found = self._layer(layer)
            mine, theirs = found.schema, source.get_layer(layer)
            if (theirs.fields, theirs.geometry_type, theirs.srid) != (
                mine.fields,
                mine.geometry_type,
                mine.srid,
            ):
                msg = f"{layer!r} differs between {source.path} and {self.path}"
                raise InvalidLayerSchemaError(msg)
            if not fids:
                return 0
            conn = self._conn
            try:
                conn.execute("ATTACH DATABASE ? AS copy_source", (str(source.path),))
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{source.path}: cannot read it: {exc}") from None
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    copied = self._copy_rows(found, fids)
                    conn.execute("COMMIT")
                except sqlite3.IntegrityError:
                    if (
                        conn.in_transaction
                    ):  # SQLite rolls back by itself on some errors (a full disk)
                        conn.execute("ROLLBACK")
                    msg = f"{layer!r} holds some of these rows already"
                    raise InvalidFeatureError(msg) from None
                except BaseException:
                    if (
                        conn.in_transaction
                    ):  # SQLite rolls back by itself on some errors (a full disk)
                        conn.execute("ROLLBACK")
                    raise
            finally:
                conn.execute("DETACH DATABASE copy_source")
        return copied

    def _copy_rows(self, found: _Layer, fids: Sequence[int]) -> int:
        conn = self._conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS copy_fids (fid INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM temp.copy_fids")
        conn.executemany("INSERT OR IGNORE INTO temp.copy_fids VALUES (?)", ((f,) for f in fids))
        chosen = "fid IN (SELECT fid FROM temp.copy_fids)"
        columns = ", ".join(
            ["fid", "globalid", "row_version", *map(_q, found.names)]
            + ([] if found.schema.is_table else ["geom"])
        )
        trigger = None
        if not found.schema.is_table:
            # the R-tree entries are copied whole below, not computed row by row
            name = f"rtree_{found.schema.name}_geom_insert"
            row = conn.execute(
                "SELECT sql FROM main.sqlite_master WHERE type = 'trigger' AND name = ?", (name,)
            ).fetchone()
            if row is not None:
                trigger = str(row[0])
                conn.execute(f"DROP TRIGGER main.{_q(name)}")
        copied = conn.execute(
            f"INSERT INTO main.{found.table} ({columns}) "
            f"SELECT {columns} FROM copy_source.{found.table} WHERE {chosen}"
        ).rowcount
        if not found.schema.is_table:
            conn.execute(  # looked up by id from the chosen fids: R-trees scan on IN (...)
                f"INSERT INTO main.{found.rtree} SELECT r.id, r.minx, r.maxx, r.miny, r.maxy "
                f"FROM temp.copy_fids AS f JOIN copy_source.{found.rtree} AS r ON r.id = f.fid"
            )
        if trigger is not None:
            conn.execute(trigger)
        conn.execute(
            "UPDATE gpkg_contents SET last_change = ? WHERE table_name = ?",
            (_timestamp(_now()), found.schema.name),
        )
        return int(copied)

    def copy_features(self, layer: str, features: Iterable[Feature]) -> int:
        """Insert rows copied from another replica of the service, keeping their global ids,
        versions and values; returns how many were inserted.

        This is how an offline replica is filled: the rows are the server's, not new edits, so
        nothing is journaled and the generation does not move. All rows go in one transaction,
        checked like the inserts of :meth:`apply_edits`.

        Raises:
            InvalidFeatureError: a value or geometry that does not fit the layer, a version below
                1, or a global id the layer holds already; nothing is inserted.
            LayerNotFoundError: no such layer.
        """
        with self._lock:
            found = self._layer(layer)
            schema = found.schema
            columns = ["globalid", "row_version", *map(_q, found.names)]
            if not schema.is_table:
                columns.append("geom")
            insert = (
                f"INSERT INTO {found.table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})"
            )
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{self.path}: cannot start a write: {exc}") from None
            count = 0
            try:
                for feature in features:
                    if not isinstance(feature.global_id, UUID):
                        raise InvalidFeatureError("global_id must be a UUID")
                    version = feature.version
                    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                        raise InvalidFeatureError(
                            f"row {feature.global_id}: bad version {version!r}"
                        )
                    properties = check_properties(schema, feature.properties, complete=True)
                    geometry = normalise_geometry(schema, feature.geometry)
                    values: list[object] = [str(feature.global_id), version]
                    values += [
                        _to_sql(k, properties[n])
                        for n, k in zip(found.names, found.kinds, strict=True)
                    ]
                    if not schema.is_table:
                        values.append(
                            None if geometry is None else encode_geometry(geometry, schema.srid)
                        )
                    try:
                        conn.execute(insert, values)
                    except sqlite3.IntegrityError:
                        raise InvalidFeatureError(
                            f"{layer!r} has a row with global id {feature.global_id} already"
                        ) from None
                    count += 1
                conn.execute(
                    "UPDATE gpkg_contents SET last_change = ? WHERE table_name = ?",
                    (_timestamp(_now()), layer),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    conn.execute("ROLLBACK")
                raise
        return count

    def _row(
        self, conn: sqlite3.Connection, layer: _Layer, global_id: UUID, *, geometry: bool = True
    ) -> Feature:
        row = conn.execute(f"{layer.select} WHERE globalid = ?", (str(global_id),)).fetchone()
        if row is None:
            raise _not_found(layer, global_id)
        return layer.row_to_feature(row, geometry=geometry)

    def _row_version(
        self, conn: sqlite3.Connection, layer: str, global_id: UUID, *, lock: bool
    ) -> int:
        # a write transaction holds the database's write lock: nothing to lock row by row
        return self._fid_version(conn, self._layer(layer), global_id)[1]

    @staticmethod
    def _fid_version(conn: sqlite3.Connection, layer: _Layer, global_id: UUID) -> tuple[int, int]:
        row = conn.execute(
            f"SELECT fid, row_version FROM {layer.table} WHERE globalid = ?", (str(global_id),)
        ).fetchone()
        if row is None:
            raise _not_found(layer, global_id)
        return int(row[0]), int(row[1])

    def _insert_values(
        self, layer: _Layer, edit: Insert, run: list[tuple[Feature, list[object]]]
    ) -> Feature:
        """Check an insert and add its column values to ``run``; returns the row it makes."""
        schema = layer.schema
        if edit.checked:
            properties, geometry = dict(edit.properties), edit.geometry
        else:
            properties = check_properties(schema, edit.properties, complete=True)
            geometry = normalise_geometry(schema, edit.geometry)
        global_id = edit.global_id or uuid.uuid4()
        if not isinstance(global_id, UUID):
            raise InvalidFeatureError("global_id must be a UUID")
        version = check_insert_version(edit)
        values: list[object] = [str(global_id), version]
        values += [_to_sql(k, properties[n]) for n, k in zip(layer.names, layer.kinds, strict=True)]
        if not schema.is_table:
            values.append(None)  # the geometry, encoded with the run's (_insert_rows)
        feature = Feature(global_id, version, properties, geometry)
        run.append((feature, values))
        return feature

    @staticmethod
    def _insert_rows(
        conn: sqlite3.Connection, layer: _Layer | None, run: list[tuple[Feature, list[object]]]
    ) -> None:
        """Insert checked rows at once; a global id taken already is named in the error."""
        if layer is None or not run:
            return
        columns = ["globalid", "row_version", *map(_q, layer.names)]
        if not layer.schema.is_table:
            columns.append("geom")
            blobs = encode_geometries([f.geometry for f, _ in run], layer.schema.srid)
            for (_, values), blob in zip(run, blobs, strict=True):
                values[-1] = blob
        sql = (
            f"INSERT INTO {layer.table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        conn.execute("SAVEPOINT offmaps_insert_run")
        try:
            conn.executemany(sql, [values for _, values in run])
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO offmaps_insert_run")
            for feature, values in run:
                try:
                    conn.execute(sql, values)
                except sqlite3.IntegrityError:
                    raise InvalidFeatureError(
                        f"{layer.schema.name!r} has a row with global id {feature.global_id} "
                        "already"
                    ) from None
        finally:
            conn.execute("RELEASE offmaps_insert_run")

    def _update(self, conn: sqlite3.Connection, layer: _Layer, edit: Update) -> Feature:
        schema = layer.schema
        replaces_geometry = edit.set_geometry or edit.replace
        current = self._row(conn, layer, edit.global_id, geometry=not replaces_geometry)
        check_version(edit.global_id, edit.base_version, current.version)
        if edit.checked and not edit.replace:
            changes = dict(edit.properties)
        else:
            changes = check_properties(schema, edit.properties, complete=edit.replace)
        geometry = current.geometry
        if replaces_geometry:
            geometry = edit.geometry if edit.checked else normalise_geometry(schema, edit.geometry)
        properties = {**current.properties, **changes}
        version = current.version + 1
        kinds = layer.kinds_by_name
        assignments = ["row_version = ?", *(f"{_q(name)} = ?" for name in changes)]
        values: list[object] = [version, *(_to_sql(kinds[n], v) for n, v in changes.items())]
        if (edit.set_geometry or edit.replace) and not schema.is_table:
            assignments.append("geom = ?")
            values.append(None if geometry is None else encode_geometry(geometry, schema.srid))
        conn.execute(
            f"UPDATE {layer.table} SET {', '.join(assignments)} WHERE globalid = ?",
            [*values, str(edit.global_id)],
        )
        return Feature(edit.global_id, version, properties, geometry)

    def _delete(self, conn: sqlite3.Connection, layer: _Layer, edit: Delete) -> tuple[int, int]:
        """Delete a row; returns its fid and the version it had."""
        fid, version = self._fid_version(conn, layer, edit.global_id)
        check_version(edit.global_id, edit.base_version, version)
        conn.execute(f"DELETE FROM {layer.table} WHERE fid = ?", (fid,))
        conn.execute(
            "DELETE FROM offmaps_attachments WHERE layer = ? AND globalid = ?",
            (layer.schema.name, str(edit.global_id)),
        )
        return fid, version

    def row_versions(self, layer: str, global_ids: Sequence[UUID]) -> dict[str, int]:
        """The version of each of these rows that exists, by global id text (see the protocol)."""
        keys = [str(gid) for gid in global_ids]
        with self._lock:
            rows = _rows_by_global_id(self._conn, self._layer(layer), "row_version", keys)
            return {gid: int(version) for gid, version in rows}

    def get_feature(self, layer: str, global_id: UUID) -> Feature:
        """One row; raises ``FeatureNotFoundError``."""
        with self._lock:
            return self._row(self._conn, self._layer(layer), global_id)

    def _where(self, layer: _Layer, query: FeatureQuery) -> tuple[str, list[object]]:
        clauses: list[str] = []
        params: list[object] = []
        if query.bbox is not None and not layer.schema.is_table:
            west, south, east, north = query.bbox
            clauses.append(
                f"fid IN (SELECT id FROM {layer.rtree} "
                "WHERE minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ?)"
            )
            params += [east, west, north, south]
        for text in query.filters:
            compiled = compile_filter(text, layer.schema.field_types(), dialect=SQLDialect.SQLITE)
            clauses.append(f"({compiled.sql})")
            params += compiled.params
        temporal = layer.schema.temporal_field
        if query.time is not None and temporal is not None:
            compiled = compile_time_filter(
                temporal.name, temporal.type, query.time, dialect=SQLDialect.SQLITE
            )
            clauses.append(compiled.sql)
            params += compiled.params
        if query.global_ids is not None:
            if len(query.global_ids) > MAX_PAGE_SIZE:
                raise ValueError(f"at most {MAX_PAGE_SIZE} global ids per query")
            if not query.global_ids:
                clauses.append("0")
            else:
                clauses.append(f"globalid IN ({', '.join('?' * len(query.global_ids))})")
                params += [str(g) for g in query.global_ids]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return where, params

    def query(self, layer: str, query: FeatureQuery) -> FeaturePage:
        """A page of rows matching ``query``, in insertion order, and how many match in all."""
        if not 0 <= query.limit <= MAX_PAGE_SIZE or query.offset < 0:
            raise ValueError(f"limit must be 0..{MAX_PAGE_SIZE} and offset >= 0")
        with self._lock:
            found = self._layer(layer)
            where, params = self._where(found, query)
            matched = self._conn.execute(
                f"SELECT count(*) FROM {found.table}{where}", params
            ).fetchone()[0]
            rows = self._conn.execute(
                f"{found.select}{where} ORDER BY fid LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
        return FeaturePage(tuple(found.row_to_feature(r) for r in rows), int(matched))

    def iter_features(self, layer: str, query: FeatureQuery | None = None) -> Iterator[Feature]:
        """Every row matching ``query``, read in batches (the store stays usable in between)."""
        with self._lock:
            found = self._layer(layer)
            where, params = self._where(found, query or FeatureQuery())
        joiner = " AND " if where else " WHERE "
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    f"{found.select}{where}{joiner}fid > ? ORDER BY fid LIMIT ?",
                    [*params, last, _BATCH],
                ).fetchall()
            for row in rows:
                yield found.row_to_feature(row)
            if len(rows) < _BATCH:
                return
            last = rows[-1][0]

    def extent(self, layer: str) -> BBox | None:
        """The envelope of the layer's geometries (from its R-tree), or ``None``."""
        with self._lock:
            found = self._layer(layer)
            if found.schema.is_table:
                return None
            row = self._conn.execute(
                f"SELECT min(minx), min(miny), max(maxx), max(maxy) FROM {found.rtree}"
            ).fetchone()
        if row[0] is None:
            return None
        return BBox(*(float(v) for v in row))

    def time_extent(self, layer: str) -> TimeInterval | None:
        """The first and last value of the layer's primary temporal property, or ``None``."""
        with self._lock:
            found = self._layer(layer)
            temporal = found.schema.temporal_field
            if temporal is None:
                return None
            column = _q(temporal.name)
            row = self._conn.execute(
                f"SELECT min({column}), max({column}) FROM {found.table}"
            ).fetchone()
        first, last = (_from_sql(temporal.type, value) for value in row)
        if not isinstance(first, date) or not isinstance(last, date):
            return None  # empty, or text a GeoPackage writer stored in another format
        return TimeInterval(first, last)

    # --- journal ---------------------------------------------------------------------------
    # iter_changes, last_change and the attachment methods: AttachmentsBase and JournalBase,
    # over _dialect and the hooks _read, _write, _layer and _row_version

    def generation(self) -> int:
        """The generation of the last committed write (0 for a new store)."""
        with self._lock:
            return self._generation(self._conn)


def _rows_by_global_id(
    conn: sqlite3.Connection, layer: _Layer, columns: str, global_ids: Sequence[str]
) -> Iterator[tuple[Any, ...]]:
    """``globalid`` and ``columns`` of the rows of ``layer`` with these global ids (as text),
    read 500 at a time."""
    for start in range(0, len(global_ids), _BATCH):
        chunk = global_ids[start : start + _BATCH]
        yield from conn.execute(
            f"SELECT globalid, {columns} FROM {layer.table} "
            f"WHERE globalid IN ({', '.join('?' * len(chunk))})",
            chunk,
        )


def _groupable(edit: Edit) -> bool:
    """Whether an edit can be written in a group: an insert, an update checked already (not
    a replace) or a delete, with the base version its row must be at."""
    if isinstance(edit, Update):
        return edit.checked and not edit.replace and edit.base_version is not None
    return isinstance(edit, Insert) or edit.base_version is not None


def _journal_of(edit: Edit) -> tuple[str, str, str, int]:
    """The journal entry of a grouped edit: (layer, global id, kind, version)."""
    if isinstance(edit, Insert):
        return edit.layer, str(edit.global_id), ChangeKind.INSERT.value, edit.version
    version = edit.base_version or 0
    if isinstance(edit, Update):
        return edit.layer, str(edit.global_id), ChangeKind.UPDATE.value, version + 1
    return edit.layer, str(edit.global_id), ChangeKind.DELETE.value, version


def _not_found(layer: _Layer, global_id: UUID) -> FeatureNotFoundError:
    return FeatureNotFoundError(
        f"{layer.schema.name!r} has no row {global_id}",
        layer=layer.schema.name,
        global_id=str(global_id),
    )
