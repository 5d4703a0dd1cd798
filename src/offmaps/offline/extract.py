"""Server-side extraction of an offline map's data: feature service replicas and tile archives.

A *replica* is a new GeoPackage (:class:`~offmaps.features.geopackage.GeoPackageStore`) holding
the chosen layers' schemas, the relationships between them, their rows in the area of interest
and filters, and the rows' attachments. Rows keep the server's global ids and versions, and
:attr:`ReplicaResult.generation` is the server's generation read before any row: together they
are the ground for sync, which brings every change made after that generation.

Which rows are taken:

- **Spatial layers**: rows matching the layer's ``where`` whose geometry really intersects the
  area (brought to the layer's CRS through WGS84, split at the antimeridian), not only its
  bounding box. Rows without geometry only with ``include_null_geometry``; the spatial index
  does not hold them, so the whole layer is then read.
- **Tables** have no area. With :attr:`RowFilter.ALL` they bring every row matching ``where``.
  With :attr:`RowFilter.RELATED_ONLY`, a table that is the destination of relationships from
  extracted layers brings only the rows related to extracted origin rows (its destination key
  equals the origin key of one of them); other tables bring every row. Origin rows are those
  written to the replica (the origin's ``where`` and area apply; a ``schema_only`` origin has
  none). A table caught in a cycle of relationships (a self-relationship, say) cannot wait for
  its origins and brings every row. ``RELATED_ONLY`` applies to tables only: spatial layers
  are each cut by the area, even when a relationship links them.

The replica is written to a hidden ``.NAME.*.partial`` file beside the destination and renamed
into place when complete (in rollback-journal mode, so no ``-wal`` or ``-shm`` comes with it);
an error or a cancellation removes it. Attachment bytes copied before a failure stay in the
attachment store: it is content-addressed, and they are whole blobs.

Rows are copied without journal entries (:meth:`GeoPackageStore.copy_features`), but attachment
records go through the replica's ``add_attachment``, which journals them and takes replica
generations, and stamps them with the time of the copy: local changes of a replica are those
after the generation it has when the extraction ends.

Tile layers are clipped from an existing archive with :func:`extract_tiles`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TypeVar

import pyproj
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from offmaps.containers import ContainerKind, Location, convert, open_reader
from offmaps.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    DestinationExistsError,
    FeatureNotFoundError,
    FeatureStoreError,
    InvalidOfflineParametersError,
    JobCancelledError,
)
from offmaps.features.geopackage import GeoPackageStore, ScannedRow
from offmaps.features.model import Attachment, Feature, FeatureQuery, LayerSchema, Relationship
from offmaps.features.store import FeatureStore
from offmaps.offline.parameters import DestinationTableRowFilter
from offmaps.storage import BlobStore
from offmaps.tiling import AreaOfInterest, tile_cover
from offmaps.types import BBox, ZoomRange

__all__ = [
    "SAMPLED_ROWS",
    "LayerExtract",
    "LayerSize",
    "Progress",
    "ReplicaEstimate",
    "ReplicaResult",
    "RowFilter",
    "TileExtractResult",
    "estimate_feature_service",
    "extract_feature_service",
    "extract_tiles",
]

Progress = Callable[[float, str], None]
"""Called with the fraction (0 to 1) of the extraction done and a message for people."""

_BATCH = 1000
"""Rows read between two writes to the replica, progress reports and cancellation checks."""

_MAX_QUERY_BOXES = 8
"""An area of up to this many parts is queried part by part (an area across the antimeridian
has two, whose common bounding box would span the world); larger ones by their overall box."""

_TILE_KINDS = {".mbtiles": ContainerKind.MBTILES, ".pmtiles": ContainerKind.PMTILES}


RowFilter = DestinationTableRowFilter
"""Which rows of non-spatial tables a replica takes: ``RELATED_ONLY`` (tables that are
destinations of relationships from extracted layers take only the rows related to extracted
origin rows; other tables take every row) or ``ALL`` (every row matching their ``where``)."""


@dataclass(frozen=True, slots=True)
class LayerExtract:
    """One layer or table to put in a replica, and which of its rows.

    Attributes:
        layer: the layer's or table's name in the feature service.
        where: a CQL2 text filter (the layer's definition expression and/or the user's clause),
            compiled by the store with bound parameters.
        area: this layer's own area; ``None`` takes the extraction's. Ignored for tables.
        attachments: also copy the rows' attachments.
        include_null_geometry: for spatial layers, also take rows without geometry.
        schema_only: create the layer in the replica but copy no rows.
    """

    layer: str
    where: str | None = None
    area: AreaOfInterest | None = None
    attachments: bool = False
    include_null_geometry: bool = False
    schema_only: bool = False


@dataclass(frozen=True, slots=True)
class ReplicaResult:
    """What :func:`extract_feature_service` wrote.

    Attributes:
        path: the replica (a GeoPackage feature store).
        generation: the server's generation read before any row was; sync starts after it.
        rows: the rows written, per layer and table.
        attachments: the attachment records written.
        attachment_bytes: the size of the distinct blobs copied to the attachment store.
        related: the tables limited to rows related to the replica's rows of their origins
            (:attr:`RowFilter.RELATED_ONLY`), each with the relationships that limit it; sync
            keeps them so (see :class:`offmaps.state.replicas.LayerScope`).
    """

    path: Path
    generation: int
    rows: dict[str, int]
    attachments: int
    attachment_bytes: int
    related: dict[str, tuple[Relationship, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TileExtractResult:
    """What :func:`extract_tiles` wrote: the archive, its tiles and its size in bytes."""

    path: Path
    tiles: int
    bytes: int


def extract_feature_service(
    store: FeatureStore,
    destination: Path,
    layers: Sequence[LayerExtract],
    area: AreaOfInterest,
    *,
    row_filter: RowFilter = RowFilter.RELATED_ONLY,
    blobs: BlobStore | None = None,
    attachment_store: BlobStore | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ReplicaResult:
    """Write a replica of some layers of a feature service, cut to an area (see the module docs).

    Args:
        store: the feature service (any backend).
        destination: the replica's path, a GeoPackage; it must not exist.
        layers: the layers and tables to take, each with its filters.
        area: the area of interest (any CRS; may cross the antimeridian).
        row_filter: which rows of tables to take.
        blobs: the server's blob store, holding the attachments' bytes.
        attachment_store: where the copied attachments' bytes go (keyed by SHA-256).
        progress: called after each batch of rows with the fraction done and a message.
        cancelled: polled between batches; when it returns true the extraction stops.

    Raises:
        DestinationExistsError: ``destination`` exists.
        LayerNotFoundError: a layer is not in the service.
        InvalidFilterError: a ``where`` does not compile for its layer.
        InvalidOfflineParametersError: a layer asked twice, or attachments asked without both
            blob stores.
        InvalidAOIError: the area cannot be brought to a layer's CRS.
        BlobNotFoundError: an attachment's bytes are missing from ``blobs``.
        JobCancelledError: ``cancelled`` returned true; nothing is left at ``destination``.
    """
    destination = Path(destination)
    if destination.exists():
        raise DestinationExistsError(f"{destination} already exists", path=destination)
    plans = _plan(store, layers, area)
    if any(p.extract.attachments and not p.extract.schema_only for p in plans) and (
        blobs is None or attachment_store is None
    ):
        raise InvalidOfflineParametersError(
            "copying attachments needs the server's blob store and an attachment store"
        )
    generation = store.generation()
    temp = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.partial")
    try:
        replica = GeoPackageStore.create(temp)
        replica.stop_syncing()  # a partial file: made durable once, when finished
        try:
            extraction = _Extraction(
                store, replica, plans, row_filter, blobs, attachment_store, progress, cancelled
            )
            extraction.run()
        finally:
            replica.close()
        _leave_wal(temp)
        if destination.exists():
            raise DestinationExistsError(
                f"{destination} appeared while extracting; not replacing it", path=destination
            )
        try:
            os.replace(temp, destination)
        except OSError as exc:
            raise FeatureStoreError(
                f"cannot move the replica to {destination}: {exc.strerror or exc}"
            ) from exc
    except BaseException:
        _remove(temp)
        raise
    return ReplicaResult(
        path=destination,
        generation=generation,
        rows=extraction.rows,
        attachments=extraction.attachments,
        attachment_bytes=extraction.attachment_bytes,
        related=extraction.related,
    )


def extract_tiles(
    source: str | Path,
    destination: Path,
    area: AreaOfInterest,
    zooms: ZoomRange,
    *,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> TileExtractResult:
    """Copy the tiles of an archive that meet an area, on some levels, into a new archive.

    Args:
        source: a tile container location, as :func:`~offmaps.containers.open_reader` takes it.
        destination: the new archive; ``.mbtiles`` or ``.pmtiles`` decides its format.
        area: the area of interest (any CRS).
        zooms: the levels to copy.
        progress: called as tiles are read with the fraction of the source read and a message.
        cancelled: polled every few hundred tiles; when it returns true the extraction stops.

    Raises:
        InvalidOfflineParametersError: ``destination`` is neither ``.mbtiles`` nor ``.pmtiles``.
        DestinationExistsError: ``destination`` exists.
        ContainerError: subclasses for unreadable sources and unwritable destinations.
        TilingError: subclasses for zooms or areas that do not fit the source's tile matrix set.
        JobCancelledError: ``cancelled`` returned true; nothing is left at ``destination``.
    """
    destination = Path(destination)
    kind = _TILE_KINDS.get(destination.suffix.lower())
    if kind is None:
        raise InvalidOfflineParametersError(
            f"{destination.name}: a tile archive of an offline map ends in .mbtiles or .pmtiles"
        )
    if destination.exists():
        raise DestinationExistsError(f"{destination} already exists", path=destination)
    _check_cancelled(cancelled, "tile extraction")
    with open_reader(source) as reader:
        # the area's tiles are all that is read: their count, not the source's, is the total
        cover = tile_cover(area, reader.metadata.tms, zooms)
        total = max(cover.total, 1)
        handled = 0

        def tiles_handled(count: int) -> None:
            nonlocal handled
            handled += count
            _check_cancelled(cancelled, "tile extraction")
            if progress is not None:
                progress(min(handled / total, 1.0), f"{handled} of {total} tiles read")

        try:
            result = convert(
                reader, Location(kind, destination), zooms=zooms, aoi=cover, progress=tiles_handled
            )
        except JobCancelledError:
            # the last report comes after the archive is committed: a cancellation then still
            # means no archive (the destination did not exist before, so it is ours to remove)
            destination.unlink(missing_ok=True)
            raise
    size = destination.stat().st_size
    if progress is not None:
        progress(1.0, f"{result.written} tiles written")
    return TileExtractResult(path=destination, tiles=result.written, bytes=size)


# --- planning -------------------------------------------------------------------------------


_Row = TypeVar("_Row", Feature, ScannedRow)


@dataclass(slots=True)
class _LayerPlan:
    """A layer to extract: its schema and, for spatial layers, the area in its CRS."""

    extract: LayerExtract
    schema: LayerSchema
    area: Polygon | MultiPolygon | None = None
    boxes: tuple[BBox, ...] = ()
    estimate: int = 0


def _plan(
    store: FeatureStore, layers: Sequence[LayerExtract], area: AreaOfInterest
) -> list[_LayerPlan]:
    plans: list[_LayerPlan] = []
    seen: set[str] = set()
    for extract in layers:
        if extract.layer in seen:
            raise InvalidOfflineParametersError(f"layer {extract.layer!r} is asked twice")
        seen.add(extract.layer)
        schema = store.get_layer(extract.layer)
        plan = _LayerPlan(extract, schema)
        if not schema.is_table:
            plan.area = (extract.area or area).project_within_area_of_use(
                pyproj.CRS.from_epsg(schema.srid)
            )
            shapely.prepare(plan.area)
            parts = shapely.get_parts(plan.area)
            if 1 < len(parts) <= _MAX_QUERY_BOXES:
                plan.boxes = tuple(BBox(*part.bounds) for part in parts)
            else:
                plan.boxes = (BBox(*plan.area.bounds),)
        plans.append(plan)
    return plans


def _tables_in_order(
    plans: list[_LayerPlan], relationships: Sequence[Relationship]
) -> list[tuple[_LayerPlan, bool]]:
    """The tables, each after the extracted tables it is related from, with whether its rows
    can be restricted to related ones (not when it is caught in a cycle of relationships)."""
    spatial = {p.schema.name for p in plans if not p.schema.is_table}
    origins = {
        p.schema.name: {r.origin for r in relationships if r.destination == p.schema.name}
        for p in plans
        if p.schema.is_table
    }
    done = set(spatial)
    pending = [p for p in plans if p.schema.is_table]
    ordered: list[tuple[_LayerPlan, bool]] = []
    while pending:
        ready = next((p for p in pending if origins[p.schema.name] <= done), None)
        if ready is not None:
            ordered.append((ready, True))
        else:
            # every pending table waits for another: free one that waits for itself
            ready = next(p for p in pending if _waits_for_itself(p.schema.name, origins, done))
            ordered.append((ready, False))
        pending.remove(ready)
        done.add(ready.schema.name)
    return ordered


def _waits_for_itself(name: str, origins: dict[str, set[str]], done: set[str]) -> bool:
    """Whether ``name`` is among the tables it waits for, directly or through others."""
    seen: set[str] = set()
    stack = [o for o in origins.get(name, ()) if o not in done]
    while stack:
        current = stack.pop()
        if current == name:
            return True
        if current not in seen:
            seen.add(current)
            stack.extend(o for o in origins.get(current, ()) if o not in done)
    return False


# --- the extraction -------------------------------------------------------------------------


@dataclass
class _Extraction:
    """One replica being written: the state shared by the layers' copies."""

    store: FeatureStore
    replica: GeoPackageStore
    plans: list[_LayerPlan]
    row_filter: RowFilter
    blobs: BlobStore | None
    attachment_store: BlobStore | None
    progress: Progress | None
    cancelled: Callable[[], bool] | None
    rows: dict[str, int] = field(default_factory=dict)
    related: dict[str, tuple[Relationship, ...]] = field(default_factory=dict)
    attachments: int = 0
    attachment_bytes: int = 0
    _copied_blobs: set[str] = field(default_factory=set)
    _keys: dict[tuple[str, str], set[object]] = field(default_factory=dict)
    _total: int = 1
    _done: int = 0
    _reported: float = 0.0

    def run(self) -> None:
        names = {p.schema.name for p in self.plans}
        relationships = [
            r
            for r in self.store.list_relationships()
            if r.origin in names and r.destination in names
        ]
        for plan in self.plans:
            self.replica.create_layer(plan.schema)
        for relationship in relationships:
            self.replica.add_relationship(relationship)
        order = [(p, False) for p in self.plans if not p.schema.is_table]
        order += _tables_in_order(self.plans, relationships)
        restricting: dict[str, list[Relationship]] = {}
        if self.row_filter is RowFilter.RELATED_ONLY:
            tables = {p.schema.name for p in self.plans if p.schema.is_table}
            for relationship in relationships:
                if relationship.destination in tables:
                    restricting.setdefault(relationship.destination, []).append(relationship)
                    self._keys[relationship.origin, relationship.origin_key] = set()
        for plan in self.plans:
            self.rows[plan.schema.name] = 0
            if not plan.extract.schema_only and self.progress is not None:
                plan.estimate = self._estimate(plan)  # counted only for progress reports
        self._total = max(sum(p.estimate for p in self.plans), 1)
        for plan, can_restrict in order:
            self._check_cancelled()
            if plan.extract.schema_only:
                continue
            related = restricting.get(plan.schema.name, []) if can_restrict else []
            if related:
                self.related[plan.schema.name] = tuple(related)
            self._copy_layer(plan, related)
        self._check_cancelled()
        self._report(1.0, "replica written")

    def _query(self, plan: _LayerPlan, bbox: BBox | None, limit: int = 0) -> FeatureQuery:
        where = plan.extract.where
        return FeatureQuery(bbox=bbox, filters=(where,) if where else (), limit=limit)

    def _estimate(self, plan: _LayerPlan) -> int:
        """Rows the layer's copy will read (rows in several boxes count once per box)."""
        layer = plan.schema.name
        if plan.schema.is_table or plan.extract.include_null_geometry:
            return self.store.query(layer, self._query(plan, None)).number_matched
        return sum(self.store.query(layer, self._query(plan, b)).number_matched for b in plan.boxes)

    def _read(self, plan: _LayerPlan) -> Iterator[Feature]:
        layer = plan.schema.name
        if plan.schema.is_table or plan.extract.include_null_geometry:
            yield from self.store.iter_features(layer, self._query(plan, None))
            return
        if len(plan.boxes) == 1:
            yield from self.store.iter_features(layer, self._query(plan, plan.boxes[0]))
            return
        seen: set[uuid.UUID] = set()
        for box in plan.boxes:
            for feature in self.store.iter_features(layer, self._query(plan, box)):
                if feature.global_id not in seen:
                    seen.add(feature.global_id)
                    yield feature

    def _keep(
        self,
        plan: _LayerPlan,
        related: list[Relationship],
        batch: list[_Row],
        geometry: Callable[[_Row], BaseGeometry | None],
        value: Callable[[_Row, str], object],
    ) -> list[_Row]:
        """The rows of ``batch`` (features or scanned rows) that go in the replica."""
        if plan.area is not None:
            geometries = [g for row in batch if (g := geometry(row)) is not None]
            hits = iter(shapely.intersects(plan.area, geometries).tolist())
            nulls = plan.extract.include_null_geometry
            return [row for row in batch if (next(hits) if geometry(row) is not None else nulls)]
        if related:
            return [
                row
                for row in batch
                if any(
                    value(row, r.destination_key) in self._keys[r.origin, r.origin_key]
                    for r in related
                )
            ]
        return batch

    def _copy_layer(self, plan: _LayerPlan, related: list[Relationship]) -> None:
        if isinstance(self.store, GeoPackageStore):
            self._copy_layer_in_bulk(plan, related, self.store)
            return
        layer = plan.schema.name
        keys = [
            (field_name, found) for (name, field_name), found in self._keys.items() if name == layer
        ]
        read = 0
        for batch in _batches(self._read(plan), _BATCH):
            self._check_cancelled()
            kept = self._keep(
                plan, related, batch, lambda f: f.geometry, lambda f, k: f.properties.get(k)
            )
            self.rows[layer] += self._write_features(layer, kept)
            for field_name, found in keys:
                found.update(v for f in kept if (v := f.properties.get(field_name)) is not None)
            if plan.extract.attachments:
                self._copy_attachments(layer, [f.global_id for f in kept])
            read += len(batch)
            self._done += len(batch)
            self._report(
                self._done / self._total, f"{layer}: {read} of {max(read, plan.estimate)} rows"
            )

    def _copy_layer_in_bulk(
        self, plan: _LayerPlan, related: list[Relationship], source: GeoPackageStore
    ) -> None:
        """:meth:`_copy_layer` between two GeoPackages: rows are chosen from their fid, key
        values and geometry alone, and SQLite copies them as stored."""
        layer = plan.schema.name
        keys = [(name, found) for (origin, name), found in self._keys.items() if origin == layer]
        fields = sorted({r.destination_key for r in related} | {name for name, _ in keys})
        index = {name: i for i, name in enumerate(fields)}
        boxes: tuple[BBox | None, ...] = plan.boxes
        if plan.schema.is_table or plan.extract.include_null_geometry:
            boxes = (None,)
        seen: set[int] = set()
        read = 0
        for box in boxes:
            for scanned in source.scan_rows(layer, self._query(plan, box), fields):
                self._check_cancelled()
                batch = [row for row in scanned if row.fid not in seen]
                if len(boxes) > 1:
                    seen.update(row.fid for row in batch)
                kept = self._keep(
                    plan, related, batch, lambda r: r.geometry, lambda r, k: r.values[index[k]]
                )
                self.rows[layer] += self._write_scanned(source, layer, kept)
                for name, found in keys:
                    found.update(v for row in kept if (v := row.values[index[name]]) is not None)
                if plan.extract.attachments:
                    self._copy_attachments(layer, [uuid.UUID(row.global_id) for row in kept])
                read += len(batch)
                self._done += len(batch)
                self._report(
                    self._done / self._total,
                    f"{layer}: {read} of {max(read, plan.estimate)} rows",
                )

    def _write_features(self, layer: str, kept: list[Feature]) -> int:
        """Write the chosen rows (features) of a batch; returns how many."""
        return self.replica.copy_features(layer, kept)

    def _write_scanned(self, source: GeoPackageStore, layer: str, kept: list[ScannedRow]) -> int:
        """Write the chosen rows (scanned from a GeoPackage) of a batch; returns how many."""
        return self.replica.copy_rows_from(source, layer, [row.fid for row in kept])

    def _attachment_records(self, layer: str, global_id: uuid.UUID) -> tuple[Attachment, ...]:
        try:
            return self.store.list_attachments(layer, global_id)
        except FeatureNotFoundError:
            return ()  # deleted on the server since it was read: sync will delete it

    def _copy_attachments(self, layer: str, global_ids: Iterable[uuid.UUID]) -> None:
        for global_id in global_ids:
            for record in self._attachment_records(layer, global_id):
                self._copy_blob(record)
                self.replica.add_attachment(
                    layer,
                    global_id,
                    name=record.name,
                    content_type=record.content_type,
                    size=record.size,
                    sha256=record.sha256,
                    attachment_id=record.attachment_id,
                )
                self.attachments += 1

    def _copy_blob(self, record: Attachment) -> None:
        if record.sha256 in self._copied_blobs:
            return
        if self.blobs is None or self.attachment_store is None:
            raise InvalidOfflineParametersError(
                "copying attachments needs the server's blob store and an attachment store"
            )
        try:
            with self.blobs.open(record.sha256) as source:
                ref = self.attachment_store.put_stream(source)
        except BlobNotFoundError:
            raise BlobNotFoundError(
                f"attachment {record.name!r} ({record.attachment_id}) of {record.layer!r} row "
                f"{record.global_id}: its bytes {record.sha256} are not in the blob store",
                key=record.sha256,
            ) from None
        if ref.sha256 != record.sha256:
            raise BlobIntegrityError(
                f"attachment {record.attachment_id}: the blob store's bytes for {record.sha256} "
                f"hash to {ref.sha256}"
            )
        self._copied_blobs.add(record.sha256)
        self.attachment_bytes += ref.size

    def _check_cancelled(self) -> None:
        _check_cancelled(self.cancelled, "extraction")

    def _report(self, fraction: float, message: str) -> None:
        # estimates can be short (rows added meanwhile): never go back, never pass 1 early
        self._reported = max(self._reported, min(fraction, 1.0))
        if self.progress is not None:
            self.progress(self._reported, message)


