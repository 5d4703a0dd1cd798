"""``offmaps cache``: create, list, seed, measure, verify and clean a data folder's tile caches.

Each command works on the data folder of ``--data DIR`` (default ``$OFFMAPS_DATA_DIR``, else
``./offmaps-data``), through the same service the server runs; a server using the folder sees
the result. Seeding shows a progress bar on stderr and may be stopped with Ctrl-C and started
again: it fetches nothing it has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from offmaps.cache import (
    DEFAULT_URL_EXPIRY,
    CacheDefinition,
    SeedProgress,
    TileCacheService,
)
from offmaps.catalog import Catalog
from offmaps.cli.progress import progress_bar
from offmaps.cli.tiles import aoi_option, bbox_option, crs_option, parse_zooms, read_aoi
from offmaps.errors import CacheError, InvalidAOIError
from offmaps.services import open_caches
from offmaps.settings import ServerSettings
from offmaps.storage import MAX_PRESIGN_EXPIRY
from offmaps.tiling import AreaOfInterest
from offmaps.types import TileFormat, ZoomRange

__all__ = ["cache"]

_AGE = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_BYTES = re.compile(r"^(\d{1,15})\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_POWERS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_when(text: str) -> datetime:
    """An age (``30d``, ``12h``, ``90m``) counted back from now, or an ISO 8601 time with a zone.

    Raises:
        CacheError: anything else.
    """
    match = _AGE.match(text.strip())
    if match:
        return datetime.now(UTC) - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise CacheError(
            f"a time is an age such as 30d, 12h or 90m, or ISO 8601 with a zone "
            f"(2026-12-01T00:00:00Z): not {text[:64]!r}"
        )
    return when


def parse_bytes(text: str) -> int:
    """``500M``, ``2GiB``, ``1048576``: a byte count.

    Raises:
        CacheError: anything else.
    """
    match = _BYTES.match(text.strip())
    if not match:
        raise CacheError(f"a size is a number of bytes, with K, M, G or T: not {text[:64]!r}")
    unit = (match.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(match.group(1)) * _POWERS[unit]


@contextmanager
def _service(data_dir: Path | None) -> Iterator[TileCacheService]:
    settings = ServerSettings() if data_dir is None else ServerSettings(data_dir=data_dir)
    if not settings.data_dir.is_dir():
        raise CacheError(f"{settings.data_dir}: no such data folder")
    catalog = Catalog(settings.data_dir)
    try:
        service = open_caches(settings, catalog)
        try:
            yield service
        finally:
            service.close()
    finally:
        catalog.close()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


data_option = click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The data folder (default: $OFFMAPS_DATA_DIR, else ./offmaps-data).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _area(aoi_file: Path | None, bbox: str | None, crs: str) -> AreaOfInterest:
    aoi = read_aoi(aoi_file, bbox, crs)
    if aoi is None:
        raise InvalidAOIError("give the area with --aoi FILE or --bbox W,S,E,N")
    return aoi


@click.group()
def cache() -> None:
    """Create, seed, measure and clean tile caches (docs/cache.md)."""


@cache.command("create")
@click.argument("name")
@click.option("--source", "template", help="An upstream XYZ URL template with {z}, {x}, {y}.")
@click.option("--layer", help="Another tile layer of the server, by name.")
@click.option("--archive", help="A tile archive or folder (FILE.mbtiles, esri-compact:DIR...).")
@click.option("--tms", default="WebMercatorQuad", show_default=True, help="Tile matrix set id.")
@click.option(
    "--format",
    "tile_format",
    type=click.Choice([f.value for f in TileFormat]),
    default="png",
    show_default=True,
    help="The tiles' format.",
)
@click.option("--zooms", default="0-19", show_default=True, help="Levels cached, A-B.")
@click.option("--rate", type=float, help="Requests per second to the upstream (default 50).")
@click.option("--concurrency", type=int, help="Requests in flight while seeding (default 4).")
@data_option
@json_option
def create(
    name: str,
    template: str | None,
    layer: str | None,
    archive: str | None,
    tms: str,
    tile_format: str,
    zooms: str,
    rate: float | None,
    concurrency: int | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Create cache NAME of one source: --source URL_TEMPLATE, --layer or --archive."""
    given = [(k, v) for k, v in (("xyz", template), ("layer", layer), ("archive", archive)) if v]
    if len(given) != 1:
        raise CacheError("give exactly one source: --source URL_TEMPLATE, --layer or --archive")
    levels = parse_zooms(zooms)
    upstream = {
        key: value
        for key, value in (("requests_per_second", rate), ("concurrency", concurrency))
        if value is not None
    }
    try:
        definition = CacheDefinition.model_validate(
            {
                "name": name,
                "source": {"kind": given[0][0], "location": given[0][1]},
                "tms": tms,
                "format": tile_format,
                "min_zoom": levels.min,
                "max_zoom": levels.max,
                "upstream": upstream,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CacheError(f"{where}: {first['msg']}".removeprefix(": ")) from None
    with _service(data_dir) as service:
        service.create(definition)
    if as_json:
        _echo_json(definition.model_dump(mode="json"))
    else:
        click.echo(f"created tile cache {name!r}")


@cache.command("list")
@data_option
@json_option
def list_caches(data_dir: Path | None, as_json: bool) -> None:
    """The tile caches of the data folder."""
    with _service(data_dir) as service:
        found = service.list()
    if as_json:
        _echo_json([d.model_dump(mode="json") for d in found])
        return
    for d in found:
        click.echo(
            f"{d.name}  {d.source.kind.value}:{d.source.location}  {d.tms}  {d.format.value}  "
            f"z{d.min_zoom}-{d.max_zoom}"
        )


@cache.command("seed")
@click.argument("name")
@aoi_option
@bbox_option
@crs_option
@click.option("--zooms", required=True, help="Levels to seed, A-B.")
@click.option(
    "--refresh-before",
    help="Refetch tiles the source last gave before this (an age such as 7d, or ISO 8601).",
)
@click.option("--dry-run", is_flag=True, help="Count the tiles and estimate the bytes only.")
@data_option
@json_option
def seed(
    name: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str,
    refresh_before: str | None,
    dry_run: bool,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Fetch the tiles of an area that cache NAME lacks (rerun: nothing is fetched twice)."""
    aoi = _area(aoi_file, bbox, aoi_crs)
    levels = parse_zooms(zooms)
    before = parse_when(refresh_before) if refresh_before else None
    with _service(data_dir) as service:
        plan = service.plan(name, aoi, levels, refresh_before=before)
        if dry_run:
            result: dict[str, Any] = {
                "tiles": plan.tiles,
                "stored": plan.tiles - plan.to_fetch,
                "to_fetch": plan.to_fetch,
                "estimated_bytes": plan.estimated_bytes,
                "levels": plan.levels,
            }
        else:
            with progress_bar(f"seeding {name}", plan.tiles) as advance:
                done = [0]

                def report(state: SeedProgress) -> None:
                    advance(state.done - done[0])
                    done[0] = state.done

                state = service.seed(name, aoi, levels, refresh_before=before, progress=report)
            result = asdict(state)
            del result["level"]
    if as_json:
        _echo_json(result)
    elif dry_run:
        click.echo(
            f"{result['tiles']:,} tiles, {result['stored']:,} stored, {result['to_fetch']:,} to "
            f"fetch, about {result['estimated_bytes']:,} bytes"
        )
    else:
        click.echo(
            f"{result['fetched']:,} fetched ({result['bytes']:,} bytes, {result['written']:,} "
            f"new), {result['skipped']:,} stored already, {result['missing']:,} missing, "
            f"{result['errors']:,} errors"
        )


@cache.command("urls")
@click.argument("name")
@aoi_option
@bbox_option
@crs_option
@click.option("--zooms", required=True, help="Levels, A-B.")
@click.option(
    "--expires",
    type=click.IntRange(1, int(MAX_PRESIGN_EXPIRY.total_seconds())),
    default=int(DEFAULT_URL_EXPIRY.total_seconds()),
    show_default=True,
    help="Seconds the URLs work for.",
)
@click.option(
    "--public-url",
    help="The server's URL, for the data folder's own URLs (default: $OFFMAPS_PUBLIC_URL).",
)
@data_option
@json_option
def urls(
    name: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str,
    expires: int,
    public_url: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Presigned GET URLs of the stored tiles of an area, one per tile with its z, x, y and
    SHA-256, for a device to fetch straight from storage."""
    aoi = _area(aoi_file, bbox, aoi_crs)
    levels = parse_zooms(zooms)
    found: list[dict[str, Any]] = []
    with _service(data_dir) as service:
        base = (public_url or _public_url(data_dir) or "").rstrip("/")
        after = None
        while True:
            page, after = service.tile_urls(
                name, aoi, levels, expires=timedelta(seconds=expires), after=after, limit=10_000
            )
            for item in page:
                url = item.url.url
                if url.startswith("/"):
                    if not base:
                        raise CacheError(
                            "the data folder signs URLs of its server: give --public-url "
                            "(or set OFFMAPS_PUBLIC_URL)"
                        )
                    url = base + url
                found.append(
                    {
                        "z": item.tile.z,
                        "x": item.tile.x,
                        "y": item.tile.y,
                        "sha256": item.sha256,
                        "size": item.size,
                        "url": url,
                        "headers": dict(item.url.headers),
                        "expires_at": item.url.expires_at.isoformat(),
                    }
                )
            if after is None:
                break
    if as_json:
        _echo_json(found)
    else:
        for entry in found:
            click.echo(f"{entry['z']}/{entry['x']}/{entry['y']} {entry['sha256']} {entry['url']}")


def _public_url(data_dir: Path | None) -> str | None:
    """The public URL the settings give (``OFFMAPS_PUBLIC_URL``), if any."""
    settings = ServerSettings() if data_dir is None else ServerSettings(data_dir=data_dir)
    return settings.public_url


@cache.command("stats")
@click.argument("name", required=False)
@data_option
@json_option
def stats(name: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Tiles, bytes, distinct blobs, dedup saving and use of cache NAME, per level (or the
    blob store under every cache, without NAME)."""
    with _service(data_dir) as service:
        if name is None:
            store = asdict(service.store_stats())
            if as_json:
                _echo_json(store)
            else:
                click.echo(", ".join(f"{k} {v:,}" for k, v in store.items()))
            return
        found = service.stats(name)
    levels = [{**asdict(level), "dedup_saving": level.dedup_saving} for level in found.levels]
    document = {
        "name": found.name,
        "tiles": found.tiles,
        "bytes": found.bytes,
        "blobs": found.blobs,
        "blob_bytes": found.blob_bytes,
        "dedup_saving": found.dedup_saving,
        "hits": found.hits,
        "misses": found.misses,
        "fetches": found.fetches,
        "errors": found.errors,
        "levels": levels,
    }
    if as_json:
        _echo_json(document)
        return
    click.echo(
        f"{found.name}: {found.tiles:,} tiles, {found.bytes:,} bytes in {found.blobs:,} blobs "
        f"({found.blob_bytes:,} bytes; dedup saves {found.dedup_saving:,})"
    )
    for level in found.levels:
        click.echo(
            f"  z{level.z}: {level.tiles:,} tiles, {level.bytes:,} bytes, {level.blobs:,} blobs, "
            f"{level.hits:,} hits, {level.misses:,} misses, {level.fetches:,} fetches, "
            f"{level.errors:,} errors"
        )


@cache.command("verify")
@click.argument("name", required=False)
@data_option
@json_option
def verify(name: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Hash every blob of cache NAME (or of every cache) again; exit 1 if any was damaged (they
    are dropped, to be fetched again)."""
    with _service(data_dir) as service:
        report = service.verify(name)
    if as_json:
        _echo_json({"checked": report.checked, "damaged": list(report.damaged)})
    else:
        click.echo(f"{report.checked:,} blobs checked, {len(report.damaged):,} damaged")
        for key in report.damaged:
            click.echo(f"  damaged: {key}")
    if report.damaged:
        raise click.exceptions.Exit(1)


@cache.command("truncate")
@click.argument("name")
@aoi_option
@bbox_option
@crs_option
@click.option("--zooms", help="Only these levels, A-B.")
@data_option
def truncate(
    name: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str | None,
    data_dir: Path | None,
) -> None:
    """Remove tiles of cache NAME: inside an area, at some levels, or all of them."""
    aoi = read_aoi(aoi_file, bbox, aoi_crs)
    levels: ZoomRange | None = parse_zooms(zooms) if zooms else None
    with _service(data_dir) as service:
        removed = service.truncate(name, aoi, levels)
    click.echo(f"removed {removed:,} tiles")


@cache.command("cleanup")
@click.argument("name")
@click.option("--older-than", help="Remove tiles stored before this (an age such as 30d, or ISO).")
@click.option("--max-bytes", help="Keep the cache under this size (500M, 2G) by least recent use.")
@data_option
def cleanup(
    name: str, older_than: str | None, max_bytes: str | None, data_dir: Path | None
) -> None:
    """Remove old tiles of cache NAME, or the least recently used ones beyond a size."""
    if older_than is None and max_bytes is None:
        raise CacheError("give --older-than, --max-bytes or both")
    before = parse_when(older_than) if older_than else None
    limit = parse_bytes(max_bytes) if max_bytes else None
    with _service(data_dir) as service:
        removed = service.cleanup(name, older_than=before, max_bytes=limit)
    click.echo(f"removed {removed:,} tiles")


@cache.command("gc")
@data_option
def gc(data_dir: Path | None) -> None:
    """Delete the blobs no cache names any more (safe while the server runs)."""
    with _service(data_dir) as service:
        collected = service.gc()
    click.echo(f"{collected.examined:,} blobs examined, {collected.deleted:,} deleted")


@cache.command("delete")
@click.argument("name")
@data_option
def delete(name: str, data_dir: Path | None) -> None:
    """Remove cache NAME and its tiles (then `offmaps cache gc` frees their blobs)."""
    with _service(data_dir) as service:
        removed = service.delete(name)
    click.echo(f"deleted tile cache {name!r} ({removed:,} tiles)")
