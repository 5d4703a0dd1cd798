"""The server feature store: one PostgreSQL schema per feature service, geometries in PostGIS.

Each layer is a table of the service's schema with ``fid bigserial`` (the stable row order),
``globalid uuid``, ``row_version``, one column per field and, for feature layers, ``geom
geometry(<type>, <srid>)`` with a GiST index, so QGIS, GDAL and any PostGIS client read the
layers as they are. What PostGIS has no place for lives in ``offmaps_*`` tables of the same
schema (layer names may not start with ``offmaps_``):

- ``offmaps_store``: one row with the store format and the generation counter;
- ``offmaps_layers``: each layer's fields with their offmaps types, title and order;
- ``offmaps_relationships``: the 1:N relationships;
- ``offmaps_journal``: every change, with the generation of its transaction;
- ``offmaps_attachments``: attachment records (the bytes live in the server's blob store).

A write transaction locks the ``offmaps_store`` row (``SELECT ... FOR UPDATE``) before it takes
the next generation, so writers in every process commit one after the other and a reader that
sees generation ``g`` sees every change journalled with a generation ``<= g``, as in the
GeoPackage backend. Each store holds one connection (autocommit, with explicit transactions),
shared between threads behind a lock; open one store per worker process for more throughput.

Every identifier is a validated name quoted with :class:`psycopg.sql.Identifier`, and every
value is a bound parameter. Values are stored in their native PostgreSQL types (``bigint``,
``double precision``, ``boolean``, ``date``, ``timestamptz``, ``varchar(n)`` or ``text``), and
geometries go in and out as WKB. Date-times are kept to the millisecond, as in a GeoPackage, so
that a value reads back the same from either backend. Runs of inserts into one layer are sent
with ``executemany`` (pipelined), and a page of a query comes with its count in one statement.

Layer schemas are cached per store and re-read when a name is not found, so a layer created by
another process appears on first use; a layer dropped by another process shows up as
``LayerNotFoundError``. A connection the server closed is replaced on the next call (the call
that finds it closed fails with ``FeatureStoreError``).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Self, TypeAlias
from uuid import UUID

import psycopg
import shapely
from psycopg import sql
from shapely.geometry.base import BaseGeometry

from offmaps.errors import (
    FeatureNotFoundError,
    FeatureStoreError,
    InvalidFeatureError,
    InvalidFilterError,
    InvalidLayerSchemaError,
    LayerExistsError,
    LayerNotFoundError,
    OffmapsError,
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
)
from offmaps.types import BBox

__all__ = ["SCHEMA_NAME", "PostGISStore"]

SCHEMA_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""The names a service's PostgreSQL schema may have (unquoted, lower case, at most 63 bytes)."""

STORE_FORMAT = "1"
_BATCH = 500
_SQL_TYPES = {
    FieldType.TEXT: sql.SQL("text"),
    FieldType.INTEGER: sql.SQL("bigint"),
    FieldType.REAL: sql.SQL("double precision"),
    FieldType.BOOLEAN: sql.SQL("boolean"),
    FieldType.DATE: sql.SQL("date"),
    FieldType.DATETIME: sql.SQL("timestamptz"),
}
_GEOMETRY_TYPES = {kind: sql.SQL(kind.value) for kind in GeometryType}

# also serves the lookups by layer alone (dropping a layer); stores made before it have an index
# on (layer) as well
_JOURNAL_ROW_INDEX = (
    "CREATE INDEX IF NOT EXISTS offmaps_journal_row ON {s}.offmaps_journal (layer, globalid)"
)

_SCHEMA = (
    "CREATE TABLE {s}.offmaps_store (singleton boolean PRIMARY KEY DEFAULT true "
    "CHECK (singleton), format text NOT NULL, generation bigint NOT NULL)",
    "CREATE TABLE {s}.offmaps_layers (name text PRIMARY KEY, position bigserial NOT NULL, "
    "title text, geometry_type text, srid integer NOT NULL, fields jsonb NOT NULL)",
    "CREATE UNIQUE INDEX ON {s}.offmaps_layers (lower(name))",
    "CREATE TABLE {s}.offmaps_relationships (name text PRIMARY KEY, "
    "position bigserial NOT NULL, origin text NOT NULL, origin_key text NOT NULL, "
    "destination text NOT NULL, destination_key text NOT NULL)",
    "CREATE TABLE {s}.offmaps_journal (id bigserial PRIMARY KEY, generation bigint NOT NULL, "
    "layer text NOT NULL, globalid uuid NOT NULL, kind text NOT NULL, version integer NOT NULL, "
    "changed_at timestamptz NOT NULL, attachment_id uuid)",
    "CREATE INDEX ON {s}.offmaps_journal (generation)",
    _JOURNAL_ROW_INDEX,
    "CREATE TABLE {s}.offmaps_attachments (attachment_id uuid PRIMARY KEY, "
    "position bigserial NOT NULL, layer text NOT NULL, globalid uuid NOT NULL, "
    "name text NOT NULL, content_type text NOT NULL, size bigint NOT NULL, "
    "sha256 text NOT NULL, created_at timestamptz NOT NULL)",
    "CREATE INDEX ON {s}.offmaps_attachments (layer, globalid)",
)

