"""Esri Compact Cache V2: tiles packed 128x128 to a bundle file.

Layout (``DIR`` is the folder given as ``esri-compact:DIR``)::

    DIR/tilematrixset.json, DIR/metadata.json     as for exploded folders (see exploded.py)
    DIR/_alllayers/L{zz}/R{rrrr}C{cccc}.bundle

``zz`` is the level as (at least) two decimal digits; ``rrrr``/``cccc`` are the row and column of
the bundle's top-left tile (multiples of 128) as at least four lowercase hexadecimal digits. Readers
also accept level folders directly under ``DIR`` when there is no ``_alllayers``.

A bundle (all integers little-endian) is a 64-byte header, an index of 128 x 128 entries of 8 bytes
in row-major order from the top-left tile, then tile records::

    offset size field                value
    0      4    version              3
    4      4    record count         16384
    8      4    max record size      size of the largest tile in the bundle
    12     4    offset byte count    5
    16     8    slack space          0
    24     8    file size            size of the whole bundle file
    32     8    user header offset   40
    40     4    user header size     20 + 131072
    44     4    legacy               3
    48     4    legacy               16
    52     4    legacy               16384
    56     4    legacy               5
    60     4    index size           131072

An index entry holds the absolute offset of a tile's bytes in its low 40 bits and the tile's size in
its high 24 bits; size zero means no tile, whatever the offset (ArcGIS writes 0, MapProxy 4). Each
tile's bytes are preceded by a 4-byte copy of its size, so an entry's offset points just past it.

Reference: Esri's "Compact Cache V2" technical description, in the GitHub repository
Esri/raster-tiles-compactcache. The legacy field at byte 44 is sometimes given as 0; the
specification, Esri's own sample bundles and MapProxy all use 3, which is what is written here.

Beside ``_alllayers`` the writer puts ``conf.xml`` (the tiling scheme) and ``conf.cdi`` (the cache
extent) that ArcGIS and GDAL's ESRIC driver read (see :mod:`offmaps.containers.esri_scheme`), when
the tile set fits them: PNG or JPEG tiles on a grid whose levels start at 0 with one origin and tile
size; a mixed tile set's ``conf.xml`` says ``MIXED`` (GDAL's ESRIC driver reads it as RGBA, each
tile decoded by its own bytes). The reader takes the grid, format, bounds and levels from
``tilematrixset.json`` and ``metadata.json`` when they are there (offmaps writes them with the
tiles; a ``conf.xml`` that disagrees is a warning), else from ``conf.xml`` and ``conf.cdi`` (a cache
made by ArcGIS, see :mod:`offmaps.containers.esri_conf`): then a ``conf.xml`` whose
``StorageFormat`` is not ``esriMapCacheStorageModeCompactV2``, whose ``PacketSize`` is not 128,
whose ``LODInfos`` miss a level folder of the cache, or whose ``TileCols``/``TileRows`` are not the
first tile's size is refused when the cache is opened, before any tile is read.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from morecantile import TileMatrixSet

from offmaps.containers._common import ReaderBase, WriterBase
from offmaps.containers._folder import (
    METADATA_FILE,
    TMS_FILE,
    ConfinedFolder,
    EntryKind,
    ForeignScheme,
    find_foreign_entry,
    load_metadata,
    write_sidecars,
)
from offmaps.containers.base import TilesetMetadata, check_tile_in_matrix, detect_tile_format
from offmaps.containers.esri_conf import check_tile_size, foreign_scheme
from offmaps.containers.esri_scheme import CONF_CDI, CONF_XML, EsriStorageFormat, write_esri_scheme
from offmaps.errors import (
    ContainerCorruptError,
    ContainerError,
    ContainerWriteError,
    InvalidTileError,
    OffmapsError,
)
from offmaps.types import Tile, TileCompression, TileFormat

__all__ = [
    "BUNDLE_SIZE",
    "HEADER_SIZE",
    "INDEX_SIZE",
    "MAX_TILE_BYTES",
    "BundleHeader",
    "EsriCompactReader",
    "EsriCompactWriter",
    "bundle_name",
]

BUNDLE_SIZE = 128
"""Tiles per bundle side (the conf.xml ``PacketSize``)."""
RECORDS = BUNDLE_SIZE * BUNDLE_SIZE
HEADER_SIZE = 64
"""Bytes of the bundle header."""
INDEX_SIZE = RECORDS * 8
"""Bytes of the tile index that follows the header."""
DATA_START = HEADER_SIZE + INDEX_SIZE
MAX_TILE_BYTES = 2**24 - 1
"""The largest tile a bundle can index (24 bits of size)."""
_OFFSET_MASK = 2**40 - 1
_HEADER = struct.Struct("<4I3Q6I")
_ALLLAYERS = "_alllayers"
_LEVEL = re.compile(r"L([0-9]{2,3})")
_BUNDLE = re.compile(r"R([0-9a-f]{4,8})C([0-9a-f]{4,8})\.bundle")


@dataclass(frozen=True)
class BundleHeader:
    """The 64-byte header of a Compact Cache V2 bundle."""

    version: int = 3
    record_count: int = RECORDS
    max_record_size: int = 0
    offset_byte_count: int = 5
    slack_space: int = 0
    file_size: int = DATA_START
    user_header_offset: int = 40
    user_header_size: int = 20 + INDEX_SIZE
    legacy1: int = 3
    legacy2: int = 16
    legacy3: int = RECORDS
    legacy4: int = 5
    index_size: int = INDEX_SIZE

    def pack(self) -> bytes:
        """The header's 64 bytes."""
        return _HEADER.pack(
            self.version,
            self.record_count,
            self.max_record_size,
            self.offset_byte_count,
            self.slack_space,
            self.file_size,
            self.user_header_offset,
            self.user_header_size,
            self.legacy1,
            self.legacy2,
            self.legacy3,
            self.legacy4,
            self.index_size,
        )

    @classmethod
    def unpack(cls, data: bytes) -> BundleHeader:
        """Parse 64 header bytes (field values are not checked here)."""
        return cls(*_HEADER.unpack(data))


