"""Web map items: JSON documents in the data folder, one file per map, written atomically."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from offmaps.errors import InvalidWebMapError, WebMapNotFoundError
from offmaps.schemas import WebMap, parse_webmap

__all__ = ["FolderWebMapStore", "WebMapStore"]

_ID = re.compile(r"^[0-9a-f]{32}$")


@runtime_checkable
class WebMapStore(Protocol):
    """Web map items by id: the seam a PostgreSQL store implements too."""

    def list(self) -> list[WebMap]:
        """Every web map, oldest first by creation time."""
        ...

    def get(self, map_id: str) -> WebMap:
        """One web map; raises ``WebMapNotFoundError``."""
        ...

    def create(self, webmap: WebMap, *, owner: str) -> WebMap:
        """Store a new web map owned by ``owner``; returns it with its id and times."""
        ...

    def replace(self, map_id: str, webmap: WebMap) -> WebMap:
        """Replace a web map's document, keeping its id, owner and creation time."""
        ...

    def delete(self, map_id: str) -> None:
        """Remove a web map; raises ``WebMapNotFoundError``."""
        ...


class FolderWebMapStore:
    """Web map documents by id (32 hex characters), kept as ``<id>.json`` files.

    Reads are cached by file modification time; writes replace whole files atomically.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, WebMap]] = {}

    def _path(self, map_id: str) -> Path:
        if not _ID.match(map_id):
            raise WebMapNotFoundError(f"no web map {map_id[:64]!r}")
        return self.folder / f"{map_id}.json"

    def list(self) -> list[WebMap]:
        """Every web map, oldest first by creation time."""
        maps = [self.get(path.stem) for path in self.folder.glob("*.json") if _ID.match(path.stem)]
        return sorted(maps, key=lambda m: m.item.created or datetime.min.replace(tzinfo=UTC))

    def get(self, map_id: str) -> WebMap:
        """One web map; raises ``WebMapNotFoundError``."""
        path = self._path(map_id)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            raise WebMapNotFoundError(f"no web map {map_id!r}") from None
        cached = self._cache.get(map_id)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        webmap = parse_webmap(path.read_bytes())
        self._cache[map_id] = (mtime, webmap)
        return webmap

    def create(self, webmap: WebMap, *, owner: str) -> WebMap:
        """Store a new web map owned by ``owner``; returns it with its id and times."""
        now = datetime.now(UTC)
        map_id = uuid.uuid4().hex
        stored = _with(webmap, map_id=map_id, owner=owner, created=now, modified=now)
        with self._lock:
            self._write(stored)
        return stored

    def replace(self, map_id: str, webmap: WebMap) -> WebMap:
        """Replace a web map's document, keeping its id, owner and creation time."""
        with self._lock:
            current = self.get(map_id)
            stored = _with(
                webmap,
                map_id=map_id,
                owner=current.sharing.owner,
                created=current.item.created,
                modified=datetime.now(UTC),
            )
            self._write(stored)
        return stored

    def delete(self, map_id: str) -> None:
        """Remove a web map; raises ``WebMapNotFoundError``."""
        path = self._path(map_id)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                raise WebMapNotFoundError(f"no web map {map_id!r}") from None
            self._cache.pop(map_id, None)

    def _write(self, webmap: WebMap) -> None:
        if webmap.id is None:  # pragma: no cover - _with always sets it
            raise InvalidWebMapError("a stored web map needs an id")
        data = webmap.model_dump_json(indent=2, exclude_none=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._path(webmap.id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _with(
    webmap: WebMap, *, map_id: str, owner: str | None, created: datetime | None, modified: datetime
) -> WebMap:
    item = webmap.item.model_copy(update={"created": created, "modified": modified, "owner": owner})
    sharing = webmap.sharing.model_copy(update={"owner": owner})
    return webmap.model_copy(update={"id": map_id, "item": item, "sharing": sharing})
