"""``offmaps sync`` and ``offmaps conflicts``: sync an offline package, review conflicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from offmaps.cli.progress import progress_bar
from offmaps.client.portal import Portal, load_credentials
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.errors import PackageError, SyncFailedError
from offmaps.offline.package import MobileMapPackage
from offmaps.offline.replica import LocalReplica
from offmaps.schemas import SyncDirection
from offmaps.schemas.changeset import ChangeStatus

__all__ = ["conflicts", "sync"]

PER_MILLE = 1000
_NOT_APPLIED = 20  # outbox entries sync status lists
_PACKAGE = click.Path(exists=True, file_okay=False, path_type=Path)


class _SyncGroup(click.Group):
    """``offmaps sync DIR`` is ``offmaps sync run DIR``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _server(package: MobileMapPackage, url: str | None) -> str:
    found = url or package.manifest.server_url
    if not found:
        raise PackageError(f"{package.path}: the package names no server; give --server")
    return found


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group(cls=_SyncGroup)
def sync() -> None:
    """Sync an offline package's edits with its server (``offmaps sync DIR``)."""


@sync.command("run")
@click.argument("folder", type=_PACKAGE)
@click.option(
    "--direction",
    type=click.Choice([d.value for d in SyncDirection if d is not SyncDirection.NONE]),
    default=SyncDirection.BIDIRECTIONAL.value,
    show_default=True,
    help="Which way edits travel (each replica's own direction still limits it).",
)
@click.option("--layer", "layers", multiple=True, help="Sync only this layer (repeatable).")
@click.option("--rollback-on-failure", is_flag=True, help="A rejected change stops its set.")
@click.option("--server", "url", help="The server's URL (default: the package's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run(
    folder: Path,
    direction: str,
    layers: tuple[str, ...],
    rollback_on_failure: bool,
    url: str | None,
    as_json: bool,
) -> None:
    """Upload the package's edits and download the server's (``offmaps sync DIR``)."""
    package = MobileMapPackage(folder).load()
    server = _server(package, url)
    with Portal(server, credentials=load_credentials(server)) as portal:
        task = OfflineMapSyncTask(package, portal)
        parameters = SyncOfflineMapParameters(
            sync_direction=SyncDirection(direction),
            rollback_on_failure=rollback_on_failure,
            layers=list(layers) or None,
        )
        job = task.sync_offline_map(parameters)
        with progress_bar("syncing", PER_MILLE) as advance:
            done = 0

            def on_progress(fraction: float, _: str) -> None:
                nonlocal done
                now = int(fraction * PER_MILLE)
                advance(now - done)
                done = now

            result = job.wait(on_progress=on_progress)
    if as_json:
        _echo_json(result.as_dict())
        return
    scheduled = result.scheduled_updates
    if scheduled is not None and scheduled.choice == "updates":
        click.echo(
            f"package {scheduled.from_number} -> {scheduled.to_number}: "
            f"{scheduled.updates_applied} update files applied "
            f"({scheduled.bytes_downloaded:,} bytes)"
        )
    elif scheduled is not None and scheduled.choice == "full":
        click.echo(
            f"package {scheduled.from_number} -> {scheduled.to_number}: replaced whole "
            f"({scheduled.bytes_downloaded:,} bytes; {scheduled.reason})"
        )
    elif scheduled is not None:
        click.echo(f"package {scheduled.from_number}: the newest of its area")
    for name, layer in sorted(result.layer_results.items()):
        click.echo(
            f"{name}: {layer.uploaded} uploaded ({layer.applied} applied, {layer.merged} "
            f"merged, {layer.conflicts} conflicts, {layer.rejected} rejected), "
            f"{layer.downloaded} downloaded, {layer.deleted} deleted"
        )
        for rejection in layer.rejections:
            click.echo(f"  rejected {rejection}")
    click.echo(result.attachments)
    if result.fields_added:
        click.echo(f"fields added: {', '.join(result.fields_added)}")