# (field, byte offset) checked on every read, and the others verify() reports when non-standard.
_REQUIRED = (("version", 0), ("record_count", 4), ("index_size", 60))
_CONVENTIONAL = (
    ("offset_byte_count", 12),
    ("user_header_offset", 32),
    ("user_header_size", 40),
    ("legacy1", 44),
    ("legacy2", 48),
    ("legacy3", 52),
    ("legacy4", 56),
)


def bundle_name(row: int, col: int) -> str:
    """The file name of the bundle whose top-left tile is at ``row``, ``col``."""
    return f"R{row:04x}C{col:04x}.bundle"


def _level_name(z: int) -> str:
    return f"L{z:02d}"


def _parse_level(name: str) -> int | None:
    match = _LEVEL.fullmatch(name)
    return int(match[1]) if match and _level_name(int(match[1])) == name else None


def _parse_bundle(name: str) -> tuple[int, int] | None:
    match = _BUNDLE.fullmatch(name)
    if match is None:
        return None
    row, col = int(match[1], 16), int(match[2], 16)
    if row % BUNDLE_SIZE or col % BUNDLE_SIZE or bundle_name(row, col) != name:
        return None
    return row, col


def _index_to_le(index: array[int]) -> bytes:
    if sys.byteorder == "little":
        return index.tobytes()
    swapped = array("Q", index)
    swapped.byteswap()
    return swapped.tobytes()


def _index_from_le(data: bytes) -> array[int]:
    index = array("Q")
    index.frombytes(data)
    if sys.byteorder != "little":
        index.byteswap()
    return index


# --- reading --------------------------------------------------------------------------------


