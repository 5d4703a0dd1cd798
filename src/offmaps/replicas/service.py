"""The server side of sync: merging uploaded change sets, serving downloads, the review queue.

State lives in a :class:`~offmaps.state.syncstate.SyncStateStore` (by default
:class:`~offmaps.state.syncstate.SQLiteSyncStateStore`, ``DATA/sync.sqlite`` beside the feature
stores):

- ``rows``: per row of a feature service, the version vector and hybrid logical clock time of
  its last synced write, and the store version they were recorded at. Versions written since
  by anything else (OGC API, conflict resolutions) count as :data:`SERVER_NODE` edits
  (:func:`offmaps.sync.vectors.derive`). A row deleted by a sync keeps its record, at the
  version it was deleted at: a row an update brings back goes on from its version and vector.
  The record also names the replica whose change was applied as is (``origin``): while the
  row stays at that version, that replica's downloads skip it, as the device holds it already.
- ``changes``: every change id the server has answered, with its result, and the ids of the
  edits each change covers (:attr:`~offmaps.schemas.changeset.Change.covers`) with the same
  result. A change set sent again (a retry after a lost response) gets the recorded answers
  and applies nothing twice.
- ``conflicts``: the review queue: the base, the client's and the server's versions of a row
  whose edit was parked (``manual``) or settled by a policy (kept for the record).

A change set is merged under the service's lock: every change is decided first, against the
rows as they are plus the set's own earlier changes; then the feature edits are applied in
order, attachments in between, each run of edits as one store transaction; then the answers
are recorded, in one call to the state store. The decisions are pure functions of
:mod:`offmaps.sync.decide`: the service reads what each step asks for (the row's version and
vector, its values only for a merge or a retried insert, the time of the server's edit only
to settle a conflict), calls it, and carries out the decision it returns.

If the server stops between the store's commit and the record, a retry merges the same changes
again: their values are then the server's, so they change nothing (inserts of rows that exist
with the same values, deletes of deleted rows and updates to the values the row holds are
answered ``applied``/``merged``): no change is applied twice.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from offmaps.catalog import Catalog
from offmaps.errors import (
    ConflictNotFoundError,
    ConflictStateError,
    FeatureNotFoundError,
    FeaturesError,
    GenerationAheadError,
    InvalidChangeSetError,
    WebMapNotFoundError,
)
from offmaps.features.model import (
    Attachment,
    ChangeKind,
    Delete,
    Edit,
    Feature,
    FeatureQuery,
    Insert,
    JournalEntry,
    LayerSchema,
    Update,
)
from offmaps.features.store import FeatureStore
from offmaps.features.wire import (
    canonical_values,
    feature_to_wire,
    prepare_wire_geometries,
    wire_to_edit_values,
)
from offmaps.schemas import FeatureLayerRef, TableRef, WebMap
from offmaps.schemas.changeset import (
    GEOMETRY_FIELD,
    SERVER_NODE,
    AttachmentRef,
    Change,
    ChangeResult,
    ChangeSet,
    ChangeSetResult,
    ChangeStatus,
    ConflictPolicy,
    DownloadEnd,
    DownloadHeader,
    ServerChange,
    SyncChangeKind,
    WireField,
    WireLayer,
)
from offmaps.state.replicas import RelatedKey, Replica
from offmaps.state.syncstate import (
    Answer,
    Conflict,
    RowKey,
    RowState,
    SQLiteSyncStateStore,
    SyncStateStore,
)
from offmaps.sync.clock import Timestamp, parse_timestamp, timestamp_from_ms
from offmaps.sync.collector import collection_paused
from offmaps.sync.decide import (
    AddAttachment,
    Concurrent,
    ConflictRecord,
    Decision,
    DeleteAttachment,
    DeletedRow,
    DeleteRow,
    FieldConflict,
    InsertRow,
    LayerRules,
    Park,
    Reject,
    ServerRow,
    UpdateRow,
    Write,
    admit,
    base_values,
    decide_attachment,
    decide_existing,
    decide_gone,
    decide_insert,
    delete_against_update,
    edited_values,
    merge_update,
    settle_update,
)
from offmaps.sync.vectors import derive, merge
from offmaps.tiling import AreaOfInterest
from offmaps.types import BBox

__all__ = [
    "Conflict",
    "ConvertedChangeSet",
    "DownloadSize",
    "LayerRules",
    "ReplicaInfo",
    "SyncService",
    "layer_rules",
]

_BATCH = 500
_CHUNK_BYTES = 64 * 1024
"""Downloads are handed out in chunks of whole lines of about this many bytes: a streaming
response reads every item of its iterator in its own thread-pool call, whose cost falls on the
event loop that serves every other request (tiles too), so items must not be single lines."""
_ATTACHMENT_KINDS = (SyncChangeKind.ATTACHMENT_ADD, SyncChangeKind.ATTACHMENT_DELETE)


def layer_rules(webmap: WebMap | None, service: str) -> dict[str, LayerRules]:
    """The rules of the map's layers and tables of ``service``, by layer name."""
    if webmap is None:
        return {}
    rules: dict[str, LayerRules] = {}
    for ref in (*webmap.operational_layers, *webmap.tables):
        if isinstance(ref, FeatureLayerRef | TableRef) and ref.service == service:
            rules[ref.layer] = LayerRules(
                ref.editing,
                ref.attachments_enabled,
                ref.conflict_policy or webmap.offline.conflict_policy,
            )
    return rules


class ConvertedChangeSet(ChangeSet):
    """A change set converted from another form its sender speaks (the GeoJSON one:
    :meth:`offmaps.replicas.geojson.GeoJSONChanges.change_set`), the same on the wire.

    Its changes applied as sent are not left out of the sender's downloads, as the compact
    form's are: the sender holds its rows as Features (CRS84 coordinates, JSON types), which
    the server's rows need not equal once converted back, and such a client may learn its
    rows' versions and vectors from the download rather than keep the answers' (the SDK keeps
    them).
    """


@dataclass
class _Unread:
    """A row whose values were not read (most changes need only its version): its global id,
    version, and what the set's earlier changes wrote over it, as edit values."""

    global_id: uuid.UUID
    version: int
    properties: dict[str, object] = field(default_factory=dict)
    geometry: BaseGeometry | None = None
    has_geometry: bool = False


