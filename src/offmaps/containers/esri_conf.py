"""Reading the tiling-scheme files of Esri caches: ``conf.xml`` and ``conf.cdi``.

A cache made by ArcGIS holds no ``tilematrixset.json`` nor ``metadata.json``: its ``conf.xml``
(a ``CacheInfo`` document) is the only description of its grid and tile format, and ``conf.cdi``
(an ``EnvelopeN``) of its extent. :func:`parse_cache_info` and :func:`parse_cache_extent` parse
them into a tile matrix set, a tile format and an extent; :func:`foreign_scheme` reads them from a
cache folder and checks them against it, for the Esri readers (which prefer offmaps' own
``tilematrixset.json`` and ``metadata.json`` when present, see
:func:`~offmaps.containers._folder.load_metadata`). :mod:`offmaps.containers.esri_scheme` writes
them, and a file it writes reads back as the same grid and format.

What is read (element paths below ``CacheInfo``), as ArcGIS writes them (Esri's sample cache in
the Esri/raster-tiles-compactcache repository) and GDAL's ESRIC driver reads them:

``TileCacheInfo/SpatialReference``
    ``LatestWKID``, else ``WKID`` (codes above 32767 are Esri's: ``ESRI:102100``), else ``WKT``.
``TileCacheInfo/TileOrigin/X|Y``
    the top left corner of the grid, easting then northing whatever the CRS's axis order.
``TileCacheInfo/TileEnd/X|Y`` (optional)
    the bottom right corner; without it the grid ends at minus the origin, as GDAL assumes.
    The matrices are widened to hold ``conf.cdi``'s extent when it reaches further.
``TileCacheInfo/TileCols|TileRows``, ``DPI``
    the tile size in pixels (1 to 8192, as GDAL allows), the DPI (positive; 96 when absent).
``TileCacheInfo/LODInfos/LODInfo/LevelID|Resolution``
    one tile matrix per level: ``LevelID`` consecutive, ``Resolution`` (the cell size in CRS units)
    positive and finer with each level. ``Scale`` is not read: the resolution says it exactly.
``TileImageInfo/CacheTileFormat``
    ``PNG``, ``PNG8``, ``PNG24``, ``PNG32`` (PNG tiles), ``JPEG``, or ``MIXED`` (JPEG tiles, PNG
    where transparent), kept as :attr:`EsriCacheInfo.cache_tile_format`; :attr:`tile_format` is
    None for ``MIXED``, which the readers read as a mixed tile set
    (:attr:`~offmaps.containers.base.TilesetMetadata.mixed`: PNG announced, each tile's format
    told by its bytes). Anything else (``LERC``...) is refused.
``CacheStorageInfo/StorageFormat|PacketSize``
    :class:`~offmaps.containers.esri_scheme.EsriStorageFormat`; the packet size (tiles per bundle
    side) is 128 when absent.

The files are hostile input. They are read whole only up to :data:`MAX_CONF_BYTES`, parsed by
expat with every document type declaration refused (so no entity, internal or external, is ever
declared, let alone expanded: no billion laughs, no XXE), and every number is checked (finite,
in range) before a grid is built from it. Any problem raises
:class:`~offmaps.errors.ContainerCorruptError` naming the file and the element.
"""

from __future__ import annotations

import math
import re
import struct
import xml.parsers.expat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from xml.etree.ElementTree import Element, TreeBuilder

import pyproj
from morecantile import TileMatrixSet
from morecantile.models import CRS_to_uri, TileMatrix, crs_axis_inverted

from offmaps.containers._folder import ConfinedFolder, ForeignScheme
from offmaps.containers.base import web_mercator_quad
from offmaps.containers.esri_scheme import CONF_CDI, CONF_XML, EsriStorageFormat
from offmaps.errors import ContainerCorruptError
from offmaps.tiling.tms import find_incompatibility, tms_crs
from offmaps.types import BBox, Tile, TileFormat

__all__ = [
    "BUNDLE_TILES",
    "MAX_CONF_BYTES",
    "MAX_MATRIX_SIZE",
    "MAX_TILE_PIXELS",
    "MIXED",
    "EsriCacheInfo",
    "check_tile_size",
    "extent_to_wgs84",
    "foreign_scheme",
    "image_size",
    "load_cache_info",
    "parse_cache_extent",
    "parse_cache_info",
]

