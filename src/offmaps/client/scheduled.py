"""Scheduled updates of a preplanned package on the device (docs/preplanned.md, "On the device").

A package downloaded in a scheduled-update mode records, in each file update files keep fresh,
which area, epoch and package it holds and the head of its chain (docs/update-files.md).
:func:`package_state` reads that back; :func:`plan_updates` asks the server what to download
(``GET /api/maps/{id}/areas/{area}/updates``); :func:`apply_scheduled_updates` brings the
package up to the newest:

- **updates**: every update file of the plan is downloaded into ``.offmaps-updates/`` (resumed
  with ``Range``, each checked against its SHA-256) before anything changes, and so is every
  attachment blob their rows name that the package lacks (``GET .../areas/{area}/files/{sha}``,
  into ``.offmaps-updates/attachments/``); the files they update are copied into
  ``.offmaps-staging/`` (in the kernel) and the updates applied there, each file's in order
  (each checked against the file's chain, and applied once it is downloaded and checked), the
  files side by side in threads; the new blobs are put beside them and the manifest rewritten
  (listing the blobs, and the size and SHA-256 of each updated file that ``verify_package``
  checks: not a replica's); then an intent file names what moves, each staged file (blobs first)
  is renamed over the live one and the manifest last. A failure before the intent leaves the
  package as it was; a crash after it is rolled forward by the next call (:func:`recover`).
- **full**: the newest package is downloaded beside the folder (``DIR.offmaps-new``, resumable)
  and swapped in: ``DIR`` becomes ``DIR.offmaps-old``, the new one ``DIR``, and the old one is
  removed; a crash between the two renames is finished by the next call. The package must then
  be opened again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from offmaps.client.downloads import fetch_file
from offmaps.client.portal import Portal
from offmaps.errors import (
    ContainerError,
    FeatureNotFoundError,
    OffmapsError,
    PackageError,
    ReplicaNotFoundError,
    UpdateIntegrityError,
)
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import Insert
from offmaps.offline.package import (
    ATTACHMENTS_FOLDER,
    MANIFEST_NAME,
    PackageFile,
    PackageManifest,
    PackageReplica,
    file_entry,
    read_manifest,
    write_manifest,
)
from offmaps.offline.updates import (
    ChainState,
    FeatureUpdateReader,
    apply_feature_update,
    fold_wal,
    read_chain_state,
)
from offmaps.offline.updates.chain import find_chain_state
from offmaps.storage.copying import copy_file
from offmaps.storage.local import LocalBlobStore

__all__ = [
    "PreplannedPackageState",
    "ScheduledUpdatesResult",
    "apply_scheduled_updates",
    "package_state",
    "plan_updates",
    "recover",
]

Progress = Callable[[float, str], None]

UPDATES_FOLDER = ".offmaps-updates"
STAGING_FOLDER = ".offmaps-staging"
INTENT_FILE = ".offmaps-apply.json"
NEW_SUFFIX = ".offmaps-new"
OLD_SUFFIX = ".offmaps-old"
_CHAINED_SUFFIXES = (".gpkg", ".mbtiles", ".pmtiles")
_PMTILES = ".pmtiles"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PreplannedPackageState:
    """Which package of which area a folder holds, from its files' chain states.

    Attributes:
        area_id: the preplanned map area.
        map_id: its web map.
        epoch: the area's epoch the package is of.
        number: the package number the files are at.
        files: each chained file's state, by path.
    """

    area_id: str
    map_id: str
    epoch: int
    number: int
    files: dict[str, ChainState]

    @property
    def href(self) -> str:
        """The area at the REST API (a path of the server)."""
        return f"/api/maps/{self.map_id}/areas/{self.area_id}"


@dataclass
class ScheduledUpdatesResult:
    """What :func:`apply_scheduled_updates` did.

    Attributes:
        choice: ``none``, ``updates`` or ``full``, as the server planned.
        from_number: the package the device held.
        to_number: the package it holds now.
        updates_applied: update files applied.
        bytes_downloaded: bytes of update files, or of the full package.
        full_package_replaced: whether the package was replaced by the newest whole.
        reason: why the full package was taken, if it was.
        released: the replicas of the replaced package unregistered on the server.
        carried: features the device added and had not uploaded, carried into the package
            that replaced it whole (they go up with the next sync).
    """

    choice: str
    from_number: int
    to_number: int
    updates_applied: int = 0
    bytes_downloaded: int = 0
    full_package_replaced: bool = False
    reason: str | None = None
    released: list[str] = field(default_factory=list)
    carried: int = 0

    @property
    def mobile_map_package_reopen_required(self) -> bool:
        """Whether the package must be opened again (it was replaced whole)."""
        return self.full_package_replaced


def package_state(folder: Path) -> PreplannedPackageState | None:
    """The preplanned package ``folder`` holds, or ``None`` for any other package (on demand,
    or preplanned in a mode without scheduled updates).

    Raises:
        PackageError: its files disagree about which package they hold (a package put together
            by hand).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    states: dict[str, ChainState] = {}
    for entry in manifest.files:
        if not entry.path.endswith(_CHAINED_SUFFIXES):
            continue
        try:
            state = _chain_state(folder / entry.path)
        except (sqlite3.Error, OSError, ContainerError):
            continue
        if state is not None:
            states[entry.path] = state
    if not states:
        return None
    held = {(s.area_id, s.epoch, s.package_number) for s in states.values()}
    if len(held) != 1:
        raise PackageError(f"{folder}: its files hold different packages of their area: {held}")
    ((area_id, epoch, number),) = held
    if manifest.source_map_id is None:
        raise PackageError(f"{folder}: the package names no web map")
    return PreplannedPackageState(area_id, manifest.source_map_id, epoch, number, states)


