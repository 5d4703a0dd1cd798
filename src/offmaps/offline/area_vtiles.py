"""The refresh of a preplanned area's archive of vector tiles made from a feature service (the
``<service>-vt`` tile services, :class:`~offmaps.sources.FeatureVectorTiles`), without
extracting it again (docs/preplanned.md, "Incremental refreshes").

Such a tile is a function of the rows whose envelope meets the tile's search box (the tile with
its buffer, in the layer's CRS), read in the order of their ``fid``, and of what the encoder is:
the layers and their schemas, the tile constants, the libraries that project, clip and encode.
So the archive's mark (:func:`vector_tiles_mark`) is the feature service's generation and a
digest of the rest; with the same digest, only the tiles the rows changed since the previous
mark's generation (its journal) can touch are made again (:func:`refresh_vector_tiles`): those
each such row meets now (its geometry in the store) and those that held it (its global id in the
previous archive's tile), as the extraction makes them, compared with the previous archive.
:mod:`offmaps.offline.preplanned` applies the update written and leaves the archive as an
extraction writes it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from uuid import UUID

import morecantile
import pyproj
import shapely
from pyproj import Transformer

from offmaps.containers import open_reader
from offmaps.errors import FeatureNotFoundError, TileNotFoundError
from offmaps.features.model import LayerSchema
from offmaps.offline.area_tiles import WEB_MERCATOR
from offmaps.offline.plan import TileLayerPlan
from offmaps.offline.updates import TileUpdateInfo, UpdateFile, write_tile_update
from offmaps.sources import FeatureVectorTiles, vector
from offmaps.tiling import TileCover, get_tms, tile_cover
from offmaps.types import Tile, TileCompression

__all__ = [
    "MARK_PREFIX",
    "NotComparable",
    "VectorTilesRefresh",
    "refresh_vector_tiles",
    "vector_tiles_mark",
]

_log = logging.getLogger(__name__)

MARK_PREFIX = "vt:"
"""How the mark of an archive of vector tiles made from a feature service begins."""

_ORDERED_STORES = frozenset(
    {"offmaps.features.geopackage.GeoPackageStore", "offmaps.features.postgis.PostGISStore"}
)
"""The stores (by class, not their subclasses; PostGIS is an optional extra) known to read a
tile's rows in the order of their ``fid`` (``ORDER BY fid``): a row that did not change then
keeps its place among a tile's rows, and a tile's first ``MAX_FEATURES_PER_TILE`` rows are
the same unless a row of its own changed."""

_LIBRARIES = ("mapbox-vector-tile", "protobuf", "shapely", "pyproj", "numpy")
"""What projects, clips and encodes a tile; another version may give other bytes."""

_AXIS_ALIGNED = (3857, 4326)
"""The CRSs whose boxes are boxes in Web Mercator (each axis mapped on its own), so that the
tiles a row's envelope meets are found from its envelope in Web Mercator exactly; a row of a
layer in another CRS leaves the refresh unsure."""

_GLOBAL_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""A global id as a tile holds it: every feature of a tile carries its row's global id as the
string value of ``globalid`` (the text of a UUID, in lower case), kept verbatim in the tile's
uncompressed protobuf."""

_MAX_MERCATOR_LAT = 85.06  # just past WebMercatorQuad's edge: the poles have no Mercator y


@dataclass(frozen=True)
class NotComparable:
    """Why the archive cannot be brought up to date without extracting it again."""

    reason: str


@dataclass(frozen=True)
class VectorTilesRefresh:
    """A refresh of an archive of vector tiles.

    Attributes:
        update: the tile update file written: the tiles that differ, and those removed.
        rows: the rows the journal holds changes of since the previous mark.
        made: the tiles made again.
        changed: the tiles whose bytes differ (added included).
        removed: the tiles the previous archive holds and an extraction now does not.
    """

    update: UpdateFile
    rows: int
    made: int
    changed: int
    removed: int


