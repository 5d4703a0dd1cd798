"""Generating offline maps: estimates, the export limit check, and the package builder job.

The service half of the offline API, usable by the server, a worker or a scheduler alike:

- :func:`prepare_offline_map`: the plan and the estimate (tiles, rows and bytes per layer) of an
  area of a web map, before any work; :func:`check_export_limits` refuses one over a layer's
  max export tile count, saying how many tiles it would take and which levels would fit.
- :data:`GENERATE_OFFLINE_MAP`: the job kind. Its payload, :class:`GenerateOfflineMap`, is all a
  process needs to build the package: the replicas (GeoPackages registered for sync), tile
  archives, thumbnail and manifest. They are built in the job's scratch folder (SQLite and the
  archive writers need real files) and, once the manifest is written, moved into the job's
  output area in the object store, where the server serves them from.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import shapely
from pydantic import BaseModel, ConfigDict, Field

from offmaps.catalog import Catalog
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.errors import (
    ExportLimitError,
    JobCancelledError,
    OffmapsError,
    PackageError,
    TileNotFoundError,
)
from offmaps.features.store import FeatureStore
from offmaps.jobs import JobContext, JobKind
from offmaps.offline.extract import (
    LayerExtract,
    ReplicaEstimate,
    estimate_feature_service,
    extract_feature_service,
    extract_tiles,
)
from offmaps.offline.package import (
    MANIFEST_NAME,
    PackageFile,
    PackageItem,
    PackageLayer,
    PackageManifest,
    PackageReplica,
    ReferenceBasemap,
    file_entry,
    write_manifest,
)
from offmaps.offline.parameters import (
    Area,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    LayerEstimate,
    OfflineMapEstimate,
    thumbnail_bytes,
)
from offmaps.offline.plan import (
    OfflinePlan,
    ServicePlan,
    TileLayerInfo,
    TileLayerPlan,
    plan_offline_map,
)
from offmaps.offline.replica import LocalReplica
from offmaps.replicas import SyncService
from offmaps.schemas import FeatureLayerRef, OnlineOnlyLayerRef, TableRef, TileLayerRef, WebMap
from offmaps.settings import LimitSettings
from offmaps.sources import ArchiveTileSource, TileSource, TileSourceInfo
from offmaps.state import LayerScope, RelatedKey, ReplicaRegistry
from offmaps.storage import LocalBlobStore
from offmaps.tiling import AreaOfInterest, get_tms, scale_for_zoom, tile_cover
from offmaps.types import BBox, Tile

__all__ = [
    "GENERATE_OFFLINE_MAP",
    "RecordedStates",
    "SAMPLED_TILES",
    "ExtractedService",
    "GenerateOfflineMap",
    "OfflineMapServices",
    "build_package",
    "check_export_limits",
    "estimate_offline_map",
    "export_tiles",
    "generate_offline_map",
    "generate_offline_map_kind",
    "job_replica_id",
    "prepare_offline_map",
    "tile_layer_infos",
]

GENERATE_OFFLINE_MAP = "generate_offline_map"
"""The name of the generate job kind."""
_JOB_REPLICAS = uuid.UUID("5b0c4a52-2f9e-4c61-9a57-2c0f3f6d8e11")
"""The namespace of the replica ids generate jobs derive (:func:`job_replica_id`)."""
SAMPLED_TILES = 16
"""Tiles read per level to measure a tile layer's sizes."""
_TILE_ROW_BYTES = 40
"""What a tile adds to its archive besides its bytes (an MBTiles row and index entry), about."""
_DEFAULT_TILE_BYTES = 20_000
"""A tile's size when none of the sampled tiles could be read."""


@dataclass(frozen=True)
class OfflineMapServices:
    """What generating an offline map reads and registers with.

    Attributes:
        catalog: the server's catalog.
        replicas: where replicas are registered.
        sync: the sync service.
        limits: the per-user quotas; the replica quota is checked as each replica is
            registered (none without limits).
    """

    catalog: Catalog
    replicas: ReplicaRegistry
    sync: SyncService
    limits: LimitSettings | None = None


