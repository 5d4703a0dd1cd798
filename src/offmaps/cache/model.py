"""What a tile cache is: its definition (a source, a tile matrix set, a format) and its figures.

A :class:`CacheDefinition` is the document a cache is created from, through the API, the CLI or
Python alike, and is stored as JSON in the cache index. It is a pydantic model because it comes
from outside (HTTP bodies, command lines) and is validated there once; everything the service
returns about a cache's contents is a frozen dataclass.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from offmaps.types import TileFormat

__all__ = [
    "CACHE_NAME",
    "CacheDefinition",
    "CacheSource",
    "CacheStats",
    "MIXED",
    "SourceKind",
    "UpstreamSettings",
    "ZoomStats",
]

CACHE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A cache's name: letters, digits, ``_`` and ``-``, 1 to 64 characters, not starting with a
separator. It appears in URLs and object keys, so nothing else is allowed."""


class SourceKind(StrEnum):
    """Where a cache's tiles come from."""

    XYZ = "xyz"
    """An upstream XYZ or WMTS (REST) server, by URL template with ``{z}``, ``{x}``, ``{y}``."""
    LAYER = "layer"
    """Another tile layer of this offmaps server, by name."""
    ARCHIVE = "archive"
    """A tile archive or folder the containers read (``FILE.mbtiles``, ``esri-compact:DIR``...)."""


_FORMAT_KEYS = ("{z}", "{x}", "{y}")


class CacheSource(BaseModel):
    """A cache's source of tiles.

    Attributes:
        kind: what ``location`` names.
        location: the URL template (``xyz``), the tile layer's name (``layer``) or the
            archive's path as ``offmaps tiles convert`` names it (``archive``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SourceKind
    location: Annotated[str, Field(min_length=1, max_length=2048)]

    @model_validator(mode="after")
    def _check_location(self) -> CacheSource:
        if any(ord(c) < 32 for c in self.location):
            raise ValueError("a source location has no control characters")
        if self.kind is SourceKind.XYZ:
            lowered = self.location.lower()
            if not lowered.startswith(("http://", "https://")):
                raise ValueError("an xyz source is an http or https URL template")
            missing = [key for key in _FORMAT_KEYS if key not in self.location]
            if missing:
                raise ValueError(
                    f"an xyz source URL template needs {', '.join(missing)}, as in "
                    "https://tile.example.org/{z}/{x}/{y}.png"
                )
        elif self.kind is SourceKind.LAYER and not CACHE_NAME.fullmatch(self.location):
            raise ValueError("a layer source names a tile layer: letters, digits, _ and -")
        return self


class UpstreamSettings(BaseModel):
    """How a cache fetches from its source: politeness, patience and when to give up.

    Attributes:
        concurrency: requests in flight at once to the source while seeding.
        requests_per_second: the most requests started per second to the source (all seeds and
            read-through fetches of this process together).
        retries: further attempts after a failed fetch (5xx, timeout, broken connection).
        backoff_s: the wait before the first retry; doubled for each further one (with jitter).
        timeout_s: how long one request may take.
        failure_budget: fetches that may fail (after their retries) in one seed before it stops
            with an error, rather than retrying forever.
        max_tile_bytes: the largest tile accepted from the source.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(default=4, ge=1, le=64)
    requests_per_second: float = Field(default=50.0, gt=0, le=10_000)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0, le=60)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    failure_budget: int = Field(default=100, ge=0)
    max_tile_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)


MIXED = "mixed"
"""The ``format`` of a cache definition's JSON for ArcGIS's MIXED format: ``png`` with
``mixed`` true in Python."""


_FORMAT_SCHEMA = {
    "type": "string",
    "enum": [*(f.value for f in TileFormat), MIXED],
    "description": 'The tiles\' format; "mixed": PNG tiles where there is transparency, JPEG '
    "elsewhere (ArcGIS's MIXED)",
}


