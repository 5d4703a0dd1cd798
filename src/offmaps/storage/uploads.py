"""Resumable, hash-checked attachment uploads from devices.

A device sends an attachment's bytes in one or more parts, each from the offset the server
already has; when all have come, they must hash to the SHA-256 the attachment is named by, and
only then enter the blob store. Parts wait in ``folder/<replica>/<sha256>.part`` (the server's
``DATA/sync/uploads``), so an upload cut by a lost connection goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from offmaps.errors import BlobIntegrityError, BlobTooLargeError, UploadOffsetError
from offmaps.storage import BlobStore, check_blob_key

__all__ = ["AttachmentUploads", "UploadPart", "UploadState"]

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UploadState:
    """How much of an attachment the server has.

    Attributes:
        sha256: the attachment's key.
        received: bytes the server has.
        complete: whether the attachment is stored whole (in the blob store).
    """

    sha256: str
    received: int
    complete: bool


class AttachmentUploads:
    """Parts of attachments on their way into ``blobs``.

    Args:
        folder: where parts wait.
        blobs: where whole attachments go.
        max_bytes: the largest attachment accepted.
    """

    def __init__(self, folder: Path, blobs: BlobStore, *, max_bytes: int) -> None:
        self.folder = folder
        self.blobs = blobs
        self.max_bytes = max_bytes

    def _part(self, replica_id: str, sha256: str) -> Path:
        return self.folder / replica_id / f"{check_blob_key(sha256)}.part"

    def state(self, replica_id: str, sha256: str) -> UploadState:
        """How much of attachment ``sha256`` the server has, from this replica."""
        if self.blobs.exists(sha256):
            return UploadState(sha256, self.blobs.size(sha256), complete=True)
        path = self._part(replica_id, sha256)
        return UploadState(sha256, path.stat().st_size if path.exists() else 0, complete=False)

    def open_part(self, replica_id: str, sha256: str, *, offset: int, total: int) -> UploadPart:
        """Start taking bytes of attachment ``sha256`` (``total`` bytes in all) at ``offset``.

        Raises:
            BlobTooLargeError: ``total`` is over the limit.
            UploadOffsetError: ``offset`` is not what the server has.
        """
        if total > self.max_bytes:
            raise BlobTooLargeError(
                f"the attachment is {total:,} bytes, over the limit of {self.max_bytes:,}",
                max_size=self.max_bytes,
            )
        if self.blobs.exists(sha256):
            return UploadPart(self, sha256, None, total, total)
        path = self._part(replica_id, sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        have = path.stat().st_size if path.exists() else 0
        if offset != have:
            raise UploadOffsetError(
                f"the server has {have} bytes of {sha256}: send from there",
                expected=have,
                actual=offset,
            )
        return UploadPart(self, sha256, path, have, total)


class UploadPart:
    """Bytes of one attachment being received: :meth:`write` them, then :meth:`finish`.

    Leaving the ``with`` block on an error keeps what was written whole (the next part goes on
    from there), except bytes beyond the announced total, which void the part.
    """

    def __init__(
        self, uploads: AttachmentUploads, sha256: str, path: Path | None, have: int, total: int
    ) -> None:
        self._uploads = uploads
        self.sha256 = sha256
        self._path = path
        self.received = have
        self.total = total
        self._out: BinaryIO | None = path.open("ab") if path is not None else None

    def __enter__(self) -> UploadPart:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        if self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            self._out = None

    def write(self, chunk: bytes) -> None:
        """Take the next bytes.

        Raises:
            BlobTooLargeError: more than the announced total came; the part is dropped.
        """
        if self._out is None or self._path is None:
            return  # stored whole already: the bytes are not needed
        self.received += len(chunk)
        if self.received > self.total:
            self._out.close()
            self._out = None
            self._path.unlink(missing_ok=True)
            raise BlobTooLargeError(
                f"more than the announced {self.total:,} bytes came", max_size=self.total
            )
        self._out.write(chunk)

    def finish(self) -> UploadState:
        """What the server has now; with every byte there, checks the hash and stores the blob.

        Raises:
            BlobIntegrityError: the bytes do not hash to the attachment's SHA-256; they are
                dropped, to be sent again.
        """
        self._close()
        if self._path is None:
            return UploadState(self.sha256, self.total, complete=True)
        if self.received < self.total:
            return UploadState(self.sha256, self.received, complete=False)
        digest = hashlib.sha256()
        with self._path.open("rb") as source:
            while block := source.read(_CHUNK):
                digest.update(block)
        if digest.hexdigest() != self.sha256:
            self._path.unlink(missing_ok=True)
            raise BlobIntegrityError(
                f"the bytes sent do not hash to {self.sha256}: send them again"
            )
        with self._path.open("rb") as source:
            self._uploads.blobs.put_stream(source)
        self._path.unlink(missing_ok=True)
        return UploadState(self.sha256, self.received, complete=True)