def _chain_state(path: Path) -> ChainState | None:
    """The chain state of a package file, read without leaving SQLite's ``-wal`` and ``-shm``
    beside it: a read-only reader of a file in WAL mode creates them and cannot remove them, and
    beside a file that is not a replica's they are strays to ``verify_package``. A file with
    no log or journal beside it is whole, and read as it is (``immutable``). A PMTiles archive
    keeps its state in its JSON metadata."""
    if path.suffix == _PMTILES:
        from offmaps.offline.updates.tiles import read_archive_chain_state  # noqa: PLC0415

        return read_archive_chain_state(path)
    if any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-journal")):
        return read_chain_state(path)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return find_chain_state(conn)
    finally:
        conn.close()


def plan_updates(portal: Portal, state: PreplannedPackageState) -> dict[str, Any]:
    """What the server says the device downloads to reach the newest package.

    Raises:
        MapAreaDeletedError: the author deleted the area (the package stays as it is).
    """
    answer: dict[str, Any] = portal.request(
        "GET", f"{state.href}/updates", params={"from": state.number, "epoch": state.epoch}
    )
    return answer


def recover(folder: Path) -> None:
    """Finish what an interrupted apply or swap left: roll an apply forward past its intent
    file, put a swapped-in package in place, and remove leftovers."""
    folder = Path(folder)
    new, old = _sibling(folder, NEW_SUFFIX), _sibling(folder, OLD_SUFFIX)
    if not folder.exists() and old.exists() and (new / MANIFEST_NAME).exists():
        new.replace(folder)  # the crash fell between the two renames of a swap
    if old.exists() and folder.exists():
        shutil.rmtree(old, ignore_errors=True)
    intent = folder / INTENT_FILE
    if intent.exists():
        try:
            names = json.loads(intent.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        _move_in(folder, [str(name) for name in names])
        intent.unlink(missing_ok=True)
        shutil.rmtree(folder / UPDATES_FOLDER, ignore_errors=True)  # applied: not needed
    shutil.rmtree(folder / STAGING_FOLDER, ignore_errors=True)


def apply_scheduled_updates(
    portal: Portal, folder: Path, *, on_progress: Progress | None = None
) -> ScheduledUpdatesResult | None:
    """Bring the preplanned package in ``folder`` to the area's newest package: by its update
    files, or by the newest package whole when the server says so. ``None`` for a package that
    takes no scheduled updates.

    Raises:
        MapAreaDeletedError: the area was deleted (the package stays as it is).
        DownloadError: a file could not be downloaded intact (call again to resume).
        UpdateChainError, UpdateIntegrityError: an update does not follow the package or is
            damaged (nothing changed).
        PackageError: the package cannot be written.
    """
    report = on_progress or (lambda fraction, message: None)
    folder = Path(folder)
    recover(folder)
    state = package_state(folder)
    if state is None:
        return None
    report(0.02, f"package {state.number}: asking for updates")
    plan = plan_updates(portal, state)
    result = ScheduledUpdatesResult(plan["choice"], state.number, state.number)
    if plan["choice"] == "none":
        return result
    if plan["choice"] == "updates":
        _apply_updates(portal, folder, state, plan, result, report)
    else:
        _replace_whole(portal, folder, state, plan, result, report)
    return result


def _apply_updates(
    portal: Portal,
    folder: Path,
    state: PreplannedPackageState,
    plan: dict[str, Any],
    result: ScheduledUpdatesResult,
    report: Progress,
) -> None:
    entries: list[dict[str, Any]] = list(plan["files"])
    work = folder / UPDATES_FOLDER
    staging = folder / STAGING_FOLDER
    try:
        touched, blobs = _stage(portal, folder, staging, state, entries, work, report)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the package is as it was
        raise
    report(0.92, "moving the updated files in")
    moving = [*(blob.path for blob in blobs), *touched, MANIFEST_NAME]
    _write_intent(folder, moving)
    _move_in(folder, moving)
    (folder / INTENT_FILE).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    result.to_number = int(plan["to"])
    result.updates_applied = len(entries)
    result.bytes_downloaded = sum(int(entry["size"]) for entry in entries)
    result.bytes_downloaded += sum(blob.size for blob in blobs)
    report(1.0, f"package {result.to_number}")


def _blob_path(sha256: str) -> str:
    """Where a package keeps an attachment blob: ``attachments/ab/cd/<sha256>``."""
    return f"{ATTACHMENTS_FOLDER}/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _fetch_blobs(
    portal: Portal,
    folder: Path,
    state: PreplannedPackageState,
    entries: list[dict[str, Any]],
    work: Path,
    report: Progress,
) -> list[PackageFile]:
    """Download into ``work`` every attachment blob the feature updates' rows name that the
    package does not hold (resumable, each checked against its SHA-256 and size, as the
    update files are); their manifest entries."""
    named: dict[str, int] = {}
    for entry in entries:
        if entry["kind"] != "features":
            continue
        update = work / str(entry["path"])
        with FeatureUpdateReader(update) as reader:
            blobs = reader.blobs()
        odd = next((sha for sha in blobs if not _SHA256.fullmatch(sha)), None)
        if odd is not None:
            raise UpdateIntegrityError(f"{update}: names an attachment {odd[:80]!r}", path=update)
        named.update(blobs)
    wanted = [
        PackageFile(path=_blob_path(sha256), sha256=sha256, size=size)
        for sha256, size in sorted(named.items())
        if not (folder / _blob_path(sha256)).is_file()
    ]
    for index, blob in enumerate(wanted):
        report(0.65, f"downloading attachment {index + 1} of {len(wanted)}")
        entry = {**blob.model_dump(), "href": f"{state.href}/files/{blob.sha256}"}
        fetch_file(portal, entry, work, again="sync again to go on")
    return wanted


