"""Behaviour shared by the container implementations: context management, key checks, extents."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self

import morecantile

from offmaps.containers._atomic import AtomicDestination
from offmaps.containers.base import TilesetMetadata, check_tile_in_matrix
from offmaps.errors import ContainerWriteError, OffmapsError, TileNotFoundError
from offmaps.types import BBox, Tile

if TYPE_CHECKING:
    from offmaps.tiling import TileCover

__all__ = ["ReaderBase", "WriterBase", "archive_refusal"]


class ReaderBase:
    """Context management and ``get_tile`` on top of a subclass's ``find_tile``."""

    path: Path

    @property
    def metadata(self) -> TilesetMetadata:
        raise NotImplementedError

    def find_tile(self, tile: Tile) -> bytes | None:
        raise NotImplementedError

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``.

        Raises:
            TileNotFoundError: when the container does not hold it.
        """
        data = self.find_tile(tile)
        if data is None:
            raise TileNotFoundError(
                f"{self.path}: no tile {tile.z}/{tile.x}/{tile.y}", path=self.path
            )
        return data

    def iter_tiles(self, zooms: Iterable[int] | None = None) -> Iterator[tuple[Tile, bytes]]:
        raise NotImplementedError

    def iter_cover(self, cover: TileCover) -> Iterator[tuple[Tile, bytes]]:
        """The tiles of ``cover`` the container holds, with their bytes.

        This default reads every tile of the cover's levels and keeps those in the cover;
        containers that can look tiles up by key range override it.
        """
        for tile, data in self.iter_tiles(cover.zooms.levels()):
            if tile in cover:
                yield tile, data

    def count_tiles(self) -> int:
        """How many tiles the container holds (subclasses override with a cheaper count)."""
        return sum(1 for _ in self.iter_tiles())

    def check(self) -> list[str]:
        """Structural problems found without reading every tile: none here; the folders and
        PMTiles are checked as they are opened and listed, SQLite files override this."""
        return []

    def verify(self) -> list[str]:
        """Read every tile once; containers add their own structural checks."""
        problems: list[str] = []
        try:
            for _ in self.iter_tiles():
                pass
        except OffmapsError as exc:
            problems.append(str(exc))
        return problems

    def close(self) -> None:
        """Release resources (nothing by default)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class WriterBase:
    """Atomic destination, tile key checks and extent tracking for writers.

    Subclasses implement ``_write(tile, data)`` and ``_finish(metadata)``; the latter receives the
    metadata completed with the zoom range, bounds and center of what was written.
    """

    directory: bool = False
    kind_name: ClassVar[str] = "a tile container"
    """What the writer makes, for messages: "an MBTiles file", "an XYZ tile folder"."""

    def __init__(self, path: Path | str, metadata: TilesetMetadata, *, overwrite: bool = False):
        self.path = Path(path)
        self.metadata = metadata
        self.destination = AtomicDestination(
            self.path,
            directory=self.directory,
            overwrite=overwrite,
            refusal=self.refusal,
            what=self.kind_name,
        )
        self.temp = self.destination.temp
        self.count = 0
        self._extent: dict[int, list[int]] = {}

    @classmethod
    def refusal(cls, path: Path) -> str | None:
        """Why the existing entry at ``path`` is not a container of this writer's kind, which
        ``overwrite`` may replace; ``None`` when it is. Subclasses say how to tell."""
        return "offmaps cannot tell what it is"

    def write_tile(self, tile: Tile, data: bytes) -> None:
        """Store ``data`` as ``tile`` (key checked against the tile matrix set)."""
        check_tile_in_matrix(self.metadata.tms, tile)
        try:
            self._write(tile, data)
        except OSError as exc:
            raise ContainerWriteError(
                f"cannot write tile {tile.z}/{tile.x}/{tile.y} to {self.path}: "
                f"{exc.strerror or exc}",
                path=self.path,
            ) from exc
        self.count += 1
        ext = self._extent.get(tile.z)
        if ext is None:
            self._extent[tile.z] = [tile.x, tile.y, tile.x, tile.y]
        else:
            ext[0] = min(ext[0], tile.x)
            ext[1] = min(ext[1], tile.y)
            ext[2] = max(ext[2], tile.x)
            ext[3] = max(ext[3], tile.y)

    def completed_metadata(self) -> TilesetMetadata:
        """The metadata with missing zooms, bounds and center taken from the tiles written."""
        meta = self.metadata
        if not self._extent:
            return meta
        minzoom = min(self._extent) if meta.minzoom is None else meta.minzoom
        maxzoom = max(self._extent) if meta.maxzoom is None else meta.maxzoom
        bounds = meta.bounds
        if bounds is None:
            z = max(self._extent)
            x0, y0, x1, y1 = self._extent[z]
            tms = meta.tms
            ul = tms.bounds(morecantile.Tile(x0, y0, z))
            lr = tms.bounds(morecantile.Tile(x1, y1, z))
            bounds = BBox(ul.left, lr.bottom, lr.right, ul.top)
        center = meta.center
        if center is None:
            center = ((bounds.west + bounds.east) / 2, (bounds.south + bounds.north) / 2, minzoom)
        return replace(meta, minzoom=minzoom, maxzoom=maxzoom, bounds=bounds, center=center)

    def commit(self) -> None:
        """Finish the container and move it into place."""
        try:
            self._finish(self.completed_metadata())
        except OSError as exc:
            self.abort()
            raise ContainerWriteError(
                f"cannot finish {self.path}: {exc.strerror or exc}", path=self.path
            ) from exc
        except BaseException:
            self.abort()
            raise
        self.destination.commit()

    def abort(self) -> None:
        """Drop everything written so far."""
        self._close()
        self.destination.abort()

    def _write(self, tile: Tile, data: bytes) -> None:
        raise NotImplementedError

    def _finish(self, metadata: TilesetMetadata) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release open handles before the temporary entry is removed (nothing by default)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def archive_refusal(path: Path, open_archive: Callable[[Path], ReaderBase]) -> str | None:
    """Why ``path`` does not open as an archive with ``open_archive``, or ``None`` when it does."""
    try:
        reader = open_archive(path)
    except OffmapsError as exc:
        return str(exc).removeprefix(f"{path}: ")
    reader.close()
    return None
