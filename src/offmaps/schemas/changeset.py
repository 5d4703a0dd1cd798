"""The change set: the unit of sync between an offline replica and the server (docs/sync.md).

A device uploads a :class:`ChangeSet`, the ordered changes of its outbox; the server answers
with a :class:`ChangeSetResult`, one :class:`ChangeResult` per change. A device downloads the
server's changes since its generation as a stream of :class:`DownloadHeader`, then
:class:`ServerChange` records, then a :class:`DownloadEnd` that counts and hashes them.

Values on the wire are JSON: text, numbers, booleans, ISO 8601 dates and date-times, ``null``.
The geometry is one more field, :data:`GEOMETRY_FIELD`, as hex-encoded ISO WKB in the layer's
CRS (or ``null``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "GEOMETRY_FIELD",
    "MAX_CHANGES_PER_SET",
    "MAX_COVERED",
    "SERVER_NODE",
    "AttachmentRef",
    "Change",
    "ChangeResult",
    "ChangeSet",
    "ChangeSetResult",
    "ChangeStatus",
    "ConflictPolicy",
    "DownloadEnd",
    "DownloadHeader",
    "ServerChange",
    "SyncChangeKind",
    "SyncDirection",
    "VersionVector",
    "WireField",
    "WireLayer",
]

GEOMETRY_FIELD = "geom"
"""The name the geometry goes by among a change's fields (a reserved column name, so no
attribute field can take it)."""

SERVER_NODE = "server"
"""The version vector entry of edits made on the server itself (OGC API, the web, conflict
resolutions), and the HLC node of their timestamps."""

MAX_CHANGES_PER_SET = 20_000
MAX_COVERED = 1_000
"""At most this many earlier edits of a row in one change (:attr:`Change.covers`)."""
"""The most changes one change set may hold; a device splits its outbox into sets."""

ReplicaId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Node = Annotated[str, StringConstraints(pattern=r"^(server|[0-9a-f]{32})$")]
VersionVector = dict[Node, Annotated[int, Field(ge=0)]]
"""Per feature: for each replica (and :data:`SERVER_NODE`), how many of its edits the version
holds."""
Hlc = Annotated[str, StringConstraints(pattern=r"^\d{13}\.\d{6}\.(server|[0-9a-f]{32})$")]
"""A hybrid logical clock timestamp ``<wall ms, 13 digits>.<counter, 6 digits>.<node>``: its
string order is its time order, the node breaking ties deterministically."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class SyncChangeKind(StrEnum):
    """What a change does."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    ATTACHMENT_ADD = "attachment_add"
    ATTACHMENT_DELETE = "attachment_delete"


class ChangeStatus(StrEnum):
    """What became of a change (shown on the device and on the server)."""

    PENDING = "pending"
    """In the outbox, not acknowledged by the server yet."""
    APPLIED = "applied"
    """Applied as it was: nobody else had changed the row."""
    MERGED = "merged"
    """Applied together with concurrent edits of other fields, or settled by a conflict
    policy (the result's ``resolution`` says which)."""
    CONFLICT = "conflict"
    """The same field was changed on both sides (or a delete met an update): parked in the
    server's review queue for a person to decide."""
    REJECTED = "rejected"
    """Refused, with a reason (a field that is not editable, a wrong value type...)."""


class SyncDirection(StrEnum):
    """How feature edits sync (ArcGIS ``SyncDirection``).

    Here, not in :mod:`offmaps.schemas.webmap` (which re-exports it), so that syncing a package
    does not import the web map models.
    """

    NONE = "none"
    DOWNLOAD = "download"
    UPLOAD = "upload"
    BIDIRECTIONAL = "bidirectional"


class ConflictPolicy(StrEnum):
    """How a true conflict is settled, per map or per layer."""

    SERVER_WINS = "server_wins"
    CLIENT_WINS = "client_wins"
    LAST_WRITER_WINS = "last_writer_wins"
    """The later edit by hybrid logical clock wins, ties broken by node id."""
    MANUAL = "manual"
    """Both versions and their base go to the review queue (the default)."""


class AttachmentRef(_Model):
    """An attachment as it travels: its record; its bytes travel apart, by SHA-256."""

    attachment_id: UUID
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    content_type: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256


class Change(_Model):
    """One edit of the outbox, in the order it was made on the device."""

    change_id: UUID
    """Chosen by the device; the server acknowledges changes by it, and applies each once."""
    layer: Name
    """The layer or table."""
    global_id: UUID
    """The row edited (for attachment changes, the row the attachment belongs to)."""
    kind: SyncChangeKind
    base_version: Annotated[int, Field(ge=0)] = 0
    """The server version of the row the edit started from (0 for inserts)."""
    version_vector: VersionVector = Field(default_factory=dict)
    """The row's version vector on the device after this edit."""
    hlc: Hlc
    """When the edit was made, as a hybrid logical clock timestamp."""
    values: dict[str, Any] = Field(default_factory=dict)
    """Inserts and updates: every field of the row after the edit, geometry included."""
    changed: list[Name] = Field(default_factory=list)
    """Updates: the fields this edit changed."""
    base_values: dict[str, Any] = Field(default_factory=dict)
    """Updates: the changed fields' values before the edit (the base of the three-way
    merge). Deletes: the row as it was deleted."""
    attachment: AttachmentRef | None = None
    """Attachment changes: the attachment."""
    covers: Annotated[list[UUID], Field(max_length=MAX_COVERED)] = Field(default_factory=list)
    """The ids of earlier edits of the same row this change stands for. The device sends a
    row's pending edits as one change: the last edit's id, the row's values after it, the
    values before the first as the base. The server answers the covered ids as it answers
    this change."""


class ChangeSet(_Model):
    """The changes a device uploads at once."""

    change_set_id: UUID
    replica_id: ReplicaId
    changes: Annotated[list[Change], Field(max_length=MAX_CHANGES_PER_SET)]
    rollback_on_failure: bool = False
    """When true, one rejected change rejects the whole set and nothing is applied."""


class ChangeResult(_Model):
    """What became of one change."""

    change_id: UUID
    status: ChangeStatus
    reason: str | None = None
    """Why it was rejected, or how a conflict was settled."""
    version: int | None = None
    """The row's server version after the change (``None`` when the row is gone)."""
    version_vector: VersionVector | None = None
    """The row's server version vector after the change."""
    conflict_id: UUID | None = None
    """The review queue entry, for conflicts (and conflicts a policy settled)."""
    conflict_fields: list[str] = Field(default_factory=list)
    """The fields changed on both sides."""
    resolution: ConflictPolicy | None = None
    """The policy that settled a conflict."""
    row: ServerChange | None = None
    """For merged, conflicting and rejected changes: the row as the server now has it (a
    ``delete`` when it has none), so the device can take it."""


class ChangeSetResult(_Model):
    """The server's answer to a change set: one result per change, in order."""

    change_set_id: UUID
    replica_id: ReplicaId
    generation: int
    """The server generation after the set was applied."""
    results: list[ChangeResult]
    layers: list[WireLayer] = Field(default_factory=list)
    """The fields of the layers whose rows answers carry, as the server has them now."""


class WireField(_Model):
    """A field of a layer, as downloads describe it (to add fields the server gained)."""

    name: Name
    type: Literal["text", "integer", "real", "boolean", "date", "datetime"]
    nullable: bool = True
    alias: str | None = None
    max_length: int | None = None


class WireLayer(_Model):
    """A layer or table of the replica and its fields as the server has them now."""

    name: Name
    fields: list[WireField]


class DownloadHeader(_Model):
    """The first record of a download stream."""

    type: Literal["header"] = "header"
    replica_id: ReplicaId
    since: int
    """The generation the device had."""
    generation: int
    """The generation the download brings the device to."""
    layers: list[WireLayer]


class ServerChange(_Model):
    """A row that changed on the server since the device's generation, as it is now."""

    type: Literal["change"] = "change"
    layer: Name
    global_id: UUID
    kind: Literal["upsert", "delete"]
    """``delete`` also for rows that left the replica's area or filter."""
    version: int = 0
    version_vector: VersionVector = Field(default_factory=dict)
    values: dict[str, Any] = Field(default_factory=dict)
    """Upserts: every field of the row, geometry included."""
    attachments: list[AttachmentRef] | None = None
    """Upserts of layers whose attachments sync down: the row's attachments, all of them."""


class DownloadEnd(_Model):
    """The last record of a download stream: without it, or when it does not match, the
    download is incomplete and nothing is applied."""

    type: Literal["end"] = "end"
    count: int
    """How many change records came."""
    sha256: Sha256
    """SHA-256 of every byte of the stream before this record."""


ChangeResult.model_rebuild()
ChangeSetResult.model_rebuild()
