"""offmaps' errors cross processes: each pickles with its message and its attributes."""

from __future__ import annotations

import inspect
import pickle

import pytest

import offmaps.errors
from offmaps.errors import OffmapsError


def _subclasses(cls: type[OffmapsError]) -> list[type[OffmapsError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


ERRORS = sorted(
    {cls for cls in _subclasses(OffmapsError) if cls.__module__ == offmaps.errors.__name__},
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_its_message_and_attributes(cls: type[OffmapsError]) -> None:
    required = {
        name: 7 if name == "retry_after" else f"the {name}"
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and parameter.default is inspect.Parameter.empty
    }
    error = cls("what went wrong", **required)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == "what went wrong"
    assert copy.args == error.args
    assert vars(copy) == vars(error)
