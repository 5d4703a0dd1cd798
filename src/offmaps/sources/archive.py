"""Tiles of a container the tile engine reads, with a pool of readers."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from morecantile import TileMatrixSet

from offmaps.containers.base import TileReader
from offmaps.containers.registry import Location, open_reader, parse_location
from offmaps.errors import (
    ContainerCorruptError,
    ContainerError,
    TileNotFoundError,
)
from offmaps.sources.base import TileSourceInfo, check_key, describe_tile
from offmaps.types import Tile

__all__ = ["ArchiveTileSource"]

_log = logging.getLogger(__name__)


class ArchiveTileSource:
    """Tiles of one container the tile engine reads (MBTiles, GeoPackage, PMTiles, folders...).

    Readers are not thread-safe, so each request borrows one from a small pool and gives it back;
    the pool grows to the number of concurrent requests and keeps at most ``max_idle_readers``.

    Args:
        name: the name in URLs.
        location: the container, as :func:`offmaps.containers.parse_location` reads it.
        title: a human title; the archive's name by default.
        export_tiles_allowed: whether offline packages may copy these tiles.
        max_export_tile_count: the most tiles one export may take.
        max_idle_readers: readers kept open between requests.

    Raises:
        ContainerError: subclasses for missing, corrupt or unknown containers.
    """

    def __init__(
        self,
        name: str,
        location: Location | str | Path,
        *,
        title: str | None = None,
        export_tiles_allowed: bool = True,
        max_export_tile_count: int = 100_000,
        max_idle_readers: int = 8,
    ) -> None:
        self._location = location if isinstance(location, Location) else parse_location(location)
        self._lock = threading.Lock()
        self._max_idle = max(1, max_idle_readers)
        reader = open_reader(self._location)
        try:
            metadata = reader.metadata
        except BaseException:
            reader.close()
            raise
        self._idle: list[TileReader] = [reader]
        self._closed = False
        self.tms: TileMatrixSet = metadata.tms
        layers = [str(layer.get("id", "")) for layer in metadata.vector_layers or ()]
        self._info = TileSourceInfo(
            name=name,
            title=title or (metadata.name if metadata.name != "offmaps" else name),
            tms_id=str(metadata.tms.id),
            tile_format=metadata.tile_format,
            min_zoom=metadata.minzoom if metadata.minzoom is not None else metadata.tms.minzoom,
            max_zoom=metadata.maxzoom if metadata.maxzoom is not None else metadata.tms.maxzoom,
            bounds=metadata.bounds,
            attribution=metadata.attribution,
            export_tiles_allowed=export_tiles_allowed,
            max_export_tile_count=max_export_tile_count,
            vector_layers=[layer for layer in layers if layer],
            tile_compression=metadata.tile_compression,
            description=metadata.description,
        )

    @property
    def info(self) -> TileSourceInfo:
        """What the archive says about itself."""
        return self._info

    @property
    def location(self) -> Location:
        """Where the archive is, as the tile engine reads it."""
        return self._location

    def _acquire(self) -> TileReader:
        with self._lock:
            if self._closed:
                raise ContainerError(f"tile layer {self._info.name!r} is closed")
            if self._idle:
                return self._idle.pop()
        return open_reader(self._location)

    def _release(self, reader: TileReader) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(reader)
                return
        reader.close()

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile`` as stored in the archive.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: when the archive does not hold the tile.
            ContainerCorruptError: when the archive is damaged where the tile lies.
        """
        check_key(self.tms, self._info, tile)
        reader = self._acquire()
        try:
            data = reader.find_tile(tile)
        except ContainerCorruptError as exc:
            # The original names a server path: log it, and say less to the client.
            _log.warning("%s: %s", describe_tile(self._info, tile), exc)
            raise ContainerCorruptError(
                f"{describe_tile(self._info, tile)}: the archive is damaged",
                tile=(tile.x, tile.y, tile.z),
            ) from exc
        finally:
            self._release(reader)
        if data is None:
            raise TileNotFoundError(f"{describe_tile(self._info, tile)}: no such tile")
        return data

    def close(self) -> None:
        """Close every pooled reader; readers on loan close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for reader in idle:
            reader.close()
