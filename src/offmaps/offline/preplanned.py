"""Preplanned map areas, the service half: create, change, delete, package and refresh them.

A preplanned map area (docs/preplanned.md) is packaged once, by a job of the same machinery as
a generate job (:data:`PACKAGE_MAP_AREA`), and every device downloads the same package. The
package is built as :func:`offmaps.offline.generate.build_package` builds an on-demand one,
except that it registers no replica (devices share it) and is published under the area's own
keys of the object store, ``areas/<area>/packages/<number>/``, which outlive the job. Each
packaging adds a package; the newest :attr:`PreplannedServices.keep_packages` are kept.

:class:`MapAreas` is what the REST API, GraphQL, the CLI and the scheduler call: it checks
areas against their web map before any job starts (the area, the bookmark, the export
limits) and keeps one packaging job per area at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from offmaps.containers import ContainerKind, TilesetMetadata, open_reader
from offmaps.containers.convert import subset_metadata
from offmaps.errors import (
    InvalidOfflineParametersError,
    JobCancelledError,
    JobNotFoundError,
    MapAreaBusyError,
    MapAreaNotFoundError,
    OffmapsError,
    TileNotFoundError,
)
from offmaps.jobs import JobContext, JobKind, JobRunner
from offmaps.offline.area_tiles import (
    WEB_MERCATOR,
    IndexedTileSource,
    Key,
    Row,
    archive_format,
    archive_rows,
    as_extracted,
    blob_bytes,
    cache_cover,
    cache_mark,
    content_mark,
    file_mark,
)
from offmaps.offline.area_vtiles import NotComparable, refresh_vector_tiles, vector_tiles_mark
from offmaps.offline.areas import (
    MapAreaChanges,
    MapAreaRequest,
    PackagingStatus,
    PreplannedUpdateMode,
    next_refresh,
    parse_refresh,
)
from offmaps.offline.generate import (
    THUMBNAIL,
    ExtractedService,
    OfflineMapServices,
    build_package,
    check_export_limits,
    exported_metadata,
    prepare_offline_map,
    tile_layer_infos,
)
from offmaps.offline.generate import _thumbnail as _extracted_thumbnail
from offmaps.offline.package import (
    ATTACHMENTS_FOLDER,
    MANIFEST_NAME,
    PackageFile,
    file_entry,
    read_manifest,
    write_manifest,
)
from offmaps.offline.parameters import (
    Area,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    OfflineItemInfo,
    TileArchiveFormat,
    area_from_bbox,
)
from offmaps.offline.plan import (
    OfflinePlan,
    TileLayerPlan,
    create_default_parameters,
    plan_offline_map,
)
from offmaps.offline.updates import (
    BASE_PREFIX,
    ChainState,
    FeatureUpdateReader,
    TileUpdateInfo,
    UpdateFile,
    UpdateLink,
    apply_feature_update,
    apply_tile_update,
    build_tile_update,
    file_sha256,
    fold_wal,
    write_chain_state,
    write_tile_update,
)
from offmaps.offline.updates.server import area_replica, area_replica_id, write_area_feature_update
from offmaps.offline.updates.tiles import build_cover_tile_update, rewrite_pmtiles
from offmaps.schemas import AttachmentOption, TileLayerRef, UpdateMode, WebMap
from offmaps.schemas.jobs import JobStatus
from offmaps.sources import ArchiveTileSource, FeatureVectorTiles
from offmaps.state import AreaPackage, LayerScope, MapArea, MapAreaStore
from offmaps.storage import LocalBlobStore, ObjectStore, prefixed
from offmaps.storage.copying import copy_stream
from offmaps.tiling import TileCover, tile_cover
from offmaps.types import Tile

__all__ = [
    "PACKAGE_MAP_AREA",
    "MapAreas",
    "PackageMapArea",
    "PreplannedServices",
    "area_parameters",
    "package_map_area_kind",
    "FILES_PREFIX",
    "collect",
]

_log = logging.getLogger(__name__)

PACKAGE_MAP_AREA = "package_map_area"
"""The name of the job kind that packages a preplanned map area."""


_TILE_ARCHIVES = (".mbtiles", ".pmtiles")
"""The suffixes of the tile archives of a package that tile update files keep fresh."""


FILES_PREFIX = "areas/files"
"""The object store prefix every area's package and update files are kept under, each by its
SHA-256: a file two packages share (an unchanged tile archive, an attachment of overlapping
areas) is kept once."""


def _keep(files: ObjectStore, path: Path, sha256: str) -> None:
    """Keep the local file ``path`` (of SHA-256 ``sha256``) among the areas' files: moved in, or
    left where it is when the same bytes are kept already."""
    if not files.exists(sha256):
        files.put_file(sha256, path)


@dataclass(frozen=True)
class PreplannedServices:
    """What packaging areas reads and writes.

    Attributes:
        offline: the services a generate job uses.
        areas: the areas and their packages.
        objects: the object store the packages' files go to (under :data:`FILES_PREFIX`).
        keep_packages: how many of an area's newest packages are kept.
        grace_s: how long a file no package names is kept before it is removed (a packaging
            in progress has put its files but not yet recorded its package).
    """

    offline: OfflineMapServices
    areas: MapAreaStore
    objects: ObjectStore
    keep_packages: int = 3
    grace_s: float = 86_400.0

    @property
    def files(self) -> ObjectStore:
        """Every area's package and update files, by SHA-256."""
        return prefixed(self.objects, FILES_PREFIX)


class PackageMapArea(BaseModel):
    """The payload of a packaging job.

    Attributes:
        area_id: the area.
        epoch: the area's epoch when the job was asked for: a job of an earlier epoch
            publishes nothing.
        owner: who asked (the author, or the area's owner for a scheduled refresh).
        server_url: the URL the package's online layers point at.
    """

    model_config = ConfigDict(extra="forbid")

    area_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    epoch: int = Field(ge=1)
    owner: str = Field(min_length=1)
    server_url: str


def area_parameters(
    webmap: WebMap, area: MapArea
) -> tuple[GenerateOfflineMapParameters, GenerateOfflineMapParameterOverrides | None]:
    """The offline map parameters and overrides an area is packaged with: the map's offline
    settings, the area's scales and options, and no replica (devices share the package).

    Raises:
        InvalidOfflineParametersError: they do not fit the map.
    """
    defaults = create_default_parameters(
        webmap, Area(geometry=area.area), area.min_scale, area.max_scale
    )
    parameters = defaults.model_copy(
        update={
            "update_mode": UpdateMode.NO_UPDATES,
            "continue_on_errors": True,
            "tile_format": TileArchiveFormat(area.tile_format),
            "return_layer_attachment_option": (
                AttachmentOption(area.attachments)
                if area.attachments
                else defaults.return_layer_attachment_option
            ),
            "item_info": OfflineItemInfo(
                title=area.title[:250],
                description=area.description,
                snippet=f"Preplanned area of {webmap.item.title}"[:250],
                thumbnail=area.thumbnail,
            ),
        }
    )
    overrides = (
        GenerateOfflineMapParameterOverrides.model_validate(area.overrides)
        if area.overrides is not None
        else None
    )
    return parameters, overrides


