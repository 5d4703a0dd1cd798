"""Preplanned map areas from the SDK (docs/preplanned.md): made by a map's author, downloaded
by every device.

- The author's side, after ArcGIS API for Python's ``OfflineMapAreaManager``:
  :class:`OfflineMapAreaManager` creates, lists, changes, refreshes and deletes the areas of one
  web map, and waits for their packaging with progress.
- The device's side, after ArcGIS Runtime's names in snake_case:
  ``OfflineMapTask.get_preplanned_map_areas()`` gives :class:`PreplannedMapArea` objects;
  ``create_default_download_preplanned_offline_map_parameters(area)`` gives
  :class:`DownloadPreplannedOfflineMapParameters`; ``download_preplanned_offline_map`` gives a
  :class:`DownloadPreplannedOfflineMapJob`, whose result is the on-demand
  :class:`~offmaps.client.offline.GenerateOfflineMapResult`.

A package is downloaded as an on-demand one is (each file resumable with HTTP ranges and checked
against its SHA-256, by the same code); the manifest is read first into a hidden folder, to learn
which files are the basemap's, and ``package.json`` appears last, so the download directory holds
a package only once it is complete. The ``Async...`` twins run the same calls in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import httpx
from pydantic import BaseModel, ValidationError

from offmaps.client.offline import (
    GenerateOfflineMapResult,
    JobStatus,
    Progress,
    check_download_directory,
    check_reference_basemap,
    fetch_package_files,
    remove_download,
)
from offmaps.client.portal import Portal
from offmaps.errors import (
    DownloadError,
    InvalidOfflineParametersError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    PackageError,
)
from offmaps.offline.adopt import adopt_replicas
from offmaps.offline.areas import (
    MapAreaChanges,
    MapAreaRequest,
    PackagingStatus,
    PreplannedUpdateMode,
)
from offmaps.offline.package import (
    MANIFEST_NAME,
    MobileMapPackage,
    PackageManifest,
    PackageReplica,
    ReferenceBasemap,
    read_manifest,
    write_manifest,
)
from offmaps.offline.parameters import Area, area_from_bbox, encode_thumbnail
from offmaps.offline.updates import ChainState
from offmaps.offline.updates.tiles import read_archive_chain_state, write_archive_chain_state

__all__ = [
    "AsyncDownloadPreplannedOfflineMapJob",
    "AsyncOfflineMapAreaManager",
    "AsyncPreplannedMapArea",
    "DownloadPreplannedOfflineMapJob",
    "DownloadPreplannedOfflineMapParameters",
    "OfflineMapAreaManager",
    "PreplannedMapArea",
    "PreplannedMapAreaItem",
    "PreplannedPackageItem",
    "PreplannedPackagingStatus",
    "PreplannedUpdateCapabilities",
    "PreplannedUpdateMode",
    "create_default_download_preplanned_offline_map_parameters",
    "download_preplanned_offline_map",
    "get_preplanned_map_areas",
]

Document = dict[str, Any]
Documents = list[dict[str, Any]]

MANIFEST_FOLDER = ".preplanned"
"""The hidden folder of a download directory the server's manifest is read into first, with
:data:`DOWNLOAD_MARKER`; it goes once the package is whole."""
DOWNLOAD_MARKER = "download.json"
"""Which area and package an unfinished download directory holds, so that a later job (another
process) continues it."""
_THUMBNAIL = re.compile(r"^thumbnail\.(png|jpe?g)$")
_ENDED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def _areas_path(map_id: str, area_id: str | None = None, tail: str = "") -> str:
    path = f"/api/maps/{map_id}/areas"
    if area_id is not None:
        path += f"/{area_id}"
    return path + tail


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _wire(value: Any) -> Any:
    """A value as JSON takes it: models dumped, enums by value, tuples as lists."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple | list):
        return [_wire(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _wire(v) for k, v in value.items()}
    return value


def _area_body(area: Any) -> Any:
    """``area`` as the API takes it: an :class:`Area`, a GeoJSON geometry or Feature (a mapping
    or an object with ``__geo_interface__``, such as a shapely geometry) or
    ``{"geometry": ...}``."""
    if isinstance(area, Area):
        return area.model_dump(mode="json")
    geo = getattr(area, "__geo_interface__", None)
    if geo is not None:
        area = geo
    if isinstance(area, Mapping) and "geometry" in area and area.get("type") in (None, "Feature"):
        return {"geometry": _wire(area["geometry"])}  # {"geometry": ...} or a GeoJSON Feature
    return {"geometry": _wire(area)}


def _thumbnail_body(thumbnail: bytes | str) -> str:
    if isinstance(thumbnail, bytes):
        try:
            return encode_thumbnail(thumbnail)
        except ValueError as exc:
            raise InvalidOfflineParametersError(f"thumbnail: {exc}") from None
    return thumbnail


def _checked(model: type[BaseModel], body: Document) -> Document:
    """``body`` once ``model`` (the server's own wire model) accepts it.

    Raises:
        InvalidOfflineParametersError: naming the first field that is wrong.
    """
    try:
        model.model_validate(body)
    except ValidationError as exc:
        raise InvalidOfflineParametersError(_first_problem(exc)) from None
    return body


# --- the author's side ---------------------------------------------------------------------


class OfflineMapAreaManager:
    """The preplanned map areas of one web map, for its author (ArcGIS API for Python's
    ``OfflineMapAreaManager``).

    Creating, changing, refreshing and deleting an area need ``maps:write`` and being the map's
    owner or an admin (``AccessDeniedError`` otherwise); reading them needs what reading the map
    needs. Every method raises the server's domain errors (``MapAreaNotFoundError``,
    ``MapAreaDeletedError`` for a deleted area, ``MapAreaBusyError`` while one is packaged).

    Args:
        portal: a signed-in server connection.
        map_id: the web map's id.
    """

    def __init__(self, portal: Portal, map_id: str) -> None:
        self.portal = portal
        self.map_id = map_id

    def create(
        self,
        *,
        title: str,
        bbox: tuple[float, float, float, float] | None = None,
        area: Any = None,
        bookmark: str | None = None,
        min_scale: float | None = None,
        max_scale: float | None = None,
        update_mode: PreplannedUpdateMode | str | None = None,
        refresh: str | None = None,
        description: str | None = None,
        overrides: Any = None,
        attachments: str | None = None,
        tile_format: str | None = None,
        thumbnail: bytes | str | None = None,
        wait: bool = False,
        poll_seconds: float = 0.5,
        on_progress: Progress | None = None,
    ) -> Document:
        """Create an area and start packaging it; its document (``id``, ``status``...).

        Args:
            title: one line of text.
            bbox: ``(west, south, east, north)`` in degrees; west > east crosses 180°.
            area: a polygon: an :class:`~offmaps.offline.parameters.Area`, a GeoJSON geometry
                in CRS84, or a shapely geometry in longitude/latitude.
            bookmark: the name of one of the web map's bookmarks.
            min_scale, max_scale: scale denominators; 0 for the layers' own.
            update_mode: how devices keep the package fresh (:class:`PreplannedUpdateMode`).
            refresh: ``never``, an interval such as ``1d``, or a cron expression, in UTC.
            description: any text.
            overrides: per-layer choices (``GenerateOfflineMapParameterOverrides`` or its JSON).
            attachments: ``include_all``, ``include_read_only``, ``include_editable`` or
                ``exclude``.
            tile_format: ``mbtiles`` (the default) or ``pmtiles``: the container of the
                package's tile archives.
            thumbnail: a PNG or JPEG image (bytes, or base64 text).
            wait: wait for the first packaging to end (see :meth:`wait`).

        Raises:
            InvalidAOIError: ``bbox`` is not an envelope (checked before sending).
            InvalidOfflineParametersError: the request is malformed (checked before sending:
                not exactly one of ``bbox``, ``area``, ``bookmark``; a bad schedule...), or the
                server refuses the area (outside the map, no such bookmark).
            AccessDeniedError: the caller does not own the map.
        """
        if bbox is not None:
            area_from_bbox(*bbox)  # its checks and messages, before anything is sent
        given: dict[str, Any] = {
            "title": title,
            "bbox": list(bbox) if bbox is not None else None,
            "area": _area_body(area) if area is not None else None,
            "bookmark": bookmark,
            "min_scale": min_scale,
            "max_scale": max_scale,
            "update_mode": update_mode,
            "refresh": refresh,
            "description": description,
            "overrides": overrides,
            "attachments": attachments,
            "tile_format": tile_format,
            "thumbnail": _thumbnail_body(thumbnail) if thumbnail is not None else None,
        }
        body = _checked(MapAreaRequest, {k: _wire(v) for k, v in given.items() if v is not None})
        created: Document = self.portal.request("POST", _areas_path(self.map_id), json=body)
        if wait:
            return self.wait(created, poll_seconds=poll_seconds, on_progress=on_progress)
        return created

    def list(self) -> Documents:
        """The map's areas, oldest first."""
        found: Documents = self.portal.request("GET", _areas_path(self.map_id))["areas"]
        return found

    def get(self, area_id: str) -> Document:
        """One area, with its newest package's files once it has one."""
        found: Document = self.portal.request("GET", _areas_path(self.map_id, area_id))
        return found

    def update(self, area_id: str, **changes: Any) -> Document:
        """Change an area (the fields of :meth:`create`); a new extent, scales, per-layer
        choices, attachments or update mode repackage it, the rest changes the area only.

        Raises:
            InvalidOfflineParametersError: the changes are malformed.
            MapAreaBusyError: a repackaging change while the area is being packaged.
        """
        if "area" in changes and changes["area"] is not None:
            changes["area"] = _area_body(changes["area"])
        if changes.get("thumbnail") is not None:
            changes["thumbnail"] = _thumbnail_body(changes["thumbnail"])
        body = _checked(MapAreaChanges, {k: _wire(v) for k, v in changes.items() if v is not None})
        found: Document = self.portal.request("PATCH", _areas_path(self.map_id, area_id), json=body)
        return found

    def modify_refresh_schedule(self, area_id: str, schedule: str) -> Document:
        """Set when the server refreshes an area: ``never``, an interval such as ``1d``, or a
        cron expression of five fields, in UTC."""
        return self.update(area_id, refresh=schedule)

    def refresh(
        self,
        area_id: str,
        *,
        wait: bool = False,
        poll_seconds: float = 0.5,
        on_progress: Progress | None = None,
    ) -> Document:
        """Package an area again now (its last package stays downloadable meanwhile).

        Raises:
            MapAreaBusyError: it is being packaged already.
        """
        started: Document = self.portal.request(
            "POST", _areas_path(self.map_id, area_id, "/refresh")
        )
        if wait:
            return self.wait(started, poll_seconds=poll_seconds, on_progress=on_progress)
        return started

    def delete(self, area_id: str) -> None:
        """Delete an area and its packages; devices asking for it learn it was deleted."""
        self.portal.request("DELETE", _areas_path(self.map_id, area_id))

    def list_packages(self, area_id: str) -> Documents:
        """The packages the server keeps of an area, oldest first (number, bytes, files)."""
        found: Documents = self.portal.request(
            "GET", _areas_path(self.map_id, area_id, "/packages")
        )["packages"]
        return found

    def wait(
        self,
        area: str | Mapping[str, Any],
        *,
        poll_seconds: float = 0.5,
        on_progress: Progress | None = None,
    ) -> Document:
        """Follow an area's packaging job to its end; the area's document then.

        Args:
            area: the area's id, or its document (as :meth:`create` and :meth:`refresh`
                return it).
            on_progress: called with the job's fraction done (0 to 1) and message.

        Raises:
            JobFailedError: the packaging failed (``reason`` says why; after a failed refresh
                the area's last package stays downloadable).
            JobCancelledError: the packaging job was cancelled.
        """
        document = dict(area) if isinstance(area, Mapping) else self.get(area)
        area_id = str(document["id"])
        job_id = document.get("job_id")
        job: Mapping[str, Any] = {}
        while job_id:
            try:
                job = self.portal.request("GET", f"/api/jobs/{job_id}")
            except JobNotFoundError:  # removed after OFFMAPS_JOB_KEEP_S: the area knows
                job = {}
                break
            if on_progress is not None:
                on_progress(float(job.get("progress", 0.0)), str(job.get("message", "")))
            if job.get("status") in _ENDED:
                break
            time.sleep(poll_seconds)
        document = self.get(area_id)
        if document["status"] == PackagingStatus.FAILED or job.get("status") == JobStatus.FAILED:
            reason = document.get("reason") or job.get("error") or job.get("message")
            kept = (
                f"; package {document['latest']} stays downloadable"
                if document.get("latest")
                else ""
            )
            raise JobFailedError(f"map area {area_id}: packaging failed: {reason}{kept}")
        if job.get("status") == JobStatus.CANCELLED:
            raise JobCancelledError(f"map area {area_id}: the packaging job was cancelled")
        return document


class AsyncOfflineMapAreaManager:
    """:class:`OfflineMapAreaManager` for asyncio code: every call runs its blocking
    counterpart in a worker thread (``asyncio.to_thread``), with the same results and errors."""

    def __init__(self, portal: Portal, map_id: str) -> None:
        self.manager = OfflineMapAreaManager(portal, map_id)

    async def create(self, **options: Any) -> Document:
        """See :meth:`OfflineMapAreaManager.create`."""
        return await asyncio.to_thread(lambda: self.manager.create(**options))

    async def list(self) -> Documents:
        """See :meth:`OfflineMapAreaManager.list`."""
        return await asyncio.to_thread(self.manager.list)

    async def get(self, area_id: str) -> Document:
        """See :meth:`OfflineMapAreaManager.get`."""
        return await asyncio.to_thread(self.manager.get, area_id)

    async def update(self, area_id: str, **changes: Any) -> Document:
        """See :meth:`OfflineMapAreaManager.update`."""
        return await asyncio.to_thread(lambda: self.manager.update(area_id, **changes))

    async def modify_refresh_schedule(self, area_id: str, schedule: str) -> Document:
        """See :meth:`OfflineMapAreaManager.modify_refresh_schedule`."""
        return await asyncio.to_thread(self.manager.modify_refresh_schedule, area_id, schedule)

    async def refresh(self, area_id: str, **options: Any) -> Document:
        """See :meth:`OfflineMapAreaManager.refresh`."""
        return await asyncio.to_thread(lambda: self.manager.refresh(area_id, **options))

    async def delete(self, area_id: str) -> None:
        """See :meth:`OfflineMapAreaManager.delete`."""
        await asyncio.to_thread(self.manager.delete, area_id)

    async def list_packages(self, area_id: str) -> Documents:
        """See :meth:`OfflineMapAreaManager.list_packages`."""
        return await asyncio.to_thread(self.manager.list_packages, area_id)

    async def wait(self, area: str | Mapping[str, Any], **options: Any) -> Document:
        """See :meth:`OfflineMapAreaManager.wait`."""
        return await asyncio.to_thread(lambda: self.manager.wait(area, **options))


# --- the device's side ---------------------------------------------------------------------


class PreplannedPackagingStatus(StrEnum):
    """Where an area's packaging is, as a device sees it (ArcGIS
    ``PreplannedPackagingStatus``): ``unknown`` until the area is loaded."""

    UNKNOWN = "unknown"
    PACKAGING = "packaging"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PreplannedPackageItem:
    """One file of an area's package."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class PreplannedMapAreaItem:
    """What lists of areas show (ArcGIS ``PreplannedMapArea.portalItem``).

    Attributes:
        title: the area's title.
        description: its description.
        thumbnail: the package's thumbnail image (PNG or JPEG), once the area is loaded and
            has a package; ``None`` before, or when the user may not download packages.
    """

    title: str
    description: str
    thumbnail: bytes | None = None


@dataclass(frozen=True, slots=True)
class PreplannedUpdateCapabilities:
    """How a downloaded package of an area can be kept fresh, from its update mode (ArcGIS
    ``OfflineMapUpdateCapabilities``).

    Attributes:
        supports_sync_with_feature_services: the mode syncs with the feature services.
        supports_scheduled_updates_to_features: the mode brings the update files refreshes
            write (features and tiles).
        supports_upload_new_features: the mode lets the device upload features it adds.
    """

    supports_sync_with_feature_services: bool
    supports_scheduled_updates_to_features: bool
    supports_upload_new_features: bool

    @classmethod
    def for_mode(cls, mode: PreplannedUpdateMode) -> Self:
        """The capabilities of an update mode."""
        mode = PreplannedUpdateMode(mode)
        scheduled = mode in (
            PreplannedUpdateMode.DOWNLOAD_SCHEDULED_UPDATES,
            PreplannedUpdateMode.DOWNLOAD_SCHEDULED_UPDATES_AND_UPLOAD_NEW_FEATURES,
        )
        return cls(
            supports_sync_with_feature_services=(
                mode is PreplannedUpdateMode.SYNC_WITH_FEATURE_SERVICES
            ),
            supports_scheduled_updates_to_features=scheduled,
            supports_upload_new_features=(
                mode is PreplannedUpdateMode.DOWNLOAD_SCHEDULED_UPDATES_AND_UPLOAD_NEW_FEATURES
            ),
        )


class PreplannedMapArea:
    """One preplanned map area of a web map, as a device sees it (ArcGIS
    ``PreplannedMapArea``): listed by ``OfflineMapTask.get_preplanned_map_areas()``, then
    :meth:`load` ed to learn its packaging status and its package's files.

    Args:
        portal: the server connection.
        map_id: the web map's id.
        document: the area as the server listed it.
    """

    def __init__(self, portal: Portal, map_id: str, document: Mapping[str, Any]) -> None:
        self.portal = portal
        self.map_id = map_id
        self._document: Document = dict(document)
        self._loaded = False
        self._thumbnail: bytes | None = None

    def __repr__(self) -> str:
        return f"PreplannedMapArea({self.id!r}, {self.portal_item.title!r})"

    @property
    def id(self) -> str:
        """The area's id (32 hexadecimal digits)."""
        return str(self._document["id"])

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` has run."""
        return self._loaded

    @property
    def document(self) -> Document:
        """The area as the server last gave it."""
        return dict(self._document)

    def load(self) -> Self:
        """Fetch the area's state, its newest package's files and its thumbnail; again to
        refresh them.

        Raises:
            MapAreaDeletedError: the author deleted the area.
            MapAreaNotFoundError: there is no such area (or the map is not visible).
        """
        document: Document = self.portal.request("GET", _areas_path(self.map_id, self.id))
        self._document = document
        self._thumbnail = self._fetch_thumbnail()
        self._loaded = True
        return self

    def _fetch_thumbnail(self) -> bytes | None:
        entry = next(
            (f for f in self._files() if _THUMBNAIL.match(str(f["path"]))),
            None,
        )
        if entry is None:
            return None
        try:
            with self.portal.stream(str(entry["href"]), {}) as response:
                if response.status_code in (401, 403):  # may read the map, not download
                    return None
                if response.status_code != 200:
                    raise DownloadError(
                        f"{entry['path']}: HTTP {response.status_code} from the server"
                    )
                data = bytes(response.read())
        except httpx.HTTPError as exc:
            raise DownloadError(f"{entry['path']}: the download failed ({exc})") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DownloadError(f"{entry['path']}: the file does not match its SHA-256")
        return data

    def _files(self) -> Documents:
        package = self._document.get("package") or {}
        files: Documents = list(package.get("files", []))
        return files

    @property
    def area_of_interest(self) -> Area:
        """Where the area is: a GeoJSON Polygon or MultiPolygon in CRS84."""
        return Area(geometry=self._document["area"])

    @property
    def portal_item(self) -> PreplannedMapAreaItem:
        """The area's title, description and (once loaded) thumbnail."""
        return PreplannedMapAreaItem(
            title=str(self._document.get("title", "")),
            description=str(self._document.get("description") or ""),
            thumbnail=self._thumbnail,
        )

    @property
    def packaging_status(self) -> PreplannedPackagingStatus:
        """``unknown`` until :meth:`load`; then ``packaging``, ``complete`` or ``failed``."""
        if not self._loaded:
            return PreplannedPackagingStatus.UNKNOWN
        return PreplannedPackagingStatus(str(self._document["status"]))

    @property
    def reason(self) -> str | None:
        """Why the last packaging failed, if it did."""
        reason = self._document.get("reason")
        return str(reason) if reason else None

    @property
    def package_items(self) -> list[PreplannedPackageItem]:
        """The newest package's files and sizes, once loaded and packaged (else empty)."""
        return [
            PreplannedPackageItem(str(f["path"]), int(f["size"]), str(f["sha256"]))
            for f in self._files()
        ]

    @property
    def update_mode(self) -> PreplannedUpdateMode:
        """How the author means devices to keep the package fresh."""
        return PreplannedUpdateMode(str(self._document["update_mode"]))

    @property
    def update_capabilities(self) -> PreplannedUpdateCapabilities:
        """What the area's update mode offers a downloaded package."""
        return PreplannedUpdateCapabilities.for_mode(self.update_mode)

    def package(self, number: int) -> Document:
        """Package ``number`` of the area, if the server still keeps it.

        Raises:
            MapAreaNotFoundError: it keeps that package no more.
            MapAreaDeletedError: the author deleted the area.
        """
        found: Document = self.portal.request(
            "GET", _areas_path(self.map_id, self.id, f"/packages/{int(number)}")
        )
        return found

    def latest_package(self) -> Document:
        """The newest package (number, files with their ``href``) as the server has it now.

        Raises:
            MapAreaBusyError: no package is ready (still packaging, or the packaging failed).
            MapAreaDeletedError: the author deleted the area.
        """
        found: Document = self.portal.request(
            "GET", _areas_path(self.map_id, self.id, "/packages/latest")
        )
        return found


class AsyncPreplannedMapArea:
    """:class:`PreplannedMapArea` for asyncio code (:meth:`load` in a worker thread)."""

    def __init__(self, area: PreplannedMapArea) -> None:
        self.area = area

    @property
    def id(self) -> str:
        """See :attr:`PreplannedMapArea.id`."""
        return self.area.id

    @property
    def area_of_interest(self) -> Area:
        """See :attr:`PreplannedMapArea.area_of_interest`."""
        return self.area.area_of_interest

    @property
    def portal_item(self) -> PreplannedMapAreaItem:
        """See :attr:`PreplannedMapArea.portal_item`."""
        return self.area.portal_item

    @property
    def packaging_status(self) -> PreplannedPackagingStatus:
        """See :attr:`PreplannedMapArea.packaging_status`."""
        return self.area.packaging_status

    @property
    def package_items(self) -> list[PreplannedPackageItem]:
        """See :attr:`PreplannedMapArea.package_items`."""
        return self.area.package_items

    @property
    def update_capabilities(self) -> PreplannedUpdateCapabilities:
        """See :attr:`PreplannedMapArea.update_capabilities`."""
        return self.area.update_capabilities

    async def load(self) -> Self:
        """See :meth:`PreplannedMapArea.load`."""
        await asyncio.to_thread(self.area.load)
        return self


def get_preplanned_map_areas(portal: Portal, map_id: str) -> list[PreplannedMapArea]:
    """The preplanned map areas of a web map, oldest first, not loaded yet."""
    listed = portal.request("GET", _areas_path(map_id))["areas"]
    return [PreplannedMapArea(portal, map_id, document) for document in listed]


@dataclass
class DownloadPreplannedOfflineMapParameters:
    """How a device downloads an area's package (ArcGIS
    ``DownloadPreplannedOfflineMapParameters``); change the fields before downloading.

    Attributes:
        preplanned_map_area: the area.
        continue_on_errors: take a package some layers or tables of which failed to package
            (they are the result's ``layer_errors`` and ``table_errors``); ``False`` refuses it.
        include_basemap: download the basemap's tile archives; ``False`` leaves them out.
        reference_basemap_directory: the folder of a tile archive already on the device, used
            as the basemap instead of the package's (whose files are then not downloaded).
        reference_basemap_filename: that archive's file name; empty for none.
        update_mode: the area's update mode (the author's; for information).
    """

    preplanned_map_area: PreplannedMapArea
    continue_on_errors: bool = True
    include_basemap: bool = True
    reference_basemap_directory: str = ""
    reference_basemap_filename: str = ""
    update_mode: PreplannedUpdateMode = field(
        default=PreplannedUpdateMode.SYNC_WITH_FEATURE_SERVICES
    )


def create_default_download_preplanned_offline_map_parameters(
    area: PreplannedMapArea | AsyncPreplannedMapArea,
) -> DownloadPreplannedOfflineMapParameters:
    """Parameters to download ``area``'s package: everything, with the area's update mode."""
    if isinstance(area, AsyncPreplannedMapArea):
        area = area.area
    return DownloadPreplannedOfflineMapParameters(area, update_mode=area.update_mode)


def download_preplanned_offline_map(
    parameters: DownloadPreplannedOfflineMapParameters, download_directory: Path | str
) -> DownloadPreplannedOfflineMapJob:
    """A job that downloads an area's newest package into ``download_directory`` (created if
    missing; it must be empty if it exists). Call ``start()`` or ``wait()``."""
    return DownloadPreplannedOfflineMapJob(parameters, Path(download_directory))


class DownloadPreplannedOfflineMapJob:
    """Downloads an area's package (ArcGIS ``DownloadPreplannedOfflineMapJob``).

    ``start()`` checks the download directory and the reference basemap and picks the area's
    newest package (a later refresh does not change what this job downloads); ``wait()``
    downloads it and opens it; ``cancel()`` removes what was downloaded; ``resume()`` continues
    an interrupted download where it stopped (partial files are completed with HTTP ranges).
    """

    def __init__(
        self, parameters: DownloadPreplannedOfflineMapParameters, download_directory: Path
    ) -> None:
        self.parameters = parameters
        self.download_directory = download_directory
        self.status = JobStatus.NOT_STARTED
        self.progress = 0.0
        self.message = ""
        self.package: Document | None = None
        """The package being downloaded (number, files), once started."""
        self.result: GenerateOfflineMapResult | None = None
        self.again = "resume() continues it"
        """How the caller goes on after an interrupted download, as errors say it."""
        self._created_directory = False

    @property
    def portal(self) -> Portal:
        """The server connection."""
        return self.parameters.preplanned_map_area.portal

    def _unfinished(self) -> int | None:
        """The package number of an unfinished download of this area in the directory."""
        marker = self.download_directory / MANIFEST_FOLDER / DOWNLOAD_MARKER
        try:
            held = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        area = self.parameters.preplanned_map_area
        if not isinstance(held, dict) or held.get("area_id") != area.id:
            return None
        number = held.get("package")
        return number if isinstance(number, int) else None

    def start(self) -> None:
        """Check the parameters on the device, then pick the area's newest package.

        A directory holding an unfinished download of the same area (an earlier job's, in
        this process or another) is continued, with the package that download started.

        Raises:
            InvalidOfflineParametersError: the download directory is not empty (and holds no
                unfinished download of this area), or the reference basemap is missing or does
                not cover the area.
            MapAreaBusyError: the area has no package yet (still packaging, or it failed).
            MapAreaDeletedError: the author deleted the area.
            JobFailedError: ``continue_on_errors`` is off and some layer failed to package.
        """
        parameters = self.parameters
        area = parameters.preplanned_map_area
        directory = self.download_directory
        unfinished = self._unfinished()
        if unfinished is None:
            check_download_directory(directory)
        check_reference_basemap(
            parameters.reference_basemap_directory,
            parameters.reference_basemap_filename,
            area.area_of_interest,
        )
        package = area.latest_package() if unfinished is None else area.package(unfinished)
        failed = {**package.get("layer_errors", {}), **package.get("table_errors", {})}
        if failed and not parameters.continue_on_errors:
            named = "; ".join(f"{layer}: {reason}" for layer, reason in sorted(failed.items()))
            raise JobFailedError(
                f"map area {area.id}: package {package['number']} lacks layers ({named}); "
                "set continue_on_errors to take it anyway"
            )
        if not directory.exists():
            directory.mkdir(parents=True)
            self._created_directory = True
        if unfinished is None:
            marker = {"area_id": area.id, "package": int(package["number"])}
            staged = directory / MANIFEST_FOLDER
            try:
                staged.mkdir(exist_ok=True)
                (staged / DOWNLOAD_MARKER).write_text(json.dumps(marker), encoding="utf-8")
            except OSError as exc:
                raise DownloadError(
                    f"cannot write to {directory} ({exc.strerror or exc})"
                ) from None
        self.package = package
        self.status = JobStatus.RUNNING
        self.message = f"package {package['number']} of map area {area.id}"

    def wait(self, *, on_progress: Progress | None = None) -> GenerateOfflineMapResult:
        """Download the package (starting the job if needed) and open it.

        Raises:
            DownloadError: a file could not be downloaded intact; ``resume()`` continues.
            JobCancelledError: the job was cancelled.
        """
        if self.status is JobStatus.CANCELLED:
            raise JobCancelledError("the download was cancelled")
        if self.status is JobStatus.NOT_STARTED:
            self.start()
        if self.result is not None:
            return self.result
        return self._download(on_progress)

    def resume(self, *, on_progress: Progress | None = None) -> GenerateOfflineMapResult:
        """Continue an interrupted download (partial files are kept and completed)."""
        return self.wait(on_progress=on_progress)

    def cancel(self) -> None:
        """Stop, and remove what was downloaded."""
        remove_download(self.download_directory, created=self._created_directory)
        self.status = JobStatus.CANCELLED

    def _download(self, on_progress: Progress | None) -> GenerateOfflineMapResult:
        assert self.package is not None
        self.status = JobStatus.DOWNLOADING
        directory = self.download_directory
        files: Documents = list(self.package["files"])
        manifest_entry = next((f for f in files if f["path"] == MANIFEST_NAME), None)
        if manifest_entry is None:
            raise PackageError(f"package {self.package['number']} lists no {MANIFEST_NAME}")
        staged = directory / MANIFEST_FOLDER
        total = sum(int(f["size"]) for f in files) or 1
        again = self.again

        def downloaded(done: int) -> Progress:
            def report(fraction: float, message: str) -> None:
                self.progress = min(1.0, (done + fraction * rest) / total)
                self.message = message
                if on_progress is not None:
                    on_progress(self.progress, message)

            return report

        if not (directory / MANIFEST_NAME).exists():
            staged_entry = {**manifest_entry, "path": f"{MANIFEST_FOLDER}/{MANIFEST_NAME}"}
            rest = int(manifest_entry["size"])
            fetch_package_files(
                self.portal, [staged_entry], directory, again=again, on_progress=downloaded(0)
            )
            manifest = read_manifest(staged)
            manifest, omitted = self._device_manifest(manifest)
            wanted = {entry.path for entry in manifest.files}
            others = [f for f in files if f["path"] in wanted]
            rest = sum(int(f["size"]) for f in others)
            fetch_package_files(
                self.portal,
                others,
                directory,
                again=again,
                on_progress=downloaded(int(manifest_entry["size"])),
            )
            if manifest.reference_basemap is None and not omitted:
                (staged / MANIFEST_NAME).replace(directory / MANIFEST_NAME)  # the server's bytes
            else:
                write_manifest(directory, manifest)
            shutil.rmtree(staged, ignore_errors=True)
        else:  # whole already: an earlier job stopped before tidying up
            omitted = self._omitted(read_manifest(directory))
            shutil.rmtree(staged, ignore_errors=True)
        self._make_own(directory)
        package = MobileMapPackage(directory).load()
        self.result = GenerateOfflineMapResult(
            mobile_map_package=package,
            offline_map=package.maps[0],
            layer_errors=dict(self.package.get("layer_errors", {})),
            table_errors=dict(self.package.get("table_errors", {})),
            omitted=omitted,
        )
        self.status = JobStatus.SUCCEEDED
        self.progress = 1.0
        self.message = f"downloaded package {self.package['number']}"
        if on_progress is not None:
            on_progress(self.progress, self.message)
        return self.result

    def _make_own(self, directory: Path) -> None:
        """Ready the package for the area's update mode: replicas of this device's own for
        ``sync_with_feature_services`` and for uploading new features (registered with the
        server, then adopted); for scheduled updates, each file's place in its chain
        (``chains`` of the package), which its first update file is checked against. Done
        again, it does nothing more."""
        assert self.package is not None
        area = self.parameters.preplanned_map_area
        capabilities = area.update_capabilities
        own = (
            capabilities.supports_sync_with_feature_services
            or capabilities.supports_upload_new_features
        )
        if own and not read_manifest(directory).replicas:
            answer = self.portal.request(
                "POST",
                f"/api/maps/{area.document['map_id']}/areas/{area.id}/replicas",
                json={"package": int(self.package["number"])},
            )
            replicas = [PackageReplica.model_validate(found) for found in answer["replicas"]]
            adopt_replicas(directory, replicas)
        if not capabilities.supports_scheduled_updates_to_features:
            return
        epoch, number = int(self.package["epoch"]), int(self.package["number"])
        written = []
        for file, head in dict(self.package.get("chains", {})).items():
            path = directory / file
            if path.is_file() and read_archive_chain_state(path) is None:
                write_archive_chain_state(path, ChainState(area.id, epoch, number, head))
                written.append(file)
        if written:  # the files changed: the manifest lists them as they are now
            write_manifest(directory, read_manifest(directory).relisted(directory, written))

    def _basemap_reason(self) -> str | None:
        if self.parameters.reference_basemap_filename:
            return "a basemap on the device is used instead"
        if not self.parameters.include_basemap:
            return "the basemap is not included"
        return None

    def _omitted(self, manifest: PackageManifest) -> dict[str, str]:
        reason = self._basemap_reason()
        if reason is None:
            return {}
        present = {layer.id for layer in manifest.layers}
        return {layer_id: reason for layer_id in _basemap_ids(manifest) if layer_id not in present}

    def _device_manifest(self, manifest: PackageManifest) -> tuple[PackageManifest, dict[str, str]]:
        """The manifest as this device keeps it: without the basemap's layers and files when
        they are left out, and naming the reference basemap when there is one."""
        reason = self._basemap_reason()
        if reason is None:
            return manifest, {}
        basemap = _basemap_ids(manifest)
        kept = [layer for layer in manifest.layers if layer.id not in basemap]
        used = {layer.file for layer in [*kept, *manifest.tables] if layer.file is not None}
        used |= {replica.file for replica in manifest.replicas}
        if manifest.item.thumbnail is not None:
            used.add(manifest.item.thumbnail)
        dropped = {
            layer.file
            for layer in manifest.layers
            if layer.id in basemap and layer.file is not None and layer.file not in used
        }
        parameters = self.parameters
        reference = (
            ReferenceBasemap(
                directory=parameters.reference_basemap_directory or ".",
                filename=parameters.reference_basemap_filename,
            )
            if parameters.reference_basemap_filename
            else None
        )
        document = manifest.model_dump(mode="json")
        document.update(
            layers=[layer.model_dump(mode="json") for layer in kept],
            files=[f.model_dump(mode="json") for f in manifest.files if f.path not in dropped],
            reference_basemap=reference.model_dump(mode="json") if reference else None,
        )
        try:
            changed = PackageManifest.model_validate(document)
        except ValidationError as exc:
            raise PackageError(f"{MANIFEST_NAME}: {_first_problem(exc)}") from None
        omitted = {layer.id: reason for layer in manifest.layers if layer.id in basemap}
        return changed, omitted


def _basemap_ids(manifest: PackageManifest) -> set[str]:
    """The ids of the web map's basemap layers (the manifest's ``map`` is the web map)."""
    basemap = manifest.map.get("basemap") or {}
    return {str(layer["id"]) for layer in basemap.get("layers", []) if "id" in layer}


class AsyncDownloadPreplannedOfflineMapJob:
    """:class:`DownloadPreplannedOfflineMapJob` for asyncio code (work in a worker thread)."""

    def __init__(self, job: DownloadPreplannedOfflineMapJob) -> None:
        self.job = job

    @property
    def status(self) -> JobStatus:
        """Where the job is."""
        return self.job.status

    @property
    def progress(self) -> float:
        """Fraction done, 0 to 1."""
        return self.job.progress

    @property
    def message(self) -> str:
        """What is being done."""
        return self.job.message

    async def start(self) -> None:
        """See :meth:`DownloadPreplannedOfflineMapJob.start`."""
        await asyncio.to_thread(self.job.start)

    async def wait(self, *, on_progress: Progress | None = None) -> GenerateOfflineMapResult:
        """See :meth:`DownloadPreplannedOfflineMapJob.wait`."""
        return await asyncio.to_thread(lambda: self.job.wait(on_progress=on_progress))

    async def resume(self, *, on_progress: Progress | None = None) -> GenerateOfflineMapResult:
        """See :meth:`DownloadPreplannedOfflineMapJob.resume`."""
        return await asyncio.to_thread(lambda: self.job.resume(on_progress=on_progress))

    async def cancel(self) -> None:
        """See :meth:`DownloadPreplannedOfflineMapJob.cancel`."""
        await asyncio.to_thread(self.job.cancel)
