"""Values of the feature store: layer schemas, features, edits, journal entries, attachments.

Frozen dataclasses, shared by every backend. Geometries are shapely geometries in the layer's CRS
(``srid``); transforming to and from the wire CRS (CRS84 for OGC API Features) is the edge's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from offmaps.features.filters import FieldType
from offmaps.features.temporal import TimeInterval
from offmaps.types import BBox

# shapely (and numpy under it) is imported where geometries are handled, not with the module: it
# takes ~0.1-0.2 s, which reading a package's outbox does not need (docs/cli.md, "Start-up")
if TYPE_CHECKING:  # annotations of the frozen dataclasses below (never evaluated at run time)
    from shapely.geometry.base import BaseGeometry

__all__ = [
    "RESERVED_COLUMNS",
    "Attachment",
    "ChangeKind",
    "Delete",
    "Edit",
    "Feature",
    "FeaturePage",
    "FeatureQuery",
    "Field",
    "GeometryType",
    "Insert",
    "JournalEntry",
    "LayerSchema",
    "Relationship",
    "Update",
]

RESERVED_COLUMNS = frozenset({"fid", "geom", "globalid", "row_version"})
"""Column names the stores use themselves; a layer's fields may not use them (any case)."""


class GeometryType(StrEnum):
    """The geometry type of a feature layer. Tables have none."""

    POINT = "Point"
    LINESTRING = "LineString"
    POLYGON = "Polygon"
    MULTIPOINT = "MultiPoint"
    MULTILINESTRING = "MultiLineString"
    MULTIPOLYGON = "MultiPolygon"


@dataclass(frozen=True, slots=True)
class Field:
    """One attribute field of a layer or table.

    Attributes:
        name: the column name: letters, digits and ``_``, starting with a letter, at most 63
            characters, not one of :data:`RESERVED_COLUMNS`.
        type: the value type.
        nullable: whether the value may be missing.
        alias: a human label, for forms.
        max_length: for text fields, the longest value accepted, when limited.
    """

    name: str
    type: FieldType
    nullable: bool = True
    alias: str | None = None
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class LayerSchema:
    """A feature layer (with geometry) or a non-spatial table.

    Attributes:
        name: the layer's table name (same rules as field names).
        fields: the attribute fields, in order.
        geometry_type: the geometry type, or ``None`` for a table.
        srid: the EPSG code of the geometry CRS.
        title: a human title.
    """

    name: str
    fields: tuple[Field, ...]
    geometry_type: GeometryType | None = None
    srid: int = 4326
    title: str | None = None

    @property
    def is_table(self) -> bool:
        """Whether this is a non-spatial table."""
        return self.geometry_type is None

    @property
    def temporal_field(self) -> Field | None:
        """The layer's primary temporal property: its only date or date-time field.

        What the ``datetime`` parameter of OGC API - Features filters on (see
        :attr:`FeatureQuery.time`). A layer with no such field, or with several, has none:
        which of several would be meant cannot be told from the schema (docs/features.md).
        """
        temporal = [f for f in self.fields if f.type in (FieldType.DATE, FieldType.DATETIME)]
        return temporal[0] if len(temporal) == 1 else None

    def field_types(self) -> dict[str, FieldType]:
        """The fields' types by name, as :func:`~offmaps.features.compile_filter` takes them."""
        return {f.name: f.type for f in self.fields}


@dataclass(frozen=True, slots=True)
class Relationship:
    """A 1:N relationship: rows of ``destination`` whose ``destination_key`` equals the
    ``origin_key`` of a row of ``origin`` belong to it (e.g. inspections of a hydrant)."""

    name: str
    origin: str
    origin_key: str
    destination: str
    destination_key: str