def _stage(
    portal: Portal,
    folder: Path,
    staging: Path,
    state: PreplannedPackageState,
    entries: list[dict[str, Any]],
    work: Path,
    report: Progress,
) -> tuple[list[str], list[PackageFile]]:
    """Download the update files and the attachment blobs they name into ``work``, copy the
    files they are for into ``staging`` and apply them there in order, put the blobs beside
    them and write the manifest listing them; the files changed (not the blobs) and the blobs.

    Each file's chain is its own, so once every download is here and checked the files are
    staged side by side, one thread each (a tile archive's copy, updates and hash beside the
    replica's updates: SQLite, ``copy_file_range`` and SHA-256 let go of the GIL); each file's
    updates stay in order. Nothing of the package changes here: a failure leaves it as it was.
    """
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    touched = sorted({str(entry["file"]) for entry in entries})
    missing = [name for name in touched if name not in state.files]
    if missing:
        raise PackageError(f"{folder}: the updates are for files it does not hold: {missing}")
    manifest = read_manifest(folder)
    unchecked = manifest.replica_files()
    total = sum(int(entry["size"]) for entry in entries) or 1
    done = 0
    for entry in entries:  # every update here and checked before anything is staged
        report(0.05 + 0.6 * done / total, f"downloading {entry['path']}")
        fetch_file(portal, entry, work, again="sync again to go on")
        done += int(entry["size"])
    blobs = _fetch_blobs(portal, folder, state, entries, work, report)
    report(0.65, f"applying {len(entries)} updates to {len(touched)} files")
    with ThreadPoolExecutor(
        max_workers=max(len(touched), 1), thread_name_prefix="offmaps-stage"
    ) as pool:
        futures = {
            name: pool.submit(
                _stage_file,
                folder,
                staging,
                name,
                [entry for entry in entries if entry["file"] == name],
                work,
                relist=name not in unchecked,
            )
            for name in touched
        }
    relisted: dict[str, PackageFile] = {}
    for name, future in futures.items():
        now = future.result()  # the first failure, once every file has ended
        if now is not None:
            relisted[name] = now
    for blob in blobs:
        target = staging / blob.path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:  # the downloaded copy stays until the package is updated: a retry needs it
            os.link(work / blob.path, target)
        except OSError:
            copy_file(work / blob.path, target)
        _fsync(target)  # whole on disk before the intent names it
    listed = {entry.path for entry in manifest.files}
    files = [relisted.get(entry.path, entry) for entry in manifest.files]
    files += [blob for blob in blobs if blob.path not in listed]
    write_manifest(staging, manifest.model_copy(update={"files": files}))
    return touched, blobs


