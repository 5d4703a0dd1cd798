"""Syncing an offline map with its server (ArcGIS ``OfflineMapSyncTask``), docs/sync.md.

A sync, per replica of the package: upload the attachment bytes the outbox needs (resumable,
hash-checked), then the outbox as change sets (the server answers each change; the answers are
recorded on the device), then download the server's changes since the replica's generation into
a file, check it whole (count and SHA-256), fetch the attachment bytes it names, and apply it
in one transaction. Every step can be interrupted: a retry sends the same change ids (the server
applies each once) and downloads again; the device's GeoPackage changes only in whole steps.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from offmaps.client.portal import Portal, raise_for_problem
from offmaps.client.uploads import send_parts
from offmaps.errors import (
    ConnectionFailedError,
    OffmapsError,
    SyncFailedError,
    UploadOffsetError,
)
from offmaps.offline.package import ATTACHMENTS_FOLDER, MobileMapPackage, PackageReplica
from offmaps.offline.replica import LocalReplica
from offmaps.schemas import SyncDirection
from offmaps.schemas.changeset import (
    MAX_CHANGES_PER_SET,
    AttachmentRef,
    Change,
    ChangeResult,
    ChangeSet,
    ChangeSetResult,
    ChangeStatus,
    DownloadEnd,
    DownloadHeader,
    ServerChange,
    SyncChangeKind,
)
from offmaps.schemas.jobs import JobStatus
from offmaps.storage.local import LocalBlobStore
from offmaps.sync.collector import collection_paused

if TYPE_CHECKING:
    from offmaps.client.scheduled import ScheduledUpdatesResult

__all__ = [
    "AsyncOfflineMapSyncTask",
    "LayerSyncResult",
    "OfflineMapSyncJob",
    "OfflineMapSyncResult",
    "OfflineMapSyncTask",
    "OfflineMapUpdatesInfo",
    "PreplannedScheduledUpdatesOption",
    "SyncOfflineMapParameters",
]

Progress = Callable[[float, str], None]
T = TypeVar("T")
_UPLOAD_CHUNK = 4 * 1024 * 1024
_RETRIES = 3
_DOWNLOAD_NAME = ".offmaps-sync-download.ndjson"


class PreplannedScheduledUpdatesOption(StrEnum):
    """Whether a sync applies a preplanned package's scheduled updates (ArcGIS
    ``PreplannedScheduledUpdatesOption``)."""

    NO_UPDATES = "no_updates"
    DOWNLOAD_ALL_UPDATES = "download_all_updates"


@dataclass
class SyncOfflineMapParameters:
    """How to sync (ArcGIS ``OfflineMapSyncParameters``).

    Attributes:
        sync_direction: which way edits travel; limited by each replica's own direction (a
            download-only replica never uploads).
        rollback_on_failure: when a change of a set is rejected, apply none of the set.
        layers: for replicas synced per layer, only these layers (GeoPackage layer names);
            ``None`` for all.
        batch_size: changes per change set.
    """

    sync_direction: SyncDirection = SyncDirection.BIDIRECTIONAL
    rollback_on_failure: bool = False
    layers: list[str] | None = None
    batch_size: int = 5_000
    preplanned_scheduled_updates_option: PreplannedScheduledUpdatesOption = field(
        default_factory=lambda: PreplannedScheduledUpdatesOption.DOWNLOAD_ALL_UPDATES
    )
    """For a preplanned package in a scheduled-update mode: whether the sync brings it to the
    area's newest package (its update files, or the package whole when the server says so)."""


@dataclass
class LayerSyncResult:
    """What a sync did to one layer or table."""

    layer: str
    uploaded: int = 0
    applied: int = 0
    merged: int = 0
    conflicts: int = 0
    rejected: int = 0
    downloaded: int = 0
    deleted: int = 0
    error: str | None = None
    rejections: list[str] = field(default_factory=list)
    """``<change id>: <reason>`` of rejected changes."""


