"""What becomes of one uploaded change: the server's merge decisions, as pure functions.

Each function takes values (the change, the row as the server has it, the layer's rules, the
clocks) and returns a decision:

- :class:`Apply`: the change stands (``applied``, or ``merged`` with the server's edits): what
  to write, if anything (:class:`InsertRow`, :class:`UpdateRow`, :class:`DeleteRow`,
  :class:`AddAttachment`, :class:`DeleteAttachment`), and the row's version and version
  vector after it. A conflict a policy settled comes with its record.
- :class:`Park`: a true conflict under the ``manual`` policy: nothing is written, the record
  goes to the review queue.
- :class:`Reject`: the change is refused, with the reason.

Reading the row and its clocks, writing, and recording stay with the caller (the server's sync
service, :mod:`offmaps.replicas`). Most changes need only the row's version and version
vector, so the decision comes in steps, each asking for no more than it uses:

1. :func:`admit`: what the map allows (layers, edit kinds, editable fields, attachments).
2. By what the server has of the row:

   - inserts: :func:`decide_insert` (with the row's values when one exists: a retry);
   - updates and deletes of a row the server has: :func:`decide_existing`, which answers
     fast-forwards and refusals at once and says :class:`Concurrent` when the device did not
     see every edit of the row; then, with the row's values, :func:`delete_against_update`,
     or :func:`merge_update` (a three-way merge by field) and, for a :class:`FieldConflict`,
     :func:`settle_update` under the layer's policy;
   - updates and deletes of a row the server does not have: :func:`decide_gone`;
   - attachments: :func:`decide_attachment`.

Values are in wire form (:mod:`offmaps.schemas.changeset`); comparisons want them canonical
(as the store would hold them), which the caller makes with the layer's schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from offmaps.schemas import EditingCapabilities
from offmaps.schemas.changeset import (
    GEOMETRY_FIELD,
    AttachmentRef,
    Change,
    ChangeStatus,
    ConflictPolicy,
    SyncChangeKind,
)
from offmaps.sync.clock import Timestamp, parse_timestamp
from offmaps.sync.merge import merge_fields
from offmaps.sync.policy import Side, resolve, resolve_delete
from offmaps.sync.vectors import dominates, merge

__all__ = [
    "AddAttachment",
    "Apply",
    "Concurrent",
    "ConflictKind",
    "ConflictRecord",
    "Decision",
    "DeleteAttachment",
    "DeletedRow",
    "DeleteRow",
    "FieldConflict",
    "InsertRow",
    "LayerRules",
    "Park",
    "Reject",
    "ServerRow",
    "UpdateRow",
    "Write",
    "admit",
    "base_values",
    "decide_attachment",
    "decide_existing",
    "decide_gone",
    "decide_insert",
    "delete_against_update",
    "edited_values",
    "merge_update",
    "settle_update",
]

_ATTACHMENT_KINDS = (SyncChangeKind.ATTACHMENT_ADD, SyncChangeKind.ATTACHMENT_DELETE)


# --- what the decisions read ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerRules:
    """What a replica's map allows on one of its layers, offline."""

    editing: EditingCapabilities
    attachments_enabled: bool
    policy: ConflictPolicy


@dataclass(frozen=True, slots=True)
class ServerRow:
    """The server's row as a decision sees it.

    Attributes:
        version: its version in the store.
        vector: its version vector at that version (as recorded, or carried forward by the
            versions written since without sync).
        values: its fields in wire form, geometry included, canonical; ``None`` when not
            read (the decisions that compare values say so).
    """

    version: int
    vector: Mapping[str, int]
    values: Mapping[str, object] | None = None

    def read_values(self) -> Mapping[str, object]:
        """The row's values; raises ``ValueError`` when they were not read."""
        if self.values is None:
            raise ValueError("this decision needs the row's values: read them first")
        return self.values


@dataclass(frozen=True, slots=True)
class DeletedRow:
    """A row the server deleted, as a decision sees it.

    Attributes:
        at: when the server deleted it (the time of its journal's delete).
        version: the version it was deleted at.
        vector: its version vector at that version (as recorded, or carried forward).
    """

    at: Timestamp
    version: int
    vector: Mapping[str, int]


# --- what the decisions say ----------------------------------------------------------------