def _encoder(source: FeatureVectorTiles, layers: list[LayerSchema]) -> str:
    """A digest of everything but the rows that decides the tiles' bytes and the archive's
    metadata: the service's description, its layers (names, CRS, fields, in order), the tile
    constants and the versions of the libraries that make a tile."""
    info = source.info
    versions = {name: importlib.metadata.version(name) for name in _LIBRARIES}
    described = {
        "store": type(source.store).__name__,
        "info": [
            info.title,
            info.tms_id,
            info.tile_format.value,
            info.tile_compression.value,
            info.min_zoom,
            info.max_zoom,
            info.attribution,
        ],
        "layers": [asdict(layer) for layer in layers],
        "tiles": [vector.EXTENT, vector.BUFFER, vector.MAX_FEATURES_PER_TILE],
        "versions": versions,
        "geos": shapely.geos_version_string,
        "proj": pyproj.proj_version_str,
    }
    text = json.dumps(described, default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def vector_tiles_mark(source: FeatureVectorTiles) -> str | None:
    """The mark of the tiles of a feature service's vector tile service: its generation and a
    digest of its layers' schemas and the encoder (``vt:<generation>:<digest>``), taken before
    any tile is read; ``None`` (the archive is then extracted again) for a store not known to
    read a tile's rows in a stable order, or one that cannot be read."""
    kind = type(source.store)
    if f"{kind.__module__}.{kind.__qualname__}" not in _ORDERED_STORES:
        return None
    try:
        generation = source.store.generation()
        digest = _encoder(source, source.spatial_layers())
    except Exception as exc:  # noqa: BLE001 - a mark that cannot be taken: extracted again
        _log.warning("vector tiles %s cannot be marked: %s", source.name, exc)
        return None
    return f"{MARK_PREFIX}{generation}:{digest}"


def _parse(mark: str | None) -> tuple[int, str] | None:
    if mark is None or not mark.startswith(MARK_PREFIX):
        return None
    generation, _, digest = mark.removeprefix(MARK_PREFIX).partition(":")
    return (int(generation), digest) if generation.isdigit() and digest else None


@cache
def _to_mercator(srid: int) -> Transformer:
    return Transformer.from_crs(srid, 3857, always_xy=True)


def _mercator_box(
    layer: LayerSchema, bounds: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """A row's envelope in Web Mercator (the layer's CRS is one of :data:`_AXIS_ALIGNED`)."""
    west, south, east, north = bounds
    if layer.srid == 3857:
        return bounds
    south = max(min(south, _MAX_MERCATOR_LAT), -_MAX_MERCATOR_LAT)
    north = max(min(north, _MAX_MERCATOR_LAT), -_MAX_MERCATOR_LAT)
    xs, ys = _to_mercator(layer.srid).transform([west, east], [south, north])
    return xs[0], ys[0], xs[1], ys[1]


def _meets(
    envelope: tuple[float, float, float, float], box: tuple[float, float, float, float]
) -> bool:
    """Whether a store reading the rows of ``box`` may read a row of ``envelope``: the
    comparisons of the GeoPackage R-tree query (and PostGIS's ``&&``), with a margin for the
    single precision their indexes keep envelopes in."""
    minx, miny, maxx, maxy = envelope
    west, south, east, north = box
    eps = 2.0**-22 * max(1.0, *(abs(v) for v in (*envelope, *box)))
    return minx <= east + eps and maxx >= west - eps and miny <= north + eps and maxy >= south - eps


def _tiles_met(
    source: FeatureVectorTiles,
    layer: LayerSchema,
    envelope: tuple[float, float, float, float],
    cover: TileCover,
) -> Iterator[Tile]:
    """The tiles of the cover whose rows of ``layer`` a row of ``envelope`` is among."""
    tms = source.tms
    origin = tms.xy_bounds(morecantile.Tile(0, 0, 0))
    span = origin.right - origin.left
    west, south, east, north = _mercator_box(layer, envelope)
    for z in cover.zooms.levels():
        level = cover.level(z)
        held = level.bounds()
        if held is None or not source.info.min_zoom <= z <= source.info.max_zoom:
            continue
        width = span / (1 << z)
        # the buffer, and a sixteenth of a tile for rounding
        margin = width * (vector.BUFFER / vector.EXTENT + 1 / 16)
        x0 = math.floor((west - margin - origin.left) / width)
        x1 = math.floor((east + margin - origin.left) / width)
        y0 = math.floor((origin.top - north - margin) / width)
        y1 = math.floor((origin.top - south + margin) / width)
        x0, y0 = max(x0, held[0]), max(y0, held[1])
        x1, y1 = min(x1, held[2]), min(y1, held[3])
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                tile = Tile(x, y, z)
                if tile in level and _meets(envelope, source.search_box(layer, tile)):
                    yield tile


def _previous_tiles(
    archive: Path, cover: TileCover, wanted: set[Tile], global_ids: set[bytes]
) -> tuple[dict[Tile, bytes], set[Tile], int]:
    """One read of the previous archive: the bytes of its tiles in ``wanted`` or holding one of
    ``global_ids``, the tiles it holds outside the cover, and how many it holds."""
    found: dict[Tile, bytes] = {}
    outside: set[Tile] = set()
    held = 0
    with open_reader(str(archive)) as reader:  # MBTiles or PMTiles
        for tile, data in reader.iter_tiles():
            held += 1
            if tile not in cover:
                outside.add(tile)
            elif tile in wanted or (
                global_ids and not global_ids.isdisjoint(_GLOBAL_ID.findall(data))
            ):
                found[tile] = bytes(data)
    return found, outside, held


def refresh_vector_tiles(
    source: FeatureVectorTiles,
    plan: TileLayerPlan,
    *,
    before: str | None,
    after: str | None,
    archive: Path,
    update: Path,
    info: TileUpdateInfo,
    check_cancelled: Callable[[], None],
) -> VectorTilesRefresh | NotComparable:
    """Write the tile update that brings ``archive`` (the previous package's, of mark
    ``before``) to what an extraction of ``source`` for ``plan`` gives now (mark ``after``):
    the tiles the rows changed since ``before``'s generation can touch, made as
    :func:`~offmaps.offline.generate.export_tiles` makes them, that differ from the archive's
    or are gone; the archive is only read.

    A changed row can touch the tiles of the cover whose search box its envelope meets now
    and the tiles the previous archive holds it in (its global id among the tile's strings);
    no other tile reads it, whatever the per-tile cap (a tile's rows come in ``fid`` order,
    so the first ``MAX_FEATURES_PER_TILE`` of a tile none of whose rows changed are the
    same). Returns :class:`NotComparable` when that cannot be relied on: a mark of another
    kind, other layers, schemas or encoder, a generation gone back (another store), compressed
    tiles, a tile matrix set other than WebMercatorQuad, a changed row of a layer in a CRS
    other than those of :data:`_AXIS_ALIGNED`, or an envelope that is not finite.

    Raises:
        OffmapsError, sqlite3.Error, OSError: the store, the archive (MBTiles or PMTiles) or
            the update fails.
    """
    old, new = _parse(before), _parse(after)
    if old is None or new is None:
        return NotComparable("the previous archive's mark is not one of vector tiles")
    if old[1] != new[1]:
        return NotComparable("the layers, their schemas or the tile encoder changed")
    if new[0] < old[0]:
        return NotComparable(f"the feature service's generation went back ({old[0]} -> {new[0]})")
    tile_info = source.info
    if tile_info.tms_id != WEB_MERCATOR or tile_info.tile_compression is not TileCompression.NONE:
        return NotComparable("the tiles are not uncompressed WebMercatorQuad tiles")
    layers = {layer.name: layer for layer in source.spatial_layers()}
    store = source.store
    changed_rows: dict[tuple[str, UUID], None] = {}
    for entry in store.iter_changes(old[0], layers=sorted(layers)):
        changed_rows[(entry.layer, entry.global_id)] = None
    cover = tile_cover(plan.area.aoi(), get_tms(tile_info.tms_id), plan.zooms)
    wanted: set[Tile] = set()
    for index, (name, global_id) in enumerate(changed_rows):
        if index % 64 == 0:
            check_cancelled()
        layer = layers.get(name)
        if layer is None:
            return NotComparable(f"the journal names a layer {name} the tiles are not made of")
        try:
            geometry = store.get_feature(name, global_id).geometry
        except FeatureNotFoundError:
            continue  # deleted: only the tiles that held it
        if geometry is None or geometry.is_empty:
            continue
        envelope = tuple(float(v) for v in geometry.bounds)
        if layer.srid not in _AXIS_ALIGNED:
            return NotComparable(f"layer {name} is in EPSG:{layer.srid}")
        if not all(math.isfinite(v) for v in envelope):
            return NotComparable(f"row {global_id} of {name} has no finite envelope")
        west, south, east, north = envelope
        wanted.update(_tiles_met(source, layer, (west, south, east, north), cover))
    check_cancelled()
    global_ids = {str(global_id).encode() for _, global_id in changed_rows}
    previous, outside, held = _previous_tiles(archive, cover, wanted, global_ids)
    made, written, removed = 0, [], sorted(outside)
    for index, tile in enumerate(sorted({*wanted, *previous})):
        if index % 64 == 0:
            check_cancelled()
        made += 1
        try:
            data: bytes | None = source.get_tile(tile)
        except TileNotFoundError:
            data = None
        had = previous.get(tile)
        if data is None:
            if had is not None:
                removed.append(tile)
        elif data != had:
            written.append((tile, data))
    file = write_tile_update(update, info, written, removed)
    _log.info(
        "vector tiles %s: %d rows changed, %d of %d tiles made again, %d differ, %d removed",
        source.name,
        len(changed_rows),
        made,
        held,
        len(written),
        len(removed),
    )
    return VectorTilesRefresh(file, len(changed_rows), made, len(written), len(removed))
