"""The tile caches of a server, over its REST API (docs/cache.md): the SDK side.

:class:`TileCaches` answers with the API's JSON documents (dicts), the same ones
``offmaps cache --json`` prints; seeds, cleanups, exports and imports are jobs of the server,
followed with :meth:`TileCaches.wait`. Tiles are uploaded straight to storage through a grant's
presigned URLs, then committed (:meth:`TileCaches.upload`). An export's files are downloaded
with :meth:`TileCaches.download` (resumed where an earlier try stopped); a tile archive for an
import is uploaded in resumable parts with :meth:`TileCaches.upload_archive`.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from offmaps.client.downloads import fetch_file
from offmaps.client.portal import Portal
from offmaps.client.uploads import send_parts
from offmaps.errors import (
    ConnectionFailedError,
    JobCancelledError,
    JobFailedError,
    UploadOffsetError,
)
from offmaps.tiling import Area
from offmaps.types import Tile, ZoomRange

__all__ = ["ARCHIVE_PART_BYTES", "TileCaches"]

ARCHIVE_PART_BYTES = 8 * 1024 * 1024
"""Bytes of a tile archive sent per request (under the server's body limit)."""


def _area_body(area: Area, zooms: ZoomRange) -> dict[str, Any]:
    return {
        "area": area.model_dump(mode="json"),
        "min_zoom": zooms.min,
        "max_zoom": zooms.max,
    }


class TileCaches:
    """The tile caches of the server ``portal`` is connected to.

    Args:
        portal: the connection, signed in with ``cache:read`` (reading) or ``cache:write``.
    """

    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    @staticmethod
    def _path(name: str, *rest: str) -> str:
        return "/".join(["/api/caches", quote(name, safe=""), *rest])

    def list(self) -> list[dict[str, Any]]:
        """Every cache's definition."""
        caches: list[dict[str, Any]] = self.portal.request("GET", "/api/caches")["caches"]
        return caches

    def create(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        """Create a cache from its definition (``name``, ``source``, ``tms``, ``format``...)."""
        created: dict[str, Any] = self.portal.request("POST", "/api/caches", json=definition)
        return created

    def get(self, name: str) -> dict[str, Any]:
        """A cache's definition and figures (``CacheNotFoundError`` when there is none)."""
        found: dict[str, Any] = self.portal.request("GET", self._path(name))
        return found

    def delete(self, name: str) -> None:
        """Remove a cache; its blobs go at the next garbage collection."""
        self.portal.request("DELETE", self._path(name))

    def stats(self, name: str) -> dict[str, Any]:
        """A cache's figures per level."""
        stats: dict[str, Any] = self.portal.request("GET", self._path(name, "stats"))
        return stats

    def store(self) -> dict[str, Any]:
        """The blob store under every cache: blobs, bytes, referenced, orphans."""
        store: dict[str, Any] = self.portal.request("GET", "/api/cache-store")
        return store

    def plan(
        self, name: str, area: Area, zooms: ZoomRange, *, refresh_before: datetime | None = None
    ) -> dict[str, Any]:
        """A dry run of a seed: tiles per level, stored already, bytes to fetch."""
        body = {**_area_body(area, zooms), "dry_run": True}
        if refresh_before is not None:
            body["refresh_before"] = refresh_before.isoformat()
        plan: dict[str, Any] = self.portal.request("POST", self._path(name, "seed"), json=body)
        return plan

    def seed(
        self, name: str, area: Area, zooms: ZoomRange, *, refresh_before: datetime | None = None
    ) -> dict[str, Any]:
        """Start a seed job; its document (follow it with :meth:`wait`), with the ``plan``."""
        body = _area_body(area, zooms)
        if refresh_before is not None:
            body["refresh_before"] = refresh_before.isoformat()
        job: dict[str, Any] = self.portal.request("POST", self._path(name, "seed"), json=body)
        return job

    def clean(self, name: str, **steps: Any) -> dict[str, Any]:
        """Start a cleanup job (``area``, ``min_zoom``/``max_zoom``, ``older_than``,
        ``max_bytes``, ``gc``); its document."""
        job: dict[str, Any] = self.portal.request("POST", self._path(name, "clean"), json=steps)
        return job

    def gc(self) -> dict[str, Any]:
        """Start a garbage collection of the blobs no cache names; its job document."""
        job: dict[str, Any] = self.portal.request("POST", "/api/cache-store/gc")
        return job

    def export(
        self,
        name: str,
        area: Area,
        zooms: ZoomRange,
        *,
        container: str = "mbtiles",
        background: str = "#ffffff",
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Start an export job of an area into a ``container`` (``mbtiles``, ``gpkg``,
        ``pmtiles``, ``esri-compact``, ``esri-exploded``, ``xyz``, ``tms``); its document,
        with the ``plan``. With ``dry_run``, the tile count and the cache's limit only."""
        body = {
            **_area_body(area, zooms),
            "format": container,
            "background": background,
            "dry_run": dry_run,
        }
        answer: dict[str, Any] = self.portal.request("POST", self._path(name, "export"), json=body)
        return answer

    def download(
        self,
        result: Mapping[str, Any],
        folder: Path,
        *,
        on_progress: Callable[[int, int], None] | None = None,
        again: str = "download again to go on",
    ) -> builtins.list[Path]:
        """Download the files a finished job's ``result`` lists into ``folder``, each resumed
        where an earlier try stopped and checked against its SHA-256; their paths.
        ``on_progress`` gets the bytes done and the bytes in all after each file; ``again``
        tells, in errors, how to go on after an interruption.

        Raises:
            DownloadError: a file could not be fetched or written (call again to go on).
        """
        files = builtins.list(result.get("files", []))
        total = sum(int(entry["size"]) for entry in files)
        done = 0
        paths = []
        for entry in files:
            paths.append(fetch_file(self.portal, entry, folder, again=again))
            done += int(entry["size"])
            if on_progress is not None:
                on_progress(done, total)
        return paths

    def upload_archive(
        self, path: Path, *, on_progress: Callable[[int, int], None] | None = None
    ) -> str:
        """Upload a tile archive for an import, in parts from where the server's copy ends (an
        interrupted upload goes on when called again); its SHA-256, which names it in
        :meth:`import_archive`. ``on_progress`` gets the bytes the server has and the size.

        Raises:
            BlobTooLargeError: the archive is over the server's ``import_max_bytes``.
            BlobIntegrityError: the bytes that came do not hash to the archive's SHA-256.
        """
        with path.open("rb") as source:
            sha256 = hashlib.file_digest(source, "sha256").hexdigest()
        size = path.stat().st_size
        url = f"/api/cache-archives/{sha256}"
        for _ in range(3):  # another upload of the same archive may move the offset
            try:
                with path.open("rb") as source:
                    send_parts(self.portal, url, source, size, ARCHIVE_PART_BYTES, on_progress)
            except UploadOffsetError:
                continue
            return sha256
        raise UploadOffsetError(
            f"the upload of {path} kept losing its place; try again", expected=0, actual=0
        )

    def import_archive(
        self,
        name: str,
        sha256: str,
        archive_format: str,
        *,
        area: Area | None = None,
        zooms: ZoomRange | None = None,
        overwrite: bool = False,
        background: str = "#ffffff",
    ) -> dict[str, Any]:
        """Start an import job of an uploaded archive (``mbtiles``, ``gpkg`` or ``pmtiles``)
        into cache ``name``: merged over its tiles, or replacing them with ``overwrite``;
        limited to ``area`` and ``zooms`` when given. Its job document."""
        body: dict[str, Any] = {
            "archive": sha256,
            "archive_format": archive_format,
            "overwrite": overwrite,
            "background": background,
        }
        if area is not None:
            body["area"] = area.model_dump(mode="json")
        if zooms is not None:
            body["min_zoom"], body["max_zoom"] = zooms.min, zooms.max
        job: dict[str, Any] = self.portal.request("POST", self._path(name, "import"), json=body)
        return job

    def verify(self, name: str) -> dict[str, Any]:
        """Hash every blob of a cache again: ``checked`` and ``damaged``."""
        report: dict[str, Any] = self.portal.request("POST", self._path(name, "verify"))
        return report

    def wait(
        self,
        job: Mapping[str, Any],
        *,
        poll_seconds: float = 0.5,
        on_progress: Callable[[float, str], None] | None = None,
    ) -> dict[str, Any]:
        """Follow a job to its end; its result.

        Raises:
            JobFailedError: it failed (with the server's reason).
            JobCancelledError: it was cancelled.
        """
        path = f"/api/jobs/{quote(str(job['id']), safe='')}"
        while True:
            state: dict[str, Any] = self.portal.request("GET", path)
            if on_progress is not None:
                on_progress(float(state["progress"]), str(state["message"]))
            status = state["status"]
            if status == "succeeded":
                result: dict[str, Any] = state.get("result") or {}
                return result
            if status == "failed":
                raise JobFailedError(f"job {job['id']} failed: {state.get('error')}")
            if status == "cancelled":
                raise JobCancelledError(f"job {job['id']} was cancelled")
            time.sleep(poll_seconds)

    def urls(
        self, name: str, area: Area, zooms: ZoomRange, *, expires: int = 900
    ) -> builtins.list[dict[str, Any]]:
        """Presigned GET URLs of every stored tile of an area (all pages)."""
        found: builtins.list[dict[str, Any]] = []
        after = None
        while True:
            body = {**_area_body(area, zooms), "expires_s": expires, "after": after}
            page = self.portal.request("POST", self._path(name, "urls"), json=body)
            found += page["urls"]
            after = page["next"]
            if after is None:
                return found

    def upload(self, name: str, tiles: Mapping[Tile, bytes], *, expires: int = 900) -> int:
        """Upload tiles straight to storage through a grant's presigned URLs, then commit them
        (all or none); tiles that got new bytes.

        Raises:
            UploadMismatchError: the server found some uploads missing or damaged.
            ConnectionFailedError: storage refused an upload or cannot be reached.
        """
        keys = [
            {"z": t.z, "x": t.x, "y": t.y, "sha256": hashlib.sha256(data).hexdigest(),
             "size": len(data)}
            for t, data in tiles.items()
        ]  # fmt: skip
        grant = self.portal.request(
            "POST", self._path(name, "uploads"), json={"tiles": keys, "expires_s": expires}
        )
        with httpx.Client(timeout=60.0) as storage:
            for upload in grant["uploads"]:
                data = tiles[Tile(upload["x"], upload["y"], upload["z"])]
                try:
                    sent = storage.put(upload["url"], content=data, headers=upload["headers"])
                except httpx.HTTPError as exc:
                    raise ConnectionFailedError(f"cannot upload to storage: {exc}") from None
                if not sent.is_success:
                    raise ConnectionFailedError(
                        f"storage refused tile {upload['z']}/{upload['x']}/{upload['y']}: "
                        f"HTTP {sent.status_code}"
                    )
        committed = self.portal.request(
            "POST", self._path(name, "uploads", quote(grant["id"], safe=""), "commit")
        )
        return int(committed["changed"])
