"""Reading an OpenStreetMap extract with pyogrio (GDAL's OSM driver).

The driver offers the layers ``points`` (tagged nodes), ``lines`` (open ways), ``multipolygons``
(closed ways and multipolygon relations) and more. Each has a few tags as columns; every other tag
is in ``other_tags``, an hstore-like text ``"key"=>"value","key2"=>"value2"`` in which ``"`` and
``\\`` are escaped with a backslash.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offmaps.errors import ImportFeaturesError

__all__ = ["OsmLayer", "parse_other_tags", "read_osm_layer"]

_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*=>\s*(?:"((?:[^"\\]|\\.)*)"|NULL)', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def parse_other_tags(text: str | None) -> dict[str, str]:
    """The tags of an ``other_tags`` value; malformed parts are skipped, never fatal."""
    if not text:
        return {}
    tags: dict[str, str] = {}
    for match in _PAIR.finditer(text):
        value = match.group(2)
        if value is None:
            continue
        tags[_ESCAPE.sub(r"\1", match.group(1))] = _ESCAPE.sub(r"\1", value)
    return tags


@dataclass(frozen=True)
class OsmLayer:
    """One layer of an OSM extract as read by GDAL.

    Attributes:
        geometries: WKB per feature (WGS84), ``None`` where GDAL could not build one.
        columns: the values of each column, by column name.
    """

    geometries: list[bytes | None]
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.geometries)

    def value(self, column: str, row: int) -> str | None:
        """The text of ``column`` at ``row``, ``None`` when empty or not a column."""
        values = self.columns.get(column)
        if values is None:
            return None
        value = values[row]
        return str(value) if value else None

    def tag(self, key: str, row: int) -> str | None:
        """The OSM tag ``key`` of ``row``, from its own column or from ``other_tags``."""
        if key in self.columns and key != "other_tags":
            return self.value(key, row)
        return parse_other_tags(self.value("other_tags", row)).get(key)


def read_osm_layer(path: Path, layer: str) -> OsmLayer:
    """Read one layer of an OSM extract (``.osm.pbf`` or ``.osm``).

    Raises:
        ImportFeaturesError: when the file is missing or GDAL cannot read it as OSM data.
    """
    if not path.is_file():
        raise ImportFeaturesError(f"{path}: no such OpenStreetMap extract")
    try:
        import pyogrio  # noqa: PLC0415 - optional: the server and render extras

        with warnings.catch_warnings():
            # GDAL's OSM driver warns about relations whose members are missing from an extract
            warnings.simplefilter("ignore", RuntimeWarning)
            meta, _, geometries, fields = pyogrio.raw.read(path, layer=layer)
    except ImportError:  # pragma: no cover - the extras install it
        raise ImportFeaturesError(
            "reading OpenStreetMap data needs pyogrio: pip install 'offmaps[server]'"
        ) from None
    except Exception as exc:  # noqa: BLE001 - GDAL raises many kinds; all mean "unreadable"
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ImportFeaturesError(
            f"{path}: not an OpenStreetMap extract GDAL can read ({first_line})"
        ) from None
    columns = {str(name): list(values) for name, values in zip(meta["fields"], fields, strict=True)}
    return OsmLayer(list(geometries) if geometries is not None else [], columns)
