"""The feature store protocol: one feature service's layers, tables, rows, journal, attachments.

Backends: :class:`~offmaps.features.geopackage.GeoPackageStore` (the embedded default, one
GeoPackage file per service) and :class:`~offmaps.features.postgis.PostGISStore` (one PostgreSQL
schema per service). Both pass the same contract suite (``tests/features/test_store_contract.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable
from uuid import UUID

from offmaps.features.filters import FieldType
from offmaps.features.model import (
    Attachment,
    Edit,
    Feature,
    FeaturePage,
    FeatureQuery,
    Field,
    JournalEntry,
    LayerSchema,
    Relationship,
)
from offmaps.features.temporal import TimeInterval
from offmaps.types import BBox

__all__ = ["MAX_PAGE_SIZE", "FeatureStore", "fields_from_stored", "fields_json"]

MAX_PAGE_SIZE = 10_000


def fields_json(fields: Sequence[Field]) -> str:
    """A layer's fields as both backends keep them in ``offmaps_layers.fields``."""
    return json.dumps(
        [
            {
                "name": f.name,
                "type": f.type.value,
                "nullable": f.nullable,
                "alias": f.alias,
                "max_length": f.max_length,
            }
            for f in fields
        ]
    )


def fields_from_stored(stored: Sequence[Mapping[str, Any]]) -> tuple[Field, ...]:
    """The fields of an ``offmaps_layers.fields`` value, parsed from JSON."""
    return tuple(
        Field(f["name"], FieldType(f["type"]), f["nullable"], f["alias"], f["max_length"])
        for f in stored
    )


"""The largest ``FeatureQuery.limit`` a store accepts."""


@runtime_checkable
class FeatureStore(Protocol):
    """One feature service: layers and tables, their rows, a change journal and attachments.

    Every method is safe to call from several threads. Writes are serialised; every successful
    write transaction takes the next generation and journals each change with it.
    """

    # --- schema ----------------------------------------------------------------------------

    def list_layers(self) -> tuple[LayerSchema, ...]:
        """Every layer and table, in creation order."""
        ...

    def get_layer(self, name: str) -> LayerSchema:
        """The layer or table called ``name``; raises ``LayerNotFoundError``."""
        ...

    def create_layer(self, schema: LayerSchema) -> None:
        """Create an empty layer; raises ``LayerExistsError``, ``InvalidLayerSchemaError``."""
        ...

    def drop_layer(self, name: str) -> None:
        """Delete a layer, its rows, journal entries and attachment records."""
        ...

    def add_field(self, layer: str, field: Field) -> None:
        """Add a nullable field to a layer or table; existing rows get null.

        The field is recorded in the layer's schema (:meth:`get_layer` shows it last). A schema
        change, not an edit: nothing is journaled and the generation does not change.

        Raises:
            InvalidLayerSchemaError: the field is not nullable, its name is malformed, reserved
                or taken (in any case), or the layer has the most fields allowed already.
            LayerNotFoundError: no such layer.
        """
        ...

    def add_relationship(self, relationship: Relationship) -> None:
        """Record a 1:N relationship between two existing layers/tables and fields."""
        ...

    def list_relationships(self) -> tuple[Relationship, ...]:
        """Every relationship, in creation order."""
        ...

    # --- rows ------------------------------------------------------------------------------

    def apply_edits(
        self, edits: Sequence[Edit], *, read_back: bool = True
    ) -> tuple[Feature | None, ...]:
        """Apply edits atomically, in order, as one transaction with one new generation.

        Returns, per edit, the row as stored after it (``None`` for deletes); with
        ``read_back=False``, nothing (an empty tuple), which lets a store skip reading rows
        back (sync, which knows what it wrote, asks for that). If any edit fails
        (``InvalidFeatureError``, ``FeatureNotFoundError``, ``VersionConflictError``,
        ``LayerNotFoundError``), none is applied and the generation does not change.
        """
        ...

    def get_feature(self, layer: str, global_id: UUID) -> Feature:
        """One row; raises ``FeatureNotFoundError``."""
        ...

    def row_versions(self, layer: str, global_ids: Sequence[UUID]) -> dict[str, int]:
        """The version of each of these rows that exists, by the text of its global id (what
        sync needs to decide most changes, without reading the rows)."""
        ...

    def query(self, layer: str, query: FeatureQuery) -> FeaturePage:
        """A page of rows matching ``query``; raises ``InvalidFilterError`` for bad filters."""
        ...

    def iter_features(self, layer: str, query: FeatureQuery | None = None) -> Iterator[Feature]:
        """Every row matching ``query`` (its limit and offset are ignored), streamed."""
        ...

    def extent(self, layer: str) -> BBox | None:
        """The envelope of the layer's geometries in its CRS, or ``None`` when it has none."""
        ...

    def time_extent(self, layer: str) -> TimeInterval | None:
        """The first and the last value of the layer's primary temporal property
        (:attr:`~offmaps.features.model.LayerSchema.temporal_field`), or ``None`` when it has
        none or no row has a value. One aggregate query over the column."""
        ...

    # --- journal ---------------------------------------------------------------------------

    def generation(self) -> int:
        """The generation of the last committed write (0 for a new store)."""
        ...

    def iter_changes(
        self, since: int = 0, *, layers: Sequence[str] | None = None
    ) -> Iterator[JournalEntry]:
        """Journal entries with a generation ``> since``, oldest first."""
        ...

    def last_change(self, layer: str, global_id: UUID) -> JournalEntry | None:
        """The newest insert, update or delete journaled for a row (attachment changes aside),
        or ``None`` when the journal never saw it (rows copied in unjournaled, unknown ids).

        A deleted row's entry has kind ``delete`` and the version it had when deleted. Raises
        ``LayerNotFoundError`` for an unknown layer.
        """
        ...

    # --- attachments -----------------------------------------------------------------------

    def add_attachment(
        self,
        layer: str,
        global_id: UUID,
        *,
        name: str,
        content_type: str,
        size: int,
        sha256: str,
        attachment_id: UUID | None = None,
    ) -> Attachment:
        """Record an attachment whose bytes are already in the blob store under ``sha256``."""
        ...

    def list_attachments(self, layer: str, global_id: UUID) -> tuple[Attachment, ...]:
        """The attachments of a row, oldest first; raises ``FeatureNotFoundError``."""
        ...

    def attachments_of(
        self, layer: str, global_ids: Sequence[UUID]
    ) -> dict[UUID, tuple[Attachment, ...]]:
        """The attachments of many rows in one query, oldest first, by row: rows with none,
        or that do not exist, are not keys. Raises ``LayerNotFoundError``."""
        ...

    def get_attachment(self, layer: str, attachment_id: UUID) -> Attachment:
        """One attachment; raises ``AttachmentNotFoundError``."""
        ...

    def delete_attachment(self, layer: str, attachment_id: UUID) -> None:
        """Remove an attachment's record (its blob may be shared and stays)."""
        ...

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release connections. Closing twice is fine."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
