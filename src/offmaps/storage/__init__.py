"""Byte storage: content-addressed blobs, keyed objects, and the byte-range seam.

Layer 1 of DESIGN.md: imports :mod:`offmaps.errors` only. Two kinds of store, each behind a
protocol with one contract suite for every implementation:

* :class:`BlobStore`: bytes stored once under their SHA-256 (attachments). Keys are exactly 64
  lowercase hex characters. :class:`LocalBlobStore` (a folder), :class:`MemoryBlobStore`.
* :class:`ObjectStore`: bytes under keys the caller chooses (``jobs/42/package.zip``), with
  ranged reads, listing by prefix and presigned GET/PUT URLs, S3's model.
  :class:`LocalObjectStore` (a folder, never following symbolic links), :class:`MemoryObjectStore`,
  and :func:`prefixed` views of one prefix (a job's output area). Keys are relative POSIX paths
  of safe segments, checked by :func:`check_object_key` before anything touches a file.
  Local and memory stores presign with HMAC tokens (:class:`URLSigner`).

Range-addressed readers (PMTiles) read through a :class:`ByteSource`: :class:`FileByteSource`,
:class:`BytesByteSource` or :class:`ObjectByteSource`.
"""

from offmaps.storage.base import BlobRef, BlobStore, check_blob_key
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
from offmaps.storage.presign import MAX_PRESIGN_EXPIRY, PresignedURL, URLSigner
from offmaps.storage.ranges import (
    MAX_RANGE_LENGTH,
    BytesByteSource,
    ByteSource,
    FileByteSource,
    ObjectByteSource,
    check_range,
)

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_KEY_SEGMENTS",
    "MAX_PRESIGN_EXPIRY",
    "MAX_RANGE_LENGTH",
    "MAX_SEGMENT_BYTES",
    "BlobRef",
    "BlobStore",
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
    "PrefixedObjectStore",
    "PresignedURL",
    "URLSigner",
    "check_blob_key",
    "check_key_prefix",
    "check_object_key",
    "check_range",
    "prefixed",
]
