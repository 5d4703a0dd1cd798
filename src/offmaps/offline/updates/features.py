# Every SQL text built here quotes identifiers read from the file's own schema (layer and field
# names validated when the layers were created); every value is a bound parameter.
# ruff: noqa: S608
"""Feature update files: a feature service's changes between two packages of an area.

A feature update file is a GeoPackage (GDAL, QGIS and ``sqlite3`` open it) that holds what a
download (:class:`~offmaps.schemas.changeset.DownloadHeader` and
:class:`~offmaps.schemas.changeset.ServerChange` records) holds: one feature table per layer
with the rows upserted, as they are at the update's ``to_generation``; the rows deleted (or
gone out of the area or filters); the rows' attachment records; the fields added. The format is
in docs/update-files.md.

:func:`write_feature_update` writes one from a download; :class:`FeatureUpdateReader` reads it
back as the same download; :func:`apply_feature_update` applies it to a replica GeoPackage with
:meth:`~offmaps.offline.replica.LocalReplica.apply_download`, checking the chain and writing
the file's new chain state in the same transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from offmaps.errors import (
    OfflineError,
    PackageError,
    SyncFailedError,
    UpdateIntegrityError,
)
from offmaps.features.filters import FieldType
from offmaps.features.geopackage import (
    GeoPackageStore,
    _from_sql,
    _q,
    decode_geometry,
    read_schemas,
)
from offmaps.features.model import Feature, LayerSchema
from offmaps.features.wire import encode_wire_geometry, value_to_wire, wire_to_edit_values
from offmaps.offline.replica import AttachedDownload, DownloadSummary, LocalReplica
from offmaps.offline.updates._header import (
    header_rows,
    link_of,
    open_read_only,
    parse_created,
    read_header,
    write_header,
)
from offmaps.offline.updates.chain import (
    ChainState,
    UpdateFile,
    UpdateLink,
    check_file,
    check_link,
    file_sha256,
    find_chain_state,
    store_chain_state,
)
from offmaps.schemas.changeset import (
    GEOMETRY_FIELD,
    AttachmentRef,
    DownloadHeader,
    ServerChange,
    WireField,
    WireLayer,
)

__all__ = [
    "FeatureUpdateApplied",
    "FeatureUpdateInfo",
    "FeatureUpdateReader",
    "UpdateLayer",
    "apply_feature_update",
    "schema_sha256",
    "write_feature_update",
]

KIND = "features"
_BATCH = 500
_EXTENSION = "offmaps_update"
_EXTENSION_DEFINITION = "offmaps scheduled update file tables: see docs/update-files.md"
_TABLES = {
    "offmaps_update_upserts": "CREATE TABLE offmaps_update_upserts (layer TEXT NOT NULL, "
    "globalid TEXT NOT NULL, version_vector TEXT NOT NULL, attachments INTEGER NOT NULL, "
    "PRIMARY KEY (layer, globalid))",
    "offmaps_update_deletes": "CREATE TABLE offmaps_update_deletes (layer TEXT NOT NULL, "
    "globalid TEXT NOT NULL, PRIMARY KEY (layer, globalid))",
    "offmaps_update_attachments": "CREATE TABLE offmaps_update_attachments (layer TEXT NOT NULL, "
    "globalid TEXT NOT NULL, attachment_id TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL, "
    "content_type TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL)",
    "offmaps_update_fields": "CREATE TABLE offmaps_update_fields (layer TEXT NOT NULL, "
    "name TEXT NOT NULL, type TEXT NOT NULL, PRIMARY KEY (layer, name))",
}


def _wire_fields(schema: LayerSchema) -> tuple[WireField, ...]:
    return tuple(
        WireField(
            name=f.name, type=f.type.value, nullable=f.nullable, alias=f.alias,
            max_length=f.max_length,
        )
        for f in schema.fields
    )  # fmt: skip


def schema_sha256(schema: LayerSchema) -> str:
    """The digest of a layer's schema as update files record it: SHA-256 of the canonical JSON
    of its name, geometry type, SRID and fields (name, type, nullable, alias, max length), in
    order (docs/update-files.md). Two files whose digests differ need a new package, or a
    reopen after fields were added."""
    document = {
        "name": schema.name,
        "geometry_type": None if schema.geometry_type is None else schema.geometry_type.value,
        "srid": None if schema.is_table else schema.srid,
        "fields": [f.model_dump() for f in _wire_fields(schema)],
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UpdateLayer:
    """A layer or table of a feature update, with its schema at ``to_generation``.

    Attributes:
        name: the layer's name (the update's feature table has it too).
        fields: its fields, as downloads describe them.
        schema_sha256: :func:`schema_sha256` of its schema.
    """

    name: str
    fields: tuple[WireField, ...]
    schema_sha256: str

    def wire(self) -> WireLayer:
        """As a download's header lists it."""
        return WireLayer(name=self.name, fields=list(self.fields))


