"""Resumable, hash-checked uploads: files named by their SHA-256, sent in parts.

A client sends a file's bytes in one or more parts, each from the offset the server already
has; when all have come, they must hash to the SHA-256 the file is named by, and only then are
they stored. Parts wait in ``folder/<owner>/<sha256>.part`` on the server's disk, so an upload
cut by a lost connection goes on where it stopped. Where whole files go is the subclass's:
:class:`BlobUploads` into a blob store (devices' attachments, ``DATA/sync/uploads``),
:class:`ObjectUploads` into an object store under the SHA-256 as key (tile archives given to a
cache import, in the server's object store so any process's job can read them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from offmaps.errors import BlobIntegrityError, BlobTooLargeError, StorageError, UploadOffsetError
from offmaps.storage.base import BlobStore, check_blob_key
from offmaps.storage.objects import ObjectStore

__all__ = ["BlobUploads", "ObjectUploads", "ResumableUploads", "UploadPart", "UploadState"]

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UploadState:
    """How much of a file the server has.

    Attributes:
        sha256: the file's key.
        received: bytes the server has.
        complete: whether the file is stored whole.
    """

    sha256: str
    received: int
    complete: bool


class ResumableUploads:
    """Parts of files on their way into a store.

    Args:
        folder: where parts wait.
        max_bytes: the largest file accepted.
        noun: what a file is called in errors ("attachment", "tile archive").
    """

    def __init__(self, folder: Path, *, max_bytes: int, noun: str) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.noun = noun

    def stored_size(self, sha256: str) -> int | None:
        """The size of file ``sha256`` if it is stored whole, else None."""
        raise NotImplementedError

    def store(self, sha256: str, path: Path) -> None:
        """Store the whole, checked file at ``path`` as ``sha256`` (the part may be moved)."""
        raise NotImplementedError

    def remove_older_than(self, cutoff: float) -> None:
        """Remove the parts of uploads last written before ``cutoff`` (seconds since the
        epoch): uploads nobody finished."""
        for part in self.folder.glob("*/*.part"):
            with contextlib.suppress(OSError):  # removed meanwhile
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    def _part(self, owner: str, sha256: str) -> Path:
        return self.folder / owner / f"{check_blob_key(sha256)}.part"

    def state(self, owner: str, sha256: str) -> UploadState:
        """How much of file ``sha256`` the server has, from ``owner`` (a safe path segment:
        a replica's id, a hash of a user's name)."""
        size = self.stored_size(sha256)
        if size is not None:
            return UploadState(sha256, size, complete=True)
        path = self._part(owner, sha256)
        return UploadState(sha256, path.stat().st_size if path.exists() else 0, complete=False)

    def open_part(self, owner: str, sha256: str, *, offset: int, total: int) -> UploadPart:
        """Start taking bytes of file ``sha256`` (``total`` bytes in all) at ``offset``.

        Raises:
            BlobTooLargeError: ``total`` is over the limit.
            UploadOffsetError: ``offset`` is not what the server has.
        """
        if total > self.max_bytes:
            raise BlobTooLargeError(
                f"the {self.noun} is {total:,} bytes, over the limit of {self.max_bytes:,}",
                max_size=self.max_bytes,
            )
        if self.stored_size(sha256) is not None:
            return UploadPart(self, sha256, None, total, total)
        path = self._part(owner, sha256)
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
    """Bytes of one file being received: :meth:`write` them, then :meth:`finish`.

    Leaving the ``with`` block on an error keeps what was written whole (the next part goes on
    from there), except bytes beyond the announced total, which void the part.
    """

    def __init__(
        self, uploads: ResumableUploads, sha256: str, path: Path | None, have: int, total: int
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
            BlobIntegrityError: the bytes do not hash to the file's SHA-256; they are
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
        self._uploads.store(self.sha256, self._path)
        self._path.unlink(missing_ok=True)
        return UploadState(self.sha256, self.received, complete=True)


class BlobUploads(ResumableUploads):
    """Uploads into a blob store (devices' attachments).

    Args:
        folder: where parts wait.
        blobs: where whole files go.
        max_bytes: the largest file accepted.
        noun: what a file is called in errors.
    """

    def __init__(
        self, folder: Path, blobs: BlobStore, *, max_bytes: int, noun: str = "attachment"
    ) -> None:
        super().__init__(folder, max_bytes=max_bytes, noun=noun)
        self.blobs = blobs

    def stored_size(self, sha256: str) -> int | None:
        """The blob's size, if stored."""
        return self.blobs.size(sha256) if self.blobs.exists(sha256) else None

    def store(self, sha256: str, path: Path) -> None:
        """Put the file's bytes into the blob store."""
        with path.open("rb") as source:
            self.blobs.put_stream(source)


class ObjectUploads(ResumableUploads):
    """Uploads into an object store, each under its SHA-256 as key (give a prefixed view).

    Args:
        folder: where parts wait.
        objects: where whole files go.
        max_bytes: the largest file accepted.
        noun: what a file is called in errors.
    """

    def __init__(
        self, folder: Path, objects: ObjectStore, *, max_bytes: int, noun: str = "file"
    ) -> None:
        super().__init__(folder, max_bytes=max_bytes, noun=noun)
        self.objects = objects

    def stored_size(self, sha256: str) -> int | None:
        """The object's size, if stored."""
        key = check_blob_key(sha256)
        return self.objects.head(key).size if self.objects.exists(key) else None

    def store(self, sha256: str, path: Path) -> None:
        """Move the file into the object store (a rename on the local folder store)."""
        self.objects.put_file(sha256, path)

    def remove_older_than(self, cutoff: float) -> None:
        """Remove the parts, and the whole files, stored before ``cutoff``: files that no one
        took (a tile archive no import succeeded with)."""
        super().remove_older_than(cutoff)
        for info in list(self.objects.list()):
            if info.modified.timestamp() < cutoff:
                with contextlib.suppress(StorageError):  # removed by another process
                    self.objects.delete(info.key)
