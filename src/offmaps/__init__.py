"""offmaps: take web maps offline, edit them in the field, bring the edits home safely.

The packages, lowest layer first; a package imports only from layers below it (import-linter
checks this; docs/architecture.md has the table):

- ``errors``, ``types``: the exception tree, and the values every layer shares (``Tile``,
  ``BBox``, ``TileFormat``...).
- ``schemas``: the documents on the wire (web maps, change sets), as pydantic models;
  ``tiling``: tile matrix sets, areas of interest and exact tile covers, pure maths;
  ``storage``: content-addressed byte stores; ``geopackage``: the GeoPackage core.
- ``containers``: tile archives and folders behind reader and writer protocols;
  ``features``: feature services (layers, rows, change journal, attachments) in GeoPackage or
  PostGIS stores behind one protocol.
- ``sync``: version vectors and the three-way merge of offline edits, pure;
  ``sample``: the Helsinki sample data, from OpenStreetMap.
- ``offline``: offline map parameters and plans, extraction, the offline package, and the
  device side of sync.
- ``server``: the HTTP server (``create_app``); ``client``: the SDK over HTTP.
- ``cli``: the ``offmaps`` command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("offmaps")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