# --- estimates ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerSize:
    """What one layer or table would bring into a replica (:func:`estimate_feature_service`).

    Attributes:
        rows: the rows the extraction would write: chosen exactly as it chooses them.
        bytes: what those rows add to the replica file, their attachment records included,
            measured on a sample written the way the extraction writes rows.
        attachments: the attachment records of those rows.
        blobs: the distinct attachment blobs they name (SHA-256 → size in bytes, from the
            attachment records).
        sampled: how many rows the byte count was measured on (all of them for small layers).
    """

    rows: int
    bytes: int
    attachments: int
    blobs: dict[str, int]
    sampled: int


@dataclass(frozen=True, slots=True)
class ReplicaEstimate:
    """What :func:`extract_feature_service` would write, before it runs.

    Attributes:
        layers: per layer and table, its rows, bytes and attachments.
        empty_bytes: the replica file with every schema, relationship and sync table, no rows.
    """

    layers: dict[str, LayerSize]
    empty_bytes: int

    @property
    def blobs(self) -> dict[str, int]:
        """The distinct attachment blobs of every layer (SHA-256 → size)."""
        return {sha: size for layer in self.layers.values() for sha, size in layer.blobs.items()}


SAMPLED_ROWS = 2000
"""Rows per layer written to a sample replica to measure what rows weigh in the package."""


