"""``offmaps serve``, ``offmaps import features``, ``offmaps login``, ``offmaps maps list``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from offmaps.cli.progress import progress_bar
from offmaps.client.portal import Portal, load_credentials, save_credentials
from offmaps.errors import FeatureStoreError

__all__ = ["import_group", "login", "maps", "serve", "worker"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The data folder to serve (default: $OFFMAPS_DATA_DIR, else ./offmaps-data with the "
    "Helsinki sample map built on first start).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--public-url", help="The URL clients reach the server at, for links.")
def serve(
    host: str, port: int, data_dir: Path | None, workers: int, public_url: str | None
) -> None:
    """Serve web maps, feature services and tile layers over HTTP."""
    import uvicorn  # noqa: PLC0415 - the server extra

    from offmaps.sample.webmap import ensure_sample  # noqa: PLC0415
    from offmaps.settings import ServerSettings  # noqa: PLC0415

    settings = ServerSettings()
    if data_dir is None:
        ensure_sample(settings.data_dir)
        data_dir = settings.data_dir
    elif not data_dir.is_dir():
        raise FeatureStoreError(f"{data_dir}: no such folder")
    # uvicorn builds the app in each worker from the environment
    os.environ["OFFMAPS_DATA_DIR"] = str(data_dir.resolve())
    if public_url:
        os.environ["OFFMAPS_PUBLIC_URL"] = public_url
    click.echo(f"offmaps serving {data_dir} at http://{host}:{port}/", err=True)
    uvicorn.run(
        "offmaps.server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        proxy_headers=False,
    )


@click.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The data folder the servers serve (default: $OFFMAPS_DATA_DIR or ./offmaps-data).",
)
@click.option(
    "--concurrency",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Jobs run at once in this process.",
)
def worker(data_dir: Path | None, concurrency: int) -> None:
    """Run the jobs servers put on the job queue ($OFFMAPS_QUEUE_URL) until stopped."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from offmaps.jobs.queue import QueueJobRunner  # noqa: PLC0415 - the queue extra
    from offmaps.services import build_services  # noqa: PLC0415
    from offmaps.settings import ServerSettings  # noqa: PLC0415

    settings = ServerSettings() if data_dir is None else ServerSettings(data_dir=data_dir)
    if settings.queue_url is None:
        raise click.UsageError("no job queue: set OFFMAPS_QUEUE_URL=redis://HOST:PORT/DB")
    if not settings.data_dir.is_dir():
        raise FeatureStoreError(f"{settings.data_dir}: no such folder")
    services = build_services(settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        runner = services.jobs
        if not isinstance(runner, QueueJobRunner):
            raise AssertionError("a queue URL gives a queue runner")
        click.echo(
            f"offmaps worker: {concurrency} at once, jobs from {settings.queue_url}", err=True
        )
        runner.work(concurrency, stop)
    finally:
        services.close()


@click.group("import")
def import_group() -> None:
    """Import data into a server's data folder."""


@import_group.command("features")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--layer", "source_layer", help="The layer of FILE to import (if it has several).")
@click.option("--service", default="default", show_default=True, help="The feature service.")
@click.option("--name", help="The new layer's name (default: the source layer's).")
@click.option("--title", help="The new layer's title.")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The server's data folder (default: $OFFMAPS_DATA_DIR or ./offmaps-data).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_features_command(
    file: Path,
    source_layer: str | None,
    service: str,
    name: str | None,
    title: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Import FILE (GeoPackage, GeoJSON, Shapefile, FlatGeobuf...) as a feature layer."""
    from offmaps.catalog import Catalog  # noqa: PLC0415
    from offmaps.features.importing import import_features, list_source_layers  # noqa: PLC0415
    from offmaps.settings import ServerSettings  # noqa: PLC0415

    list_source_layers(file)  # an unreadable file creates no service
    settings = ServerSettings()
    catalog = Catalog(data_dir or settings.data_dir, features_url=settings.features_url)
    try:
        created = service not in catalog.feature_services
        store = (
            catalog.create_feature_service(service) if created else catalog.feature_service(service)
        )
        with progress_bar(f"importing {file.name}", None) as advance:
            seen = 0

            def progress(done: int, total: int) -> None:
                nonlocal seen
                advance(done - seen, total)
                seen = done

            try:
                result = import_features(
                    store, file, layer=source_layer, name=name, title=title, progress=progress
                )
            except BaseException:
                if created:  # a failed import into a new service leaves no empty service
                    catalog.remove_feature_service(service)
                raise
    finally:
        catalog.close()
    collection = f"{service}.{result.schema.name}"
    if as_json:
        click.echo(json.dumps({"collection": collection, "rows": result.rows}))
    else:
        click.echo(f"imported {result.rows:,} rows into {collection}")


@click.command()
@click.argument("url")
@click.option("--username", "-u", prompt=True, help="Your user name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def login(url: str, username: str, password_stdin: bool) -> None:
    """Sign in to the server at URL and keep the token for later commands."""
    password: str
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = str(click.prompt("Password", hide_input=True))
    with Portal(url) as portal:
        credentials = portal.login(username, password)
    path = save_credentials(credentials)
    click.echo(f"signed in to {credentials.server} as {username} (token kept in {path})")


@click.group()
def maps() -> None:
    """Web maps on a server."""


@maps.command("list")
@click.option("--server", "url", required=True, help="The server's URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the maps as JSON.")
def list_maps(url: str, as_json: bool) -> None:
    """The web maps you can see (signed in with `offmaps login`, or the public ones)."""
    with Portal(url, credentials=load_credentials(url)) as portal:
        found = portal.list_maps()
    if as_json:
        click.echo(json.dumps([m.as_dict() for m in found], indent=2))
        return
    for webmap in found:
        click.echo(f"{webmap.id}  {webmap.title}  ({webmap.owner})")