class GenerateOfflineMap(BaseModel):
    """The payload of a generate job: everything another process needs to run it.

    Attributes:
        map_id: the web map.
        parameters: the area, levels and options asked for.
        overrides: per-layer choices, if any.
        owner: the signed-in user who asked: the owner of the job and of the replicas it
            registers (always one: anonymous callers cannot start jobs).
        server_url: the URL the package's online layers and sync point at.
    """

    model_config = ConfigDict(extra="forbid")

    map_id: str
    parameters: GenerateOfflineMapParameters
    overrides: GenerateOfflineMapParameterOverrides | None = None
    owner: str = Field(min_length=1)
    server_url: str


def tile_layer_infos(catalog: Catalog) -> dict[str, TileLayerInfo]:
    """What the plan needs to know of the server's tile services."""
    return {
        name: TileLayerInfo(
            name,
            source.info.tms_id,
            source.info.min_zoom,
            source.info.max_zoom,
            source.info.bounds,
            exportable=source.info.export_tiles_allowed,
        )
        for name, source in catalog.tile_sources.items()
    }


def prepare_offline_map(
    catalog: Catalog,
    webmap: WebMap,
    parameters: GenerateOfflineMapParameters,
    overrides: GenerateOfflineMapParameterOverrides | None = None,
    *,
    states: RecordedStates | None = None,
) -> tuple[OfflinePlan, OfflineMapEstimate]:
    """The plan and the estimate of an offline map of ``webmap`` (``states``: see
    :func:`estimate_offline_map`)."""
    plan = plan_offline_map(webmap, parameters, overrides, tile_layer_infos(catalog))
    return plan, estimate_offline_map(catalog, webmap, parameters, plan, states=states)


def check_export_limits(plan: OfflinePlan, estimate: OfflineMapEstimate) -> None:
    """Refuse an offline map with a layer over its max export tile count, before any work.

    Raises:
        ExportLimitError: naming the first such layer, its tiles and its limit.
    """
    over = [layer for layer in estimate.layers if layer.error is not None]
    if not over:
        return
    first = over[0]
    limit = next((p.max_tiles for p in plan.tiles if p.layer_id == first.layer_id), 0)
    raise ExportLimitError(
        first.error or "", layer=first.layer_id, tiles=first.tiles or 0, limit=limit
    )


def generate_offline_map(
    services: OfflineMapServices, payload: GenerateOfflineMap, context: JobContext
) -> dict[str, Any]:
    """Build the offline package of ``payload`` into the job's output area; returns the job's
    result (the files, and the errors of layers that failed under ``continue_on_errors``)."""
    webmap = services.catalog.webmaps.get(payload.map_id)
    plan, estimate = prepare_offline_map(
        services.catalog,
        webmap,
        payload.parameters,
        payload.overrides,
        states=services.sync.recorded_states,
    )
    return _Generation(
        context,
        services.catalog,
        services.replicas,
        services.sync,
        webmap,
        payload.parameters,
        plan,
        estimate,
        payload.owner,
        payload.server_url,
        services.limits,
    ).run()


def build_package(
    services: OfflineMapServices,
    webmap: WebMap,
    parameters: GenerateOfflineMapParameters,
    overrides: GenerateOfflineMapParameterOverrides | None,
    context: JobContext,
    *,
    owner: str,
    server_url: str,
    publish: Callable[[PackageFile, Path], None],
    shared_replica: Callable[[str], str] | None = None,
) -> tuple[dict[str, Any], dict[str, ExtractedService]]:
    """Build the offline package of ``webmap`` for ``parameters`` as a generate job does (the
    export limits are checked first), handing each file to ``publish`` (its manifest entry and
    its path in the job's scratch folder), the manifest last; returns what a generate job
    returns, and what the package holds of each feature service.

    For a package many devices share (a preplanned map area), ``parameters.update_mode`` is
    ``no_updates``: no replica is registered for it; with ``shared_replica`` its replica files
    still get the sync tables, under the id it gives each service, for update files.

    Raises:
        ExportLimitError: a layer is over its max export tile count.
    """
    plan, estimate = prepare_offline_map(services.catalog, webmap, parameters, overrides)
    check_export_limits(plan, estimate)
    generation = _Generation(
        context,
        services.catalog,
        services.replicas,
        services.sync,
        webmap,
        parameters,
        plan,
        estimate,
        owner,
        server_url,
        services.limits,
        publish=publish,
        shared_replica=shared_replica,
    )
    return generation.run(), generation.extracted