@dataclass(frozen=True, slots=True)
class FeatureUpdateInfo:
    """The header of a feature update file.

    Attributes:
        link: where it sits in its chain.
        service: the feature service.
        from_generation: the service's generation the previous package was taken at.
        to_generation: the generation this update brings it to.
        layers: the layers and tables it updates, in order.
        fields_added: the fields each layer gained since the previous package, by layer.
        created: when it was written, in UTC.
    """

    link: UpdateLink
    service: str
    from_generation: int
    to_generation: int
    layers: tuple[UpdateLayer, ...]
    fields_added: dict[str, tuple[str, ...]] = field(default_factory=dict)
    created: datetime | None = None


@dataclass(frozen=True, slots=True)
class FeatureUpdateApplied:
    """What :func:`apply_feature_update` did.

    Attributes:
        summary: the rows upserted and deleted, the fields added, the rows kept for pending
            local edits.
        state: the file's chain state now.
        blobs: the attachment blobs the update's rows name (SHA-256 -> size): the device
            downloads those it lacks.
    """

    summary: DownloadSummary
    state: ChainState
    blobs: dict[str, int]


PAGE_SIZE = 1024
"""The page size update files are written with: each of a GeoPackage's ~50 tables and indexes
takes a page at least: 196 KB at SQLite's default 4096 bytes, 64 KB at this."""


