"""On-demand offline maps from the SDK: ``OfflineMapTask`` and ``GenerateOfflineMapJob``.

The names follow ArcGIS's Runtime SDK in snake_case. Parameters and overrides are prepared
locally from the web map document (no round trip); capabilities, estimates and the generate job
are the server's (``/api/maps/{id}/offline/...``). A job's files are downloaded whole, each one
resumable with HTTP ranges and checked against its SHA-256; the manifest comes last, so a
download directory holds a package only when it is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offmaps.client.downloads import fetch_file
from offmaps.client.portal import Portal
from offmaps.containers import open_reader
from offmaps.errors import (
    ContainerError,
    InvalidOfflineParametersError,
    JobCancelledError,
    JobFailedError,
    OffmapsError,
)
from offmaps.offline.package import MANIFEST_NAME, MobileMapPackage, OfflineMap
from offmaps.offline.parameters import (
    Area,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    OfflineMapCapabilities,
    OfflineMapEstimate,
)
from offmaps.offline.plan import (
    create_default_overrides,
    create_default_parameters,
)
from offmaps.schemas import WebMap
from offmaps.schemas.jobs import JobStatus

if TYPE_CHECKING:  # at run time, the preplanned methods import offmaps.client.areas
    from offmaps.client.areas import (
        AsyncDownloadPreplannedOfflineMapJob,
        AsyncPreplannedMapArea,
        DownloadPreplannedOfflineMapJob,
        DownloadPreplannedOfflineMapParameters,
        PreplannedMapArea,
    )

__all__ = [
    "AsyncGenerateOfflineMapJob",
    "AsyncOfflineMapTask",
    "GenerateOfflineMapJob",
    "GenerateOfflineMapResult",
    "JobStatus",
    "OfflineMapTask",
    "PortalItem",
]

Progress = Callable[[float, str], None]


@dataclass(frozen=True, slots=True)
class PortalItem:
    """A web map on a server."""

    portal: Portal
    map_id: str


@dataclass
class GenerateOfflineMapResult:
    """What a finished job made."""

    mobile_map_package: MobileMapPackage
    offline_map: OfflineMap
    layer_errors: dict[str, str] = field(default_factory=dict)
    table_errors: dict[str, str] = field(default_factory=dict)
    omitted: dict[str, str] = field(default_factory=dict)

    @property
    def has_errors(self) -> bool:
        """Whether some layer or table failed."""
        return bool(self.layer_errors or self.table_errors)


class OfflineMapTask:
    """Takes one web map offline (ArcGIS ``OfflineMapTask``).

    Args:
        item: the web map: a :class:`PortalItem`.
    """

    def __init__(self, item: PortalItem) -> None:
        self.item = item
        self._webmap: WebMap | None = None

    @property
    def webmap(self) -> WebMap:
        """The web map document (fetched once)."""
        if self._webmap is None:
            self._webmap = WebMap.model_validate(self.item.portal.get_map(self.item.map_id))
        return self._webmap

    def _path(self, tail: str) -> str:
        return f"/api/maps/{self.item.map_id}/offline/{tail}"

    def get_offline_map_capabilities(
        self, parameters: GenerateOfflineMapParameters | None = None
    ) -> OfflineMapCapabilities:
        """Per layer and table, whether it can be taken offline and why not."""
        body = parameters.model_dump(mode="json") if parameters is not None else None
        answer = self.item.portal.request("POST", self._path("capabilities"), json=body)
        answer.pop("has_errors", None)
        return OfflineMapCapabilities.model_validate(answer)

    def create_default_generate_offline_map_parameters(
        self, area_of_interest: Area, min_scale: float = 0, max_scale: float = 0
    ) -> GenerateOfflineMapParameters:
        """Parameters with the author's offline settings (no round trip)."""
        return create_default_parameters(self.webmap, area_of_interest, min_scale, max_scale)

    def create_generate_offline_map_parameter_overrides(
        self, parameters: GenerateOfflineMapParameters
    ) -> GenerateOfflineMapParameterOverrides:
        """Per-layer parameters to edit before generating (no round trip)."""
        return create_default_overrides(self.webmap, parameters)

    def estimate_offline_map(
        self,
        parameters: GenerateOfflineMapParameters,
        overrides: GenerateOfflineMapParameterOverrides | None = None,
    ) -> OfflineMapEstimate:
        """Tiles, rows and bytes per layer, before any work starts."""
        answer = self.item.portal.request(
            "POST", self._path("estimate"), json=_body(parameters, overrides)
        )
        for total in ("bytes", "tiles", "features"):
            answer.pop(total, None)
        return OfflineMapEstimate.model_validate(answer)

    def generate_offline_map(
        self,
        parameters: GenerateOfflineMapParameters,
        download_directory: Path | str,
        overrides: GenerateOfflineMapParameterOverrides | None = None,
    ) -> GenerateOfflineMapJob:
        """A job that makes the offline map and downloads it into ``download_directory``
        (created if missing; it must be empty if it exists). Call ``start()``."""
        return GenerateOfflineMapJob(self, parameters, Path(download_directory), overrides)

    # preplanned map areas: the work is offmaps.client.areas's (docs/preplanned.md)

    def get_preplanned_map_areas(self) -> list[PreplannedMapArea]:
        """The map's preplanned map areas, oldest first; ``load()`` each to learn its state."""
        from offmaps.client import areas  # noqa: PLC0415 - it imports this module

        return areas.get_preplanned_map_areas(self.item.portal, self.item.map_id)

    def create_default_download_preplanned_offline_map_parameters(
        self, area: PreplannedMapArea
    ) -> DownloadPreplannedOfflineMapParameters:
        """Parameters to download ``area``'s package (no round trip)."""
        from offmaps.client import areas  # noqa: PLC0415

        return areas.create_default_download_preplanned_offline_map_parameters(area)

    def download_preplanned_offline_map(
        self, parameters: DownloadPreplannedOfflineMapParameters, download_directory: Path | str
    ) -> DownloadPreplannedOfflineMapJob:
        """A job that downloads an area's package into ``download_directory`` (created if
        missing; it must be empty if it exists). Call ``start()`` or ``wait()``."""
        from offmaps.client import areas  # noqa: PLC0415

        return areas.download_preplanned_offline_map(parameters, download_directory)