@dataclass(frozen=True, slots=True)
class Feature:
    """A stored feature or table row.

    Attributes:
        global_id: the stable id, the same on every replica.
        version: 1 when inserted (or as the insert says: :attr:`Insert.version`), plus one
            on every update.
        properties: the attribute values by field name (every field of the layer).
        geometry: the geometry in the layer's CRS, or ``None`` (tables, null geometry).
    """

    global_id: UUID
    version: int
    properties: Mapping[str, object]
    geometry: BaseGeometry | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    """Add a row. ``global_id`` is generated when not given (replicas bring their own).

    ``checked=True`` says the properties and geometry come from
    :func:`~offmaps.features.wire.wire_to_edit_values` (or ``check_properties`` and
    ``normalise_geometry``) already, so a store need not check them again.

    ``version`` is the row's version: 1 for a new row. A row brought back under the global id
    of a deleted one (sync, when a device's update wins over the delete) goes on from the
    version it was deleted at: the versions of a global id only grow, which replicas rely on.
    """

    layer: str
    properties: Mapping[str, object]
    geometry: BaseGeometry | None = None
    global_id: UUID | None = None
    checked: bool = False
    version: int = 1


@dataclass(frozen=True, slots=True)
class Update:
    """Change a row: the given properties (others keep their value) and, when
    ``set_geometry``, the geometry. With ``base_version``, fails on a newer row.

    ``replace=True`` sets every field not given to null (an OGC API ``PUT``).
    """

    layer: str
    global_id: UUID
    properties: Mapping[str, object] = field(default_factory=dict)
    geometry: BaseGeometry | None = None
    set_geometry: bool = False
    base_version: int | None = None
    replace: bool = False
    checked: bool = False
    """As :attr:`Insert.checked`."""


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove a row (and its attachments' records). With ``base_version``, fails on a newer row."""

    layer: str
    global_id: UUID
    base_version: int | None = None


Edit = Insert | Update | Delete
"""One edit of :meth:`~offmaps.features.store.FeatureStore.apply_edits`."""


class ChangeKind(StrEnum):
    """What a journal entry records."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    ATTACHMENT_ADD = "attachment_add"
    ATTACHMENT_DELETE = "attachment_delete"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One change in the store's journal.

    Attributes:
        generation: the store generation of the transaction that made the change. Generations
            only grow, and a reader that saw generation ``g`` sees every change with a
            generation ``<= g`` (commits are serialised on the generation counter).
        layer: the layer changed.
        global_id: the row changed (for attachments, the row they belong to).
        kind: what happened.
        version: the row's version after the change (for deletes: the version deleted).
        changed_at: when, in UTC.
        attachment_id: for attachment changes, the attachment.
    """

    generation: int
    layer: str
    global_id: UUID
    kind: ChangeKind
    version: int
    changed_at: datetime
    attachment_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to a row; its bytes live in a blob store under ``sha256``."""

    attachment_id: UUID
    layer: str
    global_id: UUID
    name: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FeatureQuery:
    """Which rows to read, and which page of them.

    Attributes:
        bbox: only features whose geometry's envelope intersects this box (layer CRS).
        filters: CQL2 text filters, all of which must hold (e.g. the layer's definition
            expression and the request's ``filter``).
        global_ids: only these rows.
        time: only rows whose primary temporal property
            (:attr:`LayerSchema.temporal_field`) intersects this interval; rows where it is
            null never match. On a layer without one it selects nothing out: OGC API -
            Features Part 1 (``/req/core/fc-time-response`` C) has ``datetime`` match every
            feature that has no temporal geometry.
        limit: at most this many rows.
        offset: skip this many rows first. Rows come in a stable order (insertion order).
    """

    bbox: BBox | None = None
    filters: tuple[str, ...] = ()
    global_ids: tuple[UUID, ...] | None = None
    limit: int = 10
    offset: int = 0
    time: TimeInterval | None = None


@dataclass(frozen=True, slots=True)
class FeaturePage:
    """One page of a query's rows and how many rows match in all."""

    features: tuple[Feature, ...]
    number_matched: int
