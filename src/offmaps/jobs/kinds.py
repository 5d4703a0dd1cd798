"""Job kinds: named work with a serializable payload, so any process can run a stored job.

A kind pairs a name (``generate_offline_map``) with a pydantic payload model and the function
that does the work. A process (the server, a worker) registers the kinds it can run, bound to
the services it built from its settings; a job itself is only the kind's name and the payload
as JSON, never a closure over live objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from offmaps.errors import InvalidJobPayloadError, UnknownJobKindError
from offmaps.jobs.model import JobContext

__all__ = ["JobKind", "JobKinds"]

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class JobKind(Generic[P]):
    """One kind of job.

    Attributes:
        name: the kind's name, stored with every job of it.
        payload: the pydantic model of its payload.
        run: does the work for a payload; reports through the context and returns the job's
            result (JSON).
        abandon: removes what an attempt of a job (by its payload and id) made outside its
            output area and scratch folder, when that attempt's process died before the job
            ended (the job is then run again, or marked failed); idempotent.
    """

    name: str
    payload: type[P]
    run: Callable[[P, JobContext], dict[str, Any]]
    abandon: Callable[[P, str], None] | None = None

    def parse(self, data: Mapping[str, Any]) -> P:
        """The payload of a stored job.

        Raises:
            InvalidJobPayloadError: the data does not validate.
        """
        try:
            return self.payload.model_validate(data)
        except ValidationError as exc:
            raise InvalidJobPayloadError(
                f"a {self.name} job's payload is not valid: {exc}"
            ) from None

    def execute(self, data: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        """Parse a stored payload and run the work for it."""
        return self.run(self.parse(data), context)


class JobKinds(Mapping[str, JobKind[Any]]):
    """The kinds a process can run, by name; immutable once built."""

    def __init__(self, kinds: Iterable[JobKind[Any]] = ()) -> None:
        self._kinds: dict[str, JobKind[Any]] = {}
        for kind in kinds:
            if kind.name in self._kinds:
                raise ValueError(f"job kind {kind.name!r} registered twice")
            self._kinds[kind.name] = kind

    def __getitem__(self, name: str) -> JobKind[Any]:
        """The kind called ``name`` (``KeyError`` when there is none, as for any mapping)."""
        return self._kinds[name]

    def get_kind(self, name: str) -> JobKind[Any]:
        """The kind called ``name``.

        Raises:
            UnknownJobKindError: this process has no such kind.
        """
        try:
            return self._kinds[name]
        except KeyError:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise UnknownJobKindError(
                f"no job kind {name[:64]!r} here (known: {known})", kind=name
            ) from None

    def __iter__(self) -> Iterator[str]:
        """The kinds' names."""
        return iter(self._kinds)

    def __len__(self) -> int:
        """How many kinds there are."""
        return len(self._kinds)
