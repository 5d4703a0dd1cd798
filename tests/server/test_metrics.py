"""``/metrics``: the tile caches' figures as Prometheus reads them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.test_cache_presigned import PNG_TILES, App, _app
from tests.serverkit import assert_problem


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    yield from _app(tmp_path)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_show_each_level_of_each_cache(app: App) -> None:
    tile = next(iter(PNG_TILES))
    app.client.get(f"/tiles/world/{tile.z}/{tile.x}/{tile.y}", headers=app.token("admin"))
    app.client.get("/tiles/world/2/3/3", headers=app.token("admin"))  # a miss (maybe absent)
    answer = app.client.get("/metrics", headers=app.token("reader"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples = _samples(answer.text)
    stats = app.services.caches.stats("world")
    for level in stats.levels:
        labels = (("cache", "world"), ("z", str(level.z)))
        assert samples[("offmaps_cache_tiles", labels)] == level.tiles
        assert samples[("offmaps_cache_dedup_saving_bytes", labels)] == level.dedup_saving
        assert samples[("offmaps_cache_hits_total", labels)] == level.hits
        assert samples[("offmaps_cache_misses_total", labels)] == level.misses
    assert samples[("offmaps_cache_hits_total", (("cache", "world"), ("z", str(tile.z))))] >= 1
    assert sum(v for (n, _), v in samples.items() if n == "offmaps_cache_tiles") == len(PNG_TILES)
    assert ("offmaps_cache_store_orphan_blobs", ()) not in samples  # never measured yet
    app.client.get("/api/cache-store", headers=app.token("reader"))
    samples = _samples(app.client.get("/metrics", headers=app.token("reader")).text)
    assert samples[("offmaps_cache_store_orphan_blobs", ())] == 0
    assert samples[("offmaps_cache_store_referenced_blobs", ())] == stats.blobs


def test_metrics_need_cache_read(app: App) -> None:
    assert_problem(app.client.get("/metrics"), 401)
    assert_problem(app.client.get("/metrics", headers=app.token("viewer")), 403)
