"""Exploded tile folders: one file per tile, in the XYZ, TMS or Esri exploded layout.

Layouts (``DIR`` is the folder given as ``xyz:DIR``, ``tms:DIR`` or ``esri-exploded:DIR``)::

    xyz            DIR/{z}/{x}/{y}.{ext}        rows counted from the top
    tms            DIR/{z}/{x}/{y_tms}.{ext}    rows counted from the bottom: see flip_row
    esri-exploded  DIR/_alllayers/L{zz}/R{rrrrrrrr}/C{cccccccc}.{ext}
                   level as (at least) two decimal digits, row and column as eight lowercase
                   hexadecimal digits, under _alllayers as ArcGIS writes them; readers also
                   accept the level folders directly under DIR.

Numbers are written canonically (decimal without leading zeros for xyz/tms) and read strictly:
``007``, ``-1``, ``abc``, ``..``, names past the tile matrix, symbolic links, FIFOs and files with
another extension are not tiles. Readers skip them and ``verify()`` lists them. Symbolic links are
never followed (see :class:`~offmaps.containers._folder.ConfinedFolder`), so a tile folder cannot
make a reader read outside it.

The extension is the tile format's: ``png``, ``jpg``, ``webp`` or ``pbf`` (gzipped vector tiles
keep ``.pbf``; their compression is recorded in ``metadata.json``). A mixed tile set (ArcGIS's
MIXED: PNG tiles where there is transparency, JPEG elsewhere, ``"format": "mixed"`` in
``metadata.json`` or ``MIXED`` in ``conf.xml``) names each file by its own bytes, ``.jpg`` or
``.png``, and its reader takes both (a tile with both files is read from its ``.jpg``, and
:meth:`~ExplodedReader.verify` names the other); each tile's format is its bytes', whatever its
extension.

Beside the tiles, at the top of ``DIR``:

``tilematrixset.json``
    the OGC TileMatrixSet (2.0) JSON of the grid. Absent means WebMercatorQuad.
``metadata.json``
    an object with the keys ``name`` (str), ``format`` (``png``, ``jpg``, ``webp``, ``pbf``),
    ``tile_compression`` (``none`` or ``gzip``), ``bounds`` (``[west, south, east, north]`` in
    WGS84 degrees, or null), ``minzoom``/``maxzoom`` (int or null), ``center``
    (``[lon, lat, zoom]`` or null), ``description`` and ``attribution`` (str), ``vector_layers``
    (TileJSON ``vector_layers`` list or null) and ``extra`` (object of string values carried through
    conversions). Unknown keys are ignored. Without the file (or its ``format``), readers take the
    format from the extension of the first tile.
``conf.xml``, ``conf.cdi`` (esri-exploded only)
    the tiling scheme and cache extent ArcGIS reads, written when the tile set fits them (see
    :mod:`offmaps.containers.esri_scheme`). The esri-exploded reader reads them where
    ``tilematrixset.json`` or ``metadata.json`` is missing (a cache made by ArcGIS; see
    :mod:`offmaps.containers.esri_conf`), and refuses one whose ``StorageFormat`` is not exploded,
    whose ``LODInfos`` miss a level folder, or whose ``TileCols``/``TileRows`` are not the first
    tile's size; where offmaps' files are there, they win and a disagreeing ``conf.xml`` is a
    warning.
"""

from __future__ import annotations

import bisect
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from morecantile import TileMatrixSet

from offmaps.containers._common import ReaderBase, WriterBase
from offmaps.containers._folder import (
    METADATA_FILE,
    TMS_FILE,
    ConfinedFolder,
    EntryKind,
    ForeignScheme,
    OpenFolder,
    find_foreign_entry,
    load_metadata,
    write_sidecars,
)
from offmaps.containers.base import (
    EntriesSkippedWarning,
    TilesetMetadata,
    _matrix_sizes,
    check_tile_in_matrix,
    detect_tile_format,
    parse_key_part,
)
from offmaps.containers.esri_conf import check_tile_size, foreign_scheme
from offmaps.containers.esri_scheme import CONF_CDI, CONF_XML, EsriStorageFormat, write_esri_scheme
from offmaps.errors import (
    ContainerCorruptError,
    ContainerWriteError,
    InvalidTileError,
    OffmapsError,
)
from offmaps.types import Tile, TileCompression, TileFormat