def job_replica_id(job_id: str, service: str) -> str:
    """The id of the replica a generate job registers for ``service``: derived from the job's
    id, so a job run again (its worker died) registers the same replica, never a second one."""
    return uuid.uuid5(_JOB_REPLICAS, f"{job_id}/{service}").hex


def _abandon_generation(
    services: OfflineMapServices, payload: GenerateOfflineMap, job_id: str
) -> None:
    """Unregister the replicas an attempt of job ``job_id`` registered before its process
    died (:attr:`JobKind.abandon`)."""
    for service in services.catalog.feature_services:
        replica_id = job_replica_id(job_id, service)
        if services.replicas.find(replica_id) is not None:
            services.replicas.unregister(replica_id)


def generate_offline_map_kind(services: OfflineMapServices) -> JobKind[GenerateOfflineMap]:
    """The generate job kind, bound to a process's services."""
    return JobKind(
        GENERATE_OFFLINE_MAP,
        GenerateOfflineMap,
        partial(generate_offline_map, services),
        abandon=partial(_abandon_generation, services),
    )


# --- estimates --------------------------------------------------------------------------------


def _tile_estimate(catalog: Catalog, plan: TileLayerPlan) -> LayerEstimate:
    source = catalog.tile_sources[plan.service]
    tms = get_tms(source.info.tms_id)
    area = _within(plan.area.aoi(), source.info.bounds)
    cover = tile_cover(area, tms, plan.zooms) if area is not None else None
    counts = cover.counts() if cover is not None else {}
    tiles = sum(counts.values())
    estimated = 0.0
    measured = False
    rng = random.Random(0)  # noqa: S311 - sampling, not security
    for z in plan.zooms.levels():
        if cover is None:
            break
        level = list(itertools.islice(cover.level(z), 4096))
        sizes: list[int] = []
        sampled = rng.sample(level, min(SAMPLED_TILES, len(level)))
        for tile in sampled:
            try:
                sizes.append(len(source.get_tile(tile)))
            except OffmapsError:
                sizes.append(0)  # no tile there: none in the package either
        # tiles the source has not are counted by the cover but weigh nothing
        measured = measured or any(sizes)
        average = sum(sizes) / len(sizes) if sizes else 0
        estimated += counts.get(z, 0) * (average + _TILE_ROW_BYTES * (average > 0))
    if not measured:
        estimated = tiles * _DEFAULT_TILE_BYTES
    error = None
    if tiles > plan.max_tiles:
        error = _limit_message(plan, counts, tms_id=source.info.tms_id)
    return LayerEstimate(
        layer_id=plan.layer_id,
        kind=plan.kind,
        tiles=tiles,
        min_zoom=plan.zooms.min,
        max_zoom=plan.zooms.max,
        bytes=round(estimated),
        measured=measured,
        error=error,
    )


def _within(area: AreaOfInterest, bounds: BBox | None) -> AreaOfInterest | None:
    """The part of ``area`` where a tile layer has tiles (its bounds), or ``None``."""
    if bounds is None:
        return area
    inside = area.to_wgs84().intersection(shapely.box(*bounds))
    if inside.is_empty or inside.area == 0:
        return None
    return AreaOfInterest.from_geometry(inside)


def _limit_message(plan: TileLayerPlan, counts: Mapping[int, int], *, tms_id: str) -> str:
    tiles = sum(counts.values())
    fitting, total = None, 0
    for z in plan.zooms.levels():
        total += counts.get(z, 0)
        if total > plan.max_tiles:
            break
        fitting = z
    message = (
        f"layer {plan.layer_id!r} would export {tiles:,} tiles (levels {plan.zooms.min}-"
        f"{plan.zooms.max}), over its limit of {plan.max_tiles:,}"
    )
    if fitting is None:
        return message + ": even its first level is over it; choose a smaller area"
    tms = get_tms(tms_id)
    return message + (
        f"; levels {plan.zooms.min}-{fitting} would fit: a scale range of "
        f"1:{scale_for_zoom(tms, plan.zooms.min):,.0f} to 1:{scale_for_zoom(tms, fitting):,.0f}"
    )


