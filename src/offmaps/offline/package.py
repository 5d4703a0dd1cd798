"""The offline map package: an unpacked folder that opens with no network (docs/offline-package.md).

A package is a folder holding a ``package.json`` manifest, one GeoPackage per feature service,
tile archives (MBTiles or PMTiles), an optional thumbnail and an optional ``attachments/`` folder
of content-addressed blobs. The manifest lists every other file with its size and SHA-256, so a
package can be checked whole (:func:`verify_package`) before it is trusted, and opened
(:class:`MobileMapPackage`) without touching the network.

The manifest is the trust boundary: it is read with a size limit, refused on duplicate keys, and
every path in it must be a plain relative POSIX path that cannot leave the folder. Files are opened
one folder at a time without following symbolic links, so a hostile package cannot make offmaps
read outside itself.

The manifest records the package as delivered, but a package is edited on the device: its replica
GeoPackages (the files of ``replicas``) change as features are edited, by offmaps or by QGIS or
``sqlite3``, and SQLite keeps ``-wal``, ``-shm`` or ``-journal`` files beside them; new attachment
blobs appear under ``attachments/``. So for a replica file, :meth:`MobileMapPackage.load` and
:func:`verify_package` check that it is there, a regular file, and (verify) a sound GeoPackage,
but not its listed size and SHA-256; SQLite's files beside it are not strays; and an unlisted
file under ``attachments/`` is fine when it is a blob whose bytes hash to its name
``attachments/ab/cd/<sha256>``. Every other file must still match the manifest exactly.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from offmaps.errors import ContainerError, FeaturesError, OffmapsError, PackageError
from offmaps.features.geopackage import GeoPackageStore
from offmaps.geopackage import APPLICATION_ID

# offmaps.containers (tile archives, with morecantile and shapely: ~0.4 s to import) is imported
# where a tile archive is opened, not here, so that syncing a package's edits does not pay for it
if TYPE_CHECKING:  # OfflineLayer.open_tiles' return annotation only
    from offmaps.containers import TileReader

__all__ = [
    "ATTACHMENTS_FOLDER",
    "GEOPACKAGE_APPLICATION_ID",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "PACKAGE_FORMAT_VERSION",
    "LayerKind",
    "MobileMapPackage",
    "OfflineLayer",
    "OfflineMap",
    "PackageFile",
    "PackageItem",
    "PackageLayer",
    "PackageManifest",
    "PackageReplica",
    "ReferenceBasemap",
    "VerifyProblem",
    "VerifyReport",
    "check_package_path",
    "file_entry",
    "read_manifest",
    "verify_package",
    "write_manifest",
]

PACKAGE_FORMAT_VERSION = "1.0"
"""The package format this module writes and reads."""

ATTACHMENTS_FOLDER = "attachments"
"""The folder of a package that holds attachment blobs, relative to the package folder."""

MANIFEST_NAME = "package.json"
"""The manifest's file name, at the root of the package folder."""

MAX_MANIFEST_BYTES = 8 * 1024 * 1024
"""The largest manifest read or written, in bytes."""

GEOPACKAGE_APPLICATION_ID = APPLICATION_ID
"""SQLite ``application_id`` of a GeoPackage (``"GPKG"``)."""

LayerKind = Literal["feature", "table", "vector_tile", "raster_tile", "online_only"]
"""The kinds of layers and tables in a package."""

