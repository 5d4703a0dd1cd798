"""The exception tree of offmaps.

Every error raised on purpose by offmaps derives from :class:`OffmapsError`, with one base per
domain. Errors carry their context as attributes and never an HTTP status: each edge (CLI, server,
SDK) maps them once.

::

    OffmapsWarning (a UserWarning)
    ├── AOIRepairedWarning (offmaps.tiling)
    ├── EntriesSkippedWarning (offmaps.containers)
    └── LeftoversWarning (offmaps.containers)

    OffmapsError
    ├── ConnectionFailedError
    ├── TilingError
    │   ├── UnknownTileMatrixSetError
    │   ├── UnknownCRSError
    │   ├── InvalidAOIError
    │   ├── InvalidZoomError
    │   ├── InvalidScaleRangeError
    │   └── IncompatibleTileMatrixSetError
    ├── StorageError
    │   ├── BlobNotFoundError
    │   ├── BlobIntegrityError
    │   ├── BlobTooLargeError
    │   ├── InvalidBlobKeyError
    │   ├── ObjectNotFoundError
    │   ├── ObjectTooLargeError
    │   ├── InvalidObjectKeyError
    │   ├── ObjectKeyConflictError
    │   ├── InvalidByteRangeError
    │   ├── IncompleteReadError
    │   └── InvalidPresignedURLError
    │       └── PresignedURLExpiredError
    ├── ContainerError
    │   ├── UnknownContainerError
    │   ├── UnsupportedTileMatrixSetError
    │   ├── UnsupportedTileFormatError
    │   ├── ContainerCorruptError
    │   ├── InvalidTileError
    │   ├── InvalidTileDataError
    │   ├── TileNotFoundError
    │   ├── DestinationExistsError
    │   ├── ContainerWriteError
    │   ├── TileLimitError
    │   └── UpstreamError
    ├── FeaturesError
    │   ├── InvalidFilterError
    │   ├── UnsupportedFilterError
    │   ├── LayerNotFoundError
    │   ├── LayerExistsError
    │   ├── InvalidLayerSchemaError
    │   ├── FeatureNotFoundError
    │   ├── InvalidFeatureError
    │   ├── VersionConflictError
    │   ├── AttachmentNotFoundError
    │   ├── FeatureStoreError
    │   └── ImportFeaturesError
    ├── WebMapError
    │   ├── WebMapNotFoundError
    │   └── InvalidWebMapError
    ├── OfflineError
    │   ├── InvalidOfflineParametersError
    │   ├── ExportLimitError
    │   ├── DownloadError
    │   ├── PackageError
    │   ├── EditNotAllowedError
    │   ├── MapAreaNotFoundError
    │   │   └── MapAreaDeletedError
    │   ├── MapAreaBusyError
    │   ├── UpdateChainError
    │   └── UpdateIntegrityError
    ├── CacheError
    │   ├── CacheNotFoundError
    │   ├── CacheExistsError
    │   ├── CacheIndexError
    │   ├── SeedFailedError
    │   └── UploadGrantError
    │       ├── GrantNotFoundError
    │       ├── GrantExpiredError
    │       ├── GrantCommittedError
    │       └── UploadMismatchError
    ├── JobError
    │   ├── JobNotFoundError
    │   ├── JobCancelledError
    │   ├── JobFailedError
    │   ├── UnknownJobKindError
    │   └── InvalidJobPayloadError
    ├── SyncError
    │   ├── InvalidChangeSetError
    │   ├── ReplicaNotFoundError
    │   ├── ConflictNotFoundError
    │   ├── ConflictStateError
    │   ├── UploadOffsetError
    │   ├── GenerationAheadError
    │   └── SyncFailedError
    └── AuthError
        ├── InvalidCredentialsError
        ├── InvalidTokenError
        ├── InsufficientScopeError
        ├── AccessDeniedError
        ├── UserExistsError
        ├── UserNotFoundError
        ├── InvalidUserError
        └── TooManyRequestsError
            ├── RateLimitError
            └── QuotaExceededError
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "CacheError",
    "CacheExistsError",
    "CacheIndexError",
    "CacheNotFoundError",
    "GrantCommittedError",
    "GrantExpiredError",
    "GrantNotFoundError",
    "UploadGrantError",
    "UploadMismatchError",
    "UpdateChainError",
    "UpdateIntegrityError",
    "SeedFailedError",
    "AccessDeniedError",
    "AttachmentNotFoundError",
    "AuthError",
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobTooLargeError",
    "ConflictNotFoundError",
    "ConflictStateError",
    "ConnectionFailedError",
    "ContainerCorruptError",
    "ContainerError",
    "ContainerWriteError",
    "DestinationExistsError",
    "DownloadError",
    "EditNotAllowedError",
    "ExportLimitError",
    "FeatureNotFoundError",
    "FeatureStoreError",
    "FeaturesError",
    "GenerationAheadError",
    "ImportFeaturesError",
    "IncompatibleTileMatrixSetError",
    "IncompleteReadError",
    "InsufficientScopeError",
    "InvalidAOIError",
    "InvalidBlobKeyError",
    "InvalidByteRangeError",
    "InvalidChangeSetError",
    "InvalidCredentialsError",
    "InvalidFeatureError",
    "InvalidFilterError",
    "InvalidLayerSchemaError",
    "InvalidObjectKeyError",
    "InvalidOfflineParametersError",
    "InvalidPresignedURLError",
    "InvalidScaleRangeError",
    "InvalidTileDataError",
    "InvalidTileError",
    "InvalidTokenError",
    "InvalidUserError",
    "InvalidWebMapError",
    "InvalidZoomError",
    "InvalidJobPayloadError",
    "JobQueueError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "UnknownJobKindError",
    "LayerExistsError",
    "LayerNotFoundError",
    "MapAreaBusyError",
    "MapAreaDeletedError",
    "MapAreaNotFoundError",
    "ObjectKeyConflictError",
    "ObjectNotFoundError",
    "ObjectTooLargeError",
    "OfflineError",
    "OffmapsError",
    "OffmapsWarning",
    "PackageError",
    "PresignedURLExpiredError",
    "QuotaExceededError",
    "RateLimitError",
    "ReplicaNotFoundError",
    "StorageError",
    "StorageUnavailableError",
    "SyncError",
    "SyncFailedError",
    "TileLimitError",
    "TileNotFoundError",
    "TilingError",
    "TooManyRequestsError",
    "UnknownCRSError",
    "UnknownContainerError",
    "UnknownTileMatrixSetError",
    "UnsupportedFilterError",
    "UnsupportedTileFormatError",
    "UnsupportedTileMatrixSetError",
    "UploadOffsetError",
    "UpstreamError",
    "UserExistsError",
    "UserNotFoundError",
    "VersionConflictError",
    "WebMapError",
    "WebMapNotFoundError",
]


class OffmapsError(Exception):
    """Root of every error offmaps raises on purpose.

    Errors pickle with their message and attributes (a seed's worker processes send theirs to
    the process that started them), though most take their context as keyword arguments.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[OffmapsError], args: tuple[Any, ...], state: dict[str, Any]) -> OffmapsError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class OffmapsWarning(UserWarning):
    """Root of offmaps' warnings: recoverable cases the user should hear about."""


