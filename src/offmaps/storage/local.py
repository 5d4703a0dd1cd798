"""Blobs as files in a local folder: ``ROOT/ab/cd/<sha256>``, written atomically."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from offmaps.errors import BlobIntegrityError, BlobNotFoundError, StorageError
from offmaps.storage._stream import CHUNK_SIZE, check_max_size, iter_chunks
from offmaps.storage.base import BlobRef, check_blob_key
from offmaps.storage.keys import check_object_key
from offmaps.storage.presign import SignedBlobURLs, URLSigner

__all__ = ["LocalBlobStore"]

_PART = re.compile(r"[0-9a-f]{2}")
_KEY = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".blob-"
_TEMP_SUFFIX = ".partial"


class LocalBlobStore(SignedBlobURLs):
    """Blobs kept as files under ``root``, two folder levels deep: ``root/ab/cd/abcd...``.

    A put writes a hidden ``.blob-*.partial`` file in ``root``, hashing as it writes, syncs it to
    disk and renames it into place, so a blob file is complete or absent. Folders are created on
    first use. Every step is a single atomic filesystem operation, which makes the store safe to
    share between threads (and processes). On a dedup hit the stored bytes are compared with the
    new ones, and a damaged stored copy is replaced by the good one.

    Args:
        root: the store's folder; created on the first put.
        signer: signs presigned URLs of blobs (``<signer's base URL>/<url_prefix>/<sha256>``),
            which the offmaps server's ``/storage`` route checks and serves; None: the store
            hands out none.
        url_prefix: the key prefix of its presigned URLs, telling its blobs from other stores'.
    """

    def __init__(
        self, root: Path | str, *, signer: URLSigner | None = None, url_prefix: str = "blobs"
    ) -> None:
        self.root = Path(root)
        self.signer = signer
        self.url_prefix = check_object_key(url_prefix)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _file(self, sha256: str) -> Path:
        key = check_blob_key(sha256)
        return self.root / key[:2] / key[2:4] / key

    # --- writing ---------------------------------------------------------------------------

    def put(self, data: bytes) -> BlobRef:
        """Store ``data``; returns its reference."""
        return self.put_stream((data,))

    def put_stream(
        self,
        stream: BinaryIO | Iterable[bytes | bytearray | memoryview],
        *,
        max_size: int | None = None,
    ) -> BlobRef:
        """Store the bytes of a binary file or an iterable of chunks, hashing while writing.

        Raises:
            BlobTooLargeError: more than ``max_size`` bytes came; the temporary file is removed.
            StorageError: the filesystem failed (full disk, read-only, permissions).
        """
        check_max_size(max_size)
        temp = self._temp_file()
        try:
            digest = hashlib.sha256()
            size = 0
            with temp.open("r+b") as out:
                for chunk in iter_chunks(stream, max_size):
                    digest.update(chunk)
                    size += len(chunk)
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise _write_error(self.root, exc) from exc
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise _write_error(self.root, exc) from exc
            ref = BlobRef(digest.hexdigest(), size)
            self._commit(temp, ref)
        finally:
            temp.unlink(missing_ok=True)
        return ref

    def _temp_file(self) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=self.root)
        except OSError as exc:
            raise _write_error(self.root, exc) from exc
        os.close(fd)
        return Path(name)

    def _commit(self, temp: Path, ref: BlobRef) -> None:
        target = self._file(ref.sha256)
        if _same_bytes(target, temp, ref.size):
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
            _sync_folder(target.parent)
        except OSError as exc:
            raise StorageError(f"cannot store blob {ref.sha256}: {exc.strerror or exc}") from exc

    # --- reading ---------------------------------------------------------------------------

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``."""
        with self.open(sha256) as stream:
            return stream.read()

    def open(self, sha256: str) -> BinaryIO:
        """A binary file to read the blob from; the caller closes it."""
        path = self._file(sha256)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {sha256}", key=sha256) from None
        except OSError as exc:
            raise StorageError(f"cannot read blob {sha256}: {exc.strerror or exc}") from exc

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under ``sha256``."""
        return self._file(sha256).is_file()

    def size(self, sha256: str) -> int:
        """The size of a blob in bytes."""
        path = self._file(sha256)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {sha256}", key=sha256) from None

    def iter_keys(self) -> Iterator[str]:
        """Yield the key of every stored blob, in ascending order."""
        for first in _subfolders(self.root):
            for second in _subfolders(first):
                prefix = first.name + second.name
                names = sorted(entry.name for entry in second.iterdir())
                for name in names:
                    if name.startswith(prefix) and _KEY.fullmatch(name):
                        yield name

    def verify(self, sha256: str) -> None:
        """Hash a blob's bytes again; raises ``BlobIntegrityError`` when they do not match."""
        digest = hashlib.sha256()
        with self.open(sha256) as stream:
            while chunk := stream.read(CHUNK_SIZE):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            msg = f"blob {sha256} is damaged: its bytes hash to {digest.hexdigest()}"
            raise BlobIntegrityError(msg)

    # --- removing --------------------------------------------------------------------------

    def delete(self, sha256: str) -> None:
        """Remove a blob. Its folders stay, to keep deletes from racing with puts."""
        path = self._file(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {sha256}", key=sha256) from None
        except OSError as exc:
            raise StorageError(f"cannot delete blob {sha256}: {exc.strerror or exc}") from exc


def _write_error(root: Path, exc: OSError) -> StorageError:
    return StorageError(f"cannot write a blob in {root}: {exc.strerror or exc}")


def _same_bytes(stored: Path, new: Path, size: int) -> bool:
    """Whether ``stored`` exists and holds exactly the bytes of ``new``."""
    try:
        if stored.stat().st_size != size:
            return False
        with stored.open("rb") as left, new.open("rb") as right:
            while True:
                a = left.read(CHUNK_SIZE)
                if a != right.read(CHUNK_SIZE):
                    return False
                if not a:
                    return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot read {stored}: {exc.strerror or exc}") from exc


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open folders)."""
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _subfolders(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        return []
    return [entry for entry in entries if _PART.fullmatch(entry.name) and entry.is_dir()]
