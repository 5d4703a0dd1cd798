"""What a server publishes, found in its data folder, and who may use which part of it.

The data folder::

    DATA/
      features/<service>.gpkg     one GeoPackage per feature service (embedded default)
      tiles/<name>.mbtiles|.pmtiles|.gpkg|...   tile archives, served as tile layers
      tiles/upstream.json         upstream XYZ URLs served through the cache
      cache/                      cached upstream tiles
      blobs/                      attachments, content-addressed by SHA-256
      webmaps/<id>.json           web map documents
      users.sqlite                users and OAuth2 clients
      signing-key.pem             the token signing key (generated)

Each feature service is also a vector tile service, ``<service>-vt`` (see
:mod:`offmaps.sources.vector`), unless a tile archive has that name.

With ``features_url`` set to a PostgreSQL URL, feature services are PostGIS schemas instead.

Access follows the web maps: a feature layer or table can be read by whoever can read a web map
that uses it, and edited by holders of ``features:edit`` through a web map that allows that edit.
``admin`` reaches everything. Definition expressions of web map layers are view filters, as in
ArcGIS: they apply to the map's offline extracts, not as a security boundary of the service.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Protocol
from urllib.parse import urlsplit

from pyproj import Transformer

from offmaps.access import Principal, Scope, can_read, check_can_write
from offmaps.errors import (
    AccessDeniedError,
    FeatureStoreError,
    InsufficientScopeError,
    InvalidFeatureError,
    InvalidTokenError,
    InvalidWebMapError,
    LayerNotFoundError,
    TileNotFoundError,
    WebMapError,
    WebMapNotFoundError,
)
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import LayerSchema
from offmaps.features.store import FeatureStore
from offmaps.schemas import FeatureLayerRef, TableRef, TileLayerRef, WebMap
from offmaps.sources import ArchiveTileSource, TileSource, UpstreamTileSource
from offmaps.sources.vector import FeatureVectorTiles
from offmaps.state.webmaps import FolderWebMapStore
from offmaps.storage import BlobStore, LocalBlobStore
from offmaps.types import BBox, TileFormat

__all__ = [
    "FEATURE_BACKENDS",
    "FEATURE_SERVICE_NAME",
    "SERVICE_NAME",
    "VECTOR_TILES_SUFFIX",
    "Catalog",
    "EditOperation",
    "FeatureServices",
    "GeoPackageServices",
    "PostGISServices",
    "open_feature_services",
]

SERVICE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
"""Names of tile services (the stems of the archives in ``DATA/tiles``)."""
FEATURE_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""Names of feature services: also PostgreSQL schema names, so one name works in both backends."""

_TILE_SUFFIXES = (".mbtiles", ".pmtiles", ".gpkg")
VECTOR_TILES_SUFFIX = "-vt"
"""Suffix of the vector tile service each feature service gets (``helsinki-vt``)."""


class EditOperation(StrEnum):
    """An edit a web map may allow on a layer."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class FeatureServices(Protocol):
    """Where a server's feature services live: one backend of :data:`FEATURE_BACKENDS`."""

    def list_services(self) -> list[str]:
        """The names of the feature services there."""
        ...

    def open(self, name: str) -> FeatureStore:
        """Open feature service ``name``."""
        ...

    def create(self, name: str) -> FeatureStore:
        """Create feature service ``name``, empty."""
        ...


@dataclass(frozen=True)
class GeoPackageServices:
    """Feature services as GeoPackage files of a folder (the embedded default)."""

    folder: Path

    def list_services(self) -> list[str]:
        """The stems of the folder's ``.gpkg`` files that are service names."""
        found = sorted(self.folder.glob("*.gpkg"))
        return [path.stem for path in found if FEATURE_SERVICE_NAME.match(path.stem)]

    def open(self, name: str) -> FeatureStore:
        """Open ``<folder>/<name>.gpkg``."""
        return GeoPackageStore.open(self.folder / f"{name}.gpkg")

    def create(self, name: str) -> FeatureStore:
        """Create ``<folder>/<name>.gpkg``."""
        return GeoPackageStore.create(self.folder / f"{name}.gpkg")


@dataclass(frozen=True)
class PostGISServices:
    """Feature services as schemas of a PostgreSQL database with PostGIS."""

    url: str

    def list_services(self) -> list[str]:
        """The schemas of the database that are feature services."""
        from offmaps.features.postgis import PostGISStore  # noqa: PLC0415 - optional extra

        return PostGISStore.list_services(self.url)

    def open(self, name: str) -> FeatureStore:
        """Open schema ``name``."""
        from offmaps.features.postgis import PostGISStore  # noqa: PLC0415

        return PostGISStore.open(self.url, schema=name)

    def create(self, name: str) -> FeatureStore:
        """Create schema ``name``."""
        from offmaps.features.postgis import PostGISStore  # noqa: PLC0415

        return PostGISStore.create(self.url, schema=name)