def _stage_file(
    folder: Path,
    staging: Path,
    name: str,
    entries: list[dict[str, Any]],
    work: Path,
    *,
    relist: bool,
) -> PackageFile | None:
    """Stage one file: copy it, apply its updates in order, fold its log, make it durable.

    Returns:
        Its manifest entry as it is now when ``verify_package`` checks it (``relist``), else
        ``None`` (a replica's file: its size and SHA-256 change with every edit and are not
        checked, so hashing it would be wasted).
    """
    from offmaps.offline.updates.tiles import (  # noqa: PLC0415 - tiles bring the containers
        apply_tile_update,
        apply_tile_updates,
    )

    live, target = folder / name, staging / name
    sqlite = target.suffix != _PMTILES  # a PMTiles archive is rewritten by each update
    if sqlite and _has_log(live):
        fold_wal(live)  # what a write-ahead log holds is in the file copied
    target.parent.mkdir(parents=True, exist_ok=True)
    copy_file(live, target)
    if not sqlite:  # its updates in one rewrite: each costs the whole archive
        apply_tile_updates(
            target,
            [(work / str(e["path"]), str(e["sha256"]), int(e["size"])) for e in entries],
        )
    for entry in entries if sqlite else []:  # not flushed commit by commit: made durable below
        apply = apply_feature_update if entry["kind"] == "features" else apply_tile_update
        apply(
            target,
            work / str(entry["path"]),
            sha256=str(entry["sha256"]),
            size=int(entry["size"]),
            durable=False,
        )
    if sqlite and (_has_log(target) or _in_wal_mode(target)):
        fold_wal(target, leave_wal_mode=True)  # one file, whole, to move in
    _fsync(target)  # durable before the intent names it
    return file_entry(staging, name) if relist else None


