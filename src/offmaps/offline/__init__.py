"""Offline maps: parameters and plans, extraction of replicas and tile archives, the package.

- :mod:`offmaps.offline.parameters`: what an offline map is asked for (wire models of the API).
- :mod:`offmaps.offline.plan`: defaults, capabilities, overrides and the plan, from a web map.
- :mod:`offmaps.offline.extract`: a feature service's replica and tile archives for an area.
- :mod:`offmaps.offline.package`: the offline package folder, its manifest and verification.

See docs/offline.md and docs/offline-package.md.
"""

from offmaps.offline.package import MobileMapPackage, OfflineLayer, OfflineMap, verify_package
from offmaps.offline.parameters import (
    Area,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    OfflineMapCapabilities,
    OfflineMapEstimate,
    area_from_bbox,
)

__all__ = [
    "Area",
    "GenerateOfflineMapParameterOverrides",
    "GenerateOfflineMapParameters",
    "MobileMapPackage",
    "OfflineLayer",
    "OfflineMap",
    "OfflineMapCapabilities",
    "OfflineMapEstimate",
    "area_from_bbox",
    "verify_package",
]