class ConflictKind(StrEnum):
    """What met in a conflict."""

    UPDATE_UPDATE = "update_update"
    """Both sides changed fields of the row, some of the same ones to different values."""
    DELETE_UPDATE = "delete_update"
    """The device deleted the row the server updated."""
    UPDATE_DELETE = "update_delete"
    """The device updated the row the server deleted."""


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """What the review queue keeps of a conflict: the three versions of the row and the
    policy that met it (``manual``: it waits for review; any other: settled, for the record).
    The caller adds who, where and when."""

    kind: ConflictKind
    fields: tuple[str, ...]
    """The fields changed on both sides (for a delete against an update, none)."""
    base: Mapping[str, object]
    """The fields before the device's edit."""
    client: Mapping[str, object]
    """The device's values (none for its delete)."""
    server: Mapping[str, object] | None
    """The server's row (``None``: the server deleted it)."""
    server_version: int | None
    policy: ConflictPolicy


@dataclass(frozen=True, slots=True)
class InsertRow:
    """Insert the row with these values (every field, wire form), at ``version`` (1 for a new
    row; a row brought back goes on from the version it was deleted at)."""

    values: Mapping[str, object]
    version: int = 1


@dataclass(frozen=True, slots=True)
class UpdateRow:
    """Write these fields (wire form) over the row at ``base_version``."""

    values: Mapping[str, object]
    base_version: int


@dataclass(frozen=True, slots=True)
class DeleteRow:
    """Delete the row at ``base_version``."""

    base_version: int


@dataclass(frozen=True, slots=True)
class AddAttachment:
    """Add the attachment to the row (its bytes are uploaded and checked)."""

    ref: AttachmentRef


@dataclass(frozen=True, slots=True)
class DeleteAttachment:
    """Delete the attachment."""

    ref: AttachmentRef


Write = InsertRow | UpdateRow | DeleteRow | AddAttachment | DeleteAttachment


@dataclass(frozen=True, slots=True)
class Apply:
    """The change stands.

    Attributes:
        status: ``applied``, or ``merged`` when the server's edits of the row were kept too
            or a policy settled a conflict.
        version: the row's version after the change; ``None`` when it has none (deleted, or
            an attachment change, which leaves the row's clock alone).
        vector: the row's version vector after the change (``None`` with ``version``).
        write: what to write; ``None`` when the server already is as the change asks.
        conflict: the conflict a policy settled, for the record.
        conflict_fields: the fields changed on both sides.
        resolution: the policy that settled a conflict.
        reason: how it was settled, for people.
    """

    status: ChangeStatus
    version: int | None
    vector: Mapping[str, int] | None
    write: Write | None = None
    conflict: ConflictRecord | None = None
    conflict_fields: tuple[str, ...] = ()
    resolution: ConflictPolicy | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Park:
    """A true conflict under the ``manual`` policy: nothing is written; ``conflict`` waits in
    the review queue.

    Attributes:
        conflict: the record for the queue.
        reason: what the policy did, for people.
        version: the row's version as it stays (``None``: the server deleted it).
        vector: the row's version vector as it stays (``None`` with ``version``).
        fields: the fields the answer names as conflicting (those of an update against an
            update; none for a delete against an update, or an update against a delete).
    """

    conflict: ConflictRecord
    reason: str
    version: int | None
    vector: Mapping[str, int] | None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """The change is refused: nothing is written."""

    reason: str


Decision = Apply | Park | Reject


@dataclass(frozen=True, slots=True)
class Concurrent:
    """The device did not see every edit of the row: the change is merged with them
    (:func:`merge_update`, :func:`delete_against_update`), which needs the row's values."""

    row: ServerRow


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """An update that changed fields the server changed too, to other values: the policy
    settles it (:func:`settle_update`), which may need the time of the server's edit."""

    row: ServerRow
    vector: Mapping[str, int]
    """The row's vector after the change, both sides' edits counted."""
    values: Mapping[str, object]
    """What the merge writes without a conflict."""
    fields: tuple[str, ...]
    """The fields in conflict."""
    base: Mapping[str, object]
    client: Mapping[str, object]
    server: Mapping[str, object]


# --- 1. what the map allows ----------------------------------------------------------------


