"""A downloaded preplanned package made a device's own, for ``sync_with_feature_services``.

A preplanned package is shared by every device, so the server registers no replica when it
builds it: each replica file carries the sync tables under a replica id of the area (the same on
every device; update files apply to it). A device of an area in ``sync_with_feature_services``
mode asks the server for replicas of its own at the package's generations
(``POST /api/maps/{id}/areas/{area}/replicas``), then :func:`adopt_replicas` records each new id
in its file and the manifest; from then on the package syncs as an on-demand one does, and its
first sync downloads only what changed since the package was built.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from offmaps.errors import PackageError
from offmaps.offline.package import PackageManifest, PackageReplica, read_manifest, write_manifest

__all__ = ["adopt_replicas"]


def adopt_replicas(folder: Path, replicas: Sequence[PackageReplica]) -> PackageManifest:
    """Make the replica files of the package in ``folder`` the device's ``replicas`` (as the
    server registered them) and write them into its manifest, with the update mode
    ``sync_with_feature_services``.

    Each file is changed in one transaction, and only while it holds no local edit; the
    manifest is written last (atomically), so a package interrupted half way is adopted again
    by the next call.

    Raises:
        PackageError: a file is missing, is not a replica GeoPackage, or holds edits of
            another replica not uploaded yet.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    known = {entry.path for entry in manifest.files}
    for replica in replicas:
        if replica.file not in known:
            raise PackageError(f"{folder}: the package has no file {replica.file!r}")
        _rekey(folder / replica.file, replica)
    adopted = manifest.model_copy(
        update={"replicas": list(replicas), "update_mode": "sync_with_feature_services"}
    )
    write_manifest(folder, adopted)
    return adopted


def _rekey(path: Path, replica: PackageReplica) -> None:
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise PackageError(f"{path}: cannot open the replica: {exc}") from None
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT value FROM offmaps_sync_state WHERE key = 'replica_id'"
            ).fetchone()
            pending = conn.execute("SELECT count(*) FROM offmaps_outbox").fetchone()[0]
            if row is None:
                raise PackageError(f"{path}: not a replica GeoPackage of a preplanned package")
            if row[0] != replica.replica_id and pending:
                raise PackageError(
                    f"{path}: holds {pending} local edits of replica {row[0]}: it cannot become "
                    f"replica {replica.replica_id}"
                )
            conn.execute(
                "UPDATE offmaps_sync_state SET value = ? WHERE key = 'replica_id'",
                (replica.replica_id,),
            )
            conn.execute("UPDATE offmaps_sync_layers SET generation = ?", (replica.generation,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise PackageError(f"{path}: cannot adopt the replica: {exc}") from None
    finally:
        conn.close()
