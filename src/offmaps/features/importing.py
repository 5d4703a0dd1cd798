"""Import features from files (GeoPackage, GeoJSON, Shapefile, FlatGeobuf...) with pyogrio.

GDAL reads the file; each source layer becomes a layer (or a table, without geometry) of a
feature store, its fields mapped to offmaps field types, its rows inserted in batches, each batch
one transaction. Names that are not valid offmaps names are made valid (``Road Name`` →
``Road_Name``); reserved ones get a trailing ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from offmaps.errors import ImportFeaturesError, InvalidFeatureError
from offmaps.features.filters import FieldType
from offmaps.features.model import RESERVED_COLUMNS, Field, GeometryType, Insert, LayerSchema
from offmaps.features.store import FeatureStore

__all__ = ["ImportResult", "import_features", "list_source_layers"]

BATCH_SIZE = 1000
"""Rows per transaction."""

Progress = Callable[[int, int], None]
"""Called with (rows done, rows in all)."""

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_GEOMETRY_TYPES = {g.value.lower(): g for g in GeometryType}


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import made: the layer's schema and how many rows it holds."""

    schema: LayerSchema
    rows: int


def _pyogrio() -> Any:
    try:
        import pyogrio  # noqa: PLC0415 - optional: the server extra
    except ImportError:  # pragma: no cover - the server extra installs it
        raise ImportFeaturesError(
            "importing needs pyogrio: pip install 'offmaps[server]'"
        ) from None
    return pyogrio


