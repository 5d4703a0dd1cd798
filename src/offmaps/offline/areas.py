"""Preplanned map areas on the wire: what an author asks for, and when an area is refreshed.

A preplanned map area (ArcGIS ``PreplannedMapArea``, made with ``CreateMapArea``) is an area of a
web map that the server packages ahead of time, once for every crew (docs/preplanned.md). These
are the models of its REST API and SDK, shared by the server (which packages the areas,
:mod:`offmaps.offline.preplanned`) and the SDK (which creates, lists and downloads them):

- :class:`PreplannedUpdateMode`: how a device's copy of a package is kept fresh;
- :class:`PackagingStatus`: where an area's packaging is;
- :class:`MapAreaRequest`, :class:`MapAreaChanges`: the bodies of create and update;
- :func:`parse_refresh` and :func:`next_refresh`: an area's refresh schedule (``never``, an
  interval such as ``1d``, or a cron expression), in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from offmaps.offline.parameters import (
    Area,
    GenerateOfflineMapParameterOverrides,
    TileArchiveFormat,
    thumbnail_bytes,
)
from offmaps.schemas import AttachmentOption

__all__ = [
    "MIN_REFRESH_INTERVAL_S",
    "MapAreaChanges",
    "MapAreaRequest",
    "PackagingStatus",
    "PreplannedUpdateMode",
    "RefreshSchedule",
    "next_refresh",
    "parse_refresh",
]

MIN_REFRESH_INTERVAL_S: Final = 300
"""The shortest refresh interval: five minutes."""


class PreplannedUpdateMode(StrEnum):
    """How a device keeps its copy of an area's package fresh (ArcGIS ``PreplannedUpdateMode``)."""

    SYNC_WITH_FEATURE_SERVICES = "sync_with_feature_services"
    """Each device syncs its own replica with the feature services, as an on-demand map does."""
    DOWNLOAD_SCHEDULED_UPDATES = "download_scheduled_updates"
    """Devices download the update files each refresh writes; their features are read-only."""
    DOWNLOAD_SCHEDULED_UPDATES_AND_UPLOAD_NEW_FEATURES = (
        "download_scheduled_updates_and_upload_new_features"
    )
    """As ``download_scheduled_updates``, and devices may add features and upload them."""
    NO_UPDATES = "no_updates"
    """The package stays as downloaded."""


class PackagingStatus(StrEnum):
    """Where an area's packaging is (ArcGIS ``PreplannedPackagingStatus``)."""

    PACKAGING = "packaging"
    """Its first package is being built: nothing to download yet."""
    COMPLETE = "complete"
    """A package is ready to download (a refresh may be running: the last one stays ready)."""
    FAILED = "failed"
    """Its packaging failed, for the reason the area gives; the author fixes it and refreshes."""


# --- refresh schedules -----------------------------------------------------------------------

_INTERVAL = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
_UNIT_SECONDS: Final = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass(frozen=True, slots=True)
class RefreshSchedule:
    """When an area is refreshed: :func:`parse_refresh` makes one from its text.

    Attributes:
        text: the schedule as written (``never``, ``12h``, ``0 3 * * 1``).
        kind: ``never``, ``interval`` or ``cron``.
        seconds: the interval, for ``interval``.
    """

    text: str
    kind: Literal["never", "interval", "cron"]
    seconds: int | None = None


def parse_refresh(text: str) -> RefreshSchedule:
    """Read a refresh schedule: ``never``; an interval of minutes, hours, days or weeks (``30m``,
    ``12h``, ``1d``, ``2w``; at least five minutes); or a cron expression of five fields
    (minute, hour, day of month, month, day of week), in UTC.

    Raises:
        ValueError: the text is none of these; the message names what is wrong (for a cron
            expression, the field).
    """
    from cronsim import CronSim, CronSimError  # noqa: PLC0415 - only where schedules are read

    text = text.strip()
    if text.lower() == "never":
        return RefreshSchedule("never", "never")
    interval = _INTERVAL.match(text)
    if interval is not None:
        seconds = int(interval.group(1)) * _UNIT_SECONDS[interval.group(2)]
        if seconds < MIN_REFRESH_INTERVAL_S:
            raise ValueError(f"a refresh interval is at least 5m, not {text!r}")
        return RefreshSchedule(text, "interval", seconds)
    if len(text.split()) != 5:
        raise ValueError(
            f"a refresh schedule is 'never', an interval such as '1d' or '12h', or a cron "
            f"expression of five fields (minute hour day month weekday), not {text[:80]!r}"
        )
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"the cron expression {text[:80]!r} does not parse: {exc}") from None
    return RefreshSchedule(text, "cron")