if TYPE_CHECKING:
    from offmaps.tiling import TileCover, ZoomCover

__all__ = [
    "EsriExplodedLayout",
    "EsriExplodedReader",
    "EsriExplodedWriter",
    "ExplodedReader",
    "ExplodedWriter",
    "FolderLayout",
    "TMSFolderReader",
    "TMSFolderWriter",
    "TMSLayout",
    "XYZFolderReader",
    "XYZFolderWriter",
    "XYZLayout",
    "flip_row",
]

MAX_TILE_BYTES = 64 * 2**20
"""Tiles larger than this are reported as corrupt rather than read into memory."""

_EXTENSIONS = {
    "png": TileFormat.PNG,
    "jpg": TileFormat.JPEG,
    "jpeg": TileFormat.JPEG,
    "webp": TileFormat.WEBP,
    "pbf": TileFormat.MVT,
    "mvt": TileFormat.MVT,
}
_NAMED = ("png", "jpg", "webp", "pbf")
_MIXED_EXTENSIONS = ("jpg", "png")
"""A mixed tile set's files: JPEG's first, which most of its tiles are (ArcGIS's MIXED)."""
_ALLLAYERS = "_alllayers"
_BY_NAME = 512
"""An area read opens up to this many folders or files of one folder by name; past it, it lists
the folder and opens the names in the area (cheaper when the folder holds few of them)."""


def flip_row(tms: TileMatrixSet, z: int, row: int) -> int:
    """Convert a row between top-origin (XYZ) and bottom-origin (TMS) counting; its own inverse."""
    size = _matrix_sizes(tms).get(z)  # cached: morecantile's matrix() takes microseconds
    height = int(tms.matrix(z).matrixHeight) if size is None else size[1]
    return height - 1 - row


def _decimal(text: str) -> int | None:
    """A canonical decimal number (no sign, no leading zeros, at most 10 digits), or None."""
    number = parse_key_part(text)
    return number if number is not None and str(number) == text else None


_HEX8 = re.compile(r"[0-9a-f]{8}")
_LEVEL = re.compile(r"L([0-9]{2,3})")


class FolderLayout:
    """How tile keys map to ``level/middle/leaf.ext`` names in an exploded folder.

    A layout names the three path parts of a tile and parses them back strictly: every parse
    returns None for a name that is not the canonical spelling of a number.
    """

    kind: ClassVar[str] = "xyz"

    def level_name(self, z: int) -> str:
        """The folder name of level ``z``."""
        return str(z)

    def parse_level(self, name: str) -> int | None:
        """The level a folder name stands for, or None."""
        return _decimal(name)

    def names(self, tms: TileMatrixSet, tile: Tile) -> tuple[str, str]:
        """The middle folder name and the file stem of ``tile``."""
        return str(tile.x), str(tile.y)

    def parse_middle(self, name: str) -> int | None:
        """The number a middle folder name stands for, or None."""
        return _decimal(name)

    def parse_leaf(self, stem: str) -> int | None:
        """The number a file stem stands for, or None."""
        return _decimal(stem)

    def tile(self, tms: TileMatrixSet, z: int, middle: int, leaf: int) -> Tile:
        """The tile named by parsed numbers (the level is known to be in ``tms``)."""
        return Tile(middle, leaf, z)

    def parts(self, tms: TileMatrixSet, tile: Tile, ext: str) -> list[str]:
        """The path of ``tile`` below the tiles folder, as parts."""
        middle, leaf = self.names(tms, tile)
        return [self.level_name(tile.z), middle, f"{leaf}.{ext}"]

    def middle_name(self, number: int) -> str:
        """The middle folder name of a parsed middle number."""
        return str(number)

    def leaf_stem(self, number: int) -> str:
        """The file stem of a parsed leaf number."""
        return str(number)

    def middles_of(self, level: ZoomCover) -> tuple[int, int]:
        """The first and last middle numbers of the tiles of a (non-empty) level cover."""
        bounds = level.bounds()
        if bounds is None:
            raise ValueError(f"the cover of level {level.z} is empty")
        min_col, _, max_col, _ = bounds
        return min_col, max_col

    def leaves_of(self, tms: TileMatrixSet, level: ZoomCover, middle: int) -> list[tuple[int, int]]:
        """The leaf numbers of the tiles of ``level`` under the middle folder ``middle``, as
        sorted disjoint inclusive ranges (here the middle is the column, the leaf the row)."""
        return _runs(level.rows[(level.starts <= middle) & (level.stops >= middle)].tolist())