@dataclass
class OfflineMapSyncResult:
    """What a sync did (ArcGIS ``OfflineMapSyncResult``)."""

    layer_results: dict[str, LayerSyncResult] = field(default_factory=dict)
    attachments_uploaded: int = 0
    attachments_to_upload: int = 0
    attachments_downloaded: int = 0
    fields_added: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Per replica (service name): why it failed."""
    scheduled_updates: ScheduledUpdatesResult | None = None
    """For a preplanned package with scheduled updates: what was applied."""

    @property
    def mobile_map_package_reopen_required(self) -> bool:
        """Whether the package must be opened again (it was replaced whole)."""
        found = self.scheduled_updates
        return found is not None and found.mobile_map_package_reopen_required

    @property
    def has_errors(self) -> bool:
        """Whether a replica failed or a change was rejected."""
        return bool(self.errors) or any(r.error or r.rejected for r in self.layer_results.values())

    @property
    def attachments(self) -> str:
        """``N of M attachments`` uploaded."""
        return f"{self.attachments_uploaded} of {self.attachments_to_upload} attachments"

    def layer(self, name: str) -> LayerSyncResult:
        """The result of layer ``name`` (created empty when absent)."""
        return self.layer_results.setdefault(name, LayerSyncResult(name))

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (the CLI's ``--json``)."""
        return {
            "layers": {
                name: {k: v for k, v in vars(r).items() if k != "layer"}
                for name, r in self.layer_results.items()
            },
            "attachments_uploaded": self.attachments_uploaded,
            "attachments_to_upload": self.attachments_to_upload,
            "attachments_downloaded": self.attachments_downloaded,
            "fields_added": self.fields_added,
            "errors": self.errors,
            "has_errors": self.has_errors,
            "scheduled_updates": (
                None if self.scheduled_updates is None else asdict(self.scheduled_updates)
            ),
            "mobile_map_package_reopen_required": self.mobile_map_package_reopen_required,
        }


@dataclass(frozen=True)
class OfflineMapUpdatesInfo:
    """What a sync would send each way, now (ArcGIS ``OfflineMapUpdatesInfo``, with sizes).

    Exact, not bounds: the server encodes the rows a download would send without sending
    them, and the device reads its outbox as an upload would. A sync may still move a little
    more: the server's own rows for changes it merges or refuses come back with their answers.
    """

    download_available: bool
    download_changes: int
    """Rows the server would send: upserts and deletions (rows deleted, or moved out of the
    replica's area or filters)."""
    upload_available: bool
    upload_changes: int
    """Changes the device would upload (several edits of one row travel as one change)."""
    download_deletes: int = 0
    """Of ``download_changes``, the deletions."""
    download_bytes: int = 0
    """Bytes to download: the change streams and the attachment files the device lacks."""
    download_attachments: int = 0
    """Attachment files to download."""
    upload_edits: int = 0
    """Outbox edits those changes carry (what ``sync status`` counts as pending)."""
    upload_bytes: int = 0
    """Bytes to upload: the change sets and the attachment bytes the server lacks."""
    upload_attachments: int = 0
    """Attachment files (or their remaining parts) to upload."""
    scheduled_updates_download_size: int = 0
    """For a preplanned package with scheduled updates: the bytes to download to reach the
    area's newest package (its update files and the attachment blobs their rows name that the
    package lacks, or the package whole when that is needed)."""
    full_package_required: bool = False
    """Whether the newest package comes whole (the updates cannot reach it, or weigh more)."""
    mobile_map_package_reopen_required: bool = False
    """Whether the package must be opened again after the sync (it is replaced whole)."""


@dataclass
class _Tally:
    """What one way of a sync would move, added up replica by replica."""

    changes: int = 0
    deletes: int = 0
    edits: int = 0
    bytes: int = 0
    files: int = 0


def _sync_layers(
    replica: PackageReplica, local: LocalReplica, parameters: SyncOfflineMapParameters
) -> list[str] | None:
    """The layers of ``replica`` a sync with ``parameters`` takes (``None``: all of them).

    Raises:
        SyncFailedError: layers are named but the replica syncs all its layers together.
    """
    wanted = parameters.layers
    if wanted is None:
        return None
    if replica.sync_model != "per_layer":
        raise SyncFailedError(f"{replica.service} syncs all its layers together (per_replica)")
    own = set(local.generations())
    return [name for name in wanted if name in own]


def _download_groups(
    replica: PackageReplica, local: LocalReplica, layers: list[str] | None
) -> list[tuple[list[str] | None, int]]:
    """The downloads of a replica, each with the layers it asks for (``None``: all) and the
    generation it asks from: one per layer (``per_layer``), or one for all."""
    generations = local.generations()
    groups: list[list[str] | None]
    if replica.sync_model == "per_layer":
        groups = [[name] for name in (layers or sorted(generations))]
    else:
        groups = [None]
    return [
        (group, min((generations[name] for name in group or generations), default=0))
        for group in groups
    ]


