"""``offmaps areas``: a web map's preplanned map areas on a server (docs/preplanned.md).

An author creates, lists, shows, refreshes and deletes them; a device downloads one's package.
Every command signs in with the token ``offmaps login`` kept for the server, as ``offmaps
offline`` does, and prints JSON with ``--json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from offmaps.cli.progress import Advance, progress_bar
from offmaps.cli.tiles import aoi_option, crs_option, parse_bbox, read_aoi
from offmaps.client.areas import OfflineMapAreaManager, PreplannedMapArea
from offmaps.client.offline import OfflineMapTask, PortalItem
from offmaps.client.portal import Portal, load_credentials
from offmaps.errors import InvalidAOIError, InvalidOfflineParametersError
from offmaps.offline.areas import PreplannedUpdateMode
from offmaps.offline.parameters import TileArchiveFormat
from offmaps.schemas import AttachmentOption

__all__ = ["areas"]

F = TypeVar("F", bound=Callable[..., Any])
PER_MILLE = 1000
WGS84 = "EPSG:4326"


def _where(*, area: bool) -> Callable[[F], F]:
    """``--server URL --map ID`` (and ``--area ID``), and ``--json``."""

    def decorate(function: F) -> F:
        options = [
            click.option(
                "--server", "url", required=True, help="The server's URL (offmaps login first)."
            ),
            click.option("--map", "map_id", required=True, help="The web map's id."),
            *(
                [click.option("--area", "area_id", required=True, help="The area's id.")]
                if area
                else []
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@contextmanager
def _portal(url: str) -> Iterator[Portal]:
    with Portal(url, credentials=load_credentials(url)) as portal:
        yield portal


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _advancing(advance: Advance) -> Callable[[float, str], None]:
    """A progress callback (fraction done) moving a bar of :data:`PER_MILLE` steps."""
    shown = 0

    def on_progress(fraction: float, _: str) -> None:
        nonlocal shown
        now = min(PER_MILLE, round(fraction * PER_MILLE))
        if now > shown:
            advance(now - shown)
            shown = now

    return on_progress


def _when(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-" if seconds is None else str(seconds)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _shape(
    bbox: str | None, aoi_file: Path | None, aoi_crs: str, bookmark: str | None
) -> dict[str, Any]:
    """Where the area is, as :meth:`OfflineMapAreaManager.create` takes it.

    Raises:
        InvalidAOIError: not exactly one of the three, or a malformed one.
    """
    if sum(value is not None for value in (bbox, aoi_file, bookmark)) != 1:
        raise InvalidAOIError("give the area with one of --bbox W,S,E,N, --aoi FILE or --bookmark")
    if bookmark is not None:
        return {"bookmark": bookmark}
    if bbox is not None and aoi_crs.upper() in (WGS84, "OGC:CRS84", "CRS84"):
        return {"bbox": parse_bbox(bbox)}  # as given: a west over its east crosses 180°
    from shapely.geometry import mapping  # noqa: PLC0415 - only for a polygon

    aoi = read_aoi(aoi_file, bbox, aoi_crs)
    if aoi is None:  # cannot be: one of them was given
        raise InvalidAOIError("give the area with --bbox W,S,E,N or --aoi FILE")
    return {"area": dict(mapping(aoi.to_wgs84()))}


def _thumbnail(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidOfflineParametersError(f"cannot read {path}: {exc.strerror or exc}") from None


def _summary(area: dict[str, Any]) -> str:
    reason = f" ({area['reason']})" if area.get("reason") else ""
    return f"{area['id']}  {area['status']}{reason}  {area['title']}"


def _packaged(manager: OfflineMapAreaManager, area: dict[str, Any], title: str) -> dict[str, Any]:
    with progress_bar(f"packaging {title}", PER_MILLE) as advance:
        return manager.wait(area, on_progress=_advancing(advance))


@click.group()
def areas() -> None:
    """Preplanned map areas of a server's web maps (docs/preplanned.md)."""


@areas.command("create")
@_where(area=False)
@click.option("--title", required=True, help="The area's title (one line).")
@click.option("--bbox", help="The area as W,S,E,N (W > E crosses the antimeridian).")
@aoi_option
@crs_option
@click.option("--bookmark", help="The area of one of the web map's bookmarks, by name.")
@click.option("--description", help="A description of the area.")
@click.option("--min-scale", type=float, help="Most zoomed-out scale of tiles, 0 for any.")
@click.option("--max-scale", type=float, help="Most zoomed-in scale of tiles, 0 for any.")
@click.option(
    "--update-mode",
    type=click.Choice([mode.value for mode in PreplannedUpdateMode]),
    help="How devices keep the package fresh (default: sync_with_feature_services).",
)
@click.option(
    "--refresh",
    help="When the server packages it again: never, an interval (12h, 1d) or a cron "
    "expression, in UTC (default: never).",
)
@click.option(
    "--attachments",
    type=click.Choice([option.value for option in AttachmentOption]),
    help="Which layers' attachments the package takes (default: the map's own).",
)
@click.option(
    "--tile-format",
    type=click.Choice([found.value for found in TileArchiveFormat]),
    help="The container of the package's tile archives (default: mbtiles).",
)
@click.option(
    "--thumbnail",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A PNG or JPEG file (default: the basemap under the area).",
)
@click.option("--wait", is_flag=True, help="Wait for the package, with a progress bar.")
def create(
    url: str,
    map_id: str,
    as_json: bool,
    title: str,
    bbox: str | None,
    aoi_file: Path | None,
    aoi_crs: str,
    bookmark: str | None,
    description: str | None,
    min_scale: float | None,
    max_scale: float | None,
    update_mode: str | None,
    refresh: str | None,
    attachments: str | None,
    tile_format: str | None,
    thumbnail: Path | None,
    wait: bool,
) -> None:
    """Create a preplanned map area of map ID and start packaging it."""
    shape = _shape(bbox, aoi_file, aoi_crs, bookmark)
    image = _thumbnail(thumbnail)
    with _portal(url) as portal:
        manager = OfflineMapAreaManager(portal, map_id)
        area = manager.create(
            title=title,
            description=description,
            min_scale=min_scale,
            max_scale=max_scale,
            update_mode=update_mode,
            refresh=refresh,
            attachments=attachments,
            tile_format=tile_format,
            thumbnail=image,
            **shape,
        )
        if wait:
            area = _packaged(manager, area, title)
    if as_json:
        _echo_json(area)
    else:
        click.echo(_summary(area))


