"""Bytes being put: chunks from a binary file or an iterable (with the size limit checked),
and local files moved into a store."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from offmaps.errors import BlobTooLargeError, StorageError

__all__ = ["CHUNK_SIZE", "Chunks", "check_max_size", "iter_chunks", "open_source_file"]

CHUNK_SIZE = 1024 * 1024
"""Bytes read at a time from binary files, and hashed at a time when verifying."""

Chunks = BinaryIO | Iterable[bytes | bytearray | memoryview]
"""What a streaming put reads: a binary file, or an iterable of bytes-like chunks."""


def check_max_size(max_size: int | None) -> None:
    """Refuse a negative (or non-integer) size limit before anything is written."""
    if max_size is not None and (
        not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0
    ):
        raise ValueError(f"max_size must be a non-negative integer or None, not {max_size!r}")


def _blob_too_large(max_size: int) -> StorageError:
    return BlobTooLargeError(
        f"blob is larger than the {max_size:,} bytes allowed", max_size=max_size
    )


def iter_chunks(
    stream: Chunks,
    max_size: int | None,
    *,
    too_large: Callable[[int], StorageError] = _blob_too_large,
) -> Iterator[bytes]:
    """The non-empty chunks of ``stream``; raises ``too_large(max_size)`` (a
    ``BlobTooLargeError`` by default) once more than ``max_size`` bytes have come, before
    yielding the chunk that crosses the limit."""
    # a binary file is also an iterable of lines: read it in fixed chunks instead
    chunks: Iterable[object] = _read_chunks(stream) if hasattr(stream, "read") else stream
    total = 0
    for chunk in chunks:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"content must be bytes, not {type(chunk).__name__}")
        data = bytes(chunk)
        if not data:
            continue
        total += len(data)
        if max_size is not None and total > max_size:
            raise too_large(max_size)
        yield data


def _read_chunks(stream: object) -> Iterator[object]:
    read = stream.read  # type: ignore[attr-defined]
    while chunk := read(CHUNK_SIZE):
        yield chunk


_SOURCE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_source_file(path: Path | str, key: str) -> BinaryIO:
    """The local file ``path`` that ``put_file`` is to store under ``key``, opened for reading.

    Only a regular file is taken: a symbolic link (as the last component), a folder, a FIFO or
    a device is refused, so a store never moves in, or blocks on, something that is not bytes.

    Raises:
        StorageError: the file is missing, unreadable, or not a regular file.
    """
    try:
        fd = os.open(path, _SOURCE_FLAGS)
    except OSError as exc:
        raise StorageError(f"cannot store {str(path)!r} as {key!r}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:  # pragma: no cover - fstat of an open file
        os.close(fd)
        raise StorageError(f"cannot store {str(path)!r} as {key!r}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise StorageError(f"cannot store {str(path)!r} as {key!r}: it is not a regular file")
    return os.fdopen(fd, "rb")