def _package(services: PreplannedServices, payload: PackageMapArea, context: JobContext) -> Any:
    """The packaging job: build the area's package under its next number with the update files
    from the package before it (same epoch), record both, and keep the newest
    :attr:`PreplannedServices.keep_packages`."""
    store = services.areas
    area = store.get(payload.area_id)
    if area.epoch != payload.epoch:
        raise InvalidOfflineParametersError(
            f"map area {area.id} changed since this packaging was asked for"
        )
    packages = store.packages(area.id)
    recorded = next((p for p in packages if p.job_id == context.job.id), None)
    if recorded is not None:  # run again after its worker died once it had recorded it
        return _done(services, recorded)
    number = max((p.number for p in packages), default=0) + 1
    previous = packages[-1] if packages and packages[-1].epoch == area.epoch else None
    try:
        webmap = services.offline.catalog.webmaps.get(area.map_id)
        read: dict[str, list[Row]] = {}  # what the marks read of tile caches' indexes
        fingerprints = _fingerprints(services, webmap, area, read)  # before any tile is read
        comparable = _comparable_layers(services, webmap)
        if previous is not None and _can_refresh(previous, webmap, fingerprints, comparable):
            try:
                package = _Incremental(
                    services, area, number, previous, context, webmap, fingerprints, read
                ).run()
            except _NotIncrementalError as exc:
                _log.info("map area %s is extracted again: %s", area.id, exc)
                for made in ("package", "updates", "tiles"):
                    shutil.rmtree(context.scratch / made, ignore_errors=True)
            else:
                _record(store, payload, package)
                return _done(services, package)
        parameters, overrides = area_parameters(webmap, area)
        held: dict[str, str] = {}  # the marks of what its tile caches' archives hold
        result, extracted = build_package(
            services.offline,
            webmap,
            parameters,
            overrides,
            context,
            owner=payload.owner,
            server_url=payload.server_url,
            publish=partial(_publish, services, webmap, area, held),
            shared_replica=partial(area_replica_id, area.id),
        )
        built = tuple(result["files"])
        context.progress(0.99, "writing the update files")
        updates = _UpdateWriter(services, area, number, previous, context).write(built, extracted)
        heads = {entry["path"]: f"{BASE_PREFIX}{entry['sha256']}" for entry in built}
        heads.update({update["file"]: update["sha256"] for update in updates})
        package = AreaPackage(
            area_id=area.id,
            number=number,
            epoch=area.epoch,
            created=datetime.now(UTC).timestamp(),
            job_id=context.job.id,
            files=built,
            layer_errors=result["layer_errors"],
            table_errors=result["table_errors"],
            generations={name: found.generation for name, found in extracted.items()},
            chains={path: heads[path] for path in _updatable(built, extracted)},
            updates=tuple(updates),
            services={
                name: {
                    "file": found.file,
                    "scope": {layer: asdict(scope) for layer, scope in found.scope.items()},
                    "attachments": found.attachments,
                }
                for name, found in extracted.items()
            },
            sources={**fingerprints, **held},
            map_digest=_map_digest(webmap),
            replaced=_replaced(previous, built, extracted),
        )
        _record(store, payload, package)
    except BaseException as exc:  # files it kept are removed by the next collection
        _record_failure(store, payload, exc)
        raise
    return _done(services, package)


def _publish(
    services: PreplannedServices,
    webmap: WebMap,
    area: MapArea,
    held: dict[str, str],
    entry: PackageFile,
    path: Path,
) -> None:
    """Keep a file an extraction wrote among the areas' files; for the archive of a tile cache,
    first record in ``held`` (by layer) the mark of the tiles it holds (:func:`cache_mark`)."""
    layer = PurePosixPath(entry.path).stem
    ref = webmap.find_layer(layer) if entry.path.endswith(_TILE_ARCHIVES) else None
    source = (
        services.offline.catalog.tile_sources.get(ref.service)
        if isinstance(ref, TileLayerRef)
        else None
    )
    if isinstance(source, IndexedTileSource):
        plan = _tile_plans(services, webmap, area).get(layer)
        if plan is not None and source.info.tms_id == WEB_MERCATOR:
            try:
                held[layer] = content_mark(source.info, plan, archive_rows(path).items())
            except (OffmapsError, sqlite3.Error) as exc:  # a mark matching none: compared next time
                _log.warning("%s cannot be marked: %s", entry.path, exc)
                held[layer] = f"cache:unread:{uuid.uuid4().hex}"
    _keep(services.files, path, entry.sha256)


def _record(store: MapAreaStore, payload: PackageMapArea, package: AreaPackage) -> None:
    """Record a built package, unless its area changed epoch meanwhile."""
    if store.get(payload.area_id).epoch != payload.epoch:
        raise InvalidOfflineParametersError(
            f"map area {payload.area_id} changed while it was being packaged: a new packaging runs"
        )
    store.add_package(
        package, status=PackagingStatus.COMPLETE.value, latest=package.number, reason=None
    )


def _done(services: PreplannedServices, package: AreaPackage) -> dict[str, Any]:
    """Keep the newest packages; the job's result."""
    _prune(services, package.area_id)
    return {
        "area_id": package.area_id,
        "package": package.number,
        "incremental": package.incremental,
        "bytes": package.bytes,
        "updates": len(package.updates),
        "update_bytes": sum(update["size"] for update in package.updates),
        "layer_errors": package.layer_errors,
        "table_errors": package.table_errors,
    }


def _map_digest(webmap: WebMap) -> str:
    """A digest of the web map document: a package of another version of the map is not
    refreshed from."""
    return hashlib.sha256(webmap.model_dump_json(exclude={"item"}).encode()).hexdigest()


def _fingerprints(
    services: PreplannedServices,
    webmap: WebMap,
    area: MapArea,
    read: dict[str, list[Row]] | None = None,
) -> dict[str, str | None]:
    """For each tile layer of the map (by id), what says its tiles have not changed: the size
    and modification time of an archive file and of its write-ahead log; for a tile cache, a
    digest of what its index holds for the area's cover (:func:`cache_mark`); for vector tiles
    made from a feature service, its generation and a digest of its layers and encoder
    (:func:`vector_tiles_mark`); ``None`` for a source with no such mark (an upstream server,
    a folder). ``read`` gets the index rows each tile cache's mark was made of (by layer)."""
    found: dict[str, str | None] = {}
    sources = services.offline.catalog.tile_sources
    plans: dict[str, TileLayerPlan] | None = None
    for ref in webmap.iter_layers():
        if not isinstance(ref, TileLayerRef):
            continue
        source = sources.get(ref.service)
        mark = None
        if isinstance(source, ArchiveTileSource) and not source.location.kind.is_folder:
            mark = file_mark(source.location.path)
        elif isinstance(source, IndexedTileSource):
            if plans is None:
                plans = _tile_plans(services, webmap, area)
            marked = cache_mark(source, plans.get(ref.id))
            if marked is not None:
                mark, rows = marked
                if read is not None:
                    read[ref.id] = rows
        elif isinstance(source, FeatureVectorTiles):
            mark = vector_tiles_mark(source)
        found[ref.id] = mark
    return found


def _tile_plans(
    services: PreplannedServices, webmap: WebMap, area: MapArea
) -> dict[str, TileLayerPlan]:
    """The tile layers an extraction of the area takes now (by id), as
    :func:`~offmaps.offline.generate.build_package` plans them; none when it cannot be planned
    (the packaging then says why)."""
    try:
        parameters, overrides = area_parameters(webmap, area)
        plan = plan_offline_map(
            webmap, parameters, overrides, tile_layer_infos(services.offline.catalog)
        )
    except OffmapsError:
        return {}
    return {found.layer_id: found for found in plan.tiles}


