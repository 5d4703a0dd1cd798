"""``offmaps tiles``: count, convert, inspect and verify tile archives."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click
from morecantile import TileMatrixSet

from offmaps.cli.progress import progress_bar
from offmaps.containers import convert, open_reader, parse_location
from offmaps.containers.base import TilesetMetadata
from offmaps.errors import (
    ContainerCorruptError,
    InvalidAOIError,
    InvalidZoomError,
    UnknownTileMatrixSetError,
)
from offmaps.tiling import (
    AreaOfInterest,
    TileCover,
    estimate_tiles,
    get_tms,
    tile_cover,
    tms_from_json,
    zooms_for_scale_range,
)
from offmaps.types import TileFormat, ZoomRange

__all__ = ["tiles"]

MAX_AOI_FILE_BYTES = 64 * 1024 * 1024
_ZOOMS = re.compile(r"^\s*(\d{1,2})\s*(?:-\s*(\d{1,2})\s*)?$")


def load_tms(id_or_path: str) -> TileMatrixSet:
    """A registered tile matrix set by id, or a custom one from a TileMatrixSet JSON file.

    Raises:
        UnknownTileMatrixSetError: unknown ids, unreadable or invalid files.
    """
    path = Path(id_or_path)
    if path.suffix.lower() != ".json" and not path.is_file():
        return get_tms(id_or_path)
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnknownTileMatrixSetError(
            f"cannot read tile matrix set file {path}: {exc}", tms_id=id_or_path
        ) from exc
    return tms_from_json(content, source=str(path))


def parse_zooms(text: str) -> ZoomRange:
    """``A-B`` or ``A`` as a zoom range.

    Raises:
        InvalidZoomError: for anything else, or an inverted range.
    """
    match = _ZOOMS.match(text)
    if not match:
        raise InvalidZoomError(f"zooms must look like A-B or A (e.g. 0-14), not {text!r}")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else low
    if low > high:
        raise InvalidZoomError(f"zoom range {text!r} is inverted", zoom=low)
    return ZoomRange(low, high)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``W,S,E,N`` as four floats.

    Raises:
        InvalidAOIError: when it is not four numbers.
    """
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InvalidAOIError(f"--bbox must be four numbers W,S,E,N, not {text!r}")
    return values[0], values[1], values[2], values[3]


def read_aoi(aoi_file: Path | None, bbox: str | None, crs: str) -> AreaOfInterest | None:
    """The AOI given by ``--aoi FILE`` or ``--bbox``, in ``crs``; None when neither is given.

    Raises:
        InvalidAOIError: unreadable, oversized or malformed input, or both options given.
    """
    if aoi_file is not None and bbox is not None:
        raise InvalidAOIError("give --aoi or --bbox, not both")
    if bbox is not None:
        return AreaOfInterest.from_bbox(*parse_bbox(bbox), crs=crs)
    if aoi_file is None:
        return None
    try:
        size = aoi_file.stat().st_size
        if size > MAX_AOI_FILE_BYTES:
            raise InvalidAOIError(
                f"{aoi_file} is {size:,} bytes; AOI files are limited to {MAX_AOI_FILE_BYTES:,}"
            )
        content = aoi_file.read_bytes()
    except OSError as exc:
        raise InvalidAOIError(f"cannot read {aoi_file}: {exc.strerror or exc}") from exc
    try:
        return AreaOfInterest.from_geojson(content, crs=crs)
    except InvalidAOIError as exc:
        raise InvalidAOIError(f"{aoi_file}: {exc}") from exc


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


@click.group()
def tiles() -> None:
    """Count, convert, inspect and verify tile archives."""


aoi_option = click.option(
    "--aoi",
    "aoi_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="GeoJSON file (geometry, Feature or FeatureCollection) of the area of interest.",
)
bbox_option = click.option(
    "--bbox", help="Area of interest as W,S,E,N (W > E crosses the antimeridian)."
)
crs_option = click.option(
    "--aoi-crs", default="EPSG:4326", show_default=True, help="CRS of --aoi / --bbox coordinates."
)


