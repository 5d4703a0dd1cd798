# Every SQL text built here quotes identifiers read from the GeoPackage's own schema (validated
# layer and field names); every value is a bound parameter.
# ruff: noqa: S608
"""The sync side of one replica GeoPackage on the device: a durable outbox and downloads.

A :class:`LocalReplica` opens a replica (a GeoPackage written by
:class:`~offmaps.features.geopackage.GeoPackageStore`) with its own connection and installs
SQLite triggers on its layer tables. Every edit, whether made by the SDK or by another tool
writing SQL (QGIS, ``sqlite3``), lands in the outbox in the same transaction as the edit, so
an edit is never lost nor sent twice. :meth:`LocalReplica.pending` reads the outbox as wire
:class:`~offmaps.schemas.changeset.Change` objects; :meth:`LocalReplica.record_results` takes
the server's answers; :meth:`LocalReplica.apply_download` applies the server's changes in one
transaction, keeping local edits that are not uploaded yet.

Tables added to the GeoPackage (registered in ``gpkg_extensions`` as ``offmaps_sync``):

- ``offmaps_sync_state(key TEXT PRIMARY KEY, value TEXT)``: ``replica_id``; ``capture``,
  ``'1'`` when the triggers record edits (it is ``'0'`` only inside the transaction of a
  download, so no other connection ever sees it off); ``hlc``, the last hybrid logical clock
  timestamp given to an outbox row.
- ``offmaps_sync_layers(layer TEXT PRIMARY KEY, generation INTEGER)``: the layers of the
  replica, each with the server generation its last download brought it to.
- ``offmaps_outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, change_id TEXT UNIQUE, layer,
  globalid, kind, old, new, attachment, at_ms, status, reason, conflict_id, hlc, acked_ms)``:
  one row per edit, in the order made. ``old``/``new`` are JSON objects of the row's stored
  values before and after (every field, ``geom`` as the hex of its GeoPackage blob, and
  ``row_version``), ``attachment`` the JSON of an attachment record; ``at_ms`` is when, in
  milliseconds since the Unix epoch; ``status`` is a
  :class:`~offmaps.schemas.changeset.ChangeStatus` (``pending`` until the server answers);
  ``hlc`` is given the first time the row is read for upload, and kept for retries.
- ``offmaps_sync_rows(layer, globalid, version INTEGER, vector TEXT, PRIMARY KEY(layer,
  globalid))``: the server version (and version vector, as JSON, when known) the device last
  knew for a row. A trigger records it the first time a row is edited locally, before the
  SDK's own ``row_version`` bumps could hide it.

A row inserted without a UUID as its global id (QGIS and ``ogr2ogr -append`` write the text of
the column's SQL default; a UUID in braces or capitals is another spelling) gets one from the
insert trigger before the trigger records it: the UUID in the server's spelling, or a new one.
Opening a replica whose insert triggers were older gives its rows the same treatment, and sends
their inserts (pending, or rejected on the device as unreadable) again.

The triggers are named ``offmaps_sync_<layer>_<insert|update|version|delete|attachment_add|
attachment_delete>``. They are re-created when a layer's fields change
(:meth:`LocalReplica.reinstall_triggers`); a tool that adds a column behind our back gets its
edits of that column captured after the next :meth:`LocalReplica.open`.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

import pydantic

from offmaps.errors import PackageError, SyncFailedError
from offmaps.features.filters import FieldType
from offmaps.features.geopackage import (
    CACHE_KIB,
    ENVELOPE_BYTES,
    _column_sql,
    _from_sql,
    _q,
    _register_functions,
    _timestamp,
    _to_sql,
    encode_geometry,
    read_schemas,
)
from offmaps.features.model import Field, LayerSchema
from offmaps.features.store import fields_json
from offmaps.features.validation import check_added_field, check_name
from offmaps.features.wire import value_to_wire, wire_to_edit_values
from offmaps.schemas.changeset import (
    GEOMETRY_FIELD,
    MAX_COVERED,
    AttachmentRef,
    Change,
    ChangeResult,
    ChangeStatus,
    DownloadHeader,
    ServerChange,
    SyncChangeKind,
)
from offmaps.sync import vectors
from offmaps.sync.clock import HybridClock, parse_timestamp
from offmaps.sync.merge import same_value

__all__ = ["DownloadSummary", "LocalReplica", "OutboxEntry"]


def _shapely_error() -> type[Exception]:
    """shapely's error class, looked up only when an exception is being matched: shapely is
    imported where geometries are handled, not by a sync with nothing to send (docs/cli.md)."""
    import shapely  # noqa: PLC0415

    return shapely.errors.ShapelyError


_EXTENSION = "offmaps_sync"
_EXTENSION_DEFINITION = "offmaps offline sync tables: see offmaps.offline.replica"
_TRIGGER_PREFIX = "offmaps_sync_"
_REPLICA_ID_LENGTH = 32
_BATCH = 500
_JSON_CHUNK = 40  # key/value pairs per json_object/json_set call (SQLite caps function args)

_TABLES = (
    "CREATE TABLE IF NOT EXISTS offmaps_sync_state (key TEXT NOT NULL PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS offmaps_sync_layers (layer TEXT NOT NULL PRIMARY KEY, "
    "generation INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS offmaps_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "change_id TEXT NOT NULL UNIQUE, layer TEXT NOT NULL, globalid TEXT NOT NULL, "
    "kind TEXT NOT NULL, old TEXT, new TEXT, attachment TEXT, at_ms INTEGER NOT NULL, "
    "status TEXT NOT NULL DEFAULT 'pending', reason TEXT, conflict_id TEXT, hlc TEXT, "
    "acked_ms INTEGER)",
    "CREATE INDEX IF NOT EXISTS offmaps_outbox_status ON offmaps_outbox (status, seq)",
    "CREATE INDEX IF NOT EXISTS offmaps_outbox_row ON offmaps_outbox (layer, globalid, seq)",
    "CREATE TABLE IF NOT EXISTS offmaps_sync_rows (layer TEXT NOT NULL, "
    "globalid TEXT NOT NULL, version INTEGER NOT NULL, vector TEXT, "
    "PRIMARY KEY (layer, globalid))",
)
_SYNC_TABLES = ("offmaps_sync_state", "offmaps_sync_layers", "offmaps_outbox", "offmaps_sync_rows")

# a random version 4 UUID, as lowercase text
_RANDOM_UUID_SQL = (
    "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))"
)
# a UUID as the device and the server write it: lowercase 8-4-4-4-12 hex digits
_UUID_GLOB = "'" + "-".join("[0-9a-f]" * n for n in (8, 4, 4, 4, 12)) + "'"
_HEX32_GLOB = "'" + "[0-9a-f]" * 32 + "'"
_NOW_MS_SQL = "CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
_CAPTURING_SQL = "(SELECT value FROM offmaps_sync_state WHERE key = 'capture') = '1'"
_ROW_KINDS = (SyncChangeKind.INSERT, SyncChangeKind.UPDATE, SyncChangeKind.DELETE)
_MISSING = object()
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One edit of the outbox, as the device shows it (what it did, and what became of it).

    Attributes:
        seq: the order the edit was made in.
        change_id: the id the server acknowledges it by.
        layer: the layer or table edited.
        global_id: the row edited (for attachments, the row they belong to); ``None`` when
            another tool gave the row a global id that is not a UUID (such edits are rejected).
        kind: what the edit did.
        status: what became of it.
        reason: why it was rejected, or how a conflict was settled.
        conflict_id: the server's review queue entry, for conflicts.
        at: when the edit was made, in UTC.
    """

    seq: int
    change_id: UUID
    layer: str
    global_id: UUID | None
    kind: SyncChangeKind
    status: ChangeStatus
    reason: str | None
    conflict_id: UUID | None
    at: datetime


@dataclass(frozen=True, slots=True)
class DownloadSummary:
    """What :meth:`LocalReplica.apply_download` did.

    Attributes:
        upserted: rows inserted or updated (fully, or but for fields with local edits).
        deleted: rows deleted.
        fields_added: the fields added to local layers, as ``layer.field``.
        kept_local: rows whose pending local edits were kept over the server's change (fields
            edited locally, or a row deleted or still held locally); the upload merges them.
    """

    upserted: int
    deleted: int
    fields_added: tuple[str, ...]
    kept_local: int


@dataclass(frozen=True, slots=True)
class AttachedDownload:
    """A download held in the tables of another SQLite file (a scheduled update file), for
    :meth:`LocalReplica.apply_attached_download`.

    The file's table named after each layer holds the layer's upserted rows as a replica's
    table holds them (``fid``, ``globalid``, ``row_version``, the fields, ``geom`` for a layer);
    ``upserts`` has ``(layer, globalid, version_vector, attachments)`` per upserted row (its
    version vector as JSON, and whether the row's attachment records come with it),
    ``deletes`` ``(layer, globalid)``, and ``attachments`` ``(layer, globalid, attachment_id,
    name, content_type, size, sha256)``.

    Attributes:
        path: the file.
        schemas: the schema of each layer's table in the file, by layer.
        changes_of: the changes of a layer as a download gives them (upserts, then deletions),
            of only the given global ids when these are given: for the rows applied one by one
            (those with local edits pending, or a layer whose stored values differ from the
            replica's).
        upserts: the name of the upserts table.
        deletes: the name of the deletions table.
        attachments: the name of the attachments table.
    """

    path: Path
    schemas: Mapping[str, LayerSchema]
    changes_of: Callable[[str, Collection[str] | None], Iterable[ServerChange]]
    upserts: str
    deletes: str
    attachments: str