def _comparable_layers(services: PreplannedServices, webmap: WebMap) -> set[str]:
    """The tile layers of the map (by id) whose source is an MBTiles archive file, a tile
    cache of WebMercatorQuad or vector tiles made from a feature service: a changed one is
    brought up to date by comparing its tiles with the previous package's archive."""
    sources = services.offline.catalog.tile_sources
    return {
        ref.id
        for ref in webmap.iter_layers()
        if isinstance(ref, TileLayerRef)
        and (
            (
                isinstance(source := sources.get(ref.service), ArchiveTileSource)
                and source.location.kind is ContainerKind.MBTILES
            )
            or (isinstance(source, IndexedTileSource) and source.info.tms_id == WEB_MERCATOR)
            or isinstance(source, FeatureVectorTiles)
        )
    }


def _can_refresh(
    previous: AreaPackage,
    webmap: WebMap,
    fingerprints: dict[str, str | None],
    comparable: set[str],
) -> bool:
    """Whether the package after ``previous`` can be built from it and the update files: the
    same map, the source of every tile layer it holds marked, and either marked unchanged or
    an MBTiles archive or a tile cache the package holds as MBTiles or PMTiles (``comparable``:
    its tiles are compared),
    every feature service's scope recorded, and no layer failed in it."""
    stems = {PurePosixPath(entry["path"]).stem for entry in previous.files}
    held = {layer: mark for layer, mark in fingerprints.items() if layer in stems}
    return (
        previous.map_digest == _map_digest(webmap)
        and all(
            mark is not None
            and (
                previous.sources.get(layer) == mark
                or (
                    layer in comparable
                    and any(f"{layer}{suffix}" in previous.chains for suffix in _TILE_ARCHIVES)
                )
            )
            for layer, mark in held.items()
        )
        and set(previous.services) == set(previous.generations)
        and not previous.layer_errors
        and not previous.table_errors
    )


def _replaced(
    previous: AreaPackage | None,
    files: tuple[dict[str, Any], ...],
    extracted: dict[str, ExtractedService],
) -> tuple[str, ...]:
    """The files of a new package that differ from the previous package's (or came or went)
    and that no update file reaches: not its manifest, thumbnail (a picture, kept as the
    device has it), attachment blobs (fetched by their hash with the updates that name them),
    replicas or MBTiles and PMTiles archives."""
    if previous is None:
        return ()
    kept = {*_updatable(files, extracted), MANIFEST_NAME, THUMBNAIL}
    before = {e["path"]: e["sha256"] for e in previous.files}
    after = {e["path"]: e["sha256"] for e in files}
    return tuple(
        sorted(
            path
            for path in before.keys() | after.keys()
            if path not in kept
            and not path.startswith(f"{ATTACHMENTS_FOLDER}/")
            and before.get(path) != after.get(path)
        )
    )


def _updatable(
    files: tuple[dict[str, Any], ...], extracted: dict[str, ExtractedService]
) -> list[str]:
    """The files of a package that update files keep fresh: its replicas and its MBTiles and
    PMTiles archives."""
    replicas = {found.file for found in extracted.values()}
    return [
        entry["path"]
        for entry in files
        if entry["path"] in replicas or entry["path"].endswith(_TILE_ARCHIVES)
    ]


@dataclass
class _UpdateWriter:
    """Writes the update files that bring each file of the previous package to this one."""

    services: PreplannedServices
    area: MapArea
    number: int
    previous: AreaPackage | None
    context: JobContext

    def write(
        self, files: tuple[dict[str, Any], ...], extracted: dict[str, ExtractedService]
    ) -> list[dict[str, Any]]:
        """The update files written (each ``file`` it updates, ``kind``, ``path``, ``size``,
        ``sha256``, ``previous_sha256``, ``from_number``, ``to_number``), kept among the
        areas' files; none without a previous package of the same epoch."""
        previous = self.previous
        if previous is None:
            return []
        written = []
        folder = self.context.scratch / "updates"
        folder.mkdir(parents=True, exist_ok=True)
        for service, found in extracted.items():
            since = previous.generations.get(service)
            head = previous.chains.get(found.file)
            if since is None or head is None:
                continue  # not in the previous package: devices get it with the next full one
            replica = area_replica(
                self.area.id,
                service,
                found.scope,
                map_id=self.area.map_id,
                generation=since,
                attachments=found.attachments,
                owner=self.area.owner,
            )
            name = f"{found.file.removesuffix('.gpkg')}.{self.number}.update.gpkg"
            update, _ = write_area_feature_update(
                folder / name, self.services.offline.sync, replica, _link(self, head), since
            )
            blobs = self._keep_blobs(update.path, files)
            entry = _entry(self.services, name, found.file, "features", head, update, self)
            written.append({**entry, "blobs": blobs} if blobs else entry)
        for entry in files:
            path = entry["path"]
            head = previous.chains.get(path)
            if not path.endswith(_TILE_ARCHIVES) or head is None:
                continue
            old, new = folder / f"old-{path}", folder / f"new-{path}"
            before = {e["path"]: e["sha256"] for e in previous.files}
            _fetch(self.services.files, before[path], old)
            _fetch(self.services.files, entry["sha256"], new)
            with open_reader(str(new)) as reader:
                tile_format = reader.metadata.tile_format.value
            layer = PurePosixPath(path).stem
            name = f"{layer}.{self.number}.update.mbtiles"
            info = TileUpdateInfo(_link(self, head), layer, tile_format)
            update, _ = build_tile_update(folder / name, info, old, new)
            written.append(_entry(self.services, name, path, "tiles", head, update, self))
        return written

    def _keep_blobs(self, update: Path, files: tuple[dict[str, Any], ...]) -> list[str]:
        """Keep among the areas' files the attachment blobs a feature update names that the
        new package does not hold (a photo added after the extraction read its rows: the
        update is read later, from the rows as they are then); their SHA-256, which the
        update's entry lists so that a device may fetch them by it."""
        held = {str(entry["sha256"]) for entry in files}
        with FeatureUpdateReader(update) as reader:
            extra = sorted(sha256 for sha256 in reader.blobs() if sha256 not in held)
        for sha256 in extra:
            if not self.services.files.exists(sha256):
                self.services.files.put(sha256, self.services.offline.catalog.blobs.get(sha256))
        return extra


def _fetch(store: ObjectStore, key: str, target: Path) -> None:
    """Copy an object to a local file: in the kernel when the store hands out a real file."""
    with store.open(key) as source, target.open("wb") as out:
        copy_stream(source, out)


class _NotIncrementalError(Exception):
    """A refresh cannot build on the previous package after all (a tile source's format
    changed, its archive cannot be compared...): the area is extracted again. Raised before
    the refresh keeps any file."""


@contextlib.contextmanager
def _not_incremental(what: str) -> Iterator[None]:
    """Turn a failure of the block (but a cancellation) into :class:`_NotIncrementalError`:
    ``what``, and why."""
    try:
        yield
    except JobCancelledError:
        raise
    except (OffmapsError, sqlite3.Error, OSError) as exc:
        raise _NotIncrementalError(f"{what}: {exc}") from exc