_Connection: TypeAlias = psycopg.Connection[tuple[Any, ...]]


def _milliseconds(moment: datetime) -> datetime:
    """``moment`` truncated to milliseconds: the precision of GeoPackage date-times, which every
    backend keeps so that values survive a round trip through a GeoPackage replica unchanged."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _now() -> datetime:
    return _milliseconds(datetime.now(UTC))


def _check_schema_name(schema: str) -> str:
    if not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema):
        shown = repr(schema)[:80]
        raise FeatureStoreError(
            f"schema name {shown} must be 1-63 lower-case letters, digits or _, "
            "starting with a letter"
        )
    if schema.startswith("pg_"):
        raise FeatureStoreError(f"schema name {schema!r} is reserved by PostgreSQL")
    return schema


def _connect(url: str) -> _Connection:
    """A new autocommit connection whose session time zone is UTC."""
    try:
        conn: _Connection = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        # the message names host and port, never the password
        raise FeatureStoreError(f"cannot connect to PostgreSQL: {exc}".strip()) from None
    try:
        conn.execute("SET TIME ZONE 'UTC'")
    except psycopg.Error as exc:
        conn.close()
        raise FeatureStoreError(f"cannot set up the PostgreSQL session: {exc}") from None
    return conn


@contextmanager
def _database_errors(what: str) -> Iterator[None]:
    """Turn driver errors that nothing more specific caught into ``FeatureStoreError``."""
    try:
        yield
    except psycopg.Error as exc:
        raise FeatureStoreError(f"{what}: {type(exc).__name__}: {exc}".strip()) from exc


def _column_sql(field: Field) -> sql.Composable:
    """The column definition of a field."""
    sql_type: sql.Composable = _SQL_TYPES[field.type]
    if field.max_length is not None:
        sql_type = sql.SQL("varchar({})").format(sql.Literal(int(field.max_length)))
    return sql.SQL("{} {}{}").format(
        sql.Identifier(field.name), sql_type, sql.SQL("" if field.nullable else " NOT NULL")
    )


# --- values -------------------------------------------------------------------------------


def _from_sql(kind: FieldType, value: object) -> object:
    if value is None:
        return None
    if kind is FieldType.DATETIME and isinstance(value, datetime):
        return value.astimezone(UTC)
    if kind is FieldType.REAL and isinstance(value, int | float):
        return float(value)
    if kind is FieldType.BOOLEAN:
        return bool(value)
    return value


def _storable(properties: Mapping[str, object]) -> dict[str, object]:
    """Checked properties as stored: date-times to the millisecond, and no NUL characters in
    text (PostgreSQL cannot store them; refuse them as bad values rather than fail)."""
    stored: dict[str, object] = {}
    for name, value in properties.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidFeatureError(f"field {name!r} may not contain NUL characters", field=name)
        stored[name] = _milliseconds(value) if isinstance(value, datetime) else value
    return stored


def _wkb(geometry: BaseGeometry | None) -> bytes | None:
    if geometry is None:
        return None
    data: bytes = shapely.to_wkb(geometry, byte_order=1, flavor="iso")
    return data


def _geometry(wkb: bytes | memoryview | None) -> BaseGeometry | None:
    if wkb is None:
        return None
    geometry: BaseGeometry = shapely.from_wkb(bytes(wkb))
    return None if geometry.is_empty else geometry


class _Layer:
    """A layer's schema with its prepared SQL."""

    def __init__(self, schema_name: str, schema: LayerSchema) -> None:
        self.schema = schema
        self.table = sql.Identifier(schema_name, schema.name)
        self.names = [f.name for f in schema.fields]
        self.kinds = [f.type for f in schema.fields]
        columns: list[sql.Composable] = [
            sql.SQL("fid"),
            sql.SQL("globalid"),
            sql.SQL("row_version"),
            *(sql.Identifier(name) for name in self.names),
        ]
        if not schema.is_table:
            columns.append(sql.SQL("ST_AsBinary(geom) AS geom"))
        self.columns = sql.SQL(", ").join(columns)
        self.select = sql.SQL("SELECT {} FROM {}").format(self.columns, self.table)
        targets: list[sql.Composable] = [
            sql.SQL("globalid"),
            sql.SQL("row_version"),
            *map(sql.Identifier, self.names),
        ]
        marks: list[sql.Composable] = [sql.Placeholder()] * len(targets)
        if not schema.is_table:
            targets.append(sql.SQL("geom"))
            marks.append(sql.SQL("ST_GeomFromWKB(%s::bytea, %s::integer)"))
        # rendered once: composing SQL costs more than sending it
        self.insert = (
            sql.SQL("INSERT INTO {} ({}) VALUES ({})")
            .format(self.table, sql.SQL(", ").join(targets), sql.SQL(", ").join(marks))
            .as_bytes()
        )

    def row_to_feature(self, row: Sequence[Any]) -> Feature:
        values = row[3 : 3 + len(self.names)]
        properties = {
            name: _from_sql(kind, value)
            for name, kind, value in zip(self.names, self.kinds, values, strict=True)
        }
        geometry = None if self.schema.is_table else _geometry(row[-1])
        return Feature(row[1], int(row[2]), properties, geometry)


