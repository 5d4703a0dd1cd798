"""Container locations: which reader or writer a path or ``prefix:DIR`` names.

Archives are told by suffix (``.mbtiles``, ``.gpkg``, ``.pmtiles``); folders by a prefix
(``xyz:DIR``, ``tms:DIR``, ``esri-exploded:DIR``, ``esri-compact:DIR``). The mapping from kind to
class is a typed table, not string dispatch inside the containers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from offmaps.containers.base import TileReader, TilesetMetadata, TileWriter
from offmaps.errors import ContainerError, UnknownContainerError, UnsupportedTileFormatError

__all__ = ["ContainerKind", "Location", "open_reader", "open_writer", "parse_location"]


class ContainerKind(StrEnum):
    """Every tile container offmaps reads and writes."""

    XYZ = "xyz"
    TMS = "tms"
    ESRI_EXPLODED = "esri-exploded"
    ESRI_COMPACT = "esri-compact"
    MBTILES = "mbtiles"
    GEOPACKAGE = "gpkg"
    PMTILES = "pmtiles"

    @property
    def is_folder(self) -> bool:
        """Whether the container is a folder (named with a ``kind:`` prefix)."""
        return self in _FOLDER_KINDS

    @property
    def holds_mixed(self) -> bool:
        """Whether the container records a mixed tile set (ArcGIS's MIXED: each tile PNG or
        JPEG, see :attr:`~offmaps.containers.base.TilesetMetadata.mixed`): the folders do;
        MBTiles, GeoPackage and PMTiles archives declare one tile format."""
        return self in _FOLDER_KINDS

    @property
    def suffix(self) -> str:
        """The file name suffix of an archive (``.mbtiles``, ``.gpkg``, ``.pmtiles``); empty
        for a folder."""
        return next((suffix for suffix, kind in _SUFFIXES.items() if kind is self), "")


_FOLDER_KINDS = frozenset(
    {ContainerKind.XYZ, ContainerKind.TMS, ContainerKind.ESRI_EXPLODED, ContainerKind.ESRI_COMPACT}
)
_SUFFIXES = {
    ".mbtiles": ContainerKind.MBTILES,
    ".gpkg": ContainerKind.GEOPACKAGE,
    ".pmtiles": ContainerKind.PMTILES,
}

# kind -> (module, reader class, writer class); modules load on first use.
_IMPLEMENTATIONS: dict[ContainerKind, tuple[str, str, str]] = {
    ContainerKind.XYZ: ("offmaps.containers.exploded", "XYZFolderReader", "XYZFolderWriter"),
    ContainerKind.TMS: ("offmaps.containers.exploded", "TMSFolderReader", "TMSFolderWriter"),
    ContainerKind.ESRI_EXPLODED: (
        "offmaps.containers.exploded",
        "EsriExplodedReader",
        "EsriExplodedWriter",
    ),
    ContainerKind.ESRI_COMPACT: (
        "offmaps.containers.compact",
        "EsriCompactReader",
        "EsriCompactWriter",
    ),
    ContainerKind.MBTILES: ("offmaps.containers.mbtiles", "MBTilesReader", "MBTilesWriter"),
    ContainerKind.GEOPACKAGE: (
        "offmaps.containers.geopackage",
        "GeoPackageReader",
        "GeoPackageWriter",
    ),
    ContainerKind.PMTILES: ("offmaps.containers.pmtiles", "PMTilesReader", "PMTilesWriter"),
}


@dataclass(frozen=True)
class Location:
    """A container kind and the path it lives at."""

    kind: ContainerKind
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.kind.is_folder else str(self.path)


def parse_location(text: str | Path) -> Location:
    """Parse ``xyz:DIR``-style folder locations and archive paths told by suffix.

    Raises:
        UnknownContainerError: naming the accepted suffixes and prefixes.
    """
    raw = str(text)
    prefix, sep, rest = raw.partition(":")
    if sep and rest:
        try:
            kind = ContainerKind(prefix.lower())
        except ValueError:
            kind = None
        if kind is not None and kind.is_folder:
            return Location(kind, Path(rest))
    suffix = Path(raw).suffix.lower()
    if suffix in _SUFFIXES:
        return Location(_SUFFIXES[suffix], Path(raw))
    raise UnknownContainerError(
        f"{raw!r} names no tile container: use a path ending in "
        f"{', '.join(sorted(_SUFFIXES))} or a folder as "
        f"{', '.join(f'{k}:DIR' for k in ContainerKind if k.is_folder)}",
        path=raw,
    )


def _classes(kind: ContainerKind) -> tuple[type, type]:
    module_name, reader, writer = _IMPLEMENTATIONS[kind]
    module = importlib.import_module(module_name)
    return getattr(module, reader), getattr(module, writer)


def open_reader(location: Location | str | Path) -> TileReader:
    """Open the container at ``location`` for reading.

    Raises:
        ContainerError: subclasses for missing, corrupt or unknown containers.
    """
    loc = location if isinstance(location, Location) else parse_location(location)
    if not loc.path.exists():
        raise ContainerError(f"{loc.path} does not exist", path=loc.path)
    reader_class, _ = _classes(loc.kind)
    reader: TileReader = reader_class(loc.path)
    return reader


def open_writer(
    location: Location | str | Path, metadata: TilesetMetadata, *, overwrite: bool = False
) -> TileWriter:
    """Create a new container at ``location``; it appears there only once committed.

    Raises:
        UnsupportedTileFormatError: for a mixed tile set (PNG and JPEG tiles) and a container
            that declares one tile format (MBTiles, GeoPackage, PMTiles): ``offmaps cache
            export`` writes such a source into them as PNG.
    """
    loc = location if isinstance(location, Location) else parse_location(location)
    if metadata.mixed and not loc.kind.holds_mixed:
        raise UnsupportedTileFormatError(
            f"{loc}: {loc.kind.value} holds tiles of one format, the tile set is mixed (PNG and "
            "JPEG tiles): write it to a folder (esri-compact:, esri-exploded:, xyz:, tms:), or "
            "export it with `offmaps cache export`, which re-encodes its JPEG tiles as PNG",
            path=loc.path,
        )
    _, writer_class = _classes(loc.kind)
    writer: TileWriter = writer_class(loc.path, metadata, overwrite=overwrite)
    return writer
