from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.schemas.changeset import SERVER_NODE
from offmaps.sync import Order, vectors

A = "a" * 32
B = "b" * 32

vector = st.dictionaries(st.sampled_from([A, B, SERVER_NODE]), st.integers(0, 5))


def test_missing_entries_count_as_zero() -> None:
    assert vectors.compare({A: 1, B: 0}, {A: 1}) is Order.EQUAL
    assert vectors.compare({}, {}) is Order.EQUAL


def test_ancestor_is_before_and_descendant_after() -> None:
    assert vectors.compare({A: 1}, {A: 2}) is Order.BEFORE
    assert vectors.compare({A: 1}, {A: 1, B: 1}) is Order.BEFORE
    assert vectors.compare({A: 2, B: 1}, {A: 1}) is Order.AFTER


def test_edits_on_both_sides_are_concurrent() -> None:
    assert vectors.compare({A: 2, B: 1}, {A: 1, B: 2}) is Order.CONCURRENT
    assert vectors.compare({A: 1}, {B: 1}) is Order.CONCURRENT


def test_dominates_means_has_seen_everything() -> None:
    assert vectors.dominates({A: 2, B: 1}, {A: 2})
    assert vectors.dominates({A: 1}, {A: 1, B: 0})
    assert not vectors.dominates({A: 2}, {A: 1, B: 1})


def test_merge_is_normal_form() -> None:
    merged = vectors.merge({B: 1, A: 0}, {SERVER_NODE: 3, B: 0})
    assert merged == {B: 1, SERVER_NODE: 3}
    assert list(merged) == sorted(merged)


def test_increment_returns_a_new_vector() -> None:
    before = {A: 1}
    assert vectors.increment(before, B) == {A: 1, B: 1}
    assert vectors.increment(before, A, by=2) == {A: 3}
    assert before == {A: 1}


def test_increment_never_goes_back() -> None:
    with pytest.raises(ValueError, match="only grows"):
        vectors.increment({A: 1}, A, by=-1)


def test_derive_counts_server_edits_since_recorded() -> None:
    assert vectors.derive({A: 2}, 3, 5) == {A: 2, SERVER_NODE: 2}
    assert vectors.derive({A: 2, SERVER_NODE: 1}, 3, 3) == {A: 2, SERVER_NODE: 1}


def test_derive_never_subtracts() -> None:
    assert vectors.derive({A: 2}, 5, 3) == {A: 2}


def test_derive_without_recorded_vector() -> None:
    assert vectors.derive(None, 0, 4) == {SERVER_NODE: 4}
    assert vectors.derive(None, 0, 0) == {}


MIRROR = {
    Order.EQUAL: Order.EQUAL,
    Order.BEFORE: Order.AFTER,
    Order.AFTER: Order.BEFORE,
    Order.CONCURRENT: Order.CONCURRENT,
}


@given(vector, vector)
def test_compare_is_antisymmetric(a: dict[str, int], b: dict[str, int]) -> None:
    assert vectors.compare(b, a) is MIRROR[vectors.compare(a, b)]


@given(vector, vector)
def test_dominates_agrees_with_compare(a: dict[str, int], b: dict[str, int]) -> None:
    assert vectors.dominates(a, b) == (vectors.compare(a, b) in {Order.EQUAL, Order.AFTER})


@given(vector, vector)
def test_merge_is_commutative_and_dominates_both(a: dict[str, int], b: dict[str, int]) -> None:
    merged = vectors.merge(a, b)
    assert merged == vectors.merge(b, a)
    assert vectors.dominates(merged, a)
    assert vectors.dominates(merged, b)


@given(vector, vector, vector)
def test_merge_is_associative(a: dict[str, int], b: dict[str, int], c: dict[str, int]) -> None:
    assert vectors.merge(vectors.merge(a, b), c) == vectors.merge(a, vectors.merge(b, c))


@given(vector)
def test_merge_is_idempotent(a: dict[str, int]) -> None:
    assert vectors.compare(vectors.merge(a, a), a) is Order.EQUAL
    assert vectors.merge(vectors.merge(a, a), a) == vectors.merge(a, a)


@given(vector, st.sampled_from([A, B, SERVER_NODE]), st.integers(1, 3))
def test_increment_is_after(a: dict[str, int], node: str, by: int) -> None:
    assert vectors.compare(vectors.increment(a, node, by), a) is Order.AFTER
