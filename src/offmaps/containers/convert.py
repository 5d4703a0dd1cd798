"""Streaming conversion between tile containers, optionally clipped to an AOI and zoom range."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from offmaps.containers.base import TileReader, TilesetMetadata
from offmaps.containers.registry import Location, open_writer
from offmaps.errors import IncompatibleTileMatrixSetError
from offmaps.tiling import AreaOfInterest, TileCover, check_zooms, tile_cover
from offmaps.tiling.tms import find_incompatibility
from offmaps.types import ZoomRange

__all__ = ["ConversionResult", "convert"]

ProgressCallback = Callable[[int], None]
"""Called with the number of source tiles handled since the previous call."""


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion did: tiles read from the source and written to the destination."""

    read: int
    written: int


def convert(
    source: TileReader,
    destination: Location | str,
    *,
    zooms: ZoomRange | None = None,
    aoi: AreaOfInterest | TileCover | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> ConversionResult:
    """Copy tiles from ``source`` to a new container at ``destination``, byte for byte.

    Memory stays constant: tiles stream one at a time from the reader to the writer. The
    destination appears only when every tile is written; on any error it is not created (or,
    with ``overwrite``, left as it was).

    Args:
        source: an open reader.
        destination: where to write; the kind is told by suffix or ``kind:`` prefix.
        zooms: only these levels (all by default).
        aoi: only tiles whose interior meets this area, or only the tiles of this cover (of the
            source's tile matrix set; its levels, or those of ``zooms`` among them). With an
            area, only the source's tiles in it are read (see ``TileReader.iter_cover``).
        overwrite: replace an existing destination.
        progress: called as tiles are read, for progress bars (with an area, at most the
            area's tile count in all; else the source's).

    Raises:
        ContainerError: subclasses for unreadable sources and unwritable destinations.
        TilingError: subclasses for zooms or AOIs that do not fit the source's tile matrix set.
    """
    meta = source.metadata
    if zooms is not None:
        check_zooms(meta.tms, zooms)
    cover: TileCover | None = None
    if isinstance(aoi, TileCover):
        problem = None if aoi.tms is meta.tms else find_incompatibility(aoi.tms, meta.tms)
        if problem is not None:
            raise IncompatibleTileMatrixSetError(
                f"the tile cover is of {aoi.tms.id}, the source's tiles of {meta.tms.id}: {problem}"
            )
        cover = aoi if zooms in (None, aoi.zooms) else TileCover(aoi.tms, aoi.geometry, zooms)
    elif aoi is not None:
        levels = zooms or ZoomRange(
            meta.minzoom or meta.tms.minzoom, meta.maxzoom or meta.tms.maxzoom
        )
        cover = tile_cover(aoi, meta.tms, levels)
    target_meta = subset_metadata(meta, zooms, aoi)
    read = written = 0
    pending = 0
    if cover is None:
        tiles = source.iter_tiles(zooms.levels() if zooms is not None else None)
    else:
        tiles = source.iter_cover(cover)
    with open_writer(destination, target_meta, overwrite=overwrite) as writer:
        for tile, data in tiles:
            read += 1
            pending += 1
            writer.write_tile(tile, data)
            written += 1
            if progress is not None and pending >= 256:
                progress(pending)
                pending = 0
    if progress is not None and pending:
        progress(pending)
    return ConversionResult(read=read, written=written)


def subset_metadata(
    meta: TilesetMetadata, zooms: ZoomRange | None, aoi: AreaOfInterest | TileCover | None
) -> TilesetMetadata:
    """Metadata for a subset (of levels, of an area): zooms, center and (with an area) bounds are
    left for the writer to take from the tiles actually written. Conversions and exports share
    it."""
    if zooms is None and aoi is None:
        return meta
    return replace(
        meta,
        minzoom=None,
        maxzoom=None,
        center=None,
        bounds=None if aoi is not None else meta.bounds,
    )