@areas.command("list")
@_where(area=False)
def list_areas(url: str, map_id: str, as_json: bool) -> None:
    """The preplanned map areas of map ID, oldest first."""
    with _portal(url) as portal:
        found = OfflineMapAreaManager(portal, map_id).list()
    if as_json:
        _echo_json(found)
        return
    for area in found:
        click.echo(_summary(area))


@areas.command("show")
@_where(area=True)
def show(url: str, map_id: str, area_id: str, as_json: bool) -> None:
    """One area: its state, schedule and newest package's files."""
    with _portal(url) as portal:
        area = OfflineMapAreaManager(portal, map_id).get(area_id)
    if as_json:
        _echo_json(area)
        return
    source = area["source"]
    where = source["kind"] + (f" {source['bookmark']!r}" if "bookmark" in source else "")
    click.echo(_summary(area))
    click.echo(f"  from {where}, scales 1:{area['min_scale']:,.0f} to 1:{area['max_scale']:,.0f}")
    click.echo(f"  update mode {area['update_mode']}, refresh {area['refresh']}")
    click.echo(f"  next refresh {_when(area.get('next_refresh_at'))}")
    package = area.get("package")
    if package is None:
        click.echo("  no package yet")
        return
    click.echo(
        f"  package {package['number']} of {_when(package.get('created'))}: "
        f"{len(package['files'])} files, {package['bytes']:,} bytes"
    )
    for layer, reason in {**package["layer_errors"], **package["table_errors"]}.items():
        click.echo(f"  failed: {layer}: {reason}")


@areas.command("refresh")
@_where(area=True)
@click.option("--wait", is_flag=True, help="Wait for the package, with a progress bar.")
def refresh(url: str, map_id: str, area_id: str, as_json: bool, wait: bool) -> None:
    """Package an area again now (its last package stays downloadable meanwhile)."""
    with _portal(url) as portal:
        manager = OfflineMapAreaManager(portal, map_id)
        area = manager.refresh(area_id)
        if wait:
            area = _packaged(manager, area, area["title"])
    if as_json:
        _echo_json(area)
    else:
        click.echo(_summary(area))


@areas.command("delete")
@_where(area=True)
def delete(url: str, map_id: str, area_id: str, as_json: bool) -> None:
    """Delete an area and its packages (devices holding it are told so)."""
    with _portal(url) as portal:
        OfflineMapAreaManager(portal, map_id).delete(area_id)
    if as_json:
        _echo_json({"id": area_id, "deleted": True})
    else:
        click.echo(f"deleted area {area_id}")


@areas.command("download")
@_where(area=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The download directory: created if missing; empty, or an unfinished download of "
    "the same area (which is continued).",
)
@click.option("--no-basemap", is_flag=True, help="Leave the basemap's tiles out.")
def download(
    url: str, map_id: str, area_id: str, as_json: bool, out: Path, no_basemap: bool
) -> None:
    """Download an area's newest package into OUT (run again to continue a cut download)."""
    with _portal(url) as portal:
        area = PreplannedMapArea(portal, map_id, {"id": area_id}).load()
        task = OfflineMapTask(PortalItem(portal, map_id))
        parameters = task.create_default_download_preplanned_offline_map_parameters(area)
        parameters.include_basemap = not no_basemap
        job = task.download_preplanned_offline_map(parameters, out)
        job.again = "run the same command again to continue"
        job.start()
        package = job.package or {}
        size = sum(int(entry["size"]) for entry in package.get("files", []))
        with progress_bar(f"downloading {area.portal_item.title}", PER_MILLE) as advance:
            try:
                result = job.wait(on_progress=_advancing(advance))
            except KeyboardInterrupt:
                click.echo(f"stopped: run the same command again to continue into {out}", err=True)
                raise
    layers = [layer.id for layer in result.offline_map.layers]
    tables = [table.id for table in result.offline_map.tables]
    summary: dict[str, Any] = {
        "path": str(out),
        "area_id": area_id,
        "package": package.get("number"),
        "bytes": size,
        "layers": layers,
        "tables": tables,
        "layer_errors": result.layer_errors,
        "table_errors": result.table_errors,
        "omitted": result.omitted,
    }
    if as_json:
        _echo_json(summary)
        return
    click.echo(
        f"package {summary['package']} of area {area_id} in {out}: "
        f"{len(layers)} layers, {len(tables)} tables"
    )
    for layer_id, reason in {**result.layer_errors, **result.table_errors}.items():
        click.echo(f"failed: {layer_id}: {reason}")
    for layer_id, reason in result.omitted.items():
        click.echo(f"left out: {layer_id}: {reason}")