class XYZLayout(FolderLayout):
    """``{z}/{x}/{y}.ext`` with rows counted from the top."""


class TMSLayout(FolderLayout):
    """``{z}/{x}/{y}.ext`` with rows counted from the bottom (OSGeo TMS)."""

    kind = "tms"

    def names(self, tms: TileMatrixSet, tile: Tile) -> tuple[str, str]:
        return str(tile.x), str(flip_row(tms, tile.z, tile.y))

    def tile(self, tms: TileMatrixSet, z: int, middle: int, leaf: int) -> Tile:
        return Tile(middle, flip_row(tms, z, leaf), z)

    def leaves_of(self, tms: TileMatrixSet, level: ZoomCover, middle: int) -> list[tuple[int, int]]:
        ranges = super().leaves_of(tms, level, middle)
        z = level.z
        return [(flip_row(tms, z, hi), flip_row(tms, z, lo)) for lo, hi in reversed(ranges)]


class EsriExplodedLayout(FolderLayout):
    """``L{zz}/R{row:08x}/C{col:08x}.ext`` as in ArcGIS exploded caches."""

    kind = "esri-exploded"

    def level_name(self, z: int) -> str:
        return f"L{z:02d}"

    def parse_level(self, name: str) -> int | None:
        match = _LEVEL.fullmatch(name)
        if match is None or self.level_name(int(match[1])) != name:
            return None
        return int(match[1])

    def names(self, tms: TileMatrixSet, tile: Tile) -> tuple[str, str]:
        return f"R{tile.y:08x}", f"C{tile.x:08x}"

    def parse_middle(self, name: str) -> int | None:
        return _hex8(name, "R")

    def parse_leaf(self, stem: str) -> int | None:
        return _hex8(stem, "C")

    def tile(self, tms: TileMatrixSet, z: int, middle: int, leaf: int) -> Tile:
        return Tile(leaf, middle, z)

    def middle_name(self, number: int) -> str:
        return f"R{number:08x}"

    def leaf_stem(self, number: int) -> str:
        return f"C{number:08x}"

    def middles_of(self, level: ZoomCover) -> tuple[int, int]:
        if not len(level.rows):
            raise ValueError(f"the cover of level {level.z} is empty")
        return int(level.rows[0]), int(level.rows[-1])

    def leaves_of(self, tms: TileMatrixSet, level: ZoomCover, middle: int) -> list[tuple[int, int]]:
        """Here the middle is the row, the leaf the column."""
        row = level.rows == middle
        return list(zip(level.starts[row].tolist(), level.stops[row].tolist(), strict=True))


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct numbers as inclusive ranges of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and runs[-1][1] == number - 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs


def _in_ranges(number: int, starts: list[int], ranges: list[tuple[int, int]]) -> bool:
    """Whether ``number`` is in one of the sorted disjoint inclusive ``ranges`` (``starts``
    holds their first numbers)."""
    i = bisect.bisect_right(starts, number) - 1
    return i >= 0 and number <= ranges[i][1]


def _hex8(name: str, prefix: str) -> int | None:
    if len(name) != 9 or not name.startswith(prefix) or not _HEX8.fullmatch(name[1:]):
        return None
    return int(name[1:], 16)


@dataclass(frozen=True)
class _Found:
    tile: Tile
    parts: list[str]
    folder: OpenFolder
    """The tile's folder, open while the walk is in it."""


_Note = Callable[[list[str], str], None]

_NAMED_SKIPPED = 5