def _with_covered(changes: Sequence[Change], results: Sequence[ChangeResult]) -> list[ChangeResult]:
    """The answers to a set, and the same answers under the ids of the edits each change
    covers, so that every edit of the outbox is settled."""
    covers = {change.change_id: change.covers for change in changes if change.covers}
    answered = list(results)
    for result in results:
        answered += [
            result.model_copy(update={"change_id": covered})
            for covered in covers.get(result.change_id, ())
        ]
    return answered


def _allows(direction: str, wanted: SyncDirection, way: str) -> bool:
    both = {SyncDirection.BIDIRECTIONAL.value, way}
    return direction in both and wanted.value in both


class OfflineMapSyncTask:
    """Syncs an offline map package with the server it came from.

    Args:
        package: the package (loaded here when it is a path).
        portal: a connection to the package's server, signed in as the user who took the map
            offline.
    """

    def __init__(self, package: MobileMapPackage | Path | str, portal: Portal) -> None:
        self.package = (
            package if isinstance(package, MobileMapPackage) else MobileMapPackage(package)
        )
        self.package.load()
        self.portal = portal

    @property
    def replicas(self) -> list[PackageReplica]:
        """The package's replicas."""
        return list(self.package.manifest.replicas)

    def open_replica(self, replica: PackageReplica) -> LocalReplica:
        """The device side of a replica (sync tables and triggers installed on first open)."""
        return LocalReplica.open(
            self.package.path / replica.file,
            replica_id=replica.replica_id,
            generation=replica.generation,
        )

    def create_default_offline_map_sync_parameters(self) -> SyncOfflineMapParameters:
        """Parameters that sync every layer the way the replicas do (both ways when they
        differ: each replica's own direction still limits it)."""
        directions = {replica.sync_direction for replica in self.replicas}
        if len(directions) == 1:
            return SyncOfflineMapParameters(sync_direction=SyncDirection(directions.pop()))
        return SyncOfflineMapParameters()

    def sync_offline_map(self, parameters: SyncOfflineMapParameters) -> OfflineMapSyncJob:
        """A job that syncs the package; call ``start()`` or ``wait()``."""
        return OfflineMapSyncJob(self, parameters)

    def check_for_updates(
        self, parameters: SyncOfflineMapParameters | None = None
    ) -> OfflineMapUpdatesInfo:
        """What a sync with ``parameters`` (default: the default parameters) would download
        and upload now: rows and bytes, exactly (:class:`OfflineMapUpdatesInfo`).

        The device's pending edits are read as an upload would read them, without writing
        anything down; nothing is sent to the server but questions.
        """
        parameters = parameters or self.create_default_offline_map_sync_parameters()
        down = _Tally()
        up = _Tally()
        wanted: dict[str, int] = {}
        present = LocalBlobStore(self.package.path / ATTACHMENTS_FOLDER)
        for replica in self.replicas:
            with self.open_replica(replica) as local:
                layers = _sync_layers(replica, local, parameters)
                if layers == []:
                    continue
                if _allows(replica.sync_direction, parameters.sync_direction, "upload"):
                    self._measure_upload(replica, local, parameters, layers, up)
                if not _allows(replica.sync_direction, parameters.sync_direction, "download"):
                    continue
                for group, since in _download_groups(replica, local, layers):
                    query: dict[str, str | int] = {"since": since}
                    if group:
                        query["layers"] = ",".join(group)
                    found = self.portal.request(
                        "GET", f"/api/replicas/{replica.replica_id}/updates", params=query
                    )
                    down.changes += int(found["changes"])
                    down.deletes += int(found.get("deletes", 0))
                    down.bytes += int(found.get("bytes", 0))
                    if replica.attachment_sync_direction == "bidirectional":
                        for ref in found.get("attachments", ()):
                            wanted[str(ref["sha256"])] = int(ref["size"])
        lacking = {sha: n for sha, n in wanted.items() if not present.exists(sha)}
        from offmaps.client.scheduled import package_state, plan_updates  # noqa: PLC0415

        scheduled, full = 0, False
        state = package_state(self.package.path)
        if state is not None:
            plan = plan_updates(self.portal, state)
            full = plan["choice"] == "full"
            scheduled = {"none": 0, "updates": int(plan["updates_bytes"])}.get(
                plan["choice"], int(plan["full_bytes"])
            )
            if plan["choice"] == "updates":  # and the photos their rows name it lacks
                named = {
                    str(sha): int(size)
                    for entry in plan["files"]
                    for sha, size in entry.get("attachments", {}).items()
                }
                scheduled += sum(n for sha, n in named.items() if not present.exists(sha))
        return OfflineMapUpdatesInfo(
            download_available=down.changes > 0 or scheduled > 0,
            download_changes=down.changes,
            upload_available=up.changes > 0,
            upload_changes=up.changes,
            download_deletes=down.deletes,
            download_bytes=down.bytes + sum(lacking.values()),
            download_attachments=len(lacking),
            upload_edits=up.edits,
            upload_bytes=up.bytes,
            upload_attachments=up.files,
            scheduled_updates_download_size=scheduled,
            full_package_required=full,
            mobile_map_package_reopen_required=full,
        )

    def _measure_upload(
        self,
        replica: PackageReplica,
        local: LocalReplica,
        parameters: SyncOfflineMapParameters,
        layers: list[str] | None,
        tally: _Tally,
    ) -> None:
        """Add what uploading ``replica``'s outbox would send to ``tally``: its change sets,
        as the upload batches them, and the attachment bytes the server lacks."""
        seen: set[uuid.UUID] = set()
        blobs: dict[str, int] = {}
        while changes := local.pending(
            layers, limit=parameters.batch_size, skip=seen, preview=True
        ):
            change_set = ChangeSet(
                change_set_id=uuid.uuid4(),
                replica_id=replica.replica_id,
                changes=changes,
                rollback_on_failure=parameters.rollback_on_failure,
            )
            tally.bytes += len(change_set.model_dump_json().encode())
            tally.changes += len(changes)
            tally.edits += sum(1 + len(change.covers) for change in changes)
            seen.update(cid for change in changes for cid in (change.change_id, *change.covers))
            if replica.attachment_sync_direction != "none":
                blobs.update(
                    (change.attachment.sha256, change.attachment.size)
                    for change in changes
                    if change.kind is SyncChangeKind.ATTACHMENT_ADD and change.attachment
                )
        for sha256, size in blobs.items():
            state = self.portal.request(
                "GET", f"/api/replicas/{replica.replica_id}/uploads/{sha256}"
            )
            rest = 0 if state["complete"] else max(size - int(state["received"]), 0)
            tally.bytes += rest
            tally.files += 1 if rest or not state["complete"] else 0

    def unregister_geodatabases(self) -> None:
        """Release the package's replicas on the server: they will not sync again."""
        for replica in self.replicas:
            self.portal.request("DELETE", f"/api/replicas/{replica.replica_id}")


