"""Preplanned areas with every byte in S3-compatible storage (SeaweedFS, checking signatures):
package and update files kept by their SHA-256 in the bucket, and an incremental refresh that
reads the previous package back from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shapely.geometry import Point

from offmaps.features.model import Insert, Update
from offmaps.offline.areas import MapAreaRequest, PreplannedUpdateMode
from offmaps.schemas import WebMap
from offmaps.services import build_services
from offmaps.settings import ServerSettings
from offmaps.storage import S3ObjectStore
from tests.jobs.test_jobs import wait
from tests.s3kit import BUCKET, bucket_keys
from tests.serverkit import SITES, feature_layer, webmap_document

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def test_area_packages_live_in_s3_and_refresh_from_there(
    tmp_path: Path, storage_url: str, s3_client: S3Client
) -> None:
    services = build_services(ServerSettings(data_dir=tmp_path / "data", storage_url=storage_url))
    try:
        assert isinstance(services.objects, S3ObjectStore)
        store = services.catalog.create_feature_service("city")
        store.create_layer(SITES)
        store.apply_edits(
            [
                Insert("sites", {"name": f"site {i}", "osm_id": i}, Point(24.9 + i / 100, 60.1))
                for i in range(10)
            ]
        )
        document = webmap_document(
            title="S3", public=True, layers=[feature_layer("sites", edit=True)], tables=[]
        )
        webmap = services.catalog.webmaps.create(WebMap.model_validate(document), owner="editor")
        request = MapAreaRequest(
            title="North",
            bbox=(24.895, 60.05, 24.995, 60.15),
            update_mode=PreplannedUpdateMode.DOWNLOAD_SCHEDULED_UPDATES,
        )
        area = services.areas.create(webmap, request, owner="editor", server_url="http://x")
        assert area.job_id is not None
        assert wait(services.jobs, area.job_id).error is None
        site = next(iter(store.iter_features("sites")))
        store.apply_edits([Update("sites", site.global_id, {"name": "renamed"})])
        area = services.areas.refresh(
            services.areas.store.get(area.id), owner="editor", server_url="http://x"
        )
        assert area.job_id is not None
        job = wait(services.jobs, area.job_id)
        assert job.result is not None
        assert job.result["incremental"] is True
        first, second = services.areas.store.packages(area.id)
        prefix = storage_url.removeprefix(f"s3://{BUCKET}/") + "/objects/areas/files/"
        keys = {key.removeprefix(prefix) for key in bucket_keys(s3_client, BUCKET, prefix)}
        named = {e["sha256"] for p in (first, second) for e in [*p.files, *p.updates]}
        assert named <= keys
        (update,) = second.updates
        assert update["file"] == "city.gpkg"
    finally:
        services.close()