def skipped_warning(path: Path, skipped: list[tuple[str, str]]) -> EntriesSkippedWarning:
    """The warning saying which entries of the folder at ``path`` a walk skipped."""
    named = "; ".join(f"{where} ({why})" for where, why in skipped[:_NAMED_SKIPPED])
    more = f"; and {len(skipped) - _NAMED_SKIPPED} more" if len(skipped) > _NAMED_SKIPPED else ""
    return EntriesSkippedWarning(
        f"{path}: skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} that "
        f"{'is' if len(skipped) == 1 else 'are'} not tiles: {named}{more}",
        entries=skipped,
    )


class ExplodedReader(ReaderBase):
    """Reads an exploded tile folder in the layout given by the subclass.

    Args:
        path: the folder.

    Raises:
        ContainerError: when the folder does not exist, is a file, or holds neither tiles nor a
            ``metadata.json``.
        ContainerCorruptError: when ``metadata.json`` or ``tilematrixset.json`` is invalid.
    """

    layout: ClassVar[FolderLayout] = XYZLayout()
    _top_level_names: ClassVar[frozenset[str]] = frozenset({METADATA_FILE, TMS_FILE})
    _tiles_folder: ClassVar[tuple[str, ...]] = ()
    """The folder below the destination that holds the level folders (none: they are on top)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._folder = ConfinedFolder(self.path)
        try:
            self._prefix = self._tiles_prefix()
            self._ext: str | None = None
            self._scheme: ForeignScheme | None = None
            self._metadata = load_metadata(
                self._folder, self._guess_format, foreign=self._foreign_scheme
            )
            self._exts: tuple[str, ...]
            if self._metadata.mixed:
                self._exts = _MIXED_EXTENSIONS
            else:
                self._exts = (self._ext or self._metadata.tile_format.value,)
            self._check_first_tile()
        except BaseException:
            self._folder.close()
            raise

    @property
    def metadata(self) -> TilesetMetadata:
        """The tile set's metadata (from ``metadata.json``, or guessed from the tiles)."""
        return self._metadata

    def _tiles_prefix(self) -> list[str]:
        """The path parts of the folder holding the level folders, below the container."""
        return []

    def _foreign_scheme(self, checked: bool) -> ForeignScheme | None:
        """Another program's description of the tiles (Esri's ``conf.xml``), or None."""
        return None

    def _level_numbers(self) -> list[int]:
        """The levels of the level folders, sorted."""
        found = []
        for name, kind in self._folder.list_dir(self._prefix) or []:
            z = self.layout.parse_level(name)
            if z is not None and kind is EntryKind.DIRECTORY:
                found.append(z)
        return sorted(found)

    def _check_first_tile(self) -> None:
        """Refuse a ``conf.xml`` that the tiles are read by whose tile size or format is not
        the first tile file's: tiles of another extension would not be seen at all, so they
        cannot fail one by one."""
        scheme = self._scheme
        if scheme is None or self._metadata.tms is not scheme.tms:
            return
        for found in self._walk(self._metadata.tms, None, None, None):
            ext = found.parts[-1].rpartition(".")[2]
            if _EXTENSIONS[ext] not in self._metadata.tile_formats:
                raise ContainerCorruptError(
                    f"{scheme.where}: TileImageInfo/CacheTileFormat says "
                    f"{self._metadata.format_name} tiles, but the first tile file is "
                    f"{self.path.joinpath(*found.parts)}",
                    path=scheme.where,
                    tile=(found.tile.x, found.tile.y, found.tile.z),
                )
            data = self._read(found)
            if data:
                check_tile_size(scheme, found.tile, data)
            return

    def _guess_format(self, tms: TileMatrixSet) -> tuple[TileFormat, TileCompression] | None:
        for found in self._walk(tms, None, None, None):
            ext = found.parts[-1].rpartition(".")[2]
            tile_format = _EXTENSIONS[ext]
            self._ext = ext
            compression = TileCompression.NONE
            if tile_format is TileFormat.MVT:
                data = self._read(found)
                if data:
                    compression = detect_tile_format(data)[1]
            return tile_format, compression
        return None

    def find_tile(self, tile: Tile) -> bytes | None:
        """The bytes of ``tile``, or None when absent or outside the tile matrix."""
        tms = self._metadata.tms
        try:
            check_tile_in_matrix(tms, tile)
        except InvalidTileError:
            return None
        for ext in self._exts:
            data = self._folder.read_file(
                [*self._prefix, *self.layout.parts(tms, tile, ext)], limit=MAX_TILE_BYTES
            )
            if data is not None:
                return data
        return None

    def iter_tiles(self, zooms: Iterable[int] | None = None) -> Iterator[tuple[Tile, bytes]]:
        """Every tile with its bytes, by level, then folder, then file number, lazily.

        Warns:
            EntriesSkippedWarning: once the walk is over, when it skipped entries that are not
                tiles (symbolic links, FIFOs, other files, names outside the layout).
        """
        levels = None if zooms is None else set(zooms)
        skipped: list[tuple[str, str]] = []

        def note(parts: list[str], why: str) -> None:
            skipped.append(("/".join(parts), why))

        if levels is None:
            self._check_top_level(note)
        for found in self._walk(self._metadata.tms, self._exts, levels, note):
            data = self._read(found)
            if data is None:
                note(found.parts, "vanished while reading")
            else:
                yield found.tile, data
        if skipped:
            warnings.warn(skipped_warning(self.path, skipped), stacklevel=2)

    def iter_cover(self, cover: TileCover) -> Iterator[tuple[Tile, bytes]]:
        """The tiles of ``cover`` the folder holds, with their bytes, by level, then folder, then
        file number, lazily. Only the folders and files of the cover's tiles are opened.

        Per level, the middle folders in the cover's range are opened by name (or, when the
        range is wider than a few hundred, found in the level's listing); in each, the files of
        the cover's tiles are opened by name (or found in the folder's listing when there are
        many). Entries that are not tiles (symbolic links, FIFOs, other names) count as absent
        and are not reported: :meth:`iter_tiles` and :meth:`verify` name them.
        """
        tms = self._metadata.tms
        layout = self.layout
        exts = self._exts
        for z in cover.zooms.levels():
            level = cover.level(z)
            if not len(level.rows) or not tms.minzoom <= z <= tms.maxzoom:
                continue
            level_folder = self._folder.open_folder([*self._prefix, layout.level_name(z)])
            if level_folder is None:
                continue
            with level_folder:
                first, last = layout.middles_of(level)
                for middle in self._middles_in(level_folder, first, last):
                    ranges = layout.leaves_of(tms, level, middle)
                    if not ranges:
                        continue
                    middle_folder = level_folder.open_folder(layout.middle_name(middle))
                    if middle_folder is None:
                        continue
                    with middle_folder:
                        done = -1
                        for leaf, name in self._leaves_in(middle_folder, ranges, exts):
                            if leaf == done:  # a mixed tile's second file: its .jpg was read
                                continue
                            data = middle_folder.read_file(name, limit=MAX_TILE_BYTES)
                            if data is not None:
                                done = leaf
                                yield layout.tile(tms, z, middle, leaf), data

    def _middles_in(self, level: OpenFolder, first: int, last: int) -> Iterable[int]:
        """The middle numbers from ``first`` to ``last`` to open: all of them when few, else
        those the level's listing holds."""
        if last - first < _BY_NAME:
            return range(first, last + 1)
        parse = self.layout.parse_middle
        found = []
        for name, kind in level.entries():
            number = parse(name)
            if number is not None and first <= number <= last and kind is EntryKind.DIRECTORY:
                found.append(number)
        return sorted(found)

    def _leaves_in(
        self, middle: OpenFolder, ranges: list[tuple[int, int]], exts: tuple[str, ...]
    ) -> list[tuple[int, str]]:
        """The leaf numbers and file names of ``ranges`` to open, in order (a mixed tile's
        ``.jpg`` before its ``.png``): all of them when few, else those the folder's listing
        holds."""
        stem = self.layout.leaf_stem
        if len(exts) * sum(hi - lo + 1 for lo, hi in ranges) <= _BY_NAME:
            return [
                (n, f"{stem(n)}.{ext}")
                for lo, hi in ranges
                for n in range(lo, hi + 1)
                for ext in exts
            ]
        parse = self.layout.parse_leaf
        starts = [lo for lo, _ in ranges]
        found = []
        for name, kind in middle.entries():
            base, dot, suffix = name.rpartition(".")
            number = parse(base) if dot and suffix in exts else None
            if number is not None and kind is EntryKind.FILE and _in_ranges(number, starts, ranges):
                found.append((number, exts.index(suffix), name))
        return [(number, name) for number, _, name in sorted(found)]

    def count_tiles(self) -> int:
        """How many tiles the folder holds (names are listed; no tile is read)."""
        return sum(1 for _ in self._walk(self._metadata.tms, self._exts, None, None))

    def verify(self) -> list[str]:
        """Entries that are not tiles, tiles outside the matrix, unreadable or mistyped tiles."""
        problems: list[str] = []
        meta = self._metadata
        expected = {(f, meta.tile_compression) for f in meta.tile_formats}
        said = "/".join((meta.format_name, meta.tile_compression))

        def note(parts: list[str], why: str) -> None:
            problems.append(f"{self.path.joinpath(*parts)}: {why}, ignored")

        try:
            self._check_top_level(note)
            for found in self._walk(meta.tms, self._exts, None, note):
                data = self._read(found)
                where = self.path.joinpath(*found.parts)
                if data is None:
                    problems.append(f"{where}: vanished while verifying")
                elif not data:
                    problems.append(f"{where}: empty file (zero bytes)")
                elif detect_tile_format(data) not in expected:
                    got = "/".join(detect_tile_format(data))
                    problems.append(f"{where}: content is {got}, the tile set is {said}")
        except OffmapsError as exc:
            problems.append(str(exc))
        return problems

    def close(self) -> None:
        """Release the folder's descriptor."""
        self._folder.close()

    def _check_top_level(self, note: _Note) -> None:
        for name, kind in self._folder.list_dir() or []:
            if name in self._top_level_names or name in self._prefix[:1]:
                continue
            if kind is EntryKind.DIRECTORY and self.layout.parse_level(name) is not None:
                continue
            note([name], "not part of the tile set")

    def _read(self, found: _Found) -> bytes | None:
        return found.folder.read_file(found.parts[-1], limit=MAX_TILE_BYTES)

    def _walk(
        self,
        tms: TileMatrixSet,
        exts: tuple[str, ...] | None,
        levels: set[int] | None,
        notes: _Note | None,
    ) -> Iterator[_Found]:
        """Tiles by name in sorted order, lazily, one folder listing at a time.

        Anything that is not a tile of ``tms`` with one of the extensions ``exts`` (any tile
        extension when None) is skipped, and passed to ``notes`` when given; so is a tile's
        second file (a mixed tile set's ``.png`` beside its ``.jpg``).
        """
        layout = self.layout
        prefix = self._prefix

        def note(parts: list[str], why: str) -> None:
            if notes is not None:
                notes(parts, why)

        top = self._folder.list_dir(prefix) or []
        for z, level_name in _numbered(top, layout.parse_level, prefix, note, quiet=not prefix):
            if levels is not None and z not in levels:
                continue
            level_parts = [*prefix, level_name]
            if not tms.minzoom <= z <= tms.maxzoom:
                note(level_parts, f"level {z} is not in {tms.id} ({tms.minzoom}-{tms.maxzoom})")
                continue
            middles = self._folder.list_dir(level_parts) or []
            for middle, middle_name in _numbered(middles, layout.parse_middle, level_parts, note):
                middle_parts = [*level_parts, middle_name]
                middle_folder = self._folder.open_folder(middle_parts)
                if middle_folder is None:
                    continue
                with middle_folder:
                    yield from self._walk_files(tms, z, middle, middle_folder, exts, note)

    def _walk_files(
        self,
        tms: TileMatrixSet,
        z: int,
        middle: int,
        folder: OpenFolder,
        exts: tuple[str, ...] | None,
        note: _Note,
    ) -> Iterator[_Found]:
        """The tiles of one middle folder by file number (the folder stays open meanwhile)."""
        layout = self.layout
        middle_parts = folder.parts
        leaves: list[tuple[int, int, str]] = []
        for name, kind in sorted(folder.entries()):
            stem, dot, suffix = name.rpartition(".")
            number = layout.parse_leaf(stem) if dot else None
            if kind is not EntryKind.FILE:
                note([*middle_parts, name], "not a regular file (symbolic link, FIFO, device?)")
            elif number is None:
                note([*middle_parts, name], "not a tile name")
            elif exts is None and suffix in _EXTENSIONS:
                leaves.append((number, 0, name))
            elif exts is not None and suffix in exts:
                leaves.append((number, exts.index(suffix), name))
            else:
                note([*middle_parts, name], f"not a .{'/'.join(exts or _NAMED)} file")
        done = -1
        for leaf, _, name in sorted(leaves):
            if leaf == done:
                note([*middle_parts, name], "another file of the same tile is read")
                continue
            done = leaf
            tile = layout.tile(tms, z, middle, leaf)
            try:
                check_tile_in_matrix(tms, tile)
            except InvalidTileError as exc:
                note([*middle_parts, name], str(exc))
                continue
            yield _Found(tile, [*middle_parts, name], folder)


