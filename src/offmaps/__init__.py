"""offmaps: take web maps offline, edit them in the field, bring the edits home safely.

The packages, lowest layer first; a package imports only from layers below it (import-linter
checks this; docs/architecture.md has the table):

- ``errors``, ``types``: the exception tree, and the values every layer shares (``Tile``,
  ``BBox``, ``TileFormat``...).
- ``schemas``: the documents on the wire (web maps, change sets, jobs), as pydantic models;
  ``tiling``: tile matrix sets, areas of interest and exact tile covers, pure maths;
  ``storage``: content-addressed blobs and keyed objects, with ranged reads and presigned URLs;
  ``geopackage``: the GeoPackage core; ``access``: principals, scopes and sharing rules;
  ``settings``: the server's typed settings.
- ``containers``: tile archives and folders behind reader and writer protocols;
  ``features``: feature services (layers, rows, change journal, attachments) in GeoPackage or
  PostGIS stores behind one protocol.
- ``sync``: version vectors and the three-way merge of offline edits, pure; ``sources``: tile
  sources and their caches; ``jobs``: job kinds, stores and runners; ``state``: the server's
  users, web maps and replicas behind store protocols.
- ``catalog``: a server's feature services, tile layers, web maps and who may use them;
  ``replicas``: the server side of sync.
- ``offline``: offline map parameters and plans, extraction, package generation, the offline
  package, and the device side of sync; ``sample``: the Helsinki sample data and web map.
- ``services``: every service of a server, built from its settings.
- ``server``: the HTTP edge (``create_app``); ``client``: the SDK over HTTP.
- ``cli``: the ``offmaps`` command.
"""

from __future__ import annotations

import functools

__all__ = ["__version__"]


@functools.cache
def _version() -> str:
    # importlib.metadata costs ~0.1 s of start-up: looked up on first use only (docs/cli.md)
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("offmaps")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def __getattr__(name: str) -> str:
    """``__version__``, the installed distribution's version ("0.0.0" when not installed)."""
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