MAX_CONF_BYTES = 1 * 2**20
"""Larger ``conf.xml`` or ``conf.cdi`` files are refused unread (ArcGIS's are a few KiB)."""
MAX_MATRIX_SIZE = 2**32
"""The most tiles a level may have across or down: Esri exploded names hold 8 hex digits."""
MIXED: Final = "MIXED"
"""``CacheTileFormat`` of caches holding JPEG tiles, and PNG tiles where transparent."""
MAX_TILE_PIXELS = 8192
"""The widest tile accepted, in pixels (as GDAL's ESRIC driver)."""
BUNDLE_TILES = 128
"""The ``PacketSize`` of Compact Cache V2 bundles."""

_TILE_FORMATS = {
    "PNG": TileFormat.PNG,
    "PNG8": TileFormat.PNG,
    "PNG24": TileFormat.PNG,
    "PNG32": TileFormat.PNG,
    "JPEG": TileFormat.JPEG,
    "JPG": TileFormat.JPEG,
}
_STORAGE = {
    "esriMapCacheStorageModeCompactV2": EsriStorageFormat.COMPACT_V2,
    "esriMapCacheStorageModeCompact": EsriStorageFormat.COMPACT,
    "esriMapCacheStorageModeExploded": EsriStorageFormat.EXPLODED,
}
_MAX_DEPTH = 16
_WGS84 = pyproj.CRS.from_epsg(4326)
_INTEGER = re.compile(r"[+]?[0-9]{1,9}")
# a matrix size a hair past a whole number of tiles is that number: the corners are decimals
_SLACK = 1e-6


@dataclass(frozen=True)
class EsriCacheInfo:
    """What ``conf.xml`` says of a cache.

    Attributes:
        tms: the grid: one tile matrix per ``LODInfo``, numbered by ``LevelID``
            (WebMercatorQuad itself when every listed level lines up with its level of the same
            number, as in ArcGIS Online's scheme).
        levels: the listed ``LevelID`` values, first and last.
        cache_tile_format: ``CacheTileFormat`` as written, upper-cased (``PNG32``, ``MIXED``...).
        tile_format: the tiles' format; None for a ``MIXED`` cache.
        storage: ``StorageFormat``.
        packet_size: ``PacketSize``: tiles per bundle side.
        dpi: ``DPI``.
    """

    tms: TileMatrixSet
    levels: tuple[int, int]
    cache_tile_format: str
    tile_format: TileFormat | None
    storage: EsriStorageFormat
    packet_size: int
    dpi: float


class _SchemeError(Exception):
    """A problem with one element, raised while parsing and turned into the container error."""


def parse_cache_info(data: bytes, where: Path, *, extent: BBox | None = None) -> EsriCacheInfo:
    """Parse the bytes of a ``conf.xml`` file found at ``where``.

    Args:
        data: the file's bytes.
        where: the file, for messages.
        extent: the cache's extent in the grid's coordinates (``conf.cdi``'s), which the
            matrices are widened to hold.

    Raises:
        ContainerCorruptError: naming the file and the element at fault.
    """
    try:
        root = _parse_xml(data)
        if root.tag != "CacheInfo":
            raise _SchemeError(f"the document is a {root.tag}, not a CacheInfo")
        return _cache_info(root, extent)
    except _SchemeError as exc:
        raise ContainerCorruptError(f"{where}: {exc}", path=where) from None


def parse_cache_extent(data: bytes, where: Path) -> BBox:
    """Parse the bytes of a ``conf.cdi`` file found at ``where``: its envelope, in the
    coordinates of the cache's grid (``XMin``, ``YMin``, ``XMax``, ``YMax``).

    Raises:
        ContainerCorruptError: naming the file and the element at fault.
    """
    try:
        root = _parse_xml(data)
        if root.tag != "EnvelopeN":
            raise _SchemeError(f"the document is a {root.tag}, not an EnvelopeN")
        xmin, ymin = _number(root, "XMin"), _number(root, "YMin")
        xmax, ymax = _number(root, "XMax"), _number(root, "YMax")
        if not (xmin < xmax and ymin < ymax):
            raise _SchemeError(f"XMin/YMin {xmin}, {ymin} are not below XMax/YMax {xmax}, {ymax}")
    except _SchemeError as exc:
        raise ContainerCorruptError(f"{where}: {exc}", path=where) from None
    return BBox(xmin, ymin, xmax, ymax)