_CHUNK = 1024 * 1024
_MAX_PATH_CHARS = 1024
_MAX_REASON_CHARS = 300
_FEATURE_KINDS = frozenset({"feature", "table"})
_TILE_KINDS = frozenset({"vector_tile", "raster_tile"})
_TILE_SUFFIXES = (".mbtiles", ".pmtiles")
_ATTACHMENT = re.compile(r"attachments/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


# --- paths ----------------------------------------------------------------------------------


def check_package_path(path: str) -> str:
    """Refuse a path that is not a plain relative POSIX path inside the package.

    Refused: empty paths and parts, absolute paths, ``.`` and ``..`` parts, backslashes, colons
    (drive letters, streams), NUL and other control characters, and paths over 1,024 characters.

    Returns:
        ``path`` unchanged.

    Raises:
        ValueError: naming the rule broken (pydantic turns it into a validation error).
    """
    shown = repr(path[:80])
    if not path:
        raise ValueError("path is empty")
    if len(path) > _MAX_PATH_CHARS:
        raise ValueError(f"path is longer than {_MAX_PATH_CHARS} characters: {shown}")
    if _CONTROL.search(path):
        raise ValueError(f"path contains NUL or a control character: {shown}")
    if "\\" in path:
        raise ValueError(f"path contains a backslash (use /): {shown}")
    if ":" in path:
        raise ValueError(f"path contains a colon: {shown}")
    if path.startswith("/"):
        raise ValueError(f"path is absolute: {shown}")
    parts = path.split("/")
    if any(part == "" for part in parts):
        raise ValueError(f"path has an empty part: {shown}")
    if any(part in {".", ".."} for part in parts):
        raise ValueError(f"path has a '.' or '..' part: {shown}")
    return path


PackagePath = Annotated[str, AfterValidator(check_package_path)]
"""A relative POSIX path inside a package (see :func:`check_package_path`)."""


# --- manifest -------------------------------------------------------------------------------


class _Model(BaseModel):
    # the attribute docstrings document the fields here only: pydantic reading them into field
    # descriptions (use_attribute_docstrings) parses this module's source at import, ~60 ms of
    # every `offmaps sync`, and no schema of package.json is published
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackageFile(_Model):
    """One file of the package, as the manifest lists it."""

    path: PackagePath
    """Relative POSIX path inside the package folder."""
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    """SHA-256 of the file's bytes, 64 lowercase hex digits."""
    size: Annotated[int, Field(ge=0)]
    """Size in bytes."""


class PackageItem(_Model):
    """The item the package was made from: what lists of offline maps show."""

    title: str
    """The map's title."""
    snippet: str = ""
    """A one-line summary."""
    description: str = ""
    """A longer description."""
    tags: list[str] = Field(default_factory=list)
    """Tags of the item."""
    thumbnail: PackagePath | None = None
    """Relative path of the thumbnail image; the file is listed in ``files``."""


class PackageLayer(_Model):
    """An operational layer, basemap layer or table of the offline map."""

    id: str
    """The web map layer or table id."""
    title: str
    """The layer's title."""
    kind: LayerKind
    """What the layer is, and so how it is opened."""
    file: PackagePath | None = None
    """Relative path of the GeoPackage or tile archive; ``None`` for online-only layers."""
    layer: str | None = None
    """The layer or table name inside the GeoPackage (feature and table kinds only)."""
    service: str | None = None
    """The server's feature or tile service name."""
    url: str | None = None
    """Online-only layers: their URL."""

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        if self.kind == "online_only":
            if self.file is not None or self.layer is not None:
                raise ValueError(f"online_only layer {self.id!r} cannot have a file or layer")
            if not self.url:
                raise ValueError(f"online_only layer {self.id!r} needs a url")
            return self
        if self.file is None:
            raise ValueError(f"{self.kind} layer {self.id!r} needs a file")
        if self.kind in _FEATURE_KINDS and not self.layer:
            raise ValueError(f"{self.kind} layer {self.id!r} needs the GeoPackage layer name")
        if self.kind in _TILE_KINDS and self.layer is not None:
            raise ValueError(f"{self.kind} layer {self.id!r} cannot name a GeoPackage layer")
        return self


class PackageReplica(_Model):
    """A feature service replica the package's GeoPackage was extracted as, for sync."""

    service: str
    """The feature service name on the server."""
    replica_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    """The replica's id, 32 lowercase hex digits."""
    generation: Annotated[int, Field(ge=0)]
    """The server generation the replica was extracted at."""
    file: PackagePath
    """Relative path of the replica's GeoPackage."""
    sync_direction: Literal["bidirectional", "upload", "download", "none"] = "bidirectional"
    """How feature edits sync."""
    attachment_sync_direction: Literal["bidirectional", "upload", "none"] = "bidirectional"
    """How attachments sync (ArcGIS ``AttachmentSyncDirection``)."""
    sync_model: Literal["per_layer", "per_replica"] = "per_layer"
    """Whether the replica's layers sync one by one or together (ArcGIS ``SyncModel``)."""


class ReferenceBasemap(_Model):
    """A tile archive already on the device, used as the basemap instead of a downloaded one
    (ArcGIS ``referenceBasemapDirectory`` and ``referenceBasemapFilename``)."""

    directory: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    """The folder on the device; a relative one is relative to the package folder."""
    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    """The archive's file name in that folder."""


class PackageManifest(_Model):
    """The ``package.json`` document: what the package holds and how to check it."""

    format_version: Literal["1.0"]
    """The package format version; readers refuse versions they do not know."""
    created: AwareDatetime
    """When the package was made (with a time zone)."""
    item: PackageItem
    """The item the package was made from."""
    server_url: str | None = None
    """The server the map came from, for sync."""
    source_map_id: str | None = None
    """The web map's item id on that server."""
    update_mode: Literal["sync_with_feature_services", "no_updates"] = "sync_with_feature_services"
    """Whether the package syncs with its feature services or stays as it was taken."""
    map: dict[str, Any]
    """The web map JSON document as taken offline."""
    layers: list[PackageLayer]
    """Operational layers, then basemap layers."""
    tables: list[PackageLayer]
    """Non-spatial tables."""
    replicas: list[PackageReplica] = Field(default_factory=list)
    """One replica per feature service taken offline."""
    files: list[PackageFile]
    """Every file of the package except ``package.json`` itself."""
    reference_basemap: ReferenceBasemap | None = None
    """The device's own basemap, when the offline map was made to use one."""

    def replica_files(self) -> set[str]:
        """The listed paths of the replicas' files, as ``files`` spells them (the manifest
        matches references to files without regard to case): files that change as they are
        edited, whose size and SHA-256 are not checked."""
        wanted = {replica.file.casefold() for replica in self.replicas}
        return {entry.path for entry in self.files if entry.path.casefold() in wanted}

    def relisted(self, folder: Path, paths: Iterable[str]) -> PackageManifest:
        """This manifest with the entries of ``paths`` (size, SHA-256) read again from the
        files of ``folder``: after a device or the server changed them in place.

        Raises:
            PackageError: as :func:`file_entry`.
        """
        changed = set(paths)
        files = [
            file_entry(folder, entry.path) if entry.path in changed else entry
            for entry in self.files
        ]
        return self.model_copy(update={"files": files})

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        listed: set[str] = set()
        folders: set[str] = set()
        for entry in self.files:
            key = entry.path.casefold()
            if key == MANIFEST_NAME:
                raise ValueError(f"files lists {MANIFEST_NAME} itself")
            if key in listed:
                raise ValueError(f"file {entry.path!r} is listed twice")
            listed.add(key)
            parts = key.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
            _check_attachment(entry)
        clash = sorted(listed & folders)
        if clash:
            raise ValueError(f"{clash[0]!r} is listed both as a file and as a folder")

        def require(path: str | None, what: str) -> None:
            if path is not None and path.casefold() not in listed:
                raise ValueError(f"{what} file {path!r} is not listed in files")

        require(self.item.thumbnail, "thumbnail")
        ids: set[str] = set()
        for layer in [*self.layers, *self.tables]:
            if layer.id in ids:
                raise ValueError(f"layer id {layer.id!r} is used twice")
            ids.add(layer.id)
            require(layer.file, f"layer {layer.id!r}")
        for table in self.tables:
            if table.kind not in {"table", "online_only"}:
                raise ValueError(f"table {table.id!r} has kind {table.kind!r}")
        replica_files: set[str] = set()
        for replica in self.replicas:
            require(replica.file, f"replica {replica.service!r}")
            if replica.file.casefold() in replica_files:
                raise ValueError(f"two replicas share the file {replica.file!r}")
            replica_files.add(replica.file.casefold())
        return self


def _check_attachment(entry: PackageFile) -> None:
    """Blobs under ``attachments/`` are named ``ab/cd/<sha256>`` after their own bytes."""
    if not entry.path.startswith("attachments/"):
        return
    match = _ATTACHMENT.fullmatch(entry.path)
    if (
        match is None
        or match.group(3) != entry.sha256
        or match.group(1) + match.group(2) != entry.sha256[:4]
    ):
        raise ValueError(f"attachment {entry.path!r} is not named attachments/ab/cd/<its sha256>")


# --- reading and writing the manifest --------------------------------------------------------


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:80]!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    text = f"{where}: {message}" if where else message
    return _one_line(text)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 1] + "…"
    return text