def _body(
    parameters: GenerateOfflineMapParameters,
    overrides: GenerateOfflineMapParameterOverrides | None,
) -> dict[str, Any]:
    return {
        "parameters": parameters.model_dump(mode="json"),
        "overrides": overrides.model_dump(mode="json") if overrides is not None else None,
    }


class GenerateOfflineMapJob:
    """Generates an offline map on the server and downloads it (ArcGIS ``GenerateOfflineMapJob``).

    ``start()`` checks the download directory and the reference basemap and starts the server
    job; ``wait()`` follows it, reporting progress, then downloads and opens the package;
    ``cancel()`` stops it and removes what was downloaded; ``resume()`` continues an
    interrupted download where it stopped.
    """

    def __init__(
        self,
        task: OfflineMapTask,
        parameters: GenerateOfflineMapParameters,
        download_directory: Path,
        overrides: GenerateOfflineMapParameterOverrides | None,
    ) -> None:
        self.task = task
        self.parameters = parameters
        self.download_directory = download_directory
        self.overrides = overrides
        self.status = JobStatus.NOT_STARTED
        self.progress = 0.0
        self.message = ""
        self.server_job: dict[str, Any] | None = None
        self.result: GenerateOfflineMapResult | None = None
        self._created_directory = False

    @property
    def portal(self) -> Portal:
        """The server connection."""
        return self.task.item.portal

    def start(self) -> None:
        """Check the parameters on the device, then start the server job.

        Raises:
            InvalidOfflineParametersError: the download directory is not empty, or the reference
                basemap is missing or does not cover the area.
            ExportLimitError: a layer would export more tiles than its author allows.
        """
        directory = self.download_directory
        check_download_directory(directory)
        check_reference_basemap(
            self.parameters.reference_basemap_directory,
            self.parameters.reference_basemap_filename,
            self.parameters.area_of_interest,
        )
        if not directory.exists():
            directory.mkdir(parents=True)
            self._created_directory = True
        try:
            self.server_job = self.portal.request(
                "POST",
                self.task._path("jobs"),
                json=_body(self.parameters, self.overrides),
            )
        except BaseException:
            self._remove_download()
            raise
        self.status = JobStatus.RUNNING

    def refresh(self) -> dict[str, Any]:
        """The server job's current state; updates ``progress`` and ``message``."""
        if self.server_job is None:
            raise JobFailedError("the job was not started")
        self.server_job = self.portal.request("GET", f"/api/jobs/{self.server_job['id']}")
        self.progress = 0.9 * float(self.server_job["progress"])
        self.message = str(self.server_job["message"])
        return self.server_job

    def wait(
        self, *, poll_seconds: float = 0.5, on_progress: Progress | None = None
    ) -> GenerateOfflineMapResult:
        """Follow the job to its end, download the package and open it.

        Raises:
            JobFailedError, JobCancelledError: the server job did not succeed.
            DownloadError: a file could not be downloaded intact; ``resume()`` continues.
        """
        if self.status is JobStatus.NOT_STARTED:
            self.start()
        while True:
            job = self.refresh()
            if on_progress is not None:
                on_progress(self.progress, self.message)
            if job["status"] == JobStatus.SUCCEEDED:
                break
            if job["status"] == JobStatus.CANCELLED:
                self.status = JobStatus.CANCELLED
                self._remove_download()
                raise JobCancelledError("the job was cancelled")
            if job["status"] == JobStatus.FAILED:
                self.status = JobStatus.FAILED
                self._remove_download()
                raise JobFailedError(str(job.get("error") or job["message"]))
            time.sleep(poll_seconds)
        return self._download(on_progress)

    def resume(self, *, on_progress: Progress | None = None) -> GenerateOfflineMapResult:
        """Continue an interrupted download (partial files are kept and completed)."""
        if self.server_job is None or self.server_job.get("status") != JobStatus.SUCCEEDED:
            return self.wait(on_progress=on_progress)
        return self._download(on_progress)

    def _download(self, on_progress: Progress | None) -> GenerateOfflineMapResult:
        assert self.server_job is not None
        self.status = JobStatus.DOWNLOADING
        result = self.server_job["result"]

        def downloaded(fraction: float, message: str) -> None:
            self.progress, self.message = 0.9 + 0.1 * fraction, message
            if on_progress is not None:
                on_progress(self.progress, self.message)

        fetch_package_files(
            self.portal,
            result["files"],
            self.download_directory,
            again="resume() continues it",
            on_progress=downloaded,
        )
        package = MobileMapPackage(self.download_directory).load()
        self.result = GenerateOfflineMapResult(
            mobile_map_package=package,
            offline_map=package.maps[0],
            layer_errors=dict(result.get("layer_errors", {})),
            table_errors=dict(result.get("table_errors", {})),
            omitted=dict(result.get("omitted", {})),
        )
        self.status = JobStatus.SUCCEEDED
        self.progress = 1.0
        return self.result

    def cancel(self) -> None:
        """Stop the job and remove what was downloaded."""
        if self.server_job is not None and self.status in (
            JobStatus.RUNNING,
            JobStatus.DOWNLOADING,
        ):
            # the job may have ended meanwhile: then there is nothing to cancel
            with contextlib.suppress(OffmapsError):
                self.portal.request("DELETE", f"/api/jobs/{self.server_job['id']}")
        self._remove_download()
        self.status = JobStatus.CANCELLED

    def _remove_download(self) -> None:
        remove_download(self.download_directory, created=self._created_directory)


