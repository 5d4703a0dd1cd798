"""``offmaps cache``: create, list, seed, measure, verify and clean tile caches.

Every command works either on a server (``--server URL``, signed in with ``offmaps login``: the
REST API, seeds and cleanups as its jobs) or on a data folder (``--data DIR``, default
``$OFFMAPS_DATA_DIR``, else ``./offmaps-data``: the same service the server runs, in this
process). Both print the same documents with ``--json``. Seeding shows a progress bar on stderr;
a seed stopped (Ctrl-C, a crash) and started again fetches nothing it has.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import click
from pydantic import ValidationError
from shapely.geometry import mapping

from offmaps.cache import DEFAULT_URL_EXPIRY, CacheDefinition, SeedProgress, TileCacheService
from offmaps.cache.jobs import ARCHIVE_KINDS, export_document, import_document, parse_colour
from offmaps.cli.progress import progress_bar
from offmaps.cli.tiles import aoi_option, bbox_option, crs_option, parse_zooms, read_aoi
from offmaps.client.caches import TileCaches
from offmaps.client.portal import Portal, load_credentials
from offmaps.containers import Location, TileReader, open_reader, parse_location
from offmaps.errors import CacheError, InvalidAOIError
from offmaps.storage import MAX_PRESIGN_EXPIRY
from offmaps.tiling import Area, AreaOfInterest
from offmaps.types import TileFormat, ZoomRange

__all__ = ["cache", "parse_bytes", "parse_when"]

_AGE = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_BYTES = re.compile(r"^(\d{1,15})\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_POWERS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

Advance = Callable[[int, int | None], None]


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


class Caches(Protocol):
    """What the commands ask of a server or a data folder; answers are the API's documents."""

    def create(self, definition: CacheDefinition) -> dict[str, Any]: ...
    def list_caches(self) -> list[dict[str, Any]]: ...
    def plan(
        self, name: str, aoi: AreaOfInterest, zooms: ZoomRange, before: datetime | None
    ) -> dict[str, Any]: ...
    def seed(
        self,
        name: str,
        aoi: AreaOfInterest,
        zooms: ZoomRange,
        before: datetime | None,
        advance: Advance,
    ) -> dict[str, Any]: ...
    def urls(
        self, name: str, aoi: AreaOfInterest, zooms: ZoomRange, expires: int
    ) -> list[dict[str, Any]]: ...
    def stats(self, name: str) -> dict[str, Any]: ...
    def store(self) -> dict[str, Any]: ...
    def verify(self, name: str | None) -> dict[str, Any]: ...
    def clean(self, name: str | None, advance: Advance, **steps: Any) -> dict[str, Any]: ...
    def delete(self, name: str) -> None: ...


class _Folder:
    """A data folder's caches, through the service the server runs."""

    def __init__(self, service: TileCacheService, public_url: str | None) -> None:
        self.service = service
        self.public_url = public_url

    def create(self, definition: CacheDefinition) -> dict[str, Any]:
        return self.service.create(definition).model_dump(mode="json")

    def list_caches(self) -> list[dict[str, Any]]:
        return [d.model_dump(mode="json") for d in self.service.list()]

    def plan(
        self, name: str, aoi: AreaOfInterest, zooms: ZoomRange, before: datetime | None
    ) -> dict[str, Any]:
        return self.service.plan(name, aoi, zooms, refresh_before=before).as_dict()

    def seed(
        self,
        name: str,
        aoi: AreaOfInterest,
        zooms: ZoomRange,
        before: datetime | None,
        advance: Advance,
    ) -> dict[str, Any]:
        done = [0]

        def report(state: SeedProgress) -> None:
            advance(state.done - done[0], state.total)
            done[0] = state.done

        return self.service.seed(name, aoi, zooms, refresh_before=before, progress=report).as_dict()

    def urls(
        self, name: str, aoi: AreaOfInterest, zooms: ZoomRange, expires: int
    ) -> list[dict[str, Any]]:
        base = (self.public_url or "").rstrip("/")
        found: list[dict[str, Any]] = []
        after = None
        while True:
            page, after = self.service.tile_urls(
                name, aoi, zooms, expires=timedelta(seconds=expires), after=after, limit=10_000
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
                        "method": str(item.url.method),
                        "headers": dict(item.url.headers),
                        "expires_at": item.url.expires_at.isoformat(),
                    }
                )
            if after is None:
                return found

    def stats(self, name: str) -> dict[str, Any]:
        return self.service.stats(name).as_dict()

    def store(self) -> dict[str, Any]:
        return asdict(self.service.store_stats())

    def verify(self, name: str | None) -> dict[str, Any]:
        report = self.service.verify(name)
        return {"checked": report.checked, "damaged": list(report.damaged)}

    def clean(self, name: str | None, advance: Advance, **steps: Any) -> dict[str, Any]:
        removed = 0
        result: dict[str, Any] = {}
        if name is not None:
            if "area" in steps or "zooms" in steps:
                removed += self.service.truncate(name, steps.get("area"), steps.get("zooms"))
            if "older_than" in steps or "max_bytes" in steps:
                removed += self.service.cleanup(
                    name, older_than=steps.get("older_than"), max_bytes=steps.get("max_bytes")
                )
            result["removed_tiles"] = removed
        if steps.get("gc"):
            seen = [0]

            def examined(count: int) -> None:
                advance(count - seen[0], None)
                seen[0] = count

            collected = self.service.gc(examined)
            result["examined_blobs"] = collected.examined
            result["deleted_blobs"] = collected.deleted
        return result

    def delete(self, name: str) -> None:
        self.service.delete(name)


