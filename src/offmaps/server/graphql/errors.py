"""GraphQL errors with the codes of the REST problem documents.

Every error of a GraphQL answer carries ``extensions: {code, status}``:

- an offmaps error: ``code`` its class name (the ``title`` of the REST problem document),
  ``status`` the HTTP status of :data:`offmaps.server.problems.STATUS`, and the same context
  members a problem document has (``required_scopes``, ``retry_after``, ``field``...);
- arguments that do not validate (pydantic): ``RequestValidationError``, 422;
- a document that does not parse, fails validation or a limit, or variables that do not fit:
  ``GRAPHQL_PARSE_FAILED`` or ``GRAPHQL_VALIDATION_FAILED``, 400;
- anything else (a bug): ``InternalServerError``, 500, with a fixed message and no traceback
  (the server log has it, as for REST).
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError
from pydantic import ValidationError

from offmaps.errors import OffmapsError
from offmaps.server.problems import problem_extra, status_of

__all__ = ["INTERNAL_MESSAGE", "error_document"]

INTERNAL_MESSAGE = "internal error; the server log has the details"


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return message[:300]


def error_document(error: GraphQLError) -> dict[str, Any]:
    """An error of a GraphQL answer as JSON, with ``extensions.code`` and ``status``."""
    original = error.original_error
    message = error.message
    extensions: dict[str, Any]
    if isinstance(original, OffmapsError):
        status = status_of(original)
        extensions = {"code": type(original).__name__, "status": status}
        extensions.update(problem_extra(original))
        message = str(original)
    elif isinstance(original, ValidationError):
        extensions = {"code": "RequestValidationError", "status": 422}
        message = _validation_message(original)
    elif error.path is None:  # before execution: parsing, validation, limits, variables
        parse = message.startswith("Syntax Error")
        code = "GRAPHQL_PARSE_FAILED" if parse else "GRAPHQL_VALIDATION_FAILED"
        extensions = {"code": code, "status": 400}
    else:
        extensions = {"code": "InternalServerError", "status": 500}
        message = INTERNAL_MESSAGE
    document: dict[str, Any] = {"message": message}
    if error.locations:
        document["locations"] = [{"line": x.line, "column": x.column} for x in error.locations]
    if error.path is not None:
        document["path"] = list(error.path)
    document["extensions"] = extensions
    return document