@dataclass
class _Incremental:
    """A refresh that builds the new package from the previous one and the update files,
    without extracting the area again: each feature service's file is the previous one with
    its update applied (:func:`~offmaps.offline.updates.apply_feature_update`, as a device
    applies it); tile archives whose source is unchanged are the same file, with an empty
    update; an archive whose MBTiles source changed is the previous one with the update of the
    tiles that differ applied (:func:`~offmaps.offline.updates.tiles.build_cover_tile_update`,
    then :func:`~offmaps.offline.updates.apply_tile_update`), tile for tile what an extraction
    gives; one whose tile cache changed the same way, from the cache's index
    (:meth:`_refresh_from_cache`). A PMTiles archive is rewritten from the previous one and
    its update by the extraction's writer (:meth:`_bring_up`)."""

    services: PreplannedServices
    area: MapArea
    number: int
    previous: AreaPackage
    context: JobContext
    webmap: WebMap
    fingerprints: dict[str, str | None]
    read: dict[str, list[Row]] = field(default_factory=dict)
    """The index rows each tile cache's mark was made of (by layer): what is compared."""
    cache_marks: dict[str, str] = field(default_factory=dict)
    """The marks of what the archives brought up from a tile cache hold (by layer)."""

    def run(self) -> AreaPackage:
        """Build, keep and describe the new package; only its changed files are stored (the
        others are the previous package's, kept once by their SHA-256)."""
        folder = self.context.scratch / "package"
        updates_folder = self.context.scratch / "updates"
        folder.mkdir(parents=True)
        updates_folder.mkdir()
        files = self.services.files
        held = {entry["path"]: entry for entry in self.previous.files}
        _fetch(files, held[MANIFEST_NAME]["sha256"], folder / MANIFEST_NAME)
        tile_updates, changed = self._tile_updates(folder, updates_folder)  # nothing kept yet
        updates: list[dict[str, Any]] = []
        generations: dict[str, int] = {}
        attachments = LocalBlobStore(folder / ATTACHMENTS_FOLDER)
        services = sorted(self.previous.services.items())
        for index, (service, recorded) in enumerate(services):
            self.context.check_cancelled()
            self.context.progress(0.9 * index / len(services), service)
            file = str(recorded["file"])
            _fetch(files, held[file]["sha256"], folder / file)
            head = self.previous.chains[file]
            name = f"{file.removesuffix('.gpkg')}.{self.number}.update.gpkg"
            since = self.previous.generations[service]
            replica = area_replica(
                self.area.id,
                service,
                {layer: LayerScope.from_json(scope) for layer, scope in recorded["scope"].items()},
                map_id=self.area.map_id,
                generation=since,
                attachments=bool(recorded["attachments"]),
                owner=self.area.owner,
            )
            update, header = write_area_feature_update(
                updates_folder / name, self.services.offline.sync, replica, _link(self, head), since
            )
            write_chain_state(  # a scratch copy, synced once as it is kept: no flush before
                folder / file,
                ChainState(self.area.id, self.area.epoch, self.previous.number, head),
                durable=False,
            )
            applied = apply_feature_update(
                folder / file, update.path, sha256=update.sha256, durable=False
            )
            for sha256 in applied.blobs:
                if not attachments.exists(sha256):
                    attachments.put(self.services.offline.catalog.blobs.get(sha256))
            fold_wal(folder / file, leave_wal_mode=True)  # served as one file
            generations[service] = header.generation
            changed.append(file)
            updates.append(_entry(self.services, name, file, "features", head, update, self))
        for path, tile_head, update in tile_updates:
            name = update.path.name
            updates.append(_entry(self.services, name, path, "tiles", tile_head, update, self))
        self.context.progress(0.95, "writing the manifest")
        listed = self._manifest(folder, changed)
        for entry in listed:
            if entry["path"] in changed or entry["sha256"] not in _shas(self.previous.files):
                _keep(files, folder / entry["path"], entry["sha256"])
        chains = {
            file: next(u["sha256"] for u in updates if u["file"] == file)
            for file in self.previous.chains
        }
        return replace(
            self.previous,
            number=self.number,
            created=datetime.now(UTC).timestamp(),
            job_id=self.context.job.id,
            files=tuple(listed),
            generations=generations,
            chains=chains,
            updates=tuple(updates),
            sources={**self.fingerprints, **self.cache_marks},
            incremental=True,
            replaced=(),  # every file it changes is reached by its updates
        )

    def _tile_updates(
        self, folder: Path, updates_folder: Path
    ) -> tuple[list[tuple[str, str, UpdateFile]], list[str]]:
        """The update file of each tile archive of the package (the archive, its chain head,
        the update), and the archives changed in ``folder``: an empty update when the source's
        mark is unchanged, else the tiles that differ (from an MBTiles source or a tile
        cache), applied to a copy of the archive.

        Raises:
            _NotIncrementalError: a changed source cannot be compared (the archive is then
                extracted again, with the rest of the package).
        """
        written: list[tuple[str, str, UpdateFile]] = []
        changed: list[str] = []
        for path, head in self.previous.chains.items():
            if not path.endswith(_TILE_ARCHIVES):
                continue
            layer = PurePosixPath(path).stem
            name = f"{layer}.{self.number}.update.mbtiles"
            mark = self.fingerprints.get(layer)
            if mark is not None and self.previous.sources.get(layer) == mark:
                info = TileUpdateInfo(_link(self, head), layer, self._tile_format(path))
                written.append((path, head, write_tile_update(updates_folder / name, info, (), ())))
                continue
            self.context.check_cancelled()
            self.context.progress(0.0, f"{layer}: comparing the tiles")
            plan = next((p for p in self._plan.tiles if p.layer_id == layer), None)
            update = self._refresh_archive(path, head, plan, folder / path, name)
            written.append((path, head, update))
            changed.append(path)
        return written, changed + self._thumbnail(folder, changed)

    @cached_property
    def _plan(self) -> OfflinePlan:
        """What a packaging of the area extracts now (the tile layers' areas and levels), as
        :func:`~offmaps.offline.generate.build_package` plans it."""
        try:
            parameters, overrides = area_parameters(self.webmap, self.area)
            plan = plan_offline_map(
                self.webmap, parameters, overrides, tile_layer_infos(self.services.offline.catalog)
            )
        except OffmapsError as exc:
            raise _NotIncrementalError(f"the area cannot be planned: {exc}") from exc
        suffix = f".{parameters.tile_format.value}"
        if suffix not in _TILE_ARCHIVES:
            raise _NotIncrementalError(f"its tile archives are {parameters.tile_format.value}")
        if any(p.endswith(_TILE_ARCHIVES) and not p.endswith(suffix) for p in self.previous.chains):
            raise _NotIncrementalError(f"its tile archives are {suffix} files now")
        return plan

    @cached_property
    def _suffix(self) -> str:
        """The tile archives' suffix: ``.mbtiles`` or ``.pmtiles``, as the area is packaged."""
        _ = self._plan  # it refuses other formats
        parameters, _overrides = area_parameters(self.webmap, self.area)
        return f".{parameters.tile_format.value}"

    def _thumbnail(self, folder: Path, changed: list[str]) -> list[str]:
        """Take the package's thumbnail again as an extraction takes it when it is a tile of
        an archive that changed (the area has no thumbnail of its own: it is the first raster
        archive's PNG tile over the area's centre); the files it changed in ``folder``.

        Raises:
            _NotIncrementalError: it may now come from another archive, or be none.
        """
        held = {entry["path"]: entry["sha256"] for entry in self.previous.files}
        rasters = [
            plan
            for plan in self._plan.tiles
            if plan.kind == "raster_tile" and f"{plan.layer_id}{self._suffix}" in held
        ]
        names = [f"{p.layer_id}{self._suffix}" for p in rasters]
        if self.area.thumbnail is not None or not set(names) & set(changed):
            return []
        if names[0] not in changed:  # its thumbnail, or none, decides whether a later one counts
            raise _NotIncrementalError("the thumbnail may come from another tile archive now")
        first = OfflinePlan(services=(), tiles=(rasters[0],), online_only=())
        found = _extracted_thumbnail(folder, first, self._suffix[1:], [names[0]])
        if found is None:
            if THUMBNAIL in held or len(rasters) > 1:
                raise _NotIncrementalError("the thumbnail may come from another tile archive now")
            return []
        if THUMBNAIL not in held:
            raise _NotIncrementalError("the package gains a thumbnail")
        return [] if file_sha256(folder / THUMBNAIL)[0] == held[THUMBNAIL] else [THUMBNAIL]

    def _refresh_archive(
        self, path: str, head: str, plan: TileLayerPlan | None, archive: Path, name: str
    ) -> UpdateFile:
        """Bring a copy of the previous package's archive ``path`` to its source's tiles now:
        write the update of the tiles that differ, apply it to the copy as a device does, and
        leave the copy as an extraction writes it (no chain state; the metadata an extraction
        writes). A PMTiles archive is rewritten from the copy and the update
        (:meth:`_bring_up`).

        Raises:
            _NotIncrementalError: the archive is not extracted from an MBTiles source any more, the
                source's tile format changed, or either cannot be read.
        """
        sources = self.services.offline.catalog.tile_sources
        source = sources.get(plan.service) if plan is not None else None
        if plan is not None and isinstance(source, IndexedTileSource):
            return self._refresh_from_cache(path, head, plan, source, archive, name)
        if plan is not None and isinstance(source, FeatureVectorTiles):
            return self._refresh_vector_tiles(path, head, plan, source, archive, name)
        if (
            plan is None
            or not isinstance(source, ArchiveTileSource)
            or source.location.kind is not ContainerKind.MBTILES
        ):
            raise _NotIncrementalError(
                f"{path} is not extracted from an MBTiles archive or a tile cache"
            )
        held = {entry["path"]: entry["sha256"] for entry in self.previous.files}
        _fetch(self.services.files, held[path], archive)
        with _not_incremental(f"{path} cannot be compared with its source"):
            with open_reader(source.location.path) as reader:
                metadata = reader.metadata
            had = archive_format(archive)
            if had != metadata.tile_format.value:
                raise _NotIncrementalError(
                    f"the tile format of {path} changed ({had} -> {metadata.tile_format.value})"
                )
            cover = tile_cover(plan.area.aoi(), metadata.tms, plan.zooms)
            info = TileUpdateInfo(_link(self, head), plan.layer_id, metadata.tile_format.value)
            update, diff = build_cover_tile_update(
                self.context.scratch / "updates" / name, info, archive, source.location.path, cover
            )
            self.context.check_cancelled()
            self._bring_up(archive, update, head, subset_metadata(metadata, plan.zooms, cover))
        _log.info(
            "map area %s: %s: %d tiles changed, %d removed",
            self.area.id,
            path,
            len(diff.changed),
            len(diff.removed),
        )
        return update

    def _refresh_from_cache(
        self,
        path: str,
        head: str,
        plan: TileLayerPlan,
        cache: IndexedTileSource,
        archive: Path,
        name: str,
    ) -> UpdateFile:
        """Bring a copy of the previous package's archive ``path`` to what an extraction of the
        tile cache ``cache`` gives now (:func:`~offmaps.offline.generate.export_tiles`: each
        tile of the cover asked for, the bytes written as they come): the tiles of the cover
        whose SHA-256 in the cache's index differs from the previous archive's tile (hashed
        here), those the previous archive holds and the index does not (removed), and those
        the index lacks asked of the cache as the extraction asks (it reads them through from
        its source); only the changed tiles' bytes are read, from the cache's blob store
        (checked against their SHA-256). The index rows are those the cache's mark was made of
        (read before any tile, as an extraction would have read them then). The update is
        applied to the copy and the copy left as an extraction writes it.

        Raises:
            _NotIncrementalError: the cache is not of WebMercatorQuad, its format is not the
                archive's, its index, a blob or its source fails (a damaged blob included).
        """
        info = cache.info
        if info.tms_id != WEB_MERCATOR:
            raise _NotIncrementalError(f"{path}: its tile cache is of {info.tms_id}")
        held = {entry["path"]: entry["sha256"] for entry in self.previous.files}
        _fetch(self.services.files, held[path], archive)
        with _not_incremental(f"{path} cannot be compared with its cache"):
            if archive_format(archive) != info.tile_format.value:
                raise _NotIncrementalError(f"the tile format of {path} changed")
            rows = self.read.get(plan.layer_id)
            if rows is None:
                raise _NotIncrementalError(f"{path}: its tile cache's index was not read")
            cover, served = cache_cover(info, plan)
            old = archive_rows(archive)
            self.context.check_cancelled()
            new = {(z, x, y): sha256 for z, x, y, sha256 in rows}
            fetched = self._read_through(cache, cover, new, old) if len(new) < served else {}
            changed = sorted(key for key, sha256 in new.items() if old.get(key) != sha256)
            removed = sorted(key for key in old if key not in new)
            marked = self.fingerprints.get(plan.layer_id) or ""
            self.cache_marks[plan.layer_id] = (
                marked.partition(":lacks:")[0]  # the tiles the mark was made of, no more
                if len(new) == len(rows)
                else content_mark(info, plan, new.items())
            )
            wanted = [(key, new[key]) for key in changed if key not in fetched]
            link = TileUpdateInfo(_link(self, head), plan.layer_id, info.tile_format.value)
            update = write_tile_update(
                self.context.scratch / "updates" / name,
                link,
                [
                    (Tile(x, y, z), data)
                    for (z, x, y), data in [*fetched.items(), *blob_bytes(cache.blobs, wanted)]
                ],
                [Tile(x, y, z) for z, x, y in removed],
            )
            self.context.check_cancelled()
            differs = bool(changed or removed)  # else an MBTiles copy stays the same file
            self._bring_up(archive, update, head, exported_metadata(info, plan), differs)
        _log.info(
            "map area %s: %s: %d tiles changed, %d removed (tile cache %s, %d read through)",
            self.area.id,
            path,
            len(changed),
            len(removed),
            info.name,
            len(fetched),
        )
        return update

    def _refresh_vector_tiles(
        self,
        path: str,
        head: str,
        plan: TileLayerPlan,
        source: FeatureVectorTiles,
        archive: Path,
        name: str,
    ) -> UpdateFile:
        """Bring a copy of the previous package's archive ``path`` of vector tiles made from a
        feature service to what an extraction gives now: the tiles the rows changed since its
        mark can touch made again (:func:`~offmaps.offline.area_vtiles.refresh_vector_tiles`),
        the update of those that differ brought to the copy (:meth:`_bring_up`, MBTiles or
        PMTiles), the copy left as an extraction writes it.

        Raises:
            _NotIncrementalError: the refresh cannot be sure of the tiles it leaves as they
                were, the format changed, or the store or the archive fails.
        """
        held = {entry["path"]: entry["sha256"] for entry in self.previous.files}
        _fetch(self.services.files, held[path], archive)
        with _not_incremental(f"{path} cannot be compared with its feature service"):
            info = source.info
            if archive_format(archive) != info.tile_format.value:
                raise _NotIncrementalError(f"the tile format of {path} changed")
            done = refresh_vector_tiles(
                source,
                plan,
                before=self.previous.sources.get(plan.layer_id),
                after=self.fingerprints.get(plan.layer_id),
                archive=archive,
                update=self.context.scratch / "updates" / name,
                info=TileUpdateInfo(_link(self, head), plan.layer_id, info.tile_format.value),
                check_cancelled=self.context.check_cancelled,
            )
            if isinstance(done, NotComparable):
                raise _NotIncrementalError(f"{path}: {done.reason}")
            differs = bool(done.changed or done.removed)  # else an MBTiles copy stays the same
            self._bring_up(archive, done.update, head, exported_metadata(info, plan), differs)
        return done.update

    def _read_through(
        self,
        cache: IndexedTileSource,
        cover: TileCover,
        new: dict[Key, str],
        old: dict[Key, str],
    ) -> dict[Key, bytes]:
        """Ask the cache for each tile of the cover its index lacks, as an extraction does (it
        fetches them from its own source, and stores them); adds those it has to ``new`` and
        returns the bytes of those that differ from ``old``."""
        info = cache.info
        fetched: dict[Key, bytes] = {}
        for index, tile in enumerate(cover):
            if index % 256 == 0:
                self.context.check_cancelled()
            key = (tile.z, tile.x, tile.y)
            if key in new or not info.min_zoom <= tile.z <= info.max_zoom:
                continue
            try:
                data = cache.get_tile(tile)
            except TileNotFoundError:
                continue  # nothing there: no tile in an extraction either
            new[key] = sha256 = hashlib.sha256(data).hexdigest()
            if old.get(key) != sha256:
                fetched[key] = data
        return fetched

    def _bring_up(
        self,
        archive: Path,
        update: UpdateFile,
        head: str,
        metadata: TilesetMetadata,
        differs: bool = True,
    ) -> None:
        """Bring the copy ``archive`` of the previous package's archive up with ``update`` and
        leave it as an extraction with ``metadata`` writes it. An MBTiles copy gets the update
        as a device applies it (when anything ``differs``: else it stays the same file), then
        the extraction's metadata and no chain state (:func:`as_extracted`). A PMTiles copy is
        written again from its tiles and the update's by the writer an extraction uses, with
        the extraction's metadata (:func:`rewrite_pmtiles`): that writer's bytes depend on the
        tiles and the metadata only, so the archive is byte for byte a fresh extraction's (a
        device's apply would keep the copy's metadata and record its chain in it)."""
        if archive.suffix == ".pmtiles":
            rewrite_pmtiles(archive, update.path, archive, metadata)
            return
        if differs:
            self._apply_to_copy(archive, update, head)
        scratch = self.context.scratch / "tiles"
        scratch.mkdir(exist_ok=True)
        as_extracted(archive, metadata, scratch)

    def _apply_to_copy(self, archive: Path, update: UpdateFile, head: str) -> None:
        """Apply a tile update to the copy of the previous package's archive, as a device
        does: its chain begun at ``head`` first. A scratch copy: no flush per commit (the
        object store syncs it once as it keeps it)."""
        state = ChainState(self.area.id, self.area.epoch, self.previous.number, head)
        write_chain_state(archive, state, durable=False)
        apply_tile_update(
            archive, update.path, sha256=update.sha256, size=update.size, durable=False
        )

    def _tile_format(self, path: str) -> str:
        """The tile format of a package's tile archive: its layer's tile service's."""
        ref = self.webmap.find_layer(PurePosixPath(path).stem)
        sources = self.services.offline.catalog.tile_sources
        source = sources.get(ref.service) if isinstance(ref, TileLayerRef) else None
        if source is None:
            raise InvalidOfflineParametersError(f"no tile service for the package's {path}")
        return source.info.tile_format.value

    def _manifest(self, folder: Path, changed: list[str]) -> list[dict[str, Any]]:
        """The previous manifest with the changed files and the attachments added as they are
        now, written last of all; the entries of every file, the manifest last."""
        manifest = read_manifest(folder)
        names = {entry.path for entry in manifest.files}
        added = sorted(
            str(path.relative_to(folder))
            for path in folder.joinpath(ATTACHMENTS_FOLDER).rglob("*")
            if path.is_file() and str(path.relative_to(folder)) not in names
        )
        entries = manifest.relisted(folder, changed).files
        item = manifest.item.model_copy(
            update={"title": self.area.title[:250], "description": self.area.description}
        )
        manifest = manifest.model_copy(
            update={
                "created": datetime.now(UTC),
                "item": item,
                "files": [*entries, *(file_entry(folder, name) for name in added)],
            }
        )
        write_manifest(folder, manifest)
        listed = [*manifest.files, file_entry(folder, MANIFEST_NAME)]
        return [entry.model_dump() for entry in listed]


