"""An area of interest on the wire: a GeoJSON Polygon or MultiPolygon in CRS84.

The offline map parameters, the tile cache's seed and cleanup requests and the CLI all take an
area in this one form, checked once here: JSON without NaN, at most :data:`MAX_AREA_BYTES`,
positions within their ranges, and a geometry :class:`AreaOfInterest` accepts. An envelope whose
west is greater than its east crosses the antimeridian.
"""

from __future__ import annotations

import json
import warnings
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError, WithJsonSchema, field_validator
from shapely.geometry import MultiPolygon, box, mapping

from offmaps.errors import InvalidAOIError
from offmaps.tiling.aoi import AreaOfInterest

__all__ = ["MAX_AREA_BYTES", "Area", "area_from_bbox"]

MAX_AREA_BYTES = 1024 * 1024
"""The largest area of interest accepted, as GeoJSON text."""

# longitudes beyond ±180 are wrapped, up to two turns; latitudes beyond ±90 are refused
_POSITION = {
    "type": "array",
    "prefixItems": [
        {"type": "number", "minimum": -720, "maximum": 720},
        {"type": "number", "minimum": -90, "maximum": 90},
    ],
    "items": {"type": "number"},
    "minItems": 2,
    "maxItems": 3,
}
_POLYGON = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "minItems": 4, "items": _POSITION},
}
_AREA_SCHEMA: dict[str, Any] = {
    "description": "A GeoJSON Polygon or MultiPolygon in CRS84 (closed, valid rings)",
    "anyOf": [
        {
            "type": "object",
            "required": ["type", "coordinates"],
            "properties": {"type": {"const": "Polygon"}, "coordinates": _POLYGON},
        },
        {
            "type": "object",
            "required": ["type", "coordinates"],
            "properties": {
                "type": {"const": "MultiPolygon"},
                "coordinates": {"type": "array", "minItems": 1, "items": _POLYGON},
            },
        },
    ],
}


class Area(BaseModel):
    """An area of interest: a GeoJSON Polygon or MultiPolygon in CRS84."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    geometry: Annotated[dict[str, Any], WithJsonSchema(_AREA_SCHEMA)]

    @field_validator("geometry")
    @classmethod
    def _check(cls, geometry: dict[str, Any]) -> dict[str, Any]:
        try:
            text = json.dumps(geometry, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(
                "the area of interest is not JSON (NaN or infinite numbers?)"
            ) from None
        if len(text) > MAX_AREA_BYTES:
            raise ValueError(f"the area of interest is over {MAX_AREA_BYTES:,} bytes")
        geometry = json.loads(text)  # tuples become lists: one form in and out
        try:
            with warnings.catch_warnings():  # shapely warns of NaN before we refuse it
                warnings.simplefilter("ignore", RuntimeWarning)
                AreaOfInterest.from_geojson(geometry)
        except InvalidAOIError as exc:
            raise ValueError(str(exc)) from None
        return geometry

    def aoi(self) -> AreaOfInterest:
        """The area as an :class:`AreaOfInterest` (longitude/latitude)."""
        return AreaOfInterest.from_geojson(self.geometry)


def area_from_bbox(west: float, south: float, east: float, north: float) -> Area:
    """An envelope in longitude/latitude; ``west > east`` crosses the antimeridian."""
    AreaOfInterest.from_bbox(west, south, east, north)  # its checks and messages
    if west > east:
        geometry: Any = MultiPolygon(
            [box(west, south, 180.0, north), box(-180.0, south, east, north)]
        )
    else:
        geometry = box(west, south, east, north)
    try:
        return Area(geometry=dict(mapping(geometry)))
    except ValidationError as exc:
        raise InvalidAOIError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