def _text(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _batches(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` in slices of ``_BATCH`` (bound parameters per statement stay few)."""
    for begin in range(0, len(items), _BATCH):
        yield items[begin : begin + _BATCH]


def _marks(count: int) -> str:
    """``count`` parameter marks, as an SQL list."""
    return ", ".join("?" * count)


# --- triggers -----------------------------------------------------------------------------


def _row_json_sql(schema: LayerSchema, ref: str) -> str:
    """SQL of a JSON object of the stored row ``ref`` (``NEW`` or ``OLD``)."""
    pairs = [(f.name, f"{ref}.{_q(f.name)}") for f in schema.fields]
    if not schema.is_table:
        blob = f"{ref}.geom"
        # hex(NULL) is '', not NULL
        pairs.append((GEOMETRY_FIELD, f"CASE WHEN {blob} IS NULL THEN NULL ELSE hex({blob}) END"))
    pairs.append(("row_version", f"{ref}.row_version"))
    first, rest = pairs[:_JSON_CHUNK], pairs[_JSON_CHUNK:]
    sql = "json_object(" + ", ".join(f"{_text(k)}, {v}" for k, v in first) + ")"
    for start in range(0, len(rest), _JSON_CHUNK):
        chunk = rest[start : start + _JSON_CHUNK]
        sql = f"json_set({sql}, " + ", ".join(f"{_text('$.' + k)}, {v}" for k, v in chunk) + ")"
    return sql


def _outbox_sql(
    layer: str, global_id: str, kind: SyncChangeKind, columns: Mapping[str, str]
) -> str:
    """SQL that records an edit of the row ``global_id`` (SQL) in the outbox."""
    names = ", ".join(["change_id", "layer", "globalid", "kind", *columns, "at_ms"])
    head = [_RANDOM_UUID_SQL, _text(layer), global_id, _text(kind.value)]
    values = ", ".join([*head, *columns.values(), _NOW_MS_SQL])
    return f"INSERT INTO offmaps_outbox ({names}) VALUES ({values})"


def _first_touch_sql(layer: str, global_id: str, version: str) -> str:
    """SQL that records the server version of the row ``global_id`` (SQL), if not yet."""
    return (
        "INSERT OR IGNORE INTO offmaps_sync_rows (layer, globalid, version, vector) "
        f"VALUES ({_text(layer)}, {global_id}, {version}, NULL)"
    )


def _global_id_sql(value: str) -> str:
    """SQL of the global id of a row written with ``value`` (SQL) as its global id: the UUID
    in the spelling the server uses (lowercase 8-4-4-4-12, without braces nor ``urn:uuid:``),
    or a new random UUID when ``value`` is not a UUID (NULL, the text of the column's SQL
    default that QGIS and ``ogr2ogr -append`` write, anything else)."""
    bare = f"trim(replace(lower({value}), 'urn:uuid:', ''), '{{}}')"
    parts = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
    dashed = " || '-' || ".join(f"substr({bare}, {start}, {size})" for start, size in parts)
    return (
        f"CASE WHEN {bare} GLOB {_UUID_GLOB} THEN {bare} "
        f"WHEN {bare} GLOB {_HEX32_GLOB} THEN {dashed} ELSE {_RANDOM_UUID_SQL} END"
    )


def _odd_global_id_sql(value: str) -> str:
    """SQL: whether the global id ``value`` (SQL) is not written as the server writes it."""
    return f"NOT coalesce({value} GLOB {_UUID_GLOB}, 0)"


def _trigger_sql(schema: LayerSchema) -> dict[str, str]:
    """The capture triggers of one layer, by name."""
    name, table = schema.name, _q(schema.name)
    new, old = _row_json_sql(schema, "NEW"), _row_json_sql(schema, "OLD")
    columns = [_q(f.name) for f in schema.fields] + ([] if schema.is_table else ["geom"])
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns) or "0"
    attachment = (
        "json_object('attachment_id', {0}.attachment_id, 'name', {0}.name, "
        "'content_type', {0}.content_type, 'size', {0}.size, 'sha256', {0}.sha256)"
    )
    row_version = f"coalesce((SELECT row_version FROM {table} WHERE globalid = NEW.globalid), 0)"

    def trigger(suffix: str, when: str, *body: str) -> tuple[str, str]:
        trigger_name = f"{_TRIGGER_PREFIX}{name}_{suffix}"
        statements = "; ".join(body)
        return trigger_name, f"CREATE TRIGGER {_q(trigger_name)} {when} BEGIN {statements}; END"

    # QGIS and ogr2ogr -append write the text of the column's SQL default as the global id,
    # other tools may write none or another spelling: the insert's own trigger gives the row
    # its id first and records the row under the id it now has, so no other trigger's order
    # matters (an update of the global id alone is not an edit the update trigger records)
    inserted = f"(SELECT globalid FROM {table} WHERE fid = NEW.fid)"
    return dict(
        [
            trigger(
                "insert",
                f"AFTER INSERT ON {table} WHEN {_CAPTURING_SQL}",
                f"UPDATE {table} SET globalid = {_global_id_sql('NEW.globalid')} "
                f"WHERE fid = NEW.fid AND {_odd_global_id_sql('NEW.globalid')}",
                _first_touch_sql(name, inserted, "0"),
                _outbox_sql(name, inserted, SyncChangeKind.INSERT, {"new": new}),
            ),
            trigger(
                "update",
                f"AFTER UPDATE ON {table} WHEN {_CAPTURING_SQL} AND ({changed})",
                _first_touch_sql(name, "OLD.globalid", "OLD.row_version"),
                _outbox_sql(name, "NEW.globalid", SyncChangeKind.UPDATE, {"old": old, "new": new}),
            ),
            # the SDK bumps row_version even when nothing changed: the server version the
            # row had is taken before any local bump, whatever the edit
            trigger(
                "version",
                f"AFTER UPDATE OF row_version ON {table} WHEN {_CAPTURING_SQL} "
                "AND OLD.row_version IS NOT NEW.row_version",
                _first_touch_sql(name, "OLD.globalid", "OLD.row_version"),
            ),
            trigger(
                "delete",
                f"AFTER DELETE ON {table} WHEN {_CAPTURING_SQL}",
                _first_touch_sql(name, "OLD.globalid", "OLD.row_version"),
                _outbox_sql(name, "OLD.globalid", SyncChangeKind.DELETE, {"old": old}),
            ),
            trigger(
                "attachment_add",
                f"AFTER INSERT ON offmaps_attachments WHEN NEW.layer = {_text(name)} "
                f"AND {_CAPTURING_SQL}",
                _first_touch_sql(name, "NEW.globalid", row_version),
                _outbox_sql(
                    name,
                    "NEW.globalid",
                    SyncChangeKind.ATTACHMENT_ADD,
                    {"attachment": attachment.format("NEW")},
                ),
            ),
            # the records of a deleted row's attachments go with it: the row's delete says it
            trigger(
                "attachment_delete",
                f"AFTER DELETE ON offmaps_attachments WHEN OLD.layer = {_text(name)} "
                f"AND {_CAPTURING_SQL} "
                f"AND EXISTS (SELECT 1 FROM {table} WHERE globalid = OLD.globalid)",
                _first_touch_sql(name, "OLD.globalid", row_version.replace("NEW.", "OLD.")),
                _outbox_sql(
                    name,
                    "OLD.globalid",
                    SyncChangeKind.ATTACHMENT_DELETE,
                    {"attachment": attachment.format("OLD")},
                ),
            ),
        ]
    )


def _install_triggers(conn: sqlite3.Connection, schemas: Iterable[LayerSchema]) -> set[str]:
    """Make the capture triggers those of ``schemas`` (inside the caller's transaction):
    missing or outdated ones are (re)created, those of other layers dropped. Returns the names
    of the triggers created."""
    wanted: dict[str, str] = {}
    for schema in schemas:
        wanted.update(_trigger_sql(schema))
    existing = {
        str(name): str(sql)
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall()
        if str(name).startswith(_TRIGGER_PREFIX)
    }
    for name, sql in existing.items():
        if wanted.get(name) != sql:
            conn.execute(f"DROP TRIGGER {_q(name)}")
    created = set()
    for name, sql in wanted.items():
        if existing.get(name) != sql:
            conn.execute(sql)
            created.add(name)
    return created


def _repair_global_ids(conn: sqlite3.Connection, schema: LayerSchema) -> int:
    """Give the rows of a layer whose global id is not written as the server writes it the id
    the insert trigger gives them now (see :func:`_global_id_sql`), in the outbox too: the
    rows another tool added while an older insert trigger kept the id it wrote (the text of the
    column's SQL default, say). Their inserts, pending or rejected on the device as unreadable,
    are pending again. Returns how many rows were given an id."""
    table = _q(schema.name)
    odd = conn.execute(
        f"SELECT fid, globalid FROM {table} WHERE {_odd_global_id_sql('globalid')}"
    ).fetchall()
    for fid, old in odd:
        try:
            conn.execute(
                f"UPDATE {table} SET globalid = {_global_id_sql('globalid')} WHERE fid = ?",
                (fid,),
            )
        except sqlite3.IntegrityError:  # another row has the id in the server's spelling
            conn.execute(f"UPDATE {table} SET globalid = {_RANDOM_UUID_SQL} WHERE fid = ?", (fid,))
        (new,) = conn.execute(f"SELECT globalid FROM {table} WHERE fid = ?", (fid,)).fetchone()
        key = (new, schema.name, old)
        conn.execute(
            "UPDATE offmaps_outbox SET globalid = ?, status = CASE WHEN status = 'rejected' "
            "AND reason LIKE 'unreadable:%' THEN 'pending' ELSE status END, "
            "reason = CASE WHEN status = 'rejected' AND reason LIKE 'unreadable:%' THEN NULL "
            "ELSE reason END WHERE layer = ? AND globalid = ?",
            key,
        )
        conn.execute(
            "UPDATE OR REPLACE offmaps_sync_rows SET globalid = ? WHERE layer = ? AND globalid = ?",
            key,
        )
        conn.execute(
            "UPDATE offmaps_attachments SET globalid = ? WHERE layer = ? AND globalid = ?", key
        )
    return len(odd)


# --- values -------------------------------------------------------------------------------


# the types whose recorded values (as JSON decodes them) are their own wire values
_OWN_WIRE_VALUES = (FieldType.TEXT, FieldType.INTEGER)


class _WireValue:
    """Turns the values a trigger recorded for a field of one type into wire values, as
    ``value_to_wire(_from_sql(kind, value))`` does; each text is converted once (dates
    repeat)."""

    __slots__ = ("_kind", "_texts")

    def __init__(self, kind: FieldType) -> None:
        self._kind = kind
        self._texts: dict[str, object] = {}

    def __call__(self, value: object) -> object:
        if not isinstance(value, str):
            return value_to_wire(_from_sql(self._kind, value))
        found = self._texts.get(value, _MISSING)
        if found is _MISSING:
            found = self._texts[value] = value_to_wire(_from_sql(self._kind, value))
        return found


@dataclass(frozen=True, slots=True)
class _RowReader:
    """How one layer's recorded rows read as wire values (see :meth:`wire_row`).

    Attributes:
        fields: the layer's fields in order, each with its converter (``None``: the value as
            it is).
        geometry: whether the layer has a geometry.
    """

    fields: tuple[tuple[str, _WireValue | None], ...]
    geometry: bool

    @classmethod
    def of(cls, schema: LayerSchema) -> _RowReader:
        fields = tuple(
            (f.name, None if f.type in _OWN_WIRE_VALUES else _WireValue(f.type))
            for f in schema.fields
        )
        return cls(fields, not schema.is_table)

    def wire_row(self, stored: Mapping[str, object]) -> dict[str, Any]:
        """A row recorded by a trigger (SQL values, the geometry blob in hex) as wire values:
        the fields it has, then the geometry.

        Raises:
            ValueError: a geometry that is not a GeoPackage blob.
        """
        row: dict[str, Any] = {}
        for name, convert in self.fields:
            if name in stored:
                value = stored[name]
                row[name] = value if convert is None else convert(value)
        if self.geometry and GEOMETRY_FIELD in stored:
            blob = stored[GEOMETRY_FIELD]
            if blob is not None and not isinstance(blob, str):
                raise ValueError("the geometry is not a GeoPackage blob")
            row[GEOMETRY_FIELD] = None if blob is None else _wkb_hex(blob)
        return row


def _wkb_hex(blob: str) -> str:
    """The WKB of a GeoPackage geometry blob given in hex, in hex: the header is cut off
    without decoding the geometry (the server decodes and checks it).

    Raises:
        ValueError: not a GeoPackage geometry blob.
    """
    if len(blob) < 18 or blob[:4].upper() != "4750":
        raise ValueError("the geometry is not a GeoPackage blob")
    envelope = ENVELOPE_BYTES.get((int(blob[6:8], 16) >> 1) & 0b111)
    if envelope is None:
        raise ValueError("the geometry blob has a bad envelope indicator")
    return blob[16 + 2 * envelope :].lower()


def _stored_values(
    schema: LayerSchema, values: Mapping[str, Any], *, complete: bool
) -> dict[str, object]:
    """Wire values as stored (SQL) values by column, checked against the layer; with
    ``complete``, every column (missing ones null).

    Raises:
        InvalidFeatureError: a value of the wrong type, an unknown field, a malformed
            geometry or a geometry on a table.
    """
    if schema.is_table and GEOMETRY_FIELD in values and values[GEOMETRY_FIELD] is None:
        values = {k: v for k, v in values.items() if k != GEOMETRY_FIELD}  # null: no geometry
    checked, geometry, has_geometry = wire_to_edit_values(schema, values, complete=complete)
    kinds = schema.field_types()
    stored: dict[str, object] = {name: _to_sql(kinds[name], v) for name, v in checked.items()}
    if not schema.is_table and (has_geometry or complete):
        stored[GEOMETRY_FIELD] = (
            None if geometry is None else encode_geometry(geometry, schema.srid)
        )
    return stored


def _uuid_or_none(text: object) -> UUID | None:
    try:
        return UUID(str(text))
    except ValueError:
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# --- reading the outbox -------------------------------------------------------------------


# the pending outbox rows in order, each with the server version and vector recorded for its row
_PENDING_SQL = (
    "SELECT o.seq, o.change_id, o.layer, o.globalid, o.kind, o.old, o.new, o.attachment, "
    "o.at_ms, o.hlc, r.version, r.vector FROM offmaps_outbox AS o "
    "LEFT JOIN offmaps_sync_rows AS r ON r.layer = o.layer AND r.globalid = o.globalid "
    "WHERE o.status = 'pending' AND o.seq > ?{where} ORDER BY o.seq LIMIT ?"
)
# the pending outbox rows of some rows of one layer after a given one, in order; through the
# index by row (the planner would take the one by status, and scan every later pending row)
_LATER_SQL = (
    "SELECT o.seq, o.change_id, o.layer, o.globalid, o.kind, o.old, o.new, o.attachment, "
    "o.at_ms, o.hlc, r.version, r.vector FROM offmaps_outbox AS o "
    "INDEXED BY offmaps_outbox_row "
    "LEFT JOIN offmaps_sync_rows AS r ON r.layer = o.layer AND r.globalid = o.globalid "
    "WHERE o.status = 'pending' AND o.layer = ? AND o.globalid IN ({marks}) AND o.seq > ? "
    "ORDER BY o.seq"
)
_ROW_EDITS = (SyncChangeKind.UPDATE.value, SyncChangeKind.DELETE.value)
_GROUP_STARTS = (SyncChangeKind.INSERT.value, SyncChangeKind.UPDATE.value)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class _Edit:
    """One outbox row, decoded: the row as read, its kind, the row's wire values before and
    after, and the attachment record."""

    row: Sequence[Any]
    kind: SyncChangeKind
    old: dict[str, Any]
    new: dict[str, Any]
    attachment: AttachmentRef | None


class _PendingReader:
    """Reads the pending outbox rows of ``_PENDING_SQL`` as wire changes, oldest first, inside
    the transaction of one :meth:`LocalReplica.pending`.

    A row's pending edits go as one change (:meth:`read`), as pygeodiff ships a row's net
    change: an insert or update with the updates and the delete that follow it, up to the
    next attachment edit, an edit in flight (``skip``), an unreadable edit or
    :data:`~offmaps.schemas.changeset.MAX_COVERED` of them. Edits read for an upload before
    (they have an HLC timestamp: the upload may have reached the server, its answer lost) go
    one by one, so a retry sends the ids the server recorded. The change carries the last edit's
    id, the values after it and, for updates, the values before the first as the base; the
    other ids are its ``covers``. An insert deleted again is settled ``applied`` with nothing
    to send, as are updates that end where they began.

    It counts the pending edits of each row as it goes (a change's version vector counts
    those up to its last), stamps the edits of each change that have no HLC timestamp yet
    (the change carries its last edit's; :meth:`save` writes the stamps down), and settles
    the rows that are no change or cannot be read.
    """

    def __init__(self, conn: sqlite3.Connection, replica_id: str, skip: Collection[UUID]) -> None:
        self._conn = conn
        self._replica_id = replica_id
        self._schemas = read_schemas(conn)
        self._readers: dict[str, _RowReader] = {}
        self._skip = set(skip)
        # the triggers write ids as canonical text: comparing texts spares parsing each id
        self._skip_text = {str(change_id) for change_id in self._skip}
        self._counts: dict[tuple[str, str], int] = {}
        self._vectors: dict[tuple[int, str | None, int], dict[str, int]] = {}
        state = conn.execute("SELECT value FROM offmaps_sync_state WHERE key = 'hlc'").fetchone()
        self._wall_ms = 0  # the clock's wall clock: the edit time of the row being stamped
        self._clock = HybridClock(
            replica_id,
            now_ms=lambda: self._wall_ms,
            last=parse_timestamp(state[0]) if state and state[0] else None,
        )
        self._stamped: list[tuple[str, int]] = []
        self._settled: list[tuple[str, str, int, int]] = []
        self._timeline: dict[tuple[str, str], list[Sequence[Any]]] = {}
        self._absorbed: set[int] = set()
        self.rejected: list[tuple[str, str, str]] = []
        """The edits settled as rejected: layer, change id and reason of each."""

    def look_ahead(self, rows: Sequence[Sequence[Any]]) -> None:
        """Take a batch of pending rows: note, for each row they edit, its pending edits from
        the batch on (the batch's, then later ones read by the row's index)."""
        self._timeline = {}
        by_layer: dict[str, set[str]] = {}
        for row in rows:
            self._timeline.setdefault((row[2], row[3]), []).append(row)
            starts = row[4] in _GROUP_STARTS and row[0] not in self._absorbed
            if starts and not self._skipped(row[1]):
                by_layer.setdefault(row[2], set()).add(row[3])
        if not rows:
            return
        last = rows[-1][0]
        for layer, global_ids in by_layer.items():
            for chunk in _batches(sorted(global_ids)):
                sql = _LATER_SQL.format(marks=_marks(len(chunk)))
                for later in self._conn.execute(sql, [layer, *chunk, last]):
                    self._timeline[later[2], later[3]].append(later)

    def read(self, row: Sequence[Any]) -> Change | None:
        """The change that the outbox row ``row`` begins (see the class docs); ``None`` when
        the row is skipped, went with an earlier change, or the edits are not a change (they
        are then settled)."""
        seq, change_id, layer, global_id = row[:4]
        if seq in self._absorbed:
            self._absorbed.discard(seq)
            return None
        key = (layer, global_id)
        if self._skipped(change_id):
            self._counts[key] = self._counts.get(key, 0) + 1
            return None
        try:
            first = self._decode(row)
        except (ValueError, _shapely_error(), pydantic.ValidationError) as exc:
            self._settle(row, ChangeStatus.REJECTED, f"unreadable: {_one_line(exc)}")
            return None
        # an edit read for an upload before may have reached the server with its answer lost:
        # it goes on its own, under its own id, and the server answers it from its record
        group = [first] if row[9] is not None else [first, *self._following(first)]
        last = group[-1]
        values: dict[str, Any] = {}
        changed: list[str] = []
        base_values: dict[str, Any] = {}
        kind = last.kind
        if first.kind is SyncChangeKind.INSERT:
            if kind is SyncChangeKind.DELETE:
                self._conn.execute(  # the device knew no server version of it
                    "DELETE FROM offmaps_sync_rows WHERE layer = ? AND globalid = ?", key
                )
                self._settle_all(group, "nothing to send: the row was added and deleted")
                return None
            kind, values = SyncChangeKind.INSERT, last.new
        elif kind is SyncChangeKind.UPDATE:
            values = last.new
            changed = [
                name
                for name, value in values.items()
                if not same_value(first.old.get(name, _MISSING), value, field=name)
            ]
            if not changed:
                self._settle_all(group, "no change")
                return None
            base_values = {name: first.old.get(name) for name in changed}
        elif kind is SyncChangeKind.DELETE:
            base_values = first.old
        self._absorbed.update(edit.row[0] for edit in group[1:])
        recorded_version, recorded_vector = row[10], row[11]
        version = 0 if recorded_version is None else int(recorded_version)
        # rows are read in order from the first pending one, so counting as it goes counts the
        # row's pending edits up to the change's last
        mine = self._counts[key] = self._counts.get(key, 0) + len(group)
        vector = self._vector(version, recorded_vector, mine)
        for edit in group[:-1]:  # sent: from now on each goes on its own (above)
            self._stamp(edit.row[0], edit.row[8])
        hlc = last.row[9]
        hlc = self._stamp(last.row[0], last.row[8]) if hlc is None else str(hlc)
        try:
            # validated as any input is (ids parsed there too): another tool may have written
            # anything in the row
            return Change.model_validate(
                {
                    "change_id": last.row[1],
                    "layer": layer,
                    "global_id": global_id,
                    "kind": kind,
                    "base_version": 0 if kind is SyncChangeKind.INSERT else version,
                    "version_vector": vector,
                    "hlc": hlc,
                    "values": values,
                    "changed": changed,
                    "base_values": base_values,
                    "attachment": first.attachment,
                    "covers": [edit.row[1] for edit in group[:-1]],
                }
            )
        except pydantic.ValidationError as exc:
            for edit in group:
                reason = f"unreadable: {_one_line(exc)}"
                self._settle(edit.row, ChangeStatus.REJECTED, reason)
            return None

    def _decode(self, row: Sequence[Any]) -> _Edit:
        """Raises ValueError, shapely's ShapelyError or pydantic.ValidationError for an unreadable
        row."""
        reader = self._reader(row[2])
        old_json, new_json, attachment_json = row[5:8]
        return _Edit(
            row,
            SyncChangeKind(row[4]),
            reader.wire_row(json.loads(old_json)) if old_json else {},
            reader.wire_row(json.loads(new_json)) if new_json else {},
            AttachmentRef.model_validate_json(attachment_json) if attachment_json else None,
        )

    def _following(self, first: _Edit) -> list[_Edit]:
        """The edits of the row after ``first`` that go in the same change."""
        if first.kind not in (SyncChangeKind.INSERT, SyncChangeKind.UPDATE):
            return []
        found: list[_Edit] = []
        seq = first.row[0]
        for row in self._timeline.get((first.row[2], first.row[3]), ()):
            if row[0] <= seq:
                continue
            if len(found) >= MAX_COVERED or row[4] not in _ROW_EDITS or row[9] is not None:
                break
            if self._skipped(row[1]):
                break
            try:
                edit = self._decode(row)
            except (ValueError, _shapely_error(), pydantic.ValidationError):
                break  # it goes on its own, and is rejected then
            found.append(edit)
            if edit.kind is SyncChangeKind.DELETE:
                break
        return found

    def _settle(self, row: Sequence[Any], status: ChangeStatus, reason: str) -> None:
        self._settled.append((status.value, reason, _now_ms(), row[0]))
        if status is ChangeStatus.REJECTED:
            self.rejected.append((str(row[2]), str(row[1]), reason))

    def _settle_all(self, group: Sequence[_Edit], reason: str) -> None:
        """Settle edits that need not be sent as applied."""
        for edit in group:
            self._settle(edit.row, ChangeStatus.APPLIED, reason)
        self._absorbed.update(edit.row[0] for edit in group[1:])

    def save(self) -> None:
        """Write down the rows settled, the HLC timestamps given to rows, and the clock's last
        one."""
        self._conn.executemany(
            "UPDATE offmaps_outbox SET status = ?, reason = ?, acked_ms = ? WHERE seq = ?",
            self._settled,
        )
        self._conn.executemany("UPDATE offmaps_outbox SET hlc = ? WHERE seq = ?", self._stamped)
        if self._stamped and self._clock.last is not None:
            self._conn.execute(
                "INSERT OR REPLACE INTO offmaps_sync_state VALUES ('hlc', ?)",
                (str(self._clock.last),),
            )

    def _skipped(self, change_id: str) -> bool:
        if change_id in self._skip_text:
            return True
        if not self._skip or _CANONICAL_UUID.fullmatch(change_id):
            return False
        try:  # an id another tool wrote in another spelling
            return UUID(change_id) in self._skip
        except ValueError:
            return False

    def _reader(self, layer: str) -> _RowReader:
        reader = self._readers.get(layer)
        if reader is None:
            schema = self._schemas.get(layer) or LayerSchema(layer, ())
            reader = self._readers[layer] = _RowReader.of(schema)
        return reader

    def _vector(self, version: int, recorded: str | None, mine: int) -> dict[str, int]:
        """The row's version vector after its ``mine``-th pending change: the one recorded
        for the row at ``version`` (or derived from the version) plus those changes. Shared
        between changes: validation copies it."""
        key = (version, recorded, mine)
        vector = self._vectors.get(key)
        if vector is None:
            base = json.loads(recorded) if recorded else vectors.derive(None, 0, version)
            vector = self._vectors[key] = vectors.increment(base, self._replica_id, mine)
        return vector

    def _stamp(self, seq: int, at_ms: int) -> str:
        """A new HLC timestamp for the row ``seq``, edited at ``at_ms``."""
        self._wall_ms = int(at_ms)
        hlc = self._clock.tick().format()
        self._stamped.append((hlc, seq))
        return hlc


# --- the replica --------------------------------------------------------------------------


_ENTRY_SQL = (
    "SELECT seq, change_id, layer, globalid, kind, status, reason, conflict_id, at_ms "
    "FROM offmaps_outbox"
)


def _entry(row: Sequence[Any]) -> OutboxEntry:
    """An outbox row read by ``_ENTRY_SQL``."""
    return OutboxEntry(
        seq=int(row[0]),
        change_id=UUID(row[1]),
        layer=str(row[2]),
        global_id=_uuid_or_none(row[3]),
        kind=SyncChangeKind(row[4]),
        status=ChangeStatus(row[5]),
        reason=row[6],
        conflict_id=UUID(row[7]) if row[7] else None,
        at=datetime.fromtimestamp(int(row[8]) / 1000, UTC),
    )


class LocalReplica:
    """The sync side of one replica GeoPackage on the device (see the module docs).

    Open with :meth:`open`; a context manager. Safe to share between threads (one connection,
    behind a lock). Edits are made through :class:`~offmaps.features.geopackage.GeoPackageStore`
    or any SQLite client on the same file: the triggers capture them all.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, replica_id: str) -> None:
        """Wrap an open connection; use :meth:`open`."""
        self._path = path
        self._conn = conn
        self._replica_id = replica_id
        self._lock = threading.RLock()

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        replica_id: str,
        generation: int,
        layers: Sequence[str] | None = None,
        durable: bool = True,
    ) -> LocalReplica:
        """Open a replica GeoPackage for sync, installing the sync tables and triggers.

        The first open records ``replica_id`` and ``generation`` (the server generation the
        replica was extracted at) as the last downloaded generation of every layer. Later
        opens check the replica id, add ``layers`` the replica lacks (at ``generation``) and
        bring the triggers up to date with the layers' fields.

        Args:
            path: the GeoPackage, as written by ``GeoPackageStore``.
            replica_id: the server's id of this replica (32 lowercase hex digits).
            generation: the server generation the replica's data is at.
            layers: the layers and tables that sync (default: every layer of the file).
            durable: flush every commit to disk; ``False`` for a copy made durable by its
                owner once finished (a staged copy: a crash loses it whole, not half of it).

        Returns:
            The open replica.

        Raises:
            PackageError: not an offmaps GeoPackage, a layer it does not have, or a file
                recorded as another replica.
            ValueError: a malformed replica id or a negative generation.
        """
        path = Path(path)
        if len(replica_id) != _REPLICA_ID_LENGTH or replica_id.strip("0123456789abcdef"):
            raise ValueError(f"a replica id is 32 lowercase hex digits, not {replica_id!r}")
        if generation < 0:
            raise ValueError(f"a generation is >= 0, not {generation}")
        if not path.is_file():
            raise PackageError(f"{path}: no such replica")
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise PackageError(f"{path}: cannot open the replica: {_one_line(exc)}") from None
        try:
            _register_functions(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            if not durable:
                conn.execute("PRAGMA synchronous = OFF")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            cls._install(conn, path, replica_id, generation, layers)
        except sqlite3.Error as exc:
            conn.close()
            raise PackageError(f"{path}: not a replica GeoPackage: {_one_line(exc)}") from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, replica_id)

    @staticmethod
    def _install(
        conn: sqlite3.Connection,
        path: Path,
        replica_id: str,
        generation: int,
        layers: Sequence[str] | None,
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            schemas = read_schemas(conn)
            for name in layers or ():
                if name not in schemas:
                    raise PackageError(f"{path}: no layer or table {name!r}")
            for statement in _TABLES:
                conn.execute(statement)
            for table in _SYNC_TABLES:
                conn.execute(
                    "INSERT INTO gpkg_extensions SELECT ?, NULL, ?, ?, 'read-write' WHERE NOT "
                    "EXISTS (SELECT 1 FROM gpkg_extensions WHERE table_name = ? "
                    "AND extension_name = ?)",
                    (table, _EXTENSION, _EXTENSION_DEFINITION, table, _EXTENSION),
                )
            row = conn.execute(
                "SELECT value FROM offmaps_sync_state WHERE key = 'replica_id'"
            ).fetchone()
            if row is None:
                conn.executemany(
                    "INSERT INTO offmaps_sync_state VALUES (?, ?)",
                    [("replica_id", replica_id), ("capture", "1")],
                )
                wanted = list(layers) if layers is not None else list(schemas)
            elif row[0] != replica_id:
                raise PackageError(f"{path} is the replica {row[0]}, not {replica_id}")
            else:
                wanted = list(layers or ())
            conn.executemany(
                "INSERT OR IGNORE INTO offmaps_sync_layers VALUES (?, ?)",
                [(name, generation) for name in wanted],
            )
            synced = [r[0] for r in conn.execute("SELECT layer FROM offmaps_sync_layers")]
            synced_schemas = [schemas[name] for name in synced if name in schemas]
            created = _install_triggers(conn, synced_schemas)
            # a replica written before inserts were given their global ids
            for schema in synced_schemas:
                if f"{_TRIGGER_PREFIX}{schema.name}_insert" in created:
                    _repair_global_ids(conn, schema)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection. Closing twice is fine."""
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
        return f"LocalReplica({str(self._path)!r}, replica_id={self._replica_id!r})"

    @property
    def path(self) -> Path:
        """The GeoPackage file."""
        return self._path

    @property
    def replica_id(self) -> str:
        """The server's id of this replica, and its node in version vectors and HLCs."""
        return self._replica_id

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; sqlite3 errors become ``SyncFailedError`` after the rollback."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                msg = f"{self._path}: cannot start a write: {_one_line(exc)}"
                raise SyncFailedError(msg) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise SyncFailedError(f"{self._path}: {_one_line(exc)}") from exc
                raise

    def _synced_schemas(self, conn: sqlite3.Connection) -> dict[str, LayerSchema]:
        schemas = read_schemas(conn)
        names = [r[0] for r in conn.execute("SELECT layer FROM offmaps_sync_layers")]
        return {name: schemas[name] for name in schemas if name in names}

    def reinstall_triggers(self) -> None:
        """Bring the capture triggers up to date with the layers' fields (after a field was
        added by another connection, say); triggers that are current are left alone.

        Raises:
            SyncFailedError: the database failed; nothing changed.
        """
        with self._transaction() as conn:
            _install_triggers(conn, self._synced_schemas(conn).values())

    # --- generations -----------------------------------------------------------------------

    def generations(self) -> dict[str, int]:
        """The server generation each layer's last download brought it to, by layer."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT layer, generation FROM offmaps_sync_layers ORDER BY layer"
            ).fetchall()
        return {str(layer): int(generation) for layer, generation in rows}

    def generation(self, layer: str) -> int:
        """The server generation ``layer``'s last download brought it to.

        Raises:
            PackageError: ``layer`` is not a layer of this replica.
        """
        found = self.generations().get(layer)
        if found is None:
            raise PackageError(f"{self._path}: {layer!r} is not a layer of the replica")
        return found

    # --- outbox ----------------------------------------------------------------------------

    @staticmethod
    def _layer_filter(
        layers: Sequence[str] | None, column: str = "layer"
    ) -> tuple[str, list[object]]:
        if layers is None:
            return "", []
        return f" AND {column} IN ({_marks(len(layers))})", list(layers)

    def pending_count(self, layers: Sequence[str] | None = None) -> int:
        """How many outbox rows wait for upload (updates that turn out to change nothing
        included, until :meth:`pending` drops them)."""
        where, params = self._layer_filter(layers)
        with self._lock:
            row = self._conn.execute(
                f"SELECT count(*) FROM offmaps_outbox WHERE status = 'pending'{where}", params
            ).fetchone()
        return int(row[0])

    def status_counts(self) -> dict[ChangeStatus, int]:
        """How many outbox rows have each status (every status, 0 when none)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT status, count(*) FROM offmaps_outbox GROUP BY status"
            ).fetchall()
        counts = dict.fromkeys(ChangeStatus, 0)
        for status, count in rows:
            counts[ChangeStatus(status)] = int(count)
        return counts

    def outbox(self, status: ChangeStatus | None = None, limit: int = 1000) -> list[OutboxEntry]:
        """Outbox rows, oldest first: every row, or those with ``status``."""
        where, params = ("", []) if status is None else (" WHERE status = ?", [status.value])
        with self._lock:
            rows = self._conn.execute(
                f"{_ENTRY_SQL}{where} ORDER BY seq LIMIT ?", [*params, limit]
            ).fetchall()
        return [_entry(row) for row in rows]

    def not_applied(self, limit: int = 20) -> list[OutboxEntry]:
        """The newest outbox rows whose status is not ``applied`` (pending, merged, parked as
        conflicts, rejected), newest first: what a person syncing wants to see, however many
        edits were applied before them."""
        rows: list[Sequence[Any]] = []
        with self._lock:
            for status in ChangeStatus:
                if status is not ChangeStatus.APPLIED:  # each through the index by status
                    rows += self._conn.execute(
                        f"{_ENTRY_SQL} WHERE status = ? ORDER BY seq DESC LIMIT ?",
                        (status.value, limit),
                    ).fetchall()
        rows.sort(key=lambda row: -int(row[0]))
        return [_entry(row) for row in rows[:limit]]

    def pending(
        self,
        layers: Sequence[str] | None = None,
        limit: int | None = None,
        skip: Collection[UUID] = (),
        *,
        preview: bool = False,
        on_rejected: Callable[[str, str, str], object] | None = None,
    ) -> list[Change]:
        """The pending outbox rows, oldest first, as wire changes to upload.

        Each row gets its HLC timestamp the first time it is read here, and keeps it, so a
        retried upload sends the same change. Updates whose values turn out the same once
        decoded (``1`` rewritten as ``2`` in a boolean field, a geometry re-encoded) are
        marked applied with the reason ``no change`` and not returned; rows that cannot be
        read (a malformed geometry written by another tool) are marked rejected.

        Args:
            layers: only changes of these layers (default: all).
            limit: at most this many changes.
            skip: leave out the changes with these ids (a set being uploaded while the next
                one is read); they still count in the version vectors of later changes.
            preview: read the changes as an upload would now, but write nothing down (no
                timestamps kept, no rows settled): what an upload would send, without changing
                what it will send (a row given its timestamp is no longer folded into later
                edits of the same row).
            on_rejected: called, once the rows are settled, with the layer, change id and
                reason of each edit rejected here on the device (never sent: the server's
                answers do not count it).

        Returns:
            The changes, in the order they were made.

        Raises:
            SyncFailedError: the database failed; nothing changed.
            ValueError: a negative ``limit``.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        changes: list[Change] = []
        if limit == 0:
            return changes
        where, params = self._layer_filter(layers, "o.layer")
        with self._transaction() as conn:
            reader = _PendingReader(conn, self._replica_id, skip)
            last_seq = 0
            while limit is None or len(changes) < limit:
                rows = conn.execute(
                    _PENDING_SQL.format(where=where), [last_seq, *params, _BATCH]
                ).fetchall()
                reader.look_ahead(rows)
                for row in rows:
                    if limit is not None and len(changes) >= limit:
                        break
                    last_seq = row[0]
                    change = reader.read(row)
                    if change is not None:
                        changes.append(change)
                if len(rows) < _BATCH:
                    break
            if not preview:
                reader.save()
        if on_rejected is not None and not preview:
            for layer, change_id, reason in reader.rejected:
                on_rejected(layer, change_id, reason)
        return changes

    def record_results(self, results: Sequence[ChangeResult]) -> None:
        """Record the server's answers to uploaded changes, in one transaction.

        Each named outbox row takes the result's status, reason and conflict id; unknown
        change ids are ignored. Applied and merged results also record the row's new server
        version and vector (a row that is gone is forgotten). Rows no result names stay
        pending.

        Raises:
            SyncFailedError: the database failed; nothing changed.
        """
        with self._transaction() as conn:
            acked = _now_ms()
            ids = [str(result.change_id) for result in results]
            rows: dict[str, tuple[int, str, str]] = {}  # by change id: seq, layer, global id
            for id_chunk in _batches(ids):
                found = conn.execute(
                    "SELECT change_id, seq, layer, globalid FROM offmaps_outbox "
                    f"WHERE change_id IN ({_marks(len(id_chunk))})",
                    id_chunk,
                ).fetchall()
                rows.update({change_id: (seq, layer, gid) for change_id, seq, layer, gid in found})
            answers: dict[int, ChangeResult] = {}  # by seq: the last answer naming the row
            # the last applied or merged answer of each row says what the server holds
            states: dict[tuple[str, str], tuple[int, str | None] | None] = {}
            for change_id, result in zip(ids, results, strict=True):
                row = rows.get(change_id)
                if row is None:
                    continue
                seq, layer, global_id = row
                answers[seq] = result
                if result.status in (ChangeStatus.APPLIED, ChangeStatus.MERGED):
                    vector = json.dumps(result.version_vector) if result.version_vector else None
                    version = result.version
                    states[layer, global_id] = None if version is None else (version, vector)
            # the rows taking the same answer (most often a plain "applied") are updated at once
            by_answer: dict[tuple[str, str | None, str | None], list[int]] = {}
            for seq, result in answers.items():
                conflict_id = None if result.conflict_id is None else str(result.conflict_id)
                same = by_answer.setdefault((result.status.value, result.reason, conflict_id), [])
                same.append(seq)
            for (status, reason, conflict_id), seqs in by_answer.items():
                for seq_chunk in _batches(seqs):
                    conn.execute(
                        "UPDATE offmaps_outbox SET status = ?, reason = ?, conflict_id = ?, "
                        f"acked_ms = ? WHERE seq IN ({_marks(len(seq_chunk))})",
                        [status, reason, conflict_id, acked, *seq_chunk],
                    )
            conn.executemany(
                "DELETE FROM offmaps_sync_rows WHERE layer = ? AND globalid = ?",
                [key for key, state in states.items() if state is None],
            )
            # an upsert rewrites a row in place (a REPLACE would move it, and its index entry)
            conn.executemany(
                "INSERT INTO offmaps_sync_rows VALUES (?, ?, ?, ?) "
                "ON CONFLICT (layer, globalid) DO UPDATE "
                "SET version = excluded.version, vector = excluded.vector",
                [(*key, *state) for key, state in states.items() if state is not None],
            )

    def seed_server_states(self, states: Iterable[tuple[str, str, int, Mapping[str, int]]]) -> int:
        """Record the server's version vectors of rows as the replica was taken: ``(layer,
        global id, version, vector)`` as the server's sync state recorded them (the vector is
        carried forward to the replica row's version); rows the replica lacks are skipped.
        Returns how many rows were recorded.

        Rows without a record count as ``{"server": version}``, which is what the server
        derives for rows no sync ever touched; rows a sync touched need their real vector.
        """
        count = 0
        with self._transaction() as conn:
            schemas = self._synced_schemas(conn)
            for layer, global_id, version, vector in states:
                if layer not in schemas:
                    continue
                found = conn.execute(
                    f"SELECT row_version FROM {_q(layer)} WHERE globalid = ?", (global_id,)
                ).fetchone()
                if found is None:
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO offmaps_sync_rows VALUES (?, ?, ?, ?)",
                    (
                        layer,
                        global_id,
                        found[0],
                        json.dumps(vectors.derive(vector, version, found[0])),
                    ),
                )
                count += 1
        return count

    # --- downloads -------------------------------------------------------------------------

    def apply_download(
        self,
        header: DownloadHeader,
        changes: Iterable[ServerChange],
        *,
        layers: Sequence[str] | None = None,
    ) -> DownloadSummary:
        """Apply the server's changes since the replica's generation, in one transaction.

        Fields the server's layers gained are added first. Rows with pending local edits keep
        the values of the fields those edits changed (and stay deleted, or present, as they
        are locally); their recorded server version stays the one the edits started from, so
        the upload is merged with the server's edits rather than written over them. Nothing
        applied here lands in the outbox.

        Args:
            header: the download's header.
            changes: the download's changes, in order.
            layers: the layers the download brings up to ``header.generation`` (default:
                every layer of the header).

        Returns:
            What was done.

        Raises:
            SyncFailedError: the download does not fit the replica (another replica's, a gap
                in generations, an unknown layer, a value of the wrong type) or the database
                failed; the file is as it was.
        """
        return self._download(lambda conn: self._apply(conn, header, changes, layers))

    def apply_attached_download(
        self,
        header: DownloadHeader,
        download: AttachedDownload,
        *,
        layers: Sequence[str] | None = None,
    ) -> DownloadSummary:
        """Apply a download held in the tables of another file, as :meth:`apply_download`
        would apply its changes, but set-based: the file is attached to the replica's
        connection and each layer's rows are copied as they are stored, in a few statements.

        Rows with pending local edits are applied one by one, as :meth:`apply_download` does
        (their fields edited locally are kept). A layer whose table in the file is not stored
        as the replica stores it (a field of another type or length, another CRS, a value not
        of its field's storage class, a geometry that is not a GeoPackage blob of the layer's
        CRS) is applied one by one whole, which checks every value.

        Args:
            header: the download's header.
            download: the file and how to read it.
            layers: as for :meth:`apply_download`.

        Returns:
            What was done, as :meth:`apply_download` says it.

        Raises:
            SyncFailedError: as for :meth:`apply_download`; the file is as it was.
        """
        uri = f"{download.path.resolve().as_uri()}?mode=ro"
        with self._lock:
            try:
                self._conn.execute(f"ATTACH DATABASE ? AS {_ATTACHED}", (uri,))
            except sqlite3.Error as exc:
                msg = f"{self._path}: cannot read the download {download.path}: {_one_line(exc)}"
                raise SyncFailedError(msg) from exc
            try:
                return self._download(
                    lambda conn: self._apply_attached(conn, header, download, layers)
                )
            finally:
                self._conn.execute(f"DETACH DATABASE {_ATTACHED}")

    def _download(self, apply: Callable[[sqlite3.Connection], DownloadSummary]) -> DownloadSummary:
        """Run ``apply`` in a write transaction with the capture of edits off."""
        try:
            with self._transaction() as conn:
                conn.execute("UPDATE offmaps_sync_state SET value = '0' WHERE key = 'capture'")
                summary = self._in_download(conn, lambda: apply(conn))
                conn.execute("UPDATE offmaps_sync_state SET value = '1' WHERE key = 'capture'")
        except SyncFailedError:
            raise
        except Exception as exc:
            msg = f"{self._path}: download not applied: {_one_line(exc)}"
            raise SyncFailedError(msg) from exc
        return summary

    def _in_download(
        self, conn: sqlite3.Connection, apply: Callable[[], DownloadSummary]
    ) -> DownloadSummary:
        """Run a download's ``apply`` in its transaction (``conn``'s): a subclass adds its
        own checks and writes around it."""
        return apply()

    def _apply(
        self,
        conn: sqlite3.Connection,
        header: DownloadHeader,
        changes: Iterable[ServerChange],
        layers: Sequence[str] | None,
    ) -> DownloadSummary:
        schemas, targets, added = self._begin_download(conn, header, layers)
        summary = _Counts()
        self._apply_changes(conn, schemas, changes, summary)
        return self._end_download(conn, header, targets, added, summary)

    def _apply_attached(
        self,
        conn: sqlite3.Connection,
        header: DownloadHeader,
        download: AttachedDownload,
        layers: Sequence[str] | None,
    ) -> DownloadSummary:
        schemas, targets, added = self._begin_download(conn, header, layers)
        summary = _Counts()
        for wire in header.layers:
            schema, stored = schemas[wire.name], download.schemas.get(wire.name)
            left = None if stored is None else _AttachedLayer(conn, schema, stored, download)
            if left is None or not left.copyable():
                self._apply_changes(conn, schemas, download.changes_of(wire.name, None), summary)
                continue
            pending = left.apply(summary)
            if pending:
                changes = download.changes_of(wire.name, pending)
                self._apply_changes(conn, schemas, changes, summary)
        return self._end_download(conn, header, targets, added, summary)

    def _begin_download(
        self, conn: sqlite3.Connection, header: DownloadHeader, layers: Sequence[str] | None
    ) -> tuple[dict[str, LayerSchema], list[str], tuple[str, ...]]:
        """Check that the download fits the replica and add the fields its layers gained:
        the replica's schemas, the layers it brings up to date and the fields added."""
        if header.replica_id != self._replica_id:
            raise SyncFailedError(f"the download is for replica {header.replica_id}")
        schemas = self._synced_schemas(conn)
        generations = dict(
            conn.execute("SELECT layer, generation FROM offmaps_sync_layers").fetchall()
        )
        targets = list(layers) if layers is not None else [la.name for la in header.layers]
        for name in targets:
            if name not in schemas:
                raise SyncFailedError(f"{name!r} is not a layer of the replica")
            if header.since > generations[name]:
                raise SyncFailedError(
                    f"{name!r} is at generation {generations[name]}: a download since "
                    f"{header.since} would miss changes"
                )
        added = self._add_fields(conn, header, schemas)
        return schemas, targets, added

    def _apply_changes(
        self,
        conn: sqlite3.Connection,
        schemas: Mapping[str, LayerSchema],
        changes: Iterable[ServerChange],
        summary: _Counts,
    ) -> None:
        for change in changes:
            schema = schemas.get(change.layer)
            if schema is None:
                raise SyncFailedError(f"{change.layer!r} is not a layer of the replica")
            if change.kind == "upsert":
                self._upsert(conn, schema, change, summary)
            else:
                self._delete(conn, schema, change, summary)

    @staticmethod
    def _end_download(
        conn: sqlite3.Connection,
        header: DownloadHeader,
        targets: Sequence[str],
        added: tuple[str, ...],
        summary: _Counts,
    ) -> DownloadSummary:
        conn.executemany(
            "UPDATE offmaps_sync_layers SET generation = ? WHERE layer = ?",
            [(header.generation, name) for name in targets],
        )
        return DownloadSummary(summary.upserted, summary.deleted, added, summary.kept_local)

    def _add_fields(
        self, conn: sqlite3.Connection, header: DownloadHeader, schemas: dict[str, LayerSchema]
    ) -> tuple[str, ...]:
        """Add the header's fields the local layers lack (nullable, as every added field);
        updates ``schemas`` and the triggers."""
        added: list[str] = []
        for wire in header.layers:
            schema = schemas.get(wire.name)
            if schema is None:
                raise SyncFailedError(f"{wire.name!r} is not a layer of the replica")
            have = {f.name.lower() for f in schema.fields}
            for wire_field in wire.fields:
                if wire_field.name.lower() in have:
                    continue
                field = Field(
                    check_name(wire_field.name, "field"),
                    FieldType(wire_field.type),
                    True,
                    wire_field.alias,
                    wire_field.max_length,
                )
                schema = check_added_field(schema, field)
                conn.execute(f"ALTER TABLE {_q(schema.name)} ADD COLUMN {_column_sql(field)}")
                have.add(field.name.lower())
                added.append(f"{schema.name}.{field.name}")
            if schema is not schemas[wire.name]:
                conn.execute(
                    "UPDATE offmaps_layers SET fields = ? WHERE name = ?",
                    (fields_json(schema.fields), schema.name),
                )
                schemas[wire.name] = schema
        if added:
            _install_triggers(conn, schemas.values())
        return tuple(added)

    @staticmethod
    def _pending_of(
        conn: sqlite3.Connection, layer: str, global_id: str
    ) -> list[tuple[str, str | None, str | None, str | None]]:
        rows = conn.execute(
            "SELECT kind, old, new, attachment FROM offmaps_outbox WHERE layer = ? "
            "AND globalid = ? AND status = 'pending' ORDER BY seq",
            (layer, global_id),
        ).fetchall()
        return [(str(r[0]), r[1], r[2], r[3]) for r in rows]

    def _upsert(
        self,
        conn: sqlite3.Connection,
        schema: LayerSchema,
        change: ServerChange,
        summary: _Counts,
    ) -> None:
        table, global_id = _q(schema.name), str(change.global_id)
        exists = conn.execute(f"SELECT 1 FROM {table} WHERE globalid = ?", (global_id,)).fetchone()
        pending = self._pending_of(conn, schema.name, global_id)
        stored = _stored_values(schema, change.values, complete=exists is None)
        if pending and exists is None:  # deleted locally: the upload says so
            summary.kept_local += 1
            return
        local: set[str] = set()
        for kind, old_json, new_json, _ in pending:
            new = json.loads(new_json) if new_json else {}
            if kind == SyncChangeKind.INSERT:
                local.update(new)
            elif kind == SyncChangeKind.UPDATE:
                old = json.loads(old_json) if old_json else {}
                local.update(k for k, v in new.items() if old.get(k, _MISSING) != v)
        columns = {
            (GEOMETRY_FIELD if name == GEOMETRY_FIELD else _q(name)): value
            for name, value in stored.items()
            if name not in local
        }
        columns["row_version"] = change.version
        if exists is None:
            columns["globalid"] = global_id
            conn.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                list(columns.values()),
            )
        else:
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(
                f"UPDATE {table} SET {assignments} WHERE globalid = ?",
                [*columns.values(), global_id],
            )
        summary.upserted += 1
        if pending:
            summary.kept_local += 1
        else:
            conn.execute(
                "INSERT OR REPLACE INTO offmaps_sync_rows VALUES (?, ?, ?, ?)",
                (
                    schema.name,
                    global_id,
                    change.version,
                    json.dumps(change.version_vector) if change.version_vector else None,
                ),
            )
        if change.attachments is not None:
            self._sync_attachments(conn, schema.name, global_id, change.attachments, pending)

    @staticmethod
    def _sync_attachments(
        conn: sqlite3.Connection,
        layer: str,
        global_id: str,
        attachments: Sequence[AttachmentRef],
        pending: Sequence[tuple[str, str | None, str | None, str | None]],
    ) -> None:
        """Make the row's attachment records the server's, but for pending local changes."""
        added_here: set[str] = set()
        deleted_here: set[str] = set()
        for kind, _, _, attachment in pending:
            if attachment:
                attachment_id = str(json.loads(attachment)["attachment_id"])
                if kind == SyncChangeKind.ATTACHMENT_ADD:
                    added_here.add(attachment_id)
                elif kind == SyncChangeKind.ATTACHMENT_DELETE:
                    deleted_here.add(attachment_id)
        current = {
            str(r[0])
            for r in conn.execute(
                "SELECT attachment_id FROM offmaps_attachments WHERE layer = ? AND globalid = ?",
                (layer, global_id),
            )
        }
        wanted = {
            str(a.attachment_id): a for a in attachments if str(a.attachment_id) not in deleted_here
        }
        for attachment_id in current - wanted.keys() - added_here:
            conn.execute(
                "DELETE FROM offmaps_attachments WHERE attachment_id = ?", (attachment_id,)
            )
        created = _timestamp(datetime.now(UTC))
        for attachment_id, ref in wanted.items():
            record = (ref.name, ref.content_type, ref.size, ref.sha256)
            if attachment_id in current:
                conn.execute(
                    "UPDATE offmaps_attachments SET name = ?, content_type = ?, size = ?, "
                    "sha256 = ? WHERE attachment_id = ?",
                    (*record, attachment_id),
                )
            else:
                conn.execute(
                    "INSERT INTO offmaps_attachments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (attachment_id, layer, global_id, *record, created),
                )

    def _delete(
        self,
        conn: sqlite3.Connection,
        schema: LayerSchema,
        change: ServerChange,
        summary: _Counts,
    ) -> None:
        table, global_id = _q(schema.name), str(change.global_id)
        if self._pending_of(conn, schema.name, global_id):
            exists = conn.execute(
                f"SELECT 1 FROM {table} WHERE globalid = ?", (global_id,)
            ).fetchone()
            if exists is not None:
                summary.kept_local += 1
            return
        deleted = conn.execute(f"DELETE FROM {table} WHERE globalid = ?", (global_id,)).rowcount
        conn.execute(
            "DELETE FROM offmaps_attachments WHERE layer = ? AND globalid = ?",
            (schema.name, global_id),
        )
        conn.execute(
            "DELETE FROM offmaps_sync_rows WHERE layer = ? AND globalid = ?",
            (schema.name, global_id),
        )
        summary.deleted += max(deleted, 0)


_ATTACHED = "offmaps_download"
# the storage classes a replica's column of each field type holds (besides NULL)
_STORAGE = {
    FieldType.TEXT: ("text",),
    FieldType.INTEGER: ("integer",),
    FieldType.REAL: ("real", "integer"),
    FieldType.BOOLEAN: ("integer",),
    FieldType.DATE: ("text",),
    FieldType.DATETIME: ("text",),
}


class _AttachedLayer:
    """One layer of an attached download, applied set-based (see
    :meth:`LocalReplica.apply_attached_download`): the rows without pending local edits are
    copied as stored with a few statements, as :meth:`LocalReplica._upsert` and
    :meth:`LocalReplica._delete` would write them one by one."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        schema: LayerSchema,
        stored: LayerSchema,
        download: AttachedDownload,
    ) -> None:
        self._conn = conn
        self._schema = schema
        self._stored = stored
        self._source = f"{_ATTACHED}.{_q(stored.name)}"
        self._upserts = f"{_ATTACHED}.{_q(download.upserts)}"
        self._deletes = f"{_ATTACHED}.{_q(download.deletes)}"
        self._attachments = f"{_ATTACHED}.{_q(download.attachments)}"
        self._layer = {"layer": schema.name}

    def copyable(self) -> bool:
        """Whether the file's rows are stored as the replica stores them: the same fields
        (types, lengths) and CRS, and every value of its field's storage class."""
        schema, stored = self._schema, self._stored
        if stored.name != schema.name or stored.is_table != schema.is_table:
            return False
        if not stored.is_table and stored.srid != schema.srid:
            return False
        have = {f.name.lower(): f for f in schema.fields}
        checks = []
        for field in stored.fields:
            mine = have.get(field.name.lower())
            if mine is None or (mine.type, mine.max_length) != (field.type, field.max_length):
                return False
            classes = ", ".join(f"'{name}'" for name in _STORAGE[field.type])
            checks.append(f"typeof({_q(field.name)}) IN ('null', {classes})")
        if not stored.is_table:
            srid = stored.srid.to_bytes(4, "little", signed=True).hex()
            checks.append(
                "geom IS NULL OR (typeof(geom) = 'blob' AND substr(geom, 1, 3) = X'475000' "
                f"AND substr(geom, 4, 1) IN (X'01', X'03') AND substr(geom, 5, 4) = X'{srid}')"
            )
        if not checks:
            return True
        wrong = " OR ".join(f"NOT ({check})" for check in checks)
        found = self._conn.execute(f"SELECT 1 FROM {self._source} WHERE {wrong} LIMIT 1")
        return found.fetchone() is None

    def apply(self, summary: _Counts) -> set[str]:
        """Apply the layer's rows without pending local edits; the global ids of the layer's
        changes left to apply one by one (those with pending local edits)."""
        conn, layer = self._conn, self._layer
        pending = (
            "SELECT globalid FROM main.offmaps_outbox WHERE layer = :layer AND status = 'pending'"
        )
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS offmaps_download_rows (globalid TEXT NOT NULL "
            "PRIMARY KEY, vector TEXT, carried INTEGER NOT NULL)"
        )
        conn.execute("DELETE FROM temp.offmaps_download_rows")
        conn.execute(
            "INSERT INTO temp.offmaps_download_rows SELECT u.globalid, CASE WHEN "
            "s.version_vector IN ('{}', 'null') THEN NULL ELSE s.version_vector END, "
            f"s.attachments FROM {self._source} AS u JOIN {self._upserts} AS s "
            f"ON s.layer = :layer AND s.globalid = u.globalid WHERE u.globalid NOT IN ({pending})",
            layer,
        )
        self._upsert_rows(summary)
        self._sync_attachments()
        deleted = (
            f"SELECT globalid FROM {self._deletes} WHERE layer = :layer "
            f"AND globalid NOT IN ({pending})"
        )
        table = _q(self._schema.name)
        summary.deleted += max(
            conn.execute(f"DELETE FROM main.{table} WHERE globalid IN ({deleted})", layer).rowcount,
            0,
        )
        for name in ("offmaps_attachments", "offmaps_sync_rows"):
            conn.execute(
                f"DELETE FROM main.{name} WHERE layer = :layer AND globalid IN ({deleted})", layer
            )
        left = conn.execute(
            f"SELECT globalid FROM {self._upserts} WHERE layer = :layer AND globalid IN "
            f"({pending}) UNION SELECT globalid FROM {self._deletes} WHERE layer = :layer "
            f"AND globalid IN ({pending})",
            layer,
        )
        return {str(row[0]) for row in left}

    def _upsert_rows(self, summary: _Counts) -> None:
        conn, table = self._conn, f"main.{_q(self._schema.name)}"
        copied = [_q(f.name) for f in self._stored.fields]
        if not self._stored.is_table:
            copied.append("geom")
        copied.append("row_version")
        rows = "SELECT globalid FROM temp.offmaps_download_rows"
        conn.execute(
            f"UPDATE {table} AS t SET {', '.join(f'{c} = u.{c}' for c in copied)} "
            f"FROM {self._source} AS u WHERE u.globalid = t.globalid AND t.globalid IN ({rows})"
        )
        given = {f.name.lower() for f in self._stored.fields}
        blank = [_q(f.name) for f in self._schema.fields if f.name.lower() not in given]
        if not self._schema.is_table and self._stored.is_table:
            blank.append("geom")
        names = ", ".join(["globalid", *copied, *blank])
        values = ", ".join(["u.globalid", *(f"u.{c}" for c in copied), *("NULL" for _ in blank)])
        conn.execute(
            f"INSERT INTO {table} ({names}) SELECT {values} FROM {self._source} AS u "
            f"WHERE u.globalid IN ({rows}) AND u.globalid NOT IN (SELECT globalid FROM {table}) "
            "ORDER BY u.fid"
        )
        summary.upserted += conn.execute(
            "SELECT count(*) FROM temp.offmaps_download_rows"
        ).fetchone()[0]
        conn.execute(
            "INSERT OR REPLACE INTO main.offmaps_sync_rows (layer, globalid, version, vector) "
            f"SELECT :layer, u.globalid, u.row_version, r.vector FROM {self._source} AS u "
            "JOIN temp.offmaps_download_rows AS r ON r.globalid = u.globalid",
            self._layer,
        )

    def _sync_attachments(self) -> None:
        """The attachment records of the rows that carry them made the download's."""
        conn = self._conn
        carried = "SELECT globalid FROM temp.offmaps_download_rows WHERE carried"
        conn.execute(
            "DELETE FROM main.offmaps_attachments AS m WHERE layer = :layer AND globalid IN "
            f"({carried}) AND NOT EXISTS (SELECT 1 FROM {self._attachments} AS a WHERE "
            "a.layer = :layer AND a.globalid = m.globalid AND a.attachment_id = m.attachment_id)",
            self._layer,
        )
        wanted = (
            f"FROM {self._attachments} AS a WHERE a.layer = :layer AND a.globalid IN ({carried})"
        )
        conn.execute(
            "UPDATE main.offmaps_attachments AS m SET name = a.name, content_type = "
            f"a.content_type, size = a.size, sha256 = a.sha256 {wanted} "
            "AND a.attachment_id = m.attachment_id AND m.layer = a.layer "
            "AND m.globalid = a.globalid",
            self._layer,
        )
        conn.execute(
            "INSERT INTO main.offmaps_attachments SELECT a.attachment_id, a.layer, a.globalid, "
            f"a.name, a.content_type, a.size, a.sha256, :created {wanted} AND NOT EXISTS "
            "(SELECT 1 FROM main.offmaps_attachments AS m WHERE m.attachment_id = a.attachment_id "
            "AND m.layer = a.layer AND m.globalid = a.globalid) ORDER BY a.rowid",
            {**self._layer, "created": _timestamp(datetime.now(UTC))},
        )


@dataclass(slots=True)
class _Counts:
    upserted: int = 0
    deleted: int = 0
    kept_local: int = 0
