"""Resumable uploads of a file named by its SHA-256, in parts: the client side of
:mod:`offmaps.storage.uploads` (attachments, ``/api/replicas/{id}/uploads/{sha256}``; tile
archives, ``/api/cache-archives/{sha256}``).

``GET URL`` tells how many bytes the server has; each ``PUT URL?offset=&total=`` sends the next
part from there, until the server has the whole file and has checked its SHA-256. An upload cut
anywhere goes on from the server's offset when it is sent again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from offmaps.client.portal import Portal

__all__ = ["send_parts"]


def send_parts(
    portal: Portal,
    url: str,
    source: BinaryIO,
    size: int,
    part_bytes: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """Send the ``size`` bytes of ``source`` (seekable) to ``url`` in parts of ``part_bytes``,
    from the offset the server has; ``on_progress`` gets the bytes it has and ``size`` after
    each part.

    Raises:
        UploadOffsetError: the server's offset moved meanwhile (another upload of the same
            file): send again.
        BlobTooLargeError, BlobIntegrityError: the server refused the file.
    """
    state = portal.request("GET", url)
    source.seek(int(state["received"]))
    while not state["complete"]:
        offset = int(state["received"])
        chunk = source.read(part_bytes)
        state = portal.request(
            "PUT",
            url,
            params={"offset": offset, "total": size},
            content=chunk,
            headers={"Content-Type": "application/octet-stream"},
        )
        if on_progress is not None:
            on_progress(int(state["received"]), size)
        if not chunk:
            break
