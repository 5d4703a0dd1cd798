"""The sample's feature data: real OSM sites and streets, synthetic inspections.

Sites are the street furniture mapped as OSM nodes (benches, waste baskets, fire hydrants, street
lamps...). Their inspections are made up, from a seeded random generator, so every build gives the
same rows; each site's ``condition`` and ``last_inspected`` follow from its latest inspection.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from offmaps.sample._osm import OsmLayer

__all__ = [
    "INSPECTIONS_LAYER",
    "MAX_SITES",
    "SITES_LAYER",
    "SITE_TAGS",
    "STREETS_LAYER",
    "Site",
    "find_sites",
    "write_sites",
    "write_streets",
]

SITES_LAYER = "sites"
INSPECTIONS_LAYER = "inspections"
STREETS_LAYER = "streets"

MAX_SITES = 2000
"""Sites kept at most (the lowest OSM ids)."""

SITE_TAGS: dict[str, frozenset[str]] = {
    "amenity": frozenset(
        {
            "bench",
            "waste_basket",
            "waste_disposal",
            "recycling",
            "drinking_water",
            "post_box",
            "bicycle_parking",
            "toilets",
            "fountain",
            "clock",
            "life_ring",
        }
    ),
    "emergency": frozenset({"fire_hydrant", "lifebuoy", "life_ring"}),
    "highway": frozenset({"street_lamp"}),
    "man_made": frozenset({"street_cabinet"}),
}
"""The OSM tags (key, values) that make a node a site, first matching key wins."""

_SEED = 20240601
_FIRST_DAY = date(2022, 1, 1)
_DAYS = 3 * 365
_INSPECTORS = ("A. Virtanen", "M. Korhonen", "J. Nieminen", "S. Mäkinen", "L. Lindqvist")
_RESULTS = ("ok", "repair", "replace")
_RESULT_WEIGHTS = (0.75, 0.18, 0.07)
_CONDITIONS = {"ok": "good", "repair": "needs_repair", "replace": "replace"}
_NOTES = {
    "ok": ("No defects found.", "Cleaned.", "Checked, in good order."),
    "repair": ("Loose fixings, tightened next visit.", "Paint worn.", "Minor damage."),
    "replace": ("Broken beyond repair.", "Missing parts.", "Vandalised."),
}


@dataclass(frozen=True, slots=True)
class Site:
    """One real OSM node chosen as a site."""

    osm_id: int
    kind: str
    name: str | None
    wkb: bytes


@dataclass(frozen=True, slots=True)
class _Inspection:
    site_osm_id: int
    inspected_on: date
    inspector: str
    result: str
    notes: str


def find_sites(points: OsmLayer) -> list[Site]:
    """The nodes of the ``points`` layer tagged as street furniture, by OSM id."""
    sites: dict[int, Site] = {}
    for row, wkb in enumerate(points.geometries):
        if wkb is None:
            continue
        kind = _site_kind(points, row)
        osm_id = points.value("osm_id", row)
        if kind is None or osm_id is None:
            continue
        sites[int(osm_id)] = Site(int(osm_id), kind, points.value("name", row), wkb)
    return [sites[osm_id] for osm_id in sorted(sites)[:MAX_SITES]]


def _site_kind(points: OsmLayer, row: int) -> str | None:
    for key, values in SITE_TAGS.items():
        value = points.tag(key, row)
        if value in values:
            return value
    return None


def _inspections(sites: list[Site]) -> list[_Inspection]:
    rng = random.Random(_SEED)  # noqa: S311 - synthetic sample data, not security
    rows: list[_Inspection] = []
    for site in sites:
        count = rng.choice((0, 1, 1, 2, 2, 3))
        days = sorted(rng.sample(range(_DAYS), count))
        for day in days:
            result = rng.choices(_RESULTS, weights=_RESULT_WEIGHTS)[0]
            rows.append(
                _Inspection(
                    site.osm_id,
                    _FIRST_DAY + timedelta(days=day),
                    rng.choice(_INSPECTORS),
                    result,
                    rng.choice(_NOTES[result]),
                )
            )
    return rows


def _write(
    path: Path, layer: str, geometries: Any, columns: dict[str, Any], **options: Any
) -> None:
    import pyogrio  # noqa: PLC0415 - optional: the server and render extras

    pyogrio.raw.write(
        path,
        geometries,
        list(columns.values()),
        fields=list(columns),
        layer=layer,
        driver="GPKG",
        # GeoPackage 1.2 is what the most readers (and offmaps' own store) accept everywhere
        dataset_options={"VERSION": "1.2"},
        **options,
    )


def _dates(values: list[date | None]) -> np.ndarray[Any, np.dtype[np.datetime64]]:
    return np.array(
        [np.datetime64(v) if v is not None else np.datetime64("NaT") for v in values],
        dtype="datetime64[D]",
    )


def write_sites(path: Path, sites: list[Site]) -> int:
    """Write the ``sites`` layer and the ``inspections`` table to a new GeoPackage.

    Returns:
        The number of inspections written.
    """
    inspections = _inspections(sites)
    latest = {row.site_osm_id: row for row in inspections}  # rows are in date order per site
    _write(
        path,
        SITES_LAYER,
        np.array([site.wkb for site in sites], dtype=object),
        {
            "osm_id": np.array([site.osm_id for site in sites], dtype=np.int64),
            "kind": np.array([site.kind for site in sites], dtype=object),
            "name": np.array([site.name for site in sites], dtype=object),
            "condition": np.array(
                [
                    _CONDITIONS[latest[s.osm_id].result] if s.osm_id in latest else "unknown"
                    for s in sites
                ],
                dtype=object,
            ),
            "last_inspected": _dates(
                [latest[s.osm_id].inspected_on if s.osm_id in latest else None for s in sites]
            ),
        },
        geometry_type="Point",
        crs="EPSG:4326",
    )
    _write(
        path,
        INSPECTIONS_LAYER,
        None,
        {
            "site_osm_id": np.array([row.site_osm_id for row in inspections], dtype=np.int64),
            "inspected_on": _dates([row.inspected_on for row in inspections]),
            "inspector": np.array([row.inspector for row in inspections], dtype=object),
            "result": np.array([row.result for row in inspections], dtype=object),
            "notes": np.array([row.notes for row in inspections], dtype=object),
        },
        geometry_type=None,
    )
    return len(inspections)


def write_streets(path: Path, lines: OsmLayer) -> int:
    """Write the OSM ways tagged ``highway=*`` as the ``streets`` layer of a new GeoPackage.

    Returns:
        The number of streets written.
    """
    rows = [
        row
        for row, wkb in enumerate(lines.geometries)
        if wkb is not None and lines.value("highway", row) and lines.value("osm_id", row)
    ]
    _write(
        path,
        STREETS_LAYER,
        np.array([lines.geometries[row] for row in rows], dtype=object),
        {
            "osm_id": np.array([int(lines.value("osm_id", row) or 0) for row in rows], np.int64),
            "name": np.array([lines.value("name", row) for row in rows], dtype=object),
            "highway": np.array([lines.value("highway", row) for row in rows], dtype=object),
        },
        geometry_type="LineString",
        crs="EPSG:4326",
    )
    return len(rows)
