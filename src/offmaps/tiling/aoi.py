"""Areas of interest: parsing, validation and repair, CRS handling, the antimeridian.

An :class:`AreaOfInterest` is a polygonal geometry with its CRS. Before tiling it is brought into a
tile matrix set's CRS by :meth:`AreaOfInterest.project`: through WGS84 longitude/latitude, where
areas that cross the antimeridian are split into parts on either side of it (never turned into a
world-wide band), and clipped to the part of the world the target CRS covers.

Vertices are transformed; edges stay straight lines in the target CRS, as in supermercado and
mapbox's tile-cover.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyproj
import shapely
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from offmaps.errors import InvalidAOIError, OffmapsWarning, UnknownCRSError

T = TypeVar("T")

__all__ = ["MAX_AOI_VERTICES", "AOIRepairedWarning", "AreaOfInterest", "parse_crs"]

MAX_AOI_VERTICES = 2_000_000
"""Refuse AOIs with more vertices than this: they are almost surely a mistake, and slow."""

WGS84 = pyproj.CRS.from_epsg(4326)


class AOIRepairedWarning(OffmapsWarning):
    """An invalid AOI (e.g. self-intersecting) was repaired with ``make_valid``."""


def parse_crs(value: str | int | pyproj.CRS) -> pyproj.CRS:
    """A CRS from ``EPSG:N``, an integer EPSG code, a URI, WKT or PROJ string.

    Raises:
        UnknownCRSError: when PROJ does not know it.
    """
    if isinstance(value, pyproj.CRS):
        return value
    try:
        return pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError as exc:
        raise UnknownCRSError(f"unknown CRS {value!r}", crs=str(value)) from exc


def _polygonal(geom: BaseGeometry, *, require_area: bool = True) -> Polygon | MultiPolygon:
    polygons: list[Polygon] = []
    for part in shapely.get_parts(geom):
        if isinstance(part, Polygon):
            polygons.append(part)
        elif isinstance(part, MultiPolygon):
            polygons.extend(part.geoms)
        elif part.geom_type == "GeometryCollection":
            inner = _polygonal(part, require_area=require_area)
            polygons.extend(shapely.get_parts(inner))
    polygons = [p for p in polygons if not p.is_empty and (p.area > 0 or not require_area)]
    if len(polygons) == 1:
        return polygons[0]
    return MultiPolygon(polygons)


@dataclass(frozen=True)
class AreaOfInterest:
    """A valid polygonal area with the CRS its coordinates are in.

    Build one with :meth:`from_bbox`, :meth:`from_geojson` or :meth:`from_geometry`, which check
    and repair the geometry.
    """

    geometry: Polygon | MultiPolygon
    crs: pyproj.CRS

    @classmethod
    def from_geometry(
        cls,
        geometry: BaseGeometry,
        crs: str | int | pyproj.CRS = "EPSG:4326",
        *,
        repair: bool = True,
    ) -> AreaOfInterest:
        """Check a shapely geometry and make it an AOI.

        Args:
            geometry: a Polygon or MultiPolygon (a GeometryCollection keeps its polygons).
            crs: the CRS of the coordinates.
            repair: repair an invalid geometry with ``make_valid`` (warning
                :class:`AOIRepairedWarning`) instead of refusing it.

        Raises:
            InvalidAOIError: empty, not an area, non-finite coordinates, too many vertices, or
                invalid when ``repair`` is false.
        """
        parsed_crs = parse_crs(crs)
        if geometry.is_empty:
            raise InvalidAOIError("the area of interest is empty")
        count = shapely.get_num_coordinates(geometry)
        if count > MAX_AOI_VERTICES:
            raise InvalidAOIError(
                f"the area of interest has {count:,} vertices; the limit is {MAX_AOI_VERTICES:,}"
            )
        coords = shapely.get_coordinates(geometry)
        if not np.isfinite(coords).all():
            raise InvalidAOIError("the area of interest has NaN or infinite coordinates")
        kinds = {g.geom_type for g in shapely.get_parts(geometry)}
        if not kinds <= {"Polygon", "MultiPolygon", "GeometryCollection"}:
            raise InvalidAOIError(
                "the area of interest must be a Polygon or MultiPolygon, not "
                + ", ".join(sorted(kinds))
            )
        if _same_crs(parsed_crs, WGS84):
            # split before any repair: make_valid can merge vertices into edges that look like
            # antimeridian jumps (Natural Earth's Antarctica)
            _check_latitudes(geometry, parsed_crs)
            if not _whole_width_box(geometry):
                flat = _polygonal(geometry, require_area=False)
                geometry = _geos(split_antimeridian, flat)
        if not geometry.is_valid:
            reason = shapely.is_valid_reason(geometry)
            if not repair:
                raise InvalidAOIError(f"the area of interest is not a valid polygon: {reason}")
            warnings.warn(
                f"the area of interest was not a valid polygon ({reason}); "
                "repaired with make_valid",
                AOIRepairedWarning,
                stacklevel=2,
            )
            geometry = _geos(shapely.make_valid, geometry)
        polygonal = _geos(_polygonal, geometry)
        if polygonal.is_empty:
            raise InvalidAOIError("the area of interest has no area")
        return cls(polygonal, parsed_crs)

    @classmethod
    def from_bbox(
        cls,
        west: float,
        south: float,
        east: float,
        north: float,
        crs: str | int | pyproj.CRS = "EPSG:4326",
    ) -> AreaOfInterest:
        """An envelope. In a geographic CRS, ``west > east`` means it crosses the antimeridian.

        Raises:
            InvalidAOIError: for non-finite values, ``south >= north``, or an empty envelope.
        """
        values = (west, south, east, north)
        if not all(math.isfinite(v) for v in values):
            raise InvalidAOIError(f"bounding box {values} has non-finite values")
        if south >= north:
            raise InvalidAOIError(f"bounding box {values}: south must be less than north")
        parsed_crs = parse_crs(crs)
        if west == east:
            raise InvalidAOIError(f"bounding box {values}: west equals east, no area")
        if west > east:
            if not parsed_crs.is_geographic:
                raise InvalidAOIError(
                    f"bounding box {values}: west must be less than east in a projected CRS"
                )
            geometry: BaseGeometry = MultiPolygon(
                [box(west, south, 180.0, north), box(-180.0, south, east, north)]
            )
        else:
            geometry = box(west, south, east, north)
        if parsed_crs.is_geographic:
            # an edge longer than 180 degrees would be read as crossing the antimeridian (the
            # shorter way round): a box wider than half the world would become its complement
            geometry = shapely.segmentize(geometry, 90.0)
        return cls.from_geometry(geometry, parsed_crs)

    @classmethod
    def from_geojson(
        cls,
        document: str | bytes | Mapping[str, Any],
        crs: str | int | pyproj.CRS = "EPSG:4326",
        *,
        repair: bool = True,
    ) -> AreaOfInterest:
        """An AOI from a GeoJSON geometry, Feature or FeatureCollection (all areas unioned).

        Raises:
            InvalidAOIError: for malformed JSON or GeoJSON, and the geometry checks of
                :meth:`from_geometry`.
        """
        if isinstance(document, str | bytes):
            try:
                obj = json.loads(document)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InvalidAOIError(f"the area of interest is not JSON: {exc}") from exc
        else:
            obj = document
        geometries = [_geojson_geometry(g) for g in _geojson_geometries(obj)]
        if not geometries:
            raise InvalidAOIError("the GeoJSON holds no geometry")
        geometry = geometries[0] if len(geometries) == 1 else shapely.GeometryCollection(geometries)
        if len(geometries) > 1:
            try:
                valid = [shapely.make_valid(g) if not g.is_valid else g for g in geometries]
                geometry = shapely.unary_union([_polygonal(g) for g in valid])
            except shapely.errors.GEOSException as exc:
                raise InvalidAOIError(f"the areas of interest cannot be joined: {exc}") from exc
        return cls.from_geometry(geometry, crs, repair=repair)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the AOI's CRS."""
        b = self.geometry.bounds
        return (b[0], b[1], b[2], b[3])

    def to_wgs84(self) -> Polygon | MultiPolygon:
        """The AOI in longitude/latitude, split at the antimeridian into parts within ±180°."""
        if _same_crs(self.crs, WGS84):
            return self.geometry
        transformer = _transformer(self.crs.srs, WGS84.srs)
        source = self.geometry
        if not self.crs.is_geographic:
            # a straight edge of a projected CRS is a curve in longitude and latitude, and one
            # spanning most of the world (a Web Mercator box 40,000 km wide) would look like a
            # jump across the antimeridian once only its two ends are transformed: transform
            # points along it (an edge spans at most 1/16 of the area's width or height)
            west, south, east, north = source.bounds
            source = shapely.segmentize(source, max(east - west, north - south) / _SEGMENTS)
        geometry = shapely.transform(source, lambda xy: _transform(transformer, xy))
        if not np.isfinite(shapely.get_coordinates(geometry)).all():
            raise InvalidAOIError(
                f"the area of interest lies outside the area where {self.crs.to_string()} "
                "can be transformed to longitude/latitude"
            )
        return split_antimeridian(_polygonal(shapely.make_valid(geometry)))

    def project(
        self, crs: pyproj.CRS, *, clip_to: tuple[float, float, float, float] | None = None
    ) -> Polygon | MultiPolygon:
        """The AOI in ``crs``.

        Args:
            crs: target CRS (a tile matrix set's).
            clip_to: the lon/lat bounds the target covers; the AOI is clipped to it first (e.g.
                ±85.0511° for Web Mercator).

        Raises:
            InvalidAOIError: when nothing of the AOI is left inside ``clip_to``.
        """
        if _same_crs(self.crs, crs) and clip_to is None:
            return self.geometry
        lonlat = self.to_wgs84()
        if clip_to is not None:
            lonlat = _polygonal(shapely.clip_by_rect(lonlat, *clip_to))
            if lonlat.is_empty:
                raise InvalidAOIError(
                    "the area of interest lies outside the tile matrix set's extent "
                    f"(lon/lat {clip_to})"
                )
        if _same_crs(crs, WGS84):
            return lonlat
        transformer = _transformer(WGS84.srs, crs.srs)
        projected = shapely.transform(lonlat, lambda xy: _transform(transformer, xy))
        if not np.isfinite(shapely.get_coordinates(projected)).all():
            raise InvalidAOIError(
                f"the area of interest cannot be transformed to {crs.to_string()}"
            )
        return _polygonal(shapely.make_valid(projected)) if not projected.is_valid else projected

    def project_within_area_of_use(self, crs: pyproj.CRS) -> Polygon | MultiPolygon:
        """The AOI in ``crs``; a projected CRS that cannot take all of it (Web Mercator and the
        poles) takes the part within the CRS's area of use.

        Raises:
            InvalidAOIError: when nothing of the AOI can be taken.
        """
        try:
            return self.project(crs)
        except InvalidAOIError:
            bounds = crs.area_of_use.bounds if crs.area_of_use is not None else None
            if crs.is_geographic or bounds is None:
                raise
            return self.project(crs, clip_to=bounds)


