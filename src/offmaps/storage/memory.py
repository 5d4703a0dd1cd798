"""Blobs in a dictionary: for tests, and for short-lived stores."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from offmaps.errors import BlobIntegrityError, BlobNotFoundError
from offmaps.storage._stream import check_max_size, iter_chunks
from offmaps.storage.base import BlobRef, check_blob_key

__all__ = ["MemoryBlobStore"]


class MemoryBlobStore:
    """Blobs held in memory by key; safe to share between threads."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryBlobStore({len(self._blobs)} blobs)"

    def put(self, data: bytes) -> BlobRef:
        """Store ``data``; returns its reference."""
        return self.put_stream((data,))

    def put_stream(
        self,
        stream: BinaryIO | Iterable[bytes | bytearray | memoryview],
        *,
        max_size: int | None = None,
    ) -> BlobRef:
        """Store the bytes of a binary file or an iterable of chunks.

        Raises:
            BlobTooLargeError: more than ``max_size`` bytes came; nothing was stored.
        """
        check_max_size(max_size)
        data = b"".join(iter_chunks(stream, max_size))
        ref = BlobRef(hashlib.sha256(data).hexdigest(), len(data))
        with self._lock:
            # on a dedup hit the bytes are compared: a damaged copy is replaced
            if self._blobs.get(ref.sha256) != data:
                self._blobs[ref.sha256] = data
        return ref

    def _bytes(self, sha256: str) -> bytes:
        key = check_blob_key(sha256)
        with self._lock:
            data = self._blobs.get(key)
        if data is None:
            raise BlobNotFoundError(f"no blob {key}", key=key)
        return data

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``."""
        return self._bytes(sha256)

    def open(self, sha256: str) -> BinaryIO:
        """A binary file over the blob's bytes."""
        return io.BytesIO(self._bytes(sha256))

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under ``sha256``."""
        key = check_blob_key(sha256)
        with self._lock:
            return key in self._blobs

    def size(self, sha256: str) -> int:
        """The size of a blob in bytes."""
        return len(self._bytes(sha256))

    def iter_keys(self) -> Iterator[str]:
        """Yield the key of every stored blob, in ascending order (a snapshot)."""
        with self._lock:
            keys = sorted(self._blobs)
        yield from keys

    def verify(self, sha256: str) -> None:
        """Hash a blob's bytes again; raises ``BlobIntegrityError`` when they do not match."""
        actual = hashlib.sha256(self._bytes(sha256)).hexdigest()
        if actual != sha256:
            raise BlobIntegrityError(f"blob {sha256} is damaged: its bytes hash to {actual}")

    def delete(self, sha256: str) -> None:
        """Remove a blob."""
        key = check_blob_key(sha256)
        with self._lock:
            if self._blobs.pop(key, None) is None:
                raise BlobNotFoundError(f"no blob {key}", key=key)