class _Bundle:
    """An open bundle whose header and file size were checked."""

    def __init__(self, path: Path, file: BinaryIO, size: int, header: BundleHeader) -> None:
        self.path = path
        self.file = file
        self.size = size
        self.header = header

    def corrupt(
        self, why: str, *, offset: int | None = None, tile: Tile | None = None
    ) -> ContainerCorruptError:
        where = f"tile {tile.z}/{tile.x}/{tile.y}: " if tile is not None else ""
        at = f" (byte {offset})" if offset is not None else ""
        return ContainerCorruptError(
            f"{self.path}: {where}{why}{at}",
            path=self.path,
            offset=offset,
            tile=(tile.x, tile.y, tile.z) if tile is not None else None,
        )

    def read_at(self, offset: int, length: int) -> bytes:
        try:
            self.file.seek(offset)
            return self.file.read(length)
        except OSError as exc:
            raise ContainerError(
                f"cannot read {self.path} at byte {offset}: {exc.strerror or exc}", path=self.path
            ) from exc

    def entry(self, slot: int) -> int:
        """The raw index entry of a slot (0..16383, row-major)."""
        raw = self.read_at(HEADER_SIZE + 8 * slot, 8)
        if len(raw) != 8:
            raise self.corrupt("index cut short", offset=HEADER_SIZE + 8 * slot)
        value: int = struct.unpack("<Q", raw)[0]
        return value

    def index(self) -> array[int]:
        """All index entries."""
        raw = self.read_at(HEADER_SIZE, INDEX_SIZE)
        if len(raw) != INDEX_SIZE:
            raise self.corrupt("index cut short", offset=HEADER_SIZE + len(raw))
        return _index_from_le(raw)

    def tile_data(self, slot: int, value: int, tile: Tile) -> bytes | None:
        """The bytes an index entry points to, checked against the file and the size prefix."""
        size = value >> 40
        if size == 0:
            return None
        offset = value & _OFFSET_MASK
        entry_at = HEADER_SIZE + 8 * slot
        if offset < DATA_START + 4:
            raise self.corrupt(
                f"index entry at byte {entry_at} points into the header or index "
                f"(offset {offset}, size {size})",
                offset=offset,
                tile=tile,
            )
        if offset + size > self.size:
            raise self.corrupt(
                f"index entry at byte {entry_at} points past the end of the file "
                f"(offset {offset} + size {size} > file size {self.size})",
                offset=offset,
                tile=tile,
            )
        raw = self.read_at(offset - 4, size + 4)
        if len(raw) != size + 4:
            raise self.corrupt("tile cut short", offset=offset, tile=tile)
        prefix: int = struct.unpack_from("<I", raw)[0]
        if prefix != size:
            raise self.corrupt(
                f"size prefix {prefix} does not match the index size {size}",
                offset=offset - 4,
                tile=tile,
            )
        return raw[4:]

    def close(self) -> None:
        self.file.close()