def _numbered(
    entries: list[tuple[str, EntryKind]],
    parse: Callable[[str], int | None],
    parent: list[str],
    note: _Note,
    *,
    quiet: bool = False,
) -> list[tuple[int, str]]:
    """The sub-folders whose names parse as numbers, sorted; others are noted unless ``quiet``."""
    numbered: list[tuple[int, str]] = []
    for name, kind in entries:
        number = parse(name)
        if number is not None and kind is EntryKind.DIRECTORY:
            numbered.append((number, name))
        elif not quiet:
            why = "not a folder (symbolic link?)" if number is not None else "not a tile folder"
            note([*parent, name], why)
    return sorted(numbered)


class ExplodedWriter(WriterBase):
    """Writes an exploded tile folder in the layout given by the subclass.

    Tiles are written to their files as they arrive (a second write of a tile replaces the file),
    in a hidden temporary folder that is renamed to the destination on commit.

    Args:
        path: the folder to create.
        metadata: the tile set's description; its format sets the file extension.
        overwrite: replace an existing folder on commit.
    """

    layout: ClassVar[FolderLayout] = XYZLayout()
    directory = True
    kind_name = "an XYZ tile folder"
    _top_level_names: ClassVar[frozenset[str]] = frozenset({METADATA_FILE, TMS_FILE})
    _tiles_folder: ClassVar[tuple[str, ...]] = ()
    """The folder below the destination that holds the level folders (none: they are on top)."""

    def __init__(
        self, path: Path | str, metadata: TilesetMetadata, *, overwrite: bool = False
    ) -> None:
        super().__init__(path, metadata, overwrite=overwrite)
        self._made: Path | None = None

    @classmethod
    def refusal(cls, path: Path) -> str | None:
        """Why the folder at ``path`` is not a tile folder of this layout (an entry other than
        the layout's level/middle/tile names and the sidecar files), or ``None``. An empty folder
        may be replaced: nothing in it is lost."""
        layout = cls.layout
        top = cls._top_level_names

        def belongs(parts: list[str], kind: EntryKind) -> bool:
            if parts[0] == _ALLLAYERS and _ALLLAYERS in top:
                if len(parts) == 1:
                    return kind is EntryKind.DIRECTORY
                parts = parts[1:]
            elif len(parts) == 1 and parts[0] in top:
                return kind is EntryKind.FILE
            is_dir = kind is EntryKind.DIRECTORY
            if len(parts) == 1:
                return is_dir and layout.parse_level(parts[0]) is not None
            if len(parts) == 2:
                return is_dir and layout.parse_middle(parts[1]) is not None
            stem, dot, ext = parts[-1].rpartition(".")
            return (
                len(parts) == 3
                and kind is EntryKind.FILE
                and bool(dot)
                and ext in _EXTENSIONS
                and layout.parse_leaf(stem) is not None
            )

        try:
            foreign = find_foreign_entry(path, belongs)
        except OSError as exc:
            return f"cannot list it: {exc.strerror or exc}"
        return None if foreign is None else f"it holds {foreign}"

    def _write(self, tile: Tile, data: bytes) -> None:
        meta = self.metadata
        ext = _mixed_extension(tile, data, self.path) if meta.mixed else meta.tile_format.value
        parts = self.layout.parts(meta.tms, tile, ext)
        folder = self.temp.joinpath(*self._tiles_folder, *parts[:-1])
        if folder != self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made = folder
        (folder / parts[-1]).write_bytes(data)
        if meta.mixed:  # a tile written again in the other format: one file per tile
            other = _MIXED_EXTENSIONS[1 - _MIXED_EXTENSIONS.index(ext)]
            (folder / f"{parts[-1].rpartition('.')[0]}.{other}").unlink(missing_ok=True)

    def _finish(self, metadata: TilesetMetadata) -> None:
        write_sidecars(self.temp, metadata)