class _Server:
    """A server's caches, through its REST API (the SDK's :class:`TileCaches`)."""

    def __init__(self, caches: TileCaches) -> None:
        self.caches = caches

    @staticmethod
    def area(aoi: AreaOfInterest) -> Area:
        """An area in any CRS as the API's GeoJSON in CRS84."""
        return Area(geometry=dict(mapping(aoi.to_wgs84())))

    def create(self, definition: CacheDefinition) -> dict[str, Any]:
        return self.caches.create(definition.model_dump(mode="json"))

    def list_caches(self) -> list[dict[str, Any]]:
        return self.caches.list()

    def plan(
        self, name: str, aoi: AreaOfInterest, zooms: ZoomRange, before: datetime | None
    ) -> dict[str, Any]:
        return self.caches.plan(name, self.area(aoi), zooms, refresh_before=before)

    def seed(
        self,
        name: str,
        aoi: AreaOfInterest,
        zooms: ZoomRange,
        before: datetime | None,
        advance: Advance,
    ) -> dict[str, Any]:
        job = self.caches.seed(name, self.area(aoi), zooms, refresh_before=before)
        return self.caches.wait(job, on_progress=_advancing(advance, int(job["plan"]["tiles"])))

    def urls(
        self, name: str, aoi: AreaOfInterest, zooms: ZoomRange, expires: int
    ) -> list[dict[str, Any]]:
        return self.caches.urls(name, self.area(aoi), zooms, expires=expires)

    def stats(self, name: str) -> dict[str, Any]:
        return self.caches.stats(name)

    def store(self) -> dict[str, Any]:
        return self.caches.store()

    def verify(self, name: str | None) -> dict[str, Any]:
        if name is None:
            raise CacheError("a server verifies one cache at a time: give its name")
        return self.caches.verify(name)

    def clean(self, name: str | None, advance: Advance, **steps: Any) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if "area" in steps and steps["area"] is not None:
            body["area"] = self.area(steps["area"]).model_dump(mode="json")
        zooms = steps.get("zooms")
        if zooms is not None:
            body["min_zoom"], body["max_zoom"] = zooms.min, zooms.max
        if steps.get("older_than") is not None:
            body["older_than"] = steps["older_than"].isoformat()
        if steps.get("max_bytes") is not None:
            body["max_bytes"] = steps["max_bytes"]
        if steps.get("gc"):
            body["gc"] = True
        if name is not None and not body:  # truncate everything: every level
            body["min_zoom"], body["max_zoom"] = 0, 30
        job = self.caches.gc() if name is None else self.caches.clean(name, **body)
        return self.caches.wait(job, on_progress=_advancing(advance, 100))

    def delete(self, name: str) -> None:
        self.caches.delete(name)