def _slot_tile(z: int, row: int, col: int, slot: int) -> Tile:
    return Tile(col + slot % BUNDLE_SIZE, row + slot // BUNDLE_SIZE, z)


class EsriCompactReader(ReaderBase):
    """Reads an Esri Compact Cache V2 folder, checking each bundle it opens.

    A bundle's header (version, record count, index size) and its recorded file size are checked
    when it is opened; each tile's index entry (inside the file, past the index) and size prefix
    when the tile is read. Damage raises :class:`ContainerCorruptError` naming the bundle file, the
    tile and the byte offset. A few bundles stay open between lookups; memory does not grow with
    the cache.

    Args:
        path: the cache folder (holding ``_alllayers``).

    Raises:
        ContainerError: when the folder does not exist, is a file, or holds neither bundles nor a
            ``metadata.json``.
        ContainerCorruptError: when a sidecar file or the first bundle is damaged.
    """

    max_open_bundles = 8

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._folder = ConfinedFolder(self.path)
        self._open: OrderedDict[tuple[int, int, int], _Bundle] = OrderedDict()
        try:
            self._prefix = (
                [_ALLLAYERS] if self._folder.kind_of([_ALLLAYERS]) is EntryKind.DIRECTORY else []
            )
            self._scheme: ForeignScheme | None = None
            self._metadata = load_metadata(
                self._folder, self._guess_format, foreign=self._foreign_scheme
            )
            self._check_first_tile()
        except BaseException:
            self.close()
            raise

    @property
    def metadata(self) -> TilesetMetadata:
        """The tile set's metadata (from ``metadata.json`` and ``tilematrixset.json``, else from
        ``conf.xml`` and ``conf.cdi``, else guessed from the first tile)."""
        return self._metadata

    def _foreign_scheme(self, checked: bool) -> ForeignScheme | None:
        self._scheme = foreign_scheme(
            self._folder, (EsriStorageFormat.COMPACT_V2,), self._level_numbers, checked=checked
        )
        return self._scheme

    def _check_first_tile(self) -> None:
        """Refuse a ``conf.xml`` that the tiles were read by whose tile size is not the first
        tile's."""
        scheme = self._scheme
        if scheme is None or self._metadata.tms is not scheme.tms:
            return
        try:
            for tile, data in self._iter(self._metadata.tms, None):
                check_tile_size(scheme, tile, data)
                return
        except ContainerCorruptError as exc:
            if exc.path == scheme.where:
                raise
            # a damaged first tile says nothing of the scheme: it fails when read

    def _level_numbers(self) -> list[int]:
        found = []
        for name, kind in self._folder.list_dir(self._prefix) or []:
            z = _parse_level(name)
            if z is not None and kind is EntryKind.DIRECTORY:
                found.append(z)
        return sorted(found)

    def _guess_format(self, tms: TileMatrixSet) -> tuple[TileFormat, TileCompression] | None:
        for _, data in self._iter(tms, None):
            return detect_tile_format(data)
        return None

    def find_tile(self, tile: Tile) -> bytes | None:
        """The bytes of ``tile``, or None when absent or outside the tile matrix.

        Raises:
            ContainerCorruptError: when its bundle or index entry is damaged.
        """
        try:
            check_tile_in_matrix(self._metadata.tms, tile)
        except InvalidTileError:
            return None
        row, col = tile.y - tile.y % BUNDLE_SIZE, tile.x - tile.x % BUNDLE_SIZE
        bundle = self._bundle(tile.z, row, col)
        if bundle is None:
            return None
        slot = (tile.y - row) * BUNDLE_SIZE + (tile.x - col)
        return bundle.tile_data(slot, bundle.entry(slot), tile)

    def iter_tiles(self, zooms: Iterable[int] | None = None) -> Iterator[tuple[Tile, bytes]]:
        """Every tile with its bytes: by level, then bundle, then row-major within a bundle."""
        yield from self._iter(self._metadata.tms, None if zooms is None else set(zooms))

    def count_tiles(self) -> int:
        """How many tiles the bundles index (indexes are read; tiles are not)."""
        tms = self._metadata.tms
        count = 0
        for z, row, col in self._bundles(tms, None, None):
            for bundle in self._scan(z, row, col):
                for slot, value in enumerate(bundle.index()):
                    if value >> 40 and _in_matrix(tms, _slot_tile(z, row, col, slot)):
                        count += 1
        return count

    def verify(self) -> list[str]:
        """Check every bundle's header, index entries and tiles, and name what is not a bundle."""
        problems: list[str] = []
        try:
            self._check_top_level(problems)
            bundles = list(self._bundles(self._metadata.tms, None, problems))
        except OffmapsError as exc:
            return [*problems, str(exc)]
        for z, row, col in bundles:
            try:
                for bundle in self._scan(z, row, col):
                    problems.extend(self._verify_bundle(bundle, z, row, col))
            except OffmapsError as exc:
                problems.append(str(exc))
        return problems

    def _verify_bundle(self, bundle: _Bundle, z: int, row: int, col: int) -> list[str]:
        problems: list[str] = []
        meta = self._metadata
        tms = meta.tms
        expected = {(f, meta.tile_compression) for f in meta.tile_formats}
        said = "/".join((meta.format_name, meta.tile_compression))
        standard = BundleHeader()
        for name, _ in _CONVENTIONAL:
            got, want = getattr(bundle.header, name), getattr(standard, name)
            if got != want:
                problems.append(f"{bundle.path}: header {name} is {got}, not {want}")
        largest = 0
        for slot, value in enumerate(bundle.index()):
            if not value >> 40:
                continue
            tile = _slot_tile(z, row, col, slot)
            if not _in_matrix(tms, tile):
                problems.append(
                    f"{bundle.path}: index entry at byte {HEADER_SIZE + 8 * slot} is for tile "
                    f"{tile.z}/{tile.x}/{tile.y}, outside the tile matrix, ignored"
                )
                continue
            try:
                data = bundle.tile_data(slot, value, tile)
            except ContainerCorruptError as exc:
                problems.append(str(exc))
                continue
            largest = max(largest, value >> 40)
            if data is not None and detect_tile_format(data) not in expected:
                problems.append(
                    f"{bundle.path}: tile {tile.z}/{tile.x}/{tile.y} is "
                    f"{'/'.join(detect_tile_format(data))}, the tile set is {said}"
                )
        if largest > bundle.header.max_record_size:
            problems.append(
                f"{bundle.path}: header max record size {bundle.header.max_record_size} is "
                f"smaller than its largest tile ({largest} bytes)"
            )
        return problems

    def close(self) -> None:
        """Close the open bundles and the folder."""
        while self._open:
            self._open.popitem()[1].close()
        self._folder.close()

    def _check_top_level(self, problems: list[str]) -> None:
        allowed = {METADATA_FILE, TMS_FILE, CONF_XML, CONF_CDI, *self._prefix}
        for name, kind in self._folder.list_dir() or []:
            if name in allowed or (kind is EntryKind.DIRECTORY and _parse_level(name) is not None):
                continue
            problems.append(f"{self.path / name}: not part of the tile set, ignored")

    def _iter(self, tms: TileMatrixSet, levels: set[int] | None) -> Iterator[tuple[Tile, bytes]]:
        for z, row, col in self._bundles(tms, levels, None):
            for bundle in self._scan(z, row, col):
                for slot, value in enumerate(bundle.index()):
                    if not value >> 40:
                        continue
                    tile = _slot_tile(z, row, col, slot)
                    if not _in_matrix(tms, tile):
                        continue
                    data = bundle.tile_data(slot, value, tile)
                    if data is not None:
                        yield tile, data

    def _bundles(
        self, tms: TileMatrixSet, levels: set[int] | None, problems: list[str] | None
    ) -> Iterator[tuple[int, int, int]]:
        """The bundles ``(z, row, col)`` in sorted order; other entries are noted in problems."""

        def note(parts: list[str], why: str) -> None:
            if problems is not None:
                problems.append(f"{self.path.joinpath(*parts)}: {why}, ignored")

        prefix = self._prefix
        found_levels: list[tuple[int, str]] = []
        for name, kind in self._folder.list_dir(prefix) or []:
            z = _parse_level(name)
            if z is not None and kind is EntryKind.DIRECTORY:
                found_levels.append((z, name))
            elif prefix:
                note([*prefix, name], "not a level folder")
        for z, level_name in sorted(found_levels):
            if levels is not None and z not in levels:
                continue
            if not tms.minzoom <= z <= tms.maxzoom:
                note([*prefix, level_name], f"level {z} is not in {tms.id}")
                continue
            matrix = tms.matrix(z)
            found: list[tuple[int, int]] = []
            for name, kind in self._folder.list_dir([*prefix, level_name]) or []:
                key = _parse_bundle(name)
                if key is None:
                    note([*prefix, level_name, name], "not a bundle name")
                elif kind is not EntryKind.FILE:
                    note([*prefix, level_name, name], "not a regular file (symbolic link?)")
                elif key[0] >= matrix.matrixHeight or key[1] >= matrix.matrixWidth:
                    note([*prefix, level_name, name], "outside the tile matrix")
                else:
                    found.append(key)
            for row, col in sorted(found):
                yield z, row, col

    def _bundle(self, z: int, row: int, col: int) -> _Bundle | None:
        """A bundle kept open for lookups (a few of them, least recently used closed first)."""
        key = (z, row, col)
        bundle = self._open.get(key)
        if bundle is not None:
            self._open.move_to_end(key)
            return bundle
        bundle = self._open_bundle(z, row, col)
        if bundle is not None:
            self._open[key] = bundle
            if len(self._open) > self.max_open_bundles:
                self._open.popitem(last=False)[1].close()
        return bundle

    def _open_bundle(self, z: int, row: int, col: int) -> _Bundle | None:
        """Open a bundle and check its header, or None when there is no such bundle."""
        parts = [*self._prefix, _level_name(z), bundle_name(row, col)]
        opened = self._folder.open_file(parts)
        if opened is None:
            return None
        path = self.path.joinpath(*parts)
        bundle = _Bundle(path, os.fdopen(opened.fd, "rb"), opened.size, BundleHeader())
        try:
            bundle.header = _check_header(bundle)
        except BaseException:
            bundle.close()
            raise
        return bundle

    def _scan(self, z: int, row: int, col: int) -> Iterator[_Bundle]:
        """A bundle opened for one pass (iteration must not share the lookup handles)."""
        bundle = self._open_bundle(z, row, col)
        if bundle is None:
            return
        try:
            yield bundle
        finally:
            bundle.close()


def _check_header(bundle: _Bundle) -> BundleHeader:
    if bundle.size < DATA_START:
        raise bundle.corrupt(
            f"truncated: {bundle.size} bytes, a bundle has at least {DATA_START}",
            offset=bundle.size,
        )
    header = BundleHeader.unpack(bundle.read_at(0, HEADER_SIZE))
    standard = BundleHeader()
    for name, at in _REQUIRED:
        got, want = getattr(header, name), getattr(standard, name)
        if got != want:
            raise bundle.corrupt(
                f"not a Compact Cache V2 bundle: header {name} is {got}, not {want}", offset=at
            )
    if header.file_size != bundle.size:
        raise bundle.corrupt(
            f"header says the file is {header.file_size} bytes, it is {bundle.size} "
            f"({'truncated' if bundle.size < header.file_size else 'trailing data'})",
            offset=24,
        )
    return header


def _in_matrix(tms: TileMatrixSet, tile: Tile) -> bool:
    matrix = tms.matrix(tile.z)
    return tile.x < matrix.matrixWidth and tile.y < matrix.matrixHeight


# --- writing --------------------------------------------------------------------------------


class _OpenBundle:
    """A bundle being written: its file, its index in memory, and where the next tile goes."""

    def __init__(self, path: Path, file: BinaryIO, index: array[int], end: int) -> None:
        self.path = path
        self.file = file
        self.index = index
        self.end = end

    @classmethod
    def create(cls, path: Path) -> _OpenBundle:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("w+b")
        index = array("Q", bytes(INDEX_SIZE))
        try:
            file.write(BundleHeader().pack())
            file.write(_index_to_le(index))
        except BaseException:
            file.close()
            raise
        return cls(path, file, index, DATA_START)

    @classmethod
    def reopen(cls, path: Path) -> _OpenBundle:
        file = path.open("r+b")
        try:
            file.seek(HEADER_SIZE)
            index = _index_from_le(file.read(INDEX_SIZE))
            end = file.seek(0, os.SEEK_END)
        except BaseException:
            file.close()
            raise
        return cls(path, file, index, end)

    def append(self, slot: int, data: bytes) -> None:
        # the file's position is its end (made, reopened at its end, or appended to): a seek
        # would flush the buffer, a system call per tile
        self.file.write(struct.pack("<I", len(data)))
        self.file.write(data)
        self.index[slot] = (len(data) << 40) | (self.end + 4)
        self.end += 4 + len(data)

    def flush_and_close(self) -> None:
        """Write the header and index, and close the file."""
        try:
            largest = max(self.index) >> 40  # the size is in the top bits
            header = BundleHeader(max_record_size=largest, file_size=self.end)
            self.file.seek(0)
            self.file.write(header.pack())
            self.file.write(_index_to_le(self.index))
            self.file.flush()
        finally:
            self.file.close()


class EsriCompactWriter(WriterBase):
    """Writes an Esri Compact Cache V2 folder in constant memory, whatever the tile order.

    Each tile's bytes are appended to its bundle file as it arrives; only the index of a bundle
    (128 KiB) is held in memory, and only for the ``max_open_bundles`` bundles used last. When a
    further bundle is needed, the least recently used one gets its header and index written and is
    closed; if a tile for it arrives later, it is reopened and its index read back. Memory is thus
    bounded by ``max_open_bundles`` x 128 KiB, and tiles written in tile order (as from any
    container's ``iter_tiles``) touch each bundle about once. A tile written twice keeps its last
    bytes; the earlier ones stay in the file as unused space.

    Args:
        path: the cache folder to create.
        metadata: the tile set's description.
        overwrite: replace an existing folder on commit.
    """

    directory = True
    kind_name = "an Esri compact cache folder"
    max_open_bundles = 16

    @classmethod
    def refusal(cls, path: Path) -> str | None:
        """Why the folder at ``path`` is not a compact cache (an entry other than sidecar files,
        ``_alllayers``, level folders and bundles), or ``None``. An empty folder may be
        replaced."""
        top = {METADATA_FILE, TMS_FILE, CONF_XML, CONF_CDI}

        def belongs(parts: list[str], kind: EntryKind) -> bool:
            if parts[0] == _ALLLAYERS:
                if len(parts) == 1:
                    return kind is EntryKind.DIRECTORY
                parts = parts[1:]
            elif len(parts) == 1 and parts[0] in top:
                return kind is EntryKind.FILE
            if len(parts) == 1:
                return kind is EntryKind.DIRECTORY and _parse_level(parts[0]) is not None
            return (
                len(parts) == 2 and kind is EntryKind.FILE and _parse_bundle(parts[1]) is not None
            )

        try:
            foreign = find_foreign_entry(path, belongs)
        except OSError as exc:
            return f"cannot list it: {exc.strerror or exc}"
        return None if foreign is None else f"it holds {foreign}"

    def __init__(
        self, path: Path | str, metadata: TilesetMetadata, *, overwrite: bool = False
    ) -> None:
        super().__init__(path, metadata, overwrite=overwrite)
        self._open: OrderedDict[tuple[int, int, int], _OpenBundle] = OrderedDict()

    def _write(self, tile: Tile, data: bytes) -> None:
        if len(data) > MAX_TILE_BYTES:
            raise ContainerWriteError(
                f"tile {tile.z}/{tile.x}/{tile.y} is {len(data)} bytes; a Compact Cache V2 "
                f"bundle holds tiles up to {MAX_TILE_BYTES} bytes",
                path=self.path,
            )
        row, col = tile.y - tile.y % BUNDLE_SIZE, tile.x - tile.x % BUNDLE_SIZE
        bundle = self._bundle(tile.z, row, col)
        bundle.append((tile.y - row) * BUNDLE_SIZE + (tile.x - col), data)

    def _bundle(self, z: int, row: int, col: int) -> _OpenBundle:
        key = (z, row, col)
        bundle = self._open.get(key)
        if bundle is not None:
            self._open.move_to_end(key)
            return bundle
        path = self.temp / _ALLLAYERS / _level_name(z) / bundle_name(row, col)
        bundle = _OpenBundle.reopen(path) if path.exists() else _OpenBundle.create(path)
        self._open[key] = bundle
        if len(self._open) > self.max_open_bundles:
            self._open.popitem(last=False)[1].flush_and_close()
        return bundle

    def _finish(self, metadata: TilesetMetadata) -> None:
        while self._open:
            self._open.popitem(last=False)[1].flush_and_close()
        (self.temp / _ALLLAYERS).mkdir(exist_ok=True)
        write_sidecars(self.temp, metadata)
        write_esri_scheme(self.temp, metadata, EsriStorageFormat.COMPACT_V2)

    def _close(self) -> None:
        while self._open:
            self._open.popitem()[1].file.close()