# --- the download half, shared with preplanned areas (client/areas.py) ---------------------------


def check_download_directory(directory: Path) -> None:
    """Refuse a download directory that exists and is not empty.

    Raises:
        InvalidOfflineParametersError: it is a file, or a folder with something in it.
    """
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InvalidOfflineParametersError(
            f"{directory}: the download directory must be empty or not exist"
        )


def check_reference_basemap(directory: str | None, filename: str | None, area: Area) -> None:
    """Check that the device's own basemap (when one is named) is a tile archive covering
    ``area``.

    Raises:
        InvalidOfflineParametersError: it is missing, not a tile archive, or does not cover it.
    """
    if not filename:
        return
    path = Path(directory or ".") / filename
    if not path.is_file():
        raise InvalidOfflineParametersError(f"{path}: no such reference basemap on this device")
    try:
        with open_reader(str(path)) as reader:
            bounds = reader.metadata.bounds
    except ContainerError as exc:
        raise InvalidOfflineParametersError(f"{path}: not a tile archive ({exc})") from None
    wanted = area.aoi().to_wgs84().bounds
    if bounds is not None and not (
        bounds.west <= wanted[0] and bounds.south <= wanted[1]
        and bounds.east >= wanted[2] and bounds.north >= wanted[3]
    ):  # fmt: skip
        raise InvalidOfflineParametersError(
            f"{path}: the reference basemap covers {tuple(bounds)}, not the whole area "
            f"{tuple(round(v, 6) for v in wanted)}"
        )


def fetch_package_files(
    portal: Portal,
    files: Sequence[Mapping[str, Any]],
    directory: Path,
    *,
    again: str,
    on_progress: Progress | None = None,
) -> None:
    """Download a package's files into ``directory``, the manifest last, each resumable and
    checked (:func:`offmaps.client.downloads.fetch_file`); after each file, ``on_progress``
    gets the fraction of the bytes done and what was done.

    Raises:
        DownloadError: a file could not be downloaded intact; calling again continues.
    """
    ordered = sorted(files, key=lambda f: f["path"] == MANIFEST_NAME)
    total = sum(int(f["size"]) for f in ordered) or 1
    done = 0
    for entry in ordered:
        fetch_file(portal, entry, directory, again=again)
        done += int(entry["size"])
        if on_progress is not None:
            on_progress(done / total, f"downloaded {entry['path']}")


def remove_download(directory: Path, *, created: bool) -> None:
    """Remove what a download put in ``directory``: the folder itself if the download
    ``created`` it, else everything in it."""
    if not directory.exists():
        return
    if created:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