def _area_bbox(aoi: AreaOfInterest) -> BBox:
    west, south, east, north = aoi.to_wgs84().bounds
    return BBox(west, south, east, north)


RecordedStates = Callable[[str, Sequence[str]], Iterable[tuple[str, str, int, dict[str, int]]]]
"""The server's recorded sync states of a service's layers
(:meth:`offmaps.replicas.SyncService.recorded_states`), seeded into each new replica."""


def estimate_offline_map(
    catalog: Catalog,
    webmap: WebMap,
    parameters: GenerateOfflineMapParameters,
    plan: OfflinePlan,
    *,
    states: RecordedStates | None = None,
) -> OfflineMapEstimate:
    """Tiles, rows and bytes per layer of ``plan``, as the generate job would write them.

    Feature layers and tables: the rows the extraction would take (the area's polygon, the
    filters, related rows only), their bytes measured on a sample written as the job writes
    rows (:func:`offmaps.offline.extract.estimate_feature_service`), and their attachments'
    bytes, exact, from the attachment records. Tile layers: the tiles of the tile cover, and
    bytes from a sample of them. The package's other files (each replica's file with no rows,
    the manifest, the thumbnail) are :attr:`OfflineMapEstimate.overhead_bytes`.

    Args:
        catalog: the server's services.
        webmap: the web map.
        parameters: the offline map's parameters.
        plan: what to extract (:func:`offmaps.offline.plan.plan_offline_map`).
        states: the server's recorded sync states, seeded into replicas registered for sync
            (their rows count too); ``None`` counts none.
    """
    layers = [_tile_estimate(catalog, tile_plan) for tile_plan in plan.tiles]
    overhead = _manifest_bytes(webmap, plan) + _thumbnail_bytes(catalog, parameters, plan)
    seen_blobs: set[str] = set()
    for service_plan in plan.services:
        found = _estimate_service(
            catalog.feature_service(service_plan.service),
            catalog.data_dir / "scratch",
            service_plan,
            parameters.area_of_interest,
            states if service_plan.register_replica else None,
        )
        overhead += found.empty_bytes
        for layer in service_plan.layers:
            size = found.layers[layer.layer]
            blobs = {sha: n for sha, n in size.blobs.items() if sha not in seen_blobs}
            seen_blobs.update(blobs)
            layers.append(
                LayerEstimate(
                    layer_id=layer.layer_id,
                    kind="table" if layer.is_table else "feature",
                    features=size.rows,
                    attachments=size.attachments if layer.attachments else None,
                    attachment_bytes=sum(blobs.values()) if layer.attachments else None,
                    bytes=size.bytes + sum(blobs.values()),
                    measured=True,
                )
            )
    return OfflineMapEstimate(
        layers=tuple(layers), omitted=tuple(sorted(plan.omitted)), overhead_bytes=overhead
    )


def _estimate_service(
    store: FeatureStore,
    scratch: Path,
    service_plan: ServicePlan,
    area: Area,
    states: RecordedStates | None,
) -> ReplicaEstimate:
    """What the job's replica of one service would hold (see :func:`estimate_offline_map`)."""
    finish = None
    if service_plan.register_replica:
        names = [layer.layer for layer in service_plan.layers]
        finish = partial(
            _make_syncable, "0" * 32, store.generation(), states, service_plan.service, names
        )
    return estimate_feature_service(
        store,
        _layer_extracts(service_plan),
        area.aoi(),
        scratch=scratch,
        row_filter=service_plan.row_filter,
        finish=finish,
    )


def _layer_extracts(service_plan: ServicePlan) -> list[LayerExtract]:
    return [
        LayerExtract(
            layer=layer.layer,
            where=layer.where,
            area=layer.area.aoi() if layer.area else None,
            attachments=layer.attachments,
            include_null_geometry=layer.include_null_geometry,
            schema_only=layer.schema_only,
        )
        for layer in service_plan.layers
    ]


def _make_syncable(
    replica_id: str,
    generation: int,
    states: RecordedStates | None,
    service: str,
    layers: Sequence[str],
    path: Path,
) -> None:
    """Install the sync tables and triggers in a replica and seed the server's recorded
    states: what the job does to a replica registered for sync."""
    with LocalReplica.open(path, replica_id=replica_id, generation=generation) as local:
        if states is not None:
            local.seed_server_states(states(service, layers))