def admit(
    change: Change,
    rules: LayerRules | None,
    *,
    in_replica: bool,
    attachment_sync: str = "bidirectional",
) -> LayerRules | Reject:
    """Refuse a change the replica's map does not allow, before anything is read.

    Args:
        change: the change.
        rules: the rules of its layer in the replica's map (``None``: the map no longer has
            the layer).
        in_replica: whether the layer is one of the replica's and the service still has it.
        attachment_sync: the replica's attachment sync direction (``none`` refuses attachment
            changes).

    Returns:
        The refusal, or the rules when the change may go on.
    """
    if not in_replica:
        return Reject(f"layer {change.layer!r} is not part of this replica")
    if rules is None:
        return Reject(f"the map no longer has layer {change.layer!r}")
    editing = rules.editing
    if change.kind in _ATTACHMENT_KINDS:
        if change.attachment is None:
            return Reject("an attachment change needs its attachment")
        if not rules.attachments_enabled or not editing.update:
            return Reject(f"the map does not allow attachment edits on {change.layer!r}")
        if attachment_sync == "none":
            return Reject("this replica does not sync attachments")
        return rules
    if change.kind is SyncChangeKind.INSERT:
        if not editing.create:
            return Reject(f"the map does not allow adding to {change.layer!r}")
        return _editable(
            rules, change.layer, (k for k, v in change.values.items() if v is not None)
        )
    if change.kind is SyncChangeKind.UPDATE:
        if not editing.update:
            return Reject(f"the map does not allow changing {change.layer!r}")
        return _editable(rules, change.layer, change.changed)
    if not editing.delete:
        return Reject(f"the map does not allow deleting from {change.layer!r}")
    return rules


def _editable(rules: LayerRules, layer: str, names: Iterable[str]) -> LayerRules | Reject:
    editable = rules.editing.editable_fields
    if editable is not None:
        for name in names:
            if name != GEOMETRY_FIELD and name not in editable:
                return Reject(f"field {name!r} of {layer!r} is not editable")
    return rules


# --- 2. rows -------------------------------------------------------------------------------


def decide_insert(
    change: Change,
    node: str,
    existing: ServerRow | None,
    client: Mapping[str, object] | None = None,
) -> Decision:
    """An insert: the row is added, unless it is there already.

    A row with the same global id and the same values is the insert itself, applied before
    (a retry whose answer was lost): it is answered ``applied`` again. Any other row with
    that id refuses the insert.

    Args:
        change: the insert.
        node: the replica that sent it.
        existing: the server's row with the change's global id, with its values, or ``None``.
        client: the change's values, canonical; needed when ``existing`` is given.
    """
    if existing is None:
        vector = {node: max(change.version_vector.get(node, 1), 1)}
        return Apply(ChangeStatus.APPLIED, 1, vector, InsertRow(change.values))
    if client is None:
        raise ValueError("an insert over an existing row needs the change's canonical values")
    if existing.read_values() == client:
        return Apply(ChangeStatus.APPLIED, existing.version, existing.vector)
    return Reject(f"{change.layer!r} has a row with global id {change.global_id}")


def decide_gone(
    change: Change,
    policy: ConflictPolicy,
    deleted: DeletedRow | None,
    client: Mapping[str, object] | None = None,
) -> Decision:
    """An update or delete of a row the server does not have.

    Args:
        change: the update or delete.
        policy: the layer's conflict policy.
        deleted: the row as the server deleted it (its journal's last entry of the row is a
            delete), or ``None`` when it never had it.
        client: the change's values, canonical; needed for an update of a deleted row.

    Returns:
        A refusal for a row the server never had; a delete of a deleted row is ``applied``
        (nothing to do); an update of a deleted row is a conflict
        (:data:`ConflictKind.UPDATE_DELETE`) the policy settles or parks. When the update
        wins, the row comes back at the version after the one it was deleted at, its vector
        counting the edits it had then and the device's: other devices may hold it as it was,
        and their edits of it must not look newer than the row (forged).
    """
    if deleted is None:
        return Reject(f"{change.layer!r} has no row {change.global_id}")
    if change.kind is SyncChangeKind.DELETE:
        return Apply(ChangeStatus.APPLIED, None, None)
    if client is None:
        raise ValueError("an update of a deleted row needs the change's canonical values")
    outcome = resolve_delete(policy, False, parse_timestamp(change.hlc), deleted.at)
    record = ConflictRecord(
        ConflictKind.UPDATE_DELETE, tuple(change.changed), dict(change.base_values),
        dict(client), None, None, policy,
    )  # fmt: skip
    if outcome.winner is None:
        return Park(record, outcome.reason, None, None)
    if outcome.winner is Side.CLIENT:
        version = deleted.version + 1
        return Apply(
            ChangeStatus.MERGED, version, merge(deleted.vector, change.version_vector),
            InsertRow(change.values, version), conflict=record, resolution=policy,
            reason=outcome.reason,
        )  # fmt: skip
    return Apply(
        ChangeStatus.MERGED, None, None, conflict=record, resolution=policy, reason=outcome.reason
    )


