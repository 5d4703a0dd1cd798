"""The exception tree of offmaps.

Every error raised on purpose by offmaps derives from :class:`OffmapsError`, with one base per
domain. Errors carry their context as attributes and never an HTTP status: each edge (CLI, server,
SDK) maps them once.

::

    OffmapsWarning (a UserWarning)
    └── AOIRepairedWarning (offmaps.tiling)

    OffmapsError
    ├── TilingError
    │   ├── UnknownTileMatrixSetError
    │   ├── UnknownCRSError
    │   ├── InvalidAOIError
    │   ├── InvalidZoomError
    │   ├── InvalidScaleRangeError
    │   └── IncompatibleTileMatrixSetError
    ├── StorageError
    ├── ContainerError
    │   ├── UnknownContainerError
    │   ├── UnsupportedTileMatrixSetError
    │   ├── UnsupportedTileFormatError
    │   ├── ContainerCorruptError
    │   ├── InvalidTileError
    │   ├── TileNotFoundError
    │   ├── DestinationExistsError
    │   └── ContainerWriteError
    └── FeaturesError
        ├── InvalidFilterError
        └── UnsupportedFilterError
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ContainerCorruptError",
    "ContainerError",
    "ContainerWriteError",
    "DestinationExistsError",
    "FeaturesError",
    "IncompatibleTileMatrixSetError",
    "InvalidAOIError",
    "InvalidFilterError",
    "InvalidScaleRangeError",
    "InvalidTileError",
    "InvalidZoomError",
    "OffmapsError",
    "OffmapsWarning",
    "StorageError",
    "TileNotFoundError",
    "TilingError",
    "UnknownCRSError",
    "UnknownContainerError",
    "UnknownTileMatrixSetError",
    "UnsupportedFilterError",
    "UnsupportedTileFormatError",
    "UnsupportedTileMatrixSetError",
]


class OffmapsError(Exception):
    """Root of every error offmaps raises on purpose."""


class OffmapsWarning(UserWarning):
    """Root of offmaps' warnings: recoverable cases the user should hear about."""


# --- tiling ---------------------------------------------------------------------------------


class TilingError(OffmapsError):
    """Tiling maths cannot proceed with the given input."""


class UnknownTileMatrixSetError(TilingError):
    """A tile matrix set id is not registered, or a TileMatrixSet JSON document is invalid."""

    def __init__(self, message: str, *, tms_id: str | None = None) -> None:
        super().__init__(message)
        self.tms_id = tms_id


class UnknownCRSError(TilingError):
    """A coordinate reference system could not be understood by PROJ."""

    def __init__(self, message: str, *, crs: str | None = None) -> None:
        super().__init__(message)
        self.crs = crs


class InvalidAOIError(TilingError):
    """An area of interest is empty, malformed or cannot be repaired."""


class InvalidZoomError(TilingError):
    """A zoom level or range lies outside a tile matrix set."""

    def __init__(self, message: str, *, zoom: int | None = None) -> None:
        super().__init__(message)
        self.zoom = zoom


class InvalidScaleRangeError(TilingError):
    """A min/max scale pair selects no zoom level, or is inverted."""


class IncompatibleTileMatrixSetError(TilingError):
    """Two tile matrix sets differ where tiles would not line up."""


# --- storage --------------------------------------------------------------------------------


class StorageError(OffmapsError):
    """A byte store failed."""


# --- containers -----------------------------------------------------------------------------


class ContainerError(OffmapsError):
    """A tile container (archive or folder) cannot be read or written.

    Attributes:
        path: the archive or folder concerned, when known.
    """

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class UnknownContainerError(ContainerError):
    """A location names no known container type (by suffix or prefix)."""


class UnsupportedTileMatrixSetError(ContainerError):
    """A container cannot hold tiles of this tile matrix set (e.g. MBTiles is Web Mercator only)."""


class UnsupportedTileFormatError(ContainerError):
    """A container cannot hold tiles of this format, or the tile bytes match no known format."""


class ContainerCorruptError(ContainerError):
    """An archive is truncated, malformed or inconsistent.

    Attributes:
        offset: the byte offset where the damage was found, when known.
        tile: the tile being read, when known, as ``(x, y, z)``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        offset: int | None = None,
        tile: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.offset = offset
        self.tile = tile


class InvalidTileError(ContainerError):
    """A tile key is outside its tile matrix, negative, or would escape a folder."""


class TileNotFoundError(ContainerError):
    """A requested tile is not in the container."""


class DestinationExistsError(ContainerError):
    """The destination of a write already exists and overwriting was not asked for."""


class ContainerWriteError(ContainerError):
    """Writing failed (full disk, read-only destination, ...); nothing was left behind."""


# --- features -------------------------------------------------------------------------------


class FeaturesError(OffmapsError):
    """A feature layer, table or query cannot be used as asked."""


class InvalidFilterError(FeaturesError):
    """A CQL2 filter is malformed, too large, names an unknown field or mixes types.

    Attributes:
        line: the 1-based line of a syntax error, when known.
        column: the 1-based column of a syntax error, when known.
        field: the field name at fault, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.field = field


class UnsupportedFilterError(FeaturesError):
    """A CQL2 filter is valid but uses a construct not supported yet (e.g. spatial predicates)."""
