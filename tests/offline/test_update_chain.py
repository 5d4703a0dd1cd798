"""The chain of update files: whatever order updates come in, a file takes exactly the next
one, once, and never one of another area, epoch or chain."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.errors import UpdateChainError
from offmaps.offline.updates import BASE_PREFIX, ChainState, UpdateLink, check_link


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _chain(length: int) -> tuple[ChainState, list[tuple[UpdateLink, str]]]:
    """Package 1's state and the ``length`` updates after it, each with its file's hash."""
    state = ChainState("area", 2, 1, BASE_PREFIX + _sha("package 1"))
    links = []
    previous = state.chain_head
    for number in range(1, length + 1):
        sha = _sha(f"update {number + 1}")
        links.append((UpdateLink("area", "map", 2, number, number + 1, previous), sha))
        previous = sha
    return state, links


def _refusal(state: ChainState, link: UpdateLink) -> UpdateChainError | None:
    try:
        check_link(state, link)
    except UpdateChainError as exc:
        return exc
    return None


FOREIGN = [
    UpdateLink("other", "map", 2, 1, 2, BASE_PREFIX + _sha("package 1")),
    UpdateLink("area", "map", 3, 1, 2, BASE_PREFIX + _sha("package 1")),
    UpdateLink("area", "map", 2, 1, 2, BASE_PREFIX + _sha("another package 1")),
    UpdateLink("area", "map", 2, 2, 3, _sha("a forked update 2")),
]


@given(
    length=st.integers(1, 8),
    attempts=st.lists(st.integers(-len(FOREIGN), 7), max_size=40),
)
def test_a_file_takes_exactly_the_next_update_once(length: int, attempts: list[int]) -> None:
    state, links = _chain(length)
    applied: list[int] = []
    for index in attempts:
        if index < 0:
            link, sha = FOREIGN[index], _sha("foreign")
        elif index < length:
            link, sha = links[index]
        else:
            continue
        refused = _refusal(state, link)
        if refused is not None:
            assert refused.package_number == state.package_number
            assert index < 0 or index != state.package_number - 1
            continue
        assert index == state.package_number - 1  # the next one, and only it
        state = state.after(link, sha)
        applied.append(index)
    assert applied == list(range(len(applied)))
    assert state.package_number == len(applied) + 1
    assert state.chain_head == (links[len(applied) - 1][1] if applied else _chain(0)[0].chain_head)


def test_a_file_without_a_chain_takes_no_update() -> None:
    _, [(link, _)] = _chain(1)
    with pytest.raises(UpdateChainError, match="holds no update chain") as caught:
        check_link(None, link)
    assert caught.value.package_number is None


@pytest.mark.parametrize(
    "arguments",
    [
        ("", "map", 0, 1, 2, "0" * 64),
        ("area", "map", -1, 1, 2, "0" * 64),
        ("area", "map", 0, 0, 1, "0" * 64),
        ("area", "map", 0, 2, 2, "0" * 64),
        ("area", "map", 0, 1, 2, "0" * 63),
        ("area", "map", 0, 1, 2, "sha:" + "0" * 64),
        ("area", "map", 0, 1, 2, "A" * 64),
    ],
)
def test_malformed_links_are_refused(arguments: tuple[str, str, int, int, int, str]) -> None:
    with pytest.raises(ValueError, match=r"update|previous_sha256"):
        UpdateLink(*arguments)