FEATURE_BACKENDS: Mapping[str, Callable[[Path, str], FeatureServices]] = MappingProxyType(
    {
        "": lambda data_dir, _: GeoPackageServices(data_dir / "features"),
        "postgresql": lambda _, url: PostGISServices(url),
        "postgres": lambda _, url: PostGISServices(url),
    }
)
"""Feature service backends by the scheme of ``features_url`` (none: GeoPackage files)."""


def open_feature_services(data_dir: Path, features_url: str | None) -> FeatureServices:
    """The feature service backend of a server.

    Raises:
        FeatureStoreError: ``features_url`` names no known backend.
    """
    url = features_url or ""
    scheme = urlsplit(url).scheme.lower()
    backend = FEATURE_BACKENDS.get(scheme) if scheme or not url else None
    if backend is None:
        known = ", ".join(f"{name}://" for name in FEATURE_BACKENDS if name)
        raise FeatureStoreError(f"features_url must be a {known} URL, not {scheme!r}")
    return backend(data_dir, url)


class Catalog:
    """The feature services, tile layers, web maps and blobs of one server."""

    def __init__(
        self,
        data_dir: Path,
        *,
        features_url: str | None = None,
        max_attachment_bytes: int = 64 * 1024 * 1024,
        blobs: BlobStore | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.features = open_feature_services(data_dir, features_url)
        self.max_attachment_bytes = max_attachment_bytes
        for sub in ("features", "tiles", "cache", "blobs", "webmaps"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.blobs: BlobStore = LocalBlobStore(data_dir / "blobs") if blobs is None else blobs
        self.webmaps = FolderWebMapStore(data_dir / "webmaps")
        self._lock = threading.Lock()
        self._services: dict[str, FeatureStore] = {}
        self.tile_sources: dict[str, TileSource] = {}
        self._public_tiles: tuple[int, frozenset[str]] | None = None
        self._load_feature_services()
        self._load_tile_sources()
        for name, store in self._services.items():
            self._add_vector_tiles(name, store)

    # --- loading ---------------------------------------------------------------------------

    def _load_feature_services(self) -> None:
        for name in self.features.list_services():
            self._services[name] = self.features.open(name)

    def _load_tile_sources(self) -> None:
        tiles = self.data_dir / "tiles"
        for path in sorted(tiles.iterdir()):
            if path.suffix in _TILE_SUFFIXES and SERVICE_NAME.match(path.stem):
                self.tile_sources[path.stem] = ArchiveTileSource(path.stem, str(path))
        upstream = tiles / "upstream.json"
        if upstream.exists():
            for name, spec in _read_upstream(upstream).items():
                self.tile_sources[name] = UpstreamTileSource(
                    name,
                    str(spec["url"]),
                    self.data_dir / "cache",
                    tile_format=TileFormat(str(spec.get("format", "png"))),
                    min_zoom=int(str(spec.get("min_zoom", 0))),
                    max_zoom=int(str(spec.get("max_zoom", 19))),
                )

    def create_feature_service(self, name: str) -> FeatureStore:
        """A new, empty feature service."""
        if not FEATURE_SERVICE_NAME.match(name):
            msg = (
                "a feature service name is a lowercase letter then up to 62 lowercase letters,"
                f" digits or _: not {name[:64]!r}"
            )
            raise FeatureStoreError(msg)
        with self._lock:
            if name in self._services:
                raise FeatureStoreError(f"feature service {name!r} exists already")
            store = self.features.create(name)
            self._services[name] = store
            self._add_vector_tiles(name, store)
            return store

    def _add_vector_tiles(self, name: str, store: FeatureStore) -> None:
        """Serve the service's spatial layers as vector tiles, ``<name>-vt``, unless a tile
        archive of that name exists."""
        self.tile_sources.setdefault(
            f"{name}{VECTOR_TILES_SUFFIX}",
            FeatureVectorTiles(f"{name}{VECTOR_TILES_SUFFIX}", store),
        )

    def remove_feature_service(self, name: str) -> None:
        """Delete feature service ``name`` and everything in it (its blobs stay)."""
        with self._lock:
            store = self._services.pop(name, None)
            tiles = self.tile_sources.pop(name + VECTOR_TILES_SUFFIX, None)
        if store is None:
            raise LayerNotFoundError(f"no feature service {name[:64]!r}")
        close_tiles = getattr(tiles, "close", None)
        if close_tiles is not None:
            close_tiles()
        drop = getattr(store, "drop", None)  # PostGIS: the schema
        if drop is not None:
            drop()
        store.close()
        if drop is None:
            for suffix in ("", "-wal", "-shm"):
                (self.data_dir / "features" / f"{name}.gpkg{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Close every tile source and feature service."""
        for source in self.tile_sources.values():
            close = getattr(source, "close", None)
            if close is not None:
                close()
        for store in self._services.values():
            store.close()

    # --- lookups ---------------------------------------------------------------------------

    @property
    def feature_services(self) -> Mapping[str, FeatureStore]:
        """The feature services by name."""
        return dict(self._services)

    def feature_service(self, name: str) -> FeatureStore:
        """One feature service; raises ``LayerNotFoundError``."""
        try:
            return self._services[name]
        except KeyError:
            raise LayerNotFoundError(f"no feature service {name[:64]!r}") from None

    def get_layer(self, collection_id: str) -> tuple[str, LayerSchema]:
        """The service and schema of collection ``service.layer``."""
        service, dot, layer = collection_id.partition(".")
        if not dot or service not in self._services:
            raise LayerNotFoundError(f"no collection {collection_id[:130]!r}", layer=None)
        return service, self._services[service].get_layer(layer)

    def all_collections(self) -> list[str]:
        """Every ``service.layer`` id."""
        return [
            f"{name}.{schema.name}"
            for name, store in self._services.items()
            for schema in store.list_layers()
        ]

    # --- access ----------------------------------------------------------------------------

    def visible_map(self, principal: Principal, map_id: str) -> WebMap:
        """Web map ``map_id`` if ``principal`` may see it.

        Raises:
            WebMapNotFoundError: no such map, or not one the caller may see (the same answer, so
                private maps do not leak).
        """
        webmap = self.webmaps.get(map_id)
        sharing = webmap.sharing
        if principal.has(Scope.ADMIN) or can_read(
            principal, sharing.owner, sharing.groups, sharing.public
        ):
            return webmap
        raise WebMapNotFoundError(f"no web map {map_id!r}")

    def owned_map(self, principal: Principal, map_id: str) -> WebMap:
        """Web map ``map_id`` if ``principal`` may change it and what hangs on it (its
        preplanned areas): its owner with ``maps:write``, or an admin.

        Raises:
            WebMapNotFoundError: no such map, or not one the caller may see.
            InvalidTokenError, InsufficientScopeError, AccessDeniedError: as
                :func:`~offmaps.access.check_can_write`.
        """
        webmap = self.visible_map(principal, map_id)
        check_can_write(principal, webmap.sharing.owner)
        return webmap

    def check_references(self, webmap: WebMap) -> None:
        """Refuse a web map with a feature layer, table or tile layer this server does not have.

        Raises:
            InvalidWebMapError: naming the first missing reference.
        """
        for ref in (*webmap.operational_layers, *webmap.tables):
            if isinstance(ref, FeatureLayerRef | TableRef):
                cid = f"{ref.service}.{ref.layer}"
                try:
                    self.get_layer(cid)
                except LayerNotFoundError as exc:
                    msg = f"layer {ref.id!r} refers to {cid!r}, which this server does not have"
                    raise InvalidWebMapError(msg) from exc
        for ref in (*webmap.basemap.layers, *webmap.operational_layers):
            if isinstance(ref, TileLayerRef) and ref.service not in self.tile_sources:
                service = ref.service
                msg = f"tile layer {ref.id!r} refers to tile service {service!r}, which is missing"
                raise InvalidWebMapError(msg)

    def _visible_maps(self, principal: Principal) -> list[WebMap]:
        return [
            webmap
            for webmap in self.webmaps.list()
            if can_read(
                principal,
                webmap.sharing.owner,
                webmap.sharing.groups,
                webmap.sharing.public,
            )
        ]

    def _refs(self, principal: Principal, collection_id: str) -> list[FeatureLayerRef | TableRef]:
        service, _, layer = collection_id.partition(".")
        refs: list[FeatureLayerRef | TableRef] = []
        for webmap in self._visible_maps(principal):
            for ref in (*webmap.operational_layers, *webmap.tables):
                if isinstance(ref, FeatureLayerRef | TableRef) and (ref.service, ref.layer) == (
                    service,
                    layer,
                ):
                    refs.append(ref)
        return refs

    def check_tiles(self, principal: Principal, name: str) -> None:
        """Let ``principal`` read tile layer ``name`` when a web map they can see has it.

        Raises ``TileNotFoundError`` otherwise, so that private tile layers are not revealed.
        """
        if principal.has(Scope.ADMIN):
            return
        if not principal.has(Scope.MAPS_READ):
            raise _missing_scope(principal, Scope.MAPS_READ)
        if not any(name in _tile_layers(webmap) for webmap in self._visible_maps(principal)):
            raise TileNotFoundError(f"no tile layer named {name[:64]!r}")

    def public_tile_layers(self) -> frozenset[str]:
        """The tile layers of public web maps: anyone may read them.

        Cached until a web map is written or removed (the folder's modification time changes).
        """
        stamp = self.webmaps.folder.stat().st_mtime_ns
        cached = self._public_tiles
        if cached is not None and cached[0] == stamp:
            return cached[1]
        names = frozenset(
            name
            for webmap in self.webmaps.list()
            if webmap.sharing.public
            for name in _tile_layers(webmap)
        )
        self._public_tiles = (stamp, names)
        return names

    def readable_collections(self, principal: Principal) -> list[str]:
        """The collections ``principal`` may read."""
        if principal.has(Scope.ADMIN):
            return self.all_collections()
        visible: set[str] = set()
        for webmap in self._visible_maps(principal):
            for ref in (*webmap.operational_layers, *webmap.tables):
                if isinstance(ref, FeatureLayerRef | TableRef):
                    visible.add(f"{ref.service}.{ref.layer}")
        return [cid for cid in self.all_collections() if cid in visible]

    def check_read(self, principal: Principal, collection_id: str) -> tuple[str, LayerSchema]:
        """The service and schema of a collection ``principal`` may read.

        Raises ``LayerNotFoundError`` for collections they may not see, so that private
        layers are not revealed.
        """
        found = self.get_layer(collection_id)
        if not principal.has(Scope.MAPS_READ) and not principal.has(Scope.ADMIN):
            raise _missing_scope(principal, Scope.MAPS_READ)
        if principal.has(Scope.ADMIN) or self._refs(principal, collection_id):
            return found
        raise LayerNotFoundError(f"no collection {collection_id[:130]!r}")

    def check_edit(
        self, principal: Principal, collection_id: str, operation: EditOperation
    ) -> tuple[str, LayerSchema]:
        """Like :meth:`check_read`, and the edit must be allowed to ``principal``."""
        found = self.check_read(principal, collection_id)
        if principal.has(Scope.ADMIN):
            return found
        if not principal.has(Scope.FEATURES_EDIT):
            raise _missing_scope(principal, Scope.FEATURES_EDIT)
        for ref in self._refs(principal, collection_id):
            if getattr(ref.editing, operation.value):
                return found
        msg = f"no web map you can see allows {operation.value} on {collection_id[:130]}"
        raise AccessDeniedError(msg)

    def check_editable_fields(
        self, principal: Principal, collection_id: str, properties: Mapping[str, object]
    ) -> None:
        """Refuse edits of fields no web map lets ``principal`` edit."""
        if principal.has(Scope.ADMIN) or not properties:
            return
        allowed: set[str] = set()
        for ref in self._refs(principal, collection_id):
            if ref.editing.editable_fields is None:
                return
            allowed.update(ref.editing.editable_fields)
        for name in properties:
            if name not in allowed:
                raise InvalidFeatureError(f"field {name!r} is not editable here", field=name)

    # --- CRS -------------------------------------------------------------------------------

    def bbox_to_layer(self, bbox: BBox, schema: LayerSchema) -> BBox:
        """A CRS84 box as a box in the layer's CRS (densified edges)."""
        if schema.srid == 4326:
            return bbox
        return BBox(*_transformer(4326, schema.srid).transform_bounds(*bbox, densify_pts=21))

    def extent_crs84(self, extent: BBox, schema: LayerSchema) -> BBox:
        """A layer-CRS box as a CRS84 box."""
        if schema.srid == 4326:
            return extent
        return BBox(*_transformer(schema.srid, 4326).transform_bounds(*extent, densify_pts=21))


@functools.lru_cache(maxsize=16)
def _transformer(source: int, target: int) -> Transformer:
    return Transformer.from_crs(source, target, always_xy=True)


def _missing_scope(principal: Principal, scope: Scope) -> Exception:
    if principal.anonymous:
        return InvalidTokenError(f"log in: this needs the {scope.value} scope")
    return InsufficientScopeError(f"this needs the {scope.value} scope", required=(scope.value,))


def _read_upstream(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WebMapError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise WebMapError(f'{path}: expected {{"name": {{"url": ..., "format": ...}}}}')
    return {str(k): v for k, v in data.items() if SERVICE_NAME.match(str(k))}


def _tile_layers(webmap: WebMap) -> set[str]:
    return {
        ref.service
        for ref in (*webmap.basemap.layers, *webmap.operational_layers)
        if isinstance(ref, TileLayerRef)
    }