def extent_to_wgs84(tms: TileMatrixSet, extent: BBox) -> BBox | None:
    """``conf.cdi``'s extent (in the grid's CRS) as WGS84 bounds (west > east across the
    antimeridian), or None when it does not project (outside the CRS's area)."""
    transformer = pyproj.Transformer.from_crs(tms_crs(tms), _WGS84, always_xy=True)
    try:
        west, south, east, north = transformer.transform_bounds(*extent, densify_pts=21)
    except pyproj.exceptions.ProjError:
        return None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        return None
    west, south = max(west, -180.0), max(south, -90.0)
    east, north = min(east, 180.0), min(north, 90.0)
    if not south < north or west == east:
        return None
    return BBox(west, south, east, north)  # west > east: across the antimeridian


# --- XML ------------------------------------------------------------------------------------


def _parse_xml(data: bytes) -> Element:
    """The document's root element, parsed without ever declaring an entity."""
    if len(data) > MAX_CONF_BYTES:
        raise _SchemeError(f"{len(data)} bytes, more than the {MAX_CONF_BYTES} allowed")
    builder = TreeBuilder()
    parser = xml.parsers.expat.ParserCreate()
    depth = 0

    def refuse_doctype(*_: object) -> None:
        raise _SchemeError("a document type declaration (DTD) is refused: conf files have none")

    def refuse_entity(*_: object) -> None:
        raise _SchemeError("an entity declaration is refused")

    def refuse_external(*_: object) -> int:
        raise _SchemeError("an external entity is refused")

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > _MAX_DEPTH:
            raise _SchemeError(f"elements nested deeper than {_MAX_DEPTH}")
        builder.start(name, attributes)

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(name)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_external
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise _SchemeError(f"not well-formed XML: {exc}") from None
    except RecursionError:
        raise _SchemeError("not well-formed XML: nested too deeply") from None
    return builder.close()


def _text(parent: Element, path: str, *, required: bool = True) -> str | None:
    element = parent.find(path)
    if element is None or not (element.text or "").strip():
        if required:
            raise _SchemeError(f"{_name(parent, path)} is missing")
        return None
    return (element.text or "").strip()


def _name(parent: Element, path: str) -> str:
    return f"{parent.tag}/{path}"