def _shas(files: tuple[dict[str, Any], ...]) -> set[str]:
    return {str(entry["sha256"]) for entry in files}


def _link(step: _Incremental | _UpdateWriter, head: str) -> UpdateLink:
    """Where an update from the step's previous package to its new one sits in its chain."""
    assert step.previous is not None
    return UpdateLink(
        step.area.id, step.area.map_id, step.area.epoch, step.previous.number, step.number, head
    )


def _entry(
    services: PreplannedServices,
    name: str,
    file: str,
    kind: str,
    head: str,
    update: UpdateFile,
    step: _Incremental | _UpdateWriter,
) -> dict[str, Any]:
    """Keep an update file among the areas' files; its entry in the package's ``updates``
    (a feature update's lists the attachment blobs its rows name, SHA-256 -> size: what a
    device lacking them downloads with it)."""
    named: dict[str, int] = {}
    if kind == "features":
        with FeatureUpdateReader(update.path) as reader:
            named = reader.blobs()
    _keep(services.files, update.path, update.sha256)
    assert step.previous is not None
    return {
        **({"attachments": named} if named else {}),
        "file": file,
        "kind": kind,
        "path": name,
        "size": update.size,
        "sha256": update.sha256,
        "previous_sha256": head,
        "from_number": step.previous.number,
        "to_number": step.number,
    }