def list_source_layers(path: Path) -> list[str]:
    """The layer names of a file GDAL can read."""
    pyogrio = _pyogrio()
    if not path.exists():
        raise ImportFeaturesError(f"{path}: no such file")
    try:
        return [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001 - GDAL raises many kinds; all mean "unreadable"
        raise ImportFeaturesError(
            f"{path}: not a file GDAL can read ({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def valid_name(name: str) -> str:
    """``name`` made into a valid layer or field name."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name.strip())[:63] or "field"
    if not cleaned[0].isalpha():
        cleaned = ("f_" + cleaned)[:63]
    if cleaned.lower() in RESERVED_COLUMNS:
        cleaned += "_"
    return cleaned


def _field_type(dtype: str) -> FieldType:
    kind = dtype.lower()
    if kind in ("bool", "boolean"):
        return FieldType.BOOLEAN
    if kind.startswith(("int", "uint")):
        return FieldType.INTEGER
    if kind.startswith("float"):
        return FieldType.REAL
    if kind.startswith("datetime64[d]") or kind == "date":
        return FieldType.DATE
    if kind.startswith("datetime"):
        return FieldType.DATETIME
    return FieldType.TEXT


def import_features(
    store: FeatureStore,
    path: Path,
    *,
    layer: str | None = None,
    name: str | None = None,
    title: str | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Import one layer of ``path`` into ``store`` as a new layer called ``name``.

    Args:
        store: the feature service to import into.
        path: any file GDAL reads (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, ...).
        layer: the source layer; required when the file has several.
        name: the new layer's name (default: the source layer's, made valid).
        title: the new layer's title (default: the source layer's name).
        progress: called after each batch.

    Raises:
        ImportFeaturesError: the file cannot be read, has several layers and none was chosen,
            or has a geometry type a layer cannot hold. The new layer is dropped again when any
            row fails, so a failed import leaves nothing behind.
    """
    pyogrio = _pyogrio()
    layers = list_source_layers(path)
    if layer is None:
        if len(layers) != 1:
            listed = ", ".join(layers[:20])
            msg = f"{path}: has {len(layers)} layers ({listed}); choose one with --layer"
            raise ImportFeaturesError(msg)
        layer = layers[0]
    elif layer not in layers:
        raise ImportFeaturesError(f"{path}: has no layer {layer!r} (it has {', '.join(layers)})")
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:  # noqa: BLE001 - GDAL raises many kinds
        raise ImportFeaturesError(f"{path}: {_first_line(exc)}") from None
    schema, renames = _schema(info, name or valid_name(layer), title or layer)
    if _is_unknown(info):  # GDAL could not say: e.g. GeoJSON mixing Polygon and MultiPolygon
        schema = replace(schema, geometry_type=_scan_geometry_type(pyogrio, path, layer))
    total = int(info.get("features") or 0)
    store.create_layer(schema)
    done = 0
    try:
        for batch in _batches(pyogrio, path, layer, schema, renames):
            store.apply_edits(batch)
            done += len(batch)
            if progress is not None:
                progress(done, max(total, done))
    except InvalidFeatureError as exc:
        store.drop_layer(schema.name)
        msg = f"{path}: row {done + 1}-{done + BATCH_SIZE}: {exc}"
        raise ImportFeaturesError(msg) from None
    except BaseException:
        store.drop_layer(schema.name)
        raise
    return ImportResult(schema, done)


def _schema(info: dict[str, Any], name: str, title: str) -> tuple[LayerSchema, dict[str, str]]:
    geometry_type: GeometryType | None = None
    raw_type = _raw_type(info)
    if raw_type and raw_type.lower() not in ("none", "unknown"):
        try:
            geometry_type = _GEOMETRY_TYPES[raw_type.lower()]
        except KeyError:
            raise ImportFeaturesError(f"geometry type {raw_type!r} cannot be imported") from None
    srid = 4326
    crs = info.get("crs")
    if crs:
        from pyproj import CRS  # noqa: PLC0415

        epsg = CRS.from_user_input(crs).to_epsg()
        if epsg is None:
            raise ImportFeaturesError(f"the layer's CRS has no EPSG code: {str(crs)[:80]}")
        srid = epsg
    fields: list[Field] = []
    renames: dict[str, str] = {}
    seen: set[str] = set()
    for source, dtype in zip(info["fields"], info["dtypes"], strict=True):
        target = valid_name(str(source))
        while target.lower() in seen:
            target = (target[:60] + "_2") if not target.endswith("_2") else target + "2"
        seen.add(target.lower())
        renames[str(source)] = target
        fields.append(Field(target, _field_type(str(dtype))))
    return LayerSchema(name, tuple(fields), geometry_type, srid, title), renames


def _raw_type(info: dict[str, Any]) -> str:
    return str(info.get("geometry_type") or "").replace(" Z", "").replace(" M", "")


def _is_unknown(info: dict[str, Any]) -> bool:
    return _raw_type(info).lower() == "unknown"


_MULTI_OF = {"Point": "MultiPoint", "LineString": "MultiLineString", "Polygon": "MultiPolygon"}


def _scan_geometry_type(pyogrio: Any, path: Path, layer: str) -> GeometryType | None:
    """The one geometry type a layer's rows fit: single and multi parts of one kind give the
    multi type; rows of different kinds cannot share a layer."""
    kinds: set[str] = set()
    skip = 0
    while True:
        try:
            _, _, geometries, _ = pyogrio.raw.read(
                path, layer=layer, columns=[], skip_features=skip, max_features=BATCH_SIZE * 10
            )
        except Exception as exc:  # noqa: BLE001 - GDAL raises many kinds
            raise ImportFeaturesError(f"{path}: {_first_line(exc)}") from None
        if geometries is None or len(geometries) == 0:
            break
        kinds.update(g.geom_type for g in shapely.from_wkb(geometries) if g is not None)
        skip += len(geometries)
    multi = {_MULTI_OF.get(kind, kind) for kind in kinds}
    if not kinds:
        return None
    if len(kinds) == 1:
        (kind,) = kinds
    elif len(multi) == 1:
        (kind,) = multi
    else:
        listed = " and ".join(sorted(kinds))
        msg = (
            f"{path}: layer {layer!r} mixes {listed} geometries, which one layer cannot hold; "
            "split it first (e.g. ogr2ogr -where \"OGR_GEOMETRY='POINT'\")"
        )
        raise ImportFeaturesError(msg)
    try:
        return GeometryType(kind)
    except ValueError:
        raise ImportFeaturesError(f"{path}: geometry type {kind!r} cannot be imported") from None


def _batches(
    pyogrio: Any, path: Path, layer: str, schema: LayerSchema, renames: dict[str, str]
) -> Iterator[list[Insert]]:
    skip = 0
    while True:
        try:
            meta, _, geometries, columns = pyogrio.raw.read(
                path, layer=layer, skip_features=skip, max_features=BATCH_SIZE
            )
        except Exception as exc:  # noqa: BLE001 - GDAL raises many kinds
            raise ImportFeaturesError(f"{path}: {_first_line(exc)}") from None
        count = (len(columns[0]) if len(columns) else 0) if geometries is None else len(geometries)
        if count == 0:
            return
        shapes = shapely.from_wkb(geometries) if geometries is not None else [None] * count
        names = [renames[str(f)] for f in meta["fields"]]
        types = schema.field_types()
        batch: list[Insert] = []
        for row in range(count):
            properties = {
                names[i]: _value(columns[i][row], types[names[i]]) for i in range(len(names))
            }
            geometry = shapes[row]
            if geometry is not None and schema.geometry_type is not None:
                geometry = _fit(geometry, schema.geometry_type)
            batch.append(Insert(schema.name, properties, geometry))
        yield batch
        skip += count
        if count < BATCH_SIZE:
            return


def _fit(geometry: Any, target: GeometryType) -> Any:
    """Drop Z, and promote single to multi parts when the layer is multi."""
    if shapely.has_z(geometry):
        geometry = shapely.force_2d(geometry)
    if target.value.startswith("Multi") and not geometry.geom_type.startswith("Multi"):
        multi: Any = {
            "Point": shapely.MultiPoint,
            "LineString": shapely.MultiLineString,
            "Polygon": shapely.MultiPolygon,
        }[geometry.geom_type]
        geometry = multi([geometry])
    return geometry


def _value(value: Any, kind: FieldType) -> object:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.datetime64):  # pragma: no cover - item() converts these
        value = value.astype(datetime)
    if kind is FieldType.DATETIME:
        if isinstance(value, int):  # numpy datetime64[ns].item() gives ns since the epoch
            return datetime.fromtimestamp(value / 1e9, tz=UTC)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if kind is FieldType.DATE and isinstance(value, datetime):
        return value.date()
    if kind is FieldType.DATE and isinstance(value, str):
        return date.fromisoformat(value[:10])
    if kind is FieldType.INTEGER and isinstance(value, bool):
        return int(value)
    if kind is FieldType.REAL and isinstance(value, int):
        return float(value)
    return value
