"""Tile containers: archives and folders behind one reader and one writer protocol.

Kinds: exploded folders (XYZ, TMS, Esri exploded), Esri Compact Cache V2 bundles, MBTiles 1.3,
GeoPackage tiles, PMTiles v3. Open them with :func:`open_reader` / :func:`open_writer` and convert
between them with :func:`convert`.
"""

from offmaps.containers.base import (
    EntriesSkippedWarning,
    LeftoversWarning,
    TileReader,
    TilesetMetadata,
    TileWriter,
    detect_tile_format,
    web_mercator_quad,
)
from offmaps.containers.convert import ConversionResult, convert
from offmaps.containers.registry import (
    ContainerKind,
    Location,
    open_reader,
    open_writer,
    parse_location,
)

__all__ = [
    "ContainerKind",
    "ConversionResult",
    "EntriesSkippedWarning",
    "LeftoversWarning",
    "Location",
    "TileReader",
    "TileWriter",
    "TilesetMetadata",
    "convert",
    "detect_tile_format",
    "open_reader",
    "open_writer",
    "parse_location",
    "web_mercator_quad",
]