def _record_failure(store: MapAreaStore, payload: PackageMapArea, exc: BaseException) -> None:
    """Say on the area why its packaging failed; an area with a package stays complete."""
    try:
        area = store.get(payload.area_id)
    except MapAreaNotFoundError:
        return  # deleted meanwhile
    if area.epoch != payload.epoch:
        return  # a newer packaging's business
    reason = str(exc) if isinstance(exc, OffmapsError) else f"{type(exc).__name__}: {exc}"
    status = area.status if area.latest is not None else PackagingStatus.FAILED.value
    try:
        store.update(area.id, status=status, reason=reason[:1000])
    except MapAreaNotFoundError:
        return


def _prune(services: PreplannedServices, area_id: str) -> None:
    """Forget the packages older than the newest :attr:`PreplannedServices.keep_packages`,
    then remove the files no package names any more."""
    packages = services.areas.packages(area_id)
    old = [p.number for p in packages[: max(len(packages) - services.keep_packages, 0)]]
    if old:
        services.areas.remove_packages(area_id, old)
        collect(services)


def collect(services: PreplannedServices, *, now: float | None = None) -> int:
    """Remove the kept files no package of any area names, once they are older than
    :attr:`PreplannedServices.grace_s` (a packaging running now may have kept files it has
    not recorded yet); returns how many."""
    named = services.areas.named_files()
    before = datetime.fromtimestamp((now or time.time()) - services.grace_s, UTC)
    removed = 0
    files = services.files
    for info in list(files.list()):
        if info.key in named or info.modified >= before:
            continue
        try:
            files.delete(info.key)
            removed += 1
        except OffmapsError:
            _log.warning("could not remove the area file %s", info.key)
    return removed


