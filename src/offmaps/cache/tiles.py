"""One tile cache at work: tiles read from the blob store through the index, fetched on a miss.

:class:`TileCache` is a :class:`~offmaps.sources.TileSource`, so a web map's tile layer, an
offline package or an export reads a cache like any other source. A tile missing from the cache
is fetched from the cache's source once, however many requests ask for it at the same time
(they wait for the one fetch), fingerprinted with SHA-256, stored once per distinct content and
recorded in the index. Hits, misses, fetches and errors are counted in memory and added to the
index every few seconds, never once per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, wait
from datetime import timedelta

from morecantile import TileMatrixSet

from offmaps.cache.index import TileIndex, Usage, cover_spans
from offmaps.cache.model import CacheDefinition
from offmaps.containers.base import detect_tile_format
from offmaps.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    ContainerError,
    TileNotFoundError,
)
from offmaps.sources import TileSourceInfo, check_key
from offmaps.storage import (
    BatchBlobStore,
    BlobRef,
    BlobStore,
    PresignedURL,
    PresigningBlobStore,
)
from offmaps.tiling import TileCover
from offmaps.tiling.tms import get_tms
from offmaps.types import Tile

__all__ = ["USAGE_FLUSH_S", "Fetch", "TileCache", "store_tiles"]

_log = logging.getLogger(__name__)

USAGE_FLUSH_S = 2.0
"""How often the counters gathered in memory are added to the index."""

Fetch = Callable[[Tile], bytes]
"""Gets one tile from a cache's source; raises ``TileNotFoundError`` or ``UpstreamError``."""


def store_tiles(
    index: TileIndex,
    blobs: BlobStore,
    name: str,
    tiles: Sequence[tuple[Tile, bytes]],
    *,
    now: float | None = None,
    pool: Executor | None = None,
    journal: str | None = None,
) -> int:
    """Store tiles' bytes once per distinct content and point the cache's index at them.

    Blobs no row names yet are put first (in one batch when the store takes batches, else
    with ``pool`` several at once: a put waits for the disk or the network, so a seed's puts
    overlap); the rows come after, in one transaction,
    once every put has ended, so the index never names a missing blob. Bytes equal to what a
    tile has already only mark it checked. With ``journal`` (an import's), the tiles are
    recorded as done in that journal in the rows' transaction (see
    :meth:`~offmaps.cache.index.TileIndex.find_done`). Returns how many tiles got new bytes.
    """
    if not tiles:
        return 0
    rows = [(tile, hashlib.sha256(data).hexdigest(), data) for tile, data in tiles]
    token, known = index.begin_writes(sha256 for _, sha256, _ in rows)
    new = {sha256: data for _, sha256, data in rows if sha256 not in known}

    def check(sha256: str, ref: BlobRef) -> None:
        if ref.sha256 != sha256:  # the store hashed other bytes than it was given
            raise BlobIntegrityError(
                f"blob store {blobs!r} stored {ref.sha256} for bytes hashing to {sha256}"
            )

    def put(sha256: str, data: bytes) -> None:
        check(sha256, blobs.put(data))

    try:
        if new and isinstance(blobs, BatchBlobStore):
            for sha256, ref in zip(new, blobs.put_many(new.values()), strict=True):
                check(sha256, ref)
        elif pool is None or len(new) < 2:
            for sha256, data in new.items():
                put(sha256, data)
        else:
            # every put ends (or fails) before the rows are written or the write is aborted
            futures = [pool.submit(put, sha256, data) for sha256, data in new.items()]
            wait(futures)
            for future in futures:
                future.result()
    except BaseException:
        index.abort_writes(token)
        raise
    return index.commit_writes(
        token,
        name,
        [(tile, sha256, len(data)) for tile, sha256, data in rows],
        time.time() if now is None else now,
        journal=journal,
    )


