"""Offline editing: one layer or table of an opened package, edited under the web map's rules.

The web map a package was made from says what may be edited (ArcGIS ``capabilities`` and field
editability): whether features may be added, changed or deleted, which fields edits may set, and
whether attachments are edited. Offline there is no server to refuse an edit, so
:class:`OfflineFeatureTable` enforces those rules itself, raising
:class:`~offmaps.errors.EditNotAllowedError` before anything is written (ArcGIS
``ServiceFeatureTable.canAdd``/``canUpdate``/``canDelete`` and ``FeatureTable.isEditable``).

The rules:

- ``add_feature`` needs ``editing.create``, ``update_feature`` needs ``editing.update``,
  ``delete_feature`` needs ``editing.delete``.
- When ``editing.editable_fields`` is not ``None``, an add or update may name only those fields
  (compared without regard to case). An add leaves the others null; naming one, even with a null
  value, is refused. The geometry is not a field here: it may be set whenever the add or update
  is allowed.
- Adding and deleting attachments need ``attachments_enabled`` and ``editing.update`` (in ArcGIS,
  attachment edits are updates of their feature). Reading rows and attachments is always allowed.

Values and geometries are then checked by the store as for any edit
(:class:`~offmaps.errors.InvalidFeatureError`). Every edit goes through
:meth:`~offmaps.features.geopackage.GeoPackageStore.apply_edits`, so it is journaled and takes a
generation, and sync finds it. Attachment bytes are written to the package's ``attachments/``
folder as content-addressed blobs (``attachments/ab/cd/<sha256>``, see docs/offline-package.md)
before their record, so a record never names missing bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self
from uuid import UUID

from shapely.geometry.base import BaseGeometry

from offmaps.errors import (
    EditNotAllowedError,
    FeatureStoreError,
    InvalidWebMapError,
    PackageError,
)
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import (
    Attachment,
    Delete,
    Feature,
    FeatureQuery,
    Insert,
    LayerSchema,
    Update,
)
from offmaps.offline.package import ATTACHMENTS_FOLDER, MobileMapPackage
from offmaps.schemas import EditingCapabilities, FeatureLayerRef, TableRef, parse_webmap
from offmaps.storage import LocalBlobStore

__all__ = ["ATTACHMENTS_FOLDER", "OfflineFeatureTable", "open_feature_table"]


class OfflineFeatureTable:
    """One feature layer or table of an offline package, edited under the web map's rules
    (ArcGIS ``GeodatabaseFeatureTable``); see the module docs for the rules.

    :func:`open_feature_table` makes one from a loaded package. The table owns ``store``: closing
    the table closes it.

    Args:
        store: the replica GeoPackage holding the layer.
        layer: the layer or table name inside the GeoPackage.
        editing: the edits the web map allows on the layer.
        attachments_enabled: whether the web map shows (and, with updates, edits) attachments.
        attachments_dir: the folder of attachment blobs (the package's ``attachments/``).
        title: the layer's title, for messages and forms; the layer name when not given.

    Raises:
        LayerNotFoundError: ``store`` has no layer ``layer``.
    """

    def __init__(
        self,
        store: GeoPackageStore,
        layer: str,
        *,
        editing: EditingCapabilities,
        attachments_enabled: bool,
        attachments_dir: Path,
        title: str | None = None,
    ) -> None:
        store.get_layer(layer)
        self.store = store
        self.layer = layer
        self.editing = editing
        self.attachments_enabled = attachments_enabled
        self.attachments_dir = Path(attachments_dir)
        self.title = title or layer
        self._editable = (
            None
            if editing.editable_fields is None
            else frozenset(name.casefold() for name in editing.editable_fields)
        )

    def __repr__(self) -> str:
        return f"OfflineFeatureTable({self.layer!r}, store={self.store!r})"

    # --- reading ---------------------------------------------------------------------------

    @property
    def schema(self) -> LayerSchema:
        """The layer's fields, geometry type and CRS."""
        return self.store.get_layer(self.layer)

    def query(self, query: FeatureQuery | None = None) -> Iterator[Feature]:
        """Every row matching ``query`` (its limit and offset are ignored), streamed."""
        return self.store.iter_features(self.layer, query)

    def get_feature(self, global_id: UUID) -> Feature:
        """One row; raises ``FeatureNotFoundError``."""
        return self.store.get_feature(self.layer, global_id)

    def attachments(self, global_id: UUID) -> tuple[Attachment, ...]:
        """The attachments of a row, oldest first; raises ``FeatureNotFoundError``."""
        return self.store.list_attachments(self.layer, global_id)

    # --- editing ---------------------------------------------------------------------------

    def add_feature(
        self, properties: Mapping[str, object], geometry: BaseGeometry | None = None
    ) -> Feature:
        """Add a feature or row; fields not given are null. Returns it as stored.

        Raises:
            EditNotAllowedError: the map allows no adds here, or ``properties`` names a field
                edits may not set.
            InvalidFeatureError: a value or the geometry does not fit the layer.
        """
        self._require(self.editing.create, "add features to")
        self._check_fields(properties)
        return _stored(self.store.apply_edits([Insert(self.layer, dict(properties), geometry)]))

    def update_feature(
        self,
        global_id: UUID,
        properties: Mapping[str, object] | None = None,
        *,
        geometry: BaseGeometry | None = None,
        set_geometry: bool = False,
    ) -> Feature:
        """Change a row: the given properties (others keep their value) and the geometry when
        one is given, or when ``set_geometry`` (``geometry=None, set_geometry=True`` clears it).
        Returns the row as stored, its version one higher.

        Raises:
            EditNotAllowedError: the map allows no updates here, or ``properties`` names a field
                edits may not set.
            FeatureNotFoundError: no such row.
            InvalidFeatureError: a value or the geometry does not fit the layer.
        """
        self._require(self.editing.update, "update features of")
        changes = dict(properties or {})
        self._check_fields(changes)
        edit = Update(
            self.layer,
            global_id,
            changes,
            geometry,
            set_geometry=set_geometry or geometry is not None,
        )
        return _stored(self.store.apply_edits([edit]))

    def delete_feature(self, global_id: UUID) -> None:
        """Delete a row and its attachments' records (their blobs stay: others may share them).

        Raises:
            EditNotAllowedError: the map allows no deletes here.
            FeatureNotFoundError: no such row.
        """
        self._require(self.editing.delete, "delete features of")
        self.store.apply_edits([Delete(self.layer, global_id)])

    def add_attachment(
        self, global_id: UUID, name: str, content_type: str, data: bytes
    ) -> Attachment:
        """Attach a file to a row: its bytes go to the attachments folder as a blob named by
        their SHA-256 (written once, atomically; identical bytes are stored once), then its
        record to the GeoPackage.

        A blob written for an attachment the store then refuses (a bad name or media type)
        stays; being named by its bytes, it is harmless, and ``verify`` accepts it.

        Raises:
            EditNotAllowedError: the map does not enable attachments on this layer, or allows no
                updates.
            FeatureNotFoundError: no such row.
            InvalidFeatureError: the name is empty, over 255 characters or has ``/`` or ``\\``;
                the media type is malformed.
            StorageError: the blob cannot be written.
        """
        self._require_attachments()
        self.store.get_feature(self.layer, global_id)  # no blob for a row that is not there
        blob = LocalBlobStore(self.attachments_dir).put(data)
        return self.store.add_attachment(
            self.layer,
            global_id,
            name=name,
            content_type=content_type,
            size=blob.size,
            sha256=blob.sha256,
        )

    def delete_attachment(self, attachment_id: UUID) -> None:
        """Remove an attachment's record (its blob stays: other attachments may share it).

        Raises:
            EditNotAllowedError: the map does not enable attachments on this layer, or allows no
                updates.
            AttachmentNotFoundError: the layer has no such attachment.
        """
        self._require_attachments()
        self.store.delete_attachment(self.layer, attachment_id)

    # --- rules -----------------------------------------------------------------------------

    def _require(self, allowed: bool, what: str) -> None:
        if not allowed:
            raise EditNotAllowedError(
                f"the map does not allow to {what} {self.title!r}", layer=self.layer
            )

    def _require_attachments(self) -> None:
        if not self.attachments_enabled:
            raise EditNotAllowedError(
                f"the map does not enable attachments on {self.title!r}", layer=self.layer
            )
        self._require(self.editing.update, "edit attachments of")

    def _check_fields(self, properties: Mapping[str, object]) -> None:
        if self._editable is None:
            return
        known = {field.name for field in self.schema.fields}
        for name in properties:
            # an unknown field is the store's error (InvalidFeatureError), not a rule's
            if name in known and name.casefold() not in self._editable:
                raise EditNotAllowedError(
                    f"the map does not allow edits to set field {name!r} of {self.title!r}",
                    layer=self.layer,
                    field=name,
                )

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store. Closing twice is fine."""
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stored(results: tuple[Feature | None, ...]) -> Feature:
    """The row one insert or update stored."""
    (feature,) = results
    if feature is None:  # pragma: no cover - inserts and updates return their row
        raise FeatureStoreError("the store returned no row for an insert or update")
    return feature


def open_feature_table(package: MobileMapPackage, layer_id: str) -> OfflineFeatureTable:
    """The feature layer or table ``layer_id`` of a loaded package, to read and edit under the
    rules the package's web map (the manifest's ``map``) sets for it. Close it when done.

    Raises:
        PackageError: the package is not loaded; no layer or table has this id; it is not a
            feature layer or table (tiles, online only); its GeoPackage cannot be opened or lacks
            the layer; or the package's web map is not a valid web map document or does not
            describe the layer as a feature layer or table.
    """
    manifest = package.manifest
    offline_map = package.maps[0]
    found = next(
        (item for item in [*offline_map.layers, *offline_map.tables] if item.id == layer_id),
        None,
    )
    if found is None:
        raise PackageError(f"{package.path}: no layer or table {layer_id[:80]!r}")
    if found.kind not in {"feature", "table"} or found.layer is None:
        raise PackageError(f"{package.path}: layer {layer_id!r} is a {found.kind} layer")
    try:
        webmap = parse_webmap(manifest.map)
    except InvalidWebMapError as exc:
        raise PackageError(f"{package.path}: the package's web map: {exc}") from None
    ref = webmap.find_layer(layer_id)
    if not isinstance(ref, FeatureLayerRef | TableRef):
        raise PackageError(
            f"{package.path}: the web map has no feature layer or table {layer_id!r}"
        )
    store = found.open_features()
    try:
        return OfflineFeatureTable(
            store,
            found.layer,
            editing=ref.editing,
            attachments_enabled=ref.attachments_enabled,
            attachments_dir=package.path / ATTACHMENTS_FOLDER,
            title=found.title,
        )
    except BaseException:
        store.close()
        raise
