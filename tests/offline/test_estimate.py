"""Estimates against the packages actually built: the sample map (real OSM sites, streets,
inspections and photos), several areas and options."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import Polygon, mapping

from offmaps.containers import TilesetMetadata, open_writer
from offmaps.jobs import Job
from offmaps.offline.generate import GENERATE_OFFLINE_MAP, GenerateOfflineMap, prepare_offline_map
from offmaps.offline.parameters import (
    Area,
    DestinationTableRowFilter,
    GenerateGeodatabaseParameters,
    GenerateLayerOption,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    OfflineMapEstimate,
    SyncModel,
    TileArchiveFormat,
)
from offmaps.offline.plan import create_default_overrides
from offmaps.sample import SampleSources
from offmaps.sample._features import SITES_LAYER, find_sites, write_sites, write_streets
from offmaps.sample._osm import read_osm_layer
from offmaps.sample._photos import write_photos
from offmaps.sample.webmap import _assemble
from offmaps.schemas import AttachmentOption, UpdateMode, WebMap
from offmaps.schemas.jobs import JobStatus
from offmaps.services import Services, build_services
from offmaps.settings import ServerSettings
from offmaps.tiling import get_tms
from offmaps.types import Tile, TileCompression, TileFormat
from tests.data import data_path
from tests.jobs.test_jobs import wait
from tests.tilegen import make_tile

TOLERANCE = 0.15
"""How far the estimated total may be from the package's size (the issue's bar)."""

# a triangle in the middle of the sites, and one over all of them: polygons, not boxes
SMALL = Polygon([(24.93, 60.16), (24.96, 60.16), (24.945, 60.175)])
LARGE = Polygon([(24.7, 60.1), (25.3, 60.1), (25.3, 60.35), (24.7, 60.35)])


@dataclass
class Sample:
    """The sample map served by a data folder's services."""

    services: Services
    map_id: str

    @property
    def webmap(self) -> WebMap:
        return self.services.catalog.webmaps.get(self.map_id)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    """The sample map (offmaps.sample) over its real OSM sources, with tiles drawn by
    tests/tilegen.py in place of the Mapnik basemap and the buildings (a render takes
    minutes; these weigh alike per tile)."""
    root = tmp_path_factory.mktemp("estimate")
    osm = data_path("osm/Helsinki.osm.pbf")
    sources = root / "sources"
    sources.mkdir()
    sites = find_sites(read_osm_layer(osm, "points"))
    write_sites(sources / "sites.gpkg", sites)
    write_streets(sources / "streets.gpkg", read_osm_layer(osm, "lines"))
    photos = write_photos(sources / "photos", sites)
    basemap = _tiles(sources / "basemap.mbtiles", TileFormat.PNG, range(12, 15))
    buildings = _tiles(sources / "buildings.pmtiles", TileFormat.MVT, range(13, 15))
    data = root / "data"
    (data / "tiles").mkdir(parents=True)
    services = build_services(ServerSettings(data_dir=data))
    try:
        found = SampleSources(
            sources / "sites.gpkg",
            SITES_LAYER,
            sources / "streets.gpkg",
            photos,
            basemap,
            buildings,
        )
        yield Sample(services, _assemble(services.catalog, found, data))
    finally:
        services.close()


def _tiles(path: Path, tile_format: TileFormat, zooms: range) -> Path:
    tms = get_tms("WebMercatorQuad")
    compression = TileCompression.GZIP if tile_format is TileFormat.MVT else TileCompression.NONE
    metadata = TilesetMetadata(tile_format=tile_format, tile_compression=compression)
    with open_writer(str(path), metadata) as writer:
        for found in tms.tiles(24.8, 60.1, 25.1, 60.25, list(zooms)):
            tile = Tile(found.x, found.y, found.z)
            writer.write_tile(tile, make_tile(tile, tile_format, compression, size=256))
    return path


def _area(polygon: Polygon) -> Area:
    return Area(geometry=dict(mapping(polygon)))