# --- tiling ---------------------------------------------------------------------------------


class ConnectionFailedError(OffmapsError):
    """The server could not be reached, or the connection dropped before its answer came."""


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


class StorageUnavailableError(StorageError):
    """A byte store cannot be reached now (no connection, no answer in time): try again."""


class BlobNotFoundError(StorageError):
    """No blob is stored under the key asked for."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class BlobIntegrityError(StorageError):
    """Stored bytes do not hash to their SHA-256 key, or an upload does not match its hash."""


class BlobTooLargeError(StorageError):
    """A blob is larger than the store was asked to accept; nothing was stored.

    Attributes:
        max_size: the largest size accepted, in bytes.
    """

    def __init__(self, message: str, *, max_size: int) -> None:
        super().__init__(message)
        self.max_size = max_size


class InvalidBlobKeyError(StorageError):
    """A blob key is malformed or would escape the store (``..``, absolute paths, NUL)."""


class ObjectNotFoundError(StorageError):
    """No object is stored under the key asked for.

    Attributes:
        key: the key asked for.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class ObjectTooLargeError(StorageError):
    """An object is larger than the store was asked to accept; nothing was stored.

    Attributes:
        key: the object's key.
        max_size: the largest size accepted, in bytes.
    """

    def __init__(self, message: str, *, key: str, max_size: int) -> None:
        super().__init__(message)
        self.key = key
        self.max_size = max_size


