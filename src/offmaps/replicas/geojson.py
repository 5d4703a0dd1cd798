"""Change sets, answers, downloads and conflicts in their GeoJSON form (RFC 7946).

The compact form of :mod:`offmaps.schemas.changeset` carries a row as wire values, the geometry
one more field (``geom``, hex ISO WKB in the layer's CRS). The GeoJSON form carries the same
row as a GeoJSON Feature in CRS84: ``id`` the global id, ``geometry`` a GeoJSON geometry (or
``null``), ``properties`` the other fields' wire values. Everything else (ids, kinds, versions,
vectors, clocks, attachments) is the same in both forms, so a GeoJSON client gets the same
checks and answers as the SDK. Both APIs (REST with ``application/geo+json``, GraphQL always)
convert here, once, with the layers' schemas of the replica's feature service (docs/sync.md).

In a change (what a device uploads):

- ``feature`` replaces ``values``: the row after an insert or update, a complete Feature.
- ``base`` replaces ``base_values``: for updates, the changed fields before the edit, and for
  deletes the row as it was deleted: a *partial* Feature, whose ``geometry`` member is there
  only when the geometry is among them (as in a merge patch).
- ``global_id`` may be left out when ``feature`` or ``base`` has the ``id``.

In answers and downloads, a row (:class:`~offmaps.schemas.changeset.ServerChange`) has
``feature`` instead of ``values``; a conflict's ``base``, ``client`` and ``server`` values are
(partial) Features.

A download by REST in the GeoJSON form is a GeoJSON text sequence (RFC 8142,
``application/geo+json-seq``): each record a JSON text after an RS byte (0x1E) and before a
line feed, an upsert the row's Feature itself with the record's other members beside ``id``,
``geometry`` and ``properties`` (RFC 7946 foreign members), so that a GeoJSON reader takes the
rows as features (:meth:`GeoJSONChanges.download_sequence`).

GeoJSON is CRS84: a ``crs`` member (the 2008 GeoJSON one) naming another CRS, on the change
set or on a Feature, is refused, as a ``Content-Crs`` header is by the REST route.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import shapely
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from offmaps.errors import InvalidChangeSetError, InvalidFeatureError
from offmaps.features.geojson import (
    check_crs84,
    geometry_to_geojson,
    parse_geometry,
    to_layer_crs,
)
from offmaps.features.model import LayerSchema
from offmaps.features.store import FeatureStore
from offmaps.features.wire import decode_wire_geometry, encode_wire_geometry
from offmaps.replicas.service import ConvertedChangeSet
from offmaps.schemas.changeset import (
    GEOMETRY_FIELD,
    MAX_CHANGES_PER_SET,
    Change,
    ChangeResult,
    ChangeSet,
    ChangeSetResult,
    DownloadEnd,
    ServerChange,
)
from offmaps.state.syncstate import Conflict

__all__ = [
    "GEOJSON_MEDIA_TYPE",
    "GEOJSON_SEQ_MEDIA_TYPE",
    "RECORD_SEPARATOR",
    "GeoJSONChange",
    "GeoJSONChangeResult",
    "GeoJSONChangeSet",
    "GeoJSONChangeSetResult",
    "GeoJSONChanges",
    "GeoJSONFeature",
    "GeoJSONServerChange",
    "change_set_error",
    "check_crs",
]

GEOJSON_MEDIA_TYPE = "application/geo+json"
"""The media type that asks the REST change-set routes for the GeoJSON form (RFC 7946)."""
GEOJSON_SEQ_MEDIA_TYPE = "application/geo+json-seq"
"""The media type of a download in the GeoJSON form: a GeoJSON text sequence (RFC 8142)."""
RECORD_SEPARATOR = b"\x1e"
"""What starts each text of a GeoJSON text sequence (RFC 7464's RS); a line feed ends it."""


def change_set_error(exc: ValidationError) -> InvalidChangeSetError:
    """The error for a change set that does not validate: where, and what is wrong."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return InvalidChangeSetError(f"not a change set: {where}: {first['msg']}"[:300])


def check_crs(value: object, where: str) -> None:
    """Refuse a CRS other than CRS84, as a ``crs`` member or a ``Content-Crs`` header names it.

    Raises:
        InvalidChangeSetError: another CRS (the detail names it and where it was given).
    """
    if isinstance(value, Mapping):  # {"type": "name", "properties": {"name": ...}}
        properties = value.get("properties")
        name = properties.get("name") if isinstance(properties, Mapping) else None
        value = name if isinstance(name, str) else value
    try:
        check_crs84(value, where)
    except InvalidFeatureError as exc:
        raise InvalidChangeSetError(str(exc)) from None


class GeoJSONChanges:
    """Converts between the compact and the GeoJSON forms for one feature service's layers.

    Args:
        layers: the layers and tables of the service, by name (their CRS and whether they have
            a geometry).
    """

    def __init__(self, layers: Iterable[LayerSchema]) -> None:
        self.layers = {schema.name: schema for schema in layers}

    @classmethod
    def of_store(cls, store: FeatureStore) -> GeoJSONChanges:
        """The converter for the layers of ``store`` as they are now."""
        return cls(store.list_layers())

    # --- rows ------------------------------------------------------------------------------

    def feature(
        self, layer: str, global_id: uuid.UUID | str, values: Mapping[str, Any], *, partial: bool
    ) -> dict[str, Any]:
        """Wire ``values`` of a row as a GeoJSON Feature; with ``partial``, ``geometry`` only
        when the values have one (else always, ``null`` for tables)."""
        properties = {k: v for k, v in values.items() if k != GEOMETRY_FIELD}
        feature: dict[str, Any] = {"type": "Feature", "id": str(global_id)}
        if GEOMETRY_FIELD in values or not partial:
            feature["geometry"] = self._geometry_out(layer, values.get(GEOMETRY_FIELD))
        feature["properties"] = properties
        return feature

    def values(
        self, layer: str, feature: object, *, partial: bool
    ) -> tuple[str | None, dict[str, Any]]:
        """A GeoJSON Feature of a row as wire values: its ``id`` (or ``None``) and its values.

        Raises:
            InvalidChangeSetError: not a Feature, a malformed geometry, a property named like
                the geometry field, or a geometry on a table.
        """
        what = "a partial GeoJSON Feature" if partial else "a GeoJSON Feature"
        if not isinstance(feature, Mapping):
            raise InvalidChangeSetError(f"a row must be {what} object")
        if feature.get("type") != "Feature":
            raise InvalidChangeSetError(f'a row must be {what} ("type": "Feature")')
        if "crs" in feature:
            check_crs(feature["crs"], 'a Feature\'s "crs"')
        raw_id = feature.get("id")
        if raw_id is not None and not isinstance(raw_id, str):
            raise InvalidChangeSetError("a Feature's id is its global id, a UUID string")
        properties = feature.get("properties") or {}
        if not isinstance(properties, Mapping):
            raise InvalidChangeSetError('"properties" must be an object or null')
        if GEOMETRY_FIELD in properties:
            raise InvalidChangeSetError(
                f"{GEOMETRY_FIELD!r} is the geometry: give it as the Feature's geometry"
            )
        values = {str(k): v for k, v in properties.items()}
        if "geometry" in feature:
            geometry = self._geometry_in(layer, feature["geometry"])
            schema = self.layers.get(layer)
            if geometry is not None or schema is None or not schema.is_table:
                values[GEOMETRY_FIELD] = geometry
        elif not partial:
            raise InvalidChangeSetError('a GeoJSON Feature has a "geometry" member (null or not)')
        return raw_id, values

    def _geometry_out(self, layer: str, value: object) -> dict[str, Any] | None:
        geometry = decode_wire_geometry(value)
        if geometry is None:
            return None
        schema = self.layers.get(layer)
        if schema is None:  # a layer the service lacks: its answer says so; CRS84 as given
            return dict(shapely.geometry.mapping(geometry))
        return geometry_to_geojson(geometry, schema)

    def _geometry_in(self, layer: str, value: object) -> str | None:
        if value is None:
            return None
        schema = self.layers.get(layer)
        if schema is not None and schema.is_table:
            raise InvalidChangeSetError(f"{layer} is a table: its rows have no geometry")
        try:
            geometry = parse_geometry(value)
        except InvalidFeatureError as exc:
            raise InvalidChangeSetError(f"layer {layer[:64]}: {exc}") from None
        if schema is not None:
            geometry = to_layer_crs(geometry, schema)
        return encode_wire_geometry(geometry)

    # --- uploads ---------------------------------------------------------------------------

    def change_set(self, document: object) -> ChangeSet:
        """A change set in the GeoJSON form as the compact :class:`ChangeSet` (a
        :class:`~offmaps.replicas.service.ConvertedChangeSet`: the rows its changes write come
        back in the sender's downloads).

        Raises:
            InvalidChangeSetError: anything malformed, as a compact change set would be.
        """
        if not isinstance(document, Mapping):
            raise InvalidChangeSetError("a change set is a JSON object")
        if "crs" in document:
            check_crs(document["crs"], 'the change set\'s "crs"')
        changes = document.get("changes")
        if not isinstance(changes, list):
            raise InvalidChangeSetError("not a change set: changes: a list of changes is needed")
        compact = {k: v for k, v in document.items() if k not in {"changes", "crs"}}
        compact["changes"] = [self._change(index, change) for index, change in enumerate(changes)]
        try:
            return ConvertedChangeSet.model_validate(compact)
        except ValidationError as exc:
            raise change_set_error(exc) from None

    def _change(self, index: int, change: object) -> dict[str, Any]:
        if not isinstance(change, Mapping):
            raise InvalidChangeSetError(f"not a change set: changes.{index}: not an object")
        for name in ("values", "base_values"):
            if name in change:
                raise InvalidChangeSetError(
                    f"changes.{index}: {name!r} is the compact form; the GeoJSON form has "
                    '"feature" and "base"'
                )
        layer = str(change.get("layer", ""))
        compact = {k: v for k, v in change.items() if k not in {"feature", "base"}}
        ids = []
        if change.get("global_id") is not None:
            ids.append(str(change["global_id"]))
        for member, target, partial in (
            ("feature", "values", False),
            ("base", "base_values", True),
        ):
            if change.get(member) is None:
                continue
            found, values = self.values(layer, change[member], partial=partial)
            compact[target] = values
            if found is not None:
                ids.append(found)
        if ids:
            try:
                parsed = {uuid.UUID(value) for value in ids}
            except ValueError:
                raise InvalidChangeSetError(
                    f"not a change set: changes.{index}: the global id is a UUID"
                ) from None
            if len(parsed) > 1:
                raise InvalidChangeSetError(
                    f"changes.{index}: the Features' ids and global_id name different rows"
                )
            compact["global_id"] = str(parsed.pop())
        return compact

    # --- answers and downloads -------------------------------------------------------------

    def server_change(self, change: ServerChange) -> dict[str, Any]:
        """A row as the server has it (an answer's or a download's) in the GeoJSON form."""
        document = change.model_dump(mode="json", exclude={"values"})
        if change.kind == "upsert":
            document["feature"] = self.feature(
                change.layer, change.global_id, change.values, partial=False
            )
        else:
            document["feature"] = None
        return document

    def download_record(self, change: ServerChange) -> dict[str, Any]:
        """A record of a download in the GeoJSON text sequence: for an upsert the row's Feature
        with the record's other members (``layer``, ``kind``, ``version``, ``version_vector``,
        ``attachments``) beside its own, for a delete the form's row (``feature`` null)."""
        if change.kind != "upsert":
            return self.server_change(change)
        record = self.feature(change.layer, change.global_id, change.values, partial=False)
        record.update(
            change.model_dump(
                mode="json", include={"layer", "kind", "version", "version_vector", "attachments"}
            )
        )
        return record

    def download_sequence(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        """A download's NDJSON (:meth:`~offmaps.replicas.service.ReplicaService.download`) as a
        GeoJSON text sequence (RFC 8142): the header as it is, each row as
        :meth:`download_record` makes it, and a new end record whose ``count`` counts the rows
        and whose ``sha256`` hashes every byte before it (RS bytes and line feeds included), as
        the compact end record does for its stream.

        ``lines`` are chunks of whole lines; the texts come in chunks likewise.
        """
        digest = hashlib.sha256()
        count = 0
        for chunk in lines:
            texts: list[bytes] = []
            for line in chunk.splitlines():
                record = json.loads(line) if line.strip() else None
                if not isinstance(record, dict) or record.get("type") == "end":
                    continue  # the compact end record: this stream has its own
                if record.get("type") == "change":
                    record = self.download_record(ServerChange.model_validate(record))
                    count += 1
                text = _json_text(record)
                digest.update(text)
                texts.append(text)
            if texts:
                yield b"".join(texts)
        yield _json_text(DownloadEnd(count=count, sha256=digest.hexdigest()).model_dump())

    def change_result(self, result: ChangeResult) -> dict[str, Any]:
        """One change's answer in the GeoJSON form."""
        document = result.model_dump(mode="json", exclude={"row"})
        document["row"] = None if result.row is None else self.server_change(result.row)
        return document

    def change_set_result(self, result: ChangeSetResult) -> dict[str, Any]:
        """A change set's answers in the GeoJSON form."""
        document = result.model_dump(mode="json", exclude={"results"})
        document["results"] = [self.change_result(r) for r in result.results]
        return document

    def conflict(self, conflict: Conflict) -> dict[str, Any]:
        """A conflict of the review queue with its base, client and server rows as Features
        (partial ones for the base and the client's changed fields)."""
        document = conflict.document()
        gid = conflict.global_id
        document["base"] = self.feature(conflict.layer, gid, conflict.base, partial=True)
        document["client"] = self.feature(conflict.layer, gid, conflict.client, partial=True)
        document["server"] = (
            None
            if conflict.server is None
            else self.feature(conflict.layer, gid, conflict.server, partial=True)
        )
        return document

    def resolution_values(
        self,
        layer: str,
        properties: Mapping[str, Any] | None,
        geometry: object,
        *,
        has_geometry: bool,
    ) -> dict[str, Any]:
        """The values of a ``merge`` resolution given as properties and a GeoJSON geometry.

        Raises:
            InvalidChangeSetError: a malformed geometry, or a property named like the geometry.
        """
        feature: dict[str, Any] = {"type": "Feature", "properties": dict(properties or {})}
        if has_geometry:
            feature["geometry"] = geometry
        return self.values(layer, feature, partial=True)[1]


def _json_text(record: Mapping[str, Any]) -> bytes:
    """One text of a JSON text sequence (RFC 7464): RS, the JSON, a line feed."""
    body = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return RECORD_SEPARATOR + body.encode() + b"\n"


# --- the form's documents, for the OpenAPI document ----------------------------------------------


class GeoJSONFeature(BaseModel):
    """A row as a GeoJSON Feature (RFC 7946, CRS84): ``id`` its global id, ``properties`` its
    fields' wire values. A partial one (a change's ``base``, a merge's values) has
    ``geometry`` only when the geometry is among its values."""

    model_config = ConfigDict(extra="allow", title="GeoJSONFeature")

    type: Literal["Feature"]
    id: uuid.UUID | None = None
    """The global id (may be left out of an upload when the change has ``global_id``)."""
    geometry: dict[str, Any] | None = None
    """A GeoJSON geometry object in CRS84, or ``null``."""
    properties: dict[str, Any] | None = None
    """The other fields' wire values."""


def _form_of(
    compact: type[BaseModel], name: str, drop: set[str], add: Mapping[str, Any]
) -> type[BaseModel]:
    """A model of the GeoJSON form: ``compact``'s fields but ``drop``, and ``add``'s."""
    fields: dict[str, Any] = {
        field: (info.annotation, info)
        for field, info in compact.model_fields.items()
        if field not in drop
    }
    fields.update(add)
    config = ConfigDict(extra="forbid", title=name, use_attribute_docstrings=True)
    model: type[BaseModel] = create_model(name, __config__=config, **fields)
    model.__doc__ = f"{compact.__name__} in the GeoJSON form (docs/sync.md#the-geojson-form)."
    return model


_FEATURE = (GeoJSONFeature | None, Field(default=None))
GeoJSONChange = _form_of(
    Change,
    "GeoJSONChange",
    {"global_id", "values", "base_values"},
    {
        "global_id": (
            uuid.UUID | None,
            Field(default=None, description="The row (may be left out when a Feature has it)"),
        ),
        "feature": (
            GeoJSONFeature | None,
            Field(default=None, description="Inserts and updates: the row after the edit"),
        ),
        "base": (
            GeoJSONFeature | None,
            Field(
                default=None,
                description="Updates: the changed fields before the edit; deletes: the row "
                "as it was deleted (a partial Feature)",
            ),
        ),
    },
)
"""A change in the GeoJSON form (for the OpenAPI document; :meth:`GeoJSONChanges.change_set`
reads it)."""
GeoJSONChangeSet = _form_of(
    ChangeSet,
    "GeoJSONChangeSet",
    {"changes"},
    {
        "changes": (
            list[GeoJSONChange],  # type: ignore[valid-type]
            Field(max_length=MAX_CHANGES_PER_SET),
        )
    },
)
"""A change set in the GeoJSON form (``Content-Type: application/geo+json``)."""
GeoJSONServerChange = _form_of(
    ServerChange, "GeoJSONServerChange", {"values"}, {"feature": _FEATURE}
)
"""A row as the server has it, in the GeoJSON form (``feature`` null for a delete)."""
GeoJSONChangeResult = _form_of(
    ChangeResult,
    "GeoJSONChangeResult",
    {"row"},
    {"row": (GeoJSONServerChange | None, Field(default=None))},
)
"""One change's answer in the GeoJSON form."""
GeoJSONChangeSetResult = _form_of(
    ChangeSetResult,
    "GeoJSONChangeSetResult",
    {"results"},
    {"results": (list[GeoJSONChangeResult], ...)},  # type: ignore[valid-type]
)
"""A change set's answers in the GeoJSON form."""