def estimate_feature_service(
    store: FeatureStore,
    layers: Sequence[LayerExtract],
    area: AreaOfInterest,
    *,
    scratch: Path,
    row_filter: RowFilter = RowFilter.RELATED_ONLY,
    finish: Callable[[Path], None] | None = None,
    sample_rows: int = SAMPLED_ROWS,
) -> ReplicaEstimate:
    """What :func:`extract_feature_service` would write for the same arguments, cheaply.

    The rows are chosen as the extraction chooses them (the area's polygon, not its bounding
    box; ``where``; related rows only), reading only what the choice needs; no row is copied
    except a sample. Bytes are measured, not guessed: an empty replica is written with the
    layers' schemas, then, for each layer, a copy of it with up to ``sample_rows`` of the
    chosen rows (spread evenly over them) and their attachment records; what the sample adds
    to the file, per row, times the chosen rows is the layer's bytes. Attachment counts and
    blob sizes are exact (from the attachment records).

    Args:
        store: the feature service.
        layers: the layers and tables, as :func:`extract_feature_service` takes them.
        area: the area of interest.
        scratch: a folder for the sample replicas (removed again before returning).
        row_filter: which rows of tables to take.
        finish: called with each sample replica once written, to do what is done to the
            real one after the extraction (install the sync tables, say), before measuring.
        sample_rows: rows per layer written to measure bytes.

    Raises:
        LayerNotFoundError, InvalidFilterError, InvalidOfflineParametersError,
        InvalidAOIError: as :func:`extract_feature_service`.
    """
    plans = _plan(store, layers, area)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".estimate-") as folder:
        empty = Path(folder) / "empty.gpkg"
        replica = GeoPackageStore.create(empty)
        replica.stop_syncing()
        try:
            selection = _Selection(store, replica, plans, row_filter, None, None, None, None)
            selection.run()
        finally:
            replica.close()
        _leave_wal(empty)
        base = _measure(empty, Path(folder) / "base.gpkg", finish, lambda _: None)
        sizes: dict[str, LayerSize] = {}
        for index, plan in enumerate(plans):
            name = plan.schema.name
            chosen = selection.chosen.get(name, [])
            sample = _spread(chosen, sample_rows)
            records = selection.records.get(name, {})
            size = 0
            if sample:

                def fill(
                    target: GeoPackageStore, layer: str = name, rows: list[_Chosen] = sample
                ) -> None:
                    selection.write_sample(target, layer, rows)

                measured = _measure(empty, Path(folder) / f"{index}.gpkg", finish, fill)
                size = round(max(measured - base, 0) * len(chosen) / len(sample))
            sizes[name] = LayerSize(
                rows=len(chosen),
                bytes=size,
                attachments=sum(len(found) for found in records.values()),
                blobs={r.sha256: r.size for found in records.values() for r in found},
                sampled=len(sample),
            )
    return ReplicaEstimate(sizes, base)