_Row = Feature | _Unread


@dataclass
class _Decision:
    """A change decided: its answer, and what to write for it."""

    change: Change
    result: ChangeResult
    edit: Edit | None = None
    attachment: tuple[str, AttachmentRef] | None = None
    """``("add" | "delete", ref)``."""
    state: tuple[tuple[str, str], RowState | None] | None = None
    conflict: Conflict | None = None


@dataclass
class _Merge:
    """One change set being decided: the rows as the set's earlier changes left them."""

    service: str
    store: FeatureStore
    replica: Replica
    rules: dict[str, LayerRules]
    schemas: dict[str, LayerSchema]
    states: dict[tuple[str, str], RowState | None]
    rows: dict[tuple[str, str], _Row | None] = field(default_factory=dict)
    """The rows as the set's earlier changes left them (``None``: no such row)."""
    attachments: dict[str, bool] = field(default_factory=dict)
    geometries: dict[str, dict[str, BaseGeometry]] = field(default_factory=dict)
    """By layer, the set's geometries decoded at once (``prepare_wire_geometries``)."""
    blobs_present: dict[str, bool] = field(default_factory=dict)
    inserted: set[tuple[str, Any]] = field(default_factory=set)
    """The rows the set adds (layer, global id)."""
    origin: str | None = None
    """The origin to record for rows the set's changes write as sent (:attr:`RowState.origin`):
    the replica's id, or ``None`` for a :class:`ConvertedChangeSet`."""