class TileCache:
    """A named cache: its tiles from the blob store, missing ones fetched from its source.

    Args:
        definition: what the cache is.
        index: the cache index.
        blobs: where tile bytes are kept.
        fetch: gets a tile from the cache's source (None: the cache only serves what it holds).
        tms: the tile matrix set object, when it is not a registered one.
    """

    def __init__(
        self,
        definition: CacheDefinition,
        index: TileIndex,
        blobs: BlobStore,
        fetch: Fetch | None,
        *,
        tms: TileMatrixSet | None = None,
    ) -> None:
        self.definition = definition
        self.tms = tms or get_tms(definition.tms)
        self._index = index
        self._blobs = blobs
        self._fetch = fetch
        self._info = TileSourceInfo(
            name=definition.name,
            title=definition.title or definition.name,
            tms_id=definition.tms,
            tile_format=definition.format,
            min_zoom=definition.min_zoom,
            max_zoom=definition.max_zoom,
        )
        self._lock = threading.Lock()
        self._inflight: dict[Tile, Future[bytes]] = {}
        self._usage: dict[int, Usage] = {}
        self._accessed: dict[Tile, float] = {}
        self._flushed = time.monotonic()

    @property
    def info(self) -> TileSourceInfo:
        """What the cache serves."""
        return self._info

    @property
    def name(self) -> str:
        """The cache's name."""
        return self.definition.name

    def media_type(self, data: bytes) -> str:
        """The media type to serve a tile's ``data`` with: the cache's format's, or for a mixed
        cache that of the bytes' own format (PNG or JPEG, by their magic bytes)."""
        if not self.definition.mixed:
            return self._info.tile_format.media_type
        return detect_tile_format(data)[0].media_type

    @property
    def blobs(self) -> BlobStore:
        """Where the cache's tile bytes are kept."""
        return self._blobs

    # --- reading ---------------------------------------------------------------------------

    def cached(self, tile: Tile) -> bytes | None:
        """The stored bytes of ``tile``, or None; never fetches. Counts no hit or miss."""
        row = self._index.find(self.name, tile)
        if row is None:
            return None
        try:
            data = self._blobs.get(row.sha256)
        except BlobNotFoundError:
            _log.error("cache %s: tile %s names missing blob %s", self.name, tile, row.sha256)
            self._index.forget_blob(row.sha256)
            return None
        sampled = random.random() < self.definition.verify_reads  # noqa: S311 (not crypto)
        if sampled and hashlib.sha256(data).hexdigest() != row.sha256:
            self._damaged(row.sha256)
            return None
        return data

    def stored_hashes(self, cover: TileCover) -> Iterator[tuple[int, int, int, str]]:
        """``(z, x, y, sha256)`` of each tile the cache holds inside ``cover`` (the SHA-256 is
        the key of its bytes in :attr:`blobs`), from the index alone: no blob read, nothing
        fetched, nothing counted. By level, row and column of the cover's spans; tiles outside
        the cache's levels included (:meth:`get_tile` serves none of them)."""
        return self._index.span_hashes(self.name, cover_spans(cover))

    def find_tile(self, tile: Tile) -> bytes | None:
        """The stored bytes of ``tile``, counted as a hit; None when the cache lacks them
        (nothing counted: :meth:`get_tile` counts the miss when it fetches). Never fetches.

        The server's fast path answers hits with this and leaves misses to the route.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: outside the cache's levels.
        """
        check_key(self.tms, self._info, tile)
        data = self.cached(tile)
        if data is not None:
            self._count(tile, hit=True)
        return data

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``: from the cache, else fetched from the source and stored.

        Concurrent requests for a tile being fetched wait for that one fetch.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: outside the cache's levels, or neither cached nor at the source.
            UpstreamError: when the source fails.
        """
        data = self.find_tile(tile)
        if data is not None:
            return data
        self._count(tile, hit=False)
        if self._fetch is None:
            raise TileNotFoundError(f"tile cache {self.name!r} has no tile {_key(tile)}")
        return self._read_through(tile)

    def presign_tile(self, tile: Tile, expires: timedelta) -> PresignedURL | None:
        """A presigned GET URL of the tile's blob, fetching the tile first if the cache lacks
        it; None when the blob store hands out no presigned URLs.

        Raises:
            as :meth:`get_tile`.
        """
        if not isinstance(self._blobs, PresigningBlobStore):
            return None
        check_key(self.tms, self._info, tile)
        row = self._index.find(self.name, tile)
        if row is None:
            self.get_tile(tile)
            row = self._index.find(self.name, tile)
            if row is None:  # truncated meanwhile
                raise TileNotFoundError(f"tile cache {self.name!r} has no tile {_key(tile)}")
        else:
            self._count(tile, hit=True)
        return self._blobs.presign_get(row.sha256, expires)

    def _read_through(self, tile: Tile) -> bytes:
        with self._lock:
            future = self._inflight.get(tile)
            owner = future is None
            if future is None:
                future = Future()
                self._inflight[tile] = future
        if not owner:
            return future.result()
        try:
            data = self.fetch_and_store(tile)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(data)
            return data
        finally:
            with self._lock:
                del self._inflight[tile]

    def fetch_and_store(self, tile: Tile) -> bytes:
        """Fetch ``tile`` from the source (once, no retry) and store it; count the fetch."""
        if self._fetch is None:
            raise TileNotFoundError(f"tile cache {self.name!r} has no source to fetch from")
        try:
            data = self._fetch(tile)
        except TileNotFoundError:
            self.record(tile.z, fetches=1)
            raise
        except ContainerError:
            self.record(tile.z, fetches=1, errors=1)
            raise
        self.record(tile.z, fetches=1)
        store_tiles(self._index, self._blobs, self.name, [(tile, data)])
        return data

    def _damaged(self, sha256: str) -> None:
        _log.error("cache %s: blob %s is damaged; dropping it to fetch again", self.name, sha256)
        self._index.forget_blob(sha256)
        with contextlib.suppress(BlobNotFoundError):  # another reader dropped it first
            self._blobs.delete(sha256)

    # --- counters --------------------------------------------------------------------------

    def _count(self, tile: Tile, *, hit: bool) -> None:
        now = time.time()
        with self._lock:
            usage = self._usage.setdefault(tile.z, Usage())
            if hit:
                usage.hits += 1
                self._accessed[tile] = now
            else:
                usage.misses += 1
            usage.last_access = now
            due = time.monotonic() - self._flushed >= USAGE_FLUSH_S
        if due:
            self.flush()

    def record(self, z: int, *, fetches: int = 0, errors: int = 0) -> None:
        """Count fetches from the source and failed ones (seeding counts its own too)."""
        with self._lock:
            usage = self._usage.setdefault(z, Usage())
            usage.fetches += fetches
            usage.errors += errors

    def flush(self) -> None:
        """Add the counters gathered in memory to the index."""
        with self._lock:
            usage, self._usage = self._usage, {}
            accessed, self._accessed = self._accessed, {}
            self._flushed = time.monotonic()
        self._index.add_usage(self.name, usage)
        self._index.touch(self.name, accessed)


def _key(tile: Tile) -> str:
    return f"{tile.z}/{tile.x}/{tile.y}"
