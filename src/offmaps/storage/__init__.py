"""Content-addressed blob storage: bytes stored once under their SHA-256 (attachments, ...).

Layer 1 of DESIGN.md: imports :mod:`offmaps.errors` only. Keys are exactly 64 lowercase hex
characters; anything else is refused before it reaches a filesystem. Stores implement the
:class:`BlobStore` protocol: :class:`LocalBlobStore` (a folder) and :class:`MemoryBlobStore`.
"""

from offmaps.storage.base import BlobRef, BlobStore, check_blob_key
from offmaps.storage.local import LocalBlobStore
from offmaps.storage.memory import MemoryBlobStore

__all__ = ["BlobRef", "BlobStore", "LocalBlobStore", "MemoryBlobStore", "check_blob_key"]