class AsyncOfflineMapTask:
    """:class:`OfflineMapTask` for asyncio code.

    Every call runs its blocking counterpart in a worker thread (``asyncio.to_thread``), so the
    event loop never waits on the network or the disk; the behaviour, errors and results are
    the same.
    """

    def __init__(self, item: PortalItem) -> None:
        self.task = OfflineMapTask(item)

    async def get_offline_map_capabilities(
        self, parameters: GenerateOfflineMapParameters | None = None
    ) -> OfflineMapCapabilities:
        """See :meth:`OfflineMapTask.get_offline_map_capabilities`."""
        return await asyncio.to_thread(self.task.get_offline_map_capabilities, parameters)

    async def create_default_generate_offline_map_parameters(
        self, area_of_interest: Area, min_scale: float = 0, max_scale: float = 0
    ) -> GenerateOfflineMapParameters:
        """See :meth:`OfflineMapTask.create_default_generate_offline_map_parameters`."""
        return await asyncio.to_thread(
            self.task.create_default_generate_offline_map_parameters,
            area_of_interest,
            min_scale,
            max_scale,
        )

    async def create_generate_offline_map_parameter_overrides(
        self, parameters: GenerateOfflineMapParameters
    ) -> GenerateOfflineMapParameterOverrides:
        """See :meth:`OfflineMapTask.create_generate_offline_map_parameter_overrides`."""
        return await asyncio.to_thread(
            self.task.create_generate_offline_map_parameter_overrides, parameters
        )

    async def estimate_offline_map(
        self,
        parameters: GenerateOfflineMapParameters,
        overrides: GenerateOfflineMapParameterOverrides | None = None,
    ) -> OfflineMapEstimate:
        """See :meth:`OfflineMapTask.estimate_offline_map`."""
        return await asyncio.to_thread(self.task.estimate_offline_map, parameters, overrides)

    def generate_offline_map(
        self,
        parameters: GenerateOfflineMapParameters,
        download_directory: Path | str,
        overrides: GenerateOfflineMapParameterOverrides | None = None,
    ) -> AsyncGenerateOfflineMapJob:
        """See :meth:`OfflineMapTask.generate_offline_map`."""
        job = self.task.generate_offline_map(parameters, download_directory, overrides)
        return AsyncGenerateOfflineMapJob(job)

    async def get_preplanned_map_areas(self) -> list[AsyncPreplannedMapArea]:
        """See :meth:`OfflineMapTask.get_preplanned_map_areas`."""
        from offmaps.client.areas import AsyncPreplannedMapArea  # noqa: PLC0415

        found = await asyncio.to_thread(self.task.get_preplanned_map_areas)
        return [AsyncPreplannedMapArea(area) for area in found]

    def create_default_download_preplanned_offline_map_parameters(
        self, area: AsyncPreplannedMapArea | PreplannedMapArea
    ) -> DownloadPreplannedOfflineMapParameters:
        """See :meth:`OfflineMapTask.create_default_download_preplanned_offline_map_parameters`
        (no round trip)."""
        from offmaps.client import areas  # noqa: PLC0415

        return areas.create_default_download_preplanned_offline_map_parameters(area)

    def download_preplanned_offline_map(
        self, parameters: DownloadPreplannedOfflineMapParameters, download_directory: Path | str
    ) -> AsyncDownloadPreplannedOfflineMapJob:
        """See :meth:`OfflineMapTask.download_preplanned_offline_map`."""
        from offmaps.client import areas  # noqa: PLC0415

        job = areas.download_preplanned_offline_map(parameters, download_directory)
        return areas.AsyncDownloadPreplannedOfflineMapJob(job)


class AsyncGenerateOfflineMapJob:
    """:class:`GenerateOfflineMapJob` for asyncio code (blocking work in a worker thread)."""

    def __init__(self, job: GenerateOfflineMapJob) -> None:
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
        """See :meth:`GenerateOfflineMapJob.start`."""
        await asyncio.to_thread(self.job.start)

    async def wait(
        self, *, poll_seconds: float = 0.5, on_progress: Progress | None = None
    ) -> GenerateOfflineMapResult:
        """See :meth:`GenerateOfflineMapJob.wait`."""
        return await asyncio.to_thread(
            self.job.wait, poll_seconds=poll_seconds, on_progress=on_progress
        )

    async def resume(self, *, on_progress: Progress | None = None) -> GenerateOfflineMapResult:
        """See :meth:`GenerateOfflineMapJob.resume`."""
        return await asyncio.to_thread(self.job.resume, on_progress=on_progress)

    async def cancel(self) -> None:
        """See :meth:`GenerateOfflineMapJob.cancel`."""
        await asyncio.to_thread(self.job.cancel)
