"""Errors as problem documents (RFC 9457): the one table from domain errors to HTTP status.

Domain errors never carry a status; this module is the only place that decides one. Every
response for an error is ``application/problem+json`` with ``type``, ``title``, ``status`` and
``detail``, plus the error's context attributes when it has them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from offmaps import errors

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "STATUS",
    "domain_problem",
    "install_problem_handlers",
    "problem_extra",
    "problem_response",
    "status_of",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Most specific first: the first class an error is an instance of decides.
STATUS: tuple[tuple[type[errors.OffmapsError], int], ...] = (
    (errors.InvalidCredentialsError, 401),
    (errors.InvalidTokenError, 401),
    (errors.InsufficientScopeError, 403),
    (errors.TooManyRequestsError, 429),
    (errors.AccessDeniedError, 403),
    (errors.UserNotFoundError, 404),
    (errors.UserExistsError, 409),
    (errors.LayerNotFoundError, 404),
    (errors.FeatureNotFoundError, 404),
    (errors.AttachmentNotFoundError, 404),
    (errors.WebMapNotFoundError, 404),
    (errors.TileNotFoundError, 404),
    (errors.BlobNotFoundError, 404),
    (errors.ObjectNotFoundError, 404),
    (errors.StorageUnavailableError, 503),
    (errors.ObjectKeyConflictError, 409),
    (errors.ObjectTooLargeError, 413),
    (errors.InvalidPresignedURLError, 403),
    (errors.VersionConflictError, 409),
    (errors.ReplicaNotFoundError, 404),
    (errors.ConflictNotFoundError, 404),
    (errors.ConflictStateError, 409),
    (errors.UploadOffsetError, 409),
    (errors.GenerationAheadError, 409),
    (errors.InvalidChangeSetError, 422),
    (errors.EditNotAllowedError, 403),
    (errors.MapAreaDeletedError, 410),
    (errors.MapAreaNotFoundError, 404),
    (errors.MapAreaBusyError, 409),
    (errors.UpdateChainError, 409),
    (errors.UpdateIntegrityError, 422),
    (errors.LayerExistsError, 409),
    (errors.DestinationExistsError, 409),
    (errors.BlobIntegrityError, 422),
    (errors.BlobTooLargeError, 413),
    (errors.CacheNotFoundError, 404),
    (errors.CacheExistsError, 409),
    (errors.CacheIndexError, 503),
    (errors.SeedFailedError, 502),
    (errors.GrantNotFoundError, 404),
    (errors.GrantExpiredError, 410),
    (errors.GrantCommittedError, 409),
    (errors.UploadMismatchError, 422),
    (errors.JobNotFoundError, 404),
    (errors.JobCancelledError, 409),
    (errors.InvalidJobPayloadError, 422),
    (errors.JobQueueError, 503),
    (errors.ExportLimitError, 422),
    (errors.TileLimitError, 422),
    (errors.UnsupportedFilterError, 422),
    (errors.FeatureStoreError, 503),
    (errors.ContainerCorruptError, 502),
    (errors.UpstreamError, 502),
    (errors.ContainerWriteError, 507),
    (errors.OffmapsError, 400),
)

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}

_CONTEXT_ATTRIBUTES = (
    "layer", "global_id", "field", "line", "column", "expected", "actual", "key",
    "quota", "limit", "used", "retry_after", "failures",
)  # fmt: skip


def status_of(error: errors.OffmapsError) -> int:
    """The HTTP status for a domain error."""
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 400


def problem_response(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem document response."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if extra:
        body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_extra(error: errors.OffmapsError) -> dict[str, Any]:
    """The members a domain error adds to its problem document (and to GraphQL errors'
    extensions): its context attributes, and the scopes it names as ``required_scopes``."""
    extra: dict[str, Any] = {}
    for name in _CONTEXT_ATTRIBUTES:
        value = getattr(error, name, None)
        if value is not None:
            if isinstance(value, list):
                extra[name] = [str(item) for item in value]
            else:
                extra[name] = value if isinstance(value, int | float | bool) else str(value)
    required = getattr(error, "required", ())
    if required:
        extra["required_scopes"] = list(required)
    return extra


def domain_problem(error: errors.OffmapsError) -> JSONResponse:
    """The problem document of a domain error: its status from :data:`STATUS`, its context
    attributes, and the headers its status needs (``WWW-Authenticate`` on 401 and scope
    refusals, ``Retry-After`` on 429)."""
    status = status_of(error)
    extra = problem_extra(error)
    required = getattr(error, "required", ())
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    elif isinstance(error, errors.InsufficientScopeError):
        scope = " ".join(required)
        headers = {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'}
    elif isinstance(error, errors.TooManyRequestsError):
        headers = {"Retry-After": str(error.retry_after)}
    return problem_response(
        status,
        str(error),
        type_=f"https://offmaps.dev/problems/{type(error).__name__}",
        title=type(error).__name__,
        extra=extra,
        headers=headers,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` a problem document, and never a traceback."""

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, errors.OffmapsError):  # registered for this class only
            raise exc
        return domain_problem(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, RequestValidationError):  # registered for this class only
            raise exc
        problems: list[dict[str, Any]] = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()[:20]
        ]
        detail = "invalid request"
        if problems:
            where = ".".join(problems[0]["loc"])
            detail = f"{where}: {problems[0]['msg']}" if where else str(problems[0]["msg"])
        return problem_response(422, detail, extra={"errors": problems})

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, StarletteHTTPException):  # registered for this class only
            raise exc
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, str(exc.detail), headers=headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(500, "internal error; the server log has the details")

    app.add_exception_handler(errors.OffmapsError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