def _read_manifest_bytes(folder: Path) -> bytes:
    where = folder / MANIFEST_NAME
    try:
        fd = os.open(where, _OPEN_FLAGS)
    except FileNotFoundError:
        raise PackageError(f"{folder}: no {MANIFEST_NAME}: not an offline package") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PackageError(f"{where}: is a symbolic link") from None
        if exc.errno == errno.ENOTDIR:
            raise PackageError(f"{folder}: is not a folder") from None
        raise PackageError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PackageError(f"{where}: is not a regular file")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise PackageError(
                f"{where}: is {info.st_size:,} bytes; manifests are limited to "
                f"{MAX_MANIFEST_BYTES:,}"
            )
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_MANIFEST_BYTES:  # it grew while being read
                raise PackageError(f"{where}: is over {MAX_MANIFEST_BYTES:,} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise PackageError(f"{where}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_manifest(folder: Path) -> PackageManifest:
    """Read and validate the manifest of the package in ``folder``.

    Raises:
        PackageError: with a one-line reason: the manifest is missing, too large, not UTF-8
            JSON (or has duplicate keys), of an unknown ``format_version``, or breaks the schema
            (the first error is named).
    """
    folder = Path(folder)
    where = folder / MANIFEST_NAME
    raw = _read_manifest_bytes(folder)
    try:
        text = raw.decode("utf-8")
        document = json.loads(
            text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise PackageError(f"{where}: is not UTF-8 text") from None
    except RecursionError:
        raise PackageError(f"{where}: is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise PackageError(f"{where}: is not JSON: {_one_line(str(exc))}") from None
    if not isinstance(document, dict):
        raise PackageError(f"{where}: is not a JSON object")
    version = document.get("format_version")
    if version is None:
        raise PackageError(f"{where}: has no format_version")
    if version != PACKAGE_FORMAT_VERSION:
        shown = repr(version)[:40]
        raise PackageError(
            f"{where}: unknown format_version {shown} (this offmaps reads {PACKAGE_FORMAT_VERSION})"
        )
    try:
        return PackageManifest.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise PackageError(f"{where}: {_first_error(exc)}") from None


def write_manifest(folder: Path, manifest: PackageManifest) -> Path:
    """Write ``manifest`` as ``folder/package.json``, atomically.

    The JSON goes to a hidden temporary file in ``folder``, is synced to disk and renamed over
    ``package.json``, so readers see the old manifest or the new one, never a part.

    Returns:
        The manifest's path.

    Raises:
        PackageError: the manifest is over :data:`MAX_MANIFEST_BYTES`, or the folder cannot be
            written; no temporary file is left behind.
    """
    folder = Path(folder)
    target = folder / MANIFEST_NAME
    data = (manifest.model_dump_json(indent=2) + "\n").encode("utf-8")
    if len(data) > MAX_MANIFEST_BYTES:
        raise PackageError(
            f"{target}: the manifest is {len(data):,} bytes; the limit is {MAX_MANIFEST_BYTES:,}"
        )
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".partial", dir=folder)
    except OSError as exc:
        raise PackageError(f"{target}: cannot write: {exc.strerror or exc}") from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; a package is meant to be shared
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise PackageError(f"{target}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _sync_folder(folder)
    return target


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; some filesystems cannot sync folders."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- files inside the folder ----------------------------------------------------------------


class _UnsafeFileError(Exception):
    """A listed file cannot be opened safely; the message is the verify reason."""


def _symlink_reason(folder: Path, relative: str) -> str:
    link = folder / relative
    try:
        target = link.resolve()
        root = folder.resolve()
    except (OSError, RuntimeError):
        return "symbolic link that cannot be resolved"
    if target != root and root not in target.parents:
        return "symbolic link pointing outside the package"
    return "symbolic link (package files must be regular files)"


def _open_inside(folder: Path, relative: str) -> int:
    """A read-only descriptor of ``folder/relative``, opened one folder at a time without
    following symbolic links; refuses anything but a regular file.

    Raises:
        _UnsafeFileError: missing, a symbolic link on the way, or not a regular file.
    """
    parts = relative.split("/")
    try:
        current = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _UnsafeFileError(f"package folder cannot be opened: {exc.strerror}") from None
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            try:
                fd = os.open(part, _OPEN_FLAGS if last else _DIR_FLAGS, dir_fd=current)
            except FileNotFoundError:
                raise _UnsafeFileError("missing") from None
            except OSError as exc:
                prefix = "/".join(parts[: index + 1])
                if os.path.islink(folder / prefix):
                    reason = _symlink_reason(folder, prefix)
                    raise _UnsafeFileError(reason if last else f"{prefix}: {reason}") from None
                if exc.errno == errno.ENOTDIR:
                    raise _UnsafeFileError(f"missing: {prefix} is not a folder") from None
                raise _UnsafeFileError(f"cannot open: {exc.strerror or exc}") from None
            os.close(current)
            current = fd
        if not stat.S_ISREG(os.fstat(current).st_mode):
            raise _UnsafeFileError("not a regular file")
    except BaseException:
        os.close(current)
        raise
    return current


def _hash_file(fd: int, progress: Callable[[int], None] | None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "rb", buffering=0) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest(), size


def file_entry(folder: Path, relative: str) -> PackageFile:
    """The manifest entry of ``folder/relative``: its path, size and SHA-256 (read in 1 MiB
    chunks).

    Raises:
        PackageError: the path is not a valid package path, or the file is missing, not a
            regular file, reached through a symbolic link, or unreadable.
    """
    folder = Path(folder)
    try:
        check_package_path(relative)
        fd = _open_inside(folder, relative)
    except (ValueError, _UnsafeFileError) as exc:
        raise PackageError(f"{folder}: {relative[:200]!r}: {exc}") from None
    try:
        sha256, size = _hash_file(fd, None)
    except OSError as exc:
        raise PackageError(f"{folder / relative}: cannot read: {exc.strerror or exc}") from None
    return PackageFile(path=relative, sha256=sha256, size=size)


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyProblem:
    """One thing wrong with a package.

    Attributes:
        path: the file concerned, relative to the package folder.
        reason: what is wrong, in one line.
    """

    path: str
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_package` found.

    Attributes:
        problems: everything wrong, in the order found; empty for a good package.
        files: how many files the manifest lists.
        bytes: their total size, as the manifest gives it.
    """

    problems: tuple[VerifyProblem, ...]
    files: int
    bytes: int

    @property
    def ok(self) -> bool:
        """Whether the package has no problem."""
        return not self.problems


def _printable(name: str) -> str:
    """A file name that can be printed, whatever bytes the filesystem gave."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _check_listed_file(
    folder: Path, entry: PackageFile, progress: Callable[[int], None] | None
) -> str | None:
    try:
        fd = _open_inside(folder, entry.path)
    except _UnsafeFileError as exc:
        if progress is not None:
            progress(entry.size)
        return str(exc)
    try:
        size = os.fstat(fd).st_size
    except OSError as exc:
        os.close(fd)
        return f"cannot read: {exc.strerror or exc}"
    if size != entry.size:
        os.close(fd)
        if progress is not None:
            progress(entry.size)
        return f"size is {size} bytes, the manifest says {entry.size}"
    try:
        sha256, read = _hash_file(fd, progress)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if read != entry.size:
        return f"size changed while reading: {read} bytes, the manifest says {entry.size}"
    if sha256 != entry.sha256:
        return f"SHA-256 is {sha256}, the manifest says {entry.sha256}"
    return None


def _iter_tree(folder: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry below ``folder`` (not following symbolic links), with its relative path."""
    stack: list[tuple[Path, str]] = [(folder, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as entries:
                found = sorted(entries, key=lambda e: e.name)
        except OSError:
            continue
        for entry in found:
            relative = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), f"{relative}/"))
            else:
                yield relative, entry


def _check_tree(folder: Path, listed: set[str], replicas: set[str]) -> list[VerifyProblem]:
    """Problems of the files the manifest does not list: every one is a problem, except SQLite's
    files beside a replica and attachment blobs named after their bytes."""
    sidecars = {f"{path}{suffix}" for path in replicas for suffix in _SQLITE_SIDECARS}
    problems: list[VerifyProblem] = []
    for relative, entry in _iter_tree(folder):
        if relative in listed or relative == MANIFEST_NAME:
            continue
        shown = _printable(relative)
        if entry.is_symlink():
            problems.append(VerifyProblem(shown, _symlink_reason(folder, relative)))
        elif not entry.is_file(follow_symlinks=False):
            problems.append(VerifyProblem(shown, "not a regular file, and not listed"))
        elif relative in sidecars:
            continue
        elif _ATTACHMENT.fullmatch(relative):
            reason = _check_new_blob(folder, relative)
            if reason is not None:
                problems.append(VerifyProblem(shown, reason))
        else:
            problems.append(VerifyProblem(shown, f"not listed in {MANIFEST_NAME}"))
    return problems


def _check_new_blob(folder: Path, relative: str) -> str | None:
    """The problem of an unlisted attachment blob, added on the device: its bytes must hash to
    its name, and its folders be the first four digits of that."""
    match = _ATTACHMENT.fullmatch(relative)
    if match is None or match.group(1) + match.group(2) != match.group(3)[:4]:
        return f"not listed in {MANIFEST_NAME}"
    try:
        sha256, _ = _hash_file(_open_inside(folder, relative), None)
    except _UnsafeFileError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if sha256 != match.group(3):
        return f"not listed in {MANIFEST_NAME}, and its bytes hash to {sha256}, not to its name"
    return None


def _check_replica_file(
    folder: Path, entry: PackageFile, progress: Callable[[int], None] | None
) -> str | None:
    """The problem of a replica's file: it must be there, a regular file reached without
    symbolic links; its size and hash change with every edit and are not checked."""
    try:
        os.close(_open_inside(folder, entry.path))
    except _UnsafeFileError as exc:
        return str(exc)
    finally:
        if progress is not None:
            progress(entry.size)
    return None


def _check_geopackage(folder: Path, relative: str, layers: set[str]) -> list[str]:
    """Problems of a GeoPackage: integrity, application id, and the layers the manifest names.

    Opened read-only, and immutable unless a ``-wal`` file is beside it: nothing is written
    beside the file, and the bytes checked are exactly the bytes hashed. An edited replica's
    ``-wal`` holds committed edits that an immutable reader would ignore (SQLite reads no WAL
    then), so with one the file is opened read-only only, and SQLite reads the WAL.
    """
    path = folder / relative
    mode = "ro" if os.path.lexists(f"{path}-wal") else "ro&immutable=1"
    uri = path.resolve().as_uri() + f"?mode={mode}"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        return [f"cannot open as SQLite: {exc}"]
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if application_id != GEOPACKAGE_APPLICATION_ID:
            return [f"not a GeoPackage: application_id is {application_id:#010x}"]
        rows = conn.execute("PRAGMA integrity_check(5)").fetchall()
        if [row[0] for row in rows] != ["ok"]:
            return [_one_line("SQLite integrity check failed: " + "; ".join(r[0] for r in rows))]
        names = {row[0] for row in conn.execute("SELECT table_name FROM gpkg_contents")}
    except sqlite3.Error as exc:
        return [_one_line(f"not a valid GeoPackage: {exc}")]
    finally:
        conn.close()
    return [
        f"GeoPackage has no layer {name!r} in gpkg_contents"
        for name in sorted(layers)
        if name not in names
    ]


def _check_tile_archive(folder: Path, relative: str) -> list[str]:
    """Problems of a tile archive: it must open, give its metadata and pass its full check."""
    from offmaps.containers import open_reader, parse_location  # noqa: PLC0415

    path = folder / relative
    try:
        with open_reader(parse_location(path)) as reader:
            _ = reader.metadata
            problems = reader.verify()
    except (OffmapsError, OSError, sqlite3.Error, ValueError) as exc:
        problems = [f"cannot read the tile archive: {exc}"]
    return [
        _one_line(problem.replace(f"{path}: ", "").replace(str(path), relative))
        for problem in problems
    ]


def verify_package(folder: Path, *, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check a package whole: every listed file present, of its size and SHA-256; nothing
    unlisted; no symbolic link; GeoPackages and tile archives sound.

    GeoPackages (``.gpkg`` files, and the files of feature layers, tables and replicas) must pass
    SQLite's integrity check, have the GeoPackage application id and list in ``gpkg_contents``
    the layers the manifest names in them. Tile archives (``.mbtiles``/``.pmtiles`` files, and the
    files of tile layers) must open and pass their container's full check. Structure is checked
    only on files whose bytes match the manifest, and on every replica file that is there.

    Replica files change as they are edited on the device, so their size and SHA-256 are not
    checked, and SQLite's ``-wal``, ``-shm`` and ``-journal`` files beside them are not strays.
    Unlisted files under ``attachments/`` are accepted when they are blobs named
    ``attachments/ab/cd/<sha256>`` whose bytes hash to that name (attachments added offline).

    Args:
        folder: the package folder.
        progress: called with the number of bytes just hashed (missing or mis-sized files, and
            replica files, count as their listed size), for a progress bar over the manifest's
            total size.

    Raises:
        PackageError: only when the manifest itself cannot be read; every other problem is
            reported.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems: list[VerifyProblem] = []
    intact: set[str] = set()
    replicas = manifest.replica_files()
    for entry in manifest.files:
        if entry.path in replicas:
            reason = _check_replica_file(folder, entry, progress)
        else:
            reason = _check_listed_file(folder, entry, progress)
        if reason is None:
            intact.add(entry.path)
        else:
            problems.append(VerifyProblem(entry.path, reason))
    problems.extend(_check_tree(folder, {entry.path for entry in manifest.files}, replicas))

    geopackages: dict[str, set[str]] = {
        entry.path: set() for entry in manifest.files if entry.path.lower().endswith(".gpkg")
    }
    tile_archives = {
        entry.path for entry in manifest.files if entry.path.lower().endswith(_TILE_SUFFIXES)
    }
    for layer in [*manifest.layers, *manifest.tables]:
        if layer.file is None:
            continue
        if layer.kind in _FEATURE_KINDS:
            geopackages.setdefault(layer.file, set()).add(layer.layer or "")
        elif layer.kind in _TILE_KINDS:
            tile_archives.add(layer.file)
    for replica in manifest.replicas:
        geopackages.setdefault(replica.file, set())
    for path, layers in geopackages.items():
        if path in intact:
            problems.extend(
                VerifyProblem(path, reason) for reason in _check_geopackage(folder, path, layers)
            )
    for path in sorted(tile_archives):
        if path in intact:
            problems.extend(
                VerifyProblem(path, reason) for reason in _check_tile_archive(folder, path)
            )
    return VerifyReport(
        problems=tuple(problems),
        files=len(manifest.files),
        bytes=sum(entry.size for entry in manifest.files),
    )


# --- opening a package ----------------------------------------------------------------------


@dataclass
class OfflineLayer:
    """A layer or table of an opened package.

    Attributes:
        id: the web map layer or table id.
        title: the layer's title.
        kind: what the layer is.
        path: the absolute path of its GeoPackage or tile archive; ``None`` when online only.
        layer: the layer or table name inside the GeoPackage.
        url: the URL of an online-only layer.
    """

    id: str
    title: str
    kind: LayerKind
    path: Path | None
    layer: str | None = None
    url: str | None = None

    def open_features(self) -> GeoPackageStore:
        """The feature store holding this layer or table; close it when done.

        Raises:
            PackageError: the layer is not a feature layer or table, or its GeoPackage cannot be
                opened or lacks the layer.
        """
        if self.kind not in _FEATURE_KINDS or self.path is None or self.layer is None:
            raise PackageError(f"layer {self.id!r} is a {self.kind} layer, not features")
        try:
            store = GeoPackageStore.open(self.path)
        except FeaturesError as exc:
            raise PackageError(f"layer {self.id!r}: {exc}") from None
        try:
            store.get_layer(self.layer)
        except FeaturesError as exc:
            store.close()
            raise PackageError(f"layer {self.id!r}: {self.path}: {exc}") from None
        return store

    def open_tiles(self) -> TileReader:
        """A reader of this layer's tile archive; close it when done.

        Raises:
            PackageError: the layer is not a tile layer, or its archive cannot be opened.
        """
        if self.kind not in _TILE_KINDS or self.path is None:
            raise PackageError(f"layer {self.id!r} is a {self.kind} layer, not tiles")
        from offmaps.containers import open_reader, parse_location  # noqa: PLC0415

        try:
            return open_reader(parse_location(self.path))
        except ContainerError as exc:
            raise PackageError(f"layer {self.id!r}: {exc}") from None


@dataclass
class OfflineMap:
    """The map of an opened package, its layers resolved to files.

    Attributes:
        title: the map's title.
        layers: operational layers, then basemap layers.
        tables: non-spatial tables.
        replicas: the feature service replicas, for sync.
    """

    title: str
    layers: list[OfflineLayer] = field(default_factory=list)
    tables: list[OfflineLayer] = field(default_factory=list)
    replicas: list[PackageReplica] = field(default_factory=list)
    spatial_reference: str = "WebMercatorQuad"
    """The tiling scheme the map is drawn in: a reference basemap's when it has one, since the
    device's archive cannot be reprojected."""


class MobileMapPackage:
    """An offline map package on disk, opened with no network (ArcGIS ``MobileMapPackage``).

    Call :meth:`load` before using the other members. Loading reads and validates the manifest
    and checks that every listed file is there, a regular file of its listed size (replica files,
    which change as they are edited, of any size); it does not hash the files (that is
    :func:`verify_package`'s job).

    Args:
        path: the package folder.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._manifest: PackageManifest | None = None
        self._reference: tuple[OfflineLayer, str] | None = None

    def __repr__(self) -> str:
        return f"MobileMapPackage({str(self.path)!r})"

    def load(self) -> Self:
        """Read the manifest and check the files; loading twice is fine.

        Raises:
            PackageError: the manifest cannot be read, or a listed file is missing, not a regular
                file, or not of its listed size (replica files excepted).
        """
        if self._manifest is not None:
            return self
        manifest = read_manifest(self.path)
        replicas = manifest.replica_files()
        for entry in manifest.files:
            try:
                fd = _open_inside(self.path, entry.path)
            except _UnsafeFileError as exc:
                raise PackageError(f"{self.path}: {entry.path}: {exc}") from None
            try:
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size != entry.size and entry.path not in replicas:
                raise PackageError(
                    f"{self.path}: {entry.path}: size is {size} bytes, the manifest says "
                    f"{entry.size}"
                )
        if manifest.reference_basemap is not None:
            self._reference = self._open_reference(manifest.reference_basemap)
        self._manifest = manifest
        return self

    def _open_reference(self, reference: ReferenceBasemap) -> tuple[OfflineLayer, str]:
        from offmaps.containers import open_reader  # noqa: PLC0415

        path = (self.path / reference.directory / reference.filename).absolute()
        try:
            with open_reader(str(path)) as reader:
                metadata = reader.metadata
        except OffmapsError as exc:
            raise PackageError(
                f"{self.path}: the reference basemap {path} cannot be read: {exc}"
            ) from None
        kind: LayerKind = "raster_tile" if metadata.tile_format.is_raster else "vector_tile"
        layer = OfflineLayer("reference-basemap", metadata.name, kind, path)
        return layer, str(metadata.tms.id)

    @property
    def manifest(self) -> PackageManifest:
        """The package's manifest; raises ``PackageError`` before :meth:`load`."""
        if self._manifest is None:
            raise PackageError(f"{self.path}: the package is not loaded; call load() first")
        return self._manifest

    @property
    def item(self) -> PackageItem:
        """The item the package was made from."""
        return self.manifest.item

    @property
    def maps(self) -> list[OfflineMap]:
        """The package's maps (one for now)."""
        manifest = self.manifest
        root = self.path.absolute()

        def resolve(layer: PackageLayer) -> OfflineLayer:
            path = root / layer.file if layer.file is not None else None
            return OfflineLayer(layer.id, layer.title, layer.kind, path, layer.layer, layer.url)

        layers = [resolve(layer) for layer in manifest.layers]
        spatial_reference = "WebMercatorQuad"
        if self._reference is not None:
            layers.insert(0, self._reference[0])
            spatial_reference = self._reference[1]
        return [
            OfflineMap(
                title=manifest.item.title,
                layers=layers,
                tables=[resolve(table) for table in manifest.tables],
                replicas=list(manifest.replicas),
                spatial_reference=spatial_reference,
            )
        ]

    def close(self) -> None:
        """Forget the loaded manifest. Stores and readers opened from layers are closed by their
        owner. Closing twice is fine."""
        self._manifest = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
