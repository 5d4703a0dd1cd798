"""``offmaps offline``: capabilities, estimates and generated offline maps from a server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from shapely.geometry import mapping

from offmaps.cli.progress import progress_bar
from offmaps.cli.tiles import parse_bbox, read_aoi
from offmaps.client.offline import OfflineMapTask, PortalItem
from offmaps.client.portal import Portal, load_credentials
from offmaps.errors import InvalidAOIError
from offmaps.offline.parameters import (
    Area,
    GenerateOfflineMapParameters,
    TileArchiveFormat,
    area_from_bbox,
)
from offmaps.schemas import AttachmentOption

__all__ = ["offline"]

F = TypeVar("F", bound=Callable[..., Any])
PER_MILLE = 1000


def _common(function: F) -> F:
    options = [
        click.option("--server", "url", required=True, help="The server's URL."),
        click.option("--map", "map_id", required=True, help="The web map's id."),
        click.option(
            "--aoi",
            "aoi_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Area of interest: a GeoJSON file (longitude/latitude).",
        ),
        click.option("--bbox", help="Area of interest as W,S,E,N (W > E crosses 180°)."),
        click.option(
            "--min-scale", type=float, default=0, help="Most zoomed-out scale, 0 for any."
        ),
        click.option("--max-scale", type=float, default=0, help="Most zoomed-in scale, 0 for any."),
        click.option("--no-basemap", is_flag=True, help="Leave the basemap out."),
        click.option(
            "--attachments",
            type=click.Choice([o.value for o in AttachmentOption]),
            help="Which layers' attachments to take (default: the map author's choice).",
        ),
        click.option(
            "--tile-format",
            type=click.Choice([f.value for f in TileArchiveFormat]),
            default=TileArchiveFormat.MBTILES.value,
            show_default=True,
            help="The container of exported tiles.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _area(aoi_file: Path | None, bbox: str | None) -> Area:
    if aoi_file is not None and bbox is not None:
        raise InvalidAOIError("give --aoi or --bbox, not both")
    if bbox is not None:
        return area_from_bbox(*parse_bbox(bbox))
    aoi = read_aoi(aoi_file, None, "EPSG:4326")
    if aoi is None:
        raise InvalidAOIError("give the area of interest with --aoi FILE or --bbox W,S,E,N")
    return Area(geometry=dict(mapping(aoi.to_wgs84())))


def _prepare(
    portal: Portal, map_id: str, options: dict[str, Any]
) -> tuple[OfflineMapTask, GenerateOfflineMapParameters]:
    task = OfflineMapTask(PortalItem(portal, map_id))
    parameters = task.create_default_generate_offline_map_parameters(
        _area(options["aoi_file"], options["bbox"]), options["min_scale"], options["max_scale"]
    )
    changes: dict[str, Any] = {"tile_format": TileArchiveFormat(options["tile_format"])}
    if options["no_basemap"]:
        changes["include_basemap"] = False
    if options["attachments"]:
        changes["return_layer_attachment_option"] = AttachmentOption(options["attachments"])
    return task, parameters.model_copy(update=changes)


@click.group()
def offline() -> None:
    """Take a server's web maps offline."""


@offline.command()
@_common
def capabilities(url: str, map_id: str, as_json: bool, **options: Any) -> None:
    """Which layers and tables of the map can be taken offline, and why not."""
    with Portal(url, credentials=load_credentials(url)) as portal:
        task, parameters = _prepare(portal, map_id, options)
        found = task.get_offline_map_capabilities(parameters)
    if as_json:
        click.echo(json.dumps({**found.model_dump(mode="json"), "has_errors": found.has_errors}))
        return
    for capability in (*found.layers, *found.tables):
        state = "yes" if capability.supports_offline else f"no: {capability.message}"
        click.echo(f"{capability.layer_id}  {capability.kind}  {state}")


@offline.command()
@_common
def estimate(url: str, map_id: str, as_json: bool, **options: Any) -> None:
    """Tiles, rows and bytes per layer, before anything is made."""
    with Portal(url, credentials=load_credentials(url)) as portal:
        task, parameters = _prepare(portal, map_id, options)
        found = task.estimate_offline_map(parameters)
    if as_json:
        totals = {"bytes": found.bytes, "tiles": found.tiles, "features": found.features}
        click.echo(json.dumps({**found.model_dump(mode="json"), **totals}))
        return
    for layer in found.layers:
        what = (
            f"{layer.tiles:,} tiles (levels {layer.min_zoom}-{layer.max_zoom})"
            if layer.tiles is not None
            else f"{layer.features or 0:,} rows"
        )
        if layer.attachments is not None:
            photos = (layer.attachment_bytes or 0) / 1e6
            what += f", {layer.attachments:,} attachments ({photos:,.1f} MB)"
        warning = f"  ! {layer.error}" if layer.error else ""
        click.echo(f"{layer.layer_id}  {what}  ~{layer.bytes / 1e6:,.1f} MB{warning}")
    for layer_id in found.omitted:
        click.echo(f"{layer_id}  left out")
    if found.overhead_bytes:
        click.echo(f"package files  ~{found.overhead_bytes / 1e6:,.1f} MB")
    click.echo(f"total ~{found.bytes / 1e6:,.1f} MB")


@offline.command()
@_common
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The download directory: created if missing, and it must be empty.",
)
def generate(url: str, map_id: str, as_json: bool, out: Path, **options: Any) -> None:
    """Make the offline map on the server and download it into OUT."""
    with Portal(url, credentials=load_credentials(url)) as portal:
        task, parameters = _prepare(portal, map_id, options)
        job = task.generate_offline_map(parameters, out)
        job.start()
        try:
            with progress_bar("generating the offline map", PER_MILLE) as advance:
                shown = 0

                def on_progress(fraction: float, _: str) -> None:
                    nonlocal shown
                    now = round(fraction * PER_MILLE)
                    advance(max(0, now - shown))
                    shown = max(shown, now)

                result = job.wait(on_progress=on_progress)
        except KeyboardInterrupt:
            job.cancel()
            raise
    summary = {
        "path": str(out),
        "layers": [layer.id for layer in result.offline_map.layers],
        "tables": [table.id for table in result.offline_map.tables],
        "layer_errors": result.layer_errors,
        "table_errors": result.table_errors,
        "omitted": result.omitted,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"offline map in {out}: {len(summary['layers'])} layers, {len(summary['tables'])} tables"
    )
    for layer_id, reason in {**result.layer_errors, **result.table_errors}.items():
        click.echo(f"failed: {layer_id}: {reason}")
    for layer_id, reason in result.omitted.items():
        click.echo(f"left out: {layer_id}: {reason}")
