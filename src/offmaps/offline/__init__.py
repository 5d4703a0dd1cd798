"""Offline maps: parameters and plans, extraction of replicas and tile archives, the package.

- :mod:`offmaps.offline.parameters`: what an offline map is asked for (wire models of the API).
- :mod:`offmaps.offline.plan`: defaults, capabilities, overrides and the plan, from a web map.
- :mod:`offmaps.offline.extract`: a feature service's replica and tile archives for an area.
- :mod:`offmaps.offline.package`: the offline package folder, its manifest and verification.
- :mod:`offmaps.offline.editing`: editing a package's layers under the web map's rules.
- :mod:`offmaps.offline.replica`: the device side of sync: the outbox and atomic downloads.

See docs/offline.md, docs/offline-package.md and docs/sync.md.
"""

from offmaps.offline.editing import OfflineFeatureTable, open_feature_table
from offmaps.offline.package import MobileMapPackage, OfflineLayer, OfflineMap, verify_package
from offmaps.offline.parameters import (
    Area,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    OfflineMapCapabilities,
    OfflineMapEstimate,
    area_from_bbox,
)
from offmaps.offline.replica import LocalReplica

__all__ = [
    "Area",
    "GenerateOfflineMapParameterOverrides",
    "GenerateOfflineMapParameters",
    "LocalReplica",
    "MobileMapPackage",
    "OfflineFeatureTable",
    "OfflineLayer",
    "OfflineMap",
    "OfflineMapCapabilities",
    "OfflineMapEstimate",
    "area_from_bbox",
    "open_feature_table",
    "verify_package",
]
