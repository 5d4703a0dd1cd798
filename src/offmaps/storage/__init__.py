"""Byte storage: content-addressed blobs, keyed objects, and the byte-range seam.

Layer 1 of DESIGN.md: imports :mod:`offmaps.errors` only. Two kinds of store, each behind a
protocol with one contract suite for every implementation:

* :class:`BlobStore`: bytes stored once under their SHA-256 (attachments). Keys are exactly 64
  lowercase hex characters. :class:`LocalBlobStore` (a folder), :class:`SQLiteBlobStore` (rows
  of one SQLite file: for many small blobs, the tile caches' store), :class:`MemoryBlobStore`.
* :class:`ObjectStore`: bytes under keys the caller chooses (``jobs/42/package.zip``), with
  ranged reads, listing by prefix and presigned GET/PUT URLs, S3's model.
  :class:`LocalObjectStore` (a folder, never following symbolic links), :class:`MemoryObjectStore`,
  and :func:`prefixed` views of one prefix (a job's output area). Keys are relative POSIX paths
  of safe segments, checked by :func:`check_object_key` before anything touches a file.
  Local and memory stores presign with HMAC tokens (:class:`URLSigner`).
* In a bucket of an S3-compatible service (:mod:`offmaps.storage.s3`, the ``s3`` extra):
  :class:`S3ObjectStore` and :class:`S3BlobStore`, configured by :class:`S3Config` (from an
  ``s3://BUCKET/PREFIX`` URL and ``OFFMAPS_S3_*`` or ``AWS_*`` variables); they presign with
  S3's own SigV4 signatures. boto3 is imported only when one of these names is first used.

Files too big for one request come in resumable, hash-checked parts (:class:`BlobUploads`,
:class:`ObjectUploads`).

Range-addressed readers (PMTiles) read through a :class:`ByteSource`: :class:`FileByteSource`,
:class:`BytesByteSource` or :class:`ObjectByteSource`.
"""

from typing import TYPE_CHECKING, Any

from offmaps.storage.base import (
    BatchBlobStore,
    BlobRef,
    BlobStore,
    PresigningBlobStore,
    check_blob_key,
)
from offmaps.storage.keys import (
    MAX_KEY_BYTES,
    MAX_KEY_SEGMENTS,
    MAX_SEGMENT_BYTES,
    check_key_prefix,
    check_object_key,
)
from offmaps.storage.local import LocalBlobStore
from offmaps.storage.local_objects import LocalObjectStore
from offmaps.storage.memory import MemoryBlobStore
from offmaps.storage.memory_objects import MemoryObjectStore
from offmaps.storage.objects import ObjectInfo, ObjectStore
from offmaps.storage.prefixed import PrefixedObjectStore, prefixed
from offmaps.storage.presign import MAX_PRESIGN_EXPIRY, PresignedURL, SignedBlobURLs, URLSigner
from offmaps.storage.ranges import (
    MAX_RANGE_LENGTH,
    BytesByteSource,
    ByteSource,
    FileByteSource,
    ObjectByteSource,
    check_range,
)
from offmaps.storage.sqlite import MAX_SQLITE_BLOB_BYTES, SQLiteBlobStore, SQLiteConnections
from offmaps.storage.uploads import (
    BlobUploads,
    ObjectUploads,
    ResumableUploads,
    UploadPart,
    UploadState,
)

if TYPE_CHECKING:
    from offmaps.storage.s3 import S3BlobStore, S3Config, S3ObjectStore

_S3_NAMES = frozenset({"S3BlobStore", "S3Config", "S3ObjectStore"})


if not TYPE_CHECKING:  # mypy sees the imports above, and flags other names as missing

    def __getattr__(name: str) -> Any:
        """The S3 stores, imported on first use: boto3 is an optional dependency."""
        if name in _S3_NAMES:
            try:
                from offmaps.storage import s3  # noqa: PLC0415 - boto3 only when asked for
            except ImportError as exc:
                raise ImportError(
                    f"offmaps.storage.{name} needs boto3: install offmaps with the s3 extra "
                    "(pip install 'offmaps[s3]')"
                ) from exc
            return getattr(s3, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_KEY_BYTES",
    "MAX_KEY_SEGMENTS",
    "MAX_PRESIGN_EXPIRY",
    "MAX_RANGE_LENGTH",
    "MAX_SEGMENT_BYTES",
    "MAX_SQLITE_BLOB_BYTES",
    "BatchBlobStore",
    "BlobRef",
    "BlobStore",
    "BlobUploads",
    "ByteSource",
    "BytesByteSource",
    "FileByteSource",
    "LocalBlobStore",
    "LocalObjectStore",
    "MemoryBlobStore",
    "MemoryObjectStore",
    "ObjectByteSource",
    "ObjectInfo",
    "ObjectStore",
    "ObjectUploads",
    "PrefixedObjectStore",
    "PresignedURL",
    "PresigningBlobStore",
    "ResumableUploads",
    "S3BlobStore",
    "S3Config",
    "S3ObjectStore",
    "SQLiteBlobStore",
    "SQLiteConnections",
    "SignedBlobURLs",
    "URLSigner",
    "UploadPart",
    "UploadState",
    "check_blob_key",
    "check_key_prefix",
    "check_object_key",
    "check_range",
    "prefixed",
]