@contextmanager
def _caches(data_dir: Path | None, server: str | None, public_url: str | None) -> Iterator[Caches]:
    if server is not None:
        if data_dir is not None:
            raise CacheError("give --server or --data, not both")
        with Portal(server, credentials=load_credentials(server)) as portal:
            yield _Server(TileCaches(portal))
        return
    # a data folder's services: loaded for --data only (a tenth of a second or more at start)
    from offmaps.catalog import Catalog  # noqa: PLC0415
    from offmaps.services import open_caches  # noqa: PLC0415
    from offmaps.settings import ServerSettings  # noqa: PLC0415 - pydantic-settings: 30 ms

    settings = ServerSettings() if data_dir is None else ServerSettings(data_dir=data_dir)
    if not settings.data_dir.is_dir():
        raise CacheError(f"{settings.data_dir}: no such data folder")
    catalog = Catalog(settings.data_dir)
    try:
        service = open_caches(settings, catalog)
        try:
            yield _Folder(service, public_url or settings.public_url)
        finally:
            service.close()
    finally:
        catalog.close()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _where(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--server URL`` or ``--data DIR``, and ``--json``."""
    function = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(
        function
    )
    function = click.option(
        "--data",
        "data_dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="A data folder (default: $OFFMAPS_DATA_DIR, else ./offmaps-data).",
    )(function)
    return click.option("--server", help="A server's URL (sign in first with offmaps login).")(
        function
    )


def _area(aoi_file: Path | None, bbox: str | None, crs: str) -> AreaOfInterest:
    return _required(read_aoi(aoi_file, bbox, crs))


def _required(aoi: AreaOfInterest | None) -> AreaOfInterest:
    """The area given, where one is needed."""
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
    type=click.Choice([*(f.value for f in TileFormat), "mixed"]),
    default="png",
    show_default=True,
    help="The tiles' format.",
)
@click.option("--zooms", default="0-19", show_default=True, help="Levels cached, A-B.")
@click.option("--rate", type=float, help="Requests per second to the upstream (default 50).")
@click.option("--concurrency", type=int, help="Requests in flight while seeding (default 4).")
@_where
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
    server: str | None,
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
    with _caches(data_dir, server, None) as caches:
        created = caches.create(definition)
    if as_json:
        _echo_json(created)
    else:
        click.echo(f"created tile cache {name!r}")


@cache.command("list")
@_where
def list_caches(server: str | None, data_dir: Path | None, as_json: bool) -> None:
    """The tile caches."""
    with _caches(data_dir, server, None) as caches:
        found = caches.list_caches()
    if as_json:
        _echo_json(found)
        return
    for d in found:
        source = d["source"]
        click.echo(
            f"{d['name']}  {source['kind']}:{source['location']}  {d['tms']}  {d['format']}  "
            f"z{d['min_zoom']}-{d['max_zoom']}"
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
@_where
def seed(
    name: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str,
    refresh_before: str | None,
    dry_run: bool,
    server: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Fetch the tiles of an area that cache NAME lacks (rerun: nothing is fetched twice)."""
    aoi = _area(aoi_file, bbox, aoi_crs)
    levels = parse_zooms(zooms)
    before = parse_when(refresh_before) if refresh_before else None
    with _caches(data_dir, server, None) as caches:
        if dry_run:
            result = caches.plan(name, aoi, levels, before)
        else:
            with progress_bar(f"seeding {name}", None) as advance:
                result = caches.seed(name, aoi, levels, before, advance)
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
    help="The server's URL, for a data folder's own URLs (default: $OFFMAPS_PUBLIC_URL).",
)
@_where
def urls(
    name: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str,
    expires: int,
    public_url: str | None,
    server: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Presigned GET URLs of the stored tiles of an area, one per tile with its z, x, y and
    SHA-256, for a device to fetch straight from storage."""
    aoi = _area(aoi_file, bbox, aoi_crs)
    levels = parse_zooms(zooms)
    with _caches(data_dir, server, public_url) as caches:
        found = caches.urls(name, aoi, levels, expires)
    if as_json:
        _echo_json(found)
    else:
        for entry in found:
            click.echo(f"{entry['z']}/{entry['x']}/{entry['y']} {entry['sha256']} {entry['url']}")


@cache.command("stats")
@click.argument("name", required=False)
@_where
def stats(name: str | None, server: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Tiles, bytes, distinct blobs, dedup saving and use of cache NAME, per level (or the
    blob store under every cache, without NAME)."""
    with _caches(data_dir, server, None) as caches:
        found = caches.store() if name is None else caches.stats(name)
    if as_json:
        _echo_json(found)
    elif name is None:
        click.echo(", ".join(f"{k} {v:,}" for k, v in found.items()))
    else:
        click.echo(
            f"{found['name']}: {found['tiles']:,} tiles, {found['bytes']:,} bytes in "
            f"{found['blobs']:,} blobs ({found['blob_bytes']:,} bytes; dedup saves "
            f"{found['dedup_saving']:,})"
        )
        for level in found["levels"]:
            click.echo(
                f"  z{level['z']}: {level['tiles']:,} tiles, {level['bytes']:,} bytes, "
                f"{level['blobs']:,} blobs, {level['hits']:,} hits, {level['misses']:,} misses, "
                f"{level['fetches']:,} fetches, {level['errors']:,} errors"
            )


@cache.command("verify")
@click.argument("name", required=False)
@_where
def verify(name: str | None, server: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Hash every blob of cache NAME (or of every cache of a data folder) again; exit 1 if any
    was damaged (they are dropped, to be fetched again)."""
    with _caches(data_dir, server, None) as caches:
        report = caches.verify(name)
    if as_json:
        _echo_json(report)
    else:
        click.echo(f"{report['checked']:,} blobs checked, {len(report['damaged']):,} damaged")
        for key in report["damaged"]:
            click.echo(f"  damaged: {key}")
    if report["damaged"]:
        raise click.exceptions.Exit(1)


@cache.command("truncate")
@click.argument("name")
@aoi_option
@bbox_option
@crs_option
@click.option("--zooms", help="Only these levels, A-B.")
@_where
def truncate(
    name: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str | None,
    server: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Remove tiles of cache NAME: inside an area, at some levels, or all of them."""
    steps: dict[str, Any] = {"area": read_aoi(aoi_file, bbox, aoi_crs)}
    if zooms:
        steps["zooms"] = parse_zooms(zooms)
    with _caches(data_dir, server, None) as caches, progress_bar(f"truncating {name}", None) as bar:
        result = caches.clean(name, bar, **steps)
    _done(result, as_json)


@cache.command("cleanup")
@click.argument("name")
@click.option("--older-than", help="Remove tiles stored before this (an age such as 30d, or ISO).")
@click.option("--max-bytes", help="Keep the cache under this size (500M, 2G) by least recent use.")
@_where
def cleanup(
    name: str,
    older_than: str | None,
    max_bytes: str | None,
    server: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Remove old tiles of cache NAME, or the least recently used ones beyond a size."""
    if older_than is None and max_bytes is None:
        raise CacheError("give --older-than, --max-bytes or both")
    steps: dict[str, Any] = {}
    if older_than:
        steps["older_than"] = parse_when(older_than)
    if max_bytes:
        steps["max_bytes"] = parse_bytes(max_bytes)
    with _caches(data_dir, server, None) as caches, progress_bar(f"cleaning {name}", None) as bar:
        result = caches.clean(name, bar, **steps)
    _done(result, as_json)


@cache.command("gc")
@_where
def gc(server: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Delete the blobs no cache names any more (safe while a server seeds and serves)."""
    with _caches(data_dir, server, None) as caches, progress_bar("collecting blobs", None) as bar:
        result = caches.clean(None, bar, gc=True)
    _done(result, as_json)


@cache.command("delete")
@click.argument("name")
@_where
def delete(name: str, server: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Remove cache NAME and its tiles (then `offmaps cache gc` frees their blobs)."""
    with _caches(data_dir, server, None) as caches:
        caches.delete(name)
    _done({"deleted": name}, as_json)


def _done(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _echo_json(result)
    elif "deleted" in result:
        click.echo(f"deleted tile cache {result['deleted']!r}")
    else:
        words = {
            "removed_tiles": "tiles removed",
            "examined_blobs": "blobs examined",
            "deleted_blobs": "blobs deleted",
        }
        click.echo(", ".join(f"{result[k]:,} {words[k]}" for k in words if k in result))


EXPORT_TILE_LIMIT = 100_000
"""offmaps.containers.export.DEFAULT_EXPORT_TILE_LIMIT, which is not imported for every command."""


def _parse_colour(text: str) -> tuple[int, int, int]:
    """``#RRGGBB`` or ``R,G,B`` (0-255 each) as an RGB triple.

    Raises:
        click.BadParameter: anything else.
    """
    try:
        return parse_colour(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_background_option = click.option(
    "--background",
    default="#ffffff",
    show_default=True,
    help="Colour of JPEG pixels outside the area, #RRGGBB or R,G,B.",
)


@cache.command("export")
@click.argument("src")
@click.argument("dst")
@aoi_option
@bbox_option
@crs_option
@click.option("--zooms", help="Only these zoom levels, A-B (default: the source's).")
@_background_option
@click.option(
    "--max-tiles",
    type=click.IntRange(min=1),
    default=EXPORT_TILE_LIMIT,
    show_default=True,
    help="Refuse an export covering more tiles than this (checked before any work).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Worker processes clipping cut tiles (default: one per CPU).",
)
@click.option("--overwrite-tiles", is_flag=True, help="Replace DST if it exists.")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="SRC is a cache of this data folder, by name (an area is then required).",
)
@click.option(
    "--server",
    help="SRC is a cache of this server, by name: exported there as a job, then downloaded.",
)
@click.option(
    "--job",
    "job_id",
    help="With --server: download the files of this finished export job (resumes a download).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(
    src: str,
    dst: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str | None,
    background: str,
    max_tiles: int,
    processes: int | None,
    overwrite_tiles: bool,
    data_dir: Path | None,
    server: str | None,
    job_id: str | None,
    as_json: bool,
) -> None:
    """Export the tiles of SRC into a new container DST, clipped to an area.

    SRC and DST are named as for `offmaps tiles convert` (FILE.mbtiles, FILE.pmtiles, FILE.gpkg,
    esri-compact:DIR, esri-exploded:DIR, xyz:DIR, tms:DIR). Tiles wholly inside the area are
    copied byte for byte, tiles cut by its boundary clipped (transparent outside for PNG and
    WebP, --background for JPEG), tiles outside left out. DST appears only once the export has
    finished; tiles that do not decode are listed and left out. With --data DIR, SRC is a cache
    of that data folder, by name, and the area is required. With --server URL, SRC is a cache of
    that server: the export runs there as a job (its limit of tiles per export applies), and
    its files are downloaded into DST, resumed where an interrupted download stopped when the
    command is run again with --job ID.
    """
    if server is not None:
        _export_from_server(
            server, src, dst, read_aoi(aoi_file, bbox, aoi_crs), zooms, background,
            overwrite_tiles, job_id, as_json,
        )  # fmt: skip
        return
    if job_id is not None:
        raise CacheError("--job is for exports through a server (--server URL)")
    # clipping needs Pillow (the raster extra): loaded for this command only
    from offmaps.cache.export import CacheTileReader  # noqa: PLC0415
    from offmaps.containers.export import check_tile_limit, export_tiles, plan_export  # noqa: PLC0415

    aoi = read_aoi(aoi_file, bbox, aoi_crs)
    colour = _parse_colour(background)
    levels = parse_zooms(zooms) if zooms is not None else None
    destination = parse_location(dst)
    with ExitStack() as stack:
        reader: TileReader
        if data_dir is None:
            reader = stack.enter_context(open_reader(parse_location(src)))
        else:
            aoi = _required(aoi)
            caches = stack.enter_context(_caches(data_dir, None, None))
            if not isinstance(caches, _Folder):  # _caches gives a folder's when no --server
                raise CacheError(f"{data_dir}: not a data folder")
            reader = CacheTileReader(caches.service.index, caches.service.blobs, src)
        plan = plan_export(reader, aoi=aoi, zooms=levels)
        check_tile_limit(plan, max_tiles)  # before the bar: the error is the only output
        with progress_bar(f"{src} → {dst}", plan.tiles) as advance:
            result = export_tiles(
                reader,
                destination,
                plan,
                background=colour,
                max_tiles=max_tiles,
                overwrite=overwrite_tiles,
                processes=processes,
                progress=advance,
            )
            advance(0, result.read)
        skipped = reader.problems if isinstance(reader, CacheTileReader) else ()
        document = export_document(plan.tiles, result, skipped)
    _exported({"source": src, "destination": dst, **document}, as_json)


def _exported(document: dict[str, Any], as_json: bool) -> None:
    """Print an export's result: JSON, or its failures and counts on stderr."""
    if as_json:
        _echo_json(document)
        return
    for failure in document["failed"]:
        click.echo(f"failed: {failure['error']}", err=True)
    if document.get("reencoded"):
        click.echo(
            f"the source is mixed (PNG and JPEG tiles) and {document['destination']} holds one "
            f"format: {document['reencoded']:,} JPEG tiles were re-encoded as PNG",
            err=True,
        )
    click.echo(
        f"{document['written']:,} tiles written to {document['destination']} "
        f"({document['copied']:,} copied, {document['clipped']:,} clipped, "
        f"{document['left_out']:,} left out, {document['failures']:,} failed)",
        err=True,
    )


def _export_from_server(
    server: str,
    name: str,
    dst: str,
    aoi: AreaOfInterest | None,
    zooms: str | None,
    background: str,
    overwrite: bool,
    job_id: str | None,
    as_json: bool,
) -> None:
    """``offmaps cache export --server``: a job of the server, then its files downloaded."""
    destination = parse_location(dst)
    target = destination.path
    if target.exists() and not overwrite:
        raise CacheError(f"{target} exists: give --overwrite-tiles to replace it")
    _parse_colour(background)  # a bad colour before anything is asked of the server
    with Portal(server, credentials=load_credentials(server)) as portal:
        caches = TileCaches(portal)
        if job_id is None:
            levels = parse_zooms(zooms) if zooms is not None else _held_levels(caches, name)
            job = caches.export(
                name,
                _Server.area(_required(aoi)),
                levels,
                container=destination.kind.value,
                background=background,
            )
            job_id = str(job["id"])
            total = int(job["plan"]["tiles"])
            with progress_bar(f"{name} → export job {job_id}", total) as advance:
                result = caches.wait(job, on_progress=_advancing(advance, total))
        else:
            result = caches.wait({"id": job_id})
        download = target.parent / f".{target.name}.{job_id}.download"
        again = f"run the command again with --job {job_id} to go on"
        size = sum(int(entry["size"]) for entry in result.get("files", []))
        with progress_bar(f"downloading into {dst}", size) as advance:
            done = [0]

            def moved(now: int, _: int) -> None:
                advance(now - done[0])
                done[0] = now

            caches.download(result, download, on_progress=moved, again=again)
    _move_into(download, target, overwrite)
    _exported({"source": name, "destination": dst, "job": job_id, **result}, as_json)


def _held_levels(caches: TileCaches, name: str) -> ZoomRange:
    """The levels of a server's cache that hold tiles."""
    held = [int(level["z"]) for level in caches.stats(name)["levels"] if level["tiles"]]
    if not held:
        raise CacheError(f"cache {name!r} holds no tile to export")
    return ZoomRange(min(held), max(held))


def _advancing(advance: Advance, total: int) -> Callable[[float, str], None]:
    """A job's progress (fractions) as a bar's advances (of ``total`` units)."""
    done = [0]

    def report(fraction: float, _: str) -> None:
        now = round(fraction * total)
        advance(now - done[0], total)
        done[0] = now

    return report


def _move_into(download: Path, target: Path, overwrite: bool) -> None:
    """Give the downloaded export (one file or one folder in ``download``) its place."""
    made = list(download.iterdir())
    if len(made) != 1:
        raise CacheError(f"{download}: the export's files are not one file or one folder")
    if target.exists() and overwrite:
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    made[0].replace(target)
    download.rmdir()


@cache.command("import")
@click.argument("src")
@click.argument("name")
@aoi_option
@bbox_option
@crs_option
@click.option("--zooms", help="Only these zoom levels, A-B (default: the source's and NAME's).")
@_background_option
@click.option(
    "--overwrite-tiles",
    is_flag=True,
    help="Replace NAME's tiles with the incoming ones rather than merge over them.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Import every tile again, even those a stopped run of the same import stored.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The data folder of cache NAME (default: $OFFMAPS_DATA_DIR, else ./offmaps-data).",
)
@click.option(
    "--server",
    help="NAME is a cache of this server: SRC (an archive) is uploaded, then imported as a job.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_(
    src: str,
    name: str,
    aoi_file: Path | None,
    bbox: str | None,
    aoi_crs: str,
    zooms: str | None,
    background: str,
    overwrite_tiles: bool,
    restart: bool,
    data_dir: Path | None,
    server: str | None,
    as_json: bool,
) -> None:
    """Import the tiles of SRC into the existing cache NAME of a data folder or a server.

    SRC is named as for `offmaps tiles convert` (FILE.mbtiles, FILE.pmtiles, FILE.gpkg,
    esri-compact:DIR, esri-exploded:DIR, xyz:DIR, tms:DIR). Its tiling scheme and tile format
    must be NAME's (a mixed NAME takes PNG and JPEG). By default an incoming tile is merged over
    the one NAME holds (its transparent pixels keep NAME's); --overwrite-tiles replaces it. With
    an area, tiles cut by its boundary are clipped as on export. Tiles are stored 256 at a time,
    each batch whole, and a stopped import run again skips the tiles it stored (--restart
    imports them again). Tiles that do not decode are listed and left out, the rest imported,
    and the command then ends with an error (exit code 1). With --server URL,
    SRC must be an archive (FILE.mbtiles, FILE.gpkg, FILE.pmtiles): it is uploaded in resumable
    parts (an interrupted upload goes on when the command is run again), then imported there
    as a job.
    """
    aoi = read_aoi(aoi_file, bbox, aoi_crs)
    colour = _parse_colour(background)
    levels = parse_zooms(zooms) if zooms is not None else None
    location = parse_location(src)
    if server is not None:
        if data_dir is not None:
            raise CacheError("give --server or --data, not both")
        if restart:
            raise CacheError("--restart is for imports into a data folder's cache (--data)")
        found = _import_on_server(server, location, name, aoi, levels, background, overwrite_tiles)
    else:
        found = _import_here(
            data_dir, location, name, aoi, levels, colour, overwrite_tiles, resume=not restart
        )
    failed = list(found["failed"])
    if as_json:
        _echo_json({"source": src, **found})
    else:
        for failure in failed:
            click.echo(f"failed: {failure['error']}", err=True)
        click.echo(
            f"{found['imported']:,} tiles imported into {name} ({found['new']:,} new, "
            f"{found['merged']:,} merged, {found['overwritten']:,} overwritten; "
            f"{found['clipped']:,} clipped, {found['left_out']:,} left out, "
            f"{found['failures']:,} failed; {found['changed']:,} changed; "
            f"{found['skipped']:,} stored by an earlier run)",
            err=True,
        )
    if found["failures"]:  # after the result: the rest was imported
        raise CacheError(
            f"{found['failures']:,} tiles of {src} were left out: they are not valid images "
            "(listed with their keys)"
        )


def _import_here(
    data_dir: Path | None,
    location: Location,
    name: str,
    aoi: AreaOfInterest | None,
    levels: ZoomRange | None,
    colour: tuple[int, int, int],
    overwrite: bool,
    *,
    resume: bool,
) -> dict[str, Any]:
    """``offmaps cache import`` into a data folder's cache: the result as the job's JSON."""
    # clipping and merging need Pillow (the raster extra): loaded for this command
    from offmaps.cache.imports import import_tiles  # noqa: PLC0415

    with _caches(data_dir, None, None) as caches:
        if not isinstance(caches, _Folder):  # _caches gives a folder's when no --server
            raise CacheError(f"{data_dir}: not a data folder")
        service = caches.service
        service.definition(name)  # an unknown cache before the source is opened
        with open_reader(location) as reader, progress_bar(f"{location} → {name}", None) as bar:
            result = import_tiles(
                service.index,
                service.blobs,
                name,
                reader,
                aoi=aoi,
                zooms=levels,
                overwrite=overwrite,
                background=colour,
                progress=bar,
                resume=resume,
            )
    return import_document(name, result)


def _import_on_server(
    server: str,
    location: Location,
    name: str,
    aoi: AreaOfInterest | None,
    levels: ZoomRange | None,
    background: str,
    overwrite: bool,
) -> dict[str, Any]:
    """``offmaps cache import --server``: the archive uploaded, then imported as a job."""
    if location.kind not in ARCHIVE_KINDS:
        raise CacheError(
            f"{location}: a server imports an archive (FILE.mbtiles, FILE.gpkg, FILE.pmtiles); "
            f"make one first with offmaps tiles convert {location} FILE.mbtiles"
        )
    if not location.path.is_file():
        raise CacheError(f"{location.path}: no such file")
    with Portal(server, credentials=load_credentials(server)) as portal:
        caches = TileCaches(portal)
        caches.get(name)  # an unknown cache before anything is uploaded
        size = location.path.stat().st_size
        with progress_bar(f"uploading {location.path.name}", size) as advance:
            done = [0]

            def sent(now: int, _: int) -> None:
                advance(now - done[0])
                done[0] = now

            sha256 = caches.upload_archive(location.path, on_progress=sent)
        job = caches.import_archive(
            name,
            sha256,
            location.kind.value,
            area=_Server.area(aoi) if aoi is not None else None,
            zooms=levels,
            overwrite=overwrite,
            background=background,
        )
        with progress_bar(f"{location.path.name} → {name}", 100) as advance:
            return caches.wait(job, on_progress=_advancing(advance, 100))