def _mixed_extension(tile: Tile, data: bytes, path: Path) -> str:
    """The file extension of a mixed tile set's tile: its bytes' format, PNG or JPEG.

    Raises:
        ContainerWriteError: for bytes of any other format.
    """
    found = detect_tile_format(data)[0] if data else None
    if found is TileFormat.JPEG:
        return "jpg"
    if found is TileFormat.PNG:
        return "png"
    what = "empty" if found is None else "neither PNG nor JPEG"
    raise ContainerWriteError(
        f"tile {tile.z}/{tile.x}/{tile.y} is {what}: a mixed tile set holds PNG and JPEG tiles",
        path=path,
    )


class XYZFolderReader(ExplodedReader):
    """Reads ``xyz:DIR`` folders: ``DIR/{z}/{x}/{y}.ext``."""

    layout = XYZLayout()


class XYZFolderWriter(ExplodedWriter):
    """Writes ``xyz:DIR`` folders: ``DIR/{z}/{x}/{y}.ext``."""

    layout = XYZLayout()
    kind_name = "an XYZ tile folder"


class TMSFolderReader(ExplodedReader):
    """Reads ``tms:DIR`` folders: ``DIR/{z}/{x}/{y}.ext``, rows counted from the bottom."""

    layout = TMSLayout()