_MANIFEST_FILE_BYTES = 160
"""What one file's entry (path, size, SHA-256) adds to the manifest, about."""


def _manifest_bytes(webmap: WebMap, plan: OfflinePlan) -> int:
    """About what the manifest weighs: the web map document it carries, an entry per file
    and per layer, and its other fields."""
    document = len(webmap.model_dump_json(exclude_none=True))
    files = len(plan.services) + len(plan.tiles) + 2
    layers = sum(len(s.layers) for s in plan.services) + len(plan.tiles) + len(plan.online_only)
    return document + _MANIFEST_FILE_BYTES * (files + layers) + 1000


def _thumbnail_bytes(
    catalog: Catalog, parameters: GenerateOfflineMapParameters, plan: OfflinePlan
) -> int:
    """The thumbnail the job would write: the one the request brings, else the raster
    basemap's tile over the area's centre at its first level (see :func:`_thumbnail`)."""
    item = parameters.item_info
    if item is not None and item.thumbnail is not None:
        return len(thumbnail_bytes(item.thumbnail)[0])
    for tile_plan in plan.tiles:
        source = catalog.tile_sources.get(tile_plan.service)
        if tile_plan.kind != "raster_tile" or source is None:
            continue
        west, south, east, north = tile_plan.area.aoi().to_wgs84().bounds
        tms = get_tms(source.info.tms_id)
        for z in tile_plan.zooms.levels():
            found = tms.tile((west + east) / 2, (south + north) / 2, z)
            try:
                data = source.get_tile(Tile(found.x, found.y, found.z))
            except OffmapsError:
                continue
            if data.startswith(b"\x89PNG"):
                return len(data)
        return 0
    return 0


# --- the generate job ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedService:
    """What a package holds of one feature service: what its update files start from.

    Attributes:
        file: the replica's file in the package.
        generation: the service's generation the rows were read at.
        scope: which rows of each layer the file holds.
        attachments: whether it holds attachments.
    """

    file: str
    generation: int
    scope: dict[str, LayerScope]
    attachments: bool