def _number(parent: Element, path: str, *, required: bool = True) -> float:
    text = _text(parent, path, required=required)
    if text is None:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise _SchemeError(f"{_name(parent, path)} {text[:40]!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > 1e15:
        raise _SchemeError(
            f"{_name(parent, path)} {text[:40]!r} is not a finite number (at most 1e15 in size)"
        )
    return value


def _integer(parent: Element, path: str, default: int, low: int, high: int) -> int:
    text = _text(parent, path, required=False)
    if text is None:
        return default
    if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
        raise _SchemeError(
            f"{_name(parent, path)} {text[:40]!r} is not a whole number {low}-{high}"
        )
    return int(text)


# --- CacheInfo ------------------------------------------------------------------------------


def _cache_info(root: Element, extent: BBox | None) -> EsriCacheInfo:
    info = root.find("TileCacheInfo")
    if info is None:
        raise _SchemeError("CacheInfo/TileCacheInfo is missing")
    crs = _spatial_reference(info)
    cols = _integer(info, "TileCols", 256, 1, MAX_TILE_PIXELS)
    rows = _integer(info, "TileRows", 256, 1, MAX_TILE_PIXELS)
    dpi = _number(info, "DPI", required=False)
    if math.isnan(dpi):
        dpi = 96.0
    elif not 0 < dpi <= 10_000:
        raise _SchemeError(f"TileCacheInfo/DPI {dpi} is not a DPI")
    left, top = _number(info, "TileOrigin/X"), _number(info, "TileOrigin/Y")
    if info.find("TileEnd") is not None:
        right, bottom = _number(info, "TileEnd/X"), _number(info, "TileEnd/Y")
        ends = "TileEnd"
    else:
        right, bottom = -left, -top  # as GDAL: a grid symmetric about the CRS's origin
        ends = "minus TileOrigin (there is no TileEnd)"
    if extent is not None:
        right, bottom = max(right, extent.east), min(bottom, extent.south)
    if not (right > left and bottom < top):
        raise _SchemeError(
            f"TileCacheInfo/TileOrigin ({left}, {top}) is not the top left corner of the grid: "
            f"it ends at ({right}, {bottom}), {ends}"
        )
    levels = _lods(info)
    matrices = _matrices(crs, levels, (left, top), (right, bottom), (cols, rows))
    tms = _tile_matrix_set(crs, matrices)
    image = root.find("TileImageInfo")
    if image is None:
        raise _SchemeError("CacheInfo/TileImageInfo is missing")
    cache_format = (_text(image, "CacheTileFormat") or "").upper()
    if cache_format == MIXED:
        tile_format = None
    elif cache_format in _TILE_FORMATS:
        tile_format = _TILE_FORMATS[cache_format]
    else:
        raise _SchemeError(
            f"TileImageInfo/CacheTileFormat {cache_format[:40]!r} is not a tile format offmaps "
            "reads (PNG, PNG8, PNG24, PNG32, JPEG, MIXED)"
        )
    storage_info = root.find("CacheStorageInfo")
    if storage_info is None:
        raise _SchemeError("CacheInfo/CacheStorageInfo is missing")
    storage_name = _text(storage_info, "StorageFormat") or ""
    storage = _STORAGE.get(storage_name)
    if storage is None:
        raise _SchemeError(
            f"CacheStorageInfo/StorageFormat {storage_name[:60]!r} is not one of "
            f"{', '.join(_STORAGE)}"
        )
    packet = _integer(storage_info, "PacketSize", 128, 1, 2**16)
    return EsriCacheInfo(
        tms=tms,
        levels=(levels[0][0], levels[-1][0]),
        cache_tile_format=cache_format,
        tile_format=tile_format,
        storage=storage,
        packet_size=packet,
        dpi=dpi,
    )


def _spatial_reference(info: Element) -> pyproj.CRS:
    reference = info.find("SpatialReference")
    if reference is None:
        raise _SchemeError("TileCacheInfo/SpatialReference is missing")
    tried: list[str] = []
    for name in ("LatestWKID", "WKID"):
        code = _integer(reference, name, 0, 0, 10**7)
        if code <= 0:
            continue
        authority = "ESRI" if code > 32767 else "EPSG"
        try:
            return pyproj.CRS.from_user_input(f"{authority}:{code}")
        except pyproj.exceptions.CRSError:
            tried.append(f"{name} {code}")
    wkt = _text(reference, "WKT", required=False)
    if wkt is not None:
        if len(wkt) > 64 * 1024:
            raise _SchemeError("SpatialReference/WKT is longer than any CRS's")
        try:
            return pyproj.CRS.from_wkt(wkt)
        except pyproj.exceptions.CRSError:
            tried.append("WKT")
    if not tried:
        raise _SchemeError("SpatialReference has neither WKID, LatestWKID nor WKT")
    raise _SchemeError(f"SpatialReference: PROJ knows no CRS of its {', '.join(tried)}")


def _lods(info: Element) -> list[tuple[int, float]]:
    """``(LevelID, Resolution)`` of every LODInfo, checked."""
    lods = info.findall("LODInfos/LODInfo")
    if not lods:
        raise _SchemeError("TileCacheInfo/LODInfos has no LODInfo")
    levels = []
    for lod in lods:
        level = _integer(lod, "LevelID", -1, 0, 99)
        if level < 0:
            raise _SchemeError("an LODInfo has no LevelID")
        resolution = _number(lod, "Resolution")
        if not resolution > 0:
            raise _SchemeError(f"LODInfo {level}: Resolution {resolution} is not positive")
        levels.append((level, resolution))
    levels.sort()
    ids = [level for level, _ in levels]
    if ids != list(range(ids[0], ids[0] + len(ids))):
        listed = ", ".join(map(str, ids))
        raise _SchemeError(f"LODInfos: the LevelIDs are not consecutive ({listed})")
    for (level, resolution), (_, coarser) in zip(levels[1:], levels, strict=False):
        if not resolution < coarser:
            raise _SchemeError(
                f"LODInfo {level}: Resolution {resolution} is not finer than level "
                f"{level - 1}'s {coarser}"
            )
    return levels


def _matrices(
    crs: pyproj.CRS,
    levels: list[tuple[int, float]],
    origin: tuple[float, float],
    end: tuple[float, float],
    tile_size: tuple[int, int],
) -> list[TileMatrix]:
    (left, top), (right, bottom), (cols, rows) = origin, end, tile_size
    inverted = crs_axis_inverted(crs)
    point = (top, left) if inverted else (left, top)
    per_unit = _meters_per_unit(crs)
    # the grid ends on whole tiles of the coarsest level: levels whose resolutions halve (or
    # divide by any whole number) then cover one extent, as GeoPackage needs
    coarsest = levels[0][1]
    if math.isfinite(coarsest * cols) and coarsest * cols > 0:
        across = math.ceil((right - left) / (cols * coarsest) - _SLACK)
        down = math.ceil((top - bottom) / (rows * coarsest) - _SLACK)
        if 1 <= across <= MAX_MATRIX_SIZE and 1 <= down <= MAX_MATRIX_SIZE:
            right, bottom = left + across * cols * coarsest, top - down * rows * coarsest
    matrices = []
    for level, resolution in levels:
        width = math.ceil((right - left) / (cols * resolution) - _SLACK)
        height = math.ceil((top - bottom) / (rows * resolution) - _SLACK)
        if not (1 <= width <= MAX_MATRIX_SIZE and 1 <= height <= MAX_MATRIX_SIZE):
            raise _SchemeError(
                f"LODInfo {level}: Resolution {resolution} over the grid from TileOrigin "
                f"({left}, {top}) to ({right}, {bottom}) makes {width} x {height} tiles; "
                f"a level holds 1 to {MAX_MATRIX_SIZE} across and down"
            )
        matrices.append(
            TileMatrix(
                id=str(level),
                scaleDenominator=resolution * per_unit / 0.00028,
                cellSize=resolution,
                cornerOfOrigin="topLeft",
                pointOfOrigin=point,
                tileWidth=cols,
                tileHeight=rows,
                matrixWidth=width,
                matrixHeight=height,
            )
        )
    return matrices


def _meters_per_unit(crs: pyproj.CRS) -> float:
    """Metres per CRS unit, for the matrices' scale denominators (morecantile knows only the
    units' EPSG names; Esri's WKT says ``Degree``)."""
    axis = crs.axis_info[0] if crs.axis_info else None
    factor = axis.unit_conversion_factor if axis is not None else 1.0
    if crs.is_geographic:  # radians per unit, over the equator
        return float(factor * crs.ellipsoid.semi_major_metre) if crs.ellipsoid else 1.0
    return float(factor) if factor > 0 else 1.0


def _tile_matrix_set(crs: pyproj.CRS, matrices: list[TileMatrix]) -> TileMatrixSet:
    if crs.to_authority(min_confidence=20):
        crs_data: object = CRS_to_uri(crs)
        try:
            pyproj.CRS.from_user_input(crs_data)
        except pyproj.exceptions.CRSError:
            crs_data = {"wkt": crs.to_json_dict()}
    else:
        crs_data = {"wkt": crs.to_json_dict()}
    try:
        tms = TileMatrixSet.model_validate(
            {
                "id": "EsriCacheInfo",
                "title": "Tiling scheme of an Esri cache's conf.xml",
                "crs": crs_data,
                "tileMatrices": [m.model_dump(by_alias=True) for m in matrices],
            }
        )
    except ValueError as exc:
        raise _SchemeError(f"TileCacheInfo does not make a tile matrix set: {exc}") from None
    quad = web_mercator_quad()
    if matrices[-1].id in {m.id for m in quad.tileMatrices} and (
        find_incompatibility(tms, quad) is None
    ):
        return quad  # ArcGIS's Web Mercator scheme: the grid every other container uses
    return tms


# --- a cache folder's scheme ------------------------------------------------------------------


def load_cache_info(folder: ConfinedFolder) -> EsriCacheInfo | None:
    """``conf.xml`` of a cache folder (its grid widened to ``conf.cdi``'s extent), or None when
    the folder has none.

    Raises:
        ContainerCorruptError: when either file is too large or invalid.
    """
    loaded = _load(folder)
    return None if loaded is None else loaded[0]


def _load(folder: ConfinedFolder) -> tuple[EsriCacheInfo, BBox | None] | None:
    """``conf.xml`` and ``conf.cdi``'s extent, or None without ``conf.xml``."""
    raw = folder.read_file([CONF_XML], limit=MAX_CONF_BYTES)
    if raw is None:
        return None
    extent = _load_extent(folder)
    return parse_cache_info(raw, folder.path / CONF_XML, extent=extent), extent


def _load_extent(folder: ConfinedFolder) -> BBox | None:
    raw = folder.read_file([CONF_CDI], limit=MAX_CONF_BYTES)
    return None if raw is None else parse_cache_extent(raw, folder.path / CONF_CDI)


def foreign_scheme(
    folder: ConfinedFolder,
    storage: tuple[EsriStorageFormat, ...],
    levels: Callable[[], list[int]],
    *,
    checked: bool = True,
) -> ForeignScheme | None:
    """What a cache folder's ``conf.xml`` and ``conf.cdi`` say, checked against the folder, for
    :func:`~offmaps.containers._folder.load_metadata`; None without ``conf.xml``.

    Args:
        folder: the cache folder.
        storage: the storage formats the reader reads.
        levels: lists the levels of the folder's level folders (``L00``...).
        checked: check the scheme against the reader and the folder (False when it is only
            compared with offmaps' own files, which describe the tiles).

    Raises:
        ContainerCorruptError: when a file is invalid, names a storage format or packet size the
            reader does not read, or lists no level that a level folder holds.
    """
    loaded = _load(folder)
    if loaded is None:
        return None
    info, extent = loaded
    where = folder.path / CONF_XML
    if not checked:  # only compared with offmaps' files: its bounds and levels are not needed
        return _scheme(info, None, where, [])
    if info.storage not in storage:
        raise ContainerCorruptError(
            f"{where}: CacheStorageInfo/StorageFormat is {info.storage.value}; this reader "
            f"reads {', '.join(s.value for s in storage)}" + _storage_hint(info.storage),
            path=where,
        )
    if info.storage is not EsriStorageFormat.EXPLODED and info.packet_size != BUNDLE_TILES:
        raise ContainerCorruptError(
            f"{where}: CacheStorageInfo/PacketSize is {info.packet_size}; Compact Cache V2 "
            f"bundles hold {BUNDLE_TILES} x {BUNDLE_TILES} tiles",
            path=where,
        )
    first, last = info.levels
    held = levels()
    stray = [z for z in held if not first <= z <= last]
    if stray:
        raise ContainerCorruptError(
            f"{where}: TileCacheInfo/LODInfos list levels {first}-{last}, but the cache holds "
            f"level folders {', '.join(f'L{z:02d}' for z in stray[:5])}"
            f"{'...' if len(stray) > 5 else ''}",
            path=where,
        )
    return _scheme(info, extent, where, held)


def _scheme(
    info: EsriCacheInfo, extent: BBox | None, where: Path, held: list[int]
) -> ForeignScheme:
    """The scheme for the folder readers; its bounds from ``conf.cdi``'s ``extent``. A ``MIXED``
    cache is a mixed tile set: PNG announced, each tile's format told by its bytes."""
    bounds = None if extent is None else extent_to_wgs84(info.tms, extent)
    first = info.levels[0]
    return ForeignScheme(
        tms=info.tms,
        tile_format=TileFormat.PNG if info.tile_format is None else info.tile_format,
        mixed=info.tile_format is None,
        bounds=bounds,
        minzoom=min(held) if held else None,
        maxzoom=max(held) if held else None,
        where=where,
        tile_size=(
            info.tms.matrix(first).tileWidth,
            info.tms.matrix(first).tileHeight,
        ),
    )


def _storage_hint(storage: EsriStorageFormat) -> str:
    if storage is EsriStorageFormat.EXPLODED:
        return ": open it as esri-exploded:DIR"
    if storage is EsriStorageFormat.COMPACT_V2:
        return ": open it as esri-compact:DIR"
    return " (Compact Cache V1 bundles, with .bundlx files, are not read)"


def check_tile_size(scheme: ForeignScheme, tile: Tile, data: bytes) -> None:
    """Refuse a cache whose tile ``tile`` is not as many pixels as ``conf.xml`` says its tiles
    are: every tile would be placed at the wrong size on the map. Bytes whose size cannot be
    told (not PNG nor JPEG, damaged) pass: they fail one by one when read.

    Raises:
        ContainerCorruptError: naming ``TileCols``/``TileRows``.
    """
    size = image_size(data)
    if size is None or size == scheme.tile_size:
        return
    cols, rows = scheme.tile_size
    raise ContainerCorruptError(
        f"{scheme.where}: TileCacheInfo/TileCols and TileRows say tiles are {cols}x{rows} "
        f"pixels, but tile {tile.z}/{tile.x}/{tile.y} is {size[0]}x{size[1]}",
        path=scheme.where,
        tile=(tile.x, tile.y, tile.z),
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless...), which carry the image size
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG or JPEG image from its headers, or None when not told."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        if length < 2:
            return None
        at += 2 + length
    return None
