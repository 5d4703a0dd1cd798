"""Real data fetched by ``make data`` (scripts/fetch_data.sh).

Tests fail loudly, never skip, when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["data_path"]


def data_path(relative: str) -> Path:
    """A file of the data folder (``$OFFMAPS_DATA``, default ``./data``); fails if absent."""
    root = Path(os.environ.get("OFFMAPS_DATA", Path(__file__).resolve().parents[1] / "data"))
    path = root / relative
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make data` (scripts/fetch_data.sh) first")
    return path
