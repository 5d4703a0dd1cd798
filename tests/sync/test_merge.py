from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.errors import InvalidChangeSetError
from offmaps.schemas.changeset import GEOMETRY_FIELD
from offmaps.sync import FieldMerge, merge_fields, same_value

POINT = "0101000000000000000000F03F0000000000000040"


def test_equal_int_and_float_are_the_same() -> None:
    assert same_value(1, 1.0)
    assert not same_value(1, 1.5)


def test_booleans_are_not_numbers() -> None:
    assert not same_value(True, 1)
    assert not same_value(0, False)
    assert same_value(False, False)


def test_null_is_only_null() -> None:
    assert same_value(None, None)
    assert not same_value(None, "")
    assert not same_value(None, 0)


def test_lists_and_objects_compare_by_items() -> None:
    assert same_value([1, {"a": 2.0}], [1.0, {"a": 2}])
    assert not same_value([1, 2], [1, 2, 3])
    assert not same_value({"a": 1}, {"b": 1})


def test_geometry_hex_ignores_case() -> None:
    assert same_value(POINT, POINT.lower(), field=GEOMETRY_FIELD)
    assert not same_value(POINT, POINT.lower(), field="name")
    assert not same_value("Zz", "zz", field=GEOMETRY_FIELD)


def test_field_changed_only_by_client_is_written() -> None:
    merged = merge_fields(
        ["status"], {"status": "open"}, {"status": "closed"}, {"status": "open", "name": "x"}
    )
    assert merged == FieldMerge({"status": "closed"}, (), ())


def test_server_already_holding_client_value_is_unchanged() -> None:
    merged = merge_fields(
        [GEOMETRY_FIELD, "n"],
        {GEOMETRY_FIELD: None, "n": 1},
        {GEOMETRY_FIELD: POINT, "n": 2},
        {GEOMETRY_FIELD: POINT.lower(), "n": 2.0},
    )
    assert merged == FieldMerge({}, (), (GEOMETRY_FIELD, "n"))


def test_both_sides_changing_a_field_differently_conflict_in_order() -> None:
    merged = merge_fields(
        ["b", "a", "c"],
        {"a": 1, "b": 1, "c": 1},
        {"a": 2, "b": 2, "c": 2},
        {"a": 3, "b": 3, "c": 1},
    )
    assert merged.conflicts == ("b", "a")
    assert merged.values == {"c": 2}


def test_field_the_server_dropped_is_ignored() -> None:
    merged = merge_fields(["gone"], {"gone": 1}, {"gone": 2}, {"other": 1})
    assert merged == FieldMerge({}, (), (), ignored=("gone",))


def test_missing_base_counts_as_null() -> None:
    assert merge_fields(["a"], {}, {"a": 1}, {"a": None}).values == {"a": 1}
    assert merge_fields(["a"], {}, {"a": 1}, {"a": 0}).conflicts == ("a",)


def test_changed_field_without_client_value_is_invalid() -> None:
    with pytest.raises(InvalidChangeSetError, match="'a'"):
        merge_fields(["a"], {"a": 1}, {}, {"a": 1})


json_value = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y", 1.0])
names = ["a", "b", "c", "d"]
row = st.fixed_dictionaries(dict.fromkeys(names, json_value))


def test_field_changed_and_changed_back_on_device_is_ignored() -> None:
    merged = merge_fields(["a"], {"a": 1}, {"a": 1}, {"a": 5})
    assert merged == FieldMerge({}, (), (), ignored=("a",))


@given(row, row, row, st.lists(st.sampled_from(names), unique=True))
def test_field_changed_on_one_side_never_conflicts(
    base: dict[str, object],
    client: dict[str, object],
    server: dict[str, object],
    changed: list[str],
) -> None:
    merged = merge_fields(changed, base, client, server)
    for name in merged.conflicts:
        assert not same_value(client[name], base[name])
        assert not same_value(server[name], base[name])
        assert not same_value(client[name], server[name])


@given(row, row, row, st.lists(st.sampled_from(names), unique=True))
def test_applying_values_gives_client_value_for_every_merged_field(
    base: dict[str, object],
    client: dict[str, object],
    server: dict[str, object],
    changed: list[str],
) -> None:
    merged = merge_fields(changed, base, client, server)
    applied = {**server, **merged.values}
    for name in changed:
        if name not in merged.conflicts and name not in merged.ignored:
            assert same_value(applied[name], client[name])
        if name in merged.ignored:
            assert same_value(client[name], base[name])
    parts = [merged.values.keys(), merged.conflicts, merged.unchanged, merged.ignored]
    assert sorted(name for part in parts for name in part) == sorted(changed)
