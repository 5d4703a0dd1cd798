"""The sample data folder: a Helsinki web map built from real OpenStreetMap data.

``offmaps serve`` with no ``--data`` serves it, building it on first start. Its parts:

- ``tiles/basemap.mbtiles``: a raster basemap rendered locally from the OSM extract (Mapnik);
- ``tiles/buildings.pmtiles``: a vector tile layer of OSM buildings;
- feature service ``helsinki``: read-only ``streets``, editable ``sites`` (real OSM points)
  with a related ``inspections`` table and photo attachments (the inspections and photos are
  synthetic, made for the sample, over the real sites);
- an online-only layer (the OpenStreetMap tile server) that cannot be taken offline;
- users ``editor`` (maps:read, maps:write, features:edit) and ``admin``, with the password
  :data:`SAMPLE_PASSWORD`.

Map data © OpenStreetMap contributors, available under the Open Database License (ODbL).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from offmaps.catalog import VECTOR_TILES_SUFFIX, Catalog
from offmaps.errors import FeatureStoreError
from offmaps.features.importing import import_features
from offmaps.features.model import FeatureQuery, Relationship
from offmaps.sample import build_sample_sources
from offmaps.schemas import WebMap
from offmaps.state.users import SQLiteUserStore
from offmaps.types import BBox

__all__ = ["ATTRIBUTION", "SAMPLE_PASSWORD", "SAMPLE_SERVICE", "build_sample", "ensure_sample"]

ATTRIBUTION = "© OpenStreetMap contributors, ODbL"
SAMPLE_PASSWORD = "offmaps-sample"  # noqa: S105 - a documented demo password
SAMPLE_SERVICE = "helsinki"

Progress = Callable[[float, str], None]


def find_osm_extract() -> Path:
    """The Helsinki extract: ``$OFFMAPS_OSM_FILE``, or ``data/osm/Helsinki.osm.pbf`` here or
    under ``$OFFMAPS_DATA`` (where ``make data`` puts it)."""
    candidates = [os.environ.get("OFFMAPS_OSM_FILE")]
    candidates.append(str(Path(os.environ.get("OFFMAPS_DATA", "data")) / "osm/Helsinki.osm.pbf"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    msg = (
        "the sample map needs the Helsinki OSM extract: run `make data`, or set "
        "OFFMAPS_OSM_FILE to a .osm.pbf file"
    )
    raise FeatureStoreError(msg)


def ensure_sample(data_dir: Path, *, progress: Progress | None = None) -> bool:
    """Build the sample into ``data_dir`` unless it exists; returns whether it was built."""
    if data_dir.exists() and any(data_dir.iterdir()):
        return False
    build_sample(data_dir, find_osm_extract(), progress=progress)
    return True


def build_sample(data_dir: Path, osm_path: Path, *, progress: Progress | None = None) -> str:
    """Build the sample data folder at ``data_dir`` (which must not exist or be empty).

    It is built beside ``data_dir`` and moved into place at the end, so a failed build leaves
    nothing behind. Returns the web map's id.
    """
    report = progress or (lambda fraction, message: None)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    work = data_dir.parent / f".{data_dir.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        sources = build_sample_sources(
            osm_path, work / "sources", progress=lambda f, m: report(0.8 * f, m)
        )
        report(0.8, "importing features")
        catalog = Catalog(work)
        try:
            map_id = _assemble(catalog, sources, work)
        finally:
            catalog.close()
        users = SQLiteUserStore(work / "users.sqlite")
        try:
            users.add_user(
                "editor",
                SAMPLE_PASSWORD,
                scopes=("maps:read", "maps:write", "features:edit"),
                groups=("field-crew",),
            )
            users.add_user("admin", SAMPLE_PASSWORD, scopes=("admin",))
        finally:
            users.close()
        shutil.rmtree(work / "sources")
        if data_dir.exists():
            data_dir.rmdir()
        work.rename(data_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    report(1.0, "sample map ready")
    return map_id


def _assemble(catalog: Catalog, sources: object, work: Path) -> str:
    src = sources
    store = catalog.create_feature_service(SAMPLE_SERVICE)
    import_features(store, src.sites, layer=src.sites_layer, name="sites", title="Inspection sites")  # type: ignore[attr-defined]
    import_features(store, src.sites, layer="inspections", name="inspections", title="Inspections")  # type: ignore[attr-defined]
    import_features(store, src.streets, layer="streets", name="streets", title="Streets")  # type: ignore[attr-defined]
    store.add_relationship(
        Relationship("site_inspections", "sites", "osm_id", "inspections", "site_osm_id")
    )
    photos_csv: Path = src.photos_csv  # type: ignore[attr-defined]
    with photos_csv.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            osm_id = int(row["osm_id"])
            page = store.query("sites", FeatureQuery(filters=(f"osm_id = {osm_id}",), limit=1))
            if not page.features:
                continue
            photo = photos_csv.parent / row["file"]
            ref = catalog.blobs.put(photo.read_bytes())
            store.add_attachment(
                "sites",
                page.features[0].global_id,
                name=photo.name,
                content_type="image/jpeg",
                size=ref.size,
                sha256=ref.sha256,
            )
    shutil.copyfile(src.basemap, work / "tiles" / "basemap.mbtiles")  # type: ignore[attr-defined]
    shutil.copyfile(src.buildings, work / "tiles" / "buildings.pmtiles")  # type: ignore[attr-defined]
    catalog.tile_sources.clear()
    catalog._load_tile_sources()
    extent = store.extent("sites")
    webmap = WebMap.model_validate(_webmap_document(extent))
    stored = catalog.webmaps.create(webmap, owner="editor")
    return str(stored.id)


def _webmap_document(extent: BBox | None) -> dict[str, object]:
    west, south, east, north = extent if extent is not None else BBox(24.93, 60.16, 24.96, 60.18)
    editing = {"create": True, "update": True, "delete": True}
    return {
        "format_version": "1.0",
        "item": {
            "title": "Helsinki field inspections",
            "snippet": "Inspect sites in central Helsinki, online or offline.",
            "description": "Sample web map built from OpenStreetMap data. " + ATTRIBUTION,
            "tags": ["sample", "helsinki", "inspections"],
        },
        "initial_extent": [west, south, east, north],
        "bookmarks": [
            {
                "name": "City centre",
                "extent": [
                    west + (east - west) / 3,
                    south + (north - south) / 3,
                    east - (east - west) / 3,
                    north - (north - south) / 3,
                ],
            }
        ],
        "basemap": {
            "title": "OpenStreetMap (rendered locally)",
            "layers": [
                {
                    "type": "raster_tile",
                    "id": "basemap",
                    "title": "Basemap",
                    "service": "basemap",
                    "export_tiles_allowed": True,
                }
            ],
        },
        "operational_layers": [
            {
                "type": "vector_tile",
                "id": "buildings",
                "title": "Buildings",
                "service": "buildings",
                "export_tiles_allowed": True,
            },
            {
                "type": "vector_tile",
                "id": "sites-tiles",
                "title": "Inspection sites and streets (vector tiles, live)",
                "service": f"{SAMPLE_SERVICE}{VECTOR_TILES_SUFFIX}",
                "visible": False,
                # built from the editable layers on request: offline maps take the layers instead
                "export_tiles_allowed": False,
            },
            {
                "type": "feature",
                "id": "streets",
                "title": "Streets",
                "service": SAMPLE_SERVICE,
                "layer": "streets",
                "geometry_type": "LineString",
                "editing": {"create": False, "update": False, "delete": False},
            },
            {
                "type": "feature",
                "id": "sites",
                "title": "Inspection sites",
                "service": SAMPLE_SERVICE,
                "layer": "sites",
                "geometry_type": "Point",
                "editing": editing,
                "attachments_enabled": True,
                "sync_enabled": True,
            },
            {
                "type": "online_only",
                "id": "osm-live",
                "title": "OpenStreetMap (live, online only)",
                "url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                "kind": "xyz",
            },
        ],
        "tables": [
            {
                "id": "inspections",
                "title": "Inspections",
                "service": SAMPLE_SERVICE,
                "layer": "inspections",
                "editing": editing,
                "sync_enabled": True,
            }
        ],
        "relationships": [
            {
                "id": "site_inspections",
                "name": "Inspections of a site",
                "origin": "sites",
                "destination": "inspections",
                "origin_key": "osm_id",
                "destination_key": "site_osm_id",
                "cardinality": "1:N",
            }
        ],
        "offline": {
            "attachment_sync_direction": "bidirectional",
            "attachment_option": "include_all",
            "sync_direction": "bidirectional",
            "update_mode": "sync_with_feature_services",
            "online_only_option": "exclude",
        },
        "sharing": {"owner": "editor", "groups": ["field-crew"], "public": True},
    }