@tiles.command("count")
@aoi_option
@bbox_option
@crs_option
@click.option("--zooms", help="Zoom range A-B (or use --min-scale/--max-scale).")
@click.option(
    "--min-scale",
    type=float,
    default=0,
    help="Most zoomed-out scale, e.g. 1000000 for 1:1,000,000 (0: none).",
)
@click.option(
    "--max-scale", type=float, default=0, help="Most zoomed-in scale, e.g. 5000 (0: none)."
)
@click.option(
    "--tms",
    "tms_id",
    default="WebMercatorQuad",
    show_default=True,
    help="Tile matrix set id or TileMatrixSet JSON file.",
)
@click.option(
    "--tile-format",
    type=click.Choice([f.value for f in TileFormat]),
    default=TileFormat.PNG.value,
    show_default=True,
    help="Tile format assumed for the byte estimate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def count_command(
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str | None,
    min_scale: float,
    max_scale: float,
    tms_id: str,
    tile_format: str,
    as_json: bool,
) -> None:
    """Count the tiles covering an area, per zoom, with a size estimate."""
    tms = load_tms(tms_id)
    aoi = read_aoi(aoi_file, bbox, aoi_crs)
    if aoi is None:
        raise click.UsageError("give the area with --aoi FILE or --bbox W,S,E,N")
    if zooms is not None and (min_scale or max_scale):
        raise click.UsageError("give --zooms or --min-scale/--max-scale, not both")
    if zooms is not None:
        levels = parse_zooms(zooms)
    elif min_scale or max_scale:
        levels = zooms_for_scale_range(tms, min_scale, max_scale)
    else:
        raise click.UsageError("give --zooms A-B (or --min-scale/--max-scale)")
    cover = tile_cover(aoi, tms, levels)
    estimate = estimate_tiles(cover, TileFormat(tile_format))
    per_zoom = {str(level.z): level.tiles for level in estimate.levels}
    if as_json:
        _echo_json(
            {
                "tms": tms.id,
                "zooms": per_zoom,
                "total": estimate.tiles,
                "bytes": {str(level.z): level.bytes for level in estimate.levels},
                "total_bytes": estimate.bytes,
                "tile_format": tile_format,
            }
        )
        return
    click.echo(f"{'zoom':>4}  {'tiles':>14}  {'estimated size':>14}")
    for level in estimate.levels:
        click.echo(f"{level.z:>4}  {level.tiles:>14,}  {_human(level.bytes):>14}")
    click.echo(
        f"{'all':>4}  {estimate.tiles:>14,}  {_human(estimate.bytes):>14}"
        f"  ({tms.id}, {tile_format})"
    )


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} PB"


@tiles.command("convert")
@click.argument("src")
@click.argument("dst")
@aoi_option
@bbox_option
@crs_option
@click.option("--zooms", help="Only these zoom levels, A-B.")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def convert_command(
    src: str,
    dst: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Convert SRC to DST, e.g. cache.mbtiles xyz:tiles/ or esri-compact:cache/.

    Archives are told by suffix (.mbtiles, .gpkg, .pmtiles); folders by prefix (xyz:DIR, tms:DIR,
    esri-exploded:DIR, esri-compact:DIR). DST must not exist unless --overwrite is given; it
    appears only once the conversion has finished.
    """
    aoi = read_aoi(aoi_file, bbox, aoi_crs)
    levels = parse_zooms(zooms) if zooms is not None else None
    destination = parse_location(dst)
    with open_reader(parse_location(src)) as reader:
        area: AreaOfInterest | TileCover | None = aoi
        meta = reader.metadata
        if aoi is not None and (levels is not None or None not in (meta.minzoom, meta.maxzoom)):
            # the area's tiles, at most: reading a folder for an area opens only those files,
            # so counting the whole source first would cost more than the conversion
            span = levels or ZoomRange(int(meta.minzoom or 0), int(meta.maxzoom or 0))
            area = tile_cover(aoi, meta.tms, span)
            total = area.total
        else:
            total = reader.count_tiles()
        with progress_bar(f"{src} → {dst}", total) as advance:
            result = convert(
                reader, destination, zooms=levels, aoi=area, overwrite=overwrite, progress=advance
            )
            advance(0, result.read)  # the tiles the source had in the area
    if as_json:
        _echo_json(
            {"source": src, "destination": dst, "read": result.read, "written": result.written}
        )
    else:
        click.echo(f"{result.written:,} tiles written to {dst} ({result.read:,} read)", err=True)


def _info(location: str) -> dict[str, Any]:
    loc = parse_location(location)
    with open_reader(loc) as reader:
        problems = reader.check()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ContainerCorruptError(
                f"{problems[0]}{more}; `offmaps tiles verify {location}` checks every tile",
                path=loc.path,
            )
        meta: TilesetMetadata = reader.metadata
        return {
            "path": str(loc.path),
            "format": loc.kind.value,
            "tile_format": meta.tile_format.value,
            "tile_compression": meta.tile_compression.value,
            "tile_count": reader.count_tiles(),
            "name": meta.name,
            "minzoom": meta.minzoom,
            "maxzoom": meta.maxzoom,
            "bounds": list(meta.bounds) if meta.bounds is not None else None,
            "center": list(meta.center) if meta.center is not None else None,
            "tms": meta.tms.id,
            "attribution": meta.attribution,
        }


@tiles.command("info")
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def info_command(src: str, as_json: bool) -> None:
    """Describe a tile archive: format, tile format, count, zooms, bounds, tiling scheme.

    The archive's structure is checked first (SQLite's quick_check reads an MBTiles or
    GeoPackage file once): a damaged one exits 1 with the first problem found.
    """
    info = _info(src)
    if as_json:
        _echo_json(info)
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        click.echo(f"{key:<{width}}  {value}")


@tiles.command("verify")
@click.argument("src")
def verify_command(src: str) -> None:
    """Check that SRC is well formed; exit 1 naming each problem otherwise."""
    with open_reader(parse_location(src)) as reader:
        problems = reader.verify()
    if problems:
        for problem in problems:
            click.echo(f"{src}: {problem}", err=True)
        sys.exit(1)
    click.echo(f"{src}: OK")
