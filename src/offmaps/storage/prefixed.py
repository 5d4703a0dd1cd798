"""A view of one prefix of an object store as a store of its own (a job's output area, say)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from offmaps.storage._stream import Chunks
from offmaps.storage.keys import check_key_prefix, check_object_key
from offmaps.storage.objects import ObjectInfo, ObjectStore
from offmaps.storage.presign import PresignedURL

__all__ = ["PrefixedObjectStore", "prefixed"]


def prefixed(store: ObjectStore, prefix: str) -> PrefixedObjectStore:
    """The objects of ``store`` below ``prefix/``, as a store whose keys leave the prefix out.

    ``prefixed(store, "jobs/42").put("package.zip", data)`` stores ``jobs/42/package.zip``.
    Views of views collapse into one view of the underlying store.

    Args:
        store: the store to view.
        prefix: a valid object key (``jobs/42``; one trailing ``/`` is allowed and dropped).

    Raises:
        InvalidObjectKeyError: when ``prefix`` is not a valid key.
    """
    if isinstance(prefix, str) and prefix.endswith("/"):
        prefix = prefix[:-1]
    prefix = check_object_key(prefix)
    if isinstance(store, PrefixedObjectStore):
        return PrefixedObjectStore(store.store, f"{store.prefix}/{prefix}")
    return PrefixedObjectStore(store, prefix)


class PrefixedObjectStore:
    """An :class:`ObjectStore` over the keys of another store that start with ``prefix/``.

    Keys given to it and keys it returns (in :class:`ObjectInfo` and :class:`PresignedURL`) are
    relative to the prefix; errors of the underlying store name the full key. Keys are checked
    on their own first, so ``../x`` never reaches the underlying store. Build it with
    :func:`prefixed`.

    Args:
        store: the underlying store.
        prefix: a valid object key, the folder the view shows.
    """

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = check_object_key(prefix)

    def __repr__(self) -> str:
        return f"prefixed({self.store!r}, {self.prefix!r})"

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{check_object_key(key)}"

    def _relative(self, info: ObjectInfo) -> ObjectInfo:
        return dataclasses.replace(info, key=info.key[len(self.prefix) + 1 :])

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing what was there."""
        return self._relative(self.store.put(self._full(key), data))

    def put_stream(self, key: str, stream: Chunks, *, max_size: int | None = None) -> ObjectInfo:
        """Store the bytes of a binary file or an iterable of chunks under ``key``."""
        return self._relative(self.store.put_stream(self._full(key), stream, max_size=max_size))

    def put_file(self, key: str, path: Path | str) -> ObjectInfo:
        """Move the local file ``path`` in, as the object under ``key``."""
        return self._relative(self.store.put_file(self._full(key), path))

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""
        return self.store.get(self._full(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the object from ``offset``."""
        return self.store.get_range(self._full(key), offset, length)

    def open(self, key: str) -> BinaryIO:
        """A binary file to stream the object from; the caller closes it."""
        return self.store.open(self._full(key))

    def head(self, key: str) -> ObjectInfo:
        """What the store knows about the object."""
        return self._relative(self.store.head(self._full(key)))

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        return self.store.exists(self._full(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects of the view whose key starts with ``prefix``, in key order."""
        inner = self.store.list(f"{self.prefix}/{check_key_prefix(prefix)}")
        return (self._relative(info) for info in inner)

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; nothing happens when there is none."""
        self.store.delete(self._full(key))

    def presign_get(self, key: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder GET the object until ``expires`` from now."""
        url = self.store.presign_get(self._full(key), expires)
        return dataclasses.replace(url, key=url.key[len(self.prefix) + 1 :])

    def presign_put(self, key: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder PUT the object until ``expires`` from now."""
        url = self.store.presign_put(self._full(key), expires)
        return dataclasses.replace(url, key=url.key[len(self.prefix) + 1 :])