class CacheDefinition(BaseModel):
    """A named tile cache: a source, a tile matrix set, a format and its levels.

    In JSON, ``"format": "mixed"`` (:data:`MIXED`) makes a cache of ArcGIS's MIXED format: PNG
    tiles where there is transparency, JPEG elsewhere. In Python it is ``format`` PNG (what the
    cache is announced as where one format is needed: TileJSON, tile set metadata) with
    ``mixed`` true; its JSON says ``"format": "mixed", "mixed": true``.

    Attributes:
        name: the cache's name (:data:`CACHE_NAME`).
        title: a human title (the name by default).
        source: where tiles come from.
        tms: id of the tile matrix set the tile keys refer to.
        format: the tiles' encoding; a source sending anything else is refused. PNG for a
            mixed cache.
        mixed: a cache of ArcGIS's MIXED format: each tile PNG or JPEG (served with the media
            type of its bytes), a source sending anything else refused.
        min_zoom: lowest level cached.
        max_zoom: highest level cached.
        upstream: how the source is fetched from.
        verify_reads: the fraction of reads whose bytes are hashed again before they are
            served (a damaged blob is then dropped and fetched again).
        export_max_tiles: the most tiles one export of the cache through the server may
            cover, checked before any work (ArcGIS's "limit export cache"; 100,000 by default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    title: Annotated[str, Field(max_length=256)] = ""
    source: CacheSource
    tms: Annotated[str, Field(min_length=1, max_length=128)] = "WebMercatorQuad"
    format: Annotated[TileFormat, WithJsonSchema(_FORMAT_SCHEMA)] = TileFormat.PNG
    mixed: bool = False
    min_zoom: int = Field(default=0, ge=0, le=30)
    max_zoom: int = Field(default=19, ge=0, le=30)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    verify_reads: float = Field(default=0.01, ge=0, le=1)
    export_max_tiles: int = Field(default=100_000, ge=1, le=100_000_000)

    @model_validator(mode="before")
    @classmethod
    def _read_mixed(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == MIXED:
            if data.get("mixed", True) is not True:
                raise ValueError('format "mixed" is a mixed cache: mixed cannot be false')
            return {**data, "format": TileFormat.PNG, "mixed": True}
        return data

    @model_serializer(mode="wrap")
    def _write_mixed(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.mixed:
            data["format"] = MIXED
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not CACHE_NAME.fullmatch(value):
            raise ValueError(
                "a cache name is 1 to 64 letters, digits, _ or -, starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _check_zooms(self) -> CacheDefinition:
        if self.min_zoom > self.max_zoom:
            raise ValueError(f"zoom range {self.min_zoom}-{self.max_zoom} is inverted")
        if self.mixed and self.format is not TileFormat.PNG:
            raise ValueError(
                f"a mixed cache holds PNG and JPEG tiles, not {self.format.value}: "
                'give format "mixed"'
            )
        if not self.title:
            object.__setattr__(self, "title", self.name)
        return self

    @property
    def tile_formats(self) -> frozenset[TileFormat]:
        """The formats the cache's tiles may be in: PNG and JPEG for a mixed cache, else its
        format."""
        if self.mixed:
            return frozenset({TileFormat.PNG, TileFormat.JPEG})
        return frozenset({self.format})

    @property
    def format_name(self) -> str:
        """The format as the definition's JSON gives it: ``mixed``, or the tile format's."""
        return MIXED if self.mixed else self.format.value


@dataclass(frozen=True, slots=True)
class ZoomStats:
    """One level of a cache: what is stored and how it was used.

    Attributes:
        z: the level.
        tiles: tiles stored.
        bytes: their bytes, each tile counted (what the cache would take without dedup).
        blobs: distinct contents among them.
        blob_bytes: the bytes of those distinct contents (what they take in the blob store).
        hits: reads answered from the cache.
        misses: reads that were not in the cache.
        fetches: tiles fetched from the source (read-through and seeding).
        errors: fetches that failed.
        last_access: when a tile of the level was last read, if ever.
    """

    z: int
    tiles: int = 0
    bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    hits: int = 0
    misses: int = 0
    fetches: int = 0
    errors: int = 0
    last_access: datetime | None = None

    @property
    def dedup_saving(self) -> int:
        """Bytes not stored thanks to identical tiles sharing one blob."""
        return self.bytes - self.blob_bytes


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A cache's figures, per level and in total.

    Attributes:
        name: the cache.
        levels: per level with tiles or activity, ascending.
        tiles: tiles stored.
        bytes: their bytes, each tile counted.
        blobs: distinct contents among them.
        blob_bytes: the bytes of those distinct contents.
    """

    name: str
    levels: tuple[ZoomStats, ...]
    tiles: int
    bytes: int
    blobs: int
    blob_bytes: int

    @property
    def dedup_saving(self) -> int:
        """Bytes not stored thanks to identical tiles sharing one blob."""
        return self.bytes - self.blob_bytes

    @property
    def hits(self) -> int:
        """Reads answered from the cache, all levels."""
        return sum(level.hits for level in self.levels)

    @property
    def misses(self) -> int:
        """Reads not in the cache, all levels."""
        return sum(level.misses for level in self.levels)

    @property
    def fetches(self) -> int:
        """Tiles fetched from the source, all levels."""
        return sum(level.fetches for level in self.levels)

    @property
    def errors(self) -> int:
        """Failed fetches, all levels."""
        return sum(level.errors for level in self.levels)

    @property
    def last_access(self) -> datetime | None:
        """When a tile of the cache was last read, if ever."""
        times = [level.last_access for level in self.levels if level.last_access is not None]
        return max(times) if times else None

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON (the API's, the CLI's and GraphQL's document)."""
        return {
            "name": self.name,
            "tiles": self.tiles,
            "bytes": self.bytes,
            "blobs": self.blobs,
            "blob_bytes": self.blob_bytes,
            "dedup_saving": self.dedup_saving,
            "hits": self.hits,
            "misses": self.misses,
            "fetches": self.fetches,
            "errors": self.errors,
            "last_access": _iso(self.last_access),
            "levels": [
                {
                    **asdict(level),
                    "dedup_saving": level.dedup_saving,
                    "last_access": _iso(level.last_access),
                }
                for level in self.levels
            ],
        }


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()