def write_feature_update(
    path: Path,
    link: UpdateLink,
    service: str,
    header: DownloadHeader,
    changes: Iterable[ServerChange],
    schemas: Iterable[LayerSchema],
    *,
    previous: Mapping[str, LayerSchema] | None = None,
    created: datetime | None = None,
) -> UpdateFile:
    """Write a feature update file from a download (docs/update-files.md).

    The file is written beside ``path`` and renamed into place when complete, in SQLite's
    rollback-journal mode (one self-contained file).

    Args:
        path: the update file to write; it must not exist.
        link: where the update sits in its chain.
        service: the feature service.
        header: the download's header (``since``: the previous package's generation).
        changes: the download's changes, as
            :func:`~offmaps.offline.updates.server.iter_area_download` yields them.
        schemas: the service's layers (at least those of ``header``), for their geometry type
            and CRS.
        previous: the schemas of the previous package's layers: the fields they lack are
            listed as added. ``None``: none are listed.
        created: when (default: now).

    Returns:
        The file, its SHA-256 and size.

    Raises:
        FileExistsError: ``path`` exists.
        ValueError: the header names a layer ``schemas`` lacks, or whose fields differ; a
            change of a layer the header does not name; a row given twice.
        InvalidFeatureError: a change's values do not fit its layer.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists already")
    by_name = {schema.name: schema for schema in schemas}
    layers: dict[str, LayerSchema] = {}
    for wire in header.layers:
        schema = by_name.get(wire.name)
        if schema is None:
            raise ValueError(f"no schema for layer {wire.name!r}")
        if [f.name for f in wire.fields] != [f.name for f in schema.fields]:
            raise ValueError(f"the header's fields of {wire.name!r} are not its schema's")
        layers[wire.name] = schema
    added = {
        name: tuple(
            f.name
            for f in schema.fields
            if f.name.lower() not in {g.name.lower() for g in previous[name].fields}
        )
        for name, schema in layers.items()
        if previous is not None and name in previous
    }
    rows = header_rows(KIND, link, created)
    rows.update(
        service=service,
        from_generation=str(header.since),
        to_generation=str(header.generation),
        layers=json.dumps(
            [
                {
                    "name": name,
                    "fields": [f.model_dump() for f in _wire_fields(schema)],
                    "schema_sha256": schema_sha256(schema),
                }
                for name, schema in layers.items()
            ],
            separators=(",", ":"),
        ),
    )
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        _write(temp, layers, rows, added, changes)
        if path.exists():
            raise FileExistsError(f"{path} appeared while the update was written")
        os.replace(temp, path)
    except BaseException:
        for leftover in (temp, *(temp.with_name(temp.name + s) for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        raise
    sha256, size = file_sha256(path)
    return UpdateFile(path, sha256, size)


def _write(
    temp: Path,
    layers: Mapping[str, LayerSchema],
    header: Mapping[str, str],
    added: Mapping[str, Sequence[str]],
    changes: Iterable[ServerChange],
) -> None:
    store = GeoPackageStore.create(temp)
    try:
        store.stop_syncing()  # a partial file: made durable once, when finished
        for schema in layers.values():
            store.create_layer(schema)
        conn = sqlite3.connect(temp, isolation_level=None, timeout=30)
        try:
            conn.execute("PRAGMA synchronous = OFF")
            with _transaction(conn):
                write_header(conn, header)
                for statement in _TABLES.values():
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO gpkg_extensions VALUES (?, NULL, ?, ?, 'read-write')",
                    [
                        (table, _EXTENSION, _EXTENSION_DEFINITION)
                        for table in ("offmaps_update", *_TABLES)
                    ],
                )
                conn.executemany(
                    "INSERT INTO offmaps_update_fields VALUES (?, ?, ?)",
                    [
                        (name, f.name, f.type.value)
                        for name, names in added.items()
                        for f in layers[name].fields
                        if f.name in names
                    ],
                )
            _Batches(store, conn, layers).write(changes)
        finally:
            conn.close()
    finally:
        store.close()
    conn = sqlite3.connect(temp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a small update is mostly empty pages
        conn.execute("VACUUM")
    finally:
        conn.close()
    with temp.open("rb+") as stream:
        os.fsync(stream.fileno())


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class _Batches:
    """The changes of a download written in batches: rows through the feature store (which
    checks them as any copied row), the rest through ``conn``."""

    def __init__(
        self, store: GeoPackageStore, conn: sqlite3.Connection, layers: Mapping[str, LayerSchema]
    ) -> None:
        self._store = store
        self._conn = conn
        self._layers = layers
        self._features: dict[str, list[Feature]] = {}
        self._upserts: list[tuple[str, str, str, int]] = []
        self._deletes: list[tuple[str, str]] = []
        self._attachments: list[tuple[Any, ...]] = []
        self._count = 0

    def write(self, changes: Iterable[ServerChange]) -> None:
        for change in changes:
            schema = self._layers.get(change.layer)
            if schema is None:
                raise ValueError(f"a change of {change.layer!r}, which the header does not name")
            gid = str(change.global_id)
            if change.kind == "delete":
                self._deletes.append((change.layer, gid))
            else:
                values = dict(change.values)
                if schema.is_table:
                    values.pop(GEOMETRY_FIELD, None)
                properties, geometry, _ = wire_to_edit_values(schema, values, complete=True)
                feature = Feature(change.global_id, change.version, properties, geometry)
                self._features.setdefault(change.layer, []).append(feature)
                vector = json.dumps(change.version_vector, sort_keys=True)
                carried = change.attachments is not None
                self._upserts.append((change.layer, gid, vector, int(carried)))
                self._attachments += [
                    (change.layer, gid, str(a.attachment_id), a.name, a.content_type, a.size,
                     a.sha256)
                    for a in change.attachments or ()
                ]  # fmt: skip
            self._count += 1
            if self._count >= _BATCH:
                self._flush()
        self._flush()

    def _flush(self) -> None:
        for layer, features in self._features.items():
            self._store.copy_features(layer, features)
        try:
            with _transaction(self._conn):
                self._conn.executemany(
                    "INSERT INTO offmaps_update_upserts VALUES (?, ?, ?, ?)", self._upserts
                )
                self._conn.executemany(
                    "INSERT INTO offmaps_update_deletes VALUES (?, ?)", self._deletes
                )
                self._conn.executemany(
                    "INSERT INTO offmaps_update_attachments VALUES (?, ?, ?, ?, ?, ?, ?)",
                    self._attachments,
                )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"a row or attachment is given twice: {exc}") from None
        self._features, self._upserts, self._deletes, self._attachments = {}, [], [], []
        self._count = 0


class FeatureUpdateReader:
    """Reads a feature update file back as the download it was written from.

    Opened read-only: nothing is ever written to the file.

    Args:
        path: the update file.

    Raises:
        UpdateIntegrityError: not a feature update file of a format this version reads, or a
            malformed or damaged one.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn = open_read_only(self.path)
        try:
            self.info, self._schemas = self._read_info()
        except sqlite3.Error as exc:
            self._conn.close()
            raise self._damaged(exc) from None
        except BaseException:
            self._conn.close()
            raise

    def _damaged(self, exc: BaseException) -> UpdateIntegrityError:
        return UpdateIntegrityError(f"{self.path}: damaged update file: {exc}", path=self.path)

    def _read_info(self) -> tuple[FeatureUpdateInfo, dict[str, LayerSchema]]:
        rows = read_header(self._conn, self.path, KIND)
        link = link_of(rows, self.path)
        try:
            layers = tuple(
                UpdateLayer(
                    str(item["name"]),
                    tuple(WireField.model_validate(f) for f in item["fields"]),
                    str(item["schema_sha256"]),
                )
                for item in json.loads(rows["layers"])
            )
            service = rows["service"]
            generations = int(rows["from_generation"]), int(rows["to_generation"])
        except (KeyError, ValueError, TypeError) as exc:
            raise UpdateIntegrityError(
                f"{self.path}: malformed update header: {exc}", path=self.path
            ) from None
        schemas = read_schemas(self._conn)
        for layer in layers:
            schema = schemas.get(layer.name)
            if schema is None or schema_sha256(schema) != layer.schema_sha256:
                raise UpdateIntegrityError(
                    f"{self.path}: the table of {layer.name!r} is not the schema the header names",
                    path=self.path,
                )
        added: dict[str, tuple[str, ...]] = {}
        for layer_name, name in self._conn.execute(
            "SELECT layer, name FROM offmaps_update_fields ORDER BY rowid"
        ):
            added[layer_name] = (*added.get(layer_name, ()), name)
        info = FeatureUpdateInfo(
            link,
            service,
            *generations,
            layers,
            added,
            parse_created(rows.get("created", ""), self.path),
        )
        return info, schemas

    def download_header(self, replica_id: str) -> DownloadHeader:
        """The download's header, for the replica ``replica_id`` (update files are shared by
        every device; a header names the replica it is applied to)."""
        return DownloadHeader(
            replica_id=replica_id,
            since=self.info.from_generation,
            generation=self.info.to_generation,
            layers=[layer.wire() for layer in self.info.layers],
        )

    def iter_changes(self) -> Iterator[ServerChange]:
        """The download's changes: each layer's upserts, then its deletions.

        Raises:
            UpdateIntegrityError: the file is damaged.
        """
        for layer in self.info.layers:
            yield from self.layer_changes(layer.name)

    def layer_changes(
        self, layer: str, only: Collection[str] | None = None
    ) -> Iterator[ServerChange]:
        """One layer's changes, upserts then deletions; of only the rows of these global ids
        when ``only`` is given.

        Raises:
            UpdateIntegrityError: the file is damaged.
        """
        given = () if only is None else (json.dumps(sorted(only)),)
        try:
            yield from self._upserts(self._schemas[layer], given)
            for (gid,) in self._conn.execute(
                f"SELECT globalid FROM offmaps_update_deletes WHERE layer = ?{_among(given)} "
                "ORDER BY rowid",
                (layer, *given),
            ):
                yield ServerChange(layer=layer, global_id=gid, kind="delete")
        except (sqlite3.Error, ValueError) as exc:
            raise self._damaged(exc) from None

    def attached(self) -> AttachedDownload:
        """The file as a download a replica attaches and copies set-based
        (:meth:`LocalReplica.apply_attached_download`)."""
        return AttachedDownload(
            path=self.path,
            schemas={layer.name: self._schemas[layer.name] for layer in self.info.layers},
            changes_of=self.layer_changes,
            upserts="offmaps_update_upserts",
            deletes="offmaps_update_deletes",
            attachments="offmaps_update_attachments",
        )

    def _upserts(self, schema: LayerSchema, given: tuple[str, ...]) -> Iterator[ServerChange]:
        attachments: dict[str, list[AttachmentRef]] = {}
        for row in self._conn.execute(
            "SELECT globalid, attachment_id, name, content_type, size, sha256 "
            "FROM offmaps_update_attachments WHERE layer = ? ORDER BY rowid",
            (schema.name,),
        ):
            attachments.setdefault(row[0], []).append(
                AttachmentRef(
                    attachment_id=row[1], name=row[2], content_type=row[3], size=row[4],
                    sha256=row[5],
                )
            )  # fmt: skip
        columns = ", ".join(f"t.{_q(f.name)}" for f in schema.fields)
        geometry = "" if schema.is_table else ", t.geom"
        kinds: list[FieldType] = [f.type for f in schema.fields]
        names = [f.name for f in schema.fields]
        sql = (
            f"SELECT t.globalid, t.row_version, u.version_vector, u.attachments"
            f"{', ' + columns if columns else ''}{geometry} "
            f"FROM {_q(schema.name)} AS t JOIN offmaps_update_upserts AS u "
            f"ON u.layer = ? AND u.globalid = t.globalid{_among(given, 't.globalid')} "
            "ORDER BY t.fid"
        )
        for row in self._conn.execute(sql, (schema.name, *given)):
            gid, version, vector, carried = row[:4]
            values: dict[str, Any] = {
                name: value_to_wire(_from_sql(kind, value))
                for name, kind, value in zip(names, kinds, row[4 : 4 + len(names)], strict=True)
            }
            if not schema.is_table:
                values[GEOMETRY_FIELD] = encode_wire_geometry(decode_geometry(row[-1]))
            yield ServerChange(
                layer=schema.name,
                global_id=gid,
                kind="upsert",
                version=version,
                version_vector=json.loads(vector),
                values=values,
                attachments=attachments.get(gid, []) if carried else None,
            )

    def blobs(self) -> dict[str, int]:
        """The attachment blobs the update's rows name: SHA-256 -> size."""
        try:
            rows = self._conn.execute(
                "SELECT sha256, size FROM offmaps_update_attachments"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None
        return {str(sha256): int(size) for sha256, size in rows}

    def close(self) -> None:
        """Close the file. Closing twice is fine."""
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


def _among(given: tuple[str, ...], column: str = "globalid") -> str:
    """The SQL condition that keeps the rows of the global ids ``given`` holds as a JSON
    array, if it holds one."""
    return f" AND {column} IN (SELECT value FROM json_each(?))" if given else ""


class _ChainedReplica(LocalReplica):
    """A replica whose download also checks and moves its update chain, in the download's
    transaction."""

    update: tuple[UpdateLink, str] | None = None
    state: ChainState | None = None

    def _in_download(
        self, conn: sqlite3.Connection, apply: Callable[[], DownloadSummary]
    ) -> DownloadSummary:
        if self.update is None:
            raise AssertionError("no update to apply")
        link, sha256 = self.update
        state = find_chain_state(conn)
        check_link(state, link, path=self.path)
        if state is None:
            raise AssertionError("check_link lets no file without a chain through")
        summary = apply()
        self.state = state.after(link, sha256)
        store_chain_state(conn, self.state)
        return summary


def _replica_id(path: Path) -> str:
    """The replica id a replica GeoPackage records.

    Raises:
        PackageError: it is not a replica (no sync state).
    """
    if not path.is_file():
        raise PackageError(f"{path}: no such replica")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = conn.execute(
                "SELECT value FROM offmaps_sync_state WHERE key = 'replica_id'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise PackageError(f"{path}: not a replica GeoPackage: {exc}") from None
    if row is None:
        raise PackageError(f"{path}: not a replica GeoPackage: it records no replica id")
    return str(row[0])


def apply_feature_update(
    replica: Path, update: Path, *, sha256: str, size: int | None = None, durable: bool = True
) -> FeatureUpdateApplied:
    """Apply a feature update file to a replica GeoPackage, in one transaction.

    The update's size and SHA-256 are checked first; then, in the transaction, the chain (the
    replica's area, epoch, package number and chain head, :func:`check_link`); then the rows
    are applied as a download (:meth:`LocalReplica.apply_download`: fields added first, local
    edits not uploaded yet kept) and the replica's new chain state written. On any failure the
    replica is as it was.

    Args:
        replica: the replica GeoPackage (opened for sync once already: it records its replica
            id and chain state).
        update: the update file.
        sha256: the SHA-256 the update must have (from the server's list of updates).
        size: the size it must have, when known.
        durable: flush the transaction to disk as it commits; ``False`` for a staged copy
            its owner makes durable once all its updates are applied (a crash then loses the
            copy, which is made again).

    Returns:
        What was done, the replica's chain state now, and the attachment blobs to fetch.

    Raises:
        UpdateIntegrityError: the update is truncated, tampered or not an update file.
        UpdateChainError: it does not follow the replica's chain (another area or epoch, out
            of order, applied already).
        PackageError: ``replica`` is not a replica GeoPackage.
        SyncFailedError: the rows do not fit the replica, or the database failed (a full
            disk, say).
    """
    replica, update = Path(replica), Path(update)
    check_file(update, sha256, size)
    with FeatureUpdateReader(update) as reader:
        replica_id = _replica_id(replica)
        local = _ChainedReplica.open(
            replica,
            replica_id=replica_id,
            generation=reader.info.from_generation,
            durable=durable,
        )
        if not isinstance(local, _ChainedReplica):
            local.close()
            raise AssertionError("LocalReplica.open makes its own class")
        with local:
            local.update = (reader.info.link, sha256.lower())
            try:
                summary = local.apply_attached_download(
                    reader.download_header(replica_id), reader.attached()
                )
            except SyncFailedError as exc:
                # apply_download reports every failure inside its transaction as a sync
                # failure: the chain's and the file's own errors say more
                if isinstance(exc.__cause__, OfflineError):
                    raise exc.__cause__ from None
                raise
        if local.state is None:
            raise AssertionError("the update was applied without moving the chain")
        return FeatureUpdateApplied(summary, local.state, reader.blobs())