def package_map_area_kind(services: PreplannedServices) -> JobKind[PackageMapArea]:
    """The packaging job kind, bound to a process's services."""
    return JobKind(PACKAGE_MAP_AREA, PackageMapArea, partial(_package, services))


# --- the operations --------------------------------------------------------------------------


def _resolve_area(
    webmap: WebMap, shape: MapAreaRequest | MapAreaChanges
) -> tuple[Area, dict[str, Any]] | None:
    """The area a request gives, and how it was given; ``None`` when it gives none.

    Raises:
        InvalidOfflineParametersError: the bookmark does not exist.
        InvalidAOIError: the bbox is not a valid envelope.
    """
    if shape.area is not None:
        return shape.area, {"kind": "polygon"}
    if shape.bbox is not None:
        return area_from_bbox(*shape.bbox), {"kind": "bbox"}
    if shape.bookmark is not None:
        found = webmap.find_bookmark(shape.bookmark)
        if found is None:
            names = ", ".join(repr(b.name) for b in webmap.bookmarks[:20]) or "none"
            raise InvalidOfflineParametersError(
                f"the map has no bookmark {shape.bookmark[:100]!r} (its bookmarks: {names})"
            )
        return area_from_bbox(*found.extent), {"kind": "bookmark", "bookmark": found.name}
    return None


def _next_time(area: MapArea, now: float) -> float | None:
    found = next_refresh(parse_refresh(area.refresh), datetime.fromtimestamp(now, UTC))
    return None if found is None else found.timestamp()


