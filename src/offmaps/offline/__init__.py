"""Offline maps: parameters and plans, extraction of replicas and tile archives, the package.

- :mod:`offmaps.offline.parameters`: what an offline map is asked for (wire models of the API).
- :mod:`offmaps.offline.plan`: defaults, capabilities, overrides and the plan, from a web map.
- :mod:`offmaps.offline.extract`: a feature service's replica and tile archives for an area.
- :mod:`offmaps.offline.package`: the offline package folder, its manifest and verification.
- :mod:`offmaps.offline.editing`: editing a package's layers under the web map's rules.
- :mod:`offmaps.offline.replica`: the device side of sync: the outbox and atomic downloads.
- :mod:`offmaps.offline.areas`: preplanned map areas on the wire, and refresh schedules.
- :mod:`offmaps.offline.preplanned`: preplanned map areas on the server: packaging, refresh.
- :mod:`offmaps.offline.updates`: the update files of preplanned areas, and their chain.
- :mod:`offmaps.offline.adopt`: a downloaded preplanned package made a device's own replicas.

See docs/offline.md, docs/offline-package.md, docs/preplanned.md and docs/sync.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: at run time, __getattr__ below imports on first use
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

# Lazy, so that importing one module (the device side of sync needs :mod:`.package` and
# :mod:`.replica`) does not import the others (docs/cli.md, "Start-up").
_EXPORTS: dict[str, str] = {
    "OfflineFeatureTable": "offmaps.offline.editing",
    "open_feature_table": "offmaps.offline.editing",
    "MobileMapPackage": "offmaps.offline.package",
    "OfflineLayer": "offmaps.offline.package",
    "OfflineMap": "offmaps.offline.package",
    "verify_package": "offmaps.offline.package",
    "Area": "offmaps.offline.parameters",
    "GenerateOfflineMapParameterOverrides": "offmaps.offline.parameters",
    "GenerateOfflineMapParameters": "offmaps.offline.parameters",
    "OfflineMapCapabilities": "offmaps.offline.parameters",
    "OfflineMapEstimate": "offmaps.offline.parameters",
    "area_from_bbox": "offmaps.offline.parameters",
    "LocalReplica": "offmaps.offline.replica",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
