"""Copying a file's bytes in the kernel (``copy_file_range``), for the large files preplanned
packages move around: a tile archive copied to be updated, or fetched from the object store.

No pass through Python's buffers; on filesystems that reflink (XFS, Btrfs) the copy shares the
extents. Where the call is missing (not Linux) or refused (another filesystem, a stream that is
no file), the rest is copied the usual way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

__all__ = ["copy_file", "copy_stream"]

_CHUNK = 1 << 20


def copy_stream(source: BinaryIO, out: BinaryIO) -> None:
    """Copy ``source`` from where it is to its end into ``out`` at its position."""
    copy_file_range = getattr(os, "copy_file_range", None)
    try:
        fd, target = source.fileno(), out.fileno()
        size = os.fstat(fd).st_size - source.tell()
    except (AttributeError, OSError, ValueError):
        copy_file_range = None
    if copy_file_range is None:
        shutil.copyfileobj(source, out, _CHUNK)
        return
    start, at, done = source.tell(), out.tell(), 0
    try:
        while done < size:
            copied = copy_file_range(fd, target, size - done, start + done, at + done)
            if copied == 0:  # the file shrank meanwhile
                break
            done += copied
    except OSError:  # the rest as usual
        pass
    source.seek(start + done)
    out.seek(at + done)
    shutil.copyfileobj(source, out, _CHUNK)


def copy_file(source: Path, target: Path) -> None:
    """Copy the file ``source`` to ``target`` (made or truncated)."""
    with source.open("rb") as src, target.open("wb") as out:
        copy_stream(src, out)