def _build(
    sample: Sample,
    parameters: GenerateOfflineMapParameters,
    overrides: GenerateOfflineMapParameterOverrides,
) -> Job:
    """The package the generate job builds: its files, as the job lists them."""
    payload = GenerateOfflineMap(
        map_id=sample.map_id,
        parameters=parameters,
        overrides=overrides,
        owner="editor",
        server_url="http://offmaps.test",
    )
    job = sample.services.jobs.submit(GENERATE_OFFLINE_MAP, payload, owner="editor")
    done = wait(sample.services.jobs, job.id, timeout=300)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.result is not None
    assert not done.result["layer_errors"]
    assert not done.result["table_errors"]
    return done


def _rows(sample: Sample, job_id: str) -> dict[str, int]:
    """Rows per layer of the built replica."""
    output = sample.services.jobs.output(job_id)
    path = sample.services.catalog.data_dir.parent / f"{job_id}.gpkg"
    path.write_bytes(output.get("helsinki.gpkg"))
    with sqlite3.connect(path) as conn:
        return {
            name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            for name in ("sites", "streets", "inspections")
            if conn.execute("SELECT 1 FROM gpkg_contents WHERE table_name = ?", (name,)).fetchone()
        }


def _overrides(
    sample: Sample,
    parameters: GenerateOfflineMapParameters,
    *,
    where: str | None = None,
    sync_model: SyncModel = SyncModel.PER_LAYER,
) -> GenerateOfflineMapParameterOverrides:
    found = create_default_overrides(sample.webmap, parameters)
    gdb = found.generate_geodatabase["helsinki"]
    options = tuple(
        GenerateLayerOption(**{**o.model_dump(), "where_clause": where})
        if o.layer_id == "sites"
        else o
        for o in gdb.layer_options
    )
    return found.model_copy(
        update={
            "generate_geodatabase": {
                "helsinki": GenerateGeodatabaseParameters(
                    service="helsinki",
                    layer_options=options,
                    sync_model=sync_model,
                    attachments_sync_direction=gdb.attachments_sync_direction,
                )
            }
        }
    )


CASES: dict[str, tuple[Polygon, dict[str, Any], dict[str, Any]]] = {
    "small polygon": (SMALL, {}, {}),
    "large polygon": (LARGE, {}, {}),
    "large, no basemap, no attachments": (
        LARGE,
        {"include_basemap": False, "return_layer_attachment_option": AttachmentOption.EXCLUDE},
        {},
    ),
    "where filter, related rows only": (
        LARGE,
        {"include_basemap": False},
        {"where": "kind = 'bench'"},
    ),
    "every row of tables": (
        SMALL,
        {"destination_table_row_filter": DestinationTableRowFilter.ALL, "include_basemap": False},
        {},
    ),
    "per replica, PMTiles": (
        SMALL,
        {"tile_format": TileArchiveFormat.PMTILES},
        {"sync_model": SyncModel.PER_REPLICA},
    ),
    "no updates (no replica)": (
        LARGE,
        {"update_mode": UpdateMode.NO_UPDATES, "include_basemap": False},
        {},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_estimate_is_within_15_percent_of_the_package_built(sample: Sample, case: str) -> None:
    polygon, options, override_options = CASES[case]
    parameters = GenerateOfflineMapParameters(area_of_interest=_area(polygon), **options)
    overrides = _overrides(sample, parameters, **override_options)
    _, estimate = prepare_offline_map(
        sample.services.catalog,
        sample.webmap,
        parameters,
        overrides,
        states=sample.services.sync.recorded_states,
    )
    done = _build(sample, parameters, overrides)
    files: list[dict[str, Any]] = (done.result or {})["files"]
    built = sum(entry["size"] for entry in files)
    assert abs(estimate.bytes - built) <= TOLERANCE * built, (built, _summary(estimate))
    # rows and attachments are not estimated but counted, as the job chooses them
    rows = _rows(sample, done.id)
    features = {
        layer.layer_id: layer.features for layer in estimate.layers if layer.features is not None
    }
    assert features == rows
    photos = [e for e in files if e["path"].startswith("attachments/")]
    estimated_photos = sum(layer.attachment_bytes or 0 for layer in estimate.layers)
    assert estimated_photos == sum(e["size"] for e in photos)


def _summary(estimate: OfflineMapEstimate) -> str:
    return (
        ", ".join(
            f"{layer.layer_id}={layer.bytes}/{layer.features or layer.tiles}"
            for layer in estimate.layers
        )
        + f", overhead={estimate.overhead_bytes}"
    )