class OfflineMapSyncJob:
    """One sync of a package (ArcGIS ``OfflineMapSyncJob``): ``start()`` runs it in a
    thread, ``wait()`` until it ends; ``status``, ``progress`` and ``message`` follow it."""

    def __init__(self, task: OfflineMapSyncTask, parameters: SyncOfflineMapParameters) -> None:
        if parameters.batch_size < 1 or parameters.batch_size > MAX_CHANGES_PER_SET:
            raise SyncFailedError(f"batch_size must be 1 to {MAX_CHANGES_PER_SET:,}")
        if parameters.layers is not None:
            manifest = task.package.manifest
            files = {replica.file for replica in manifest.replicas}
            synced = {
                layer.layer
                for layer in [*manifest.layers, *manifest.tables]
                if layer.file in files and layer.layer
            }
            unknown = sorted(set(parameters.layers) - synced)
            if unknown:
                raise SyncFailedError(f"no replica of the package has layer {unknown[0][:64]!r}")
        self.task = task
        self.parameters = parameters
        self.status = JobStatus.NOT_STARTED
        self.progress = 0.0
        self.message = ""
        self.result = OfflineMapSyncResult()
        self.error: OffmapsError | None = None
        self._thread: threading.Thread | None = None
        self._on_progress: Progress | None = None

    def start(self) -> None:
        """Run the sync in a background thread."""
        if self._thread is not None:
            return
        self.status = JobStatus.RUNNING
        self._thread = threading.Thread(target=self._run, name="offmaps-sync", daemon=True)
        self._thread.start()

    def wait(self, *, on_progress: Progress | None = None) -> OfflineMapSyncResult:
        """Run (or follow) the sync to its end; returns its result.

        Raises:
            SyncFailedError: a step failed after retries (the device kept everything; run the
                sync again).
        """
        self._on_progress = on_progress
        if self._thread is None:
            self.status = JobStatus.RUNNING
            self._run()
        else:
            self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def _report(self, fraction: float, message: str) -> None:
        self.progress = max(self.progress, min(fraction, 1.0))
        self.message = message
        if self._on_progress is not None:
            self._on_progress(self.progress, message)

    def _scheduled_updates(self) -> None:
        """Bring a preplanned package with scheduled updates to the area's newest package."""
        from offmaps.client.scheduled import apply_scheduled_updates  # noqa: PLC0415

        task = self.task
        applied = apply_scheduled_updates(
            task.portal, task.package.path, on_progress=lambda f, m: self._report(0.5 + 0.5 * f, m)
        )
        self.result.scheduled_updates = applied
        if applied is not None and applied.choice != "none":
            task.package = MobileMapPackage(task.package.path).load()  # the files changed

    def _run(self) -> None:
        """Sync every replica; one that fails does not stop the others (its error is in the
        result's ``errors``), and the job fails at the end."""
        errors = self.result.errors
        replicas = self.task.replicas
        option = self.parameters.preplanned_scheduled_updates_option
        scheduled = option is PreplannedScheduledUpdatesOption.DOWNLOAD_ALL_UPDATES
        for index, replica in enumerate(replicas):
            share = 1 / max(len(replicas), 1)
            try:
                _ReplicaSync(self, replica, index * share, share).run()
            except SyncFailedError as exc:
                errors[replica.service] = str(exc)
            except OffmapsError as exc:
                errors[replica.service] = f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                errors[replica.service] = f"the package cannot be written: {exc}"
        if scheduled:  # after the uploads: the device's new features are on the server first
            try:
                self._scheduled_updates()
            except OffmapsError as exc:
                errors["scheduled updates"] = f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                errors["scheduled updates"] = f"the package cannot be written: {exc}"
        if errors:
            self.error = SyncFailedError(
                "; ".join(f"{service}: {reason}" for service, reason in errors.items())
            )
            self.status = JobStatus.FAILED
            return
        self._report(1.0, "sync finished")
        self.status = JobStatus.SUCCEEDED