class InvalidObjectKeyError(StorageError):
    """An object key (or prefix) is not a relative POSIX path of safe segments: ``..``, a leading
    ``/``, a backslash, a control character, an empty segment, or too long or deep.

    Attributes:
        key: what was given as the key (any type).
    """

    def __init__(self, message: str, *, key: object) -> None:
        super().__init__(message)
        self.key = key


class ObjectKeyConflictError(StorageError):
    """A key cannot name an object because it is, or lies below, another key's place: ``a`` and
    ``a/b`` cannot both be objects (a folder holds one or the other).

    Attributes:
        key: the key that could not be stored.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class InvalidByteRangeError(StorageError):
    """A byte range is malformed: a negative or non-integer offset or length, or a length beyond
    what one read may ask for.

    Attributes:
        offset: the offset given.
        length: the length given.
    """

    def __init__(self, message: str, *, offset: object, length: object) -> None:
        super().__init__(message)
        self.offset = offset
        self.length = length


class IncompleteReadError(StorageError):
    """A byte source holds fewer bytes than a read needs exactly (it is shorter, or shrank).

    Attributes:
        offset: where the read started.
        length: the bytes asked for.
        available: the bytes that were there.
    """

    def __init__(self, message: str, *, offset: int, length: int, available: int) -> None:
        super().__init__(message)
        self.offset = offset
        self.length = length
        self.available = available


class InvalidPresignedURLError(StorageError):
    """A presigned URL or token is malformed, tampered with, signed by another secret, or used
    with another method or for another key than it was signed for."""


class PresignedURLExpiredError(InvalidPresignedURLError):
    """A presigned URL was genuine but its time is up.

    Attributes:
        expired_at: when it expired (UTC).
    """

    def __init__(self, message: str, *, expired_at: datetime) -> None:
        super().__init__(message)
        self.expired_at = expired_at


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


class InvalidTileDataError(ContainerError):
    """A tile's bytes do not decode as the image they claim to be: garbage, truncated, empty, zero
    pixels, another format than the tile set's, or tiles of different sizes to be composited.

    Attributes:
        tile: the tile concerned, when known, as ``(x, y, z)``.
    """

    def __init__(self, message: str, *, tile: tuple[int, int, int] | None = None) -> None:
        super().__init__(message)
        self.tile = tile


class TileNotFoundError(ContainerError):
    """A requested tile is not in the container."""


class DestinationExistsError(ContainerError):
    """The destination of a write already exists and overwriting was not asked for, or it may
    not be replaced: it is not a container of the kind written (a folder with other files, a
    symbolic link, ``.``), so overwriting could lose what it holds."""


class ContainerWriteError(ContainerError):
    """Writing failed (full disk, read-only destination, ...); nothing was left behind."""


class TileLimitError(ContainerError):
    """An export would cover more tiles than its limit allows (checked before any work).

    Attributes:
        tiles: the tiles the export covers.
        limit: the most tiles one export may cover.
    """

    def __init__(self, message: str, *, tiles: int, limit: int) -> None:
        super().__init__(message)
        self.tiles = tiles
        self.limit = limit


class UpstreamError(ContainerError):
    """An upstream tile server failed: 5xx, timeout, no connection, oversized or wrong content.

    Attributes:
        url: the upstream URL asked, when known.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


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


