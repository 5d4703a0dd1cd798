"""The byte-range seam: ``get_bytes(offset, length)`` over a file, bytes in memory or an object.

Readers of range-addressed formats (PMTiles) read through a :class:`ByteSource`, so the same
reader works on a local file, on bytes held in memory and on an object of any
:class:`~offmaps.storage.objects.ObjectStore` (a local folder now, S3 later). A source answers
with exactly the bytes asked for, or raises; deciding that a short source means a damaged
archive is the reader's business.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from offmaps.errors import IncompleteReadError, InvalidByteRangeError, StorageError
from offmaps.storage.objects import ObjectStore

__all__ = [
    "MAX_RANGE_LENGTH",
    "ByteSource",
    "BytesByteSource",
    "FileByteSource",
    "ObjectByteSource",
    "check_range",
]

MAX_RANGE_LENGTH = 256 << 20
"""The most bytes one ranged read may ask for (256 MiB); stream larger reads with ``open``."""

_MAX_OFFSET = 2**63 - 1  # the largest file offset


def check_range(offset: object, length: object) -> tuple[int, int]:
    """``(offset, length)`` if they make a byte range one read may ask for.

    Raises:
        InvalidByteRangeError: for a non-integer (``True`` included) or negative offset or
            length, a length over :data:`MAX_RANGE_LENGTH`, or a range ending past 2**63 - 1.
    """
    start = _count("offset", offset, offset, length)
    size = _count("length", length, offset, length)
    if size > MAX_RANGE_LENGTH:
        raise InvalidByteRangeError(
            f"a ranged read asks for at most {MAX_RANGE_LENGTH:,} bytes, not {size:,}",
            offset=offset,
            length=length,
        )
    if start + size > _MAX_OFFSET:
        raise InvalidByteRangeError(
            f"the byte range at {start:,} ends past the largest offset",
            offset=offset,
            length=length,
        )
    return start, size


def _count(name: str, value: object, offset: object, length: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidByteRangeError(
        f"a byte range's {name} is a non-negative integer, not {value!r}",
        offset=offset,
        length=length,
    )


@runtime_checkable
class ByteSource(Protocol):
    """Where a range-addressed file's bytes come from: a local file, memory, an object."""

    @property
    def size(self) -> int:
        """Total size in bytes (when the source was opened)."""
        ...

    def get_bytes(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset``.

        Raises:
            InvalidByteRangeError: for a malformed range (see :func:`check_range`).
            IncompleteReadError: when the source does not hold all of them.
            StorageError: when the bytes cannot be read.
        """
        ...

    def close(self) -> None:
        """Release the source."""
        ...


def _incomplete(where: str, offset: int, length: int, available: int) -> IncompleteReadError:
    return IncompleteReadError(
        f"{where} ends at byte {offset + available}: {length} bytes at byte {offset} "
        "are not all there",
        offset=offset,
        length=length,
        available=available,
    )


class FileByteSource:
    """A :class:`ByteSource` over a local file, kept open until :meth:`close`.

    Args:
        path: the file.

    Raises:
        StorageError: when the file cannot be opened.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._file: BinaryIO = self.path.open("rb")
        except OSError as exc:
            raise StorageError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        try:
            self._size = os.fstat(self._file.fileno()).st_size
        except OSError as exc:  # pragma: no cover - fstat of an open file
            self._file.close()
            raise StorageError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def __repr__(self) -> str:
        return f"FileByteSource({str(self.path)!r})"

    @property
    def size(self) -> int:
        """The file's size when it was opened."""
        return self._size

    def get_bytes(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset`` (see :class:`ByteSource`)."""
        offset, length = check_range(offset, length)
        if offset + length > self._size:
            raise _incomplete(str(self.path), offset, length, max(0, self._size - offset))
        try:
            data = os.pread(self._file.fileno(), length, offset) if length else b""
            while 0 < len(data) < length:  # pread may return fewer bytes than asked
                more = os.pread(self._file.fileno(), length - len(data), offset + len(data))
                if not more:
                    break
                data += more
        except OSError as exc:
            raise StorageError(
                f"{self.path}: cannot read {length} bytes at byte {offset}: {exc.strerror or exc}"
            ) from exc
        if len(data) != length:  # the file shrank since it was opened
            raise _incomplete(str(self.path), offset, length, len(data))
        return data

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class BytesByteSource:
    """A :class:`ByteSource` over bytes in memory (an archive downloaded whole, a test's).

    Args:
        data: the bytes (any bytes-like value; copied once).
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)

    def __repr__(self) -> str:
        return f"BytesByteSource({len(self._data)} bytes)"

    @property
    def size(self) -> int:
        """The number of bytes."""
        return len(self._data)

    def get_bytes(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset`` (see :class:`ByteSource`)."""
        offset, length = check_range(offset, length)
        data = self._data[offset : offset + length]
        if len(data) != length:
            raise _incomplete("the bytes", offset, length, len(data))
        return data

    def close(self) -> None:
        """Nothing to release."""


class ObjectByteSource:
    """A :class:`ByteSource` over one object of an :class:`ObjectStore`, read by ranges.

    The size is taken once, when the source is made; an object replaced meanwhile is read as
    it now is (readers check what they decode).

    Args:
        store: the store holding the object.
        key: the object's key.

    Raises:
        ObjectNotFoundError: when there is no such object.
    """

    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store = store
        self.key = key
        self._size = store.head(key).size

    def __repr__(self) -> str:
        return f"ObjectByteSource({self.store!r}, {self.key!r})"

    @property
    def size(self) -> int:
        """The object's size when the source was made."""
        return self._size

    def get_bytes(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset`` (see :class:`ByteSource`)."""
        offset, length = check_range(offset, length)
        if offset + length > self._size:
            where = f"object {self.key!r}"
            raise _incomplete(where, offset, length, max(0, self._size - offset))
        data = self.store.get_range(self.key, offset, length)
        if len(data) != length:  # the object shrank since
            raise _incomplete(f"object {self.key!r}", offset, length, len(data))
        return data

    def close(self) -> None:
        """Nothing to release: every read is a request of its own."""