class _ReplicaSync:
    """The sync of one replica: upload, then download."""

    def __init__(
        self, job: OfflineMapSyncJob, replica: PackageReplica, start: float, share: float
    ) -> None:
        self.job = job
        self.replica = replica
        self.portal = job.task.portal
        self.root = job.task.package.path
        self.start = start
        self.share = share
        self.path = f"/api/replicas/{replica.replica_id}"
        self.attachments = LocalBlobStore(self.root / ATTACHMENTS_FOLDER)

    def report(self, fraction: float, message: str) -> None:
        self.job._report(self.start + self.share * fraction, f"{self.replica.service}: {message}")

    def layers(self, local: LocalReplica) -> list[str] | None:
        return _sync_layers(self.replica, local, self.job.parameters)

    def run(self) -> None:
        parameters = self.job.parameters
        self.remove_leftovers()
        with self.job.task.open_replica(self.replica) as local:
            layers = self.layers(local)
            if layers == []:
                return
            if _allows(self.replica.sync_direction, parameters.sync_direction, "upload"):
                self.upload(local, layers)
            if _allows(self.replica.sync_direction, parameters.sync_direction, "download"):
                self.download(local, layers)

    def remove_leftovers(self) -> None:
        """Remove the partial files of a sync that was killed (they are never read)."""
        (self.root / _DOWNLOAD_NAME).unlink(missing_ok=True)
        for part in self.attachments.root.glob(".blob-*.partial"):
            part.unlink(missing_ok=True)

    # --- upload ----------------------------------------------------------------------------

    def refresh_conflicts(self, local: LocalReplica) -> None:
        """Take the answers of parked changes a person has settled on the server since."""
        settled = []
        for entry in local.outbox(ChangeStatus.CONFLICT, limit=10_000):
            found = ChangeResult.model_validate(
                self.portal.request("GET", f"{self.path}/changes/{entry.change_id}")
            )
            if found.status is not ChangeStatus.CONFLICT:
                settled.append(found)
        if settled:
            local.record_results(settled)

    def upload(self, local: LocalReplica, layers: list[str] | None) -> None:
        """Upload the outbox set by set. The next set is read while the server merges the
        current one, and sent before the current one's answers are recorded, so the device
        and the server work at the same time."""
        parameters = self.job.parameters
        self.refresh_conflicts(local)
        total = max(local.pending_count(layers), 1)
        done = 0
        with ThreadPoolExecutor(1, thread_name_prefix="offmaps-upload") as sender:
            with collection_paused():
                changes = local.pending(
                    layers, limit=parameters.batch_size, on_rejected=self.rejected_on_device
                )
                sent = self.submit(sender, changes) if changes else None
            while sent is not None:
                with collection_paused():  # a set's objects all live until it is answered
                    in_flight = {cid for c in changes for cid in (c.change_id, *c.covers)}
                    following = local.pending(
                        layers,
                        limit=parameters.batch_size,
                        skip=in_flight,
                        on_rejected=self.rejected_on_device,
                    )
                    answer = sent.result()
                    # a set rolled back stops the upload: the rest waits for the next sync
                    rolled_back = any(r.status is ChangeStatus.PENDING for r in answer.results)
                    sent = None
                    if following and not rolled_back:
                        sent = self.submit(sender, following)
                    local.record_results(_with_covered(changes, answer.results))
                    self.take_rows(local, answer)
                    self.count(changes, answer)
                done += sum(1 + len(c.covers) for c in changes)
                self.report(0.5 * done / total, f"uploaded {done:,} of {total:,} changes")
                changes = following

    def submit(self, sender: ThreadPoolExecutor, changes: list[Change]) -> Future[ChangeSetResult]:
        """Upload the attachment bytes a set needs, then send the set in ``sender``."""
        self.upload_attachments(changes)
        change_set = ChangeSet(
            change_set_id=uuid.uuid4(),
            replica_id=self.replica.replica_id,
            changes=changes,
            rollback_on_failure=self.job.parameters.rollback_on_failure,
        )
        return sender.submit(self.send, change_set)

    def rejected_on_device(self, layer: str, change_id: str, reason: str) -> None:
        """Count an edit the device rejected before upload (an unreadable geometry, say)."""
        result = self.job.result.layer(layer)
        result.rejected += 1
        result.rejections.append(f"{change_id}: {reason}")

    def count(self, changes: Sequence[Change], answer: ChangeSetResult) -> None:
        """Add a set's answers to the per-layer results."""
        by_id = {c.change_id: c for c in changes}
        for found in answer.results:
            change = by_id[found.change_id]
            layer = self.job.result.layer(change.layer)
            edits = 1 + len(change.covers)  # counted in edits, as the outbox holds them
            layer.uploaded += edits
            if found.status is ChangeStatus.APPLIED:
                layer.applied += edits
            elif found.status is ChangeStatus.MERGED:
                layer.merged += edits
            elif found.status is ChangeStatus.CONFLICT:
                layer.conflicts += edits
            elif found.status is ChangeStatus.REJECTED:
                layer.rejected += edits
                layer.rejections.append(f"{found.change_id}: {found.reason}")

    def take_rows(self, local: LocalReplica, answer: ChangeSetResult) -> None:
        """Take the server's rows of merged, conflicting and rejected changes (the device
        keeps the edit itself in its outbox, and the server in its review queue)."""
        rows = {(r.row.layer, r.row.global_id): r.row for r in answer.results if r.row}
        if not rows:
            return
        if self.replica.attachment_sync_direction == "bidirectional":
            refs = [ref for row in rows.values() for ref in row.attachments or ()]
            self.job.result.attachments_downloaded += self.fetch_blobs(refs)
        header = DownloadHeader(
            replica_id=self.replica.replica_id, since=0, generation=0, layers=answer.layers
        )
        summary = local.apply_download(header, list(rows.values()), layers=[])
        self.job.result.fields_added += list(summary.fields_added)

    def send(self, change_set: ChangeSet) -> ChangeSetResult:
        """Post a change set; a dropped connection is retried with the same set (the server
        answers changes it has seen with their recorded answers)."""
        body = change_set.model_dump_json().encode()

        def post() -> ChangeSetResult:
            found = self.portal.request(
                "POST",
                f"{self.path}/changes",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            return ChangeSetResult.model_validate(found)

        return _retrying(post)

    def upload_attachments(self, changes: Sequence[Change]) -> None:
        result = self.job.result
        if self.replica.attachment_sync_direction == "none":
            return
        needed = {
            c.attachment.sha256: c.attachment.size
            for c in changes
            if c.kind is SyncChangeKind.ATTACHMENT_ADD and c.attachment is not None
        }
        result.attachments_to_upload += len(needed)
        for sha256, size in needed.items():
            self.upload_blob(sha256, size)
            result.attachments_uploaded += 1
            self.report(0.0, f"uploaded {result.attachments}")

    def upload_blob(self, sha256: str, size: int) -> None:
        """Upload an attachment's bytes from where the server's copy ends."""
        if not self.attachments.exists(sha256):
            raise SyncFailedError(f"attachment {sha256} is not in the package")
        url = f"{self.path}/uploads/{sha256}"

        def send_rest() -> None:
            with self.attachments.open(sha256) as source:
                send_parts(self.portal, url, source, size, _UPLOAD_CHUNK)

        _retrying(send_rest, UploadOffsetError)

    # --- download --------------------------------------------------------------------------

    def download(self, local: LocalReplica, layers: list[str] | None) -> None:
        result = self.job.result
        groups = _download_groups(self.replica, local, layers)
        target = self.root / _DOWNLOAD_NAME
        for index, (group, since) in enumerate(groups):
            names = group or sorted(local.generations())
            self.report(0.5 + 0.5 * index / len(groups), f"downloading {', '.join(names)}")
            try:
                checked = self.fetch(target, since, group)
                if self.replica.attachment_sync_direction == "bidirectional":
                    result.attachments_downloaded += self.fetch_blobs(checked.attachments)
                rows = _read_changes(target, sum(checked.counts.values()))
                summary = local.apply_download(checked.header, rows, layers=group)
            finally:
                target.unlink(missing_ok=True)
            for (layer, kind), count in checked.counts.items():
                found = result.layer(layer)
                if kind == "delete":
                    found.deleted += count
                else:
                    found.downloaded += count
            result.fields_added += list(summary.fields_added)

    def fetch(self, target: Path, since: int, layers: list[str] | None) -> _CheckedDownload:
        """The server's changes, downloaded whole into ``target`` and checked before use (a
        cut or corrupt download is fetched again)."""
        params: dict[str, str | int] = {"since": since}
        if layers:
            params["layers"] = ",".join(layers)

        def fetch_once() -> _CheckedDownload:
            self.stream_to(target, params)
            return _check_download(target)

        return _retrying(fetch_once)

    def stream_to(self, target: Path, params: dict[str, str | int]) -> None:
        url = httpx.URL(f"{self.portal.url}{self.path}/changes", params=params)
        with self.get(str(url)) as response, target.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)

    @contextmanager
    def get(self, url: str) -> Iterator[httpx.Response]:
        """A streamed ``GET``: problem documents raise their error, a cut connection
        ``ConnectionFailedError``."""
        try:
            with self.portal.stream(url, {}) as response:
                if not response.is_success:
                    response.read()
                    raise_for_problem(response)
                yield response
        except httpx.HTTPError as exc:
            raise ConnectionFailedError(f"{url}: the download was cut: {exc}") from None

    def fetch_blobs(self, refs: Iterable[AttachmentRef]) -> int:
        """Download the attachment bytes the device lacks; returns how many."""
        missing = {ref.sha256 for ref in refs if not self.attachments.exists(ref.sha256)}
        for sha256 in missing:
            with self.get(f"{self.portal.url}{self.path}/blobs/{sha256}") as response:
                stored = self.attachments.put_stream(response.iter_bytes())
            if stored.sha256 != sha256:
                raise SyncFailedError(f"attachment {sha256} arrived corrupt")
        return len(missing)