@dataclass(frozen=True, slots=True)
class _PostgresDialect:
    """A store's SQL for the shared journal and attachment code (a
    :class:`~offmaps.features.dialect.StoreDialect`): its schema's tables, global ids as
    ``uuid``, date-times as ``timestamptz``."""

    journal_table: str
    attachments_table: str
    mark: str = "%s"
    attachment_order: str = "position"
    duplicate_errors: tuple[type[Exception], ...] = (psycopg.errors.UniqueViolation,)
    value_errors: tuple[type[Exception], ...] = (psycopg.DataError,)

    @classmethod
    def of(cls, schema: str) -> _PostgresDialect:
        """The dialect of the store in ``schema``."""
        return cls(
            sql.Identifier(schema, "offmaps_journal").as_string(),
            sql.Identifier(schema, "offmaps_attachments").as_string(),
        )

    def bind_id(self, value: UUID) -> object:
        return value

    def read_id(self, value: Any) -> UUID:
        identifier: UUID = value  # psycopg reads uuid columns as UUID
        return identifier

    def bind_time(self, moment: datetime) -> object:
        return _milliseconds(moment)

    def read_time(self, value: Any) -> datetime:
        moment: datetime = value.astimezone(UTC)
        return moment

    def any_of(self, column: str, values: Sequence[object]) -> tuple[str, list[object]]:
        return f"{column} = ANY(%s)", [list(values)]


