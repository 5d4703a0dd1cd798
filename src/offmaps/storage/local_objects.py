"""Keyed objects as files in a local folder: key ``a/b/c.png`` is the file ``ROOT/a/b/c.png``.

Every path is opened one component at a time relative to the folder's descriptor, with
``O_NOFOLLOW`` (the ``openat`` approach of ``containers/_folder.py``), so a symbolic link planted
in the folder (``ROOT/evil -> /etc``) is never followed: reading through it finds nothing, and
writing through it is refused. Keys are checked by :mod:`offmaps.storage.keys` first; no valid
key starts with ``.``, which leaves ``ROOT/.tmp/`` for the store's own temporary files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http import HTTPMethod
from pathlib import Path
from typing import BinaryIO

from offmaps.errors import (
    InvalidObjectKeyError,
    ObjectKeyConflictError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
)
from offmaps.storage._stream import Chunks, check_max_size, iter_chunks, open_source_file
from offmaps.storage.keys import check_key_prefix, check_object_key
from offmaps.storage.objects import ObjectInfo
from offmaps.storage.presign import PresignedURL, URLSigner
from offmaps.storage.ranges import check_range

__all__ = ["LocalObjectStore"]

_TEMP_FOLDER = ".tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# "no regular file or folder there": absent, a file where a folder was expected, a symbolic
# link refused by O_NOFOLLOW
_ABSENT = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}
_PUT_ATTEMPTS = 5  # a racing delete may remove a folder between its opening and the rename


class LocalObjectStore:
    """Objects kept as files under ``root``, one folder level per key segment.

    A put writes a file in ``root/.tmp/``, hashing as it writes, syncs it to disk and renames it
    into place, so an object file is whole or absent, and concurrent puts of one key leave one
    of their values. Folders are made on the way and removed when a delete empties them.
    Temporary files of a process that died stay in ``root/.tmp/`` (never listed); they may be
    removed whenever no put is running.

    Presigned URLs are signed by ``signer`` (HMAC tokens); the HTTP route that serves them comes
    later and checks them with :meth:`verify_presigned`.

    Args:
        root: the store's folder (it may be a symbolic link itself); made on the first put.
        signer: signs and checks presigned URLs; by default one with a random secret, whose URLs
            only this store object accepts.
    """

    def __init__(self, root: Path | str, *, signer: URLSigner | None = None) -> None:
        self.root = Path(root)
        self.signer = signer if signer is not None else URLSigner()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    # --- folders ---------------------------------------------------------------------------

    def _open_root(self, *, create: bool) -> int | None:
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:  # pragma: no cover - removed right after it was made
                raise self._error("open", str(self.root), OSError(errno.ENOENT, "")) from None
            return None
        except OSError as exc:
            raise self._error("open", str(self.root), exc) from exc

    def _folder_chain(self, parts: list[str], *, create: bool) -> list[int] | None:
        """Descriptors of the root and of each folder of ``parts`` below it, or None when one
        is missing (and, with ``create``, vanished right after it was made). On error every
        descriptor is closed."""
        root = self._open_root(create=create)
        if root is None:
            return None
        chain = [root]
        try:
            for depth, name in enumerate(parts):
                child = self._open_folder(chain[-1], name, create=create, key=parts[: depth + 1])
                if child is None:
                    _close(chain)
                    return None
                chain.append(child)
        except BaseException:
            _close(chain)
            raise
        return chain

    def _open_folder(self, parent: int, name: str, *, create: bool, key: list[str]) -> int | None:
        """A descriptor of the folder ``name`` in ``parent``, never through a symbolic link."""
        for attempt in range(2):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                error = exc
            if error.errno == errno.ENOENT:
                if not create or attempt:
                    return None
                try:
                    os.mkdir(name, dir_fd=parent)
                except FileExistsError:
                    pass  # made by a racing put
                except OSError as exc:
                    raise self._error("make the folder", "/".join(key), exc) from exc
                continue
            if error.errno in (errno.ENOTDIR, errno.ELOOP):  # a file or a symbolic link
                if not create:
                    return None
                where = "/".join(key)
                raise ObjectKeyConflictError(
                    f"cannot store below {where!r}: it is an object (or not a folder)", key=where
                )
            raise self._error("open the folder", "/".join(key), error) from error
        return None  # pragma: no cover - the loop returns

    def _error(self, doing: str, key: str, exc: OSError) -> StorageError:
        return StorageError(
            f"{self.root}: cannot {doing} {key!r}: {exc.strerror or exc}",
        )

    # --- writing ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing what was there."""
        return self.put_stream(key, (data,))

    def put_stream(self, key: str, stream: Chunks, *, max_size: int | None = None) -> ObjectInfo:
        """Store the bytes of a binary file or an iterable of chunks under ``key``.

        Raises:
            ObjectTooLargeError: more than ``max_size`` bytes came; nothing was stored.
            ObjectKeyConflictError: ``key`` lies below an object, or objects lie below it.
            StorageError: the filesystem failed (full disk, read-only, permissions).
        """
        key = check_object_key(key)
        check_max_size(max_size)
        parts = key.split("/")
        temp_chain = self._folder_chain([_TEMP_FOLDER], create=True)
        if temp_chain is None:  # pragma: no cover - removed right after it was made
            raise StorageError(f"{self.root}: cannot make {_TEMP_FOLDER}/ for temporary files")
        temp_dir = temp_chain[-1]
        temp_name = f"{secrets.token_hex(12)}.partial"
        try:
            info = self._write_temp(key, temp_dir, temp_name, stream, max_size)
            self._move_into_place(key, parts, temp_dir, temp_name)
            return info
        finally:
            # gone after the rename; removed here on every failure
            with contextlib.suppress(OSError):
                os.unlink(temp_name, dir_fd=temp_dir)
            _close(temp_chain)

    def put_file(self, key: str, path: Path | str) -> ObjectInfo:
        """Move the local file ``path`` in, as the object under ``key``.

        On the store's filesystem the file itself is renamed into place, after it is synced to
        disk and made private (mode 0600): nothing is copied, and the info returned has no
        SHA-256, since nothing was read. On another filesystem, or when the file has other hard
        links (through which the object's bytes could change later), its bytes are copied as
        ``put_stream`` copies them, and the file is removed. When the object cannot be stored,
        nothing is, and the file stays at ``path``.

        Raises:
            ObjectKeyConflictError: ``key`` lies below an object, or objects lie below it.
            StorageError: ``path`` is missing, unreadable, a symbolic link or not a regular
                file; or the filesystem failed.
        """
        key = check_object_key(key)
        with open_source_file(path, key) as source:
            moved = self._move_file_in(key, source.fileno(), Path(path))
            if moved is not None:
                return moved
            info = self.put_stream(key, source)
        try:
            os.unlink(path)
        except OSError as exc:
            # stored but not moved: take it out again, so that the caller may retry
            with contextlib.suppress(StorageError):
                self.delete(key)
            raise StorageError(
                f"cannot move {str(path)!r} in as {key!r}: {exc.strerror or exc}"
            ) from exc
        return info

    def _move_file_in(self, key: str, fd: int, path: Path) -> ObjectInfo | None:
        """Rename the file open as ``fd`` at ``path`` into place; ``None`` when it must be
        copied instead (another filesystem, other hard links)."""
        try:
            source = os.fstat(fd)
        except OSError as exc:  # pragma: no cover - fstat of an open file
            raise self._error("store", key, exc) from exc
        if source.st_nlink != 1:
            return None
        temp_chain = self._folder_chain([_TEMP_FOLDER], create=True)
        if temp_chain is None:  # pragma: no cover - removed right after it was made
            raise StorageError(f"{self.root}: cannot make {_TEMP_FOLDER}/ for temporary files")
        temp_dir = temp_chain[-1]
        temp_name = f"{secrets.token_hex(12)}.partial"
        in_temp = placed = False
        try:
            if os.fstat(temp_dir).st_dev != source.st_dev:
                return None
            try:
                os.fchmod(fd, 0o600)  # private to the owner, as every object file
                os.utime(fd)  # "modified" is when it was put
                os.fsync(fd)
                os.rename(path, temp_name, dst_dir_fd=temp_dir)
            except OSError as exc:
                if exc.errno == errno.EXDEV:  # a bind mount of one filesystem
                    return None
                raise self._error("store", key, exc) from exc
            in_temp = True
            try:
                moved = os.stat(temp_name, dir_fd=temp_dir, follow_symlinks=False)
            except OSError as exc:
                raise self._error("store", key, exc) from exc
            if (moved.st_dev, moved.st_ino) != (source.st_dev, source.st_ino):
                raise StorageError(f"cannot store {str(path)!r} as {key!r}: it was replaced")
            self._move_into_place(key, key.split("/"), temp_dir, temp_name)
            placed = True
            return _info(key, moved)
        finally:
            if in_temp and not placed:  # give the file back; else it waits in .tmp/
                with contextlib.suppress(OSError):
                    os.rename(temp_name, path, src_dir_fd=temp_dir)
            _close(temp_chain)

    def _write_temp(
        self, key: str, temp_dir: int, temp_name: str, stream: Chunks, max_size: int | None
    ) -> ObjectInfo:
        def too_large(limit: int) -> ObjectTooLargeError:
            return ObjectTooLargeError(
                f"object {key!r} is larger than the {limit:,} bytes allowed",
                key=key,
                max_size=limit,
            )

        try:
            # private to the owner, as the blob store's files are
            fd = os.open(temp_name, _WRITE_FLAGS, 0o600, dir_fd=temp_dir)
        except OSError as exc:
            raise self._error("write", key, exc) from exc
        digest = hashlib.sha256()
        try:
            for chunk in iter_chunks(stream, max_size, too_large=too_large):
                digest.update(chunk)
                try:
                    _write_all(fd, chunk)
                except OSError as exc:
                    raise self._error("write", key, exc) from exc
            try:
                os.fsync(fd)
                info = os.fstat(fd)
            except OSError as exc:
                raise self._error("write", key, exc) from exc
        finally:
            os.close(fd)
        return _info(key, info, digest.hexdigest())

    def _move_into_place(self, key: str, parts: list[str], temp_dir: int, temp_name: str) -> None:
        for _ in range(_PUT_ATTEMPTS):
            chain = self._folder_chain(parts[:-1], create=True)
            if chain is None:
                continue  # a delete removed a folder right after it was made: make it again
            try:
                os.replace(temp_name, parts[-1], src_dir_fd=temp_dir, dst_dir_fd=chain[-1])
            except FileNotFoundError:
                continue  # a delete removed the (empty) folder meanwhile: make it again
            except OSError as exc:
                if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise self._error("store", key, exc) from exc
                # a folder holds the name: an empty leftover may go, else the key is taken
                try:
                    os.rmdir(parts[-1], dir_fd=chain[-1])
                except OSError:
                    raise ObjectKeyConflictError(
                        f"cannot store {key!r}: other objects are stored below it", key=key
                    ) from None
                continue
            else:
                _sync(chain[-1])
                return
            finally:
                _close(chain)
        raise StorageError(f"{self.root}: cannot store {key!r}: its folder keeps changing")

    # --- reading ---------------------------------------------------------------------------

    def _open_file(self, key: str) -> tuple[int, os.stat_result]:
        key = check_object_key(key)
        parts = key.split("/")
        chain = self._folder_chain(parts[:-1], create=False)
        if chain is None:
            raise ObjectNotFoundError(f"no object {key!r}", key=key)
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=chain[-1])
        except OSError as exc:
            if exc.errno in _ABSENT:
                raise ObjectNotFoundError(f"no object {key!r}", key=key) from None
            raise self._error("read", key, exc) from exc
        finally:
            _close(chain)
        try:
            info = os.fstat(fd)
        except OSError as exc:  # pragma: no cover - fstat of an open file
            os.close(fd)
            raise self._error("read", key, exc) from exc
        if not stat.S_ISREG(info.st_mode):  # a folder, FIFO or device is no object
            os.close(fd)
            raise ObjectNotFoundError(f"no object {key!r}", key=key)
        return fd, info

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""
        with self.open(key) as stream:
            try:
                return stream.read()
            except OSError as exc:
                raise self._error("read", key, exc) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the object from ``offset`` (see ``ObjectStore``)."""
        offset, length = check_range(offset, length)
        fd, info = self._open_file(key)
        try:
            wanted = max(0, min(length, info.st_size - offset))
            chunks: list[bytes] = []
            got = 0
            while got < wanted:
                chunk = os.pread(fd, wanted - got, offset + got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise self._error("read", key, exc) from exc
        finally:
            os.close(fd)

    def open(self, key: str) -> BinaryIO:
        """A binary file to stream the object from; the caller closes it."""
        fd, _ = self._open_file(key)
        return os.fdopen(fd, "rb")

    def head(self, key: str) -> ObjectInfo:
        """What the store knows about the object (no SHA-256: it is not recorded)."""
        key = check_object_key(key)
        parts = key.split("/")
        chain = self._folder_chain(parts[:-1], create=False)
        if chain is None:
            raise ObjectNotFoundError(f"no object {key!r}", key=key)
        try:
            info = os.stat(parts[-1], dir_fd=chain[-1], follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _ABSENT:
                raise ObjectNotFoundError(f"no object {key!r}", key=key) from None
            raise self._error("read", key, exc) from exc
        finally:
            _close(chain)
        if not stat.S_ISREG(info.st_mode):
            raise ObjectNotFoundError(f"no object {key!r}", key=key)
        return _info(key, info)

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        try:
            self.head(key)
        except ObjectNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, in ascending key order.

        Folders are read as the walk reaches them: objects put or deleted meanwhile may or may
        not be seen. Symbolic links and other entries that are not regular files are skipped.
        """
        return self._list(check_key_prefix(prefix))  # checked now, not at the first next()

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        *folders, start = prefix.split("/")
        chain = self._folder_chain(folders, create=False)
        if chain is None:
            return
        try:
            base = "".join(folder + "/" for folder in folders)
            yield from self._walk(chain[-1], base, start)
        finally:
            _close(chain)

    def _walk(self, folder: int, base: str, start: str) -> Iterator[ObjectInfo]:
        # a folder sorts as "name/": then the keys below it come out in plain string order
        entries: dict[str, bool] = {}
        try:
            with os.scandir(folder) as scan:
                for entry in scan:
                    if not entry.name.startswith(start):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        entries[entry.name + "/"] = True
                    elif entry.is_file(follow_symlinks=False):
                        entries[entry.name] = False
        except OSError as exc:
            raise self._error("list", base, exc) from exc
        for name in sorted(entries):
            key = base + name
            try:
                if entries[name]:
                    check_key_prefix(key)
                else:
                    check_object_key(key)
            except InvalidObjectKeyError:
                continue  # not one of ours: a hidden name (.tmp/), too long, ...
            if entries[name]:
                yield from self._walk_folder(folder, name[:-1], key)
                continue
            try:
                info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted meanwhile
            except OSError as exc:
                raise self._error("list", key, exc) from exc
            if stat.S_ISREG(info.st_mode):
                yield _info(key, info)

    def _walk_folder(self, parent: int, name: str, base: str) -> Iterator[ObjectInfo]:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in _ABSENT:
                return  # removed, or replaced by a link, meanwhile
            raise self._error("list", base, exc) from exc
        try:
            yield from self._walk(child, base, "")
        finally:
            os.close(child)

    # --- removing --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove the object under ``key``, and the folders this leaves empty; nothing happens
        when there is no object (a symbolic link or folder of that name is left alone)."""
        key = check_object_key(key)
        parts = key.split("/")
        chain = self._folder_chain(parts[:-1], create=False)
        if chain is None:
            return
        try:
            try:
                info = os.stat(parts[-1], dir_fd=chain[-1], follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    return
                os.unlink(parts[-1], dir_fd=chain[-1])
            except OSError as exc:
                if exc.errno in _ABSENT:
                    return
                raise self._error("delete", key, exc) from exc
            _sync(chain[-1])
            # remove the folders left empty, deepest first; a put racing for one retries
            for depth in range(len(parts) - 1, 0, -1):
                try:
                    os.rmdir(parts[depth - 1], dir_fd=chain[depth - 1])
                except OSError:
                    break
        finally:
            _close(chain)

    # --- presigning ------------------------------------------------------------------------

    def presign_get(self, key: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder GET the object until ``expires`` from now."""
        return self.signer.sign(key, HTTPMethod.GET, expires)

    def presign_put(self, key: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder PUT the object until ``expires`` from now."""
        return self.signer.sign(key, HTTPMethod.PUT, expires)

    def verify_presigned(self, token_or_url: str, method: HTTPMethod | str) -> str:
        """The key a URL presigned by this store allows ``method`` on, now (for the HTTP route
        that will serve presigned URLs).

        Raises:
            InvalidPresignedURLError: a malformed, tampered, foreign or wrong-method URL.
            PresignedURLExpiredError: a genuine URL whose time is up.
        """
        return self.signer.verify(token_or_url, method)


def _info(key: str, info: os.stat_result, sha256: str | None = None) -> ObjectInfo:
    # each put renames a new file into place: a new inode, so a new tag even within one tick
    etag = f"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"
    modified = datetime.fromtimestamp(info.st_mtime_ns / 1e9, UTC)
    return ObjectInfo(key, info.st_size, etag, modified, sha256)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _sync(folder: int) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on folders
        os.fsync(folder)