def _retrying(call: Callable[[], T], *also: type[Exception]) -> T:
    """``call()``, tried again (up to ``_RETRIES`` times in all) when the connection drops
    or one of ``also`` is raised: every step of a sync can be repeated safely."""
    errors: tuple[type[Exception], ...] = (ConnectionFailedError, *also)
    attempts = 0
    while True:
        try:
            return call()
        except errors:
            attempts += 1
            if attempts == _RETRIES:
                raise


@dataclass
class _CheckedDownload:
    """A downloaded stream whose end record matched: its header, how many records per layer
    and kind, and the attachments its rows name."""

    header: DownloadHeader
    counts: dict[tuple[str, str], int]
    attachments: list[AttachmentRef]


def _check_download(path: Path) -> _CheckedDownload:
    """Check a downloaded stream against its end record, reading it once without keeping its
    rows (a large download stays out of memory).

    Raises:
        ConnectionFailedError: the stream is cut, malformed, or does not match its end record.
    """
    digest = hashlib.sha256()
    header: DownloadHeader | None = None
    end: DownloadEnd | None = None
    counts: dict[tuple[str, str], int] = {}
    attachments: dict[str, AttachmentRef] = {}
    with path.open("rb") as source:
        for line in source:
            if end is not None:
                raise ConnectionFailedError("the download has data after its end record")
            try:
                kind = json.loads(line).get("type")
                if kind == "end":
                    end = DownloadEnd.model_validate_json(line)
                    continue
                digest.update(line)
                if kind == "header" and header is None:
                    header = DownloadHeader.model_validate_json(line)
                elif kind == "change" and header is not None:
                    change = ServerChange.model_validate_json(line)
                    key = (change.layer, change.kind)
                    counts[key] = counts.get(key, 0) + 1
                    for ref in change.attachments or ():
                        attachments[ref.sha256] = ref
                else:
                    raise ValueError(f"unexpected record {kind!r}")
            except ValueError as exc:  # most often a cut line: downloaded again
                raise ConnectionFailedError(
                    f"the download is malformed: {str(exc)[:200]}"
                ) from None
    if header is None or end is None:
        raise ConnectionFailedError("the download was cut short (no end record)")
    if end.count != sum(counts.values()) or end.sha256 != digest.hexdigest():
        raise ConnectionFailedError("the download does not match its end record")
    return _CheckedDownload(header, counts, list(attachments.values()))


