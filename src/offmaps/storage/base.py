"""The blob store protocol and its values: content-addressed bytes, keyed by SHA-256."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from offmaps.errors import InvalidBlobKeyError

if TYPE_CHECKING:
    from offmaps.storage.presign import PresignedURL

__all__ = ["BatchBlobStore", "BlobRef", "BlobStore", "PresigningBlobStore", "check_blob_key"]

_KEY = re.compile(r"[0-9a-f]{64}")


def check_blob_key(key: object) -> str:
    """``key`` if it is a blob key: exactly 64 lowercase hexadecimal characters.

    Anything else (``../../etc/passwd``, uppercase hex, a trailing newline, a NUL, bytes) raises
    ``InvalidBlobKeyError`` before any store could touch a file with it.
    """
    if isinstance(key, str) and _KEY.fullmatch(key):
        return key
    raise InvalidBlobKeyError(
        f"a blob key is 64 lowercase hex characters (SHA-256): not {_shown(key)}"
    )


def _shown(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 80 else f"{text[:77]}..."


@dataclass(frozen=True, slots=True)
class BlobRef:
    """What a store returns for stored bytes: their SHA-256 (the key) and their size in bytes."""

    sha256: str
    size: int

    def __post_init__(self) -> None:
        check_blob_key(self.sha256)
        if self.size < 0:
            raise ValueError(f"a blob size cannot be negative: {self.size}")


@runtime_checkable
class BlobStore(Protocol):
    """Bytes stored once under the SHA-256 of their content.

    Putting bytes that are stored already stores nothing new and returns the same
    :class:`BlobRef`. Every method taking a key raises ``InvalidBlobKeyError`` for a malformed
    one and, except :meth:`exists`, ``BlobNotFoundError`` for a missing one. Implementations are
    safe to share between threads.
    """

    def put(self, data: bytes) -> BlobRef:
        """Store ``data``; returns its reference."""
        ...

    def put_stream(
        self,
        stream: BinaryIO | Iterable[bytes | bytearray | memoryview],
        *,
        max_size: int | None = None,
    ) -> BlobRef:
        """Store the bytes read from a binary file or yielded by an iterable, hashing as they come.

        Raises:
            BlobTooLargeError: more than ``max_size`` bytes came; nothing was stored.
        """
        ...

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``."""
        ...

    def open(self, sha256: str) -> BinaryIO:
        """A binary file to read the blob from; the caller closes it."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under ``sha256``."""
        ...

    def size(self, sha256: str) -> int:
        """The size of a blob in bytes."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove a blob."""
        ...

    def iter_keys(self) -> Iterator[str]:
        """Yield the key of every stored blob, in ascending order."""
        ...

    def verify(self, sha256: str) -> None:
        """Hash a blob's bytes again; raises ``BlobIntegrityError`` when they do not match."""
        ...


@runtime_checkable
class BatchBlobStore(BlobStore, Protocol):
    """A blob store that writes many blobs at once for the cost of about one (a transaction)."""

    def put_many(self, blobs: Iterable[bytes]) -> list[BlobRef]:
        """Store every blob (all or none); their references, in order."""
        ...


@runtime_checkable
class PresigningBlobStore(BlobStore, Protocol):
    """A blob store that hands out URLs to read or write one blob without offmaps in the way:
    S3's own presigned URLs, or a local folder's HMAC tokens that the offmaps server checks."""

    def presign_get(self, sha256: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder GET the blob until ``expires`` from now."""
        ...

    def presign_put(self, sha256: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder PUT bytes for the blob until ``expires`` from now; bytes
        that do not hash to ``sha256`` are refused."""
        ...