class PostGISStore(AttachmentsBase[_Connection]):
    """A feature service kept in one PostgreSQL schema with PostGIS (see the module docs).

    Open with :meth:`create` or :meth:`open`; safe to share between threads.

    Attributes:
        schema: the PostgreSQL schema that holds the service.
    """

    def __init__(self, url: str, schema: str, conn: _Connection) -> None:
        self.schema = schema
        self._url = url
        self._conn = conn
        self._closed = False
        self._lock = threading.RLock()
        self._s = sql.Identifier(schema)
        self._dialect = _PostgresDialect.of(schema)
        self._layers: dict[str, _Layer] = {}
        with self._lock, _database_errors(f"schema {schema!r}"):
            self._load_layers()

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, url: str, *, schema: str) -> PostGISStore:
        """A new, empty store in the PostgreSQL schema ``schema`` of the database at ``url``.

        The schema is created, or used when it exists and is empty (a DBA may create it
        beforehand and grant it to the service's role). PostGIS must be installed in the
        database.

        Raises:
            FeatureStoreError: the name is not a valid schema name, the schema holds a store or
                other tables already, the database has no PostGIS, or the server failed.
        """
        _check_schema_name(schema)
        conn = _connect(url)
        try:
            with _database_errors(f"cannot create a feature store in schema {schema!r}"):
                cls._create_schema(conn, schema)
        except BaseException:
            conn.close()
            raise
        return cls(url, schema, conn)

    @staticmethod
    def _create_schema(conn: _Connection, schema: str) -> None:
        s = sql.Identifier(schema)
        with conn.transaction():
            if conn.execute("SELECT to_regtype('geometry')").fetchone() == (None,):
                raise FeatureStoreError(
                    "the database has no PostGIS: run CREATE EXTENSION postgis in it first"
                )
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
            occupied = conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s ORDER BY c.relname = 'offmaps_store' DESC LIMIT 1",
                (schema,),
            ).fetchone()
            if occupied is not None:
                if occupied[0] == "offmaps_store":
                    raise FeatureStoreError(f"schema {schema!r} holds a feature store already")
                raise FeatureStoreError(
                    f"schema {schema!r} is not empty (it holds {occupied[0]!r})"
                )
            for statement in _SCHEMA:
                conn.execute(sql.SQL(statement).format(s=s))
            conn.execute(
                sql.SQL("INSERT INTO {}.offmaps_store (format, generation) VALUES (%s, 0)").format(
                    s
                ),
                (STORE_FORMAT,),
            )

    @classmethod
    def open(cls, url: str, *, schema: str) -> PostGISStore:
        """The store in schema ``schema`` of the database at ``url``.

        Raises:
            FeatureStoreError: the schema holds no offmaps feature store (of a known format),
                or the server cannot be reached.
        """
        _check_schema_name(schema)
        conn = _connect(url)
        try:
            with _database_errors(f"cannot open the feature store in schema {schema!r}"):
                found = conn.execute(
                    "SELECT to_regclass(format('%%I.offmaps_store', %s::text))", (schema,)
                ).fetchone()
                if found is None or found[0] is None:
                    raise FeatureStoreError(f"schema {schema!r} holds no offmaps feature store")
                row = conn.execute(
                    sql.SQL("SELECT format FROM {}.offmaps_store").format(sql.Identifier(schema))
                ).fetchone()
            if row is None or row[0] != STORE_FORMAT:
                raise FeatureStoreError(
                    f"schema {schema!r}: unknown feature store format {row and row[0]!r}"
                )
            cls._upgrade(conn, schema)
        except BaseException:
            conn.close()
            raise
        return cls(url, schema, conn)

    @staticmethod
    def _upgrade(conn: _Connection, schema: str) -> None:
        """Add what stores made by earlier versions lack: the journal's index by row.

        Best effort: a role that may not create indexes in the schema (or another process
        creating the index at the same moment) leaves the store as it is, and it works, only
        slower to answer :meth:`last_change`.
        """
        found = conn.execute(
            "SELECT to_regclass(format('%%I.offmaps_journal_row', %s::text))", (schema,)
        ).fetchone()
        if found is not None and found[0] is not None:
            return
        with suppress(
            psycopg.errors.InsufficientPrivilege,
            psycopg.errors.UniqueViolation,
            psycopg.errors.DuplicateTable,
            psycopg.errors.LockNotAvailable,
        ):
            conn.execute(sql.SQL(_JOURNAL_ROW_INDEX).format(s=sql.Identifier(schema)))

    @classmethod
    def list_services(cls, url: str) -> list[str]:
        """The schemas of the database at ``url`` that hold an offmaps feature store, sorted."""
        conn = _connect(url)
        try:
            with _database_errors("cannot list the feature stores"):
                rows = conn.execute(
                    "SELECT n.nspname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relname = 'offmaps_store' AND c.relkind = 'r' ORDER BY n.nspname"
                ).fetchall()
        finally:
            conn.close()
        return [name for (name,) in rows if SCHEMA_NAME.fullmatch(name)]

    def reopen(self) -> PostGISStore:
        """Another store on the same schema (a new connection)."""
        return PostGISStore.open(self._url, schema=self.schema)

    def drop(self) -> None:
        """Delete the whole service: its schema, every layer, the journal and the attachment
        records (blobs stay in the blob store). The store is unusable afterwards."""
        with self._lock, _database_errors(f"cannot drop schema {self.schema!r}"):
            self._connection().execute(sql.SQL("DROP SCHEMA {} CASCADE").format(self._s))
            self._layers = {}

    def close(self) -> None:
        """Close the connection. Closing twice is fine."""
        with self._lock:
            self._closed = True
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
        return f"PostGISStore(schema={self.schema!r})"

    def _connection(self) -> _Connection:
        """The store's connection; a new one when the server dropped the old one."""
        if self._closed:
            raise FeatureStoreError(f"the feature store in schema {self.schema!r} is closed")
        if self._conn.broken or self._conn.closed:
            self._conn.close()
            self._conn = _connect(self._url)
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[_Connection]:
        with self._lock, _database_errors(f"schema {self.schema!r}"), self._stale_layers():
            yield self._connection()

    @contextmanager
    def _write(self) -> Iterator[tuple[_Connection, int]]:
        """A write transaction and the generation it will commit as.

        The generation row stays locked until the commit, so writers commit in generation order.
        """
        with (
            self._lock,
            _database_errors(f"schema {self.schema!r}: the write failed"),
            self._stale_layers(),
        ):
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(
                    sql.SQL("SELECT generation FROM {}.offmaps_store FOR UPDATE").format(self._s)
                ).fetchone()
                if row is None:
                    raise FeatureStoreError(f"schema {self.schema!r} has lost its store row")
                generation = int(row[0]) + 1
                yield conn, generation
                conn.execute(
                    sql.SQL("UPDATE {}.offmaps_store SET generation = %s").format(self._s),
                    (generation,),
                )

    @contextmanager
    def _schema_change(self) -> Iterator[_Connection]:
        with self._lock, _database_errors(f"schema {self.schema!r}: the schema change failed"):
            conn = self._connection()
            try:
                with self._stale_layers(), conn.transaction():
                    yield conn
            except BaseException:
                self._load_layers()
                raise

    @contextmanager
    def _stale_layers(self) -> Iterator[None]:
        """A layer's table gone under us (another process dropped it): ``LayerNotFoundError``,
        and the cached schemas are read again."""
        try:
            yield
        except psycopg.errors.UndefinedTable as exc:
            self._load_layers()
            raise LayerNotFoundError(
                f"schema {self.schema!r}: {exc.diag.message_primary or 'a layer was dropped'}"
            ) from None

    # --- schema ----------------------------------------------------------------------------

    def _load_layers(self) -> None:
        rows = (
            self._connection()
            .execute(
                sql.SQL(
                    "SELECT name, title, geometry_type, srid, fields FROM {}.offmaps_layers "
                    "ORDER BY position"
                ).format(self._s)
            )
            .fetchall()
        )
        layers = {}
        for name, title, geometry_type, srid, fields in rows:
            schema = LayerSchema(
                name,
                fields_from_stored(fields),
                GeometryType(geometry_type) if geometry_type else None,
                srid,
                title,
            )
            layers[name] = _Layer(self.schema, schema)
        self._layers = layers

    def _layer(self, name: str) -> _Layer:
        layer = self._layers.get(name)
        if layer is None:
            # another process may have created it since we last looked
            with _database_errors(f"schema {self.schema!r}"):
                self._load_layers()
            layer = self._layers.get(name)
        if layer is None:
            raise LayerNotFoundError(f"no layer or table {str(name)[:80]!r}", layer=name)
        return layer

    def list_layers(self) -> tuple[LayerSchema, ...]:
        """Every layer and table, in creation order."""
        with self._read():
            self._load_layers()
            return tuple(layer.schema for layer in self._layers.values())

    def get_layer(self, name: str) -> LayerSchema:
        """The layer or table called ``name``; raises ``LayerNotFoundError``."""
        with self._lock:
            return self._layer(name).schema

    def create_layer(self, schema: LayerSchema) -> None:
        """Create an empty layer (a table with a PostGIS geometry column and a GiST index) or a
        non-spatial table; raises ``LayerExistsError``, ``InvalidLayerSchemaError``."""
        check_layer_schema(schema)
        with self._schema_change() as conn:
            if schema.geometry_type is not None:
                known = conn.execute(
                    "SELECT 1 FROM spatial_ref_sys WHERE srid = %s", (schema.srid,)
                ).fetchone()
                if known is None:
                    raise InvalidLayerSchemaError(f"EPSG:{schema.srid} is not a known CRS")
            taken = conn.execute(
                sql.SQL("SELECT name FROM {}.offmaps_layers WHERE lower(name) = lower(%s)").format(
                    self._s
                ),
                (schema.name,),
            ).fetchone()
            if taken is not None:
                raise LayerExistsError(f"layer {schema.name!r} exists already")
            try:
                self._create_table(conn, schema)
            except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                raise LayerExistsError(f"layer {schema.name!r} exists already") from None
            self._layers[schema.name] = _Layer(self.schema, schema)

    def _create_table(self, conn: _Connection, schema: LayerSchema) -> None:
        table = sql.Identifier(self.schema, schema.name)
        columns: list[sql.Composable] = [
            sql.SQL("fid bigserial PRIMARY KEY"),
            sql.SQL("globalid uuid NOT NULL UNIQUE"),
            sql.SQL("row_version integer NOT NULL DEFAULT 1"),
        ]
        columns += [_column_sql(field) for field in schema.fields]
        if schema.geometry_type is not None:
            columns.append(
                sql.SQL("geom geometry({}, {})").format(
                    _GEOMETRY_TYPES[schema.geometry_type], sql.Literal(int(schema.srid))
                )
            )
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(columns)))
        if schema.geometry_type is not None:
            conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (geom)").format(table))
        fields = fields_json(schema.fields)
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.offmaps_layers (name, title, geometry_type, srid, fields) "
                "VALUES (%s, %s, %s, %s, %s::jsonb)"
            ).format(self._s),
            (
                schema.name,
                schema.title,
                schema.geometry_type.value if schema.geometry_type else None,
                schema.srid,
                fields,
            ),
        )

    def add_field(self, layer: str, field: Field) -> None:
        """Add a nullable field (``ALTER TABLE ... ADD COLUMN``) and record it in the layer's
        schema; existing rows get null. Takes no generation (see the protocol).

        The layer's row of ``offmaps_layers`` is locked and read again first, so fields added
        at the same time by other processes are neither lost nor duplicated.
        """
        with self._schema_change() as conn:
            found = self._layer(layer)
            row = conn.execute(
                sql.SQL("SELECT fields FROM {}.offmaps_layers WHERE name = %s FOR UPDATE").format(
                    self._s
                ),
                (found.schema.name,),
            ).fetchone()
            if row is None:
                raise LayerNotFoundError(f"no layer or table {str(layer)[:80]!r}", layer=layer)
            current = replace(found.schema, fields=fields_from_stored(row[0]))
            changed = check_added_field(current, field)
            try:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(found.table, _column_sql(field))
                )
            except psycopg.errors.DuplicateColumn:  # a column added behind our back
                raise InvalidLayerSchemaError(
                    f"layer {current.name!r} has a column {field.name!r} already"
                ) from None
            conn.execute(
                sql.SQL("UPDATE {}.offmaps_layers SET fields = %s::jsonb WHERE name = %s").format(
                    self._s
                ),
                (fields_json(changed.fields), current.name),
            )
            self._layers[current.name] = _Layer(self.schema, changed)

    def drop_layer(self, name: str) -> None:
        """Delete a layer, its rows, relationships, journal entries and attachment records."""
        with self._schema_change() as conn:
            layer = self._layer(name)
            conn.execute(sql.SQL("DROP TABLE {}").format(layer.table))
            for statement, params in (
                ("DELETE FROM {}.offmaps_layers WHERE name = %s", (name,)),
                (
                    "DELETE FROM {}.offmaps_relationships WHERE origin = %s OR destination = %s",
                    (name, name),
                ),
                ("DELETE FROM {}.offmaps_journal WHERE layer = %s", (name,)),
                ("DELETE FROM {}.offmaps_attachments WHERE layer = %s", (name,)),
            ):
                conn.execute(sql.SQL(statement).format(self._s), params)
            del self._layers[name]

    def add_relationship(self, relationship: Relationship) -> None:
        """Record a 1:N relationship between two existing layers/tables and fields."""
        with self._schema_change() as conn:
            self._load_layers()
            check_relationship(relationship, {n: la.schema for n, la in self._layers.items()})
            exists = conn.execute(
                sql.SQL("SELECT 1 FROM {}.offmaps_relationships WHERE name = %s").format(self._s),
                (relationship.name,),
            ).fetchone()
            if exists:
                raise InvalidLayerSchemaError(f"relationship {relationship.name!r} exists already")
            try:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.offmaps_relationships "
                        "(name, origin, origin_key, destination, destination_key) "
                        "VALUES (%s, %s, %s, %s, %s)"
                    ).format(self._s),
                    (
                        relationship.name,
                        relationship.origin,
                        relationship.origin_key,
                        relationship.destination,
                        relationship.destination_key,
                    ),
                )
            except psycopg.errors.UniqueViolation:
                raise InvalidLayerSchemaError(
                    f"relationship {relationship.name!r} exists already"
                ) from None

    def list_relationships(self) -> tuple[Relationship, ...]:
        """Every relationship, in creation order."""
        with self._read() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT name, origin, origin_key, destination, destination_key "
                    "FROM {}.offmaps_relationships ORDER BY position"
                ).format(self._s)
            ).fetchall()
        return tuple(Relationship(*row) for row in rows)

    # --- rows ------------------------------------------------------------------------------

    def apply_edits(
        self, edits: Sequence[Edit], *, read_back: bool = True
    ) -> tuple[Feature | None, ...]:
        """Apply edits atomically as one transaction with one new generation (see the protocol).

        An empty sequence changes nothing and takes no generation; ``read_back=False`` returns
        nothing.
        """
        if not edits:
            return ()
        results: list[Feature | None] = []
        with self._write() as (conn, generation):
            changed_at = _now()
            journal: list[tuple[object, ...]] = []
            # consecutive inserts into one layer wait here and go out together; anything that
            # reads (updates and deletes fetch their row first) sends them before it
            run_layer: _Layer | None = None
            run: list[list[object]] = []
            for edit in edits:
                if run_layer is not None and (
                    edit.layer != run_layer.schema.name or not isinstance(edit, Insert)
                ):
                    self._insert_rows(conn, run_layer, run)
                layer = run_layer = self._layer(edit.layer)
                if isinstance(edit, Insert):
                    result, values = self._insert_values(layer, edit)
                    run.append(values)
                    kind = ChangeKind.INSERT
                elif isinstance(edit, Update):
                    result, kind = self._update(conn, layer, edit), ChangeKind.UPDATE
                elif isinstance(edit, Delete):
                    result, kind = self._delete(conn, layer, edit), ChangeKind.DELETE
                else:
                    raise InvalidFeatureError(f"not an edit: {type(edit).__name__}")
                journal.append(
                    (
                        generation,
                        edit.layer,
                        result.global_id,
                        kind.value,
                        result.version,
                        changed_at,
                    )
                )
                if read_back:
                    results.append(None if kind is ChangeKind.DELETE else result)
            if run_layer is not None:
                self._insert_rows(conn, run_layer, run)
            with conn.cursor() as cursor:
                cursor.executemany(
                    sql.SQL(
                        "INSERT INTO {}.offmaps_journal "
                        "(generation, layer, globalid, kind, version, changed_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s)"
                    ).format(self._s),
                    journal,
                )
        return tuple(results)

    def _row(
        self, conn: _Connection, layer: _Layer, global_id: UUID, *, lock: bool = False
    ) -> Feature:
        if not isinstance(global_id, UUID):
            raise FeatureNotFoundError(
                f"{layer.schema.name!r} has no row {str(global_id)[:80]!r}",
                layer=layer.schema.name,
                global_id=str(global_id)[:80],
            )
        query = sql.SQL("{} WHERE globalid = %s{}").format(
            layer.select, sql.SQL(" FOR UPDATE" if lock else "")
        )
        row = conn.execute(query, (global_id,)).fetchone()
        if row is None:
            raise FeatureNotFoundError(
                f"{layer.schema.name!r} has no row {global_id}",
                layer=layer.schema.name,
                global_id=str(global_id),
            )
        return layer.row_to_feature(row)

    def _row_version(self, conn: _Connection, layer: str, global_id: UUID, *, lock: bool) -> int:
        return self._row(conn, self._layer(layer), global_id, lock=lock).version

    @staticmethod
    def _insert_values(layer: _Layer, edit: Insert) -> tuple[Feature, list[object]]:
        """The row an insert adds, and the parameters of ``layer.insert`` that store it."""
        schema = layer.schema
        properties = _storable(check_properties(schema, edit.properties, complete=True))
        geometry = normalise_geometry(schema, edit.geometry)
        global_id = edit.global_id or uuid.uuid4()
        if not isinstance(global_id, UUID):
            raise InvalidFeatureError("global_id must be a UUID")
        version = check_insert_version(edit)
        values: list[object] = [global_id, version, *(properties[n] for n in layer.names)]
        if not schema.is_table:
            values += [_wkb(geometry), schema.srid]
        return Feature(global_id, version, properties, geometry), values

    @staticmethod
    def _insert_rows(conn: _Connection, layer: _Layer, rows: list[list[object]]) -> None:
        """Send a run of inserts into one layer at once (``executemany`` pipelines them)."""
        if not rows:
            return
        try:
            with conn.cursor() as cursor:
                cursor.executemany(layer.insert, rows)
        except psycopg.errors.UniqueViolation as exc:
            detail = exc.diag.message_detail or "a row has this global id already"
            raise InvalidFeatureError(f"{layer.schema.name!r}: {detail}") from None
        except psycopg.DataError as exc:
            raise InvalidFeatureError(
                f"{layer.schema.name!r}: a value cannot be stored: {exc}"
            ) from None
        rows.clear()

    def _update(self, conn: _Connection, layer: _Layer, edit: Update) -> Feature:
        schema = layer.schema
        current = self._row(conn, layer, edit.global_id, lock=True)
        check_version(edit.global_id, edit.base_version, current.version)
        changes = _storable(check_properties(schema, edit.properties, complete=edit.replace))
        geometry = current.geometry
        if edit.set_geometry or edit.replace:
            geometry = normalise_geometry(schema, edit.geometry)
        properties = {**current.properties, **changes}
        version = current.version + 1
        assignments: list[sql.Composable] = [sql.SQL("row_version = %s")]
        assignments += [sql.SQL("{} = %s").format(sql.Identifier(name)) for name in changes]
        values: list[object] = [version, *changes.values()]
        if (edit.set_geometry or edit.replace) and not schema.is_table:
            assignments.append(sql.SQL("geom = ST_GeomFromWKB(%s::bytea, %s::integer)"))
            values += [_wkb(geometry), schema.srid]
        statement = sql.SQL("UPDATE {} SET {} WHERE globalid = %s").format(
            layer.table, sql.SQL(", ").join(assignments)
        )
        try:
            conn.execute(statement, [*values, edit.global_id])
        except psycopg.DataError as exc:
            raise InvalidFeatureError(f"{schema.name!r}: a value cannot be stored: {exc}") from None
        return Feature(edit.global_id, version, properties, geometry)

    def _delete(self, conn: _Connection, layer: _Layer, edit: Delete) -> Feature:
        current = self._row(conn, layer, edit.global_id, lock=True)
        check_version(edit.global_id, edit.base_version, current.version)
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE globalid = %s").format(layer.table), (edit.global_id,)
        )
        conn.execute(
            sql.SQL("DELETE FROM {}.offmaps_attachments WHERE layer = %s AND globalid = %s").format(
                self._s
            ),
            (layer.schema.name, edit.global_id),
        )
        return current

    def row_versions(self, layer: str, global_ids: Sequence[UUID]) -> dict[str, int]:
        """The version of each of these rows that exists, by global id text (see the protocol)."""
        with self._read() as conn:
            found = self._layer(layer)
            rows = conn.execute(
                sql.SQL("SELECT globalid, row_version FROM {} WHERE globalid = ANY(%s)").format(
                    found.table
                ),
                [list(global_ids)],
            ).fetchall()
        return {str(gid): int(version) for gid, version in rows}

    def get_feature(self, layer: str, global_id: UUID) -> Feature:
        """One row; raises ``FeatureNotFoundError``."""
        with self._read() as conn:
            return self._row(conn, self._layer(layer), global_id)

    def _where(
        self, layer: _Layer, query: FeatureQuery
    ) -> tuple[list[sql.Composable], list[object]]:
        clauses: list[sql.Composable] = []
        params: list[object] = []
        if query.bbox is not None and not layer.schema.is_table:
            west, south, east, north = (float(v) for v in query.bbox)
            if west <= east and south <= north:
                clauses.append(sql.SQL("geom && ST_MakeEnvelope(%s, %s, %s, %s, %s)"))
                params += [west, south, east, north, layer.schema.srid]
            else:
                # an inverted box: the same envelope comparisons as the GeoPackage R-tree query
                clauses.append(
                    sql.SQL(
                        "(ST_XMin(geom) <= %s AND ST_XMax(geom) >= %s "
                        "AND ST_YMin(geom) <= %s AND ST_YMax(geom) >= %s)"
                    )
                )
                params += [east, west, north, south]
        for text in query.filters:
            compiled = compile_filter(text, layer.schema.field_types(), dialect=SQLDialect.POSTGRES)
            # the compiled text holds only quoted field names, operators and placeholders
            clauses.append(sql.SQL("({})").format(sql.SQL(compiled.sql)))
            params += compiled.params
        temporal = layer.schema.temporal_field
        if query.time is not None and temporal is not None:
            compiled = compile_time_filter(
                temporal.name, temporal.type, query.time, dialect=SQLDialect.POSTGRES
            )
            # a quoted field name of the layer, operators and placeholders only
            clauses.append(sql.SQL(compiled.sql))
            params += compiled.params
        if query.global_ids is not None:
            if len(query.global_ids) > MAX_PAGE_SIZE:
                raise ValueError(f"at most {MAX_PAGE_SIZE} global ids per query")
            if not query.global_ids:
                clauses.append(sql.SQL("false"))
            else:
                if not all(isinstance(g, UUID) for g in query.global_ids):
                    raise ValueError("global ids are UUIDs")
                clauses.append(sql.SQL("globalid = ANY(%s)"))
                params.append(list(query.global_ids))
        return clauses, params

    def query(self, layer: str, query: FeatureQuery) -> FeaturePage:
        """A page of rows matching ``query``, in insertion order, and how many match in all."""
        if not 0 <= query.limit <= MAX_PAGE_SIZE or query.offset < 0:
            raise ValueError(f"limit must be 0..{MAX_PAGE_SIZE} and offset >= 0")
        with self._read() as conn:
            found = self._layer(layer)
            clauses, params = self._where(found, query)
            where = _where_sql(clauses)
            # one statement, so one snapshot and one round trip for the count and the page;
            # an empty page still brings the count, in a row of nulls
            statement = sql.SQL(
                "SELECT m.matched, p.* FROM (SELECT count(*) AS matched FROM {table}{where}) AS m "
                "LEFT JOIN LATERAL (SELECT {columns} FROM {table}{where} "
                "ORDER BY fid LIMIT %s OFFSET %s) AS p ON true ORDER BY p.fid"
            ).format(table=found.table, where=where, columns=found.columns)
            try:
                rows = conn.execute(
                    statement, [*params, *params, query.limit, query.offset]
                ).fetchall()
            except psycopg.DataError as exc:
                raise _filter_error(exc) from None
        matched = int(rows[0][0]) if rows else 0
        features = tuple(found.row_to_feature(r[1:]) for r in rows if r[1] is not None)
        return FeaturePage(features, matched)

    def iter_features(self, layer: str, query: FeatureQuery | None = None) -> Iterator[Feature]:
        """Every row matching ``query``, read in batches (the store stays usable in between)."""
        with self._lock:
            found = self._layer(layer)
            clauses, params = self._where(found, query or FeatureQuery())
        where = _where_sql([*clauses, sql.SQL("fid > %s")])
        statement = sql.SQL("{}{} ORDER BY fid LIMIT %s").format(found.select, where)
        last = 0
        while True:
            with self._read() as conn:
                try:
                    rows = conn.execute(statement, [*params, last, _BATCH]).fetchall()
                except psycopg.DataError as exc:
                    raise _filter_error(exc) from None
            for row in rows:
                yield found.row_to_feature(row)
            if len(rows) < _BATCH:
                return
            last = rows[-1][0]

    def extent(self, layer: str) -> BBox | None:
        """The envelope of the layer's geometries, or ``None`` when it has none.

        Computed from the coordinates (not from the index's single-precision boxes), so it is
        exact; it reads every row.
        """
        with self._read() as conn:
            found = self._layer(layer)
            if found.schema.is_table:
                return None
            row = conn.execute(
                sql.SQL(
                    "SELECT min(ST_XMin(geom)), min(ST_YMin(geom)), "
                    "max(ST_XMax(geom)), max(ST_YMax(geom)) FROM {}"
                ).format(found.table)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return BBox(*(float(v) for v in row))

    def time_extent(self, layer: str) -> TimeInterval | None:
        """The first and last value of the layer's primary temporal property, or ``None``."""
        with self._read() as conn:
            found = self._layer(layer)
            temporal = found.schema.temporal_field
            if temporal is None:
                return None
            row = conn.execute(
                sql.SQL("SELECT min({column}), max({column}) FROM {table}").format(
                    column=sql.Identifier(temporal.name), table=found.table
                )
            ).fetchone()
        if row is None or row[0] is None:
            return None
        first, last = (_from_sql(temporal.type, value) for value in row)
        if not isinstance(first, date) or not isinstance(last, date):  # pragma: no cover
            return None
        return TimeInterval(first, last)

    # --- journal ---------------------------------------------------------------------------
    # iter_changes, last_change and the attachment methods: AttachmentsBase and JournalBase,
    # over _dialect and the hooks _read, _write, _layer and _row_version

    def generation(self) -> int:
        """The generation of the last committed write (0 for a new store)."""
        with self._read() as conn:
            row = conn.execute(
                sql.SQL("SELECT generation FROM {}.offmaps_store").format(self._s)
            ).fetchone()
        if row is None:
            raise FeatureStoreError(f"schema {self.schema!r} has lost its store row")
        return int(row[0])


def _where_sql(clauses: Sequence[sql.Composable]) -> sql.Composable:
    if not clauses:
        return sql.SQL("")
    return sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(clauses))


def _filter_error(exc: psycopg.DataError) -> OffmapsError:
    """A filter that PostgreSQL cannot evaluate (division by zero, overflow, NUL in text)."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InvalidFilterError(f"the filter cannot be evaluated: {detail}")
