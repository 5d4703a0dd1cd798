"""Attachment records of a feature store, kept the same way by either backend.

An attachment is a file attached to a row. Its bytes live in a blob store under their SHA-256;
the store keeps its record in ``offmaps_attachments`` (``attachment_id, layer, globalid, name,
content_type, size, sha256, created_at``) and journals each addition and removal as a change of
the row, at the row's version, in the transaction that makes it. Deleting a row deletes its
records (each backend does that with the row). :class:`AttachmentsBase` holds the attachment
methods of the feature store protocol, written once over the backend's dialect and hooks.
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from offmaps.errors import AttachmentNotFoundError, InvalidFeatureError
from offmaps.features.dialect import ConnectionT
from offmaps.features.journal import JournalBase
from offmaps.features.model import Attachment, ChangeKind
from offmaps.features.validation import check_attachment

__all__ = ["RECORD_COLUMNS", "AttachmentsBase"]

RECORD_COLUMNS = "attachment_id, layer, globalid, name, content_type, size, sha256, created_at"
"""The columns of ``offmaps_attachments`` that make an :class:`Attachment`, in its order."""
_CHUNK = 500  # rows per query of :meth:`AttachmentsBase.attachments_of`


class AttachmentsBase(JournalBase[ConnectionT]):
    """The attachment (and journal) methods of the feature store protocol, written once over
    the backend's hooks: those of :class:`~offmaps.features.journal.JournalBase`, and
    :meth:`_write` and :meth:`_row_version`."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[tuple[ConnectionT, int]]:
        """A write transaction and the generation it will commit as."""

    @abstractmethod
    def _row_version(self, conn: ConnectionT, layer: str, global_id: UUID, *, lock: bool) -> int:
        """The version of a row, which stays as it is until the transaction ends when
        ``lock`` is set; raises ``LayerNotFoundError``, ``FeatureNotFoundError``."""

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
        check_attachment(name, content_type, size, sha256)
        created = datetime.now(UTC)
        attachment = Attachment(
            attachment_id=attachment_id or uuid.uuid4(),
            layer=layer,
            global_id=global_id,
            name=name,
            content_type=content_type,
            size=size,
            sha256=sha256,
            created_at=created.replace(microsecond=created.microsecond // 1000 * 1000),
        )
        if not isinstance(attachment.attachment_id, UUID):
            raise InvalidFeatureError("attachment_id must be a UUID")
        dialect = self._dialect
        with self._write() as (conn, generation):
            version = self._row_version(conn, layer, global_id, lock=True)
            try:
                conn.execute(
                    f"INSERT INTO {dialect.attachments_table} ({RECORD_COLUMNS}) "
                    f"VALUES ({', '.join([dialect.mark] * 8)})",
                    [
                        dialect.bind_id(attachment.attachment_id),
                        layer,
                        dialect.bind_id(global_id),
                        name,
                        content_type,
                        size,
                        sha256,
                        dialect.bind_time(attachment.created_at),
                    ],
                )
            except dialect.duplicate_errors:
                raise InvalidFeatureError(
                    f"attachment {attachment.attachment_id} exists already"
                ) from None
            except dialect.value_errors as exc:
                raise InvalidFeatureError(f"the attachment cannot be stored: {exc}") from None
            self._journal_attachment(
                conn, generation, attachment, version, ChangeKind.ATTACHMENT_ADD
            )
        return attachment

    def list_attachments(self, layer: str, global_id: UUID) -> tuple[Attachment, ...]:
        """The attachments of a row, oldest first; raises ``FeatureNotFoundError``."""
        dialect = self._dialect
        mark = dialect.mark
        with self._read() as conn:
            self._row_version(conn, layer, global_id, lock=False)
            rows = conn.execute(
                f"SELECT {RECORD_COLUMNS} FROM {dialect.attachments_table} "
                f"WHERE layer = {mark} AND globalid = {mark} "
                f"ORDER BY created_at, {dialect.attachment_order}",
                [layer, dialect.bind_id(global_id)],
            ).fetchall()
        return tuple(self._attachment(row) for row in rows)

    def attachments_of(
        self, layer: str, global_ids: Sequence[UUID]
    ) -> dict[UUID, tuple[Attachment, ...]]:
        """The attachments of many rows in one query, oldest first, by row: rows with none,
        or that do not exist, are not keys. Raises ``LayerNotFoundError``."""
        dialect = self._dialect
        found: dict[UUID, list[Attachment]] = {}
        with self._read() as conn:
            self._layer(layer)
            for start in range(0, len(global_ids), _CHUNK):
                chunk = global_ids[start : start + _CHUNK]
                marks = ", ".join([dialect.mark] * len(chunk))
                rows = conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM {dialect.attachments_table} "
                    f"WHERE layer = {dialect.mark} AND globalid IN ({marks}) "
                    f"ORDER BY created_at, {dialect.attachment_order}",
                    [layer, *map(dialect.bind_id, chunk)],
                ).fetchall()
                for row in rows:
                    attachment = self._attachment(row)
                    found.setdefault(attachment.global_id, []).append(attachment)
        return {gid: tuple(attachments) for gid, attachments in found.items()}

    def get_attachment(self, layer: str, attachment_id: UUID) -> Attachment:
        """One attachment; raises ``AttachmentNotFoundError``."""
        dialect = self._dialect
        mark = dialect.mark
        with self._read() as conn:
            self._layer(layer)
            row = None
            if isinstance(attachment_id, UUID):  # no record has another, and a driver may choke
                row = conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM {dialect.attachments_table} "
                    f"WHERE layer = {mark} AND attachment_id = {mark}",
                    [layer, dialect.bind_id(attachment_id)],
                ).fetchone()
        if row is None:
            raise AttachmentNotFoundError(f"{layer!r} has no attachment {attachment_id}")
        return self._attachment(row)

    def delete_attachment(self, layer: str, attachment_id: UUID) -> None:
        """Remove an attachment's record (its blob may be shared and stays)."""
        attachment = self.get_attachment(layer, attachment_id)
        dialect = self._dialect
        with self._write() as (conn, generation):
            version = self._row_version(conn, layer, attachment.global_id, lock=True)
            deleted = conn.execute(
                f"DELETE FROM {dialect.attachments_table} WHERE attachment_id = {dialect.mark}",
                [dialect.bind_id(attachment.attachment_id)],
            ).rowcount
            if not deleted:
                raise AttachmentNotFoundError(f"{layer!r} has no attachment {attachment_id}")
            self._journal_attachment(
                conn, generation, attachment, version, ChangeKind.ATTACHMENT_DELETE
            )

    def _attachment(self, row: Sequence[Any]) -> Attachment:
        """A row of :data:`RECORD_COLUMNS` as an attachment."""
        dialect = self._dialect
        return Attachment(
            attachment_id=dialect.read_id(row[0]),
            layer=row[1],
            global_id=dialect.read_id(row[2]),
            name=row[3],
            content_type=row[4],
            size=int(row[5]),
            sha256=row[6],
            created_at=dialect.read_time(row[7]),
        )