@sync.command("status")
@click.argument("folder", type=_PACKAGE)
@click.option("--check", is_flag=True, help="Also ask the server what it has to download.")
@click.option("--server", "url", help="The server's URL for --check (default: the package's).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(folder: Path, check: bool, url: str | None, as_json: bool) -> None:
    """The package's outbox: changes by status, the last ones, and each layer's generation."""
    package = MobileMapPackage(folder).load()
    report: dict[str, Any] = {"replicas": []}
    for replica in package.manifest.replicas:
        with LocalReplica.open(
            package.path / replica.file,
            replica_id=replica.replica_id,
            generation=replica.generation,
        ) as local:
            counts = local.status_counts()
            recent = [
                {
                    "change_id": str(entry.change_id),
                    "layer": entry.layer,
                    "global_id": None if entry.global_id is None else str(entry.global_id),
                    "kind": entry.kind,
                    "status": entry.status,
                    "reason": entry.reason,
                }
                for entry in local.not_applied(limit=_NOT_APPLIED)
            ]
            report["replicas"].append(
                {
                    "service": replica.service,
                    "replica_id": replica.replica_id,
                    "generations": local.generations(),
                    "changes": {s.value: counts.get(s, 0) for s in ChangeStatus},
                    "not_applied": recent,
                }
            )
    if check:
        server = _server(package, url)
        with Portal(server, credentials=load_credentials(server)) as portal:
            info = OfflineMapSyncTask(package, portal).check_for_updates()
        report["updates"] = {
            "download_changes": info.download_changes,
            "download_deletes": info.download_deletes,
            "download_bytes": info.download_bytes,
            "download_attachments": info.download_attachments,
            "upload_changes": info.upload_changes,
            "upload_edits": info.upload_edits,
            "upload_bytes": info.upload_bytes,
            "upload_attachments": info.upload_attachments,
        }
    if as_json:
        _echo_json(report)
        return
    for entry in report["replicas"]:
        summary = ", ".join(f"{n} {s}" for s, n in entry["changes"].items())
        click.echo(f"{entry['service']} ({entry['replica_id']}): {summary}")
        for change in entry["not_applied"]:
            reason = f": {change['reason']}" if change["reason"] else ""
            click.echo(
                f"  {change['status']} {change['kind']} {change['layer']} "
                f"{change['global_id'] or '(a global id that is not a UUID)'}{reason}"
            )
    if "updates" in report:
        updates = report["updates"]
        click.echo(
            f"server: {updates['download_changes']} rows to download "
            f"({updates['download_deletes']} deletions), "
            f"{updates['download_attachments']} attachment files, "
            f"{updates['download_bytes']:,} bytes; device: {updates['upload_changes']} changes "
            f"to upload ({updates['upload_edits']} edits), "
            f"{updates['upload_attachments']} attachment files, {updates['upload_bytes']:,} bytes"
        )


# --- the review queue -----------------------------------------------------------------------


@click.group()
def conflicts() -> None:
    """The server's review queue of sync conflicts."""


def _portal(url: str) -> Portal:
    return Portal(url, credentials=load_credentials(url))


@conflicts.command("list")
@click.option("--server", "url", required=True, help="The server's URL.")
@click.option(
    "--status",
    "state",
    type=click.Choice(["open", "resolved", "all"]),
    default="open",
    show_default=True,
    help="Which conflicts to list.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the conflicts as JSON.")
def list_conflicts(url: str, state: str, as_json: bool) -> None:
    """Conflicts, newest first."""
    with _portal(url) as portal:
        found = portal.request("GET", "/api/conflicts", params={"status": state})["conflicts"]
    if as_json:
        _echo_json(found)
        return
    for entry in found:
        fields = ", ".join(entry["fields"]) or "-"
        click.echo(
            f"{entry['id']} {entry['status']} {entry['kind']} {entry['collection']} "
            f"{entry['global_id']} fields: {fields}"
        )


@conflicts.command("show")
@click.argument("conflict_id")
@click.option("--server", "url", required=True, help="The server's URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the conflict as JSON.")
def show_conflict(conflict_id: str, url: str, as_json: bool) -> None:
    """One conflict: the base, the device's and the server's values."""
    with _portal(url) as portal:
        entry = portal.request("GET", f"/api/conflicts/{conflict_id}")
    if as_json:
        _echo_json(entry)
        return
    click.echo(f"{entry['id']} {entry['status']} {entry['kind']} {entry['collection']}")
    server = entry["server"] or {}
    for name in entry["fields"] or sorted(set(entry["client"]) | set(server)):
        click.echo(
            f"  {name}: base {entry['base'].get(name)!r}, device "
            f"{entry['client'].get(name)!r}, server {server.get(name)!r}"
        )


@conflicts.command("resolve")
@click.argument("conflict_id")
@click.option("--server", "url", required=True, help="The server's URL.")
@click.option(
    "--side",
    type=click.Choice(["server", "client", "merge"]),
    required=True,
    help="Keep the server's row, take the device's edit, or merge field by field.",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=JSON",
    help="With --side merge: a conflicting field's value, as JSON (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the resolved conflict as JSON.")
def resolve_conflict(
    conflict_id: str, url: str, side: str, assignments: tuple[str, ...], as_json: bool
) -> None:
    """Settle a conflict."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            raise SyncFailedError(f"--set takes FIELD=JSON, not {assignment[:60]!r}")
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    if values and side != "merge":
        raise SyncFailedError("--set goes with --side merge")
    body: dict[str, Any] = {"side": side}
    if side == "merge":
        body["values"] = values
    with _portal(url) as portal:
        entry = portal.request("POST", f"/api/conflicts/{conflict_id}/resolve", json=body)
    if as_json:
        _echo_json(entry)
        return
    click.echo(f"{entry['id']} {entry['status']} ({entry['resolution']})")