def _has_log(path: Path) -> bool:
    """Whether SQLite keeps a write-ahead log beside ``path`` (with frames or not)."""
    return Path(f"{path}-wal").exists()


def _in_wal_mode(path: Path) -> bool:
    """Whether the SQLite file ``path`` is in WAL mode (its header's read and write versions
    are 2), so that a reader would leave a ``-wal`` and ``-shm`` beside it."""
    with path.open("rb") as data:
        header = data.read(20)
    return header[18:20] == b"\x02\x02"


def _fsync(path: Path) -> None:
    """Flush a staged file to disk (opened for writing: Windows syncs no read-only handle)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_whole(
    portal: Portal,
    folder: Path,
    state: PreplannedPackageState,
    plan: dict[str, Any],
    result: ScheduledUpdatesResult,
    report: Progress,
) -> None:
    from offmaps.client.areas import (  # noqa: PLC0415 - the download job, only when needed
        PreplannedMapArea,
        create_default_download_preplanned_offline_map_parameters,
        download_preplanned_offline_map,
    )

    _check_pending(folder)  # before the download: what could not be kept is refused now
    document = portal.request("GET", state.href)
    area = PreplannedMapArea(portal, state.map_id, document)
    parameters = create_default_download_preplanned_offline_map_parameters(area)
    manifest = read_manifest(folder)
    if manifest.reference_basemap is not None:
        parameters.reference_basemap_directory = manifest.reference_basemap.directory
        parameters.reference_basemap_filename = manifest.reference_basemap.filename or ""
    new = _sibling(folder, NEW_SUFFIX)
    job = download_preplanned_offline_map(parameters, new)
    report(0.05, f"downloading package {plan['to']} whole: {plan.get('reason')}")
    job.wait(on_progress=lambda fraction, message: report(0.05 + 0.9 * fraction, message))
    result.carried = _carry_new_features(folder, new)
    old = _sibling(folder, OLD_SUFFIX)
    shutil.rmtree(old, ignore_errors=True)
    folder.replace(old)
    new.replace(folder)
    shutil.rmtree(old, ignore_errors=True)
    result.released = _release(portal, manifest)
    assert job.package is not None
    result.to_number = int(job.package["number"])
    result.bytes_downloaded = int(plan["full_bytes"])
    result.full_package_replaced = True
    result.reason = plan.get("reason")
    report(1.0, f"package {result.to_number}")


def _release(portal: Portal, replaced: PackageManifest) -> list[str]:
    """Unregister the replicas of a package replaced whole (an upload-new-features package's:
    the new package has replicas of its own), so they stop counting against the user's quota;
    the ids released. One the server no longer knows is released already; one the server
    cannot be asked about now stays registered (the result's ``released`` lacks it)."""
    released = []
    for replica in replaced.replicas:
        try:
            portal.request("DELETE", f"/api/replicas/{replica.replica_id}")
        except ReplicaNotFoundError:
            pass
        except OffmapsError:
            continue
        released.append(replica.replica_id)
    return released


def _pending(folder: Path, replica: PackageReplica) -> list[tuple[str, str, str]]:
    """The pending edits of a package's replica, in the order they were made: (layer, global
    id, kind)."""
    try:
        conn = sqlite3.connect(f"file:{folder / replica.file}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT layer, globalid, kind FROM offmaps_outbox WHERE status = 'pending' "
                "ORDER BY seq"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []  # no outbox: no edit waits
    return [(str(layer), str(gid), str(kind)) for layer, gid, kind in rows]


def _new_features(edits: list[tuple[str, str, str]]) -> tuple[list[tuple[str, str]], int]:
    """The features the device added among pending edits (layer, global id; in order), and how
    many pending edits are of other features (of the package: not kept by a replace)."""
    added = list(dict.fromkeys((layer, gid) for layer, gid, kind in edits if kind == "insert"))
    ours = set(added)
    return added, sum(1 for layer, gid, _ in edits if (layer, gid) not in ours)


def _check_pending(folder: Path) -> None:
    """Refuse to replace a package whose pending edits a replace cannot keep: any but the
    features the device added (and their attachments), which it carries into the new one.

    Raises:
        PackageError: edits of the package's own features wait to go up (sync again).
    """
    manifest = read_manifest(folder)
    others = sum(_new_features(_pending(folder, replica))[1] for replica in manifest.replicas)
    if others:
        raise PackageError(
            f"{folder}: {others} edits of the package's features are not uploaded yet: the "
            "package is not replaced by the newest whole until they are (sync again)"
        )


def _carry_new_features(folder: Path, new: Path) -> int:
    """Copy the features the device added and has not uploaded yet, with their attachments,
    from the package in ``folder`` into the newest one downloaded to ``new`` (its replica of
    the same service: they wait in its outbox, under the same global ids, for the next sync);
    how many. A feature the new package holds already (its upload reached the server, whose
    answer the device missed) is not added again; its attachments the package lacks are.

    Raises:
        PackageError: the new package has no replica of a service they belong to, or they
            do not fit its layers (nothing is lost: the old package stays).
    """
    carried = 0
    targets = {replica.service: replica for replica in read_manifest(new).replicas}
    for replica in read_manifest(folder).replicas:
        added, _ = _new_features(_pending(folder, replica))
        if not added:
            continue
        target = targets.get(replica.service)
        if target is None:
            raise PackageError(
                f"{new}: no replica of {replica.service!r} to keep {len(added)} features "
                "added on the device in"
            )
        old_blobs = LocalBlobStore(folder / ATTACHMENTS_FOLDER)
        new_blobs = LocalBlobStore(new / ATTACHMENTS_FOLDER)
        try:
            with (
                GeoPackageStore.open(folder / replica.file) as source,
                GeoPackageStore.open(new / target.file) as store,
            ):
                for layer, gid in added:
                    try:
                        feature = source.get_feature(layer, UUID(gid))
                    except FeatureNotFoundError:
                        continue  # added, then deleted here: nothing to keep
                    held: set[UUID] = set()
                    try:  # its upload reached the server, whose answer the device missed
                        held = {
                            a.attachment_id
                            for a in store.list_attachments(layer, feature.global_id)
                        }
                    except FeatureNotFoundError:
                        store.apply_edits(
                            [Insert(layer, feature.properties, feature.geometry, feature.global_id)]
                        )
                    for attachment in source.list_attachments(layer, feature.global_id):
                        if attachment.attachment_id in held:
                            continue
                        if not new_blobs.exists(attachment.sha256):
                            new_blobs.put(old_blobs.get(attachment.sha256))
                        store.add_attachment(
                            layer,
                            feature.global_id,
                            name=attachment.name,
                            content_type=attachment.content_type,
                            size=attachment.size,
                            sha256=attachment.sha256,
                            attachment_id=attachment.attachment_id,
                        )
                    carried += 1
        except OffmapsError as exc:
            raise PackageError(
                f"{new}: the features added on the device cannot be kept in the newest "
                f"package ({exc}); the package stays as it was"
            ) from exc
    return carried


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(folder.name + suffix)


def _write_intent(folder: Path, names: list[str]) -> None:
    temporary = folder / f"{INTENT_FILE}.partial"
    with temporary.open("w", encoding="utf-8") as out:
        json.dump({"files": names}, out)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(folder / INTENT_FILE)


def _move_in(folder: Path, names: list[str]) -> None:
    """Rename each staged file over the live one (what is gone was moved already)."""
    staging = folder / STAGING_FOLDER
    for name in names:
        staged = staging / name
        if not staged.exists():
            continue
        for sidecar in ("-wal", "-shm", "-journal"):
            (folder / f"{name}{sidecar}").unlink(missing_ok=True)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)  # a blob's folders
        staged.replace(folder / name)