@dataclass
class MapAreas:
    """The preplanned map areas of a server, as the API, the CLI and the scheduler use them.

    Args:
        services: what packaging reads and writes.
        jobs: the job runner packaging jobs run in.
    """

    services: PreplannedServices
    jobs: JobRunner

    def __post_init__(self) -> None:
        self._submitting = threading.Lock()

    @property
    def store(self) -> MapAreaStore:
        """The areas' store."""
        return self.services.areas

    def _check(self, webmap: WebMap, area: MapArea) -> None:
        """Refuse an area the map cannot package: outside its extent, a layer over its export
        limit, parameters that do not fit (before any job)."""
        parameters, overrides = area_parameters(webmap, area)
        plan, estimate = prepare_offline_map(
            self.services.offline.catalog, webmap, parameters, overrides
        )
        check_export_limits(plan, estimate)

    def create(
        self, webmap: WebMap, request: MapAreaRequest, *, owner: str, server_url: str
    ) -> MapArea:
        """Record a new area of ``webmap`` and start packaging it.

        Raises:
            InvalidOfflineParametersError, InvalidAOIError, ExportLimitError: it cannot be
                packaged as asked.
        """
        resolved = _resolve_area(webmap, request)
        assert resolved is not None  # the request model asks for exactly one
        where, source = resolved
        area = MapArea(
            id="",
            map_id=str(webmap.id),
            owner=owner,
            title=request.title,
            description=request.description or "",
            area=where.geometry,
            source=source,
            min_scale=request.min_scale or 0,
            max_scale=request.max_scale or 0,
            overrides=(
                request.overrides.model_dump(mode="json") if request.overrides is not None else None
            ),
            attachments=request.attachments.value if request.attachments else None,
            tile_format=(request.tile_format or TileArchiveFormat.MBTILES).value,
            update_mode=request.update_mode.value,
            refresh=request.refresh,
            thumbnail=request.thumbnail,
            server_url=server_url,
        )
        self._check(webmap, area)
        now = datetime.now(UTC).timestamp()
        area = self.store.create(replace(area, next_refresh_at=_next_time(area, now)))
        return self._start(area, owner=owner, server_url=server_url)

    def change(
        self,
        webmap: WebMap,
        area_id: str,
        changes: MapAreaChanges,
        *,
        owner: str,
        server_url: str,
    ) -> MapArea:
        """Apply ``changes`` to an area; a new extent, scales, layers or update mode start a new
        epoch and a new packaging.

        Raises:
            MapAreaBusyError: a packaging of it runs (cancel it or wait).
        """
        area = self.store.get(area_id, map_id=str(webmap.id))
        update: dict[str, Any] = {
            name: value
            for name in ("title", "description", "thumbnail")
            if (value := getattr(changes, name)) is not None
        }
        if changes.refresh is not None:
            update["refresh"] = changes.refresh
            now = datetime.now(UTC).timestamp()
            update["next_refresh_at"] = _next_time(replace(area, refresh=changes.refresh), now)
        if not changes.repackages:
            return self.store.update(area.id, **update)
        self._check_idle(area)
        resolved = _resolve_area(webmap, changes)
        if resolved is not None:
            update["area"], update["source"] = resolved[0].geometry, resolved[1]
        for name in ("min_scale", "max_scale"):
            if (value := getattr(changes, name)) is not None:
                update[name] = value
        if changes.overrides is not None:
            update["overrides"] = changes.overrides.model_dump(mode="json")
        if changes.attachments is not None:
            update["attachments"] = changes.attachments.value
        if changes.tile_format is not None:
            update["tile_format"] = changes.tile_format.value
        if changes.update_mode is not None:
            update["update_mode"] = changes.update_mode.value
        update["epoch"] = area.epoch + 1
        self._check(webmap, replace(area, **update))
        return self._start(self.store.update(area.id, **update), owner=owner, server_url=server_url)

    def refresh(self, area: MapArea, *, owner: str, server_url: str) -> MapArea:
        """Package an area again now.

        Raises:
            MapAreaBusyError: a packaging of it runs already.
        """
        self._check_idle(area)
        return self._start(area, owner=owner, server_url=server_url)

    def delete(self, area: MapArea) -> None:
        """Delete an area: cancel its packaging, remove its packages, leave a tombstone."""
        if area.job_id is not None:
            try:
                if self.jobs.get(area.job_id).status in (JobStatus.PENDING, JobStatus.RUNNING):
                    self.jobs.cancel(area.job_id)
            except JobNotFoundError:
                pass
        self.store.delete(area.id)
        collect(self.services)

    def package(self, area: MapArea, number: int | None = None) -> AreaPackage:
        """Package ``number`` of an area, or its newest.

        Raises:
            MapAreaBusyError: the area has no complete package yet.
            MapAreaNotFoundError: it has no package ``number`` (any more).
        """
        packages = self.store.packages(area.id)
        if not packages:
            if area.status == PackagingStatus.FAILED:
                raise MapAreaBusyError(
                    f"map area {area.id} has no package: its packaging failed ({area.reason})"
                )
            raise MapAreaBusyError(f"map area {area.id} is still packaging: try again later")
        if number is None:
            return packages[-1]
        for found in packages:
            if found.number == number:
                return found
        kept = ", ".join(str(p.number) for p in packages)
        raise MapAreaNotFoundError(
            f"map area {area.id} has no package {number} (it keeps packages {kept})"
        )

    def plan_updates(self, area: MapArea, have: int, epoch: int) -> dict[str, Any]:
        """What a device holding package ``have`` of epoch ``epoch`` downloads to reach the
        newest package: ``choice`` is ``none`` (it is the newest), ``updates`` (the update
        files, in order, in ``files``) or ``full`` (the newest package, when the updates are
        no smaller, the chain is broken by retention, or the area was repackaged), with
        ``reason``.

        Raises:
            MapAreaBusyError: the area has no complete package yet.
            InvalidOfflineParametersError: ``have`` is no package number the area has had.
        """
        newest = self.package(area)
        plan: dict[str, Any] = {
            "from": have,
            "to": newest.number,
            "epoch": area.epoch,
            "full_bytes": newest.bytes,
            "updates_bytes": 0,
            "files": [],
            "reason": None,
        }
        if have < 1 or have > newest.number:
            raise InvalidOfflineParametersError(
                f"map area {area.id} has had packages 1 to {newest.number}, not {have}"
            )
        if epoch != area.epoch:
            reason = f"the area was repackaged since (epoch {epoch} -> {area.epoch})"
            return {**plan, "choice": "full", "reason": reason}
        if have == newest.number:
            return {**plan, "choice": "none"}
        kept = {p.number: p for p in self.store.packages(area.id)}
        steps = [kept.get(number) for number in range(have + 1, newest.number + 1)]
        missing = [
            n for n, p in zip(range(have + 1, newest.number + 1), steps, strict=True) if p is None
        ]
        if missing:
            reason = (
                f"package {have} is older than the oldest kept ({min(kept)}): its updates "
                "were removed"
            )
            return {**plan, "choice": "full", "reason": reason}
        files: list[dict[str, Any]] = []
        for step in steps:
            assert step is not None
            covered = {update["file"] for update in step.updates}
            if not set(step.chains) <= covered or step.epoch != epoch:
                reason = f"package {step.number} has files no update reaches (a layer was added)"
                return {**plan, "choice": "full", "reason": reason}
            if step.replaced:
                reason = (
                    f"package {step.number} changed {', '.join(step.replaced)}, which update "
                    "files do not reach"
                )
                return {**plan, "choice": "full", "reason": reason}
            files += [{**update, "number": step.number} for update in step.updates]
        size = sum(int(entry["size"]) for entry in files)
        plan.update(files=files, updates_bytes=size)
        if size >= newest.bytes:
            reason = f"the updates ({size:,} bytes) are no smaller than the package"
            return {**plan, "choice": "full", "reason": reason}
        return {**plan, "choice": "updates"}

    def register_replicas(
        self, webmap: WebMap, area: MapArea, number: int, *, owner: str
    ) -> list[dict[str, Any]]:
        """Register replicas of ``owner``'s device for package ``number`` of an area in
        ``sync_with_feature_services`` mode (one per feature service, at the generation and
        with the scope the package was built with, so that its first sync downloads only what
        changed since), or in ``download_scheduled_updates_and_upload_new_features`` mode (an
        upload-only replica that takes new features only). Returns them as the package
        manifest lists replicas.

        Raises:
            InvalidOfflineParametersError: the area is in another update mode.
            MapAreaBusyError, MapAreaNotFoundError: no such package.
            QuotaExceededError: ``owner`` has as many replicas as a user may.
        """
        uploads_new = PreplannedUpdateMode.DOWNLOAD_SCHEDULED_UPDATES_AND_UPLOAD_NEW_FEATURES
        if area.update_mode not in (PreplannedUpdateMode.SYNC_WITH_FEATURE_SERVICES, uploads_new):
            raise InvalidOfflineParametersError(
                f"map area {area.id} is in {area.update_mode} mode: its devices take no replica "
                "of their own (they download its scheduled updates, or nothing)"
            )
        package = self.package(area, number)
        offline = self.services.offline
        limits = offline.limits
        inserts_only = area.update_mode == uploads_new
        if inserts_only:  # new features go up; the rest comes down in the update files
            direction, attachments = "upload", "upload"
        else:
            direction = webmap.offline.sync_direction.value
            attachments = webmap.offline.attachment_sync_direction.value
        registered: list[dict[str, Any]] = []
        try:
            for service, recorded in sorted(package.services.items()):
                scope = {
                    layer: LayerScope.from_json(found) for layer, found in recorded["scope"].items()
                }
                replica = offline.replicas.register(
                    service,
                    tuple(scope),
                    package.generations[service],
                    owner=owner,
                    max_owned=None if limits is None else limits.replicas_per_user,
                    retry_after_s=3600 if limits is None else limits.quota_retry_after_s,
                    map_id=area.map_id,
                    sync_direction=direction,
                    scope=scope,
                    attachment_sync_direction=attachments,
                    inserts_only=inserts_only,
                )
                registered.append(
                    {
                        "service": service,
                        "replica_id": replica.id,
                        "generation": replica.generation,
                        "file": recorded["file"],
                        "sync_direction": direction,
                        "attachment_sync_direction": attachments,
                        "sync_model": "per_layer",
                    }
                )
        except BaseException:
            for done in registered:  # all or none
                offline.replicas.unregister(done["replica_id"])
            raise
        return registered

    @property
    def files(self) -> ObjectStore:
        """Every area's package and update files, each under its SHA-256."""
        return self.services.files

    def refresh_due(self, now: float) -> list[str]:
        """Start a packaging of every area whose scheduled refresh is due at ``now`` (each
        claimed once, however many processes ask); returns their ids. An area still packaging
        is left for its next time."""
        started = []
        for area in self.store.claim_due(now, _next_time):
            try:
                self.refresh(area, owner=area.owner, server_url=area.server_url)
            except MapAreaBusyError:
                continue
            except OffmapsError as exc:
                _log.warning("scheduled refresh of map area %s failed: %s", area.id, exc)
                continue
            started.append(area.id)
        return started

    def _check_idle(self, area: MapArea) -> None:
        if area.job_id is None:
            return
        try:
            job = self.jobs.get(area.job_id)
        except JobNotFoundError:
            return
        if job.status in (JobStatus.PENDING, JobStatus.RUNNING):
            raise MapAreaBusyError(
                f"map area {area.id} is being packaged (job {job.id}): wait for it, or cancel "
                "it first"
            )

    def _start(self, area: MapArea, *, owner: str, server_url: str) -> MapArea:
        payload = PackageMapArea(
            area_id=area.id, epoch=area.epoch, owner=owner, server_url=server_url
        )
        if area.latest is None:
            self.store.update(area.id, status=PackagingStatus.PACKAGING.value, reason=None)
        with self._submitting:  # two refreshes at once: one job
            self._check_idle(self.store.get(area.id))
            job = self.jobs.submit(PACKAGE_MAP_AREA, payload, owner=owner)
            return self.store.update(area.id, job_id=job.id)
