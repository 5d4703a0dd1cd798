"""Chunks of a blob being put, from a binary file or an iterable, with the size limit checked."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

from offmaps.errors import BlobTooLargeError

__all__ = ["CHUNK_SIZE", "check_max_size", "iter_chunks"]

CHUNK_SIZE = 1024 * 1024
"""Bytes read at a time from binary files, and hashed at a time when verifying."""


def check_max_size(max_size: int | None) -> None:
    """Refuse a negative (or non-integer) size limit before anything is written."""
    if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
        raise ValueError(f"max_size must be a non-negative integer or None, not {max_size!r}")


def iter_chunks(
    stream: BinaryIO | Iterable[bytes | bytearray | memoryview], max_size: int | None
) -> Iterator[bytes]:
    """The non-empty chunks of ``stream``; raises ``BlobTooLargeError`` once more than
    ``max_size`` bytes have come, before yielding the chunk that crosses the limit."""
    # a binary file is also an iterable of lines: read it in fixed chunks instead
    chunks: Iterable[object] = _read_chunks(stream) if hasattr(stream, "read") else stream
    total = 0
    for chunk in chunks:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"blob content must be bytes, not {type(chunk).__name__}")
        data = bytes(chunk)
        if not data:
            continue
        total += len(data)
        if max_size is not None and total > max_size:
            raise BlobTooLargeError(
                f"blob is larger than the {max_size:,} bytes allowed", max_size=max_size
            )
        yield data


def _read_chunks(stream: object) -> Iterator[object]:
    read = stream.read  # type: ignore[attr-defined]
    while chunk := read(CHUNK_SIZE):
        yield chunk