class TMSFolderWriter(ExplodedWriter):
    """Writes ``tms:DIR`` folders: ``DIR/{z}/{x}/{y}.ext``, rows counted from the bottom."""

    layout = TMSLayout()
    kind_name = "a TMS tile folder"


class EsriExplodedReader(ExplodedReader):
    """Reads ``esri-exploded:DIR`` folders: ``DIR[/_alllayers]/L{zz}/R{row}/C{col}.ext``."""

    layout = EsriExplodedLayout()
    _top_level_names = frozenset({METADATA_FILE, TMS_FILE, CONF_XML, CONF_CDI})

    def _tiles_prefix(self) -> list[str]:
        if self._folder.kind_of([_ALLLAYERS]) is EntryKind.DIRECTORY:
            return [_ALLLAYERS]
        return []

    def _foreign_scheme(self, checked: bool) -> ForeignScheme | None:
        self._scheme = foreign_scheme(
            self._folder, (EsriStorageFormat.EXPLODED,), self._level_numbers, checked=checked
        )
        return self._scheme


class EsriExplodedWriter(ExplodedWriter):
    """Writes ``esri-exploded:DIR`` folders: ``DIR/_alllayers/L{zz}/R{row:08x}/C{col:08x}.ext``,
    with ``conf.xml`` and ``conf.cdi`` beside ``_alllayers`` when the tile set fits them."""

    layout = EsriExplodedLayout()
    kind_name = "an Esri exploded cache folder"
    _top_level_names = frozenset({METADATA_FILE, TMS_FILE, CONF_XML, CONF_CDI, _ALLLAYERS})
    _tiles_folder = (_ALLLAYERS,)

    def _finish(self, metadata: TilesetMetadata) -> None:
        (self.temp / _ALLLAYERS).mkdir(exist_ok=True)
        super()._finish(metadata)
        write_esri_scheme(self.temp, metadata, EsriStorageFormat.EXPLODED)
