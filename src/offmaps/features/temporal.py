"""Time in feature queries: the ``datetime`` parameter of OGC API - Features - Part 1.

:func:`parse_datetime_interval` reads the parameter (an instant or an interval of RFC 3339 dates
and date-times, ``..`` or nothing for an open end) into a :class:`TimeInterval`;
:func:`compile_time_filter` turns an interval into a parameterised SQL condition on one date or
date-time field, for both store dialects. Which field of a layer that is, its primary temporal
property, is :attr:`~offmaps.features.model.LayerSchema.temporal_field`.

Meaning, the same in every backend (docs/features.md):

- a date stands for the whole day, in UTC: as a start it is the day's first instant, as an end
  its last one;
- a date-time in another time zone is converted to UTC;
- a date field's value is the whole day it names, in UTC, so it matches when that day and the
  interval share an instant;
- an interval whose end comes before its start contains no instant and matches no row;
- a row whose temporal field is null matches no interval (as the SQL comparison a client such
  as GDAL expects it to be).

:data:`DATETIME_PATTERN` is the parameter's syntax as one regular expression (for the OpenAPI
description): every value it matches is accepted. Besides RFC 3339 it matches what GDAL's OAPIF
driver (3.6 and later) sends for a ``-where`` on a date field: a date followed by a bare ``T``
(``2024-01-01T``), and date-times without seconds or minutes (``2024-01-01T10Z``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

from offmaps.errors import InvalidFilterError
from offmaps.features.filters import FieldType, SQLDialect, SQLFilter

__all__ = [
    "DATETIME_PATTERN",
    "MAX_DATETIME_LENGTH",
    "TimeInterval",
    "compile_time_filter",
    "parse_datetime_interval",
]

MAX_DATETIME_LENGTH = 100
"""The longest ``datetime`` value accepted, in characters (a valid one has at most 79)."""

_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001..9999
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_LEAP_YEAR_END = r"(?:0[48]|[2468][048]|[13579][26])"  # two digits divisible by 4, not 00
_LEAP_DAY = rf"(?:[0-9]{{2}}{_LEAP_YEAR_END}|{_LEAP_YEAR_END}00)-02-29"
_HOUR = r"(?:[01][0-9]|2[0-3])"
_MINUTE = r"[0-5][0-9]"
_OFFSET = rf"(?:[Zz]|[+-]{_HOUR}:{_MINUTE})"
_BOUND = (
    rf"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_DAY})"
    rf"(?:[Tt](?:{_HOUR}:{_MINUTE}:(?:[0-5][0-9]|60)(?:\.[0-9]{{1,9}})?{_OFFSET}"
    rf"|{_HOUR}(?::{_MINUTE})?[Zz])?)?"
)

DATETIME_PATTERN = rf"^(?:{_BOUND}|{_BOUND}/(?:{_BOUND}|\.\.)?|(?:\.\.)?/{_BOUND})$"
"""The syntax of the ``datetime`` parameter, as accepted (an ECMA 262 and Python regex)."""

_PARTS = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:(?P<t>[Tt])(?:(?P<hour>[0-9]{2})(?::(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?)?)?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?)?)?"
)
_OPEN = ("", "..")
_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TimeInterval:
    """A closed interval of time; an instant is an interval whose ends are the same.

    Attributes:
        start: the first instant, a whole day (a :class:`~datetime.date`: from its first
            instant, in UTC), or ``None`` for an interval open at the start.
        end: the last instant, a whole day (to its last instant, in UTC), or ``None`` for an
            interval open at the end. Date-times are aware and in UTC.
    """

    start: date | datetime | None
    end: date | datetime | None

    @property
    def is_empty(self) -> bool:
        """Whether no instant is in the interval (its end comes before its start)."""
        if self.start is None or self.end is None:
            return False
        first = _first_instant(self.start)
        if isinstance(self.end, datetime):
            return first > self.end
        return first >= _day_after(self.end)


def parse_datetime_interval(text: str) -> TimeInterval:
    """Read the ``datetime`` parameter of OGC API - Features (Part 1, ``/req/core/fc-time``).

    Args:
        text: an instant (``2024-01-01``, ``2024-01-01T10:00:00Z``,
            ``2024-01-01T12:00:00+02:00``) or an interval of two of them separated by ``/``,
            one of which may be ``..`` or empty for an open end.

    Returns:
        The interval, date-times converted to UTC (leap seconds become the last microsecond
        of their minute; date-times before year 1 or after 9999 in UTC are clamped to them).

    Raises:
        InvalidFilterError: the text is too long, not of this syntax, names a day that does
            not exist, or leaves both ends open.
    """
    if len(text) > MAX_DATETIME_LENGTH:
        msg = f"datetime is too long: {len(text)} characters, at most {MAX_DATETIME_LENGTH}"
        raise InvalidFilterError(msg)
    parts = text.split("/")
    if len(parts) > 2:
        raise InvalidFilterError("datetime is an instant or an interval 'start/end', not more")
    if len(parts) == 1:
        if text in _OPEN:
            raise InvalidFilterError("datetime is empty: give an instant or an interval")
        instant = _bound(text)
        return TimeInterval(instant, instant)
    start, end = (None if p in _OPEN else _bound(p) for p in parts)
    if start is None and end is None:
        raise InvalidFilterError("datetime leaves both ends of the interval open: omit it")
    return TimeInterval(start, end)


def compile_time_filter(
    field: str, kind: FieldType, interval: TimeInterval, *, dialect: SQLDialect
) -> SQLFilter:
    """A SQL condition that holds for rows whose ``field`` intersects ``interval``.

    Args:
        field: the name of a date or date-time field (quoted here as an identifier).
        kind: its type, :attr:`FieldType.DATE` or :attr:`FieldType.DATETIME`.
        interval: the interval, as :func:`parse_datetime_interval` reads it.
        dialect: the SQL dialect.

    Returns:
        The condition and its parameters; rows whose field is null never match.

    Raises:
        ValueError: ``kind`` is not a date or date-time type.
    """
    if kind not in (FieldType.DATE, FieldType.DATETIME):
        raise ValueError(f"{field!r} is a {kind} field, not a date or date-time")
    identifier = '"' + field.replace('"', '""') + '"'
    mark = "?"
    if dialect is SQLDialect.POSTGRES:
        identifier = identifier.replace("%", "%%")
        mark = "%s"
    if interval.is_empty:
        return SQLFilter("(1 = 0)", ())
    clauses = [f"{identifier} IS NOT NULL"]
    params: list[object] = []
    if interval.start is not None:
        operator, value = _lower_bound(kind, interval.start)
        clauses.append(f"{identifier} {operator} {mark}")
        params.append(_encode(value, dialect))
    if interval.end is not None:
        upper = _upper_bound(kind, interval.end)
        if upper is not None:
            operator, value = upper
            clauses.append(f"{identifier} {operator} {mark}")
            params.append(_encode(value, dialect))
    return SQLFilter("(" + " AND ".join(clauses) + ")", tuple(params))


# --- parsing --------------------------------------------------------------------------------


def _bound(text: str) -> date | datetime:
    if re.fullmatch(_BOUND, text) is None:
        raise _malformed(text)
    match = _PARTS.fullmatch(text)
    if match is None:  # pragma: no cover - _BOUND is narrower than _PARTS
        raise _malformed(text)
    # _BOUND admits only days and times that exist
    day = date(int(match["year"]), int(match["month"]), int(match["day"]))
    if match["hour"] is None:
        return day  # a date, or GDAL's date with a bare "T"
    second = int(match["second"] or 0)
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    microsecond = int(fraction)
    if second == 60:  # a leap second: the last instant Python can name in its minute
        second, microsecond = 59, 999_999
    offset = match["offset"]
    zone = UTC
    if offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    moment = datetime.combine(
        day, time(int(match["hour"]), int(match["minute"] or 0), second, microsecond, zone)
    )
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # beyond year 1 or 9999 once in UTC
        return _LATEST if day.year == 9999 else _EARLIEST


def _malformed(text: str) -> InvalidFilterError:
    shown = text if len(text) <= 40 else text[:40] + "..."
    return InvalidFilterError(
        f"datetime {shown!r} is not an RFC 3339 date (2024-01-31) or date-time "
        "(2024-01-31T10:00:00Z, with a time zone), an interval 'start/end' of them, or '..'"
    )


# --- compiling ------------------------------------------------------------------------------


def _first_instant(bound: date | datetime) -> datetime:
    if isinstance(bound, datetime):
        return bound
    return datetime.combine(bound, time(tzinfo=UTC))


def _day_after(day: date) -> datetime:
    if day == date.max:
        return _LATEST
    return datetime.combine(day + timedelta(days=1), time(tzinfo=UTC))


def _lower_bound(kind: FieldType, start: date | datetime) -> tuple[str, date | datetime]:
    if kind is FieldType.DATE:
        return ">=", start.date() if isinstance(start, datetime) else start
    # stored date-times have milliseconds: t >= s holds exactly when t >= s rounded up
    return ">=", _ceil_milliseconds(_first_instant(start))


def _upper_bound(kind: FieldType, end: date | datetime) -> tuple[str, date | datetime] | None:
    if kind is FieldType.DATE:
        return "<=", end.date() if isinstance(end, datetime) else end
    if isinstance(end, datetime):
        return "<=", end.replace(microsecond=end.microsecond // 1000 * 1000)
    if end == date.max:
        return None  # to the end of time
    return "<", _day_after(end)


def _ceil_milliseconds(moment: datetime) -> datetime:
    if moment.microsecond % 1000 == 0:
        return moment
    if moment >= _LATEST.replace(microsecond=999_000):
        return _LATEST
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000) + timedelta(milliseconds=1)


def _encode(value: date | datetime, dialect: SQLDialect) -> object:
    if dialect is SQLDialect.POSTGRES:
        return value
    if isinstance(value, datetime):  # GeoPackage DATETIME text, as the stores write it
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.isoformat()