_SEGMENTS = 16
"""A projected AOI's edges are cut into pieces of at most 1/16 of its extent before they are
transformed to longitude and latitude."""


def _geos(work: Callable[[Any], T], geometry: Any) -> T:
    """``work(geometry)``, GEOS's failures on degenerate rings (a mixed-dimension overlay)
    becoming :class:`InvalidAOIError` rather than escaping, and its numeric noise on them (a
    division by zero in ``make_valid``) kept quiet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return work(geometry)
    except shapely.errors.GEOSException as exc:
        raise InvalidAOIError(f"the area of interest is not a usable polygon: {exc}") from None


def _same_crs(a: pyproj.CRS, b: pyproj.CRS) -> bool:
    return a == b or a.equals(b, ignore_axis_order=True)


@functools.lru_cache(maxsize=32)
def _transformer(source: str, target: str) -> pyproj.Transformer:
    """A transformer between two CRSs given as the strings they were made from (``CRS.srs``),
    made once: making one is most of the cost of covering an area at a small level. pyproj's
    transformers are thread-safe (3.1+)."""
    return pyproj.Transformer.from_crs(source, target, always_xy=True)


def _transform(transformer: pyproj.Transformer, xy: np.ndarray) -> np.ndarray:
    x, y = transformer.transform(xy[:, 0], xy[:, 1], errcheck=False)
    return np.column_stack([x, y])


MAX_LONGITUDE = 720.0
"""Longitudes beyond ±180 are wrapped, up to two turns either way; further is refused (huge
values overflow the geometry engine's arithmetic)."""


def _check_latitudes(geometry: BaseGeometry, crs: pyproj.CRS) -> None:
    minx, miny, maxx, maxy = geometry.bounds
    if minx < -MAX_LONGITUDE or maxx > MAX_LONGITUDE:
        raise InvalidAOIError(
            f"longitudes {minx}..{maxx} are outside -{MAX_LONGITUDE:g}..{MAX_LONGITUDE:g} "
            "(is the CRS not EPSG:4326?)"
        )
    if miny < -90 or maxy > 90:
        raise InvalidAOIError(
            f"latitudes {miny}..{maxy} are outside -90..90 (are longitude and latitude swapped, "
            "or is the CRS not EPSG:4326?)"
        )


def _geojson_geometries(obj: Any) -> list[Mapping[str, Any]]:
    if not isinstance(obj, Mapping):
        raise InvalidAOIError("GeoJSON must be an object")
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise InvalidAOIError("GeoJSON FeatureCollection without a 'features' list")
        return [g for f in features for g in _geojson_geometries(f)]
    if kind == "Feature":
        geometry = obj.get("geometry")
        if geometry is None:
            return []
        return _geojson_geometries(geometry)
    if isinstance(kind, str):
        return [obj]
    raise InvalidAOIError("GeoJSON object without a 'type'")


_MAX_NESTING = 3
"""Arrays of positions nest at most this deep in GeoJSON (a MultiPolygon's)."""


def _flat_positions(coordinates: Any, depth: int = 0) -> Any:
    """``coordinates`` with each position cut to its x and y: areas of interest are flat, and
    RFC 7946 lets positions of one geometry have 2 or 3 numbers, which shapely refuses mixed."""
    if not isinstance(coordinates, list) or not coordinates:
        return coordinates
    if not isinstance(coordinates[0], list):
        return coordinates[:2]
    if depth >= _MAX_NESTING:
        raise InvalidAOIError("GeoJSON coordinates nest deeper than any geometry type")
    return [_flat_positions(part, depth + 1) for part in coordinates]


def _flat_geometry(obj: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    flat = dict(obj)
    if "coordinates" in flat:
        flat["coordinates"] = _flat_positions(flat["coordinates"])
    members = flat.get("geometries")
    if isinstance(members, list):
        if depth >= _MAX_NESTING:
            raise InvalidAOIError("GeoJSON geometry collections nest too deep")
        flat["geometries"] = [
            _flat_geometry(m, depth + 1) if isinstance(m, Mapping) else m for m in members
        ]
    return flat


def _geojson_geometry(obj: Mapping[str, Any]) -> BaseGeometry:
    try:
        geometry: BaseGeometry = shape(_flat_geometry(obj))
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        shapely.errors.ShapelyError,
    ) as exc:
        raise InvalidAOIError(f"malformed GeoJSON {obj.get('type')!r} geometry: {exc}") from exc
    return geometry


def split_antimeridian(geometry: Polygon | MultiPolygon) -> Polygon | MultiPolygon:
    """Split lon/lat polygons whose edges jump across ±180° into parts on either side.

    A ring is "unwrapped" (longitudes shifted by 360° so that no edge is longer than 180°), then
    the parts beyond ±180° are shifted back. Polygons already within ±180° are returned as is;
    Natural Earth's countries, already split at 180°, pass untouched.

    Raises:
        InvalidAOIError: for a ring that circles a pole (it does not close once unwrapped).
    """
    parts = [geometry] if isinstance(geometry, Polygon) else list(geometry.geoms)
    if not any(_jumps(p) or _beyond(p) for p in parts):
        return geometry
    pieces: list[BaseGeometry] = []
    for polygon in parts:
        if not (_jumps(polygon) or _beyond(polygon)):
            pieces.append(polygon if polygon.is_valid else shapely.make_valid(polygon))
            continue
        exterior = _unwrap(np.asarray(polygon.exterior.coords))
        center = float(exterior[:, 0].mean())
        holes = []
        for ring in polygon.interiors:
            hole = _unwrap(np.asarray(ring.coords))
            hole[:, 0] += 360.0 * round((center - hole[:, 0].mean()) / 360.0)
            holes.append(hole)
        unwrapped = shapely.make_valid(Polygon(exterior, holes))
        for shift in (-720.0, -360.0, 0.0, 360.0, 720.0):
            window = box(-180.0 - shift, -90.0, 180.0 - shift, 90.0)
            piece = unwrapped.intersection(window)
            if not piece.is_empty and piece.area > 0:
                pieces.append(affinity.translate(piece, xoff=shift))
    return _polygonal(shapely.unary_union(pieces))


def _whole_width_box(geometry: BaseGeometry) -> bool:
    """Whether ``geometry`` is a box over every longitude: its edges run along the
    antimeridian, not across it, so it needs no split."""
    west, south, east, north = geometry.bounds
    return (
        isinstance(geometry, Polygon)
        and (west, east) == (-180.0, 180.0)
        and geometry.equals(box(west, south, east, north))
    )


def _beyond(polygon: Polygon) -> bool:
    minx, _, maxx, _ = polygon.bounds
    return minx < -180.0 or maxx > 180.0


def _unwrap(coords: np.ndarray) -> np.ndarray:
    """A ring with longitudes shifted by multiples of 360° so that no edge crosses ±180°.

    Edges longer than 180° in longitude are taken to cross the antimeridian (the shorter way
    round, as RFC 7946 reads them). A ring that then does not close goes once around a pole
    (Natural Earth's Antarctica): it is closed through that pole, so that it covers every
    longitude down (or up) to it.

    Raises:
        InvalidAOIError: for a ring that winds around a pole more than once.
    """
    coords = coords[:, :2].copy()
    x = coords[:, 0]
    dx = np.diff(x)
    steps = np.where(np.abs(dx) > 180.0, -360.0 * np.sign(dx), 0.0)
    coords[:, 0] = x + np.concatenate([[0.0], np.cumsum(steps)])
    gap = coords[-1, 0] - coords[0, 0]
    if math.isclose(gap, 0.0, abs_tol=1e-9):
        return coords
    if not math.isclose(abs(gap), 360.0, abs_tol=1e-9):
        raise InvalidAOIError("a ring of the area of interest winds around a pole more than once")
    pole = -90.0 if coords[:, 1].mean() < 0 else 90.0
    first, last = coords[0], coords[-1]
    closing = np.array([[last[0], pole], [first[0], pole], [first[0], first[1]]])
    return np.concatenate([coords, closing])


def _jumps(polygon: Polygon) -> bool:
    for ring in (polygon.exterior, *polygon.interiors):
        coords = np.asarray(ring.coords)
        unwrapped = _unwrap(coords)
        if unwrapped.shape != coords[:, :2].shape or not np.array_equal(unwrapped, coords[:, :2]):
            return True
    return False