def next_refresh(schedule: RefreshSchedule, after: datetime) -> datetime | None:
    """When an area on ``schedule`` is next refreshed after ``after`` (aware, UTC); ``None``
    for ``never``. An interval counts from ``after``: missed runs make one run, not many."""
    from cronsim import CronSim  # noqa: PLC0415

    if schedule.kind == "never":
        return None
    if schedule.kind == "interval":
        assert schedule.seconds is not None
        return after + timedelta(seconds=schedule.seconds)
    return next(CronSim(schedule.text, after.astimezone(UTC)))


def _check_refresh(text: str) -> str:
    return parse_refresh(text).text


RefreshText = Annotated[str, Field(min_length=1, max_length=200)]
"""A refresh schedule as :func:`parse_refresh` reads it."""


# --- request bodies --------------------------------------------------------------------------

Scale = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A scale denominator; 0 means no limit."""
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Shape(_Model):
    """Where the area is: exactly one of ``area``, ``bbox`` and ``bookmark`` (none in changes
    that keep the area)."""

    area: Area | None = None
    """A GeoJSON Polygon or MultiPolygon in CRS84."""
    bbox: tuple[Longitude, Latitude, Longitude, Latitude] | None = None
    """``[west, south, east, north]`` in degrees; a west greater than its east crosses the
    antimeridian."""
    bookmark: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """The name of one of the web map's bookmarks, whose extent the area takes."""

    def _given(self) -> int:
        return sum(value is not None for value in (self.area, self.bbox, self.bookmark))


class _Options(_Model):
    min_scale: Scale | None = None
    """The smallest scale (largest denominator) tiles are taken at; 0 for the layers' own."""
    max_scale: Scale | None = None
    """The largest scale (smallest denominator); 0 for the layers' own."""
    overrides: GenerateOfflineMapParameterOverrides | None = None
    """Per-layer choices, as on demand: omit a layer, its own where clause, a tile layer's
    levels."""
    attachments: AttachmentOption | None = None
    """Which layers' attachments the package takes; the map's own setting by default."""
    tile_format: TileArchiveFormat | None = None
    """The container of the package's tile archives: ``mbtiles`` (the default) or ``pmtiles``;
    update files keep either fresh."""
    update_mode: PreplannedUpdateMode | None = None
    """How devices keep the package fresh."""
    refresh: RefreshText | None = None
    """When the server refreshes the area: ``never``, an interval such as ``1d``, or a cron
    expression, in UTC."""
    title: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    description: Annotated[str, Field(max_length=65_536)] | None = None
    thumbnail: str | None = None
    """A PNG or JPEG image, base64-encoded, at most 1 MiB; the basemap's tile under the area
    by default."""

    @field_validator("refresh")
    @classmethod
    def _refresh(cls, value: str | None) -> str | None:
        return None if value is None else _check_refresh(value)

    @field_validator("title")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and ("\n" in value or "\r" in value or not value.strip()):
            raise ValueError("a title is one line of text")
        return value

    @field_validator("thumbnail")
    @classmethod
    def _thumbnail(cls, value: str | None) -> str | None:
        if value is not None:
            thumbnail_bytes(value)  # a data URL of a PNG or JPEG within the size
        return value

    @model_validator(mode="after")
    def _scales(self) -> Self:
        low, high = self.min_scale or 0, self.max_scale or 0
        if low and high and high > low:
            raise ValueError(
                f"max_scale (1:{high:,.0f}) is a smaller scale than min_scale (1:{low:,.0f}): "
                "max_scale is the most detailed"
            )
        return self


class MapAreaRequest(_Shape, _Options):
    """The body of ``POST /api/maps/{id}/areas``: a new preplanned map area.

    Exactly one of ``area``, ``bbox`` or ``bookmark`` says where it is; ``title`` is required.
    """

    title: Annotated[str, Field(min_length=1, max_length=200)]
    update_mode: PreplannedUpdateMode = PreplannedUpdateMode.SYNC_WITH_FEATURE_SERVICES
    refresh: RefreshText = "never"

    @model_validator(mode="after")
    def _one_shape(self) -> Self:
        if self._given() != 1:
            raise ValueError("give exactly one of area, bbox and bookmark")
        return self


class MapAreaChanges(_Shape, _Options):
    """The body of ``PATCH /api/maps/{id}/areas/{area}``: what changes; the rest stays.

    A new title, description, thumbnail or refresh schedule changes the area only; a new
    extent, scales, per-layer choices, attachments, tile format or update mode repackages it.
    """

    @model_validator(mode="after")
    def _at_most_one_shape(self) -> Self:
        if self._given() > 1:
            raise ValueError("give at most one of area, bbox and bookmark")
        return self

    @property
    def repackages(self) -> bool:
        """Whether these changes need a new package."""
        return bool(self._given()) or any(
            value is not None
            for value in (
                self.min_scale,
                self.max_scale,
                self.overrides,
                self.attachments,
                self.tile_format,
                self.update_mode,
            )
        )
