"""The keyed object store protocol and its values: bytes under a path-like key, S3's model.

Where :class:`~offmaps.storage.base.BlobStore` names bytes by their SHA-256, an
:class:`ObjectStore` names them by a key the caller chooses (``jobs/42/package.zip``,
``tiles/osm/3/4/2.png``), and can read a byte range of them, list them by prefix and hand out
presigned URLs. Keys are checked by :mod:`offmaps.storage.keys` before anything else happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from offmaps.storage._stream import Chunks
from offmaps.storage.presign import PresignedURL

__all__ = ["ObjectInfo", "ObjectStore"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one stored object without reading it.

    Attributes:
        key: the object's key (relative to the store it was asked of).
        size: its size in bytes.
        etag: an opaque tag that changes whenever the object is put again (HTTP ``ETag``).
        modified: when it was last put (UTC).
        sha256: the SHA-256 of its bytes when the store knows it without reading them again
            (always on what ``put`` and ``put_stream`` return; a local folder does not record
            it for ``head``, nor know it when ``put_file`` moved a file in without reading it).
    """

    key: str
    size: int
    etag: str
    modified: datetime
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"an object size cannot be negative: {self.size}")


@runtime_checkable
class ObjectStore(Protocol):
    """Bytes stored under keys: relative POSIX paths of safe segments (``a/b/c.png``).

    Rules every implementation keeps, checked by the contract suite in
    ``tests/storage/test_objects.py``:

    * every method checks its key (or prefix) first and raises ``InvalidObjectKeyError`` for a
      malformed one, before touching any file;
    * a put (``put``, ``put_stream``, ``put_file``) is atomic: readers see the old bytes or the
      new ones, never a mix, and a put that fails (a stream raising, ``max_size`` exceeded, a
      full disk) leaves the old value, or nothing; concurrent puts of one key end with one of
      their values, whole;
    * ``a`` and ``a/b`` cannot both be objects (``ObjectKeyConflictError``), as in a folder;
      deleting the last object below ``a/`` frees ``a`` again;
    * ``get``, ``get_range``, ``open`` and ``head`` raise ``ObjectNotFoundError`` for a missing
      key; ``delete`` of a missing key does nothing (as S3's does: a retried or racing delete is
      not an error);
    * implementations are safe to share between threads.
    """

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing what was there."""
        ...

    def put_stream(self, key: str, stream: Chunks, *, max_size: int | None = None) -> ObjectInfo:
        """Store the bytes read from a binary file or yielded by an iterable under ``key``.

        Raises:
            ObjectTooLargeError: more than ``max_size`` bytes came; nothing was stored.
        """
        ...

    def put_file(self, key: str, path: Path | str) -> ObjectInfo:
        """Move the local file ``path`` in, as the object under ``key``.

        For work that needs real files (SQLite writers, archive writers): the file is made in a
        scratch folder, then handed over whole. A store may take the file itself (a local
        folder on the same filesystem renames it: no copy) or copy its bytes (memory, S3, or
        another filesystem); either way the file is gone from ``path`` once this returns. When
        the object cannot be stored, nothing is, and the file stays at ``path``.

        Raises:
            StorageError: ``path`` is missing, unreadable, a symbolic link or not a regular
                file, or the file could not be moved out of it.
        """
        ...

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the object from ``offset``: fewer when the object ends
        first, none from past its end.

        Raises:
            InvalidByteRangeError: a negative or non-integer offset or length, or a length over
                :data:`~offmaps.storage.ranges.MAX_RANGE_LENGTH` (read more with ``open``).
        """
        ...

    def open(self, key: str) -> BinaryIO:
        """A binary file to stream the object from; the caller closes it."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """What the store knows about the object, without reading it."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix`` (a plain string prefix, as S3's:
        ``tiles/1`` selects ``tiles/1/0/0.png`` and ``tiles/10/...``), in ascending key order."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; nothing happens when there is none."""
        ...

    def presign_get(self, key: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder GET the object until ``expires`` from now."""
        ...

    def presign_put(self, key: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder PUT the object until ``expires`` from now."""
        ...
