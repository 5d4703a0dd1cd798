"""The tiling-scheme files of Esri caches: ``conf.xml`` and ``conf.cdi``.

ArcGIS describes a cache folder with two XML files beside its ``_alllayers`` folder:

``conf.xml``
    a ``CacheInfo`` document: the tiling scheme (``TileCacheInfo``: spatial reference as WKT and
    WKID, ``TileOrigin``, ``TileCols``/``TileRows``, ``DPI``, one ``LODInfo`` per level with its
    ``LevelID``, ``Scale`` and ``Resolution``), the tile image format (``TileImageInfo``) and the
    storage (``CacheStorageInfo``: ``esriMapCacheStorageModeCompactV2`` or
    ``esriMapCacheStorageModeExploded``, and ``PacketSize``).
``conf.cdi``
    an ``EnvelopeN``: the extent of the cache's tiles (``XMin``/``YMin``/``XMax``/``YMax``) in the
    tiling scheme's coordinates, with its ``SpatialReference``.

Both are derived from a :class:`~offmaps.containers.base.TilesetMetadata` (its tile matrix set,
tile format, highest level and bounds); a mixed tile set's ``CacheTileFormat`` is ``MIXED``. The
layout follows the documents ArcGIS writes (Esri's
sample in the Esri/raster-tiles-compactcache repository) and what GDAL's ESRIC driver reads from
``conf.xml``: ``TileCacheInfo/TileOrigin/X|Y``, ``TileCols``/``TileRows``, ``LODInfos/LODInfo/
Resolution``, ``SpatialReference/WKT``, ``TileImageInfo/CacheTileFormat`` and
``CacheStorageInfo/StorageFormat|PacketSize``.

Decisions:

* The ``LODInfo`` list runs from level 0 to the cache's highest level (the tile matrix set's when
  unknown). GDAL's ESRIC driver takes the finest listed level as its full resolution and numbers
  the ``L{zz}`` folders from the coarsest listed one, so the list must start at level 0 and should
  not run past the levels that hold tiles (WebMercatorQuad's level 24 would be a raster wider than
  GDAL's limit).
* ``Scale`` is the ArcGIS scale (96 DPI, see :mod:`offmaps.tiling.scale`), ``Resolution`` the tile
  matrix's cell size, in the CRS's units.
* A grid that is not symmetric about the CRS's origin gets a ``TileEnd`` (its lower right corner)
  after ``TileOrigin``: GDAL's ESRIC driver reads it and otherwise assumes the grid ends at minus
  the origin. ArcGIS's own files have no ``TileEnd`` (their grids are symmetric); whether ArcGIS
  accepts one is not known here, so it is written only where GDAL would be wrong without it.
* The WKT is Esri's WKT 1 dialect when PROJ can write it (OGC WKT 1 otherwise); ``WKID`` is the
  EPSG code, except Web Mercator, which ArcGIS records as ``102100`` with ``LatestWKID`` 3857.

Not every tile matrix set fits a ``CacheInfo``: :func:`find_esri_scheme_problem` says why one does
not (levels not starting at 0, a corner of origin other than the top left, levels with different
origins or tile sizes, variable matrix widths, a CRS without WKT, a tile format ArcGIS caches do not
hold: WebP and vector tiles). The writers then leave both files out.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from xml.sax.saxutils import escape

import morecantile
import pyproj
from morecantile import TileMatrixSet
from pyproj.enums import WktVersion

from offmaps.containers.base import TilesetMetadata
from offmaps.tiling.scale import scale_for_zoom
from offmaps.tiling.tms import tms_crs
from offmaps.types import BBox, TileFormat

__all__ = [
    "CONF_CDI",
    "CONF_XML",
    "DPI",
    "EsriStorageFormat",
    "conf_cdi",
    "conf_xml",
    "find_esri_scheme_problem",
    "write_esri_scheme",
]

CONF_XML = "conf.xml"
"""Name of the tiling-scheme file."""
CONF_CDI = "conf.cdi"
"""Name of the cache-extent file."""
DPI = 96
"""The DPI ArcGIS scales assume."""

_NAMESPACES = (
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
    'xmlns:typens="http://www.esri.com/schemas/ArcGIS/10.1"'
)
_CACHE_TILE_FORMATS = {TileFormat.PNG: "PNG", TileFormat.JPEG: "JPEG"}
_MIXED = "MIXED"  # a mixed tile set: PNG tiles where transparent, JPEG elsewhere
_WEB_MERCATOR_WKID = 102100
_WGS84 = pyproj.CRS.from_epsg(4326)
_JPEG_QUALITY = 75


class EsriStorageFormat(StrEnum):
    """``CacheStorageInfo/StorageFormat``: how the tiles are stored."""

    COMPACT_V2 = "esriMapCacheStorageModeCompactV2"
    COMPACT = "esriMapCacheStorageModeCompact"
    """Compact Cache V1 (``.bundle`` with ``.bundlx`` index files): read by neither offmaps nor
    GDAL, recognised to be refused by name."""
    EXPLODED = "esriMapCacheStorageModeExploded"


def find_esri_scheme_problem(metadata: TilesetMetadata) -> str | None:
    """Why ``metadata`` cannot be described by ``conf.xml``, or None when it can."""
    tms = metadata.tms
    if metadata.tile_format not in _CACHE_TILE_FORMATS:
        return f"ArcGIS caches hold PNG or JPEG tiles, not {metadata.tile_format.value}"
    if tms.minzoom != 0:
        return f"{tms.id}'s levels start at {tms.minzoom}; ArcGIS levels start at 0"
    first = tms.matrix(0)
    for matrix in tms.tileMatrices:
        if matrix.cornerOfOrigin != "topLeft":
            return f"{tms.id} level {matrix.id} counts rows from the bottom"
        if matrix.variableMatrixWidths:
            return f"{tms.id} level {matrix.id} has variable matrix widths"
        if matrix.pointOfOrigin != first.pointOfOrigin:
            return f"{tms.id}'s levels do not share one origin"
        if (matrix.tileWidth, matrix.tileHeight) != (first.tileWidth, first.tileHeight):
            return f"{tms.id}'s levels do not share one tile size"
    if _wkt(tms_crs(tms)) is None:
        return f"{tms.id}'s CRS has no WKT 1 form"
    return None


def conf_xml(metadata: TilesetMetadata, storage: EsriStorageFormat) -> str:
    """The ``conf.xml`` document of a cache of ``metadata`` stored as ``storage``.

    Raises:
        ValueError: when :func:`find_esri_scheme_problem` finds a problem.
    """
    _check(metadata)
    tms = metadata.tms
    first = tms.matrix(0)
    origin = tms.xy_bounds(morecantile.Tile(0, 0, 0))
    end = tms.xy_bounds(morecantile.Tile(first.matrixWidth - 1, first.matrixHeight - 1, 0))
    tile_end = (
        ""
        if math.isclose(end.right, -origin.left) and math.isclose(end.bottom, -origin.top)
        else '<TileEnd xsi:type="typens:PointN">'
        f"<X>{_number(end.right)}</X><Y>{_number(end.bottom)}</Y></TileEnd>"
    )
    top = metadata.maxzoom if metadata.maxzoom is not None else tms.maxzoom
    lods = "".join(
        '<LODInfo xsi:type="typens:LODInfo">'
        f"<LevelID>{z}</LevelID>"
        f"<Scale>{_number(scale_for_zoom(tms, z))}</Scale>"
        f"<Resolution>{_number(tms.matrix(z).cellSize)}</Resolution>"
        "</LODInfo>"
        for z in range(min(top, tms.maxzoom) + 1)
    )
    quality = (
        f"<CompressionQuality>{_JPEG_QUALITY}</CompressionQuality>"
        if metadata.tile_format is TileFormat.JPEG or metadata.mixed
        else ""
    )
    tile_format = _MIXED if metadata.mixed else _CACHE_TILE_FORMATS[metadata.tile_format]
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<CacheInfo xsi:type="typens:CacheInfo" {_NAMESPACES}>'
        '<TileCacheInfo xsi:type="typens:TileCacheInfo">'
        f"{_spatial_reference(tms)}"
        '<TileOrigin xsi:type="typens:PointN">'
        f"<X>{_number(origin.left)}</X><Y>{_number(origin.top)}</Y>"
        "</TileOrigin>"
        f"{tile_end}"
        f"<TileCols>{first.tileWidth}</TileCols><TileRows>{first.tileHeight}</TileRows>"
        f"<DPI>{DPI}</DPI>"
        f'<LODInfos xsi:type="typens:ArrayOfLODInfo">{lods}</LODInfos>'
        "</TileCacheInfo>"
        '<TileImageInfo xsi:type="typens:TileImageInfo">'
        f"<CacheTileFormat>{tile_format}</CacheTileFormat>"
        f"{quality}<Antialiasing>false</Antialiasing>"
        "</TileImageInfo>"
        '<CacheStorageInfo xsi:type="typens:CacheStorageInfo">'
        f"<StorageFormat>{storage.value}</StorageFormat><PacketSize>128</PacketSize>"
        "</CacheStorageInfo>"
        "</CacheInfo>\n"
    )


def conf_cdi(metadata: TilesetMetadata) -> str:
    """The ``conf.cdi`` document: the extent of ``metadata.bounds`` (the whole tile matrix set
    when unknown) in the tiling scheme's coordinates.

    Raises:
        ValueError: when :func:`find_esri_scheme_problem` finds a problem.
    """
    _check(metadata)
    tms = metadata.tms
    extent = _extent(tms, metadata.bounds)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<EnvelopeN xsi:type="typens:EnvelopeN" {_NAMESPACES}>'
        f"<XMin>{_number(extent.west)}</XMin><YMin>{_number(extent.south)}</YMin>"
        f"<XMax>{_number(extent.east)}</XMax><YMax>{_number(extent.north)}</YMax>"
        f"{_spatial_reference(tms)}"
        "</EnvelopeN>\n"
    )


def write_esri_scheme(
    folder: Path, metadata: TilesetMetadata, storage: EsriStorageFormat
) -> str | None:
    """Write ``conf.xml`` and ``conf.cdi`` into ``folder``; or write nothing and return why, when
    ``metadata`` does not fit them (see :func:`find_esri_scheme_problem`)."""
    problem = find_esri_scheme_problem(metadata)
    if problem is not None:
        return problem
    (folder / CONF_XML).write_text(conf_xml(metadata, storage), "utf-8")
    (folder / CONF_CDI).write_text(conf_cdi(metadata), "utf-8")
    return None


def _check(metadata: TilesetMetadata) -> None:
    problem = find_esri_scheme_problem(metadata)
    if problem is not None:
        raise ValueError(f"no Esri tiling scheme for this tile set: {problem}")


def _number(value: float) -> str:
    """Shortest text that reads back as the same double (ArcGIS writes 17 significant digits)."""
    text = repr(float(value))
    return text.removesuffix(".0") if text.endswith(".0") else text


def _wkt(crs: pyproj.CRS) -> str | None:
    for version in (WktVersion.WKT1_ESRI, WktVersion.WKT1_GDAL):
        try:
            wkt = crs.to_wkt(version)
        except pyproj.exceptions.CRSError:
            continue
        if wkt:
            return wkt
    return None


def _spatial_reference(tms: TileMatrixSet) -> str:
    crs = tms_crs(tms)
    kind = "GeographicCoordinateSystem" if crs.is_geographic else "ProjectedCoordinateSystem"
    epsg = crs.to_epsg()
    if epsg == 3857:
        ids = f"<WKID>{_WEB_MERCATOR_WKID}</WKID><LatestWKID>3857</LatestWKID>"
    elif epsg is not None:
        ids = f"<WKID>{epsg}</WKID><LatestWKID>{epsg}</LatestWKID>"
    else:
        ids = ""
    return (
        f'<SpatialReference xsi:type="typens:{kind}">'
        f"<WKT>{escape(_wkt(crs) or '')}</WKT><HighPrecision>true</HighPrecision>{ids}"
        "</SpatialReference>"
    )


def _extent(tms: TileMatrixSet, bounds: BBox | None) -> BBox:
    """WGS84 bounds in the tile matrix set's x/y coordinates, within its bounding box."""
    whole = tms.xy_bbox
    if bounds is None:
        return BBox(whole.left, whole.bottom, whole.right, whole.top)
    west, south, east, north = bounds
    if west > east:  # across the antimeridian: the whole width
        west, east = -180.0, 180.0
    area = tms.bbox  # lon/lat
    west, south = max(west, area.left), max(south, area.bottom)
    east, north = min(east, area.right), min(north, area.top)
    if west >= east or south >= north:
        return BBox(whole.left, whole.bottom, whole.right, whole.top)
    transformer = pyproj.Transformer.from_crs(_WGS84, tms_crs(tms), always_xy=True)
    x0, y0, x1, y1 = transformer.transform_bounds(west, south, east, north, densify_pts=21)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return BBox(whole.left, whole.bottom, whole.right, whole.top)
    return BBox(
        max(x0, whole.left), max(y0, whole.bottom), min(x1, whole.right), min(y1, whole.top)
    )