@dataclass
class _Generation:
    """One generate job: the replicas, tile archives, thumbnail and manifest, built in its
    scratch folder and then moved into its output area."""

    context: JobContext
    catalog: Catalog
    replicas: ReplicaRegistry
    sync: SyncService
    webmap: WebMap
    parameters: GenerateOfflineMapParameters
    plan: OfflinePlan
    estimate: OfflineMapEstimate
    owner: str
    server_url: str
    limits: LimitSettings | None = None
    publish: Callable[[PackageFile, Path], None] | None = None
    """How each file is published: into the job's output area unless given (a preplanned
    area's files are kept by their SHA-256)."""
    shared_replica: Callable[[str], str] | None = None
    """For a package many devices share and no replica is registered for: the replica id its
    file of each service gets (by service), so that update files apply to it."""
    errors: dict[str, str] = field(default_factory=dict)
    extracted: dict[str, ExtractedService] = field(default_factory=dict)
    """Each feature service's replica file, generation and scope, by service."""
    layers: list[PackageLayer] = field(default_factory=list)
    package_replicas: list[PackageReplica] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    _sizes: dict[str, int] = field(default_factory=dict)
    _done: float = 0.0
    _registered: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        """Where the package is built: the job's scratch folder."""
        return self.context.scratch

    def run(self) -> dict[str, Any]:
        """Build the package; a job that fails or is cancelled leaves no replica registered
        (nobody would ever sync it, and it would count against its owner's quota)."""
        try:
            return self._build()
        except BaseException:
            self._unregister(self._registered)
            raise

    def _unregister(self, replica_ids: list[str]) -> None:
        for replica_id in replica_ids:
            try:
                self.replicas.unregister(replica_id)
            except OffmapsError:  # gone already: nothing to undo
                continue
        del replica_ids[:]

    def _build(self) -> dict[str, Any]:
        self._sizes = {layer.layer_id: max(layer.bytes, 1) for layer in self.estimate.layers}
        for service_plan in self.plan.services:
            ids = [layer.layer_id for layer in service_plan.layers]
            self._attempt(ids, service_plan.service, partial(self._service, service_plan))
        for tile_plan in self.plan.tiles:
            ids = [tile_plan.layer_id]
            self._attempt(ids, tile_plan.layer_id, partial(self._tiles, tile_plan))
        for layer_id in self.plan.online_only:
            url = self._online_url(layer_id)
            if url is not None:
                self.layers.append(
                    PackageLayer(
                        id=layer_id, title=self._title(layer_id), kind="online_only", url=url
                    )
                )
        self.context.progress(0.96, "writing the manifest")
        manifest = self._manifest()
        listed = [*manifest.files, file_entry(self.folder, MANIFEST_NAME)]
        self._publish(listed)
        tables = {ref.id for ref in self.webmap.tables}
        return {
            "files": [entry.model_dump() for entry in listed],
            "layer_errors": {k: v for k, v in self.errors.items() if k not in tables},
            "table_errors": {k: v for k, v in self.errors.items() if k in tables},
            "omitted": self.plan.omitted,
        }

    def _publish(self, files: list[PackageFile]) -> None:
        """Move the package's files, the manifest last, from the scratch folder into the job's
        output area (or hand them to :attr:`publish`), each checked against its manifest
        entry."""
        for index, entry in enumerate(files):
            self.context.check_cancelled()
            self.context.progress(0.97 + 0.03 * index / len(files), f"publishing {entry.path}")
            if self.publish is not None:
                self.publish(entry, self.folder / entry.path)
                continue
            info = self.context.output.put_file(entry.path, self.folder / entry.path)
            if info.size != entry.size or info.sha256 not in (None, entry.sha256):
                raise PackageError(f"{entry.path} changed while it was being published")

    def _attempt(
        self, layer_ids: list[str], label: str, work: Callable[[Callable[[float, str], None]], None]
    ) -> None:
        """Run one service's or tile layer's ``work`` with its share of the progress; with
        ``continue_on_errors`` a failure is recorded for its layers and the job goes on."""
        weight = sum(self._sizes.get(layer_id, 1) for layer_id in layer_ids)
        total = sum(self._sizes.values()) or 1

        def report(fraction: float, message: str) -> None:
            done = self._done + weight * fraction
            self.context.progress(0.95 * done / total, f"{label}: {message}")

        self.context.check_cancelled()
        try:
            work(report)
        except OffmapsError as exc:
            if not self.parameters.continue_on_errors or isinstance(exc, JobCancelledError):
                raise
            self.errors.update(dict.fromkeys(layer_ids, str(exc)))
        finally:
            self._done += weight

    def _online_url(self, layer_id: str) -> str | None:
        """Where a layer kept online only is read from: its own URL, or this server's."""
        ref = self.webmap.find_layer(layer_id)
        if isinstance(ref, OnlineOnlyLayerRef):
            return str(ref.url)
        if isinstance(ref, FeatureLayerRef | TableRef):
            return f"{self.server_url}/collections/{ref.service}.{ref.layer}/items"
        if isinstance(ref, TileLayerRef):
            return f"{self.server_url}/tiles/{ref.service}/{{z}}/{{x}}/{{y}}"
        return None

    def _title(self, layer_id: str) -> str:
        ref = self.webmap.find_layer(layer_id)
        return ref.title if ref is not None else layer_id

    def _service(self, service_plan: ServicePlan, progress: Callable[[float, str], None]) -> None:
        name = f"{service_plan.service}.gpkg"
        result = extract_feature_service(
            self.catalog.feature_service(service_plan.service),
            self.folder / name,
            _layer_extracts(service_plan),
            self.parameters.area_of_interest.aoi(),
            row_filter=service_plan.row_filter,
            blobs=self.catalog.blobs,
            attachment_store=LocalBlobStore(self.folder / "attachments"),
            progress=progress,
            cancelled=self.context.cancelled,
        )
        self.files.append(name)
        self.layers += [
            PackageLayer(
                id=layer.layer_id,
                title=self._title(layer.layer_id),
                kind="table" if layer.is_table else "feature",
                file=name,
                layer=layer.layer,
                service=service_plan.service,
            )
            for layer in service_plan.layers
        ]
        scope = {
            layer.layer: LayerScope(
                where=layer.where,
                area=None
                if layer.is_table
                else (layer.area or self.parameters.area_of_interest).geometry,
                include_null_geometry=layer.include_null_geometry,
                related=tuple(
                    RelatedKey(r.origin, r.origin_key, r.destination_key)
                    for r in result.related.get(layer.layer, ())
                ),
            )
            for layer in service_plan.layers
        }
        self.extracted[service_plan.service] = ExtractedService(
            name, result.generation, scope, any(layer.attachments for layer in service_plan.layers)
        )
        if not service_plan.register_replica:
            if self.shared_replica is not None:  # a shared package that takes update files
                _make_syncable(
                    self.shared_replica(service_plan.service),
                    result.generation,
                    self.sync.recorded_states,
                    service_plan.service,
                    [layer.layer for layer in service_plan.layers],
                    self.folder / name,
                )
            return
        sync_direction = self.webmap.offline.sync_direction.value
        replica = self.replicas.register(
            service_plan.service,
            tuple(layer.layer for layer in service_plan.layers),
            result.generation,
            owner=self.owner,
            max_owned=None if self.limits is None else self.limits.replicas_per_user,
            retry_after_s=3600 if self.limits is None else self.limits.quota_retry_after_s,
            map_id=self.webmap.id,
            sync_direction=sync_direction,
            sync_model=service_plan.sync_model.value,
            scope=scope,
            attachment_sync_direction=service_plan.attachment_sync_direction.value,
            replica_id=job_replica_id(self.context.job.id, service_plan.service),
        )
        self._registered.append(replica.id)
        try:
            # capture starts now: every edit on the device, by any tool, lands in the outbox
            _make_syncable(
                replica.id,
                result.generation,
                self.sync.recorded_states,
                service_plan.service,
                replica.layers,
                self.folder / name,
            )
        except BaseException:  # a layer error under continue_on_errors: this one goes now
            self._registered.remove(replica.id)
            self._unregister([replica.id])
            raise
        self.package_replicas.append(
            PackageReplica(
                service=service_plan.service,
                replica_id=replica.id,
                generation=result.generation,
                file=name,
                sync_direction=self.webmap.offline.sync_direction.value,
                attachment_sync_direction=service_plan.attachment_sync_direction.value,
                sync_model=service_plan.sync_model.value,
            )
        )

    def _tiles(self, tile_plan: TileLayerPlan, progress: Callable[[float, str], None]) -> None:
        name = f"{tile_plan.layer_id}.{self.parameters.tile_format.value}"
        source = self.catalog.tile_sources.get(tile_plan.service)
        if source is None:
            raise TileNotFoundError(f"the server has no tile service {tile_plan.service!r}")
        if isinstance(source, ArchiveTileSource):
            extract_tiles(
                str(source.location),
                self.folder / name,
                tile_plan.area.aoi(),
                tile_plan.zooms,
                progress=progress,
                cancelled=self.context.cancelled,
            )
        else:
            export_tiles(
                source, self.folder / name, tile_plan, progress, self.context.check_cancelled
            )
        self.files.append(name)
        self.layers.append(
            PackageLayer(
                id=tile_plan.layer_id,
                title=self._title(tile_plan.layer_id),
                kind="vector_tile" if tile_plan.kind == "vector_tile" else "raster_tile",
                file=name,
                service=tile_plan.service,
            )
        )

    def _own_thumbnail(self) -> str | None:
        """The thumbnail the request brought, written into the package."""
        item = self.parameters.item_info
        if item is None or item.thumbnail is None:
            return None
        data, suffix = thumbnail_bytes(item.thumbnail)
        name = f"thumbnail{suffix}"
        (self.folder / name).write_bytes(data)
        return name

    def _manifest(self) -> PackageManifest:
        order = {ref.id: index for index, ref in enumerate(self.webmap.iter_layers())}
        self.layers.sort(key=lambda layer: order.get(layer.id, len(order)))  # the map's order
        thumbnail = self._own_thumbnail() or _thumbnail(
            self.folder, self.plan, self.parameters.tile_format.value, self.files
        )
        files = [*self.files, *([thumbnail] if thumbnail else [])]
        files += sorted(
            str(path.relative_to(self.folder))
            for path in self.folder.joinpath("attachments").rglob("*")
            if path.is_file()
        )
        item, webmap, parameters = self.parameters.item_info, self.webmap, self.parameters
        table_ids = {ref.id for ref in webmap.tables}
        manifest = PackageManifest(
            format_version="1.0",
            created=datetime.now(UTC),
            item=PackageItem(
                title=item.title if item else webmap.item.title,
                snippet=item.snippet if item else (webmap.item.snippet or ""),
                description=item.description if item else (webmap.item.description or ""),
                tags=list(item.tags if item else webmap.item.tags),
                thumbnail=thumbnail,
            ),
            server_url=self.server_url,
            source_map_id=webmap.id,
            update_mode=parameters.update_mode.value,
            map=webmap.model_dump(mode="json", exclude_none=True),
            layers=[layer for layer in self.layers if layer.id not in table_ids],
            tables=[layer for layer in self.layers if layer.id in table_ids],
            replicas=self.package_replicas,
            files=[file_entry(self.folder, name) for name in files],
            reference_basemap=(
                ReferenceBasemap(
                    directory=parameters.reference_basemap_directory or ".",
                    filename=parameters.reference_basemap_filename,
                )
                if parameters.reference_basemap_filename
                else None
            ),
        )
        write_manifest(self.folder, manifest)
        return manifest


