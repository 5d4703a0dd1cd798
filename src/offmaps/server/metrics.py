"""``/metrics``: the tile caches' figures in Prometheus's text format.

Read from the cache index at each scrape (one query per cache), so every server process sharing
an index reports the same figures; counters of this process not yet written to the index are
written first. The blob store's orphans need the whole store listed, so they are the last
measure (``GET /api/cache-store`` or ``offmaps cache stats``) with its time, never a listing per
scrape. The route needs ``cache:read``: Prometheus gets a token itself with its ``oauth2``
client-credentials settings (docs/cache.md).
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from offmaps.access import Scope
from offmaps.cache import TileCacheService
from offmaps.server.auth import require_scopes
from offmaps.server.rest.deps import ServicesDep

__all__ = ["CacheCollector", "metrics", "metrics_router"]

_PER_LEVEL = (
    ("tiles", "Tiles stored", "tiles"),
    ("bytes", "Bytes of the tiles stored, each tile counted", "bytes"),
    ("blobs", "Distinct contents among the tiles stored", "blobs"),
    ("blob_bytes", "Bytes of those distinct contents", "blob_bytes"),
    ("dedup_saving_bytes", "Bytes not stored thanks to identical tiles", "dedup_saving"),
)
_COUNTERS = (
    ("hits", "Reads answered from the cache", "hits"),
    ("misses", "Reads not in the cache", "misses"),
    ("fetches", "Tiles fetched from the source", "fetches"),
    ("errors", "Fetches from the source that failed", "errors"),
)


class CacheCollector(Collector):
    """Collects every cache's figures per level, and the blob store's, at each scrape."""

    def __init__(self, caches: TileCacheService) -> None:
        self.caches = caches

    def collect(self) -> Iterator[Metric]:
        """The metric families, read now."""
        gauges = {
            name: GaugeMetricFamily(f"offmaps_cache_{name}", doc, labels=["cache", "z"])
            for name, doc, _ in _PER_LEVEL
        }
        counters = {
            name: CounterMetricFamily(f"offmaps_cache_{name}", doc, labels=["cache", "z"])
            for name, doc, _ in _COUNTERS
        }
        last = GaugeMetricFamily(
            "offmaps_cache_last_access_timestamp_seconds",
            "When a tile of the cache was last read",
            labels=["cache"],
        )
        for definition in self.caches.list():
            stats = self.caches.stats(definition.name)
            for level in stats.levels:
                labels = [stats.name, str(level.z)]
                for name, _, attribute in _PER_LEVEL:
                    gauges[name].add_metric(labels, getattr(level, attribute))
                for name, _, attribute in _COUNTERS:
                    counters[name].add_metric(labels, getattr(level, attribute))
            if stats.last_access is not None:
                last.add_metric([stats.name], stats.last_access.timestamp())
        yield from gauges.values()
        yield from counters.values()
        yield last
        referenced = self.caches.index.blob_sizes()
        yield GaugeMetricFamily(
            "offmaps_cache_store_referenced_blobs",
            "Blobs some cache's tile names",
            value=len(referenced),
        )
        yield GaugeMetricFamily(
            "offmaps_cache_store_referenced_bytes",
            "Bytes of the blobs some cache's tile names",
            value=sum(referenced.values()),
        )
        measured = self.caches.last_store_stats
        if measured is not None:
            when, store = measured
            for name, doc, value in (
                ("blobs", "Blobs in the store, at the last measure", store.blobs),
                ("bytes", "Bytes of the store, at the last measure", store.bytes),
                ("orphan_blobs", "Blobs no tile names, at the last measure", store.orphans),
                ("orphan_bytes", "Bytes of those, at the last measure", store.orphan_bytes),
                ("measured_timestamp_seconds", "When the store was last measured",
                 when.timestamp()),
            ):  # fmt: skip
                yield GaugeMetricFamily(f"offmaps_cache_store_{name}", doc, value=value)


READ_METRICS = require_scopes(Scope.CACHE_READ, signed_in=True)


def metrics(services: ServicesDep) -> Response:
    """The tile caches' figures in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CacheCollector(services.caches))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def metrics_router() -> APIRouter:
    """``GET /metrics``."""
    router = APIRouter(tags=["metrics"])
    router.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        dependencies=[Depends(READ_METRICS)],
        summary="Tile cache figures for Prometheus",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "The metrics"}},
    )
    return router
