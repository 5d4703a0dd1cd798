"""What every router's handlers are given: the catalog, the caller, and parsed ids."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request

from offmaps.access import Principal, Scope
from offmaps.catalog import Catalog
from offmaps.errors import FeatureNotFoundError
from offmaps.jobs import Job, JobRunner, job_document
from offmaps.server.auth import WRITE_METHODS, current_principal, require_scopes
from offmaps.server.links import base_url
from offmaps.services import Services

__all__ = [
    "EDIT_FEATURES",
    "WRITE_MAPS",
    "CatalogDep",
    "JobsDep",
    "PrincipalDep",
    "ServicesDep",
    "get_catalog",
    "get_jobs",
    "get_services",
    "job_json",
    "parse_uuid",
]


def get_catalog(request: Request) -> Catalog:
    """The catalog of the application serving ``request``."""
    return get_services(request).catalog


def get_services(request: Request) -> Services:
    """The services of the application serving ``request``."""
    services: Services = request.app.state.services
    return services


EDIT_FEATURES = Depends(require_scopes(Scope.FEATURES_EDIT, methods=WRITE_METHODS))
"""A router dependency: its write routes need ``features:edit`` (finer rules, per layer and
field, are the catalog's); checked by the write gate before a body is read."""
WRITE_MAPS = Depends(require_scopes(Scope.MAPS_WRITE, methods=WRITE_METHODS))
"""A router dependency: its write routes need ``maps:write`` (ownership is checked after)."""


def get_jobs(request: Request) -> JobRunner:
    """The job runner of the application serving ``request``."""
    return get_services(request).jobs


def job_json(job: Job, request: Request) -> dict[str, Any]:
    """A job's document (status, progress, result, links) as JSON."""
    return job_document(job, base_url(request)).model_dump(mode="json")


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]


def parse_uuid(value: str, what: str = "feature") -> UUID:
    """A feature's or attachment's id from a path.

    Raises:
        FeatureNotFoundError: not a UUID (no such thing can exist).
    """
    try:
        return UUID(value)
    except ValueError:
        raise FeatureNotFoundError(f"no {what} {value[:64]!r}: ids are UUIDs") from None