def decide_existing(change: Change, node: str, row: ServerRow) -> Decision | Concurrent:
    """An update or delete of a row the server has, by version vectors alone.

    The change descends from the server's row when the device had seen every edit of it
    (the change's vector, less its own edit, dominates the row's): it is applied as it is.
    Otherwise it was made concurrently with other edits: :class:`Concurrent`.

    Args:
        change: the update or delete.
        node: the replica that sent it.
        row: the server's row (its values are not needed).

    Returns:
        A refusal (a base version or vector entries the server never had: forged, or from
        another server), a fast-forward, or :class:`Concurrent`.
    """
    if change.base_version > row.version:
        return Reject(
            f"base version {change.base_version} is newer than the server's "
            f"{row.version}: forged, or from another server"
        )
    client_vector = change.version_vector
    forged = [k for k, v in client_vector.items() if k != node and v > row.vector.get(k, 0)]
    if forged:
        return Reject(f"the version vector claims edits the server never had ({forged[0]})")
    seen = dict(client_vector)
    seen[node] = max(seen.get(node, 0) - 1, 0)
    if not dominates(seen, row.vector):
        return Concurrent(row)
    if change.kind is SyncChangeKind.DELETE:
        return Apply(ChangeStatus.APPLIED, None, None, DeleteRow(row.version))
    vector = merge(row.vector, client_vector)
    values = {name: change.values[name] for name in change.changed if name in change.values}
    if not values:
        return Apply(ChangeStatus.APPLIED, row.version, vector or row.vector)
    return Apply(ChangeStatus.APPLIED, row.version + 1, vector, UpdateRow(values, row.version))


def edited_values(change: Change) -> dict[str, object]:
    """The values of the fields an update changed, as sent (for :func:`merge_update`'s
    ``client``, once made canonical)."""
    return {name: change.values[name] for name in change.changed if name in change.values}


def base_values(change: Change, client: Mapping[str, object]) -> dict[str, object]:
    """The values the fields of ``client`` had before the update, as sent (for
    :func:`merge_update`'s ``base``, once made canonical); a field missing is ``null``."""
    return {
        name: change.base_values.get(name)
        for name in change.changed
        if name in change.values and name in client
    }


def merge_update(
    change: Change,
    row: ServerRow,
    client: Mapping[str, object],
    base: Mapping[str, object],
) -> Decision | FieldConflict:
    """A concurrent update, merged field by field against its base
    (:func:`~offmaps.sync.merge.merge_fields`).

    Args:
        change: the update (:func:`decide_existing` said :class:`Concurrent`).
        row: the server's row, with its values.
        client: :func:`edited_values`, canonical.
        base: :func:`base_values`, canonical.

    Returns:
        ``merged``: the fields the server did not change differently are written (nothing,
        when it holds them already); the row's vector counts both sides' edits. Fields changed
        on both sides to different values make a :class:`FieldConflict`.
    """
    server = row.read_values()
    merged = merge_fields(list(client), base, client, server)
    vector = merge(row.vector, change.version_vector)
    if merged.conflicts:
        return FieldConflict(
            row, vector, dict(merged.values), merged.conflicts, dict(base), dict(client),
            dict(server),
        )  # fmt: skip
    return _merged(row, vector, merged.values)


