"""Feature services: layers and tables of rows with global ids and versions, a change journal
and attachments, kept in a store behind one protocol.

- :mod:`~offmaps.features.model`: the values (layer schemas, features, edits, journal entries,
  attachments); :mod:`~offmaps.features.store`: the ``FeatureStore`` protocol.
- The backends, which pass one contract suite: :mod:`~offmaps.features.geopackage` (one
  GeoPackage file per service, the embedded default) and :mod:`~offmaps.features.postgis` (one
  PostgreSQL schema per service). They share the journal and attachment code
  (:mod:`~offmaps.features.journal`, :mod:`~offmaps.features.attachments`), each speaking it in
  its own :mod:`~offmaps.features.dialect`.
- :mod:`~offmaps.features.filters`: CQL2 text filters compiled to parameterised SQL (exported
  here); :mod:`~offmaps.features.wire`: rows as change sets carry them;
  :mod:`~offmaps.features.importing`: layers imported from files with pyogrio.

Layer 2 of the layers contract, beside :mod:`offmaps.containers`, which it never imports.
"""

from __future__ import annotations

from offmaps.features.filters import (
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    FieldType,
    SQLDialect,
    SQLFilter,
    compile_filter,
)

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "FieldType",
    "SQLDialect",
    "SQLFilter",
    "compile_filter",
]
