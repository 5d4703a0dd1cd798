"""MBTiles 1.3: tiles in a SQLite file, Web Mercator only, rows counted from the bottom (TMS).

Spec: https://github.com/mapbox/mbtiles-spec/blob/master/1.3/spec.md. The writer makes either the
plain schema (one ``tiles`` table) or, with ``dedup=True``, the deduplicated schema that many tools
use for sparse or repetitive tile sets: ``map`` rows point at ``images`` by the SHA-256 of the
bytes, and a ``tiles`` view joins them, so readers that only know the spec see the usual table.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offmaps.containers._common import ReaderBase, archive_refusal
from offmaps.containers._sqlite import (
    SQLiteWriterBase,
    open_read_only,
    quick_check,
    read_error,
    table_exists,
    tile_blob,
)
from offmaps.containers.base import (
    TilesetMetadata,
    check_tile_in_matrix,
    detect_tile_format,
    is_web_mercator_quad,
    web_mercator_quad,
)
from offmaps.errors import (
    ContainerCorruptError,
    ContainerWriteError,
    OffmapsError,
    UnsupportedTileFormatError,
    UnsupportedTileMatrixSetError,
)
from offmaps.types import BBox, Tile, TileCompression, TileFormat

if TYPE_CHECKING:
    from offmaps.tiling import TileCover

__all__ = ["MBTilesReader", "MBTilesWriter", "content_id", "tms_row"]

APPLICATION_ID = 0x4D504258
"""``MPBX``: the SQLite application id registered for MBTiles."""

_MAX_PROBLEMS = 20
_MAX_ZOOM = web_mercator_quad().maxzoom

_FORMATS = {
    "png": TileFormat.PNG,
    "image/png": TileFormat.PNG,
    "jpg": TileFormat.JPEG,
    "jpeg": TileFormat.JPEG,
    "image/jpeg": TileFormat.JPEG,
    "webp": TileFormat.WEBP,
    "image/webp": TileFormat.WEBP,
    "pbf": TileFormat.MVT,
    "mvt": TileFormat.MVT,
    "application/x-protobuf": TileFormat.MVT,
    "application/vnd.mapbox-vector-tile": TileFormat.MVT,
}

# Metadata keys that map to TilesetMetadata fields; every other key travels in ``extra``.
_KNOWN_KEYS = frozenset(
    {"name", "format", "bounds", "center", "minzoom", "maxzoom", "description", "attribution"}
)


def tms_row(row: int, z: int) -> int:
    """Flip a tile row between top-down (``Tile.y``) and MBTiles' bottom-up ``tile_row``.

    The flip is its own inverse: ``tms_row(tms_row(y, z), z) == y``.
    """
    return (1 << z) - 1 - row


def content_id(data: bytes) -> str:
    """The key of a tile's bytes in the deduplicated schema: hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _metadata_rows(meta: TilesetMetadata) -> dict[str, str]:
    """The metadata table of ``meta``: spec keys first, extra keys after (spec keys win)."""
    rows: dict[str, str] = {"type": "baselayer", "version": "1"}
    for key, value in meta.extra.items():
        if key not in _KNOWN_KEYS and key != "json":
            rows[key] = value
    rows["name"] = meta.name
    rows["format"] = meta.tile_format.value
    if meta.bounds is not None:
        rows["bounds"] = ",".join(_number(v) for v in meta.bounds)
    if meta.center is not None:
        lon, lat, zoom = meta.center
        rows["center"] = f"{_number(lon)},{_number(lat)},{int(zoom)}"
    if meta.minzoom is not None:
        rows["minzoom"] = str(meta.minzoom)
    if meta.maxzoom is not None:
        rows["maxzoom"] = str(meta.maxzoom)
    if meta.description:
        rows["description"] = meta.description
    if meta.attribution:
        rows["attribution"] = meta.attribution
    document: dict[str, Any] = {}
    carried = meta.extra.get("json")
    if carried:
        try:
            parsed = json.loads(carried)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            document = parsed
    if meta.vector_layers is not None:
        document["vector_layers"] = meta.vector_layers
    elif meta.tile_format is TileFormat.MVT:
        # Required for pbf by the spec, even when nothing is known about the layers.
        document.setdefault("vector_layers", [])
    if document:
        rows["json"] = json.dumps(document, separators=(",", ":"))
    return rows


