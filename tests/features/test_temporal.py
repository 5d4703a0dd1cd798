"""The ``datetime`` parameter: parsing, its pattern, and the rows it selects in every backend."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import Point

from offmaps.errors import InvalidFilterError
from offmaps.features import FieldType
from offmaps.features.model import FeatureQuery, Field, GeometryType, Insert, LayerSchema
from offmaps.features.store import FeatureStore
from offmaps.features.temporal import (
    DATETIME_PATTERN,
    TimeInterval,
    parse_datetime_interval,
)


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2024-01-31", date(2024, 1, 31), date(2024, 1, 31)),
        ("2024-01-31T10:00:00Z", _utc(2024, 1, 31, 10), _utc(2024, 1, 31, 10)),
        ("2024-01-31t10:00:00z", _utc(2024, 1, 31, 10), _utc(2024, 1, 31, 10)),
        ("2024-01-31T12:30:00+02:30", _utc(2024, 1, 31, 10), _utc(2024, 1, 31, 10)),
        ("2024-01-31T00:30:00-01:00", _utc(2024, 1, 31, 1, 30), _utc(2024, 1, 31, 1, 30)),
        (
            "2024-01-31T10:00:00.123456789Z",
            _utc(2024, 1, 31, 10, 0, 0, 123456),
            _utc(2024, 1, 31, 10, 0, 0, 123456),
        ),
        ("2024-01-01/2024-01-31", date(2024, 1, 1), date(2024, 1, 31)),
        ("2024-01-01T00:00:00Z/2024-01-31", _utc(2024, 1, 1), date(2024, 1, 31)),
        ("2024-01-01/..", date(2024, 1, 1), None),
        ("2024-01-01/", date(2024, 1, 1), None),
        ("../2024-01-31T10:00:00Z", None, _utc(2024, 1, 31, 10)),
        ("/2024-01-31", None, date(2024, 1, 31)),
        ("2024-02-29", date(2024, 2, 29), date(2024, 2, 29)),
        ("2000-02-29", date(2000, 2, 29), date(2000, 2, 29)),
        # a leap second: the last instant of its minute
        (
            "2016-12-31T23:59:60Z",
            _utc(2016, 12, 31, 23, 59, 59, 999999),
            _utc(2016, 12, 31, 23, 59, 59, 999999),
        ),
        # beyond year 9999 or before year 1 once in UTC: clamped
        ("9999-12-31T23:00:00-05:00", datetime.max.replace(tzinfo=UTC), None),
        ("0001-01-01T00:00:00+05:00/..", datetime.min.replace(tzinfo=UTC), None),
        # what GDAL's OAPIF driver sends for a -where on a date field
        ("2024-01-31T", date(2024, 1, 31), date(2024, 1, 31)),
        ("2024-01-31T/..", date(2024, 1, 31), None),
        ("../2024-01-31T", None, date(2024, 1, 31)),
        ("2024-01-31T10Z", _utc(2024, 1, 31, 10), _utc(2024, 1, 31, 10)),
        ("2024-01-31T10:30Z", _utc(2024, 1, 31, 10, 30), _utc(2024, 1, 31, 10, 30)),
    ],
)
def test_instants_and_intervals_are_read_in_utc(
    text: str, start: date | None, end: date | None
) -> None:
    parsed = parse_datetime_interval(text)
    assert parsed.start == start
    if "/" in text or end is not None:
        assert parsed.end == end
    assert re.fullmatch(DATETIME_PATTERN, text), "every accepted form is in the pattern"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "..",
        "/",
        "../..",
        "/..",
        "2024-01-31T10:00:00",  # a date-time needs a time zone
        "2024-01-31 10:00:00Z",
        "2024-1-31",
        "24-01-31",
        "0000-01-01",
        "2024-13-01",
        "2024-00-10",
        "2024-02-30",
        "2023-02-29",
        "1900-02-29",
        "2024-04-31",
        "2024-01-31T24:00:00Z",
        "2024-01-31T10:60:00Z",
        "2024-01-31T10:00:61Z",
        "2024-01-31T10:00:00+24:00",
        "2024-01-31T10:00:00.1234567890Z",
        "2024-01-31T10:00:00.Z",
        "2024-01-31T10:00:00+0200",
        "2024-01-31T10",
        "2024-01-01/2024-01-02/2024-01-03",
        "2024-01-01..2024-01-02",
        "P1D",
        "now",
        "2024-01-31\x00",
        "２０２４-01-31",  # fullwidth digits are not digits here
        "2024-01-31/" + "9" * 90,
        "x" * 100_000,
    ],
)
def test_malformed_values_are_refused_with_a_clear_message(text: str) -> None:
    with pytest.raises(InvalidFilterError, match="datetime"):
        parse_datetime_interval(text)
    assert re.fullmatch(DATETIME_PATTERN, text) is None, "the pattern refuses it too"


def test_an_inverted_interval_is_empty_not_an_error() -> None:
    assert parse_datetime_interval("2024-01-02/2024-01-01").is_empty
    assert parse_datetime_interval("2024-01-01T10:00:00Z/2024-01-01T09:59:59Z").is_empty
    assert not parse_datetime_interval("2024-01-01/2024-01-01T00:00:00Z").is_empty
    assert not parse_datetime_interval("2024-01-01T23:59:59Z/2024-01-01").is_empty
    assert parse_datetime_interval("2024-01-02T00:00:00Z/2024-01-01").is_empty


_ZONES = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
    ),
    _ZONES,
)
def test_any_date_time_in_any_zone_reads_back_as_the_same_instant(
    moment: datetime, zone: timezone
) -> None:
    local = moment.astimezone(zone)
    text = local.isoformat()
    if "+" not in text[10:] and "-" not in text[10:]:  # pragma: no cover - isoformat has one
        text += "Z"
    assert re.fullmatch(DATETIME_PATTERN, text), text
    assert parse_datetime_interval(text) == TimeInterval(moment, moment)


@given(st.from_regex(DATETIME_PATTERN, fullmatch=True))
def test_every_value_of_the_pattern_is_accepted(text: str) -> None:
    parse_datetime_interval(text)


# --- the rows it selects, in every backend --------------------------------------------------

VISITS = LayerSchema(
    "visits",
    (Field("name", FieldType.TEXT), Field("day", FieldType.DATE)),
    GeometryType.POINT,
)
READINGS = LayerSchema("readings", (Field("name", FieldType.TEXT), Field("at", FieldType.DATETIME)))
UNDATED = LayerSchema("undated", (Field("name", FieldType.TEXT),), GeometryType.POINT)
TWO_DATES = LayerSchema(
    "two_dates", (Field("opened", FieldType.DATE), Field("closed", FieldType.DATE))
)

_DAYS = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3), None, date(2023, 12, 31)]
_MOMENTS = [
    _utc(2024, 1, 1, 0, 0, 0),
    _utc(2024, 1, 1, 23, 59, 59, 999000),
    _utc(2024, 1, 2, 0, 0, 0),
    _utc(2024, 1, 2, 10, 0, 0, 500000),
    None,
]


@pytest.fixture
def dated(store: FeatureStore) -> FeatureStore:
    for schema in (VISITS, READINGS, UNDATED, TWO_DATES):
        store.create_layer(schema)
    store.apply_edits(
        [Insert("visits", {"name": f"v{i}", "day": d}, Point(i, i)) for i, d in enumerate(_DAYS)]
        + [Insert("readings", {"name": f"r{i}", "at": m}) for i, m in enumerate(_MOMENTS)]
        + [Insert("undated", {"name": f"u{i}"}, Point(i, i)) for i in range(3)]
        + [Insert("two_dates", {"opened": date(2024, 1, 1), "closed": date(2024, 1, 2)})]
    )
    return store


def _names(store: FeatureStore, layer: str, text: str, **query: object) -> list[str]:
    found = store.query(
        layer,
        FeatureQuery(time=parse_datetime_interval(text), limit=100, **query),  # type: ignore[arg-type]
    )
    names = [str(f.properties["name"]) for f in found.features]
    assert found.number_matched == len(names)
    return names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", ["v0"]),
        ("2024-01-01T", ["v0"]),
        ("2024-01-01T23:00:00Z", ["v0"]),
        ("2024-01-02T01:00:00+02:00", ["v0"]),  # 2024-01-01T23:00Z
        ("2024-01-02/..", ["v1", "v2"]),
        ("2024-01-02T/..", ["v1", "v2"]),
        ("../2024-01-01", ["v0", "v4"]),
        ("/2024-01-01T10:00:00Z", ["v0", "v4"]),
        ("2024-01-01/2024-01-02", ["v0", "v1"]),
        ("2024-01-01T12:00:00Z/2024-01-02T00:00:00Z", ["v0", "v1"]),
        ("2024-01-02/2024-01-01", []),
        ("2024-01-01T12:00:00Z/2024-01-01T11:00:00Z", []),
        ("2025-01-01/..", []),
    ],
)
def test_datetime_selects_the_days_it_intersects(
    dated: FeatureStore, text: str, expected: list[str]
) -> None:
    assert _names(dated, "visits", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", ["r0", "r1"]),
        ("2024-01-01T", ["r0", "r1"]),
        ("2024-01-02T00:00:00Z", ["r2"]),
        ("2024-01-02T02:00:00+02:00", ["r2"]),
        ("2024-01-01T23:59:59.999Z", ["r1"]),
        ("2024-01-02T10:00:00.5Z", ["r3"]),
        ("2024-01-02T10:00:00.4999Z/2024-01-02T10:00:00.5001Z", ["r3"]),
        ("2024-01-02T10:00:00.5001Z/..", []),
        ("2024-01-01T23:59:59.9991Z/2024-01-02", ["r2", "r3"]),
        ("../2024-01-01T23:59:59.9989Z", ["r0"]),
        ("2024-01-02/..", ["r2", "r3"]),
        ("../2024-01-01", ["r0", "r1"]),
        ("2023-12-31T20:00:00-04:00/2024-01-01T00:00:00Z", ["r0"]),
        ("../9999-12-31", ["r0", "r1", "r2", "r3"]),
        ("2024-01-02/2024-01-01", []),
    ],
)
def test_datetime_selects_the_instants_it_contains(
    dated: FeatureStore, text: str, expected: list[str]
) -> None:
    assert _names(dated, "readings", text) == expected


def test_without_a_primary_temporal_property_every_feature_matches(dated: FeatureStore) -> None:
    # OGC API - Features Part 1, /req/core/fc-time-response C
    assert UNDATED.temporal_field is None
    assert TWO_DATES.temporal_field is None
    assert _names(dated, "undated", "2024-01-01") == ["u0", "u1", "u2"]
    assert dated.query("two_dates", FeatureQuery(time=TimeInterval(None, date(1, 1, 1)))).features


def test_datetime_combines_with_bbox_filters_and_paging(dated: FeatureStore) -> None:
    assert _names(dated, "visits", "2024-01-01/..", filters=("name <> 'v1'",)) == ["v0", "v2"]
    assert _names(dated, "visits", "2023-01-01/..", bbox=(0.5, 0.5, 10, 10)) == [
        "v1",
        "v2",
        "v4",
    ]
    page = dated.query(
        "visits", FeatureQuery(time=parse_datetime_interval("2023-01-01/.."), limit=2, offset=2)
    )
    assert [f.properties["name"] for f in page.features] == ["v2", "v4"]
    assert page.number_matched == 4
    every = list(
        dated.iter_features("visits", FeatureQuery(time=TimeInterval(None, date(2024, 1, 1))))
    )
    assert [f.properties["name"] for f in every] == ["v0", "v4"]


def test_time_extent_is_the_first_and_last_value(dated: FeatureStore) -> None:
    assert dated.time_extent("visits") == TimeInterval(date(2023, 12, 31), date(2024, 1, 3))
    assert dated.time_extent("readings") == TimeInterval(
        _utc(2024, 1, 1), _utc(2024, 1, 2, 10, 0, 0, 500000)
    )
    assert dated.time_extent("undated") is None
    assert dated.time_extent("two_dates") is None


def test_time_extent_of_a_layer_without_values_is_none(store: FeatureStore) -> None:
    store.create_layer(VISITS)
    assert store.time_extent("visits") is None
    store.apply_edits([Insert("visits", {"name": "x"}, Point(0, 0))])
    assert store.time_extent("visits") is None