class LayerNotFoundError(FeaturesError):
    """A feature layer or table of this name does not exist."""

    def __init__(self, message: str, *, layer: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer


class LayerExistsError(FeaturesError):
    """A layer or table of this name exists already."""


class InvalidLayerSchemaError(FeaturesError):
    """A layer schema is unusable: bad or reserved names, duplicate fields, unknown types."""


class FeatureNotFoundError(FeaturesError):
    """No feature or row has this global id in the layer."""

    def __init__(self, message: str, *, layer: str | None = None, global_id: str | None = None):
        super().__init__(message)
        self.layer = layer
        self.global_id = global_id


class InvalidFeatureError(FeaturesError):
    """A feature does not fit its layer: wrong geometry type, unknown field, wrong value type.

    Attributes:
        field: the field at fault, when known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class VersionConflictError(FeaturesError):
    """An edit was based on a version of the row that is no longer the current one.

    Attributes:
        global_id: the row's global id.
        expected: the version the edit was based on.
        actual: the row's current version.
    """

    def __init__(self, message: str, *, global_id: str, expected: int, actual: int) -> None:
        super().__init__(message)
        self.global_id = global_id
        self.expected = expected
        self.actual = actual


class AttachmentNotFoundError(FeaturesError):
    """No attachment has this id (on this feature)."""


class FeatureStoreError(FeaturesError):
    """The feature store's database failed or is not a store offmaps can use."""


class ImportFeaturesError(FeaturesError):
    """A file of features cannot be imported (unreadable, unknown format, no such layer)."""


# --- web maps -------------------------------------------------------------------------------


class WebMapError(OffmapsError):
    """A web map document cannot be used as asked."""


class WebMapNotFoundError(WebMapError):
    """No web map has this id (or the caller may not see it)."""


class InvalidWebMapError(WebMapError):
    """A web map document is malformed or refers to services and layers that do not exist."""


# --- auth -----------------------------------------------------------------------------------


class OfflineError(OffmapsError):
    """An offline map cannot be estimated, generated, downloaded or opened as asked."""


class InvalidOfflineParametersError(OfflineError):
    """Offline map parameters or overrides are malformed or do not fit the web map (an
    unknown layer id, inverted scales, an area outside the map, a missing reference basemap)."""


class ExportLimitError(OfflineError):
    """A layer would export more tiles than its author allows.

    Attributes:
        layer: the layer's id.
        tiles: the tiles the request would export.
        limit: the layer's max export tile count.
    """

    def __init__(self, message: str, *, layer: str, tiles: int, limit: int) -> None:
        super().__init__(message)
        self.layer = layer
        self.tiles = tiles
        self.limit = limit


class MapAreaNotFoundError(OfflineError):
    """No preplanned map area has this id on this web map (or the caller may not see it)."""


class MapAreaDeletedError(MapAreaNotFoundError):
    """The preplanned map area was deleted by its author: a device holding its package keeps
    it as it is, and gets no more updates."""


class MapAreaBusyError(OfflineError):
    """A preplanned map area cannot do this now: it has no complete package yet (it is still
    packaging, or its packaging failed), or a packaging job of it is already running."""


# --- tile caches ----------------------------------------------------------------------------


class CacheError(OffmapsError):
    """A tile cache cannot be created, read, seeded or cleaned as asked (:mod:`offmaps.cache`)."""


class CacheNotFoundError(CacheError):
    """No tile cache has this name.

    Attributes:
        name: the name asked for.
    """

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class CacheExistsError(CacheError):
    """A tile cache of this name exists already.

    Attributes:
        name: the name asked for.
    """

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class CacheIndexError(CacheError):
    """The cache index cannot be opened, read or written (not an index, disk full...)."""


class SeedFailedError(CacheError):
    """A seed stopped: more fetches failed than its failure budget allows.

    Attributes:
        errors: the fetches that failed.
        budget: the failures allowed.
    """

    def __init__(self, message: str, *, errors: int, budget: int) -> None:
        super().__init__(message)
        self.errors = errors
        self.budget = budget


class UploadGrantError(CacheError):
    """A grant to upload tiles to a cache through presigned URLs cannot be used as asked."""


class GrantNotFoundError(UploadGrantError):
    """No upload grant has this id for this cache (or it is another user's)."""


class GrantExpiredError(UploadGrantError):
    """The upload grant's time is up: ask for a new one."""


class GrantCommittedError(UploadGrantError):
    """The upload grant was committed already: a grant is used once."""


class UploadMismatchError(UploadGrantError):
    """Uploaded tiles are missing, or their bytes do not hash to what was declared; nothing of
    the grant became visible.

    Attributes:
        failures: ``z/x/y: reason`` for each tile refused.
    """

    def __init__(self, message: str, *, failures: list[str]) -> None:
        super().__init__(message)
        self.failures = failures


class JobError(OffmapsError):
    """Base of the errors of background jobs (:mod:`offmaps.jobs`)."""


class JobNotFoundError(JobError):
    """No job has this id (or it is not the caller's)."""


class JobCancelledError(JobError):
    """The job was cancelled before it finished."""


class JobFailedError(JobError):
    """A job ended in failure; its message says why."""


class UnknownJobKindError(JobError):
    """A job names a kind this process has no registration for.

    Attributes:
        kind: the kind's name.
    """

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class InvalidJobPayloadError(JobError):
    """A job's payload does not validate against its kind's model."""


class JobQueueError(JobError):
    """The job queue (Redis) cannot be reached: no job was started."""


class DownloadError(OfflineError):
    """A file of an offline map could not be downloaded whole and intact."""


class PackageError(OfflineError):
    """An offline package is missing, malformed, incomplete or corrupt."""


class EditNotAllowedError(OfflineError):
    """An offline edit the web map does not allow (a layer that is not editable, a field that
    is not, an attachment on a layer without attachments).

    Attributes:
        layer: the layer or table.
        field: the field, when one field is at fault.
    """

    def __init__(self, message: str, *, layer: str, field: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer
        self.field = field


class UpdateChainError(OfflineError):
    """A scheduled update file does not follow what the file it would update holds: another
    area or epoch, out of order, applied already, or after another update than the one applied
    (docs/update-files.md). Nothing was changed.

    Attributes:
        path: the file the update was for.
        package_number: the package number that file is at (``None``: it has no chain).
    """

    def __init__(
        self, message: str, *, path: Path | str | None = None, package_number: int | None = None
    ) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.package_number = package_number


class UpdateIntegrityError(OfflineError):
    """A scheduled update file is not intact: its size or SHA-256 is not the expected one
    (truncated, tampered), or it is not a readable update file of a known format. Nothing was
    changed.

    Attributes:
        path: the update file.
    """

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


# --- sync -----------------------------------------------------------------------------------


class SyncError(OffmapsError):
    """Edits cannot be synced between an offline replica and the server as asked."""


class InvalidChangeSetError(SyncError):
    """A change set is malformed or does not fit its replica (a layer the replica does not
    have, a change id used twice in one set, an attachment whose bytes were not uploaded)."""


class ReplicaNotFoundError(SyncError):
    """No replica has this id: it was never registered, or it was unregistered."""


class ConflictNotFoundError(SyncError):
    """No conflict has this id (or it is not the caller's)."""


class ConflictStateError(SyncError):
    """A conflict cannot be resolved as asked: it is resolved already, or the row changed
    again since (read it again and resolve anew)."""


class UploadOffsetError(SyncError):
    """A resumed upload does not continue where the server's copy ends.

    Attributes:
        expected: the offset the server has (send from there).
        actual: the offset the request gave.
    """

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class GenerationAheadError(SyncError):
    """A device asked for the changes since a generation the server has not reached: its
    replica is not from this server's data (a server restored from an older backup, or
    another server), and syncing it would skip changes. Take the map offline again.

    Attributes:
        expected: the server's current generation (the most ``since`` may be).
        actual: the generation asked for.
    """

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SyncFailedError(SyncError):
    """A sync did not finish; the replica is as it was before the failed step, and a retry
    continues where it stopped."""


class AuthError(OffmapsError):
    """Authentication or authorisation failed."""


class InvalidCredentialsError(AuthError):
    """A user name, password, client id or client secret is wrong."""


class InvalidTokenError(AuthError):
    """A bearer token is missing, malformed, expired, or not signed by a trusted key."""


class InsufficientScopeError(AuthError):
    """The token is valid but lacks a scope the operation needs.

    Attributes:
        required: the scopes the operation needs.
    """

    def __init__(self, message: str, *, required: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.required = required


class AccessDeniedError(AuthError):
    """The caller may not use this item (it is not shared with them)."""


class UserExistsError(AuthError):
    """A user or client of this name exists already."""


class UserNotFoundError(AuthError):
    """No user or client has this name."""


class InvalidUserError(AuthError):
    """A user or client is malformed: bad name, password too short or long, unknown scope."""


class TooManyRequestsError(AuthError):
    """The caller asked for more than they may now; asking again later may work.

    Attributes:
        retry_after: whole seconds after which asking again may work (at least 1).
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class RateLimitError(TooManyRequestsError):
    """The caller (a user, or a client address without a token) sent more write requests
    than the server's rate limit allows in its window."""


class QuotaExceededError(TooManyRequestsError):
    """A user's quota is used up: running jobs, registered replicas, or bytes of job output
    kept. Asking again after a job ends, a job or replica is removed, or kept files expire,
    may work.

    Attributes:
        quota: which quota (``jobs``, ``replicas``, ``job_bytes``).
        limit: the quota.
        used: how much of it the user has.
    """

    def __init__(
        self, message: str, *, quota: str, limit: int, used: int, retry_after: int
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.quota = quota
        self.limit = limit
        self.used = used