class MBTilesWriter(SQLiteWriterBase):
    """Writes an MBTiles 1.3 file (Web Mercator only), atomically.

    Tiles are bulk-inserted in one transaction into a temporary file beside the destination,
    which is renamed into place on commit. A tile written twice keeps its last bytes.

    Args:
        path: the ``.mbtiles`` file to create.
        metadata: the tile set's metadata; ``tms`` must be WebMercatorQuad.
        overwrite: replace an existing file on commit.
        dedup: use the deduplicated schema (``map`` + ``images`` + ``tiles`` view) so that
            byte-identical tiles (sea, blank land) are stored once.

    Raises:
        UnsupportedTileMatrixSetError: for any tile matrix set other than WebMercatorQuad.
        DestinationExistsError: when ``path`` exists and ``overwrite`` is false.
        ContainerWriteError: when the file cannot be written (read-only folder, full disk).
    """

    what = "MBTiles file"
    kind_name = "an MBTiles file"

    @classmethod
    def refusal(cls, path: Path) -> str | None:
        """Why ``path`` does not open as an MBTiles file, or ``None`` when it does."""
        return archive_refusal(path, MBTilesReader)

    def __init__(
        self,
        path: Path | str,
        metadata: TilesetMetadata,
        *,
        overwrite: bool = False,
        dedup: bool = False,
    ) -> None:
        if not is_web_mercator_quad(metadata.tms):
            raise UnsupportedTileMatrixSetError(
                f"MBTiles holds WebMercatorQuad tiles only, not {metadata.tms.id}: choose "
                "GeoPackage, PMTiles or a folder for other tile matrix sets",
                path=path,
            )
        self.dedup = dedup
        self._pending_images: dict[str, bytes] = {}
        super().__init__(path, metadata, overwrite=overwrite)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        if self.dedup:
            conn.execute(
                "CREATE TABLE map (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, "
                "tile_id TEXT)"
            )
            conn.execute("CREATE UNIQUE INDEX map_index ON map (zoom_level, tile_column, tile_row)")
            conn.execute("CREATE TABLE images (tile_id TEXT PRIMARY KEY, tile_data BLOB)")
            conn.execute(
                "CREATE VIEW tiles AS SELECT map.zoom_level AS zoom_level, "
                "map.tile_column AS tile_column, map.tile_row AS tile_row, "
                "images.tile_data AS tile_data FROM map JOIN images ON images.tile_id = map.tile_id"
            )
        else:
            conn.execute(
                "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, "
                "tile_data BLOB)"
            )
            # Needed from the start: INSERT OR REPLACE relies on it for "last write wins".
            conn.execute(
                "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)"
            )

    def _add(self, tile: Tile, data: bytes) -> None:
        row = tms_row(tile.y, tile.z)
        if not self.dedup:
            self._buffer((tile.z, tile.x, row, data), len(data))
            return
        tile_id = content_id(data)
        known = self._pending_images.get(tile_id)
        size = 0
        if known is None:
            found = (
                self._connection()
                .execute("SELECT tile_data FROM images WHERE tile_id = ?", (tile_id,))
                .fetchone()
            )
            if found is None:
                self._pending_images[tile_id] = data
                size = len(data)
            else:
                known = found[0]
        if known is not None and known != data:
            raise ContainerWriteError(
                f"{self.path}: tile {tile.z}/{tile.x}/{tile.y} has the same SHA-256 ({tile_id}) "
                "as different bytes already written; refusing to deduplicate them",
                path=self.path,
            )
        self._buffer((tile.z, tile.x, row, tile_id), size)

    def _insert(self, conn: sqlite3.Connection, rows: list[Sequence[Any]]) -> None:
        if self.dedup:
            images, self._pending_images = self._pending_images, {}
            conn.executemany(
                "INSERT OR IGNORE INTO images (tile_id, tile_data) VALUES (?, ?)", images.items()
            )
            conn.executemany(
                "INSERT OR REPLACE INTO map (zoom_level, tile_column, tile_row, tile_id) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
        else:
            conn.executemany(
                "INSERT OR REPLACE INTO tiles (zoom_level, tile_column, tile_row, tile_data) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )

    def _complete(self, conn: sqlite3.Connection, metadata: TilesetMetadata) -> None:
        if self.dedup:
            (mapped,) = conn.execute("SELECT count(*) FROM map").fetchone()
            if mapped != self.count:
                # Some tiles were written twice: drop images no tile points at any more.
                conn.execute("DELETE FROM images WHERE tile_id NOT IN (SELECT tile_id FROM map)")
        conn.executemany(
            "INSERT INTO metadata (name, value) VALUES (?, ?)", _metadata_rows(metadata).items()
        )
        conn.execute("CREATE UNIQUE INDEX name ON metadata (name)")

    def _close(self) -> None:
        self._pending_images = {}
        super()._close()


def _parse_floats(text: str, count: int) -> list[float] | None:
    parts = text.split(",")
    if len(parts) != count:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def _parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(float(text.strip()))
    except (ValueError, OverflowError):
        return None


class MBTilesReader(ReaderBase):
    """Reads an MBTiles file (plain or deduplicated schema), opened read-only.

    Args:
        path: the ``.mbtiles`` file.

    Raises:
        ContainerError: when the file does not exist.
        ContainerCorruptError: when it is not a SQLite database, lacks the ``tiles`` or
            ``metadata`` table, or its metadata has no usable ``format``.
        UnsupportedTileFormatError: when ``format`` names a format offmaps does not handle.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn = open_read_only(self.path, what="MBTiles file")
        try:
            self._metadata = self._read_metadata()
        except sqlite3.Error as exc:
            self.close()
            raise read_error(self.path, exc, what="MBTiles file") from exc
        except OffmapsError:
            self.close()
            raise

    # --- metadata ---------------------------------------------------------------------------

    def _raw_metadata(self) -> dict[str, str]:
        conn = self._conn
        for table in ("tiles", "metadata"):
            if not table_exists(conn, table):
                raise ContainerCorruptError(
                    f"{self.path}: not an MBTiles file: it has no {table!r} table", path=self.path
                )
        raw: dict[str, str] = {}
        for name, value in conn.execute("SELECT name, value FROM metadata"):
            if isinstance(name, str) and value is not None:
                raw[name] = str(value)
        return raw

    def _read_metadata(self) -> TilesetMetadata:
        raw = self._raw_metadata()
        first = self._first_tile()
        fmt_text = raw.get("format")
        if fmt_text is None:
            if first is None:
                raise ContainerCorruptError(
                    f"{self.path}: the MBTiles metadata has no 'format' and there are no tiles "
                    "to tell it from",
                    path=self.path,
                )
            tile_format, _ = detect_tile_format(first)
        else:
            found = _FORMATS.get(fmt_text.strip().lower())
            if found is None:
                raise UnsupportedTileFormatError(
                    f"{self.path}: MBTiles format {fmt_text!r} is not one of png, jpg, webp, pbf",
                    path=self.path,
                )
            tile_format = found
        compression = TileCompression.NONE
        # The spec's pbf means gzipped MVT; many files hold plain MVT anyway, so look.
        if tile_format is TileFormat.MVT and (first is None or first.startswith(b"\x1f\x8b")):
            compression = TileCompression.GZIP
        bounds_values = _parse_floats(raw.get("bounds", ""), 4)
        center_values = _parse_floats(raw.get("center", ""), 3)
        minzoom = _parse_int(raw.get("minzoom"))
        maxzoom = _parse_int(raw.get("maxzoom"))
        if minzoom is None or maxzoom is None:
            low, high = self._conn.execute(
                "SELECT min(zoom_level), max(zoom_level) FROM tiles"
            ).fetchone()
            minzoom = low if minzoom is None and isinstance(low, int) else minzoom
            maxzoom = high if maxzoom is None and isinstance(high, int) else maxzoom
        extra = {k: v for k, v in raw.items() if k not in _KNOWN_KEYS and k != "json"}
        vector_layers: list[dict[str, Any]] | None = None
        if "json" in raw:
            try:
                document = json.loads(raw["json"])
            except json.JSONDecodeError:
                document = None
            if isinstance(document, dict):
                layers = document.get("vector_layers")
                if isinstance(layers, list):
                    vector_layers = [layer for layer in layers if isinstance(layer, dict)]
                if set(document) - {"vector_layers"}:
                    extra["json"] = raw["json"]
            else:
                extra["json"] = raw["json"]
        return TilesetMetadata(
            tile_format=tile_format,
            tms=web_mercator_quad(),
            name=raw.get("name") or self.path.stem,
            tile_compression=compression,
            bounds=BBox(*bounds_values) if bounds_values is not None else None,
            minzoom=minzoom,
            maxzoom=maxzoom,
            center=(
                (center_values[0], center_values[1], int(center_values[2]))
                if center_values is not None
                else None
            ),
            description=raw.get("description", ""),
            attribution=raw.get("attribution", ""),
            vector_layers=vector_layers,
            extra=extra,
        )

    def _first_tile(self) -> bytes | None:
        row = self._conn.execute("SELECT tile_data FROM tiles LIMIT 1").fetchone()
        if row is None or not isinstance(row[0], bytes) or not row[0]:
            return None
        data: bytes = row[0]
        return data

    @property
    def metadata(self) -> TilesetMetadata:
        """The tile set's metadata, from the ``metadata`` table (and the first tile)."""
        return self._metadata

    # --- tiles ------------------------------------------------------------------------------

    def _tile_from_row(self, row: Sequence[object]) -> tuple[Tile, bytes]:
        z, x, flipped, data = row
        if not (type(z) is int and type(x) is int and type(flipped) is int and 0 <= z <= 30):
            raise ContainerCorruptError(
                f"{self.path}: tile row with zoom_level={z!r}, tile_column={x!r}, "
                f"tile_row={flipped!r} is not a valid tile key",
                path=self.path,
            )
        size = 1 << z
        if not (z <= _MAX_ZOOM and 0 <= x < size and 0 <= flipped < size):
            raise ContainerCorruptError(
                f"{self.path}: tile row (zoom_level={z}, tile_column={x}, tile_row={flipped}) "
                f"is outside WebMercatorQuad",
                path=self.path,
            )
        tile = Tile(x, tms_row(flipped, z), z)
        return tile, tile_blob(self.path, tile, data)

    def find_tile(self, tile: Tile) -> bytes | None:
        """The bytes of ``tile``, or None if the file does not hold it.

        Raises:
            InvalidTileError: when the key is outside WebMercatorQuad.
            ContainerCorruptError: when the row is unreadable or holds no bytes.
        """
        check_tile_in_matrix(self._metadata.tms, tile)
        try:
            row = self._conn.execute(
                "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? "
                "AND tile_row = ?",
                (tile.z, tile.x, tms_row(tile.y, tile.z)),
            ).fetchone()
        except sqlite3.Error as exc:
            raise read_error(self.path, exc, tile=tile, what="MBTiles file") from exc
        if row is None:
            return None
        return tile_blob(self.path, tile, row[0])

    def iter_tiles(self, zooms: Iterable[int] | None = None) -> Iterator[tuple[Tile, bytes]]:
        """Every tile with its bytes, streamed from SQLite in storage order.

        Raises:
            ContainerCorruptError: at the first unreadable or invalid row, naming it.
        """
        sql = "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"
        params: list[int] = []
        if zooms is not None:
            params = sorted({int(z) for z in zooms})
            if not params:
                return
            sql += f" WHERE zoom_level IN ({','.join('?' * len(params))})"
        try:
            cursor = self._conn.execute(sql, params)
            for row in cursor:
                yield self._tile_from_row(row)
        except sqlite3.Error as exc:
            raise read_error(self.path, exc, what="MBTiles file") from exc

    def iter_cover(self, cover: TileCover) -> Iterator[tuple[Tile, bytes]]:
        """The tiles of ``cover`` the file holds: per level, the rows in the cover's bounding
        box (a range scan of the tile index), kept when they are in the cover.

        Raises:
            ContainerCorruptError: at the first unreadable or invalid row, naming it.
        """
        sql = (
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles WHERE zoom_level = ? "
            "AND tile_column BETWEEN ? AND ? AND tile_row BETWEEN ? AND ?"
        )
        for z in cover.zooms.levels():
            level = cover.level(z)
            bounds = level.bounds()
            if bounds is None:
                continue
            x0, y0, x1, y1 = bounds
            whole_box = level.count == (x1 - x0 + 1) * (y1 - y0 + 1)
            try:
                for row in self._conn.execute(sql, (z, x0, x1, tms_row(y1, z), tms_row(y0, z))):
                    tile, data = self._tile_from_row(row)
                    if whole_box or tile in level:
                        yield tile, data
            except sqlite3.Error as exc:
                raise read_error(self.path, exc, what="MBTiles file") from exc

    def count_tiles(self) -> int:
        """How many tiles the file holds."""
        try:
            (count,) = self._conn.execute("SELECT count(*) FROM tiles").fetchone()
        except sqlite3.Error as exc:
            raise read_error(self.path, exc, what="MBTiles file") from exc
        return int(count)

    def check(self) -> list[str]:
        """Problems SQLite's ``PRAGMA quick_check`` finds (it reads each page once)."""
        try:
            return [f"{self.path}: {problem}" for problem in quick_check(self._conn)]
        except sqlite3.Error as exc:
            return [str(read_error(self.path, exc, what="MBTiles file"))]

    def verify(self) -> list[str]:
        """Problems found by a full check: SQLite integrity, required metadata, every tile's
        key, bytes and format."""
        try:
            return self._verify()
        except sqlite3.Error as exc:
            return [str(read_error(self.path, exc, what="MBTiles file"))]

    def _verify(self) -> list[str]:
        problems = quick_check(self._conn)
        raw = self._raw_metadata()
        for key in ("name", "format"):
            if not raw.get(key):
                problems.append(f"{self.path}: required metadata {key!r} is missing")
        for key, count in (("bounds", 4), ("center", 3)):
            if key in raw and _parse_floats(raw[key], count) is None:
                problems.append(f"{self.path}: metadata {key!r} is malformed: {raw[key]!r}")
        meta = self._metadata
        if meta.tile_format is TileFormat.MVT:
            if "json" not in raw:
                problems.append(f"{self.path}: metadata 'json' (vector_layers) is required for pbf")
            elif meta.vector_layers is None:
                problems.append(f"{self.path}: metadata 'json' has no vector_layers list")
        if table_exists(self._conn, "map", views=False) and table_exists(
            self._conn, "images", views=False
        ):
            (dangling,) = self._conn.execute(
                "SELECT count(*) FROM map LEFT JOIN images ON images.tile_id = map.tile_id "
                "WHERE images.tile_id IS NULL"
            ).fetchone()
            if dangling:
                problems.append(f"{self.path}: {dangling} map rows point at no image")
        tile_problems = 0
        cursor = self._conn.execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"
        )
        for row in cursor:
            problem: str | None = None
            try:
                tile, data = self._tile_from_row(row)
                fmt, compression = detect_tile_format(data)
                if fmt is not meta.tile_format or (
                    fmt is TileFormat.MVT and compression is not meta.tile_compression
                ):
                    problem = (
                        f"{self.path}: tile {tile.z}/{tile.x}/{tile.y} holds {fmt.value} "
                        f"({compression.value}) but the metadata says "
                        f"{meta.tile_format.value} ({meta.tile_compression.value})"
                    )
            except OffmapsError as exc:
                problem = str(exc)
            if problem is not None:
                tile_problems += 1
                if tile_problems <= _MAX_PROBLEMS:
                    problems.append(problem)
        if tile_problems > _MAX_PROBLEMS:
            problems.append(f"{self.path}: ... and {tile_problems - _MAX_PROBLEMS} more tiles")
        return problems

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()
