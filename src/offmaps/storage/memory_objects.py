"""Keyed objects in a dictionary: for tests, and for short-lived stores."""

from __future__ import annotations

import bisect
import hashlib
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPMethod
from pathlib import Path
from typing import BinaryIO

from offmaps.errors import (
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

__all__ = ["MemoryObjectStore"]


@dataclass(frozen=True, slots=True)
class _Stored:
    data: bytes
    info: ObjectInfo


class MemoryObjectStore:
    """Objects held in memory by key; safe to share between threads.

    It keeps the rules of a folder (``a`` and ``a/b`` cannot both be objects) so that code
    tested against it behaves the same on :class:`~offmaps.storage.LocalObjectStore`.

    Args:
        signer: signs and checks presigned URLs; by default one with a random secret.
    """

    def __init__(self, *, signer: URLSigner | None = None) -> None:
        self.signer = signer if signer is not None else URLSigner()
        self._objects: dict[str, _Stored] = {}
        self._keys: list[str] = []  # sorted, for listing by prefix
        self._below: dict[str, int] = {}  # folder prefix ("a/") -> objects below it
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryObjectStore({len(self._objects)} objects)"

    # --- writing ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing what was there."""
        return self.put_stream(key, (data,))

    def put_stream(self, key: str, stream: Chunks, *, max_size: int | None = None) -> ObjectInfo:
        """Store the bytes of a binary file or an iterable of chunks under ``key``.

        Raises:
            ObjectTooLargeError: more than ``max_size`` bytes came; nothing was stored.
            ObjectKeyConflictError: ``key`` lies below an object, or objects lie below it.
        """
        key = check_object_key(key)
        check_max_size(max_size)

        def too_large(limit: int) -> ObjectTooLargeError:
            return ObjectTooLargeError(
                f"object {key!r} is larger than the {limit:,} bytes allowed",
                key=key,
                max_size=limit,
            )

        data = b"".join(iter_chunks(stream, max_size, too_large=too_large))
        with self._lock:
            self._check_place(key)
            return self._insert(key, data)

    def put_file(self, key: str, path: Path | str) -> ObjectInfo:
        """Read the local file ``path`` into memory as the object under ``key``, and remove it.

        Raises:
            ObjectKeyConflictError: ``key`` lies below an object, or objects lie below it; the
                file stays.
            StorageError: ``path`` is not a regular file, or cannot be read or removed.
        """
        key = check_object_key(key)
        with open_source_file(path, key) as source:
            try:
                data = source.read()
            except OSError as exc:
                raise StorageError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
        with self._lock:
            self._check_place(key)
            try:
                os.unlink(path)
            except OSError as exc:
                raise StorageError(
                    f"cannot move {str(path)!r} in as {key!r}: {exc.strerror or exc}"
                ) from exc
            return self._insert(key, data)

    def _insert(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under a key whose place was checked; called with the lock held."""
        sha256 = hashlib.sha256(data).hexdigest()
        info = ObjectInfo(key, len(data), sha256, datetime.now(UTC), sha256)
        if key not in self._objects:
            bisect.insort(self._keys, key)
            for folder in _folders(key):
                self._below[folder] = self._below.get(folder, 0) + 1
        self._objects[key] = _Stored(data, info)
        return info

    def _check_place(self, key: str) -> None:
        if self._below.get(key + "/"):
            raise ObjectKeyConflictError(
                f"cannot store {key!r}: other objects are stored below it", key=key
            )
        for folder in _folders(key):
            if folder[:-1] in self._objects:
                raise ObjectKeyConflictError(
                    f"cannot store {key!r}: {folder[:-1]!r} is an object", key=key
                )

    # --- reading ---------------------------------------------------------------------------

    def _stored(self, key: str) -> _Stored:
        key = check_object_key(key)
        with self._lock:
            stored = self._objects.get(key)
        if stored is None:
            raise ObjectNotFoundError(f"no object {key!r}", key=key)
        return stored

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""
        return self._stored(key).data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the object from ``offset`` (see ``ObjectStore``)."""
        offset, length = check_range(offset, length)
        return self._stored(key).data[offset : offset + length]

    def open(self, key: str) -> BinaryIO:
        """A binary file over the object's bytes."""
        return io.BytesIO(self._stored(key).data)

    def head(self, key: str) -> ObjectInfo:
        """What the store knows about the object (its SHA-256 included)."""
        return self._stored(key).info

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        key = check_object_key(key)
        with self._lock:
            return key in self._objects

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, in ascending key order (a
        snapshot taken by the call)."""
        prefix = check_key_prefix(prefix)
        with self._lock:
            start = bisect.bisect_left(self._keys, prefix)
            infos = []
            for key in self._keys[start:]:
                if not key.startswith(prefix):
                    break
                infos.append(self._objects[key].info)
        return iter(infos)

    # --- removing --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; nothing happens when there is none."""
        key = check_object_key(key)
        with self._lock:
            if self._objects.pop(key, None) is None:
                return
            del self._keys[bisect.bisect_left(self._keys, key)]
            for folder in _folders(key):
                left = self._below[folder] - 1
                if left:
                    self._below[folder] = left
                else:
                    del self._below[folder]

    # --- presigning ------------------------------------------------------------------------

    def presign_get(self, key: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder GET the object until ``expires`` from now."""
        return self.signer.sign(key, HTTPMethod.GET, expires)

    def presign_put(self, key: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder PUT the object until ``expires`` from now."""
        return self.signer.sign(key, HTTPMethod.PUT, expires)

    def verify_presigned(self, token_or_url: str, method: HTTPMethod | str) -> str:
        """The key a URL presigned by this store allows ``method`` on, now.

        Raises:
            InvalidPresignedURLError: a malformed, tampered, foreign or wrong-method URL.
            PresignedURLExpiredError: a genuine URL whose time is up.
        """
        return self.signer.verify(token_or_url, method)


def _folders(key: str) -> Iterator[str]:
    """The folder prefixes of a key: ``a/b/c`` -> ``a/``, ``a/b/``."""
    end = key.find("/")
    while end != -1:
        yield key[: end + 1]
        end = key.find("/", end + 1)