class SyncService:
    """Merges change sets into the catalog's feature services and serves downloads.

    Args:
        state: the sync state (row clocks, answers, the review queue); the service owns it
            and closes it.
        catalog: the server's feature services, web maps and blobs.
    """

    def __init__(self, state: SyncStateStore, catalog: Catalog) -> None:
        self.catalog = catalog
        self.state = state
        self._lock = threading.Lock()
        self._service_locks: dict[str, threading.Lock] = {}

    @classmethod
    def open(cls, path: Path, catalog: Catalog) -> SyncService:
        """A service over the embedded state file ``path`` (``DATA/sync.sqlite``)."""
        return cls(SQLiteSyncStateStore(path), catalog)

    def close(self) -> None:
        """Close the state store."""
        self.state.close()

    def _service_lock(self, service: str) -> threading.Lock:
        with self._lock:
            return self._service_locks.setdefault(service, threading.Lock())

    def _webmap(self, replica: Replica) -> WebMap | None:
        if replica.map_id is None:
            return None
        try:
            return self.catalog.webmaps.get(replica.map_id)
        except WebMapNotFoundError:
            return None

    # --- upload ----------------------------------------------------------------------------

    def upload(self, replica: Replica, change_set: ChangeSet) -> ChangeSetResult:
        """Merge a change set from ``replica``; answers every change (see the module docs).

        Raises:
            InvalidChangeSetError: the set names another replica, or uses a change id twice.
            VersionConflictError: rows changed on the server while the set was merged
                (nothing was applied; send it again).
        """
        if change_set.replica_id != replica.id:
            raise InvalidChangeSetError(
                f"the change set is for replica {change_set.replica_id}, not {replica.id}"
            )
        ids = [change.change_id for change in change_set.changes]
        covered = [cid for change in change_set.changes for cid in change.covers]
        if len(set(ids).union(covered)) != len(ids) + len(covered):
            raise InvalidChangeSetError("the change set uses a change id twice")
        store = self.catalog.feature_service(replica.service)
        with self._service_lock(replica.service), collection_paused():
            answered = self._answered(replica.id, ids)
            fresh = [c for c in change_set.changes if c.change_id not in answered]
            work = _Merge(
                replica.service,
                store,
                replica,
                layer_rules(self._webmap(replica), replica.service),
                {schema.name: schema for schema in store.list_layers()},
                self._load_states(replica.service, map(_key, fresh)),
            )
            self._load_rows(work, fresh)
            if not isinstance(change_set, ConvertedChangeSet):
                work.origin = replica.id
            work.inserted = {
                (c.layer, c.global_id) for c in fresh if c.kind is SyncChangeKind.INSERT
            }
            by_layer: dict[str, list[object]] = {}
            for change in fresh:
                by_layer.setdefault(change.layer, []).append(change.values.get(GEOMETRY_FIELD))
            work.geometries = {
                name: prepare_wire_geometries(work.schemas[name], values)
                for name, values in by_layer.items()
                if name in work.schemas
            }
            decisions = [self._decide(work, change) for change in fresh]
            rejected = [d for d in decisions if d.result.status is ChangeStatus.REJECTED]
            if change_set.rollback_on_failure and rejected:
                # nothing is applied: the refused changes get the rows as they are
                as_is = _Merge(
                    work.service, store, replica, work.rules, work.schemas,
                    self._load_states(replica.service, (_key(d.change) for d in rejected)),
                )  # fmt: skip
                self._load_rows(as_is, [d.change for d in rejected])
                self._attach_rows(as_is, rejected)
                first = rejected[0].result
                results = {
                    d.change.change_id: d.result
                    if d.result.status is ChangeStatus.REJECTED
                    else ChangeResult(
                        change_id=d.change.change_id,
                        status=ChangeStatus.PENDING,
                        reason=f"not applied: change {first.change_id} was rejected "
                        "and the set asked to roll back on failure",
                    )
                    for d in decisions
                }
                return self._answer(change_set, answered, results, store)
            self._execute(store, decisions)
            self._attach_rows(work, decisions)
            self._record(replica, change_set, decisions)
        results = {d.change.change_id: d.result for d in decisions}
        return self._answer(change_set, answered, results, store)

    def _answer(
        self,
        change_set: ChangeSet,
        answered: Mapping[uuid.UUID, ChangeResult],
        fresh: Mapping[uuid.UUID, ChangeResult],
        store: FeatureStore,
    ) -> ChangeSetResult:
        results = [
            answered.get(change.change_id) or fresh[change.change_id]
            for change in change_set.changes
        ]
        with_rows = sorted({r.row.layer for r in results if r.row is not None})
        schemas = {schema.name: schema for schema in store.list_layers()}
        return ChangeSetResult(
            change_set_id=change_set.change_set_id,
            replica_id=change_set.replica_id,
            generation=store.generation(),
            results=results,
            layers=[_wire_layer(schemas[name]) for name in with_rows if name in schemas],
        )

    def _answered(self, replica_id: str, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ChangeResult]:
        found: dict[uuid.UUID, ChangeResult] = {}
        for change_id, answer in self.state.find_answers(ids).items():
            if answer.replica_id != replica_id:
                raise InvalidChangeSetError(f"change id {change_id} was sent by another replica")
            found[change_id] = answer.result
        return found

    def _load_states(self, service: str, rows: Iterable[RowKey]) -> dict[RowKey, RowState | None]:
        """The recorded sync state of rows given as (layer, global id)."""
        keys = sorted(set(rows))
        states: dict[RowKey, RowState | None] = dict.fromkeys(keys)
        states.update(self.state.load_states(service, keys))
        return states

    @staticmethod
    def _load_rows(work: _Merge, changes: Sequence[Change]) -> None:
        """Note the versions of the rows ``changes`` are about; their values are read when a
        decision needs them (:meth:`_row`)."""
        by_layer: dict[str, dict[str, uuid.UUID]] = {}
        for change in changes:
            if change.layer in work.schemas:
                by_layer.setdefault(change.layer, {})[str(change.global_id)] = change.global_id
        for layer, gids in by_layer.items():
            versions = work.store.row_versions(layer, list(gids.values()))
            for text, gid in gids.items():
                version = versions.get(text)
                work.rows[layer, text] = None if version is None else _Unread(gid, version)

    @staticmethod
    def _existing(work: _Merge, key: tuple[str, str]) -> Feature:
        """A row known to exist, with its values."""
        found = SyncService._row(work, key)
        if found is None:
            raise AssertionError(f"row {key} was decided to exist")
        return found

    @staticmethod
    def _row(work: _Merge, key: tuple[str, str]) -> Feature | None:
        """A row with its values, as the set's earlier changes left it."""
        found = work.rows.get(key)
        if isinstance(found, _Unread):
            stored = work.store.get_feature(key[0], found.global_id)
            found = Feature(
                found.global_id,
                found.version,
                {**stored.properties, **found.properties},
                found.geometry if found.has_geometry else stored.geometry,
            )
            work.rows[key] = found
        return found

    # --- deciding --------------------------------------------------------------------------

    def _decide(self, work: _Merge, change: Change) -> _Decision:
        """Read what the change's decision needs, decide (:mod:`offmaps.sync.decide`), and
        carry the decision into the set's rows."""
        rules = admit(
            change,
            work.rules.get(change.layer),
            in_replica=change.layer in work.replica.layers and change.layer in work.schemas,
            attachment_sync=work.replica.attachment_sync_direction,
        )
        if isinstance(rules, Reject):
            return _rejected(change, rules.reason)
        if work.replica.inserts_only and not _new_feature(work, change):
            return _rejected(change, INSERTS_ONLY_REASON)
        schema = work.schemas[change.layer]
        key = _key(change)
        try:
            if change.kind in _ATTACHMENT_KINDS:
                decision = self._decide_attachment(work, change, key)
                return self._carry_out(work, change, key, schema, decision)
            return self._decide_row(work, change, key, schema, rules)
        except FeaturesError as exc:
            return _rejected(change, str(exc))
        except InvalidChangeSetError as exc:
            return _rejected(change, str(exc))

    def _decide_row(
        self, work: _Merge, change: Change, key: RowKey, schema: LayerSchema, rules: LayerRules
    ) -> _Decision:
        node = work.replica.id
        if change.kind is SyncChangeKind.INSERT:
            # the values are checked before they are compared with a row of the same id
            converted = wire_to_edit_values(
                schema, change.values, complete=True, prepared=work.geometries.get(change.layer)
            )
            found = self._row(work, key)
            existing = client = None
            if found is not None:
                existing = self._server_row(work, schema, key, found)
                client = canonical_values(schema, change.values)
            decision = decide_insert(change, node, existing, client)
            return self._carry_out(work, change, key, schema, decision, converted)
        current = work.rows.get(key)
        if current is None:
            last = work.store.last_change(change.layer, change.global_id)
            deleted, client = None, None
            if last is not None and last.kind is ChangeKind.DELETE:
                vector = self._state_of(work.states.get(key), last.version)
                deleted = DeletedRow(_journal_time(last), last.version, vector)
                if change.kind is SyncChangeKind.UPDATE:
                    client = canonical_values(schema, change.values)
            decision = decide_gone(change, rules.policy, deleted, client)
            return self._carry_out(work, change, key, schema, decision)
        state = self._state(work, key, current.version)
        step = decide_existing(change, node, ServerRow(current.version, state.vector))
        if not isinstance(step, Concurrent):
            return self._carry_out(work, change, key, schema, step)
        if change.kind is SyncChangeKind.DELETE:
            row = self._server_row(work, schema, key, self._existing(work, key))
            server_time = self._server_time(work, key, state)
            decision = delete_against_update(change, row, rules.policy, server_time)
            return self._carry_out(work, change, key, schema, decision)
        client = canonical_values(schema, edited_values(change))
        base = canonical_values(schema, base_values(change, client))
        row = self._server_row(work, schema, key, self._existing(work, key))
        merged = merge_update(change, row, client, base)
        if isinstance(merged, FieldConflict):
            server_time = self._server_time(work, key, state)
            merged = settle_update(change, merged, rules.policy, server_time)
        return self._carry_out(work, change, key, schema, merged)

    def _server_row(
        self, work: _Merge, schema: LayerSchema, key: RowKey, feature: Feature
    ) -> ServerRow:
        """The row with its values, as a decision sees it."""
        state = self._state(work, key, feature.version)
        return ServerRow(feature.version, state.vector, feature_to_wire(schema, feature))

    def _state(self, work: _Merge, key: RowKey, version: int) -> RowState:
        """The row's version vector now (at ``version``): as recorded, or carried forward from
        the record by the versions written since without sync."""
        recorded = work.states.get(key)
        if recorded is not None and recorded.version == version:
            return recorded
        state = RowState(version, self._state_of(recorded, version), None)
        work.states[key] = state
        return state

    @staticmethod
    def _server_time(work: _Merge, key: RowKey, state: RowState) -> Timestamp:
        if state.hlc is not None:
            return parse_timestamp(state.hlc)
        last = work.store.last_change(key[0], uuid.UUID(key[1]))
        if last is None:
            return timestamp_from_ms(int(datetime.now(UTC).timestamp() * 1000), SERVER_NODE)
        return _journal_time(last)

    def _decide_attachment(self, work: _Merge, change: Change, key: RowKey) -> Decision:
        ref = change.attachment
        exists = ref is not None and self._attachment_exists(
            work, change.layer, str(ref.attachment_id)
        )
        uploaded = None
        if ref is not None and change.kind is SyncChangeKind.ATTACHMENT_ADD and not exists:
            blobs = self.catalog.blobs
            uploaded = blobs.size(ref.sha256) if blobs.exists(ref.sha256) else None
        return decide_attachment(
            change,
            exists=exists,
            row_exists=work.rows.get(key) is not None,
            max_bytes=self.catalog.max_attachment_bytes,
            uploaded_size=uploaded,
        )

    @staticmethod
    def _attachment_exists(work: _Merge, layer: str, attachment_id: str) -> bool:
        if attachment_id in work.attachments:
            return work.attachments[attachment_id]
        try:
            work.store.get_attachment(layer, uuid.UUID(attachment_id))
        except FeaturesError:
            return False
        return True

    def _carry_out(
        self,
        work: _Merge,
        change: Change,
        key: RowKey,
        schema: LayerSchema,
        decision: Decision,
        converted: tuple[dict[str, object], BaseGeometry | None, bool] | None = None,
    ) -> _Decision:
        """A decision as the change's answer and what to write for it, with the set's rows
        and states as it leaves them. ``converted``: an insert's values as an edit takes
        them, when checked already.

        Raises:
            FeaturesError: the values to write do not fit the layer (nothing was changed).
        """
        if isinstance(decision, Reject):
            return _rejected(change, decision.reason)
        if isinstance(decision, Park):
            conflict = self._conflict(work, change, decision.conflict)
            result = ChangeResult(
                change_id=change.change_id,
                status=ChangeStatus.CONFLICT,
                reason=decision.reason,
                version=decision.version,
                version_vector=None if decision.vector is None else dict(decision.vector),
                conflict_id=uuid.UUID(conflict.id),
                conflict_fields=list(decision.fields),
                resolution=ConflictPolicy.MANUAL,
            )
            return _Decision(change, result, conflict=conflict)
        write = decision.write
        edit = self._edit(work, change, schema, key, write, converted)
        vector = None if decision.vector is None else dict(decision.vector)
        outcome = _Decision(
            change,
            ChangeResult(
                change_id=change.change_id,
                status=decision.status,
                reason=decision.reason,
                version=decision.version,
                version_vector=vector,
                conflict_fields=list(decision.conflict_fields),
                resolution=decision.resolution,
            ),
            edit=edit,
        )
        if isinstance(write, (AddAttachment, DeleteAttachment)):
            added = isinstance(write, AddAttachment)
            work.attachments[str(write.ref.attachment_id)] = added
            outcome.attachment = ("add" if added else "delete", write.ref)
        elif edit is not None or decision.version is not None:
            # a row written, or found as the change asks: its clock moves with the change
            state = None
            # applied as is, the row holds what the device sent: its download skips it
            origin = work.origin if decision.status is ChangeStatus.APPLIED else None
            if decision.version is not None and vector is not None:
                state = RowState(decision.version, vector, change.hlc, origin)
            elif isinstance(write, DeleteRow):
                # a deleted row keeps its clock: should an update bring it back, the vector
                # goes on from it (devices may hold the row as it was)
                deleted = self._state_of(work.states.get(key), write.base_version)
                vector = merge(deleted, change.version_vector)
                state = RowState(write.base_version, vector, change.hlc, origin)
            work.states[key] = state
            outcome.state = (key, state)
        if decision.conflict is not None:
            outcome.conflict = self._conflict(work, change, decision.conflict)
        return outcome

    @staticmethod
    def _edit(
        work: _Merge,
        change: Change,
        schema: LayerSchema,
        key: RowKey,
        write: Write | None,
        converted: tuple[dict[str, object], BaseGeometry | None, bool] | None,
    ) -> Edit | None:
        """The store edit of a row write, the row as it leaves it noted in ``work``."""
        prepared = work.geometries.get(change.layer)
        if isinstance(write, InsertRow):
            properties, geometry, _ = converted or wire_to_edit_values(
                schema, write.values, complete=True, prepared=prepared
            )
            work.rows[key] = Feature(change.global_id, write.version, properties, geometry)
            return Insert(
                change.layer, properties, geometry, change.global_id, checked=True,
                version=write.version,
            )  # fmt: skip
        if isinstance(write, UpdateRow):
            current = work.rows.get(key)
            if current is None:
                raise AssertionError(f"row {key} was decided to exist")
            properties, geometry, has_geometry = wire_to_edit_values(
                schema, write.values, complete=False, prepared=prepared
            )
            written: dict[str, Any] = {
                "version": current.version + 1,
                "properties": {**current.properties, **properties},
                "geometry": geometry if has_geometry else current.geometry,
            }
            if isinstance(current, _Unread):
                written["has_geometry"] = current.has_geometry or has_geometry
            work.rows[key] = replace(current, **written)
            return Update(
                change.layer, change.global_id, properties, geometry,
                set_geometry=has_geometry, base_version=write.base_version, checked=True,
            )  # fmt: skip
        if isinstance(write, DeleteRow):
            work.rows[key] = None
            return Delete(change.layer, change.global_id, write.base_version)
        return None

    @staticmethod
    def _conflict(work: _Merge, change: Change, record: ConflictRecord) -> Conflict:
        """A review queue entry for ``record``: open under ``manual``, else settled."""
        policy = record.policy
        manual = policy is ConflictPolicy.MANUAL
        now = time.time()
        return Conflict(
            id=str(uuid.uuid4()),
            replica_id=work.replica.id,
            owner=work.replica.owner,
            map_id=work.replica.map_id,
            service=work.service,
            layer=change.layer,
            global_id=str(change.global_id),
            kind=record.kind.value,
            change_id=str(change.change_id),
            fields=list(record.fields),
            base=dict(record.base),
            client=dict(record.client),
            server=dict(record.server) if record.server is not None else None,
            server_version=record.server_version,
            client_vector=dict(change.version_vector),
            status="open" if manual else "resolved",
            resolution=None if manual else policy.value,
            created=now,
            resolved=None if manual else now,
            resolved_by=None if manual else f"policy:{policy.value}",
        )

    # --- writing ---------------------------------------------------------------------------

    @staticmethod
    def _execute(store: FeatureStore, decisions: Sequence[_Decision]) -> None:
        edits: list[Edit] = []
        for decision in decisions:
            if decision.edit is not None:
                edits.append(decision.edit)
            if decision.attachment is None:
                continue
            store.apply_edits(edits, read_back=False)
            edits = []
            action, ref = decision.attachment
            change = decision.change
            if action == "add":
                store.add_attachment(
                    change.layer, change.global_id, name=ref.name,
                    content_type=ref.content_type, size=ref.size, sha256=ref.sha256,
                    attachment_id=ref.attachment_id,
                )  # fmt: skip
            else:
                store.delete_attachment(change.layer, ref.attachment_id)
        store.apply_edits(edits, read_back=False)

    @staticmethod
    def _attach_rows(work: _Merge, decisions: Sequence[_Decision]) -> None:
        """Give merged, conflicting and rejected answers the row as the server now has it."""
        with_attachments = work.replica.attachment_sync_direction == "bidirectional"
        for decision in decisions:
            if decision.result.status in (ChangeStatus.APPLIED, ChangeStatus.PENDING):
                continue
            change = decision.change
            schema = work.schemas.get(change.layer)
            if schema is None:
                continue
            key = _key(change)
            feature = SyncService._row(work, key)
            if feature is None:
                row = ServerChange(layer=change.layer, global_id=change.global_id, kind="delete")
            else:
                vector = SyncService._state_of(work.states.get(key), feature.version)
                attachments = None
                if with_attachments:
                    attachments = _attachment_refs(
                        work.store.list_attachments(change.layer, change.global_id)
                    )
                row = ServerChange(
                    layer=change.layer,
                    global_id=change.global_id,
                    kind="upsert",
                    version=feature.version,
                    version_vector=vector,
                    values=feature_to_wire(schema, feature),
                    attachments=attachments,
                )
            decision.result = decision.result.model_copy(update={"row": row})

    def _record(
        self, replica: Replica, change_set: ChangeSet, decisions: Sequence[_Decision]
    ) -> None:
        states: dict[RowKey, RowState | None] = {}
        for decision in decisions:
            if decision.state is not None:
                states[decision.state[0]] = decision.state[1]
        self.state.record(
            replica.service,
            change_set.change_set_id,
            states=states,
            answers=[Answer(replica.id, d.result, tuple(d.change.covers)) for d in decisions],
            conflicts=[d.conflict for d in decisions if d.conflict is not None],
        )

    def change_result(self, replica: Replica, change_id: uuid.UUID) -> ChangeResult | None:
        """The recorded answer to one change of ``replica``, or ``None``."""
        found = self.state.find_answers([change_id]).get(change_id)
        return None if found is None or found.replica_id != replica.id else found.result

    # --- download --------------------------------------------------------------------------

    def measure_download(
        self, replica: Replica, since: int, layers: Sequence[str] | None = None
    ) -> DownloadSize:
        """What :meth:`download` would send now for the same arguments: its rows (upserts and
        deletions), its bytes, and the attachment files its rows name. Exact: the rows are
        read and encoded as the download encodes them, nothing is sent.

        Raises:
            GenerationAheadError: ``since`` is beyond the server's generation.
        """
        generation = 0
        upserts = deletes = size = 0
        attachments: dict[str, int] = {}
        for record in self.iter_download(replica, since, layers):
            size += len(_line(record))
            if isinstance(record, DownloadHeader):
                generation = record.generation
            elif record.kind == "delete":
                deletes += 1
            else:
                upserts += 1
                attachments.update((a.sha256, a.size) for a in record.attachments or ())
        end = DownloadEnd(count=upserts + deletes, sha256="0" * 64)
        size += len(end.model_dump_json().encode()) + 1
        return DownloadSize(generation, upserts, deletes, size, attachments)

    @staticmethod
    def _layers(replica: Replica, layers: Sequence[str] | None) -> list[str]:
        if layers is None:
            return list(replica.layers)
        unknown = [name for name in layers if name not in replica.layers]
        if unknown:
            raise InvalidChangeSetError(f"layer {unknown[0][:64]!r} is not part of this replica")
        return list(layers)

    def download(
        self, replica: Replica, since: int, layers: Sequence[str] | None = None
    ) -> Iterator[bytes]:
        """The server's changes after generation ``since`` as NDJSON lines: a header, each
        changed row as it is now (or its deletion), and an end record counting and hashing
        the lines before it (docs/sync.md).

        The lines come in chunks of whole lines, about 64 KB each (the last one shorter).

        Raises:
            GenerationAheadError: ``since`` is beyond the server's generation (on the first
                ``next``, before any line).
            InvalidChangeSetError: ``layers`` names a layer the replica does not hold (on
                the first ``next``).
        """
        chunk: list[bytes] = []
        size = 0
        for line in self._download_lines(replica, since, layers):
            chunk.append(line)
            size += len(line)
            if size >= _CHUNK_BYTES:
                yield b"".join(chunk)
                chunk, size = [], 0
        if chunk:
            yield b"".join(chunk)

    def _download_lines(
        self, replica: Replica, since: int, layers: Sequence[str] | None
    ) -> Iterator[bytes]:
        """The lines of a download (:meth:`download`), one at a time, the end record last."""
        digest = hashlib.sha256()
        count = -1  # the header is no change
        for record in self.iter_download(replica, since, layers):
            data = _line(record)
            digest.update(data)
            count += 1
            yield data
        end = DownloadEnd(count=count, sha256=digest.hexdigest())
        yield end.model_dump_json().encode() + b"\n"

    def iter_download(
        self, replica: Replica, since: int, layers: Sequence[str] | None = None
    ) -> Iterator[DownloadHeader | ServerChange]:
        """The header and the changes of a download (:meth:`download`), as records: for a
        registered replica, or one that never is (a preplanned area's, whose changes go into
        update files)."""
        store = self.catalog.feature_service(replica.service)
        wanted = self._layers(replica, layers)
        generation = store.generation()
        _check_since(since, generation)
        schemas = {schema.name: schema for schema in store.list_layers()}
        changed, attached_to = _changed_rows(store, since, generation, wanted)
        yield DownloadHeader(
            replica_id=replica.id,
            since=since,
            generation=generation,
            layers=[_wire_layer(schemas[name]) for name in wanted if name in schemas],
        )
        by_layer: dict[str, list[uuid.UUID]] = {}
        for layer, gid in changed:
            by_layer.setdefault(layer, []).append(gid)
        with_attachments = replica.attachment_sync_direction == "bidirectional"
        scope = _ReplicaScope(store, replica, schemas)
        for layer, gids in by_layer.items():
            schema = schemas.get(layer)
            if schema is None:
                continue
            states = self._load_states(replica.service, ((layer, str(g)) for g in gids))
            for start in range(0, len(gids), _BATCH):
                chunk = tuple(gids[start : start + _BATCH])
                query = FeatureQuery(global_ids=chunk, filters=scope.filters(layer))
                found = {f.global_id: f for f in store.iter_features(layer, query)}
                attached = store.attachments_of(layer, list(found)) if with_attachments else {}
                for gid in chunk:
                    feature = found.get(gid)
                    if feature is not None and not scope.holds(layer, feature):
                        feature = None
                    # built without validation (a third of the time of a row): every value
                    # comes from the store and the sync state, which checked it when written
                    if feature is None:
                        yield ServerChange.model_construct(
                            layer=layer, global_id=gid, kind="delete"
                        )
                        continue
                    recorded = states.get((layer, str(gid)))
                    if _echo(recorded, replica, feature, (layer, gid) in attached_to):
                        continue
                    state = self._state_of(recorded, feature.version)
                    attachments = None
                    if with_attachments:
                        attachments = _attachment_refs(attached.get(gid, ()))
                    yield ServerChange.model_construct(
                        layer=layer,
                        global_id=gid,
                        kind="upsert",
                        version=feature.version,
                        version_vector=state,
                        values=feature_to_wire(schema, feature),
                        attachments=attachments,
                    )

    @staticmethod
    def _state_of(recorded: RowState | None, version: int) -> dict[str, int]:
        if recorded is not None and recorded.version == version:
            return recorded.vector
        return derive(
            recorded.vector if recorded else None, recorded.version if recorded else 0, version
        )

    def recorded_states(
        self, service: str, layers: Sequence[str]
    ) -> Iterator[tuple[str, str, int, dict[str, int]]]:
        """Every row of ``layers`` whose sync state is recorded: ``(layer, global id, version,
        vector)``, for seeding a new replica (:meth:`LocalReplica.seed_server_states`)."""
        for layer in layers:
            for gid, state in self.state.iter_states(service, layer):
                yield layer, gid, state.version, state.vector

    def describe(self, replica: Replica) -> ReplicaInfo:
        """``replica`` with the server's generation of its service and its open conflicts."""
        store = self.catalog.feature_service(replica.service)
        open_conflicts = self.list_conflicts(owner=None, replica_id=replica.id, limit=10_000)
        return ReplicaInfo(replica, store.generation(), len(open_conflicts))

    # --- review queue ----------------------------------------------------------------------

    def list_conflicts(
        self,
        *,
        owner: str | None,
        status: str | None = "open",
        replica_id: str | None = None,
        limit: int = 100,
    ) -> list[Conflict]:
        """Conflicts, newest first; ``owner`` ``None`` for every owner's (admins)."""
        return self.state.list_conflicts(
            owner=owner, status=status, replica_id=replica_id, limit=limit
        )

    def get_conflict(
        self, conflict_id: str, *, owner: str | None, refresh: bool = True
    ) -> Conflict:
        """One conflict; an open one, unless ``refresh`` is false, with the server's side as
        the row is now (someone may have edited or deleted it since it was parked: what a
        reviewer then resolves against). Raises ``ConflictNotFoundError`` (also for other
        owners')."""
        found = self.state.find_conflict(conflict_id)
        if found is None or (owner is not None and found.owner != owner):
            raise ConflictNotFoundError(f"no conflict {conflict_id[:40]!r}")
        if found.status != "open" or not refresh:
            return found
        with self._service_lock(found.service):
            store = self.catalog.feature_service(found.service)
            try:
                current: Feature | None = store.get_feature(found.layer, uuid.UUID(found.global_id))
            except FeatureNotFoundError:
                current = None
            version = None if current is None else current.version
            if version == found.server_version:
                return found
            kind = found.kind
            if current is None and kind == "update_update":
                kind = "update_delete"  # deleted since: an update brings it back
            elif current is not None and kind == "update_delete":
                kind = "update_update"  # brought back since
            server = None
            if current is not None:
                server = feature_to_wire(store.get_layer(found.layer), current)
            self.state.refresh_conflict(
                conflict_id, kind=kind, server=server, server_version=version
            )
        return replace(found, kind=kind, server=server, server_version=version)

    def resolve_conflict(
        self,
        conflict_id: str,
        *,
        owner: str | None,
        side: str,
        values: Mapping[str, Any] | None,
        resolved_by: str,
    ) -> Conflict:
        """Settle an open conflict: keep the ``server`` side, take the ``client`` side, or
        ``merge`` (``values`` for the conflicting fields, the server's for the others).

        Raises:
            ConflictNotFoundError: no such conflict.
            ConflictStateError: it is resolved already, or the row changed since the conflict
                was last read (reading it again, :meth:`get_conflict`, shows the row as it is).
            InvalidChangeSetError: ``values`` names a field that is not in conflict, or the
                side is unknown.
        """
        conflict = self.get_conflict(conflict_id, owner=owner, refresh=False)  # as last read
        if conflict.status != "open":
            raise ConflictStateError(f"conflict {conflict_id} is resolved already")
        if side not in {"server", "client", "merge"}:
            raise InvalidChangeSetError("side must be server, client or merge")
        store = self.catalog.feature_service(conflict.service)
        gid = uuid.UUID(conflict.global_id)
        with self._service_lock(conflict.service):
            try:
                current: Feature | None = store.get_feature(conflict.layer, gid)
            except FeatureNotFoundError:
                current = None
            version = None if current is None else current.version
            if version != conflict.server_version:
                raise ConflictStateError(
                    f"the row changed since the conflict (version {version}, the conflict saw "
                    f"{conflict.server_version}): read it again"
                )
            schema = store.get_layer(conflict.layer)
            # a row brought back goes on from the version it was deleted at
            last = store.last_change(conflict.layer, gid) if current is None else None
            back_at = 1 if last is None else last.version + 1
            edits = self._resolution_edits(conflict, schema, back_at, side, values)
            store.apply_edits(edits)
            try:
                after: Feature | None = store.get_feature(conflict.layer, gid)
            except FeatureNotFoundError:
                after = None
            key = (conflict.layer, conflict.global_id)
            recorded = self._load_states(conflict.service, [key])
            settled = {
                "status": ChangeStatus.MERGED,
                "reason": f"resolved by {resolved_by}: {side}",
                "version": None if after is None else after.version,
                "version_vector": None
                if after is None
                else self._state_of(recorded.get(key), after.version),
                "row": None,
            }
            self.state.resolve_conflict(
                conflict_id,
                resolution=f"manual:{side}",
                resolved_by=resolved_by,
                settle=lambda result: result.model_copy(update=settled),
            )
        return self.get_conflict(conflict_id, owner=owner)

    @staticmethod
    def _resolution_edits(
        conflict: Conflict,
        schema: LayerSchema,
        back_at: int,
        side: str,
        values: Mapping[str, Any] | None,
    ) -> list[Edit]:
        """The edits that settle ``conflict`` as ``side`` says; ``back_at``: the version of
        the row brought back, when the server deleted it."""
        gid = uuid.UUID(conflict.global_id)
        if side == "server":
            return []
        if conflict.kind == "delete_update":
            if side == "merge":
                raise InvalidChangeSetError("a delete against an update has no fields to merge")
            if conflict.server_version is None:  # deleted on the server too since
                return []
            return [Delete(conflict.layer, gid, conflict.server_version)]
        if side == "merge":
            chosen = dict(values or {})
            extra = [name for name in chosen if name not in conflict.fields]
            if extra:
                raise InvalidChangeSetError(f"field {extra[0][:64]!r} is not in conflict")
        else:
            chosen = dict(conflict.client)
        if conflict.kind == "update_delete":
            properties, geometry, _ = wire_to_edit_values(
                schema, {**conflict.client, **chosen}, complete=False
            )
            return [Insert(conflict.layer, properties, geometry, gid, version=back_at)]
        properties, geometry, has_geometry = wire_to_edit_values(schema, chosen, complete=False)
        return [
            Update(
                conflict.layer, gid, properties, geometry,
                set_geometry=has_geometry, base_version=conflict.server_version,
            )
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A replica as the APIs show it (:meth:`SyncService.describe`).

    Attributes:
        replica: the registered replica.
        server_generation: the current generation of its feature service.
        open_conflicts: its conflicts waiting in the review queue (up to 10,000 counted).
    """

    replica: Replica
    server_generation: int
    open_conflicts: int

    def document(self) -> dict[str, Any]:
        """As JSON, for the REST API."""
        replica = self.replica
        return {
            "id": replica.id,
            "service": replica.service,
            "layers": list(replica.layers),
            "map_id": replica.map_id,
            "generation": replica.generation,
            "server_generation": self.server_generation,
            "sync_direction": replica.sync_direction,
            "sync_model": replica.sync_model,
            "attachment_sync_direction": replica.attachment_sync_direction,
            "open_conflicts": self.open_conflicts,
        }


@dataclass(frozen=True, slots=True)
class DownloadSize:
    """What a download would send (:meth:`SyncService.measure_download`).

    Attributes:
        generation: the server's generation the download would bring the replica to.
        upserts: rows sent as they are now (inserted or changed since).
        deletes: rows sent as deletions (deleted, or moved out of the replica's area or
            filters, since).
        bytes: the NDJSON stream's size, header and end record included.
        attachments: the attachment files the sent rows name (SHA-256 → size); the device
            downloads those it lacks.
    """

    generation: int
    upserts: int
    deletes: int
    bytes: int
    attachments: dict[str, int]

    @property
    def changes(self) -> int:
        """Every row the download sends."""
        return self.upserts + self.deletes


def _line(record: DownloadHeader | ServerChange | DownloadEnd) -> bytes:
    """One NDJSON line of a download."""
    return record.model_dump_json(exclude_defaults=False).encode() + b"\n"


INSERTS_ONLY_REASON = (
    "features from the preplanned package are read-only in "
    "download_scheduled_updates_and_upload_new_features mode: only new features (and "
    "attachments added to them) are uploaded"
)
"""Why a change of a replica that uploads new features only is refused."""


def _new_feature(work: _Merge, change: Change) -> bool:
    """Whether ``change`` adds a new feature, or an attachment to a feature this replica
    added: in the same set, or in an earlier one (the row's version vector counts the replica's
    node, which a replica that may only insert puts on no other row)."""
    if change.kind is SyncChangeKind.INSERT:
        return True
    if change.kind is not SyncChangeKind.ATTACHMENT_ADD:
        return False
    if (change.layer, change.global_id) in work.inserted:
        return True
    state = work.states.get(_key(change))
    return state is not None and state.vector.get(work.replica.id, 0) > 0


def _rejected(change: Change, reason: str) -> _Decision:
    """A change refused: nothing is written."""
    result = ChangeResult(change_id=change.change_id, status=ChangeStatus.REJECTED, reason=reason)
    return _Decision(change, result)


def _journal_time(entry: JournalEntry) -> Timestamp:
    """When the store's journal says the server wrote a row, as a clock time."""
    return timestamp_from_ms(int(entry.changed_at.timestamp() * 1000), SERVER_NODE)


class _ReplicaScope:
    """Which rows of the service a replica holds, as its scope says (:class:`LayerScope`):
    rows matching the layer's filter, inside its area, and for tables taken with "related
    rows only", related to a row the replica holds of one of their origins."""

    def __init__(
        self, store: FeatureStore, replica: Replica, schemas: Mapping[str, LayerSchema]
    ) -> None:
        self._store = store
        self._scopes = replica.scope
        self._schemas = schemas
        self._areas: dict[str, BaseGeometry | None] = {}
        self._keys: dict[tuple[str, str], set[object] | None] = {}

    def filters(self, layer: str) -> tuple[str, ...]:
        """The layer's CQL2 filter, for a query (rows must match it too)."""
        scope = self._scopes.get(layer)
        return (scope.where,) if scope and scope.where else ()

    def holds(self, layer: str, feature: Feature) -> bool:
        """Whether the replica holds ``feature``, a row of ``layer`` matching its filter."""
        scope = self._scopes.get(layer)
        if scope is None:
            return True
        area = self._area(layer)
        if area is not None:
            if feature.geometry is None:
                return scope.include_null_geometry
            if not shapely.intersects(area, feature.geometry):
                return False
        if not scope.related:
            return True
        for related in scope.related:
            keys = self._origin_keys(related)
            if keys is None or feature.properties.get(related.destination_key) in keys:
                return True
        return False

    def _area(self, layer: str) -> BaseGeometry | None:
        if layer not in self._areas:
            scope = self._scopes.get(layer)
            schema = self._schemas.get(layer)
            area = None
            if scope is not None and scope.area and schema is not None:
                area = _scope_area(scope.area, schema)
                shapely.prepare(area)
            self._areas[layer] = area
        return self._areas[layer]

    def _origin_keys(self, related: RelatedKey) -> set[object] | None:
        """The ``origin_key`` values of the rows the replica holds of ``related.origin``
        (``None``: the origin is gone from the service, or its rows wait on this table through
        a cycle of relationships; the table then keeps every row, as it was taken)."""
        key = (related.origin, related.origin_key)
        if key in self._keys:
            return self._keys[key]
        self._keys[key] = None  # a cycle back to here finds None: every row
        if related.origin not in self._schemas:
            return None
        area = self._area(related.origin)
        scope = self._scopes.get(related.origin)
        bbox = None
        if area is not None and not (scope and scope.include_null_geometry):
            bbox = BBox(*area.bounds)
        query = FeatureQuery(bbox=bbox, filters=self.filters(related.origin))
        found = {
            value
            for feature in self._store.iter_features(related.origin, query)
            if (value := feature.properties.get(related.origin_key)) is not None
            and self.holds(related.origin, feature)
        }
        self._keys[key] = found
        return found


def _attachment_refs(attachments: Iterable[Attachment]) -> list[AttachmentRef]:
    return [
        AttachmentRef(
            attachment_id=a.attachment_id,
            name=a.name,
            content_type=a.content_type,
            size=a.size,
            sha256=a.sha256,
        )
        for a in attachments
    ]


def _check_since(since: int, generation: int) -> None:
    """Refuse a ``since`` the server never reached (or a negative one): the device's data is
    not this server's, and a download from there would skip changes silently."""
    if since < 0:
        raise InvalidChangeSetError(f"since must be a generation, 0 or more (not {since})")
    if since > generation:
        raise GenerationAheadError(
            f"since {since} is beyond the server's generation {generation}: this replica "
            "is not from this server's data (restored from an older backup, or another "
            "server); take the map offline again",
            expected=generation,
            actual=since,
        )


def _changed_rows(
    store: FeatureStore, since: int, generation: int, layers: Sequence[str]
) -> tuple[dict[tuple[str, uuid.UUID], None], set[tuple[str, uuid.UUID]]]:
    """The rows the journal says changed after ``since`` up to ``generation``, in the order
    of their last change (a dict used as an ordered set), and those of them whose attachments
    changed."""
    changed: dict[tuple[str, uuid.UUID], None] = {}
    attached_to: set[tuple[str, uuid.UUID]] = set()
    for entry in store.iter_changes(since, layers=layers):
        if entry.generation <= generation:
            key = (entry.layer, entry.global_id)
            changed.pop(key, None)
            changed[key] = None
            if entry.attachment_id is not None:
                attached_to.add(key)
    return changed, attached_to


def _echo(
    recorded: RowState | None, replica: Replica, feature: Feature, attachments_changed: bool
) -> bool:
    """Whether a row about to be sent to ``replica`` is its own change coming back: the last
    synced write was that replica's change applied as is, and the row is still at the version
    it wrote. Any later write (a sync of another replica, a merge, the OGC API, a resolved
    conflict) moves the version or the origin; an attachment added or removed does not move
    the version, so a row whose attachments changed in the download's window is sent anyway.
    Deletions are always sent: a device that deleted the row finds nothing to do."""
    return (
        recorded is not None
        and recorded.origin == replica.id
        and recorded.version == feature.version
        and not attachments_changed
    )


def _key(change: Change) -> tuple[str, str]:
    """The (layer, global id) a change is about."""
    return change.layer, str(change.global_id)


def _wire_layer(schema: LayerSchema) -> WireLayer:
    return WireLayer(
        name=schema.name,
        fields=[
            WireField(
                name=f.name, type=f.type.value, nullable=f.nullable, alias=f.alias,
                max_length=f.max_length,
            )
            for f in schema.fields
        ],
    )  # fmt: skip


def _scope_area(area: Mapping[str, Any], schema: LayerSchema) -> BaseGeometry:
    area_of_interest = AreaOfInterest.from_geojson(dict(area))
    return area_of_interest.project_within_area_of_use(pyproj.CRS.from_epsg(schema.srid))
