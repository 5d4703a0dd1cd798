"""A tile cache read as a tile container, so that it exports like one (``offmaps cache export
--data DIR NAME DEST``).

:class:`CacheTileReader` reads a cache's stored tiles through its index and blob store, never
fetching from the cache's source and counting no hit: an export takes what the cache holds.
Its tiles go through :func:`~offmaps.containers.export.export_tiles` as those of any container
(clipped to an area, the tile limit checked before any work, written atomically).

A tile whose blob is missing from the store, or whose bytes no longer hash to the index's
SHA-256 (every blob read is hashed again), is skipped and recorded in
:attr:`CacheTileReader.problems` with its key.

A mixed cache (PNG and JPEG tiles) reads as a mixed tile set
(:attr:`~offmaps.containers.base.TilesetMetadata.mixed`): its export into a folder (Esri compact or
exploded, XYZ, TMS) stays mixed, each tile keeping its bytes, as ArcGIS's own export keeps a MIXED
cache MIXED; into MBTiles, GeoPackage or PMTiles, which declare one format, its JPEG tiles are
re-encoded as PNG (see :func:`~offmaps.containers.export.export_tiles`). With ``one_format=True``
the reader itself gives them as PNG.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Self

from offmaps.cache.index import Span, TileIndex, cover_spans
from offmaps.containers.base import TilesetMetadata, detect_tile_format
from offmaps.containers.export import FailedTile
from offmaps.containers.merge import as_png
from offmaps.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    InvalidTileDataError,
    TileNotFoundError,
)
from offmaps.storage import BlobStore
from offmaps.tiling import TileCover, get_tms
from offmaps.types import Tile, TileFormat

__all__ = ["CacheTileReader"]


class CacheTileReader:
    """The stored tiles of one cache, as a :class:`~offmaps.containers.TileReader`.

    Args:
        index: the cache index.
        blobs: the blob store holding the tiles' bytes.
        name: the cache.
        one_format: for a mixed cache (PNG and JPEG tiles), give its JPEG tiles re-encoded as
            PNG (the same pixels), so that the tiles are all of the one format the metadata
            names (PNG); else a mixed cache's metadata says it is mixed.

    Raises:
        CacheNotFoundError: when no cache has this name.
    """

    def __init__(
        self, index: TileIndex, blobs: BlobStore, name: str, *, one_format: bool = False
    ) -> None:
        self.index = index
        self.blobs = blobs
        self.name = name
        definition = index.definition(name)
        self._as_png = one_format and definition.mixed
        stats = index.stats(name)
        held = [level.z for level in stats.levels if level.tiles]
        self._count = stats.tiles
        self._metadata = TilesetMetadata(
            tile_format=definition.format,
            tms=get_tms(definition.tms),
            name=name,
            minzoom=min(held) if held else definition.min_zoom,
            maxzoom=max(held) if held else definition.max_zoom,
            description=definition.title,
            mixed=definition.mixed and not self._as_png,
        )
        self.problems: list[FailedTile] = []
        """Tiles skipped: their blob is missing or its bytes do not match the index."""

    @property
    def metadata(self) -> TilesetMetadata:
        """The cache's format and tile matrix set, and the levels holding tiles."""
        return self._metadata

    def find_tile(self, tile: Tile) -> bytes | None:
        """The stored bytes of ``tile``, or None (also for a missing or damaged blob)."""
        row = self.index.find(self.name, tile)
        return None if row is None else self._read(tile, row.sha256)

    def get_tile(self, tile: Tile) -> bytes:
        """The stored bytes of ``tile``.

        Raises:
            TileNotFoundError: when the cache lacks it.
        """
        data = self.find_tile(tile)
        if data is None:
            raise TileNotFoundError(f"cache {self.name!r} holds no tile {tile.z}/{tile.x}/{tile.y}")
        return data

    def iter_tiles(self, zooms: Iterable[int] | None = None) -> Iterator[tuple[Tile, bytes]]:
        """Every stored tile of the levels (all by default), row by row: one index query per
        row of each level, so an area (:meth:`iter_cover`) is much cheaper at deep levels."""
        meta = self._metadata
        levels = range(meta.minzoom or 0, (meta.maxzoom or 0) + 1) if zooms is None else zooms
        tms = meta.tms

        def spans() -> Iterator[Span]:
            for z in levels:
                matrix = tms.matrix(z)
                for y in range(matrix.matrixHeight):
                    yield Span(z, y, 0, matrix.matrixWidth - 1)

        return self._rows(spans())

    def iter_cover(self, cover: TileCover) -> Iterator[tuple[Tile, bytes]]:
        """The stored tiles of ``cover``: one index query per row span of the cover."""
        return self._rows(cover_spans(cover))

    def _rows(self, spans: Iterator[Span]) -> Iterator[tuple[Tile, bytes]]:
        for row in self.index.find_spans(self.name, spans):
            data = self._read(row.tile, row.sha256)
            if data is not None:
                yield row.tile, data

    def _read(self, tile: Tile, sha256: str) -> bytes | None:
        key = f"{tile.z}/{tile.x}/{tile.y}"
        try:
            data = self.blobs.get(sha256)
        except BlobNotFoundError:
            self.problems.append(FailedTile(tile, f"tile {key}: its blob {sha256} is missing"))
            return None
        except BlobIntegrityError as exc:
            self.problems.append(FailedTile(tile, f"tile {key}: {exc}"))
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            self.problems.append(
                FailedTile(tile, f"tile {key}: its blob's bytes do not hash to {sha256}")
            )
            return None
        if self._as_png and detect_tile_format(data)[0] is TileFormat.JPEG:
            try:
                return as_png(data, tile)
            except InvalidTileDataError as exc:
                self.problems.append(FailedTile(tile, str(exc)))
                return None
        return data

    def count_tiles(self) -> int:
        """How many tiles the cache holds."""
        return self._count

    def check(self) -> list[str]:
        """Nothing to check without reading every blob (``offmaps cache verify`` does)."""
        return []

    def verify(self) -> list[str]:
        """Problems found reading every tile: missing or damaged blobs."""
        before = len(self.problems)
        for _ in self.iter_tiles():
            pass
        return [problem.error for problem in self.problems[before:]]

    def close(self) -> None:
        """Nothing to release: the index and the blob store belong to the caller."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