def settle_update(
    change: Change,
    conflict: FieldConflict,
    policy: ConflictPolicy,
    server_time: Timestamp,
) -> Decision:
    """Settle a :class:`FieldConflict` by the layer's policy (:func:`~offmaps.sync.resolve`).

    Args:
        change: the update.
        conflict: what :func:`merge_update` found.
        policy: the layer's conflict policy.
        server_time: when the server's row was last written.

    Returns:
        :class:`Park` under ``manual``; otherwise the merge with the winner's values of the
        conflicting fields written too, and the conflict's record.
    """
    row = conflict.row
    outcome = resolve(
        policy, conflict.fields, conflict.client, conflict.server,
        parse_timestamp(change.hlc), server_time,
    )  # fmt: skip
    record = ConflictRecord(
        ConflictKind.UPDATE_UPDATE, conflict.fields, conflict.base, conflict.client,
        conflict.server, row.version, policy,
    )  # fmt: skip
    if outcome.winner is None:
        return Park(record, outcome.reason, row.version, row.vector, conflict.fields)
    values = {**conflict.values, **outcome.values}
    if not values:  # (the winner's values of conflicting fields are never none)
        return Apply(ChangeStatus.MERGED, row.version, conflict.vector or row.vector, None, record)
    return Apply(
        ChangeStatus.MERGED, row.version + 1, conflict.vector, UpdateRow(values, row.version),
        conflict=record, conflict_fields=conflict.fields, resolution=policy,
        reason=outcome.reason,
    )  # fmt: skip


def _merged(row: ServerRow, vector: Mapping[str, int], values: Mapping[str, object]) -> Apply:
    if not values:
        return Apply(ChangeStatus.MERGED, row.version, vector or row.vector)
    return Apply(ChangeStatus.MERGED, row.version + 1, vector, UpdateRow(values, row.version))


def delete_against_update(
    change: Change, row: ServerRow, policy: ConflictPolicy, server_time: Timestamp
) -> Decision:
    """A delete of a row the server updated since the device saw it: a conflict
    (:data:`ConflictKind.DELETE_UPDATE`) the policy settles or parks.

    Args:
        change: the delete (:func:`decide_existing` said :class:`Concurrent`).
        row: the server's row, with its values.
        policy: the layer's conflict policy.
        server_time: when the server's row was last written.

    Returns:
        :class:`Park` under ``manual``; the delete when the device wins; when the server
        wins, the row stays, its vector counting the device's edits as seen.
    """
    outcome = resolve_delete(policy, True, parse_timestamp(change.hlc), server_time)
    record = ConflictRecord(
        ConflictKind.DELETE_UPDATE, (), dict(change.base_values), {}, dict(row.read_values()),
        row.version, policy,
    )  # fmt: skip
    if outcome.winner is None:
        return Park(record, outcome.reason, row.version, row.vector)
    if outcome.winner is Side.CLIENT:
        return Apply(
            ChangeStatus.MERGED, None, None, DeleteRow(row.version),
            conflict=record, resolution=policy, reason=outcome.reason,
        )  # fmt: skip
    vector = merge(row.vector, change.version_vector)
    return Apply(
        ChangeStatus.MERGED, row.version, vector or row.vector,
        conflict=record, resolution=policy, reason=outcome.reason,
    )  # fmt: skip


# --- 3. attachments ------------------------------------------------------------------------


def decide_attachment(
    change: Change,
    *,
    exists: bool,
    row_exists: bool,
    max_bytes: int,
    uploaded_size: int | None = None,
) -> Apply | Reject:
    """An attachment added or deleted (:func:`admit` let it through).

    Args:
        change: the attachment change (with its attachment).
        exists: whether the server has the attachment (as the set's earlier changes left it).
        row_exists: whether the server has the row it belongs to.
        max_bytes: the largest attachment the server takes.
        uploaded_size: the size of the uploaded bytes with the attachment's SHA-256
            (``None``: none were uploaded); needed for an add.

    Returns:
        ``applied`` with nothing to write when the server already is as asked (a delete of
        an attachment it does not have, an add of one it has); the write; or a refusal (the
        row is gone, the bytes are too many, missing or not the size the change says).
    """
    ref = change.attachment
    if ref is None:
        return Reject("an attachment change needs its attachment")
    if change.kind is SyncChangeKind.ATTACHMENT_DELETE:
        write: Write | None = DeleteAttachment(ref) if exists else None
        return Apply(ChangeStatus.APPLIED, None, None, write)
    if exists:
        return Apply(ChangeStatus.APPLIED, None, None)
    if not row_exists:
        return Reject(f"{change.layer!r} has no row {change.global_id} any more")
    if ref.size > max_bytes:
        return Reject(f"attachment of {ref.size:,} bytes is over the limit of {max_bytes:,}")
    if uploaded_size is None:
        return Reject(f"the bytes of attachment {ref.sha256} were not uploaded")
    if uploaded_size != ref.size:
        return Reject(f"attachment {ref.sha256} is not {ref.size} bytes")
    return Apply(ChangeStatus.APPLIED, None, None, AddAttachment(ref))
