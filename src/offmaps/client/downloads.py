"""Resumable, checked downloads of a job's files (``GET /api/jobs/{id}/files/{path}``).

A job's result lists its files with ``path``, ``size``, ``sha256`` and ``href``.
:func:`fetch_file` downloads one into a folder: the bytes go to ``PATH.part``, an interrupted
download goes on from where it stopped with a ``Range`` request (a server answering 200 to it
starts the file again), and the file gets its name only once its size and SHA-256 match the
entry. A file already there under its name is taken as finished.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from offmaps.client.portal import Portal
from offmaps.errors import DownloadError

__all__ = ["CHUNK_BYTES", "PART_SUFFIX", "fetch_file"]

PART_SUFFIX = ".part"
"""The suffix of a file being downloaded."""
CHUNK_BYTES = 1024 * 1024


def fetch_file(
    portal: Portal,
    entry: Mapping[str, Any],
    folder: Path,
    *,
    again: str = "download again to go on",
) -> Path:
    """Download the job file ``entry`` (``path``, ``size``, ``sha256``, ``href``) into
    ``folder``, resuming a part left by an earlier try; the file's path. ``again`` tells, in
    errors, how the caller goes on after an interruption.

    Raises:
        DownloadError: the path is unsafe, the server or the network failed (call again to
            resume), the folder cannot be written, or the bytes do not match the entry's
            SHA-256 (the part is dropped).
    """
    relative = PurePosixPath(str(entry["path"]))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise DownloadError(f"the server sent an unsafe file path {str(relative)[:100]!r}")
    target = folder.joinpath(*relative.parts)
    if target.exists():
        return target  # finished before an interruption
    part = target.with_name(target.name + PART_SUFFIX)
    size, expected = int(entry["size"]), str(entry["sha256"])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have < size:
            _receive(portal, entry, part, have, again)
        digest = hashlib.sha256()
        with part.open("rb") as data:
            for chunk in iter(lambda: data.read(CHUNK_BYTES), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DownloadError(
            f"{entry['path']}: cannot write to {folder} ({exc.strerror or exc}); make room, "
            f"then {again}"
        ) from None
    if part.stat().st_size != size or digest.hexdigest() != expected:
        part.unlink()
        raise DownloadError(f"{entry['path']}: the file does not match its SHA-256; try again")
    part.replace(target)
    return target


def _receive(portal: Portal, entry: Mapping[str, Any], part: Path, have: int, again: str) -> None:
    """Append the bytes from ``have`` on to ``part`` (all of them if the server sends 200)."""
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with portal.stream(str(entry["href"]), headers) as response:
            if response.status_code == 200:  # no range support: start again
                have = 0
            elif response.status_code != 206:
                raise DownloadError(f"{entry['path']}: HTTP {response.status_code} from the server")
            with part.open("ab" if have else "wb") as out:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise DownloadError(f"{entry['path']}: the download stopped ({exc}); {again}") from None