@dataclass(frozen=True, slots=True)
class _Chosen:
    """A row the extraction would write: its fid (rows of a GeoPackage source) and id."""

    fid: int | None
    global_id: uuid.UUID


def _spread(rows: list[_Chosen], count: int) -> list[_Chosen]:
    """Up to ``count`` of ``rows``, evenly spread over them, in their order."""
    if len(rows) <= count:
        return rows
    step = len(rows) / count
    return [rows[int(i * step)] for i in range(count)]


def _measure(
    empty: Path,
    target: Path,
    finish: Callable[[Path], None] | None,
    fill: Callable[[GeoPackageStore], None],
) -> int:
    """The size of a copy of the empty replica ``empty`` filled by ``fill``, finished as the
    real replica is (journal mode, then ``finish``)."""
    shutil.copyfile(empty, target)
    with GeoPackageStore.open(target) as replica:
        replica.stop_syncing()
        fill(replica)
    _leave_wal(target)
    if finish is not None:
        finish(target)
    return target.stat().st_size


@dataclass
class _Selection(_Extraction):
    """An extraction that writes no row: it records the rows it would write, and their
    attachment records (the schemas and relationships still go into its replica)."""

    chosen: dict[str, list[_Chosen]] = field(default_factory=dict)
    records: dict[str, dict[uuid.UUID, tuple[Attachment, ...]]] = field(default_factory=dict)

    def _write_features(self, layer: str, kept: list[Feature]) -> int:
        self.chosen.setdefault(layer, []).extend(_Chosen(None, f.global_id) for f in kept)
        return len(kept)

    def _write_scanned(self, source: GeoPackageStore, layer: str, kept: list[ScannedRow]) -> int:
        self.chosen.setdefault(layer, []).extend(
            _Chosen(row.fid, uuid.UUID(row.global_id)) for row in kept
        )
        return len(kept)

    def _copy_attachments(self, layer: str, global_ids: Iterable[uuid.UUID]) -> None:
        found = self.records.setdefault(layer, {})
        for global_id in global_ids:
            records = self._attachment_records(layer, global_id)
            if records:
                found[global_id] = records

    def write_sample(self, target: GeoPackageStore, layer: str, rows: list[_Chosen]) -> None:
        """Write ``rows`` of ``layer`` and their attachment records into ``target``, the way
        the extraction writes them."""
        fids = [row.fid for row in rows if row.fid is not None]
        if isinstance(self.store, GeoPackageStore) and len(fids) == len(rows):
            for start in range(0, len(fids), _BATCH):
                target.copy_rows_from(self.store, layer, fids[start : start + _BATCH])
        else:
            for start in range(0, len(rows), _BATCH):
                ids = tuple(row.global_id for row in rows[start : start + _BATCH])
                query = FeatureQuery(global_ids=ids)
                target.copy_features(layer, list(self.store.iter_features(layer, query)))
        records = self.records.get(layer, {})
        for row in rows:
            for record in records.get(row.global_id, ()):
                target.add_attachment(
                    layer,
                    row.global_id,
                    name=record.name,
                    content_type=record.content_type,
                    size=record.size,
                    sha256=record.sha256,
                    attachment_id=record.attachment_id,
                )


# --- helpers --------------------------------------------------------------------------------


def _batches(items: Iterable[Feature], size: int) -> Iterator[list[Feature]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _check_cancelled(cancelled: Callable[[], bool] | None, what: str) -> None:
    if cancelled is not None and cancelled():
        raise JobCancelledError(f"the {what} was cancelled")


def _leave_wal(path: Path) -> None:
    """Put the closed replica in rollback-journal mode, so it travels as one file, and make it
    durable before it is renamed into place."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    with path.open("rb") as written:
        os.fsync(written.fileno())


def _remove(path: Path) -> None:
    for name in (str(path), f"{path}-journal", f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