def exported_metadata(info: TileSourceInfo, plan: TileLayerPlan) -> TilesetMetadata:
    """The metadata :func:`export_tiles` gives the archive it writes of a tile source: the
    source's format, title and attribution, the area's bounds, the layer's levels."""
    west, south, east, north = plan.area.aoi().to_wgs84().bounds
    return TilesetMetadata(
        tile_format=info.tile_format,
        tms=get_tms(info.tms_id),
        name=info.title,
        tile_compression=info.tile_compression,
        bounds=BBox(west, south, east, north),
        minzoom=plan.zooms.min,
        maxzoom=plan.zooms.max,
        attribution=info.attribution,
        vector_layers=[{"id": layer, "fields": {}} for layer in info.vector_layers] or None,
    )


def export_tiles(
    source: TileSource,
    destination: Path,
    plan: TileLayerPlan,
    progress: Callable[[float, str], None],
    check_cancelled: Callable[[], None],
) -> int:
    """The tiles of any tile source (vector tiles built from feature layers, an upstream server
    through its cache) for a layer's area and levels, into a new archive; returns how many.

    Archives are copied by :func:`offmaps.offline.extract.extract_tiles`; here each tile of the
    area is asked for, and the ones the source has none for are skipped. The archive appears
    only when complete.
    """
    metadata = exported_metadata(source.info, plan)
    cover = tile_cover(plan.area.aoi(), metadata.tms, plan.zooms)
    total = max(cover.total, 1)
    written = 0
    with open_writer(str(destination), metadata) as writer:
        for index, tile in enumerate(cover):
            if index % 256 == 0:
                check_cancelled()
                progress(index / total, f"{index:,} of {total:,} tiles")
            try:
                data = source.get_tile(tile)
            except TileNotFoundError:
                continue  # nothing there: no tile in the archive either
            writer.write_tile(tile, data)
            written += 1
    progress(1.0, f"{written:,} tiles")
    return written


THUMBNAIL = "thumbnail.png"


def _thumbnail(folder: Path, plan: OfflinePlan, extension: str, files: list[str]) -> str | None:
    """The offline map's thumbnail: the raster basemap's tile over the area's centre at its
    first level, when there is such a PNG tile."""
    for tile_plan in plan.tiles:
        name = f"{tile_plan.layer_id}.{extension}"
        if tile_plan.kind != "raster_tile" or name not in files:
            continue
        west, south, east, north = tile_plan.area.aoi().to_wgs84().bounds
        with open_reader(str(folder / name)) as reader:
            tms = reader.metadata.tms
            for z in tile_plan.zooms.levels():
                found = tms.tile((west + east) / 2, (south + north) / 2, z)
                data = reader.find_tile(Tile(found.x, found.y, found.z))
                if data is not None and data.startswith(b"\x89PNG"):
                    (folder / THUMBNAIL).write_bytes(data)
                    return THUMBNAIL
    return None
