"""Tile matrix sets: lookup by id, custom ones from OGC TileMatrixSet JSON, compatibility checks.

morecantile does the modelling; this module adds offmaps' errors and the comparison that
import/export needs (two schemes are compatible when their tiles line up, whatever their titles).
"""

from __future__ import annotations

import functools
import json
import math

import morecantile
import pydantic
import pyproj
from morecantile import TileMatrixSet

from offmaps.errors import IncompatibleTileMatrixSetError, UnknownTileMatrixSetError

__all__ = [
    "DEFAULT_TMS_ID",
    "check_compatible",
    "find_incompatibility",
    "get_tms",
    "list_tms",
    "tms_crs",
    "tms_from_json",
]

DEFAULT_TMS_ID = "WebMercatorQuad"
_REL_TOL = 1e-9


def list_tms() -> list[str]:
    """Ids of every registered tile matrix set."""
    return sorted(morecantile.tms.list())


def get_tms(tms_id: str = DEFAULT_TMS_ID) -> TileMatrixSet:
    """A registered tile matrix set by id (custom ones come from :func:`tms_from_json`).

    Raises:
        UnknownTileMatrixSetError: naming the known ids.
    """
    if tms_id in morecantile.tms.list():
        return morecantile.tms.get(tms_id)
    raise UnknownTileMatrixSetError(
        f"unknown tile matrix set {tms_id!r}; known ids: {', '.join(list_tms())}, "
        "or give an OGC TileMatrixSet JSON document",
        tms_id=tms_id,
    )


def tms_from_json(content: str, *, source: str = "TileMatrixSet JSON") -> TileMatrixSet:
    """Parse an OGC TileMatrixSet (2.0, or 1.0 converted by morecantile) JSON document.

    Raises:
        UnknownTileMatrixSetError: naming the first problem found.
    """
    try:
        document = json.loads(content)
    except json.JSONDecodeError as exc:
        raise UnknownTileMatrixSetError(f"{source}: not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise UnknownTileMatrixSetError(f"{source}: a TileMatrixSet must be a JSON object")
    try:
        if "tileMatrix" in document and "tileMatrices" not in document:
            return TileMatrixSet.from_v1(document)
        return TileMatrixSet.model_validate(document)
    except (pydantic.ValidationError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()
        detail = "; ".join(first[:3])
        raise UnknownTileMatrixSetError(
            f"{source}: not a valid TileMatrixSet: {detail}", tms_id=document.get("id")
        ) from exc
    except pyproj.exceptions.CRSError as exc:
        raise UnknownTileMatrixSetError(f"{source}: unknown CRS: {exc}") from exc


def tms_crs(tms: TileMatrixSet) -> pyproj.CRS:
    """The CRS of a tile matrix set as a pyproj CRS."""
    return _crs(tms.crs.srs)


@functools.lru_cache(maxsize=32)
def _crs(srs: str) -> pyproj.CRS:
    return pyproj.CRS.from_user_input(srs)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-9)


def find_incompatibility(a: TileMatrixSet, b: TileMatrixSet) -> str | None:
    """Why tiles of ``a`` and ``b`` would not line up, or None if they do.

    Compared: the CRS, and per level present in both the origin, corner of origin, tile size in
    pixels, cell size, and matrix size. Titles, ids, descriptions and keywords are ignored, and so
    are levels only one of them has.
    """
    crs_a, crs_b = tms_crs(a), tms_crs(b)
    if not crs_a.equals(crs_b, ignore_axis_order=False):
        return f"different CRS: {crs_a.to_string()} and {crs_b.to_string()}"
    levels_a = {m.id: m for m in a.tileMatrices}
    levels_b = {m.id: m for m in b.tileMatrices}
    shared = [level for level in levels_a if level in levels_b]
    if not shared:
        return "no tile matrix (level) in common"
    for level in shared:
        ma, mb = levels_a[level], levels_b[level]
        if not _close(ma.cellSize, mb.cellSize):
            return f"level {level}: cell size {ma.cellSize} vs {mb.cellSize}"
        if ma.cornerOfOrigin != mb.cornerOfOrigin:
            return f"level {level}: corner of origin {ma.cornerOfOrigin} vs {mb.cornerOfOrigin}"
        if not all(_close(p, q) for p, q in zip(ma.pointOfOrigin, mb.pointOfOrigin, strict=True)):
            return f"level {level}: origin {ma.pointOfOrigin} vs {mb.pointOfOrigin}"
        if (ma.tileWidth, ma.tileHeight) != (mb.tileWidth, mb.tileHeight):
            return (
                f"level {level}: tile size {ma.tileWidth}x{ma.tileHeight} vs "
                f"{mb.tileWidth}x{mb.tileHeight}"
            )
        if (ma.matrixWidth, ma.matrixHeight) != (mb.matrixWidth, mb.matrixHeight):
            return (
                f"level {level}: matrix {ma.matrixWidth}x{ma.matrixHeight} vs "
                f"{mb.matrixWidth}x{mb.matrixHeight}"
            )
    return None


def check_compatible(a: TileMatrixSet, b: TileMatrixSet) -> None:
    """Raise IncompatibleTileMatrixSetError if tiles of ``a`` and ``b`` would not line up."""
    reason = find_incompatibility(a, b)
    if reason is not None:
        raise IncompatibleTileMatrixSetError(f"tile matrix sets {a.id} and {b.id}: {reason}")
