"""Shared by the folder containers (exploded folders, Esri compact caches).

Two concerns live here, both about a tile set kept as a folder:

* the sidecar files written beside the tiles: ``metadata.json`` (our own tile set description, see
  :class:`MetadataDocument`) and ``tilematrixset.json`` (the OGC TileMatrixSet JSON of the grid);
* :class:`ConfinedFolder`, which reads files below a folder through ``openat`` without following
  symbolic links, so that a hostile folder (a symlink to ``/etc``, a FIFO named like a tile) can
  never make a reader leave the folder, block, or read a device.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from morecantile import TileMatrixSet
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from offmaps.containers.base import (
    MIXED_FORMAT,
    TilesetMetadata,
    tms_to_json,
    web_mercator_quad,
)
from offmaps.errors import (
    ContainerCorruptError,
    ContainerError,
    OffmapsWarning,
    UnknownTileMatrixSetError,
)
from offmaps.tiling.tms import find_incompatibility, tms_from_json
from offmaps.types import BBox, TileCompression, TileFormat

__all__ = [
    "METADATA_FILE",
    "TMS_FILE",
    "ConfinedFolder",
    "EntryKind",
    "ForeignScheme",
    "ForeignSchemeWarning",
    "MetadataDocument",
    "OpenFolder",
    "RegularFile",
    "find_foreign_entry",
    "load_metadata",
    "write_sidecars",
]

METADATA_FILE = "metadata.json"
"""Name of the tile set description written beside the tiles."""

TMS_FILE = "tilematrixset.json"
"""Name of the OGC TileMatrixSet JSON written beside the tiles."""

_MAX_SIDECAR_BYTES = 16 * 2**20


class MetadataDocument(BaseModel):
    """The content of ``metadata.json``: the fields of :class:`TilesetMetadata` except the grid.

    Unknown keys are ignored so that newer writers stay readable; every listed key is optional
    except that, without ``format``, readers fall back to the first tile to tell the format.
    ``"format": "mixed"`` is a mixed tile set (:attr:`TilesetMetadata.mixed`): ``format`` PNG and
    ``mixed`` true in Python, as a mixed cache's definition.
    """

    model_config = ConfigDict(extra="ignore")

    name: str = "offmaps"
    format: TileFormat | None = None
    mixed: bool = False
    tile_compression: TileCompression = TileCompression.NONE
    bounds: tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] | None = None
    minzoom: int | None = Field(default=None, ge=0)
    maxzoom: int | None = Field(default=None, ge=0)
    center: tuple[FiniteFloat, FiniteFloat, int] | None = None
    description: str = ""
    attribution: str = ""
    vector_layers: list[dict[str, Any]] | None = None
    extra: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _read_mixed(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == MIXED_FORMAT:
            return {**data, "format": TileFormat.PNG, "mixed": True}
        return data

    @model_validator(mode="after")
    def _check_mixed(self) -> MetadataDocument:
        if self.mixed and self.format is not TileFormat.PNG:
            raise ValueError('a mixed tile set says "format": "mixed"')
        return self

    @model_serializer(mode="wrap")
    def _write_mixed(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        mixed = data.pop("mixed", False)
        if mixed:
            data["format"] = MIXED_FORMAT
        return data

    @classmethod
    def from_metadata(cls, metadata: TilesetMetadata) -> MetadataDocument:
        """The document describing ``metadata``."""
        return cls(
            name=metadata.name,
            format=metadata.tile_format,
            mixed=metadata.mixed,
            tile_compression=metadata.tile_compression,
            bounds=None if (b := metadata.bounds) is None else (b.west, b.south, b.east, b.north),
            minzoom=metadata.minzoom,
            maxzoom=metadata.maxzoom,
            center=metadata.center,
            description=metadata.description,
            attribution=metadata.attribution,
            vector_layers=metadata.vector_layers,
            extra=dict(metadata.extra),
        )


def write_sidecars(folder: Path, metadata: TilesetMetadata) -> None:
    """Write ``metadata.json`` and ``tilematrixset.json`` into ``folder``."""
    document = MetadataDocument.from_metadata(metadata)
    (folder / METADATA_FILE).write_text(document.model_dump_json(indent=2) + "\n", "utf-8")
    (folder / TMS_FILE).write_text(tms_to_json(metadata.tms) + "\n", "utf-8")


FormatGuess = Callable[[TileMatrixSet], tuple[TileFormat, TileCompression] | None]
"""Tells the tile format from the tiles of a grid themselves, or None when there are none."""


@dataclass(frozen=True)
class ForeignScheme:
    """What tiling-scheme files of another program (an Esri cache's ``conf.xml`` and
    ``conf.cdi``) say of a folder's tiles: read where offmaps' own sidecar files are absent.

    Attributes:
        tms: the grid.
        tile_format: the tiles' format.
        bounds: WGS84 bounds of the tiles, when known.
        minzoom: the lowest level with a level folder, when any.
        maxzoom: the highest level with a level folder, when any.
        where: the file it comes from, for messages.
        tile_size: the tiles' width and height in pixels.
        mixed: the tiles are PNG or JPEG each (``MIXED``); ``tile_format`` is then PNG.
    """

    tms: TileMatrixSet
    tile_format: TileFormat
    bounds: BBox | None
    minzoom: int | None
    maxzoom: int | None
    where: Path
    tile_size: tuple[int, int]
    mixed: bool = False


class ForeignSchemeWarning(OffmapsWarning):
    """A folder's foreign tiling-scheme file (an Esri cache's ``conf.xml``) disagrees with its
    ``tilematrixset.json`` or ``metadata.json``, or does not parse: offmaps' files were read, as
    they are written with the tiles."""


def load_metadata(
    folder: ConfinedFolder,
    guess_format: FormatGuess,
    *,
    foreign: Callable[[bool], ForeignScheme | None] | None = None,
) -> TilesetMetadata:
    """Read the sidecar files of a folder tile set into :class:`TilesetMetadata`.

    Where a sidecar file is missing, ``foreign`` (an Esri cache's ``conf.xml`` and ``conf.cdi``)
    gives the grid, the format, the bounds and the levels (it is called with True: check the
    scheme against the folder, as it describes the tiles; with False when it is only compared).
    Without it a missing ``tilematrixset.json`` means WebMercatorQuad and a missing
    ``metadata.json`` (or one without ``format``) makes ``guess_format`` tell the format from the
    first tile.

    When both offmaps' files and the foreign ones are there, offmaps' win: they are written with
    the tiles, in the same atomic commit, and hold the whole grid exactly (matrix sizes, levels
    past the tiles), where ``conf.xml`` is a lossy projection of it that other programs may edit.
    A disagreement (or a foreign file that does not parse) is a :class:`ForeignSchemeWarning`.

    Raises:
        ContainerCorruptError: when a sidecar file is not valid JSON of its schema, or a foreign
            file needed is invalid.
        ContainerError: when there is neither a recorded format nor any tile to tell it from.
    """
    tms: TileMatrixSet | None = None
    raw_tms = folder.read_file([TMS_FILE], limit=_MAX_SIDECAR_BYTES)
    if raw_tms is not None:
        where = folder.path / TMS_FILE
        try:
            tms = tms_from_json(raw_tms.decode("utf-8"), source=str(where))
        except UnicodeDecodeError as exc:
            raise ContainerCorruptError(f"{where}: not UTF-8 text", path=where) from exc
        except UnknownTileMatrixSetError as exc:
            raise ContainerCorruptError(str(exc), path=where) from exc
        _check_levels(tms, where)
    document = MetadataDocument()
    raw_meta = folder.read_file([METADATA_FILE], limit=_MAX_SIDECAR_BYTES)
    if raw_meta is not None:
        try:
            document = MetadataDocument.model_validate_json(raw_meta)
        except ValidationError as exc:
            raise ContainerCorruptError(
                f"{folder.path / METADATA_FILE} is not a valid tile set description: "
                f"{_first_error(exc)}",
                path=folder.path / METADATA_FILE,
            ) from exc
    scheme = _foreign(folder, foreign, complete=tms is not None and document.format is not None)
    if scheme is not None and tms is not None:
        _warn_mismatch(scheme, tms, document)
    if tms is None:
        tms = scheme.tms if scheme is not None else web_mercator_quad()
    tile_format, compression = document.format, document.tile_compression
    mixed = document.mixed
    if tile_format is None and scheme is not None:
        tile_format, mixed = scheme.tile_format, scheme.mixed
    if tile_format is None:
        guessed = guess_format(tms)
        if guessed is None:
            raise ContainerError(
                f"{folder.path} holds no tiles and no {METADATA_FILE} telling their format: "
                "not a tile folder",
                path=folder.path,
            )
        tile_format, compression = guessed
    bounds = BBox(*document.bounds) if document.bounds is not None else None
    minzoom, maxzoom = document.minzoom, document.maxzoom
    if raw_meta is None and scheme is not None:
        bounds, minzoom, maxzoom = scheme.bounds, scheme.minzoom, scheme.maxzoom
    return TilesetMetadata(
        tile_format=tile_format,
        tms=tms,
        name=document.name,
        tile_compression=compression,
        bounds=bounds,
        minzoom=minzoom,
        maxzoom=maxzoom,
        center=document.center,
        description=document.description,
        attribution=document.attribution,
        vector_layers=document.vector_layers,
        extra=document.extra,
        mixed=mixed,
    )


def _foreign(
    folder: ConfinedFolder,
    foreign: Callable[[bool], ForeignScheme | None] | None,
    *,
    complete: bool,
) -> ForeignScheme | None:
    """The foreign scheme; when offmaps' files are ``complete``, only compared, so that a
    foreign file that does not parse is a warning, not an error."""
    if foreign is None:
        return None
    if not complete:
        return foreign(True)
    try:
        return foreign(False)
    except ContainerError as exc:
        warnings.warn(
            ForeignSchemeWarning(f"{exc}; {folder.path / TMS_FILE} and {METADATA_FILE} read"),
            stacklevel=4,
        )
        return None


def _warn_mismatch(scheme: ForeignScheme, tms: TileMatrixSet, document: MetadataDocument) -> None:
    differences = []
    grid = find_incompatibility(scheme.tms, tms)
    if grid is not None:
        differences.append(f"its grid differs from {TMS_FILE}'s: {grid}")
    if document.format is not None and (document.format, document.mixed) != (
        scheme.tile_format,
        scheme.mixed,
    ):
        said = MIXED_FORMAT if document.mixed else document.format.value
        differences.append(
            f"it says {MIXED_FORMAT if scheme.mixed else scheme.tile_format.value} tiles, "
            f"{METADATA_FILE} {said}"
        )
    if differences:
        warnings.warn(
            ForeignSchemeWarning(
                f"{scheme.where}: {'; '.join(differences)}; offmaps' files were read (they are "
                "written with the tiles)"
            ),
            stacklevel=4,
        )


def _check_levels(tms: TileMatrixSet, where: Path) -> None:
    """Refuse grids whose levels are not numbered 0..n-like: tile keys address levels by number."""
    ids = [matrix.id for matrix in tms.tileMatrices]
    first = ids[0] if ids else ""
    start = int(first) if first.isascii() and first.isdigit() else None
    if start is None or ids != [str(z) for z in range(start, start + len(ids))]:
        raise ContainerCorruptError(
            f"{where}: the tile matrices must be numbered by consecutive levels "
            f"(found ids {ids[:5]}{'...' if len(ids) > 5 else ''})",
            path=where,
        )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "document"
    return f"{where}: {error.get('msg', 'invalid')}"


class EntryKind(Enum):
    """What a folder entry is, as seen without following symbolic links."""

    DIRECTORY = "directory"
    FILE = "file"
    OTHER = "other"
    """A symbolic link, FIFO, socket or device: never read."""


@dataclass(frozen=True)
class RegularFile:
    """An open regular file below a confined folder."""

    fd: int
    size: int


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# errnos meaning "there is no such regular file there": absent, a file where a folder was
# expected, or a symbolic link refused by O_NOFOLLOW.
_ABSENT = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}


class ConfinedFolder:
    """Reads below one folder without ever following a symbolic link.

    Every path is opened component by component relative to the folder's descriptor with
    ``O_NOFOLLOW``, so symlinks (``3 -> /etc``), FIFOs and devices below the folder are treated as
    absent instead of being followed, blocking or streaming forever. The folder itself may be given
    through a symlink.

    Args:
        path: the folder.

    Raises:
        ContainerError: when ``path`` does not exist or is not a folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._open_root()

    def _open_root(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise ContainerError(f"{self.path} does not exist", path=self.path) from exc
            except NotADirectoryError as exc:
                raise ContainerError(
                    f"{self.path} is a file, not a tile folder", path=self.path
                ) from exc
            except OSError as exc:
                raise ContainerError(
                    f"cannot open {self.path}: {exc.strerror or exc}", path=self.path
                ) from exc
        return self._fd

    def _open_dir(self, parts: Sequence[str]) -> int | None:
        """A new descriptor of the sub-folder ``parts`` (empty: the folder itself), or None."""
        fd = os.dup(self._open_root())
        try:
            for part in parts:
                _check_part(part)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError as exc:
            os.close(fd)
            if exc.errno in _ABSENT:
                return None
            raise self._error(parts, exc) from exc
        return fd

    def open_file(self, parts: Sequence[str]) -> RegularFile | None:
        """Open the regular file at ``parts`` below the folder, or None if there is none.

        Symbolic links anywhere on the way, and entries that are not regular files, count as
        absent. The caller closes the descriptor.
        """
        dir_fd = self._open_dir(parts[:-1])
        if dir_fd is None:
            return None
        try:
            return self._open_regular(dir_fd, parts[:-1], parts[-1])
        finally:
            os.close(dir_fd)

    def read_file(self, parts: Sequence[str], *, limit: int) -> bytes | None:
        """The bytes of the regular file at ``parts``, or None if there is none.

        Raises:
            ContainerCorruptError: when the file is larger than ``limit`` bytes.
        """
        dir_fd = self._open_dir(parts[:-1])
        if dir_fd is None:
            return None
        try:
            return self._read_regular(dir_fd, parts[:-1], parts[-1], limit)
        finally:
            os.close(dir_fd)

    def open_folder(self, parts: Sequence[str]) -> OpenFolder | None:
        """The sub-folder ``parts`` held open, to list it and read its files by name without
        opening the path again for each; None if it is not a folder. The caller closes it."""
        fd = self._open_dir(parts)
        if fd is None:
            return None
        return OpenFolder(self, list(parts), fd)

    def list_dir(self, parts: Sequence[str] = ()) -> list[tuple[str, EntryKind]] | None:
        """The entries of the sub-folder ``parts`` sorted by name, or None if it is not a folder."""
        opened = self.open_folder(parts)
        if opened is None:
            return None
        with opened:
            return sorted(opened.entries())

    def kind_of(self, parts: Sequence[str]) -> EntryKind | None:
        """What the entry at ``parts`` is (not following links), or None if absent."""
        dir_fd = self._open_dir(parts[:-1])
        if dir_fd is None:
            return None
        try:
            _check_part(parts[-1])
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _ABSENT:
                return None
            raise self._error(parts, exc) from exc
        finally:
            os.close(dir_fd)
        if stat.S_ISDIR(info.st_mode):
            return EntryKind.DIRECTORY
        if stat.S_ISREG(info.st_mode):
            return EntryKind.FILE
        return EntryKind.OTHER

    def close(self) -> None:
        """Release the folder's descriptor (reopened if the folder is used again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _error(self, parts: Sequence[str], exc: OSError) -> ContainerError:
        where = self.path.joinpath(*parts)
        return ContainerError(f"cannot read {where}: {exc.strerror or exc}", path=where)

    def _open_regular(self, dir_fd: int, folder: Sequence[str], name: str) -> RegularFile | None:
        """Open the regular file ``name`` of the sub-folder ``folder`` (open as ``dir_fd``)
        without following a link, or None if there is none."""
        try:
            _check_part(name)
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _ABSENT:
                return None
            raise self._error([*folder, name], exc) from exc
        try:
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise self._error([*folder, name], exc) from exc
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return RegularFile(fd, info.st_size)

    def _read_regular(
        self, dir_fd: int, folder: Sequence[str], name: str, limit: int
    ) -> bytes | None:
        """The bytes of the regular file ``name`` of the sub-folder ``folder`` (open as
        ``dir_fd``), or None if there is none: one ``openat``, ``fstat``, ``read`` (more only for
        a file that grows while read) and ``close``."""
        opened = self._open_regular(dir_fd, folder, name)
        if opened is None:
            return None
        try:
            if opened.size > limit:
                where = self.path.joinpath(*folder, name)
                raise ContainerCorruptError(
                    f"{where} is {opened.size} bytes, more than the {limit} allowed", path=where
                )
            data = os.read(opened.fd, opened.size)
            if len(data) == opened.size or not data:
                return data
            chunks = [data]
            remaining = opened.size - len(data)
            while remaining > 0:
                chunk = os.read(opened.fd, remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise self._error([*folder, name], exc) from exc
        finally:
            os.close(opened.fd)


class OpenFolder:
    """A sub-folder of a :class:`ConfinedFolder`, held open by its descriptor.

    Reading many files of one folder through it costs one ``openat``, ``fstat``, ``read`` and
    ``close`` per file: the path above is not walked again for each. Names are single path
    components; symbolic links and entries that are not regular files count as absent, as in
    :meth:`ConfinedFolder.read_file`. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, owner: ConfinedFolder, parts: list[str], fd: int) -> None:
        self._owner = owner
        self.parts = parts
        self._fd: int | None = fd

    def _descriptor(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self._owner.path.joinpath(*self.parts)} was closed")
        return self._fd

    def entries(self) -> list[tuple[str, EntryKind]]:
        """The entries of the folder (name, kind), in the order the system lists them."""
        try:
            with os.scandir(self._descriptor()) as scan:
                return [(entry.name, entry_kind(entry)) for entry in scan]
        except OSError as exc:
            raise self._owner._error(self.parts, exc) from exc

    def open_folder(self, name: str) -> OpenFolder | None:
        """The sub-folder ``name`` of this folder held open, or None if it is not a folder (absent,
        a file, a symbolic link). The caller closes it."""
        try:
            _check_part(name)
            fd = os.open(name, _DIR_FLAGS, dir_fd=self._descriptor())
        except OSError as exc:
            if exc.errno in _ABSENT:
                return None
            raise self._owner._error([*self.parts, name], exc) from exc
        return OpenFolder(self._owner, [*self.parts, name], fd)

    def read_file(self, name: str, *, limit: int) -> bytes | None:
        """The bytes of the regular file ``name`` in the folder, or None if there is none.

        Raises:
            ContainerCorruptError: when the file is larger than ``limit`` bytes.
        """
        return self._owner._read_regular(self._descriptor(), self.parts, name, limit)

    def close(self) -> None:
        """Release the folder's descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OpenFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_part(part: str) -> None:
    # Callers build parts from parsed numbers or constant names; this guards the invariant that
    # a part never walks up or across folders.
    if part in ("", ".", "..") or "/" in part or "\0" in part:
        raise OSError(errno.ENOENT, f"refused path component {part!r}")


EntryRule = Callable[[list[str], EntryKind], bool]
"""Whether an entry (its path parts below the folder, and what it is) belongs in a tile folder."""


def entry_kind(entry: os.DirEntry[str]) -> EntryKind:
    """What a scanned entry is, without following a symbolic link."""
    if entry.is_dir(follow_symlinks=False):
        return EntryKind.DIRECTORY
    if entry.is_file(follow_symlinks=False):
        return EntryKind.FILE
    return EntryKind.OTHER


def find_foreign_entry(path: Path, belongs: EntryRule) -> str | None:
    """The first entry below ``path`` (walked in name order) that does not belong in it, as a
    relative path, or None when every entry does. Sub-folders that belong are walked too;
    symbolic links are never followed.

    Raises:
        OSError: when a folder cannot be listed.
    """
    pending: deque[list[str]] = deque([[]])
    while pending:
        parts = pending.popleft()
        with os.scandir(path.joinpath(*parts)) as scan:
            entries = sorted((entry.name, entry_kind(entry)) for entry in scan)
        for name, kind in entries:
            child = [*parts, name]
            if not belongs(child, kind):
                return "/".join(child)
            if kind is EntryKind.DIRECTORY:
                pending.append(child)
    return None
