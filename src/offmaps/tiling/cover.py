"""Exact tile cover of an area of interest, per zoom level, without materialising tiles.

A level's cover is stored as sorted, disjoint row spans (row, first column, last column). A tile is
in the cover when its interior meets the AOI's interior; that is when either the AOI's boundary
crosses the open tile, or the tile's horizontal centre line lies inside the AOI. Both are computed
with vectorised scanlines over the polygon edges (numpy), in tile units:

* boundary cells: for each edge and each row strip it passes through, the columns its clipped
  segment spans;
* interior cells: at each row's centre line, the even-odd crossings of all rings, paired into
  inside intervals.

Counting sums span lengths, so z0-20 of a country takes seconds and constant memory per level.
Work is done in bands of rows so that memory stays bounded for long edges at deep levels. Edges
are straight in the tile matrix set's CRS, as in supermercado and mapbox's tile-cover.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import morecantile
import numpy as np
import shapely
from morecantile import TileMatrixSet
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon

from offmaps.errors import InvalidZoomError, TilingError
from offmaps.tiling.aoi import AreaOfInterest
from offmaps.tiling.tms import tms_crs
from offmaps.types import Tile, ZoomRange

__all__ = ["MAX_COVER_ROWS", "TileCover", "ZoomCover", "check_zooms", "tile_cover"]

MAX_COVER_ROWS = 1 << 26
"""Refuse to scan an AOI spanning more rows than this at one level (about 67 million)."""

_BAND_BUDGET = 1 << 21
_SNAP = 1e-9  # tile units  # (edge, row) pairs computed at once

Int64Array = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def check_zooms(tms: TileMatrixSet, zooms: ZoomRange) -> None:
    """Raise InvalidZoomError unless ``zooms`` is an ordered range within ``tms``."""
    if zooms.min > zooms.max:
        raise InvalidZoomError(f"zoom range {zooms.min}-{zooms.max} is inverted", zoom=zooms.min)
    for z in (zooms.min, zooms.max):
        if z < tms.minzoom or z > tms.maxzoom:
            raise InvalidZoomError(
                f"zoom {z} is outside {tms.id} (levels {tms.minzoom}-{tms.maxzoom})", zoom=z
            )


@dataclass(frozen=True)
class ZoomCover:
    """The tiles of one level covering an AOI, as disjoint row spans sorted by row then column.

    Attributes:
        z: the level.
        rows: row of each span.
        starts: first column of each span.
        stops: last column of each span (inclusive).
    """

    z: int
    rows: Int64Array
    starts: Int64Array
    stops: Int64Array
    _keys: Int64Array = field(repr=False, compare=False)
    _stride: int = field(repr=False, compare=False)

    @property
    def count(self) -> int:
        """Number of tiles."""
        return int((self.stops - self.starts + 1).sum())

    def __len__(self) -> int:
        return self.count

    def __contains__(self, tile: object) -> bool:
        if not isinstance(tile, tuple) or len(tile) != 3:
            return False
        x, y, z = tile
        if z != self.z or x < 0 or y < 0 or x >= self._stride:
            return False
        key = y * self._stride + x
        i = int(np.searchsorted(self._keys, key, side="right")) - 1
        return i >= 0 and int(self.rows[i]) == y and x <= int(self.stops[i])

    def __iter__(self) -> Iterator[Tile]:
        z = self.z
        for row, start, stop in zip(
            self.rows.tolist(), self.starts.tolist(), self.stops.tolist(), strict=True
        ):
            for x in range(start, stop + 1):
                yield Tile(x, row, z)

    def to_array(self) -> Int64Array:
        """Every tile as an ``(n, 3)`` array of columns x, y, z, in the order of iteration.

        The cover as tiles without a Python object per tile: numpy's own form for callers that
        work on tile arrays (as supermercado's ``burntiles.burn`` returns them).
        """
        lengths = self.stops - self.starts + 1
        total = int(lengths.sum())
        # within a span the column grows by one per tile from its start
        first = np.cumsum(lengths) - lengths
        out = np.empty((total, 3), dtype=np.int64)
        out[:, 0] = np.arange(total, dtype=np.int64) - np.repeat(first - self.starts, lengths)
        out[:, 1] = np.repeat(self.rows, lengths)
        out[:, 2] = self.z
        return out

    def bounds(self) -> tuple[int, int, int, int] | None:
        """``(min column, min row, max column, max row)`` of the cover, or None when empty."""
        if not len(self.rows):
            return None
        return (
            int(self.starts.min()),
            int(self.rows.min()),
            int(self.stops.max()),
            int(self.rows.max()),
        )


class TileCover:
    """The exact tile cover of an AOI over a range of levels; levels are computed on first use.

    Build with :func:`tile_cover`.
    """

    def __init__(
        self, tms: TileMatrixSet, geometry: Polygon | MultiPolygon, zooms: ZoomRange
    ) -> None:
        self.tms = tms
        self.geometry = geometry
        self.zooms = zooms
        self._levels: dict[int, ZoomCover] = {}
        self._edges = _edges(geometry)

    def level(self, z: int) -> ZoomCover:
        """The cover at level ``z``."""
        if z not in self.zooms:
            raise InvalidZoomError(
                f"zoom {z} is outside this cover's range {self.zooms.min}-{self.zooms.max}", zoom=z
            )
        if z not in self._levels:
            self._levels[z] = _cover_level(self.tms, self._edges, z)
        return self._levels[z]

    def counts(self) -> dict[int, int]:
        """Tile count per level."""
        return {z: self.level(z).count for z in self.zooms.levels()}

    @property
    def total(self) -> int:
        """Tile count over all levels."""
        return sum(self.counts().values())

    def __contains__(self, tile: object) -> bool:
        return (
            isinstance(tile, tuple)
            and len(tile) == 3
            and tile[2] in self.zooms
            and tile in self.level(tile[2])
        )

    def __iter__(self) -> Iterator[Tile]:
        for z in self.zooms.levels():
            yield from self.level(z)


def tile_cover(
    aoi: AreaOfInterest, tms: TileMatrixSet, zooms: ZoomRange | Iterable[int]
) -> TileCover:
    """The tiles of ``tms`` at ``zooms`` whose interior meets the AOI's interior.

    Raises:
        InvalidZoomError: for levels outside the tile matrix set.
        InvalidAOIError: when the AOI lies outside the tile matrix set.
    """
    levels = zooms if isinstance(zooms, ZoomRange) else _as_range(zooms)
    check_zooms(tms, levels)
    clip = tms.bbox
    geometry = aoi.project(tms_crs(tms), clip_to=(clip.left, clip.bottom, clip.right, clip.top))
    return TileCover(tms, geometry, levels)


def _as_range(zooms: Iterable[int]) -> ZoomRange:
    values = sorted(set(zooms))
    if not values:
        raise InvalidZoomError("no zoom level given")
    if values != list(range(values[0], values[-1] + 1)):
        raise InvalidZoomError(f"zoom levels {values} are not a contiguous range")
    return ZoomRange(values[0], values[-1])


def _edges(geometry: Polygon | MultiPolygon) -> FloatArray:
    """Every ring edge as rows ``x0, y0, x1, y1`` in the geometry's CRS."""
    rings = shapely.get_rings(shapely.get_parts(geometry))
    chunks = []
    for ring in rings:
        coords = shapely.get_coordinates(ring)
        if len(coords) >= 2:
            chunks.append(np.column_stack([coords[:-1], coords[1:]]))
    if not chunks:
        return np.empty((0, 4))
    return np.concatenate(chunks)


def _cover_level(tms: TileMatrixSet, edges_crs: FloatArray, z: int) -> ZoomCover:
    matrix = tms.matrix(z)
    if matrix.variableMatrixWidths:
        raise TilingError(f"{tms.id} level {z} has variable matrix widths, which are not supported")
    if matrix.cornerOfOrigin != "topLeft":
        raise TilingError(f"{tms.id} level {z}: only a top-left corner of origin is supported")
    width, height = matrix.matrixWidth, matrix.matrixHeight
    first = tms.xy_bounds(morecantile.Tile(0, 0, z))
    left, top = first.left, first.top
    size_x, size_y = first.right - first.left, first.top - first.bottom
    edges = np.empty_like(edges_crs)
    edges[:, 0] = (edges_crs[:, 0] - left) / size_x
    edges[:, 2] = (edges_crs[:, 2] - left) / size_x
    edges[:, 1] = (top - edges_crs[:, 1]) / size_y
    edges[:, 3] = (top - edges_crs[:, 3]) / size_y
    # a vertex on a tile line must land on it exactly, whatever the rounding of the division
    nearest = np.round(edges)
    edges = np.where(np.abs(edges - nearest) < _SNAP, nearest, edges)
    stride = width + 2
    spans = _spans(edges, width, height)
    return _merge(z, spans, stride)


def _spans(edges: FloatArray, width: int, height: int) -> list[Int64Array]:
    """Unmerged ``(row, start, stop)`` spans, as a list of (n, 3) arrays."""
    if not len(edges):
        return []
    x0, y0, x1, y1 = edges.T
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    row_min = max(0, int(np.floor(ylo.min())))
    row_max = min(height - 1, int(np.ceil(yhi.max())))
    if row_max - row_min > MAX_COVER_ROWS:
        raise InvalidZoomError(
            f"the area spans {row_max - row_min:,} tile rows at this level; "
            f"the limit is {MAX_COVER_ROWS:,}"
        )
    # rows each edge touches (boundary) -> spans per band of rows bounded by _BAND_BUDGET pairs
    first = np.clip(np.floor(ylo), row_min, row_max).astype(np.int64)
    last = np.clip(np.ceil(yhi) - 1, row_min, row_max).astype(np.int64)
    per_row = np.zeros(row_max - row_min + 2, dtype=np.int64)
    np.add.at(per_row, first - row_min, 1)
    np.add.at(per_row, last - row_min + 1, -1)
    load = np.cumsum(np.cumsum(per_row)[:-1])
    cuts = np.searchsorted(load, np.arange(_BAND_BUDGET, int(load[-1]) + 1, _BAND_BUDGET))
    bounds = sorted({row_min, *[int(c) + row_min + 1 for c in cuts], row_max + 1})
    out: list[Int64Array] = []
    for band_lo, band_hi in itertools.pairwise(bounds):
        if band_lo >= band_hi:
            continue
        active = (last >= band_lo) & (first < band_hi)
        if not active.any():
            continue
        out.extend(
            _band_spans(x0[active], y0[active], x1[active], y1[active], band_lo, band_hi, width)
        )
    return out


def _band_spans(
    x0: FloatArray,
    y0: FloatArray,
    x1: FloatArray,
    y1: FloatArray,
    band_lo: int,
    band_hi: int,
    width: int,
) -> list[Int64Array]:
    out: list[Int64Array] = []
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    sloped = ylo < yhi
    # boundary cells of sloped edges
    sx0, sy0, sx1, sy1 = x0[sloped], y0[sloped], x1[sloped], y1[sloped]
    slo, shi = ylo[sloped], yhi[sloped]
    r_first = np.maximum(np.floor(slo), band_lo).astype(np.int64)
    r_last = np.minimum(np.ceil(shi) - 1, band_hi - 1).astype(np.int64)
    n = np.maximum(r_last - r_first + 1, 0)
    if n.sum():
        idx = np.repeat(np.arange(len(n)), n)
        offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        rows = r_first[idx] + offsets
        ya = np.maximum(slo[idx], rows)
        yb = np.minimum(shi[idx], rows + 1)
        dxdy = (sx1 - sx0) / (sy1 - sy0)
        xa = sx0[idx] + (ya - sy0[idx]) * dxdy[idx]
        xb = sx0[idx] + (yb - sy0[idx]) * dxdy[idx]
        lo = np.floor(np.minimum(xa, xb))
        hi = np.ceil(np.maximum(xa, xb)) - 1
        out.append(_clipped(rows, lo, hi, width))
        # interior: crossings of each row's centre line, paired by the even-odd rule
        c_first = np.maximum(np.ceil(slo - 0.5), band_lo).astype(np.int64)
        c_last = np.minimum(np.ceil(shi - 0.5) - 1, band_hi - 1).astype(np.int64)
        m = np.maximum(c_last - c_first + 1, 0)
        if m.sum():
            idx = np.repeat(np.arange(len(m)), m)
            offsets = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
            crow = c_first[idx] + offsets
            xc = sx0[idx] + (crow + 0.5 - sy0[idx]) * dxdy[idx]
            order = np.lexsort((xc, crow))
            crow, xc = crow[order], xc[order]
            if len(crow) % 2:
                raise TilingError("internal error: odd number of scanline crossings")
            x_in, x_out = xc[0::2], xc[1::2]
            keep = x_in < x_out
            out.append(
                _clipped(crow[0::2][keep], np.floor(x_in[keep]), np.ceil(x_out[keep]) - 1, width)
            )
    # boundary cells of horizontal edges strictly inside a row
    flat = ~sloped
    fy = y0[flat]
    inside_row = (fy != np.floor(fy)) & (fy >= band_lo) & (fy < band_hi)
    if inside_row.any():
        fx0, fx1 = x0[flat][inside_row], x1[flat][inside_row]
        out.append(
            _clipped(
                np.floor(fy[inside_row]).astype(np.int64),
                np.floor(np.minimum(fx0, fx1)),
                np.ceil(np.maximum(fx0, fx1)) - 1,
                width,
            )
        )
    return out


def _clipped(rows: Int64Array, lo: FloatArray, hi: FloatArray, width: int) -> Int64Array:
    lo_i = np.clip(lo, 0, width - 1).astype(np.int64)
    hi_i = np.clip(hi, -1, width - 1).astype(np.int64)
    keep = (hi_i >= lo_i) & (hi >= 0) & (lo <= width - 1)
    return np.column_stack([rows[keep], lo_i[keep], hi_i[keep]])


def _merge(z: int, spans: list[Int64Array], stride: int) -> ZoomCover:
    empty = np.empty(0, dtype=np.int64)
    if not spans or not sum(len(s) for s in spans):
        return ZoomCover(z, empty, empty, empty, empty, stride)
    allspans = np.concatenate(spans)
    rows = allspans[:, 0]
    key_lo = rows * stride + allspans[:, 1]
    key_hi = rows * stride + allspans[:, 2]
    order = np.argsort(key_lo, kind="stable")
    key_lo, key_hi = key_lo[order], key_hi[order]
    running = np.maximum.accumulate(key_hi)
    previous = np.concatenate([[np.iinfo(np.int64).min + 2], running[:-1]])
    starts_mask = key_lo > previous + 1
    start_idx = np.flatnonzero(starts_mask)
    end_idx = np.concatenate([start_idx[1:] - 1, [len(key_lo) - 1]])
    merged_lo = key_lo[start_idx]
    merged_hi = running[end_idx]
    out_rows = merged_lo // stride
    return ZoomCover(
        z,
        out_rows,
        merged_lo - out_rows * stride,
        merged_hi - out_rows * stride,
        merged_lo,
        stride,
    )