def _read_changes(path: Path, count: int) -> Iterator[ServerChange]:
    """The rows of a checked download, one at a time: :func:`_check_download` made sure it
    is a header, then ``count`` rows, then the end record."""
    with path.open("rb") as source:
        next(source)
        for _, line in zip(range(count), source, strict=False):
            yield ServerChange.model_validate_json(line)


class AsyncOfflineMapSyncTask:
    """:class:`OfflineMapSyncTask` for asyncio code: every call runs its blocking counterpart
    in a worker thread (``asyncio.to_thread``); behaviour, errors and results are the same.

    asyncio is imported by these methods, not with the module: ~20 ms that a blocking sync (the
    ``offmaps sync`` command) does not need (docs/cli.md, "Start-up").
    """

    def __init__(self, package: MobileMapPackage | Path | str, portal: Portal) -> None:
        self.task = OfflineMapSyncTask(package, portal)

    def create_default_offline_map_sync_parameters(self) -> SyncOfflineMapParameters:
        """See :meth:`OfflineMapSyncTask.create_default_offline_map_sync_parameters`."""
        return self.task.create_default_offline_map_sync_parameters()

    async def check_for_updates(
        self, parameters: SyncOfflineMapParameters | None = None
    ) -> OfflineMapUpdatesInfo:
        """See :meth:`OfflineMapSyncTask.check_for_updates`."""
        import asyncio  # noqa: PLC0415 - asyncio code has it; `offmaps sync` does not

        return await asyncio.to_thread(self.task.check_for_updates, parameters)

    async def sync_offline_map(
        self, parameters: SyncOfflineMapParameters, *, on_progress: Progress | None = None
    ) -> OfflineMapSyncResult:
        """Sync the package to the end (:meth:`OfflineMapSyncJob.wait`) in a worker thread."""
        job = self.task.sync_offline_map(parameters)
        import asyncio  # noqa: PLC0415 - asyncio code has it; `offmaps sync` does not

        return await asyncio.to_thread(job.wait, on_progress=on_progress)

    async def unregister_geodatabases(self) -> None:
        """See :meth:`OfflineMapSyncTask.unregister_geodatabases`."""
        import asyncio  # noqa: PLC0415 - asyncio code has it; `offmaps sync` does not

        await asyncio.to_thread(self.task.unregister_geodatabases)
